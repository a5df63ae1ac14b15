"""Hub models: weights checked and converted where they are fetched; pins resolved, recorded, honoured.

The unit tests work on real checkpoint files of a tiny Llama. The workflow tests run `seqpeft pin`
and Snakemake for real against a local server speaking the Hugging Face Hub API (tests/hub_server.py,
reached through HF_ENDPOINT), with a published-layout model that ships only pytorch_model.bin.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

from hub_server import FakeHub, HubServer, hub_env, published_llama
from seqpeft.util.errors import SeqpeftInputError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def published(tiny_model_dir) -> dict[str, bytes]:
    """The files of a published tiny Llama repository (pytorch_model.bin only)."""
    return published_llama(tiny_model_dir("llama"))


def write_files(directory: Path, files: dict[str, bytes]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, body in files.items():
        (directory / name).write_bytes(body)
    return directory


# ---- weights: .bin -> safetensors without running code, every tensor checked ----


def test_bin_checkpoint_becomes_safetensors_and_loads_whole(published, tmp_path):
    import torch
    from safetensors.torch import load_file

    from seqpeft.models.hub import convert_pickled_weights, verify_weights

    model_dir = write_files(tmp_path / "m", published)
    original = torch.load(io.BytesIO(published["pytorch_model.bin"]), weights_only=True)
    written = convert_pickled_weights(model_dir)
    assert [p.name for p in written] == ["model.safetensors"]
    assert not list(model_dir.glob("*.bin"))
    converted = load_file(str(model_dir / "model.safetensors"))
    assert converted.keys() == original.keys()
    assert all(torch.equal(converted[k], original[k]) for k in original)
    verify_weights(model_dir, {"family": "llama"})


def test_sharded_bin_checkpoint_and_its_index_are_converted(published, tmp_path):
    import torch

    from seqpeft.models.hub import convert_pickled_weights, verify_weights
    from seqpeft.models.families import load_backbone

    state = torch.load(io.BytesIO(published["pytorch_model.bin"]), weights_only=True)
    keys = sorted(state)
    shards = {"pytorch_model-00001-of-00002.bin": keys[: len(keys) // 2],
              "pytorch_model-00002-of-00002.bin": keys[len(keys) // 2:]}
    model_dir = write_files(tmp_path / "m", {k: v for k, v in published.items() if k != "pytorch_model.bin"})
    for name, shard_keys in shards.items():
        torch.save({k: state[k] for k in shard_keys}, model_dir / name)
    (model_dir / "pytorch_model.bin.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": {k: name for name, ks in shards.items() for k in ks}}))
    convert_pickled_weights(model_dir)
    index = json.loads((model_dir / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"}
    assert not list(model_dir.glob("pytorch_model*"))
    verify_weights(model_dir, {"family": "llama"})
    backbone = load_backbone(model_dir, {"family": "llama"}).backbone
    assert torch.equal(backbone.embed_tokens.weight, state["model.embed_tokens.weight"])


class _Payload:
    """Unpickling this calls open(marker, 'w'): it would create the marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_pickle_carrying_code_is_refused_and_never_runs(published, tmp_path):
    import torch

    from seqpeft.models.hub import convert_pickled_weights

    marker = tmp_path / "PWNED"
    model_dir = write_files(tmp_path / "m", {k: v for k, v in published.items() if k != "pytorch_model.bin"})
    state = torch.load(io.BytesIO(published["pytorch_model.bin"]), weights_only=True)
    torch.save({**state, "payload": _Payload(marker)}, model_dir / "pytorch_model.bin")
    assert not marker.exists()
    before = sorted(p.name for p in model_dir.iterdir())
    with pytest.raises(SeqpeftInputError, match=r"pytorch_model\.bin: is not a plain tensor checkpoint.*nothing in it was run"):
        convert_pickled_weights(model_dir)
    assert not marker.exists(), "the pickle's code ran"
    assert sorted(p.name for p in model_dir.iterdir()) == before  # nothing converted, nothing removed
    # the reference: an ordinary unpickler would have run it
    torch.load(model_dir / "pytorch_model.bin", weights_only=False)
    assert marker.exists()


