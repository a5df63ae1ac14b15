"""Every hub model the shipped configs name, in its real hub layout and dtype (issue #22, point 3).

The stand-ins of tests/hub_server.py (real repository ids and commits, real file layouts, real
small files from ../shared, random weights at the real tensor names) are served by a local hub;
``prepare_model`` fetches, converts, verifies and records each as a cluster would, and the
prepared directories are then loaded as the fine-tuning jobs load them: float32 weights whatever
the checkpoint held, a head as wide as what the backbone outputs, the tokenizer's own pad id.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import REPO, finetune_job, shared_path
from hub_server import real_layout_repos, served_repo, shipped_hub_models

REPOS = real_layout_repos()
SHIPPED = shipped_hub_models(REPO)
# one entry per hub repository (the first config naming it), as the shipped configs write it
ENTRIES = {}
for _config, _models in SHIPPED.items():
    for _name, _spec in _models.items():
        ENTRIES.setdefault(_spec["hub"], (f"{_config}:{_name}", _spec))

PREPARE = """
import json, sys
from pathlib import Path
from seqpeft.models.prepare import prepare_model
jobs = json.loads(sys.argv[1])
for repo, (name, spec, out) in jobs.items():
    prepare_model(name, spec, Path(out))
"""


def test_every_shipped_hub_model_has_a_stand_in_at_its_pinned_commit():
    assert len(SHIPPED) == 4 and len(ENTRIES) == len(REPOS)
    for config, models in SHIPPED.items():
        for name, spec in models.items():
            served_repo(spec)  # KeyError: no stand-in, or it serves another commit than the config pins
    with pytest.raises(KeyError, match="pins"):
        served_repo({"hub": "facebook/opt-350m", "revision": "0" * 40})


@pytest.fixture(scope="module")
def prepared(real_hub, tmp_path_factory):
    """Every shipped hub model prepared from the stand-in hub: {hub repo: (model dir, spec)}."""
    root = tmp_path_factory.mktemp("real_layouts")
    jobs = {repo: (name.split(":")[1], spec, str(root / repo.replace("/", "--"))) for repo, (name, spec) in ENTRIES.items()}
    env = {**os.environ, **real_hub, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO / "tests")])}
    result = subprocess.run([sys.executable, "-c", PREPARE, json.dumps(jobs)], env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    return {repo: (Path(out), spec) for repo, (_, spec, out) in jobs.items()}


@pytest.mark.parametrize("repo", sorted(ENTRIES))
def test_prepare_model_fetches_converts_verifies_and_records(prepared, repo):
    model_dir, spec = prepared[repo]
    record = json.loads((model_dir / "seqpeft-pin.json").read_text())
    assert record["hub"] == repo
    if REPOS[repo].commit:
        assert record["revision"] == REPOS[repo].commit and record["pinned"]
    served_bins = sorted(name for name in REPOS[repo].files() if name.endswith(".bin"))
    assert len(record["converted"]) == len(served_bins)
    assert not list(model_dir.glob("*.bin")) and not list(model_dir.glob("*.py"))
    assert list(model_dir.glob("*.safetensors"))
    if len(served_bins) > 1:  # a sharded checkpoint keeps its shards, indexed
        index = json.loads((model_dir / "model.safetensors.index.json").read_text())
        assert len(set(index["weight_map"].values())) == len(served_bins)


def _output_width(loaded) -> int:
    """What the backbone really outputs, measured: the last hidden state of a two-token input."""
    import torch

    ids = torch.tensor([loaded.tokenizer("ACGTACGTACGT")["input_ids"]])
    with torch.no_grad():
        output = loaded.backbone(input_ids=ids, attention_mask=torch.ones_like(ids))
    return int(output.last_hidden_state.shape[-1])


@pytest.mark.parametrize("repo", sorted(ENTRIES))
def test_loaded_backbone_is_float32_and_its_head_as_wide_as_its_output(prepared, repo):
    import torch

    from seqpeft.models.families import load_backbone

    model_dir, spec = prepared[repo]
    loaded = load_backbone(model_dir, spec)
    dtypes = {p.dtype for p in loaded.backbone.parameters() if p.is_floating_point()}
    assert dtypes == {torch.float32}, f"{repo} ({REPOS[repo].layout}) loaded as {dtypes}"
    assert loaded.weights_dtype == {"checkpoint": REPOS[repo].checkpoint_dtype, "loaded": "float32"}
    assert loaded.hidden_size == _output_width(loaded), repo
    assert loaded.tokenizer.pad_token_id is not None, f"{repo}: no pad token"


def test_opt_350m_width_is_word_embed_proj_dim_not_hidden_size(prepared):
    from seqpeft.models.families import load_backbone

    model_dir, spec = prepared["facebook/opt-350m"]
    config = json.loads((model_dir / "config.json").read_text())
    assert config["word_embed_proj_dim"] != config["hidden_size"]  # the stand-in keeps the real relation
    assert load_backbone(model_dir, spec).hidden_size == config["word_embed_proj_dim"]


def test_dnabert2_pads_with_its_tokenizers_pad_not_unk(prepared):
    from seqpeft.models.families import load_backbone

    model_dir, spec = prepared["zhihan1996/DNABERT-2-117M"]
    assert "pad_token_id" not in json.loads((model_dir / "config.json").read_text())
    loaded = load_backbone(model_dir, spec)
    assert loaded.tokenizer.pad_token_id == 3 and loaded.tokenizer.convert_ids_to_tokens(3) == "[PAD]"
    assert loaded.backbone.embeddings.word_embeddings.padding_idx == 3
    assert loaded.backbone.config.pad_token_id == 3


@pytest.mark.parametrize("config", ["served", "public copy"])
def test_dnabert2_tokenizer_loads_without_asking_about_remote_code(prepared, tmp_path, config):
    """transformers asks "run the custom code? [y/N]" (and waits 15 s at a terminal) for a config with
    an ``auto_map`` and no model_type it knows, as the public copy of DNABERT-2's config.json is."""
    import shutil

    model_dir, _ = prepared["zhihan1996/DNABERT-2-117M"]
    if config == "public copy":
        model_dir = Path(shutil.copytree(model_dir, tmp_path / "m"))
        (model_dir / "config.json").write_bytes(shared_path("models/layouts/zhihan1996--DNABERT-2-117M/config.json").read_bytes())
        assert "model_type" not in json.loads((model_dir / "config.json").read_text())
    code = f"from seqpeft.data.tokenize import load_tokenizer; print(load_tokenizer({str(model_dir)!r}).pad_token_id)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, stdin=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONPATH": str(REPO / "src"), "HF_HUB_OFFLINE": "1"}, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "3"
    assert "custom code" not in result.stdout + result.stderr


