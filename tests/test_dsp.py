"""Domain-shift prompting: template encodings, truncation, masks, config, training, the DAG."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from seqpeft.preflight import check as sc
from seqpeft.config import jobs
from seqpeft.tasks.demo_data import generate_source
from seqpeft.methods.dsp import DEFAULT_TEMPLATE, DspEncoder, DspSettings, split_template, template_problem
from seqpeft.util.errors import SeqpeftInputError
from seqpeft.data.tokenize import TokenizedSplit, build_tokenizer, load_cache
from seqpeft.tasks import tokenize_dsp_task, tokenize_task
from seqpeft.training.assemble import build_model
from seqpeft.core.batching import Split, collate
from seqpeft.training.launch import run_finetune
from seqpeft.training.predict import predict_split
from seqpeft.config.settings import FinetuneJob

from helpers import TINY, finetune_job, shared_path

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "config" / "demo.yaml"
DOMAIN = "TF binding"
PREFIX, SUFFIX = f"Domain: {DOMAIN}\nSequence: ", "\nAnnotation:"


@pytest.fixture(scope="module")
def bytes_model(tmp_path_factory):
    """A tiny Llama whose byte-level BPE tokenizer merges A/C/G/T runs into 4-mers."""
    from seqpeft.models.prepare import prepare_model

    root = tmp_path_factory.mktemp("bytes_model")
    build_tokenizer({"kind": "bytes", "dna_merges": True}, root / "tokenizer")
    spec = {"build": {"family": "llama", **TINY}, "tokenizer": "bytes_dna", "max_length": 128}
    prepare_model("tiny_llama_bytes", spec, root / "model", root / "tokenizer")
    return root / "model"


@pytest.fixture(scope="module")
def tokenizer(bytes_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(bytes_model))


def settings(encoding: str, **overrides) -> DspSettings:
    return DspSettings.from_dict({"encoding": encoding, "domain": DOMAIN, "max_length": 128, **overrides})


def tokens(tokenizer, ids) -> list[str]:
    return tokenizer.convert_ids_to_tokens([int(i) for i in ids])


def encode_one(encoder: DspEncoder, sequence: str) -> list[int]:
    ids, offsets, _ = encoder.encode([sequence])
    return ids[offsets[0]:offsets[1]].tolist()


# ---- template and encodings ----


def test_template_checks_and_split():
    assert template_problem(DEFAULT_TEMPLATE) is None
    assert split_template(DEFAULT_TEMPLATE, DOMAIN) == (PREFIX, SUFFIX)
    assert split_template("{{x}} {domain}:{sequence}|{domain}", "d") == ("{x} d:", "|d")
    assert "exactly once" in template_problem("Domain: {domain}")
    assert "exactly once" in template_problem("{sequence}{sequence}")
    assert "{species}" in template_problem("{species}: {sequence}")
    assert "format spec" in template_problem("{sequence:>10}")
    assert "not a valid template" in template_problem("{sequence} {")


def test_bytes_tokenizer_spells_any_text_and_merges_nucleotides(tokenizer):
    text = "Domain: émoji ☃ {x}\nSequence: ACGTACGTAC"
    ids = tokenizer(text)["input_ids"]
    assert tokenizer.unk_token_id not in ids
    assert tokenizer.decode(ids, skip_special_tokens=True) == text
    assert tokens(tokenizer, tokenizer("ACGTTTGA", add_special_tokens=False)["input_ids"]) == ["ACGT", "TTGA"]


def test_bbpe_encoding_is_the_whole_templated_string(tokenizer):
    sequence = "ACGTACGTTTGACCN"
    encoder = DspEncoder(tokenizer, settings("bbpe"))
    expected = tokenizer(PREFIX + sequence + SUFFIX)["input_ids"]
    assert encode_one(encoder, sequence) == expected
    assert tokenizer.decode(expected, skip_special_tokens=True) == PREFIX + sequence + SUFFIX
    # the sequence merges into multi-nucleotide tokens, as byte-level BPE does on text
    assert len(expected) < encoder.template_tokens + len(sequence)
    assert encoder.template_tokens == len(tokenizer(PREFIX + SUFFIX)["input_ids"])


def test_nucleotide_encoding_splices_one_token_per_nucleotide(tokenizer):
    sequence = "ACGTACGTTTGACCN"
    encoder = DspEncoder(tokenizer, settings("nucleotide"))
    vocab = tokenizer.get_vocab()
    expected = ([tokenizer.cls_token_id] + tokenizer(PREFIX, add_special_tokens=False)["input_ids"]
                + [vocab[letter] for letter in sequence]
                + tokenizer(SUFFIX, add_special_tokens=False)["input_ids"] + [tokenizer.sep_token_id])
    assert encode_one(encoder, sequence) == expected
    assert encoder.template_tokens == len(expected) - len(sequence)
    # configurable ids: N mapped elsewhere, the other letters keep the tokenizer's
    custom = DspEncoder(tokenizer, settings("nucleotide", nucleotide_ids={"N": vocab["n"]}))
    start = 1 + len(tokenizer(PREFIX, add_special_tokens=False)["input_ids"])
    assert encode_one(custom, "ACN")[start:start + 3] == [vocab["A"], vocab["C"], vocab["n"]]


def test_missing_nucleotide_token_names_the_model_and_the_fix():
    from transformers import AutoTokenizer

    mistral = AutoTokenizer.from_pretrained(str(shared_path("models/mistral-dna-v1-1m-hg38-tf0")))
    with pytest.raises(SeqpeftInputError) as error:
        DspEncoder(mistral, settings("nucleotide"), model="mistral_dna")
    message = str(error.value)
    assert "'mistral_dna'" in message and "N" in message and "models.mistral_dna.dsp_nucleotide_ids" in message
    encoder = DspEncoder(mistral, settings("nucleotide", nucleotide_ids={"N": mistral.unk_token_id}), model="mistral_dna")
    vocab = mistral.get_vocab()
    start = 1 + len(mistral(PREFIX, add_special_tokens=False)["input_ids"])  # after [CLS] and the template's head
    assert encode_one(encoder, "GATN")[start:start + 4] == [vocab["G"], vocab["A"], vocab["T"], mistral.unk_token_id]


@pytest.mark.parametrize("encoding", ["bbpe", "nucleotide"])
def test_truncation_cuts_the_sequence_and_keeps_the_template_whole(tokenizer, encoding):
    rng = np.random.default_rng(0)
    long = "".join(rng.choice(list("ACGT"), size=300))
    limit = 70
    encoder = DspEncoder(tokenizer, settings(encoding, max_length=limit))
    ids, offsets, truncated = encoder.encode(["ACGT", long])
    assert truncated == [1]
    short, cut = ids[offsets[0]:offsets[1]].tolist(), ids[offsets[1]:offsets[2]].tolist()
    assert len(cut) <= limit and len(short) < limit
    text = tokenizer.decode(cut, skip_special_tokens=True)
    assert text.startswith(PREFIX) and text.endswith(SUFFIX)
    kept = text[len(PREFIX):-len(SUFFIX)]
    assert long.startswith(kept) and len(kept) > 0
    if encoding == "nucleotide":
        assert len(cut) == limit and len(kept) == limit - encoder.template_tokens
    else:  # the longest sequence head whose templated string fits, tokenized as a whole
        assert cut == tokenizer(PREFIX + kept + SUFFIX)["input_ids"]
        assert len(tokenizer(PREFIX + long[:len(kept) + 4] + SUFFIX)["input_ids"]) > limit
    refusing = DspEncoder(tokenizer, settings(encoding, max_length=limit, on_too_long="refuse"))
    with pytest.raises(SeqpeftInputError, match="1 sequences do not fit max_length=70.*sequence 2"):
        refusing.encode(["ACGT", long], source="train.csv")


def test_template_that_does_not_fit_is_refused(tokenizer):
    with pytest.raises(SeqpeftInputError, match="template alone is .* tokens .*max_length=20"):
        DspEncoder(tokenizer, settings("bbpe", max_length=20), model="tiny")


# ---- attention masks from lengths ----


def test_mask_covers_the_template_when_the_pad_id_occurs_in_it(bytes_model, tokenizer):
    """A tokenizer whose pad token is a real token of the template (the newline byte, as when a
    model pads with a token it also reads): a mask made by comparing ids with the pad id would hide
    template positions; collate's mask, from lengths, covers every real token, and a sequence's
    logits are the same alone and in a right-padded batch."""
    padding_newline = copy.deepcopy(tokenizer)
    padding_newline.pad_token = "Ċ"
    pad_id = padding_newline.pad_token_id
    assert pad_id == padding_newline.convert_tokens_to_ids("Ċ")
    rng = np.random.default_rng(2)
    sequences = ["".join(rng.choice(list("ACGTN"), size=n)) for n in (7, 30, 15, 52, 3)]
    for encoding in ("bbpe", "nucleotide"):
        encoder = DspEncoder(padding_newline, settings(encoding))
        ids, offsets, _ = encoder.encode(sequences)
        split = Split(TokenizedSplit(ids, offsets, np.zeros(len(sequences), dtype=np.int64)), per_residue=False)
        input_ids, attention, _ = collate(split, np.arange(len(sequences)), pad_id, 128, torch)
        lengths = split.data.lengths
        assert attention.sum(dim=1).tolist() == lengths.tolist()
        for row, length in enumerate(lengths):
            assert attention[row, :length].all() and not attention[row, length:].any()
            assert input_ids[row, :length].tolist() == split.data.sequence(row).tolist()
        by_pad_id = (input_ids != pad_id).long()
        assert (by_pad_id.sum(dim=1) < attention.sum(dim=1)).all()  # the seed's mask would drop "\n" tokens

        for method in ("lora", "prompt_tuning"):
            model, *_ = build_model(bytes_model, {}, method, {}, 2, False, total_steps=10, model_name="tiny")
            generator = torch.Generator().manual_seed(5)
            with torch.no_grad():
                for param in model.parameters():
                    if param.requires_grad:
                        param.add_(0.05 * torch.randn(param.shape, generator=generator))
            _, batched, _ = predict_split(model, split, pad_id, 128, len(sequences), torch.device("cpu"))
            _, alone, _ = predict_split(model, split, pad_id, 128, 1, torch.device("cpu"))
            np.testing.assert_allclose(batched, alone, atol=1e-5, rtol=0, err_msg=f"{encoding}/{method}")


# ---- config ----


def demo_config() -> dict:
    return yaml.safe_load(DEMO.read_text())


def error_of(config: dict) -> str:
    with pytest.raises(SeqpeftInputError) as caught:
        sc.check_config(config)
    return str(caught.value)


def test_demo_config_has_dsp_variants_and_passes():
    config = demo_config()
    sc.check_config(config)
    assert jobs.dsp_encoding(config, "lora_dsp") == "bbpe"
    assert jobs.dsp_encoding(config, "lora_dsp_nt") == "nucleotide"
    assert jobs.dsp_encoding(config, "lora") is None


def test_dsp_on_a_signal_peptide_task_is_refused():
    config = demo_config()
    config["experiments"][-1]["methods"].append("lora_dsp")  # the demo_sp block
    message = error_of(config)
    assert message.startswith(f"experiments[{len(config['experiments']) - 1}].methods:")
    assert "'lora_dsp'" in message and "'demo_sp'" in message and "sequence_classification" in message


def test_bad_template_and_encoding_name_the_key():
    config = demo_config()
    config["tasks"]["demo_tf"]["dsp_template"] = "Domain: {domain}"
    assert error_of(config).startswith("tasks.demo_tf.dsp_template:")
    config = demo_config()
    config["methods"]["lora_dsp"]["dsp"] = {"encoding": "bpe"}
    assert error_of(config).startswith("methods.lora_dsp.dsp.encoding: unknown DSP encoding 'bpe'")


def test_dsp_settings_reach_only_dsp_jobs():
    config = demo_config()
    config["models"]["tiny_llama_bytes"]["dsp_nucleotide_ids"] = {"N": 5}
    plain = jobs.finetune_method_params(config, "demo_tf", "tiny_llama_bytes", "lora")
    assert "dsp" not in plain
    assert jobs.method_spec(config, "lora_dsp") == plain  # the variant's method arguments, without dsp
    bbpe = jobs.finetune_method_params(config, "demo_tf", "tiny_llama_bytes", "lora_dsp")["dsp"]
    assert bbpe == {"domain": DOMAIN, "encoding": "bbpe", "max_length": 128, "nucleotide_ids": {},
                    "on_too_long": "truncate", "template": DEFAULT_TEMPLATE}
    nucleotide = jobs.finetune_method_params(config, "demo_tf", "tiny_llama_bytes", "lora_dsp_nt")["dsp"]
    assert nucleotide["nucleotide_ids"] == {"N": 5} and nucleotide["encoding"] == "nucleotide"
    # template, domain and nucleotide ids are not part of the other jobs' params
    assert "domain" not in jobs.task_params(config, "demo_tf")
    assert "dsp_nucleotide_ids" not in jobs.model_params(config, "tiny_llama_bytes")
    del config["tasks"]["demo_tf"]["domain"]
    assert jobs.dsp_settings(config, "demo_tf", "tiny_llama_bytes", "bbpe")["domain"] == "demo_tf"


def test_dsp_key_never_reaches_the_method():
    from seqpeft.methods.registry import resolve_method

    method, args = resolve_method("lora_dsp", {"method": "lora", "r": 4, "dsp": {"encoding": "bbpe"}})
    assert method.name == "lora" and args == {"r": 4}


# ---- training, caches, save -> load ----


@pytest.fixture(scope="module")
def dsp_task(tmp_path_factory, bytes_model):
    root = tmp_path_factory.mktemp("dsp_task")
    generate_source({"synthetic": "dna", "seed": 3, "n_train": 400, "n_dev": 100, "n_test": 100, "length": 40,
                     "motif_copies": 2}, root / "data")
    dsp = settings("nucleotide").to_dict()
    tokenize_dsp_task({"kind": "sequence_classification"}, root / "data", bytes_model, dsp, root / "dsp.npz",
                      model="tiny_llama_bytes")
    tokenize_task({"kind": "sequence_classification"}, root / "data", bytes_model, root / "plain.npz")
    return root, dsp


def _job(root: Path, cache: str, method_spec: dict, out: Path, model_dir: Path, epochs: int = 4) -> FinetuneJob:
    training = {"epochs": epochs, "batch_size": 32, "learning_rate": 4e-3, "patience": 4, "device": "cpu"}
    return finetune_job(root / cache, model_dir, out, task="demo_tf", model="tiny_llama_bytes", method="lora_dsp_nt",
                        model_spec={"max_length": 128, "pooling": "mean"}, method_spec=method_spec, training=training)


def test_dsp_cache_has_the_plain_layout_and_the_settings(dsp_task, tokenizer):
    root, dsp = dsp_task
    cache, plain = load_cache(root / "dsp.npz"), load_cache(root / "plain.npz")
    assert cache.meta["dsp"]["encoding"] == "nucleotide" and cache.meta["dsp_truncated"] == {"train": 0, "dev": 0, "test": 0}
    assert cache.fingerprint == plain.fingerprint
    template = cache.meta["dsp"]["template_tokens"]
    for name in ("train", "dev", "test"):
        np.testing.assert_array_equal(cache.splits[name].labels, plain.splits[name].labels)
        assert (cache.splits[name].lengths == template + 40).all()  # one token per nucleotide
    first = tokenizer.decode(cache.splits["train"].sequence(0).tolist(), skip_special_tokens=True)
    assert first.startswith(PREFIX) and first.endswith(SUFFIX)


def test_dsp_run_learns_and_reloads_with_the_same_template(dsp_task, bytes_model, tmp_path):
    from seqpeft.training.evaluate import evaluate_file, load_predictor

    root, dsp = dsp_task
    spec = {"method": "lora", "r": 8, "lora_alpha": 16, "dsp": dsp}
    metrics = run_finetune(_job(root, "dsp.npz", spec, tmp_path / "run", bytes_model))
    dev_losses = [float(row["dev_loss"]) for row in _history(tmp_path / "run" / "history.csv")]
    assert min(dev_losses[1:]) < dev_losses[0], dev_losses
    assert metrics["dsp"] == {"encoding": "nucleotide", "domain": DOMAIN,
                              "template_tokens": load_cache(root / "dsp.npz").meta["dsp"]["template_tokens"]}
    artifacts = tmp_path / "run" / "artifacts"
    saved = json.loads((artifacts / "seqpeft.json").read_text())
    assert saved["dsp"]["template"] == DEFAULT_TEMPLATE and saved["dsp"]["resolved_nucleotide_ids"]["A"] == \
        tokenizer_vocab(bytes_model)["A"]
    # save -> load: evaluating the raw test CSV applies the same template, so it reproduces the run's numbers
    predictor = load_predictor(artifacts)
    reloaded = evaluate_file(predictor, root / "data" / "test.csv")
    assert reloaded["loss"] == pytest.approx(metrics["test"]["loss"], abs=1e-6)
    assert reloaded["accuracy"] == metrics["test"]["accuracy"]
    predictor.dsp = None  # the same model on bare sequences sees other inputs
    assert evaluate_file(predictor, root / "data" / "test.csv")["loss"] != pytest.approx(metrics["test"]["loss"], abs=1e-3)


def tokenizer_vocab(model_dir: Path) -> dict:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model_dir)).get_vocab()


def _history(path: Path) -> list[dict]:
    import csv

    with open(path) as handle:
        return list(csv.DictReader(handle))


def test_a_cache_of_other_dsp_settings_is_refused(dsp_task, bytes_model, tmp_path):
    root, dsp = dsp_task
    with pytest.raises(SeqpeftInputError, match="without the DSP template"):
        run_finetune(_job(root, "plain.npz", {"method": "lora", "dsp": dsp}, tmp_path / "a", bytes_model))
    with pytest.raises(SeqpeftInputError, match="holds domain-shift-prompted inputs"):
        run_finetune(_job(root, "dsp.npz", {"method": "lora"}, tmp_path / "b", bytes_model))
    with pytest.raises(SeqpeftInputError, match=r"other DSP settings \(domain\)"):
        run_finetune(_job(root, "dsp.npz", {"method": "lora", "dsp": {**dsp, "domain": "promoters"}}, tmp_path / "c",
                          bytes_model))
    assert not any((tmp_path / name / "metrics.json").exists() for name in "abc")


# ---- the DAG ----


def test_dry_run_dsp_jobs_read_their_own_caches(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9"}
    out = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--snakefile", str(ROOT / "Snakefile"), "--configfile",
                          str(DEMO), "--config", f"results={tmp_path}"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    inputs = {}
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", out.stdout):
        rule = re.match(r"(?:local)?rule (\w+):", block)
        wildcards = re.search(r"wildcards: (.*)", block)
        if rule and wildcards:
            found = re.search(r"input: (.*)", block)
            inputs[(rule.group(1), wildcards.group(1))] = found.group(1) if found else ""
    run = "task=demo_tf, model=tiny_llama_bytes, method={}, partition=0"
    assert f"{tmp_path}/tokenized/demo_tf/tiny_llama_bytes.dsp-bbpe.npz" in inputs[("finetune", run.format("lora_dsp"))]
    assert f"{tmp_path}/tokenized/demo_tf/tiny_llama_bytes.dsp-nucleotide.npz" in inputs[("finetune", run.format("lora_dsp_nt"))]
    assert f"{tmp_path}/tokenized/demo_tf/bytes_dna.npz" in inputs[("finetune", run.format("lora"))]
    dsp_jobs = [key[1] for key in inputs if key[0] == "tokenize_dsp"]
    encodings = [dict(part.split("=") for part in job.split(", ")) for job in dsp_jobs]
    # one cache per task x encoding: the DNA task and the multi-label task both run lora_dsp and lora_dsp_nt
    assert sorted((job["task"], job["encoding"]) for job in encodings) == [
        ("demo_marks", "bbpe"), ("demo_marks", "nucleotide"), ("demo_tf", "bbpe"), ("demo_tf", "nucleotide")]
    assert all(f"{tmp_path}/tokenizers/bytes_dna" in inputs[("tokenize_dsp", job)] for job in dsp_jobs)