def test_directory_without_weights_fails_clearly(published, tmp_path):
    from seqpeft.models.hub import verify_weights

    model_dir = write_files(tmp_path / "m", {k: v for k, v in published.items() if k != "pytorch_model.bin"})
    with pytest.raises(SeqpeftInputError, match=r"has no loadable weights .*files: README.md, config.json"):
        verify_weights(model_dir, {"family": "llama"})


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_missing_tensor_is_named(published, tmp_path, monkeypatch, device):
    import torch
    from safetensors.torch import save_file

    from seqpeft.models.hub import verify_weights

    model_dir = write_files(tmp_path / "m", {k: v for k, v in published.items() if k != "pytorch_model.bin"})
    state = torch.load(io.BytesIO(published["pytorch_model.bin"]), weights_only=True)
    del state["model.layers.1.mlp.down_proj.weight"]
    save_file({k: v.contiguous() for k, v in state.items()}, str(model_dir / "model.safetensors"))
    if device == "meta":  # as for a checkpoint over 2 GiB: names and shapes only, no memory
        import seqpeft.models.hub
        from seqpeft.models.hub import convert_pickled_weights

        monkeypatch.setattr(seqpeft.models.hub, "META_BYTES", 0)
        whole = write_files(tmp_path / "whole", published)
        convert_pickled_weights(whole)
        verify_weights(whole, {"family": "llama"})  # the whole checkpoint passes on the meta device too
    with pytest.raises(SeqpeftInputError, match=r"does not hold the whole model: 1 tensor\(s\) missing \(layers\.1\.mlp\.down_proj\.weight\)"):
        verify_weights(model_dir, {"family": "llama"})


def test_a_pretrained_checkpoint_without_a_classification_head_passes_for_the_transformers_head(published, tmp_path):
    """A published causal-LM checkpoint (e.g. Mistral-DNA's MixtralForCausalLM) holds no ``score``:
    with ``head: transformers`` the family's sequence classifier adds it new, so nothing is missing;
    a missing backbone tensor is still named."""
    import torch
    from safetensors.torch import save_file

    from seqpeft.models.hub import convert_pickled_weights, verify_weights

    whole = write_files(tmp_path / "whole", published)
    convert_pickled_weights(whole)
    verify_weights(whole, {"family": "llama", "head": "transformers"})
    broken = write_files(tmp_path / "m", {k: v for k, v in published.items() if k != "pytorch_model.bin"})
    state = torch.load(io.BytesIO(published["pytorch_model.bin"]), weights_only=True)
    del state["model.norm.weight"]
    save_file({k: v.contiguous() for k, v in state.items()}, str(broken / "model.safetensors"))
    with pytest.raises(SeqpeftInputError, match=r"1 tensor\(s\) missing \(model\.norm\.weight\)"):
        verify_weights(broken, {"family": "llama", "head": "transformers"})


# ---- the workflow against a local Hugging Face Hub ----


def dna_archive(tmp_path: Path) -> bytes:
    """A tar.gz of a small planted-motif DNA task (train/dev/test.csv under one top-level folder)."""
    from seqpeft.tasks.demo_data import generate_source

    generate_source({"synthetic": "dna", "seed": 3, "n_train": 96, "n_dev": 24, "n_test": 24, "length": 30,
                     "motif_copies": 2}, tmp_path / "gen")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tf:
        for split in ("train", "dev", "test"):
            tf.add(tmp_path / "gen" / f"{split}.csv", arcname=f"dna/{split}.csv")
    return buffer.getvalue()


def hub_config(url: str, **extra) -> dict:
    return {
        "results": "results",
        "sources": {"dna": {"url": f"{url}/data/dna.tar.gz", "archive": "tar.gz"}},
        "tasks": {"tf": {"source": "dna", "path": ".", "kind": "sequence_classification", "partitions": [0],
                         "family": "dna"}},
        "models": {"tiny": {"hub": "acme/tiny-dna", "family": "llama", "max_length": 64, "size": "tiny"}},
        "methods": {"lora": {"r": 4, "lora_alpha": 8}},
        "experiments": [{"tasks": ["tf"], "models": ["tiny"], "methods": ["lora"]}],
        "training": {"epochs": 1, "batch_size": 16, "device": "cpu", "patience": 1},
        **extra,
    }


def run(args: list, env: dict, cwd: Path, timeout: float = 600) -> tuple[int, str]:
    process = subprocess.run(args, env={**os.environ, **env}, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    return process.returncode, process.stdout + process.stderr


def snakemake(workdir: Path, configfile: Path, *targets: str, env: dict, dry: bool = False) -> tuple[int, str]:
    args = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir),
            "--configfile", str(configfile), "--cores", "1", *(["-n"] if dry else []), *targets]
    return run(args, env, ROOT)


@pytest.fixture
def hub_site(published, tmp_path):
    hub = FakeHub()
    commit = hub.publish("acme/tiny-dna", published)
    archive = dna_archive(tmp_path)
    hub.files["/data/dna.tar.gz"] = archive
    with HubServer(hub) as url:
        yield hub, url, commit, archive


