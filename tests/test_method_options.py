"""Method options checked before any job: spelling against what each method accepts, peft's own
constraints on the models a variant is paired with, and no retry of a job that cannot succeed."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers import REPO, demo_config
from seqpeft.preflight.check import check_config
from seqpeft.util.errors import SeqpeftInputError
from seqpeft.methods.options import PEFT_FIELDS_SET_BY_SEQPEFT, accepted_options, peft_config_fields
from seqpeft.methods.registry import METHODS, passthrough_method
from seqpeft.preflight.plan import load_config

OFFLINE_ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9"}
MIXTRAL = {"build": {"family": "mixtral", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
                     "intermediate_size": 64, "num_local_experts": 2, "num_experts_per_tok": 1, "seed": 0},
           "tokenizer": "nucleotide", "max_length": 128}


def demo(**methods) -> dict:
    """The demo config, its first experiment block running ``methods`` (added to its methods)."""
    config = demo_config()
    config["methods"].update(methods)
    config["experiments"][0]["methods"] += list(methods)
    return config


def problem(config: dict) -> str:
    with pytest.raises(SeqpeftInputError) as raised:
        check_config(config)
    return str(raised.value)


def test_fields_read_from_peft_source_are_the_config_classes_fields():
    import peft

    classes = {name: cls for name in dir(peft) if isinstance(cls := getattr(peft, name), type)
               and issubclass(cls, peft.PeftConfig) and cls is not peft.PeftConfig and dataclasses.is_dataclass(cls)}
    assert len(classes) > 20
    read = peft_config_fields()
    assert {name: read.get(name) for name in classes} == \
        {name: frozenset(field.name for field in dataclasses.fields(cls)) for name, cls in classes.items()}


def test_every_registered_method_accepts_what_its_function_reads():
    # seqpeft's own arguments of its methods, and that no reserved peft field is offered
    assert {"lora_alpha", "r", "target_modules", "last_n_layers"} <= accepted_options(METHODS["lora"])
    assert {"rs_probability", "rs_seed", "init_r", "tinit"} <= accepted_options(METHODS["adalora_rs"])
    assert {"quant_type", "double_quant", "compute_dtype", "gradient_checkpointing", "r"} <= accepted_options(METHODS["qlora"])
    assert accepted_options(METHODS["lopa"]) == {"num_virtual_tokens", "lp_rank", "encoder_hidden_size", "dropout"}
    assert accepted_options(METHODS["full"]) == frozenset() == accepted_options(METHODS["frozen"])
    assert not set(PEFT_FIELDS_SET_BY_SEQPEFT) & accepted_options(passthrough_method("LoHaConfig"))


def test_a_misspelt_option_names_the_variant_the_option_and_the_nearest_name():
    message = problem(demo(lora_typo={"method": "lora", "r": 8, "lora_alpah": 16}))
    assert message.startswith("methods.lora_typo.lora_alpah: unknown option of method 'lora'")
    assert "variant 'lora_typo'" in message and "did you mean 'lora_alpha'?" in message
    assert "did you mean 'lp_rank'?" in problem(demo(lopa2={"method": "lopa", "lp_rnk": 2}))
    assert "options it accepts: none" in problem(demo(full2={"method": "full", "r": 8}))
    assert "methods.loha.peft: peft has no config class 'LohaConfig'" in problem(demo(loha={"peft": "LohaConfig", "r": 4}))
    assert "did you mean 'LoHaConfig'?" in problem(demo(loha={"peft": "LohaConfig", "r": 4}))
    assert "did you mean 'alpha'?" in problem(demo(loha={"peft": "LoHaConfig", "alpah": 4}))
    assert "methods.lora2.task_type: is set by seqpeft" in problem(demo(lora2={"method": "lora", "task_type": "SEQ_CLS"}))
    check_config(demo(loha={"peft": "LoHaConfig", "r": 4, "alpha": 8}, lora_last={"method": "lora", "last_n_layers": 1}))


def test_impossible_adalora_schedules_are_refused_before_any_job(tiny_model_dir):
    """With total_step set (LINGO's 7485), tinit + tfinal must leave steps to prune in; a negative
    allocate_every or a probability outside [0, 1] is refused too. The job checks the same."""
    from seqpeft.training.assemble import build_model

    message = problem(demo(ada_short={"method": "adalora", "total_step": 100, "tinit": 60, "tfinal": 40}))
    assert message.startswith("methods.ada_short.tinit: adalora: tinit (60) + tfinal (40) must be below total_step (100)")
    assert "Fix: raise total_step or lower tinit/tfinal." in message
    assert "methods.ada_final.tfinal:" in problem(demo(ada_final={"method": "adalora", "total_step": 100, "tfinal": 95}))
    assert "methods.rs.allocate_every: is -1" in problem(demo(rs={"method": "adalora_rs", "allocate_every": -1}))
    assert "methods.rs.rs_probability: is 1.5, not a probability" in problem(demo(rs={"method": "adalora_rs",
                                                                                      "rs_probability": 1.5}))
    # without total_step the run's length decides: the job checks it
    check_config(demo(ada_run={"method": "adalora", "tinit": 60, "tfinal": 40}, ada_ok={"method": "adalora",
                                                                                        "total_step": 101, "tinit": 60,
                                                                                        "tfinal": 40}))
    with pytest.raises(SeqpeftInputError, match=r"must be below total_step \(50: epochs x optimizer steps per epoch\)"):
        build_model(tiny_model_dir("llama"), {}, "adalora", {"tinit": 30, "tfinal": 20}, 2, False, total_steps=50,
                    model_name="llama")
    with pytest.raises(SeqpeftInputError, match="adalora_rs: rs_probability is -0.1, not a probability"):
        build_model(tiny_model_dir("llama"), {}, "adalora_rs", {"rs_probability": -0.1}, 2, False, total_steps=50,
                    model_name="llama")


def test_lora_dropout_on_mixtral_experts_is_refused_for_that_pairing_only():
    config = demo()
    config["models"]["tiny_mixtral"] = MIXTRAL
    config["methods"]["lora_drop"] = {"method": "lora", "lora_dropout": 0.05}
    config["experiments"].append({"tasks": ["demo_tf"], "models": ["tiny_llama_dna"], "methods": ["lora_drop"]})
    check_config(config)  # dropout on a Llama: fine
    config["experiments"].append({"tasks": ["demo_tf"], "models": ["tiny_mixtral"], "methods": ["lora_drop"]})
    message = problem(config)
    assert message.startswith("methods.lora_drop.lora_dropout: is 0.05, but on mixtral models")
    assert "model 'tiny_mixtral'" in message and "set lora_dropout: 0" in message
    config["methods"]["lora_drop"]["target_parameters"] = []  # LoRA kept off the experts: dropout allowed
    check_config(config)
    config["methods"]["lora_drop"]["target_parameters"] = ["mlp.experts.down_proj"]  # peft refuses on any model
    assert "methods.lora_drop.lora_dropout: peft's LoRA on target_parameters has no dropout" in problem(config)


@pytest.mark.parametrize("path", sorted([*(REPO / "config").glob("*.yaml"), *(REPO / "config" / "seeds").glob("*.yaml")]))
def test_every_shipped_config_passes_the_option_checks(path):
    load_config(path)


def snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    """Snakemake in ``workdir`` (targets first: --configfile takes every word after it)."""
    return subprocess.run([sys.executable, "-m", "snakemake", *args, "-s", str(REPO / "Snakefile"), "-d", str(workdir),
                           "--profile", str(REPO / "profiles" / "local"), "--cores", "2"],
                          cwd=workdir, env=OFFLINE_ENV, capture_output=True, text=True, timeout=900)


def test_dry_run_refuses_a_misspelt_option(tmp_path):
    config = demo(lora_typo={"method": "lora", "lora_alpah": 16})
    config["results"] = "results"
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    result = snakemake(tmp_path, "-n", "--configfile", "config.yaml")
    assert result.returncode != 0
    assert "methods.lora_typo.lora_alpah: unknown option of method 'lora'" in result.stderr
    assert "did you mean 'lora_alpha'?" in result.stderr


@pytest.mark.slow
def test_an_error_retrying_cannot_fix_is_not_retried(tmp_path):
    """A LoRA target the model lacks passes the config check and fails inside the job: the rule's
    retries (2) then fail at once with that error instead of loading and failing again."""
    config = demo_config()
    config.update(results="results", published=None)
    config["methods"]["lora_bad"] = {"method": "lora", "target_modules": ["nope"]}
    config["experiments"] = [{"tasks": ["demo_tf"], "models": ["tiny_bert_dna"], "methods": ["lora_bad"]}]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    target = "results/runs/demo_tf/tiny_bert_dna/lora_bad/0/metrics.json"
    result = snakemake(tmp_path, target, "--configfile", "config.yaml")
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert output.count("Trying to restart job") == 2  # Snakemake did retry ...
    assert "not retried: attempt 2 would fail the same way" in output  # ... and each retry failed at once
    assert "not retried: attempt 3 would fail the same way" in output
    log = tmp_path / "results/runs/demo_tf/tiny_bert_dna/lora_bad/0/train.log"  # Snakemake keeps the last attempt's
    assert "attempt 3 not run: the first attempt failed" in log.read_text() and "Traceback" not in log.read_text()
    # a new Snakemake run is a first attempt again: it clears the mark, runs the job and fails the same way,
    # so its retries repeat the new error, not the old mark's
    mark = log.with_name(log.name + ".not-retryable")
    assert "do not exist in model" in mark.read_text()
    mark.write_text("a mark left by an earlier Snakemake run\n")
    again = snakemake(tmp_path, target, "--configfile", "config.yaml")
    output = again.stdout + again.stderr
    assert "a mark left by an earlier Snakemake run" not in output
    assert output.count("not retried: attempt") == 2 and "do not exist in model" in mark.read_text()