def _small_dna_task(tmp_path: Path) -> Path:
    """The first rows of each label of GUE tf/0's splits (both labels in every split)."""
    data = tmp_path / "data"
    data.mkdir()
    for split, rows in (("train", 64), ("dev", 32), ("test", 32)):
        header, *body = shared_path(f"data/gue/tf/0/{split}.csv").read_text().splitlines()
        picked = [line for label in "01" for line in [r for r in body if r.endswith("," + label)][: rows // 2]]
        (data / f"{split}.csv").write_text("\n".join([header, *picked]) + "\n")
    return data


@pytest.mark.parametrize("head,method", [pytest.param("seqpeft", "lora", marks=pytest.mark.slow), ("transformers", "lora"),
                                         ("seqpeft", "full"), ("seqpeft", "prompt_tuning"), ("seqpeft", "p_tuning")])
def test_opt_350m_shaped_model_trains_and_predicts(prepared, tmp_path, head, method):
    """Every OPT job of config/config.yaml failed at its first forward pass (head 1024 wide, output
    512); peft's virtual tokens were hidden_size wide too, the input embeddings word_embed_proj_dim."""
    import csv

    from seqpeft.training.launch import run_finetune
    from seqpeft.tasks import tokenize_task

    model_dir, spec = prepared["facebook/opt-350m"]
    data = _small_dna_task(tmp_path)
    cache = tmp_path / "cache.npz"
    tokenize_task({"kind": "sequence_classification"}, data, model_dir, cache)
    model_spec = {"max_length": 64, "family": "opt", **({"head": "transformers"} if head == "transformers" else {})}
    metrics = run_finetune(finetune_job(cache, model_dir, tmp_path / "run", model="opt", method=method,
                                        model_spec=model_spec, method_spec={"r": 4, "lora_alpha": 8} if method == "lora" else {},
                                        training={"epochs": 1, "batch_size": 16, "precision": "fp32"}))
    assert metrics["weights_dtype"] == {"checkpoint": "float16", "loaded": "float32"}
    written = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert written["weights_dtype"] == metrics["weights_dtype"]
    if (head, method) != ("seqpeft", "lora"):
        return  # `seqpeft predict` once (a subprocess: ~10 s)
    output = tmp_path / "predictions.csv"
    result = subprocess.run([sys.executable, "-m", "seqpeft.cli", "predict", "--model", str(tmp_path / "run" / "artifacts"),
                             "--input", str(data / "test.csv"), "--output", str(output)], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO / "src"), "HF_HUB_OFFLINE": "1"}, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = list(csv.DictReader(output.open()))
    assert len(rows) == 32