def test_pin_then_prepare_model_and_finetune_against_a_local_hub(hub_site, published, tmp_path):
    hub, url, first_commit, archive = hub_site
    env = hub_env(url, tmp_path)
    workdir = tmp_path / "work"
    (workdir / "config").mkdir(parents=True)
    configfile = workdir / "config" / "config.yaml"
    configfile.write_text(yaml.safe_dump(hub_config(url), sort_keys=False))
    model_dir = workdir / "results" / "models" / "tiny"

    # unpinned: a dry run says so, one line each; a real run refuses before touching the hub
    code, out = snakemake(workdir, configfile, env=env, dry=True)
    assert code == 0, out[-3000:]
    assert "unpinned model tiny: acme/tiny-dna has no revision" in out
    assert f"unpinned source dna: {url}/data/dna.tar.gz has no sha256 or git_blob" in out
    code, out = snakemake(workdir, configfile, str(model_dir.relative_to(workdir)), env=env)
    assert code != 0 and "models.tiny: is not pinned (no revision), so this job does not run" in out, out[-3000:]
    assert not model_dir.exists() and not any("acme" in r for r in hub.requests)

    # seqpeft pin: the commit main points to now, the sha256 of what the url serves now
    code, out = run([sys.executable, "-m", "seqpeft.cli", "pin", "--configfile", str(configfile)], env, workdir)
    assert code == 0, out
    pins = yaml.safe_load((workdir / "config" / "pins.yaml").read_text())
    assert pins["models"]["tiny"] == {"hub": "acme/tiny-dna", "branch": "main", "revision": first_commit}
    assert pins["sources"]["dna"] == {"url": f"{url}/data/dna.tar.gz", "sha256": hashlib.sha256(archive).hexdigest()}

    # main moves on; the run keeps to the pinned commit
    moved = hub.publish("acme/tiny-dna", {**published, "README.md": b"# a newer commit\n"})
    assert moved != first_commit
    code, out = snakemake(workdir, configfile, env=env, dry=True)
    assert code == 0 and "unpinned" not in out, out[-3000:]
    run_dir = workdir / "results" / "runs" / "tf" / "tiny" / "lora" / "0"
    code, out = snakemake(workdir, configfile, str((run_dir / "metrics.json").relative_to(workdir)), env=env)
    assert code == 0, out[-3000:] + (workdir / "results/logs/prepare_model/tiny.log").read_text()[-3000:]
    assert sorted(p.name for p in model_dir.iterdir() if not p.name.startswith(".")) == [
        "config.json", "model.safetensors", "seqpeft-pin.json", "tokenizer.json", "tokenizer_config.json"]
    assert not any(moved in r for r in hub.requests)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["model_revision"] == first_commit and metrics["model_pinned"] is True
    assert 0.0 <= metrics["test"]["accuracy"] <= 1.0


def test_allow_unpinned_records_the_commit_and_checksum_used(hub_site, published, tmp_path):
    hub, url, commit, archive = hub_site
    env = hub_env(url, tmp_path)
    workdir = tmp_path / "work"
    workdir.mkdir()
    configfile = workdir / "config.yaml"
    configfile.write_text(yaml.safe_dump(hub_config(url, allow_unpinned=True), sort_keys=False))
    code, out = snakemake(workdir, configfile, "results/pins.resolved.yaml", env=env)
    assert code == 0, out[-3000:]
    resolved = yaml.safe_load((workdir / "results" / "pins.resolved.yaml").read_text())
    assert resolved["models"]["tiny"] == {"hub": "acme/tiny-dna", "revision": commit, "pinned": False, "branch": "main",
                                          "converted": ["model.safetensors"]}
    assert resolved["sources"]["dna"] == {"url": f"{url}/data/dna.tar.gz", "sha256": hashlib.sha256(archive).hexdigest()}


