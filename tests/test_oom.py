"""Out of memory halves the micro-batch, keeps the effective batch, and records it."""

from __future__ import annotations

import pytest

from helpers import finetune_job
import torch

import seqpeft.training.loop as loop
from seqpeft.tasks.demo_data import generate_source
from seqpeft.util.errors import SeqpeftInputError
from seqpeft.tasks import tokenize_task
from seqpeft.training.launch import run_finetune

TRAINING = {"epochs": 2, "batch_size": 32, "learning_rate": 4e-3}


@pytest.fixture(scope="module")
def task(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("oom")
    generate_source({"synthetic": "dna", "seed": 2, "n_train": 160, "n_dev": 40, "n_test": 40, "length": 30}, root / "data")
    tokenize_task({"kind": "sequence_classification"}, root / "data", tiny_model_dir("llama"), root / "cache.npz")
    return root


def _with_memory_limit(monkeypatch, max_rows: int) -> None:
    """Models whose training forward runs out of (simulated) GPU memory above ``max_rows`` sequences."""
    real_build = loop.build_model

    def build(*args, **kwargs):
        model, method, method_args, loaded = real_build(*args, **kwargs)
        real_forward = model.forward

        def forward(input_ids, attention_mask):
            if model.training and input_ids.shape[0] > max_rows:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
            return real_forward(input_ids, attention_mask)

        model.forward = forward
        return model, method, method_args, loaded

    monkeypatch.setattr(loop, "build_model", build)


def _job(task, model_dir, out, model_spec=None):
    return finetune_job(task / "cache.npz", model_dir, out, task="t", model_spec=model_spec, training=TRAINING)


def test_oom_halves_micro_batch_and_matches_the_unsplit_run(task, tiny_model_dir, tmp_path, monkeypatch):
    reference = run_finetune(_job(task, tiny_model_dir("llama"), tmp_path / "reference"))
    _with_memory_limit(monkeypatch, max_rows=8)
    metrics = run_finetune(_job(task, tiny_model_dir("llama"), tmp_path / "oom"))
    assert metrics["micro_batch_size"] == 8 and metrics["gradient_accumulation"] == 4
    assert [event["micro_batch_size"] for event in metrics["oom_events"]] == [16, 8]
    for name, value in reference["test"].items():
        assert metrics["test"][name] == pytest.approx(value, abs=1e-3), name


def test_oom_at_micro_batch_one_fails_clearly(task, tiny_model_dir, tmp_path, monkeypatch):
    _with_memory_limit(monkeypatch, max_rows=0)
    with pytest.raises(SeqpeftInputError, match="out of GPU memory at micro-batch 1"):
        run_finetune(_job(task, tiny_model_dir("llama"), tmp_path / "run"))
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_oom_at_micro_batch_one_is_not_retried_with_the_same_settings(task, tiny_model_dir, tmp_path, monkeypatch):
    """Snakemake retries a failed job with more host memory and time; for this failure that cannot
    help, so the retry fails at once, before loading the model. Other settings try again."""
    _with_memory_limit(monkeypatch, max_rows=0)
    with pytest.raises(SeqpeftInputError, match="micro-batch 1 \\(step 1\\)"):
        run_finetune(_job(task, tiny_model_dir("llama"), tmp_path / "run"))
    assert (tmp_path / "run" / "out_of_gpu_memory.json").is_file()
    built = []
    limited_build = loop.build_model
    monkeypatch.setattr(loop, "build_model", lambda *args, **kwargs: built.append(1) or limited_build(*args, **kwargs))
    with pytest.raises(SeqpeftInputError, match="not retried: an earlier attempt .* same settings ran out of memory") as error:
        run_finetune(_job(task, tiny_model_dir("llama"), tmp_path / "run"))
    assert not built and "smaller max_length" in str(error.value)
    with pytest.raises(SeqpeftInputError, match="micro-batch 1 \\(step 1\\)"):  # changed settings: tried again
        run_finetune(_job(task, tiny_model_dir("llama"), tmp_path / "run", {"max_length": 32}))
    assert built


def test_too_long_sequences_are_refused_when_configured(task, tiny_model_dir, tmp_path):
    with pytest.raises(SeqpeftInputError, match="longer than max_length=16") as error:
        run_finetune(_job(task, tiny_model_dir("llama"), tmp_path / "run", {"max_length": 16, "on_too_long": "refuse"}))
    assert "on_too_long: truncate" in str(error.value)
    truncated = run_finetune(_job(task, tiny_model_dir("llama"), tmp_path / "ok", {"max_length": 16}))
    assert truncated["truncated_sequences"] == 240
