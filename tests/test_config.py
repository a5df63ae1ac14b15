"""Tests for seqpeft.preflight.check (cross-reference checks), seqpeft.config.jobs (matrix expansion) and seqpeft.config.paths."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import yaml

from seqpeft.preflight import check as sc
from seqpeft.preflight.read import config_error_message
from seqpeft.config import jobs, paths
from seqpeft.preflight.check import check_config
from seqpeft.config.jobs import Run, expand_runs
from seqpeft.config.paths import model_dir, source_dir, tokenizer_of
from seqpeft.util.errors import SeqpeftInputError

ROOT = Path(__file__).resolve().parents[1]

REVISION = "0123456789abcdef0123456789abcdef01234567"


LOCAL_MODEL = str(Path(__file__).resolve().parent / "data" / "local_model")


def base_config() -> dict:
    return {
        "results": "out",
        "sources": {
            "gue": {"url": "https://example.org/GUE.zip", "sha256": "a" * 64, "archive": "zip", "local": None},
            "signalp": {"url": "https://example.org/sp.fasta", "sha256": "b" * 64, "archive": "none",
                        "filename": "train_set.fasta"},
            "demo_dna": {"synthetic": "dna", "seed": 7, "n_train": 10},
        },
        "tasks": {
            "tf_0": {"source": "gue", "path": "tf/0", "kind": "sequence_classification", "partitions": [0, 1],
                     "family": "dna"},
            "sp": {"source": "signalp", "path": "train_set.fasta", "kind": "signal_peptide",
                   "partitions": ["t0v1", "t2v0"], "family": "protein"},
        },
        "tokenizers": {"nucleotide": {"kind": "nucleotide"}, "esm": {"kind": "esm"}},
        "models": {
            "mistral_dna": {"hub": "RaphaelMourad/Mistral-DNA-v1-17M-hg38", "revision": REVISION, "size": "small"},
            "tiny_llama": {"build": {"family": "llama", "hidden_size": 64}, "tokenizer": "nucleotide"},
            "tiny_esm": {"build": {"family": "esm"}, "tokenizer": "esm"},
            "local_model": {"path": LOCAL_MODEL},
        },
        "methods": {
            "full": {},
            "lora": {"r": 8, "lora_alpha": 16, "training": {"learning_rate": 1e-3}},
            "lora_r4": {"method": "lora", "r": 4},
            "loha": {"peft": "LoHaConfig", "r": 8},
        },
        "experiments": [
            {"tasks": ["tf_0"], "models": ["mistral_dna", "tiny_llama"], "methods": ["full", "lora"]},
            {"tasks": ["sp"], "models": ["tiny_esm"], "methods": ["lora_r4", "loha"]},
        ],
        "training": {"epochs": 2, "batch_size": 8, "learning_rate": 5e-4},
        "figures": {"pareto_axes": ["params", "time"]},
    }


def problem(config: dict) -> str:
    with pytest.raises(SeqpeftInputError) as caught:
        check_config(config)
    return str(caught.value)


def test_valid_config_passes():
    check_config(base_config())


@pytest.mark.parametrize("name", ["config.yaml", "demo.yaml"])
def test_shipped_configs_pass(name):
    check_config(yaml.safe_load((ROOT / "config" / name).read_text()))


def test_unknown_model_in_experiment_names_key_path_and_suggests():
    config = base_config()
    config["experiments"][0]["models"] = ["mistral_dn"]
    message = problem(config)
    assert message.startswith("experiments[0].models: unknown model 'mistral_dn'; known: ")
    assert "did you mean 'mistral_dna'" in message


@pytest.mark.parametrize("key, name, what", [("tasks", "tf0", "task"), ("methods", "lroa", "method")])
def test_unknown_task_or_method_in_experiment(key, name, what):
    config = base_config()
    config["experiments"][1][key] = [name]
    assert problem(config).startswith(f"experiments[1].{key}: unknown {what} {name!r}")


def test_signal_peptide_settings_only_on_signal_peptide_tasks():
    config = base_config()
    config["tasks"]["tf_0"]["signal_peptide"] = {"labels": "regions"}
    assert problem(config).startswith("tasks.tf_0.signal_peptide: applies to signal_peptide tasks only")


def test_seed_configs_pass():
    for path in sorted((ROOT / "config" / "seeds").glob("*.yaml")):
        check_config(yaml.safe_load(path.read_text()))


def test_unknown_source_of_task():
    config = base_config()
    config["tasks"]["tf_0"]["source"] = "gu"
    assert problem(config).startswith("tasks.tf_0.source: unknown source 'gu'")


def test_unknown_tokenizer_of_model():
    config = base_config()
    config["models"]["tiny_esm"]["tokenizer"] = "esn"
    assert problem(config).startswith("models.tiny_esm.tokenizer: unknown tokenizer 'esn'")


def test_build_model_needs_a_tokenizer():
    config = base_config()
    del config["models"]["tiny_esm"]["tokenizer"]
    assert problem(config).startswith("models.tiny_esm.tokenizer: ")


def test_unknown_registry_method():
    config = base_config()
    config["methods"]["lora_r4"]["method"] = "lorra"
    assert problem(config).startswith("methods.lora_r4.method: unknown method 'lorra'")
    config = base_config()
    config["methods"]["dora"] = {"r": 4}
    assert problem(config).startswith("methods.dora: unknown method 'dora'")


def test_peft_pass_through_accepts_any_name():
    config = base_config()
    config["methods"]["anything_goes"] = {"peft": "VeraConfig", "r": 4}
    check_config(config)


def test_hub_model_without_revision_is_unpinned_not_invalid():
    from seqpeft.config.pins import unpinned_entries

    config = base_config()
    del config["models"]["mistral_dna"]["revision"]
    check_config(config)  # valid: listed as unpinned, and its jobs refuse to run unless allowed
    assert [(e.kind, e.name) for e in unpinned_entries(config)] == [("model", "mistral_dna")]
    config["models"]["mistral_dna"]["trust_remote_code"] = True
    assert problem(config).startswith("models.mistral_dna.revision: trust_remote_code")


def test_trust_remote_code_needs_full_commit():
    config = base_config()
    config["models"]["mistral_dna"].update(revision="v1.0", trust_remote_code=True)
    message = problem(config)
    assert message.startswith("models.mistral_dna.revision: trust_remote_code")
    assert "40-hex" in message


@pytest.mark.parametrize("fields, given", [({}, "none"), ({"path": "/x"}, "hub, path")])
def test_model_needs_exactly_one_of_hub_path_build(fields, given):
    config = base_config()
    spec = {"revision": REVISION, **fields}
    if given != "none":
        spec["hub"] = "org/model"
    config["models"]["mistral_dna"] = spec
    assert problem(config) == f"models.mistral_dna: needs exactly one of hub, path, build; got {given}."


@pytest.mark.parametrize("fold", ["t1v1", "t3v0", "fold0", 0])
def test_signal_peptide_partitions_must_be_folds(fold):
    config = base_config()
    config["tasks"]["sp"]["partitions"] = ["t0v1", fold]
    assert problem(config).startswith("tasks.sp.partitions[1]: ")


def test_sequence_classification_partitions_are_seeds():
    config = base_config()
    config["tasks"]["tf_0"]["partitions"] = [0, "t0v1"]
    assert problem(config).startswith("tasks.tf_0.partitions[1]: ")


def test_sources_need_a_kind():
    config = base_config()
    config["sources"]["gue"] = {"archive": "zip"}
    assert problem(config).startswith("sources.gue: needs 'url'")
    config = base_config()
    del config["sources"]["gue"]["sha256"]
    check_config(config)  # unpinned (seqpeft.config.pins lists it), not invalid
    config = base_config()
    config = base_config()
    config["sources"]["demo_dna"]["local"] = "/data/demo"
    assert problem(config).startswith("sources.demo_dna: a synthetic source cannot")


def test_names_must_be_path_safe():
    config = base_config()
    config["methods"]["lora/8"] = {"method": "lora"}
    assert problem(config).startswith("methods.lora/8: names are used in file paths")


def test_tokenizer_name_clashing_with_self_tokenized_model():
    config = base_config()
    config["tokenizers"]["mistral_dna"] = {"kind": "nucleotide"}
    assert problem(config).startswith("tokenizers.mistral_dna: ")


def test_expand_runs_cross_product_in_block_order():
    runs = expand_runs(base_config())
    assert runs[:4] == [
        Run("tf_0", "mistral_dna", "full", "0"),
        Run("tf_0", "mistral_dna", "full", "1"),
        Run("tf_0", "mistral_dna", "lora", "0"),
        Run("tf_0", "mistral_dna", "lora", "1"),
    ]
    assert len(runs) == 1 * 2 * 2 * 2 + 1 * 1 * 2 * 2
    assert runs[-1] == Run("sp", "tiny_esm", "loha", "t2v0")
    assert all(isinstance(run.partition, str) for run in runs)


def test_expand_runs_deduplicates_overlapping_blocks():
    config = base_config()
    config["experiments"].append({"tasks": ["tf_0"], "models": ["tiny_llama"], "methods": ["lora", "full"]})
    runs = expand_runs(config)
    assert len(runs) == len(set(runs)) == 12
    assert runs == expand_runs(copy.deepcopy(config))


def test_run_is_frozen():
    run = Run("a", "b", "c", "0")
    with pytest.raises(AttributeError):
        run.task = "x"  # type: ignore[misc]


def test_tokenizer_of():
    config = base_config()
    assert tokenizer_of(config, "tiny_llama") == "nucleotide"
    assert tokenizer_of(config, "mistral_dna") == "mistral_dna"
    assert tokenizer_of(config, "local_model") == "local_model"


def test_model_dir():
    config = base_config()
    assert model_dir(config, "local_model") == LOCAL_MODEL
    assert model_dir(config, "mistral_dna") == "out/models/mistral_dna"
    assert model_dir(config, "tiny_llama") == "out/models/tiny_llama"


def test_source_dir_and_task_data_path(tmp_path):
    config = base_config()
    assert source_dir(config, "gue") == "out/sources/gue"
    assert paths.task_data_path(config, "tf_0") == "out/sources/gue/tf/0"
    config["sources"]["gue"]["local"] = "/staged/GUE"
    assert source_dir(config, "gue") == "/staged/GUE"
    assert paths.task_data_path(config, "tf_0") == "/staged/GUE/tf/0"
    # a pre-staged archive-none source may be the file itself
    fasta = tmp_path / "sp.fasta"
    fasta.write_text(">a|EUKARYA|NO_SP|0\nMK\nII\n")
    config["sources"]["signalp"]["local"] = str(fasta)
    assert paths.task_data_path(config, "sp") == str(fasta)
    config["sources"]["signalp"]["local"] = str(tmp_path)
    assert paths.task_data_path(config, "sp") == str(tmp_path / "train_set.fasta")


def test_tokenizer_dir():
    config = base_config()
    assert paths.tokenizer_dir(config, "nucleotide") == "out/tokenizers/nucleotide"
    assert paths.tokenizer_dir(config, "mistral_dna") == "out/models/mistral_dna"
    assert paths.tokenizer_dir(config, "local_model") == LOCAL_MODEL


def test_method_spec_and_training_overrides():
    config = base_config()
    assert jobs.method_spec(config, "lora") == {"lora_alpha": 16, "method": "lora", "r": 8}
    assert jobs.method_spec(config, "lora_r4") == {"method": "lora", "r": 4}
    assert jobs.method_spec(config, "loha") == {"peft": "LoHaConfig", "r": 8}
    assert jobs.training_for(config, "lora")["learning_rate"] == 1e-3
    assert jobs.training_for(config, "full")["learning_rate"] == 5e-4
    assert jobs.training_for(config, "lora")["epochs"] == 2


def test_params_ignore_key_order_and_size():
    config = base_config()
    reordered = copy.deepcopy(config)
    reordered["methods"]["lora"] = {"training": {"learning_rate": 1e-3}, "lora_alpha": 16, "r": 8}
    reordered["models"]["mistral_dna"]["size"] = "large"
    assert repr(jobs.method_spec(config, "lora")) == repr(jobs.method_spec(reordered, "lora"))
    assert repr(jobs.model_params(config, "mistral_dna")) == repr(jobs.model_params(reordered, "mistral_dna"))


def test_size_resources_defaults_and_overrides():
    config = base_config()
    assert sc.model_size(config, "tiny_llama") == "tiny"
    assert sc.model_size(config, "local_model") == "small"
    assert sc.size_resources(config, "tiny_llama")["gpu"] == 0
    assert sc.size_resources(config, "mistral_dna")["gpu"] == 1
    config["resources"] = {"sizes": {"small": {"mem_mb": 1234, "gpu_model": "a100"}}}
    small = sc.size_resources(config, "mistral_dna")
    assert small["mem_mb"] == 1234 and small["gpu_model"] == "a100" and small["runtime"] == 240


def test_source_and_model_groups():
    config = base_config()
    assert jobs.download_sources(config) == ["gue", "signalp"]
    assert jobs.synthetic_sources(config) == ["demo_dna"]
    config["sources"]["gue"]["local"] = "/staged"
    assert jobs.download_sources(config) == ["signalp"]
    assert jobs.prepared_models(config) == ["mistral_dna", "tiny_llama", "tiny_esm"]


def test_config_error_message_from_schema_errors():
    jsonschema = pytest.importorskip("jsonschema")
    schema = yaml.safe_load((ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())
    validator = jsonschema.Draft202012Validator(schema)

    def message(config):
        error = jsonschema.exceptions.best_match(validator.iter_errors(config))
        try:  # wrapped like snakemake.utils.validate does
            try:
                raise error
            except jsonschema.ValidationError:
                raise RuntimeError("Error validating config file.")
        except RuntimeError as wrapped:
            return config_error_message(wrapped)

    config = base_config()
    assert not list(validator.iter_errors(config))
    config["trainig"] = config.pop("training")
    assert message(config).startswith("trainig: unknown key; allowed here: ")
    assert "did you mean 'training'" in message(config)
    config = base_config()
    config["methods"]["lora"]["training"]["learning_rat"] = 1.0
    assert message(config).startswith("methods.lora.training.learning_rat: unknown key")
    config = base_config()
    config["models"]["mistral_dna"]["revision"] = "main"
    assert message(config).startswith("models.mistral_dna.revision: 'main' does not match")
    assert config_error_message(ValueError("unrelated")) is None


def test_module_is_light():
    """The workflow imports seqpeft.preflight.check at parse time in every job: no torch, no peft."""
    import subprocess

    code = "import sys, seqpeft.preflight.check; print(sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_multi_process_jobs_are_checked():
    config = base_config()
    config["training"]["processes"] = 2
    # mistral_dna is size small: one GPU per job, and processes are for CPU jobs
    assert problem(config).startswith("training.processes: training.processes is 2 but the job has 1 GPU(s)")
    config["experiments"] = [{"tasks": ["tf_0"], "models": ["tiny_llama"], "methods": ["full", "lora"]}]
    check_config(config)
    assert sc.world_size_of(config, "tiny_llama", "lora") == 2
    config["methods"]["lora"]["training"]["batch_size"] = 1
    assert problem(config).startswith("methods.lora.training.batch_size: batch_size 1 is smaller than the job's 2 processes")
    config = base_config()
    config["experiments"] = [{"tasks": ["sp"], "models": ["tiny_esm"], "methods": ["lora_r4"]}]
    config["resources"] = {"sizes": {"tiny": {"gpu": 4}}}
    config["training"]["distributed"] = "fsdp"
    assert sc.world_size_of(config, "tiny_esm", "lora_r4") == 4  # one process per GPU
    assert "signal-peptide CRF" in problem(config)
    config["methods"]["lora_r4"]["training"] = {"distributed": "ddp"}
    check_config(config)
    config["methods"]["lora_r4"]["training"]["processes"] = 2
    assert problem(config).startswith("methods.lora_r4.training.processes: ")


def _with_max_lengths(config: dict) -> dict:
    """The models' max_length, as the schema's default fills it in when the workflow loads a config."""
    for spec in config["models"].values():
        spec.setdefault("max_length", 128)
    return config


def test_experiment_block_max_length_overrides_the_model_s_for_its_runs_only():
    config = _with_max_lengths(base_config())
    config["models"]["mistral_dna"]["max_length"] = 512
    config["methods"]["lora_dsp"] = {"method": "lora", "dsp": {"encoding": "bbpe"}}
    config["experiments"].append({"tasks": ["tf_0"], "models": ["mistral_dna"], "methods": ["lora_r4", "lora_dsp"],
                                  "max_length": 200})
    check_config(config)
    assert jobs.run_model_params(config, "tf_0", "mistral_dna", "lora_r4")["max_length"] == 200
    assert jobs.run_model_params(config, "tf_0", "mistral_dna", "lora")["max_length"] == 512  # first block: the model's
    assert jobs.run_max_length(config, "tf_0", "tiny_llama", "lora") == config["models"]["tiny_llama"]["max_length"]
    # DSP inputs are encoded for one length: the block's length gets a cache (and settings) of its own
    assert jobs.dsp_cache_name(config, "tf_0", "mistral_dna", "lora_dsp") == "mistral_dna.dsp-bbpe.len200.npz"
    assert jobs.finetune_method_params(config, "tf_0", "mistral_dna", "lora_dsp")["dsp"]["max_length"] == 200
    assert jobs.dsp_cache_name(config, "tf_0", "mistral_dna", "lora_r4") is None


def test_a_run_in_two_blocks_gets_one_max_length():
    config = _with_max_lengths(base_config())
    config["experiments"].append({"tasks": ["tf_0"], "models": ["mistral_dna"], "methods": ["lora"], "max_length": 200})
    message = problem(config)
    assert "experiments[2].max_length" in message and "tf_0/mistral_dna/lora" in message and "experiments[0]" in message
    config["experiments"][0]["max_length"] = 200  # both blocks agree
    check_config(config)