def test_prepare_model_checks_what_the_hub_serves(published, tmp_path):
    """Through prepare_model against the local hub: a pickle carrying code is refused (nothing
    runs), a repository with safetensors never has its .bin fetched, and one without weights fails."""
    import torch
    from safetensors.torch import save_file

    marker = tmp_path / "PWNED"
    state = torch.load(io.BytesIO(published["pytorch_model.bin"]), weights_only=True)
    buffer = io.BytesIO()
    torch.save({**state, "payload": _Payload(marker)}, buffer)
    evil_bin = buffer.getvalue()
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "model.safetensors"))
    no_bin = {k: v for k, v in published.items() if k != "pytorch_model.bin"}
    hub = FakeHub()
    commits = {
        "evil": hub.publish("acme/evil", {**no_bin, "pytorch_model.bin": evil_bin}),
        "both": hub.publish("acme/both", {**no_bin, "pytorch_model.bin": evil_bin,
                                          "model.safetensors": (tmp_path / "model.safetensors").read_bytes()}),
        "none": hub.publish("acme/none", no_bin),
    }
    script = (
        "import sys\nfrom pathlib import Path\nfrom seqpeft.util.errors import SeqpeftInputError\n"
        "from seqpeft.models.prepare import prepare_model\n"
        f"for name, commit in {commits!r}.items():\n"
        "    try:\n"
        f"        prepare_model(name, {{'hub': f'acme/{{name}}', 'revision': commit}}, Path({str(tmp_path)!r}) / name)\n"
        "        print(f'{name}: prepared')\n"
        "    except SeqpeftInputError as error:\n"
        "        print(f'{name}: refused: {error}')\n"
    )
    with HubServer(hub) as url:
        status, out = run([sys.executable, "-c", script], hub_env(url, tmp_path), tmp_path)
    assert status == 0, out[-3000:]
    lines = dict(line.split(": ", 1) for line in out.splitlines() if line.split(":")[0] in commits)
    assert lines["evil"].startswith("refused:") and "pytorch_model.bin: is not a plain tensor checkpoint" in lines["evil"]
    # #25.10: named in the repository, not in the deleted staging directory; no colour codes, no
    # torch advice to load it unsafely
    assert f"hub acme/evil@{commits['evil']}: pytorch_model.bin: is not a plain tensor checkpoint" in lines["evil"]
    assert str(tmp_path) not in lines["evil"] and "\x1b" not in out and "weights_only=False" not in lines["evil"]
    assert lines["both"] == "prepared"
    assert lines["none"].startswith("refused:") and "has no loadable weights" in lines["none"]
    assert "files: README.md, config.json, tokenizer.json" in lines["none"]
    assert not marker.exists()
    assert not (tmp_path / "evil").exists() and not (tmp_path / "none").exists()
    assert not any(r.endswith("/pytorch_model.bin") and "acme/both" in r for r in hub.requests)
    assert sorted(p.name for p in (tmp_path / "both").iterdir()) == [
        "config.json", "model.safetensors", "seqpeft-pin.json", "tokenizer.json", "tokenizer_config.json"]


def test_pin_names_a_repository_the_hub_does_not_have_and_writes_nothing(tmp_path):
    configfile = tmp_path / "config.yaml"
    config = hub_config("http://127.0.0.1:9")
    config["models"]["tiny"]["hub"] = "acme/no-such-model"
    del config["sources"]["dna"]["url"]
    config["sources"]["dna"]["local"] = str(tmp_path)
    configfile.write_text(yaml.safe_dump(config))
    with HubServer(FakeHub()) as url:
        code, out = run([sys.executable, "-m", "seqpeft.cli", "pin", "--configfile", str(configfile)],
                        hub_env(url, tmp_path), tmp_path)
    assert code == 2 and "seqpeft: error: acme/no-such-model: cannot resolve branch 'main' on the Hugging Face Hub" in out, out
    assert not (tmp_path / "pins.yaml").exists()


def test_allow_pickle_with_a_code_carrying_bin_names_the_file(published, tmp_path):
    """#25.10: allow_pickle: true still unpickles weights-only; a refusal names the file, not a raw UnpicklingError."""
    import torch

    from seqpeft.models.families import load_backbone

    marker = tmp_path / "PWNED"
    model_dir = write_files(tmp_path / "m", {k: v for k, v in published.items() if k != "pytorch_model.bin"})
    state = torch.load(io.BytesIO(published["pytorch_model.bin"]), weights_only=True)
    torch.save({**state, "payload": _Payload(marker)}, model_dir / "pytorch_model.bin")
    with pytest.raises(SeqpeftInputError) as caught:
        load_backbone(model_dir, {"allow_pickle": True})
    message = str(caught.value)
    assert message.startswith(f"{model_dir / 'pytorch_model.bin'}: is not a plain tensor checkpoint")
    assert "nothing in it was run" in message and "\x1b" not in message
    assert not marker.exists()


def test_evaluate_on_a_bin_checkpoint_offers_a_fix_the_command_can_take(published, tmp_path):
    """#25.10: `allow_pickle: true` is a config key; the command line's fix is to convert the weights."""
    model_dir = write_files(tmp_path / "m", published)
    data = tmp_path / "d.csv"
    data.write_text("sequence,label\nACGTACGT,0\nACGTTTTT,1\n")
    result = subprocess.run([sys.executable, "-m", "seqpeft.cli", "evaluate", "--model", str(model_dir), "--data",
                             str(data)], capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert f"{model_dir}: has no .safetensors weights. Fix: convert the weights to safetensors" in result.stderr
    assert "allow_pickle" not in result.stderr
