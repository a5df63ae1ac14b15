"""Task alphabets (family: or alphabet:) in tokenization, the config check, `seqpeft evaluate`,
`predict` and `validate`: a protein task tokenizes with ESM's tokenizer, a model of the other
alphabet is refused at `snakemake -n`, and errors name the task's alphabet and how to change it."""

from __future__ import annotations

import copy
import csv
from pathlib import Path

import pytest
import yaml

from helpers import TINY, finetune_job, run, demo_config
from seqpeft.preflight.check import check_config
from seqpeft.data.readers import DNA_ALPHABET, PROTEIN_ALPHABET
from seqpeft.util.errors import SeqpeftInputError
from seqpeft.tasks import task_kind, tokenize_task
from seqpeft.data.tokenize import load_cache

ROOT = Path(__file__).resolve().parents[1]
DEMO = demo_config()
PROTEINS = ["MKKLLPTAAAGLLLLAAQPAMA", "MSTNPKPQRKTKRNTNRRPQDVKFPGG", "MKVLAAGIVALLLAGCSS", "MDDISGRQTLPRINRLLEHV"]


def test_the_alphabet_follows_alphabet_then_family_then_the_kind():
    classification = task_kind("sequence_classification")
    assert classification.alphabet_of({}) == DNA_ALPHABET
    assert classification.alphabet_of({"family": "protein"}) == PROTEIN_ALPHABET
    assert classification.alphabet_of({"family": "protein", "alphabet": "ACGTNRY"}) == "ACGTNRY"
    assert task_kind("signal_peptide").alphabet_of({}) == PROTEIN_ALPHABET
    assert set("ACDEFGHIKLMNPQRSTVWY" + "XBZUO") == set(PROTEIN_ALPHABET)


def _protein_task(root: Path, rows: list[str] | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name in ("train", "dev", "test"):
        (root / f"{name}.csv").write_text("sequence,label\n" + "\n".join(
            rows or [f"{sequence},{index % 2}" for index, sequence in enumerate(PROTEINS * 4)]) + "\n")
    return root


def test_a_protein_classification_task_tokenizes_with_esm_and_refuses_dna_alphabet(tmp_path, tiny_model_dir):
    data = _protein_task(tmp_path / "data")
    esm = tiny_model_dir("esm")
    tokenize_task({"kind": "sequence_classification", "family": "protein"}, data, esm, tmp_path / "cache.npz")
    cache = load_cache(tmp_path / "cache.npz")
    assert cache.meta["alphabet"] == PROTEIN_ALPHABET and len(cache.splits["train"]) == 16
    assert 3 not in cache.splits["train"].ids  # no <unk>: every residue has its own ESM token
    with pytest.raises(SeqpeftInputError) as error:
        tokenize_task({"kind": "sequence_classification", "family": "dna"}, data, esm, tmp_path / "dna.npz")
    message = str(error.value)
    assert "train.csv, line 2" in message and "the dna alphabet ACGTN" in message
    assert "family: dna | protein, or alphabet:" in message and not (tmp_path / "dna.npz").exists()


def test_every_letter_of_the_protein_alphabet_is_its_own_token_in_the_real_esm2_vocabulary(tmp_path, tiny_model_dir):
    """ESM-2's own tokenizer files (facebook/esm2_t33_650M_UR50D, ../shared/models/layouts): the slow
    EsmTokenizer over vocab.txt, no tokenizer.json. Each of the protein alphabet's 25 letters gets a
    token of its own, none <unk>, and a task using all of them tokenizes."""
    import shutil

    from helpers import shared_path
    from seqpeft.data.tokenize import load_tokenizer

    model = tmp_path / "esm2"
    shutil.copytree(tiny_model_dir("esm"), model)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (model / name).unlink(missing_ok=True)
    layout = shared_path("models/layouts/facebook--esm2_t33_650M_UR50D")
    for name in ("vocab.txt", "special_tokens_map.json", "tokenizer_config.json"):
        shutil.copy(layout / name, model / name)
    tokenizer = load_tokenizer(model)
    assert type(tokenizer).__name__ == "EsmTokenizer" and len(tokenizer) == 33
    ids = tokenizer(PROTEIN_ALPHABET, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(PROTEIN_ALPHABET) == len(set(ids)) and tokenizer.unk_token_id not in ids
    data = _protein_task(tmp_path / "data", [f"{PROTEIN_ALPHABET}{sequence},{index % 2}"
                                             for index, sequence in enumerate(PROTEINS * 2)])
    tokenize_task({"kind": "sequence_classification", "family": "protein"}, data, model, tmp_path / "cache.npz")
    train = load_cache(tmp_path / "cache.npz").splits["train"]
    assert len(train) == 8 and tokenizer.unk_token_id not in set(int(i) for i in train.ids)


def test_evaluate_and_predict_read_sequences_in_the_runs_alphabet(tmp_path, tiny_model_dir):
    from seqpeft.training.evaluate import evaluate_file, load_predictor, predict_file
    from seqpeft.training.launch import run_finetune
    from seqpeft.models.prepare import prepare_model

    data = _protein_task(tmp_path / "data")
    spec = {"build": {"family": "esm", **TINY}, "tokenizer": "esm", "max_length": 64}
    prepare_model("esm", spec, tmp_path / "model", tiny_model_dir("esm").parent / "tokenizer_esm")
    tokenize_task({"kind": "sequence_classification", "family": "protein"}, data, tmp_path / "model",
                  tmp_path / "cache.npz")
    job = finetune_job(tmp_path / "cache.npz", tmp_path / "model", tmp_path / "run", method="lora",
                       method_spec={"r": 4}, model_spec=spec, task_spec={"kind": "sequence_classification",
                                                                         "family": "protein"},
                       training={"epochs": 1, "batch_size": 8, "device": "cpu"})
    metrics = run_finetune(job)
    predictor = load_predictor(tmp_path / "run" / "artifacts")
    assert predictor.alphabet == PROTEIN_ALPHABET
    assert evaluate_file(predictor, data / "test.csv")["mcc"] == pytest.approx(metrics["test"]["mcc"], abs=1e-5)
    fasta = tmp_path / "proteins.fasta"
    fasta.write_text("".join(f">p{index}\n{sequence}\n" for index, sequence in enumerate(PROTEINS)))
    assert predict_file(predictor, fasta, tmp_path / "pred.csv") == 4
    with open(tmp_path / "pred.csv") as handle:
        assert [row["id"] for row in csv.DictReader(handle)] == ["p0", "p1", "p2", "p3"]
    fasta.write_text(">bad\nMKK*LL\n")
    with pytest.raises(SeqpeftInputError, match=r"proteins.fasta, line 2.*the protein alphabet .*'\*'"):
        predict_file(predictor, fasta, tmp_path / "bad.csv")


def _config(task_model_pairs) -> dict:
    config = copy.deepcopy(DEMO)
    config["experiments"] = [{"tasks": [task], "models": [model], "methods": ["lora"]} for task, model in task_model_pairs]
    return config


@pytest.mark.parametrize("task, model, reads", [("demo_sp_type", "tiny_llama_dna", "dna"),
                                                ("demo_gc", "tiny_esm", "protein"),
                                                ("demo_sp_length", "tiny_bert_dna", "dna")])
def test_check_config_refuses_a_model_of_the_other_alphabet(task, model, reads):
    with pytest.raises(SeqpeftInputError) as error:
        check_config(_config([(task, model)]))
    message = str(error.value)
    assert f"experiments[0]: task {task!r}" in message and f"model {model!r} reads {reads} only" in message
    assert f"tasks.{task}.family" in message and f"models.{model}.alphabet" in message


def test_check_config_takes_explicit_alphabets_and_text_models():
    config = _config([("demo_gc", "tiny_llama_bytes"), ("demo_sp_type", "tiny_llama_bytes")])
    check_config(config)  # byte-level models read any text
    config = _config([("demo_gc", "tiny_llama_dna")])
    config["tasks"]["demo_gc"]["alphabet"] = "ACGT"  # within the model's letters
    check_config(config)
    config["tasks"]["demo_gc"]["alphabet"] = "ACGTU"
    with pytest.raises(SeqpeftInputError, match="letters ACGTU"):
        check_config(config)
    config = _config([("demo_gc", "tiny_esm")])
    config["models"]["tiny_esm"]["alphabet"] = "any"  # a model entry may say what it reads
    check_config(config)


def test_a_dna_model_on_a_protein_task_is_refused_at_the_dry_run(tmp_path):
    config = _config([("demo_sp_type", "tiny_llama_dna")])
    config["results"] = str(tmp_path / "results")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    code, out = run("-n", "--configfile", path)
    assert code != 0 and "model 'tiny_llama_dna' reads dna only" in out and "Traceback" not in out


def test_validate_takes_an_alphabet_by_name_or_letters(tmp_path):
    from seqpeft.cli import main

    path = _protein_task(tmp_path / "data") / "train.csv"
    assert main(["validate", "--alphabet", "protein", str(path)]) == 0
    assert main(["validate", str(path)]) == 2  # DNA unless told
    path.write_text("sequence,label\nACGTRY,0\n")
    assert main(["validate", "--alphabet", "ACGTRY", str(path)]) == 0
