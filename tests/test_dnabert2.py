"""DNABERT-2 without remote code: published weight names, published-layout loading, ALiBi, LoRA.

The published checkpoint (zhihan1996/DNABERT-2-117M) cannot be downloaded here, so a tiny model
of the same architecture is written in the published layout: ``bert.``-prefixed keys of the
remote ``BertForMaskedLM`` / ``BertForSequenceClassification``, a config.json without
``model_type`` whose ``auto_map`` names the remote classes, and remote-code files that raise if
anything imports them.
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

import pytest
import torch

from helpers import finetune_job, motif_task as build_motif_task
from seqpeft.models.dnabert2 import MODEL_TYPE, Dnabert2Model, alibi_bias, alibi_slopes
from seqpeft.util.errors import SeqpeftInputError
from seqpeft.models.classifier import make_classifier
from seqpeft.models.families import FAMILIES, load_backbone
from seqpeft.training.assemble import build_model
from seqpeft.training.launch import run_finetune

HIDDEN, INTERMEDIATE, LAYERS, HEADS = 32, 64, 2, 4  # conftest.TINY
REMOTE_AUTO_MAP = {
    "AutoConfig": "configuration_bert.BertConfig",
    "AutoModel": "bert_layers.BertModel",
    "AutoModelForMaskedLM": "bert_layers.BertForMaskedLM",
    "AutoModelForSequenceClassification": "bert_layers.BertForSequenceClassification",
}


def _published_parameter_names(layers: int, pooler: bool) -> dict[str, tuple[int, ...]]:
    """Parameter names and shapes of the remote ``bert_layers.BertModel`` for the tiny config."""
    vocab = 10  # the project's nucleotide tokenizer
    names = {
        "embeddings.word_embeddings.weight": (vocab, HIDDEN),
        "embeddings.token_type_embeddings.weight": (2, HIDDEN),
        "embeddings.LayerNorm.weight": (HIDDEN,),
        "embeddings.LayerNorm.bias": (HIDDEN,),
    }
    for i in range(layers):
        prefix = f"encoder.layer.{i}."
        names.update({
            prefix + "attention.self.Wqkv.weight": (3 * HIDDEN, HIDDEN),
            prefix + "attention.self.Wqkv.bias": (3 * HIDDEN,),
            prefix + "attention.output.dense.weight": (HIDDEN, HIDDEN),
            prefix + "attention.output.dense.bias": (HIDDEN,),
            prefix + "attention.output.LayerNorm.weight": (HIDDEN,),
            prefix + "attention.output.LayerNorm.bias": (HIDDEN,),
            prefix + "mlp.gated_layers.weight": (2 * INTERMEDIATE, HIDDEN),  # no bias
            prefix + "mlp.wo.weight": (HIDDEN, INTERMEDIATE),
            prefix + "mlp.wo.bias": (HIDDEN,),
            prefix + "mlp.layernorm.weight": (HIDDEN,),
            prefix + "mlp.layernorm.bias": (HIDDEN,),
        })
    if pooler:
        names.update({"pooler.dense.weight": (HIDDEN, HIDDEN), "pooler.dense.bias": (HIDDEN,)})
    return names


def _published_config(vocab_size: int, with_model_type: bool, **extra) -> dict:
    """A config.json as the published repository writes it (its keys; tiny sizes)."""
    config = {
        "_name_or_path": "zhihan1996/DNABERT-2-117M", "alibi_starting_size": 512, "architectures": ["BertForMaskedLM"],
        "attention_probs_dropout_prob": 0.0, "auto_map": REMOTE_AUTO_MAP, "classifier_dropout": None,
        "gradient_checkpointing": False, "hidden_act": "gelu", "hidden_dropout_prob": 0.1, "hidden_size": HIDDEN,
        "initializer_range": 0.02, "intermediate_size": INTERMEDIATE, "layer_norm_eps": 1e-12,
        "max_position_embeddings": 512, "num_attention_heads": HEADS, "num_hidden_layers": LAYERS,
        "position_embedding_type": "absolute", "torch_dtype": "float32", "transformers_version": "4.29.0",
        "type_vocab_size": 2, "use_cache": True, "vocab_size": vocab_size, **extra,
    }
    if with_model_type:
        config["model_type"] = "bert"
    return config


def _write_published(directory: Path, source_dir: Path, state: dict, config: dict, pickle: bool) -> Path:
    """A published-layout checkpoint directory with the source model's tokenizer."""
    from safetensors.torch import save_file
    from transformers import AutoTokenizer

    directory.mkdir(parents=True)
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    for module in ("bert_layers.py", "configuration_bert.py"):
        (directory / module).write_text("raise RuntimeError('remote code was executed')\n")
    if pickle:
        torch.save(state, directory / "pytorch_model.bin")
    else:
        save_file({k: v.contiguous() for k, v in state.items()}, str(directory / "model.safetensors"))
    AutoTokenizer.from_pretrained(str(source_dir)).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    model_dir = tiny_model_dir("dnabert2")
    model = Dnabert2Model.from_pretrained(str(model_dir), add_pooling_layer=False).eval()
    return model_dir, model


@pytest.fixture(scope="module")
def motif_task(tiny, tmp_path_factory):
    """A planted-motif task tokenized with the tiny model's (nucleotide) tokenizer."""
    root = tmp_path_factory.mktemp("motif_task")
    build_motif_task(root, tiny[0], n_dev=100, n_test=100)
    return root


def _batch(model_dir: Path, sequences: list[str]):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    return tokenizer(sequences, padding=True, return_tensors="pt")


def test_config_built_model_has_the_published_parameter_names(tiny):
    model_dir, model = tiny
    assert json.loads((model_dir / "config.json").read_text())["model_type"] == MODEL_TYPE == FAMILIES["dnabert2"].model_type
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    assert shapes == _published_parameter_names(LAYERS, pooler=False)
    with_pooler = Dnabert2Model(model.config, add_pooling_layer=True)
    assert {n: tuple(p.shape) for n, p in with_pooler.named_parameters()} == _published_parameter_names(LAYERS, pooler=True)
    # Every LoRA target of the family is a module of the architecture.
    leaves = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    assert set(FAMILIES["dnabert2"].lora_targets) <= leaves


@pytest.mark.parametrize("with_model_type", [False, True], ids=["published-config", "model_type-bert"])
def test_published_masked_lm_checkpoint_loads_offline_without_remote_code(tiny, tmp_path, with_model_type):
    model_dir, model = tiny
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    state = {f"bert.{k}": v.clone() for k, v in model.state_dict().items()}
    # BertForMaskedLM's prediction head (decoder tied to the word embeddings): not part of the backbone.
    state.update({
        "cls.predictions.transform.dense.weight": torch.randn(HIDDEN, HIDDEN),
        "cls.predictions.transform.dense.bias": torch.zeros(HIDDEN),
        "cls.predictions.transform.LayerNorm.weight": torch.ones(HIDDEN),
        "cls.predictions.transform.LayerNorm.bias": torch.zeros(HIDDEN),
        "cls.predictions.decoder.weight": state["bert.embeddings.word_embeddings.weight"],
        "cls.predictions.decoder.bias": torch.zeros(model.config.vocab_size),
    })
    config = _published_config(model.config.vocab_size, with_model_type, pad_token_id=model.config.pad_token_id)
    published = _write_published(tmp_path / "published", model_dir, state, config, pickle=True)

    # Offline, and trust_remote_code in the entry changes nothing: the remote files raise if imported.
    spec = {"allow_pickle": True, "family": "dnabert2", **({"trust_remote_code": True} if with_model_type else {})}
    loaded = load_backbone(published, spec)
    assert loaded.family.name == "dnabert2"
    assert type(loaded.backbone) is Dnabert2Model
    assert "auto_map" not in loaded.backbone.config.to_dict()
    batch = _batch(model_dir, ["ACGTACGGTA", "ACG", "TTGACA"])
    with torch.no_grad():
        expected = model(**batch).last_hidden_state
        actual = loaded.backbone.eval()(**batch).last_hidden_state
    torch.testing.assert_close(actual, expected, atol=0, rtol=0)


def test_published_bin_checkpoint_is_converted_to_safetensors_without_allow_pickle(tiny, tmp_path):
    """DNABERT-2's pinned commit ships only pytorch_model.bin (with the MLM decoder tied to the word
    embeddings): prepare_model's conversion (seqpeft.models.hub) makes it load without allow_pickle."""
    from seqpeft.models.hub import convert_pickled_weights, verify_weights

    model_dir, model = tiny
    state = {f"bert.{k}": v.clone() for k, v in model.state_dict().items()}
    state["cls.predictions.decoder.weight"] = state["bert.embeddings.word_embeddings.weight"]  # shared storage
    published = _write_published(tmp_path / "published", model_dir, state,
                                 _published_config(model.config.vocab_size, False), pickle=True)
    assert [p.name for p in convert_pickled_weights(published)] == ["model.safetensors"]
    assert not (published / "pytorch_model.bin").exists()
    verify_weights(published, {"family": "dnabert2"})
    loaded = load_backbone(published, {"family": "dnabert2"})
    batch = _batch(model_dir, ["ACGTACGGTA", "ACG"])
    with torch.no_grad():
        torch.testing.assert_close(loaded.backbone.eval()(**batch).last_hidden_state, model(**batch).last_hidden_state,
                                   atol=0, rtol=0)


def test_published_renamed_weight_is_an_error_not_a_random_init(tiny, tmp_path):
    model_dir, model = tiny
    state = {f"bert.{k}": v for k, v in model.state_dict().items()}
    state["bert.encoder.layer.0.mlp.gate.weight"] = state.pop("bert.encoder.layer.0.mlp.gated_layers.weight")
    published = _write_published(tmp_path / "renamed", model_dir, state, _published_config(model.config.vocab_size, False), pickle=False)
    with pytest.raises(SeqpeftInputError, match="gated_layers.weight.*missing"):
        load_backbone(published)


@pytest.fixture(scope="module")
def published_classifier(tiny, tmp_path_factory):
    """A BertForSequenceClassification checkpoint in the published layout (pooler + classifier)."""
    model_dir, model = tiny
    generator = torch.Generator().manual_seed(5)
    state = {f"bert.{k}": v for k, v in model.state_dict().items()}
    head = {
        "bert.pooler.dense.weight": 0.2 * torch.randn(HIDDEN, HIDDEN, generator=generator),
        "bert.pooler.dense.bias": 0.1 * torch.randn(HIDDEN, generator=generator),
        "classifier.weight": torch.randn(2, HIDDEN, generator=generator),
        "classifier.bias": torch.randn(2, generator=generator),
    }
    config = _published_config(model.config.vocab_size, False, architectures=["BertForSequenceClassification"],
                               id2label={"0": "LABEL_0", "1": "LABEL_1"}, label2id={"LABEL_0": 0, "LABEL_1": 1})
    root = tmp_path_factory.mktemp("published_classifier")
    return _write_published(root / "model", model_dir, {**state, **head}, config, pickle=False), head


def test_published_classifier_head_evaluates_as_trained(tiny, published_classifier):
    from seqpeft.training.evaluate import load_predictor

    model_dir, model = tiny
    published, head = published_classifier
    batch = _batch(model_dir, ["ACGTACGGTA", "ACG", "TTGACAGG"])
    with torch.no_grad():
        first_token = model(**batch).last_hidden_state[:, 0]
        pooled = torch.tanh(first_token @ head["bert.pooler.dense.weight"].T + head["bert.pooler.dense.bias"])
        expected = pooled @ head["classifier.weight"].T + head["classifier.bias"]
    classifier = make_classifier(load_backbone(published, num_labels=2), 2).eval()
    predictor = load_predictor(published)
    with torch.no_grad():
        torch.testing.assert_close(classifier(batch["input_ids"], batch["attention_mask"]), expected)
        torch.testing.assert_close(predictor.model(batch["input_ids"], batch["attention_mask"]), expected)
    # A head of another width is not reused.
    assert load_backbone(published, num_labels=3).pretrained_head == {}


def test_run_reusing_the_published_head_saves_and_reloads_its_pooler(published_classifier, motif_task, tmp_path):
    from seqpeft.training.evaluate import load_predictor, predict_file

    published, head = published_classifier
    job = finetune_job(motif_task / "cache.npz", published, tmp_path / "run", model="dnabert2", method="frozen",
                       model_spec={"max_length": 64, "reuse_pretrained_head": True},
                       training={"epochs": 1, "batch_size": 32, "learning_rate": 1e-3})
    metrics = run_finetune(job)
    assert metrics["trainable_params"] == (HIDDEN * HIDDEN + HIDDEN) + (HIDDEN * 2 + 2)  # pooler + classifier
    artifacts = tmp_path / "run" / "artifacts"
    assert (artifacts / "pooler.safetensors").is_file()
    predict_file(load_predictor(artifacts), motif_task / "data" / "test.csv", tmp_path / "pred.csv")
    with open(tmp_path / "pred.csv") as predictions, open(motif_task / "data" / "test.csv") as labels:
        hits = [int(p["prediction"]) == int(t["label"]) for p, t in zip(csv.DictReader(predictions), csv.DictReader(labels))]
    assert sum(hits) / len(hits) == pytest.approx(metrics["test"]["accuracy"], abs=1e-9)


def test_alibi_slopes_and_bias_match_the_alibi_rule():
    # 2^k heads: 2^(-8/n), 2^(-16/n), ...; 6 heads: the 4-head slopes, then every other 8-head slope.
    assert alibi_slopes(4) == [2**-2, 2**-4, 2**-6, 2**-8]
    assert alibi_slopes(8) == [2.0**-i for i in range(1, 9)]
    assert alibi_slopes(6) == [2**-2, 2**-4, 2**-6, 2**-8, 2**-1, 2**-3]
    assert alibi_slopes(12)[8:] == pytest.approx([2**-0.5, 2**-1.5, 2**-2.5, 2**-3.5])
    # Two queries after a 2-position prefix: distances to keys 0..3 are (2, 1, 0, 1) and (3, 2, 1, 0).
    bias = alibi_bias(2, query_length=2, key_length=4)
    expected = torch.tensor([[2.0, 1, 0, 1], [3, 2, 1, 0]])
    torch.testing.assert_close(bias, torch.stack([-expected / 2**4, -expected / 2**8]))


def test_attention_equals_a_hand_computed_alibi_attention(tiny):
    model_dir, model = tiny
    layer = model.encoder.layer[0].attention.self
    torch.manual_seed(0)
    hidden = torch.randn(1, 5, HIDDEN)
    mask = torch.tensor([[1, 1, 1, 1, 0]])
    bias = alibi_bias(HEADS, 5, 5)[None].masked_fill((mask == 0)[:, None, None, :], torch.finfo(torch.float32).min)
    with torch.no_grad():
        actual = layer(hidden, bias)[0, :4]
        head_size = HIDDEN // HEADS
        qkv = hidden[0] @ layer.Wqkv.weight.T + layer.Wqkv.bias
        expected = torch.zeros(4, HIDDEN)
        for h, slope in enumerate([2**-2, 2**-4, 2**-6, 2**-8]):
            q, k, v = (qkv[:, part * HIDDEN + h * head_size: part * HIDDEN + (h + 1) * head_size] for part in range(3))
            for i in range(4):  # real queries attend to the 4 real keys only
                scores = torch.tensor([float(q[i] @ k[j]) / math.sqrt(head_size) - slope * abs(i - j) for j in range(4)])
                expected[i, h * head_size:(h + 1) * head_size] = torch.softmax(scores, 0) @ v[:4]
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)


def test_embeddings_and_gated_feed_forward_follow_the_published_maths(tiny):
    _, model = tiny
    torch.manual_seed(1)
    hidden = torch.randn(2, 3, HIDDEN)
    mlp = model.encoder.layer[1].mlp
    with torch.no_grad():
        projected = hidden @ mlp.gated_layers.weight.T
        # first half of gated_layers through exact GELU, times the second half; wo; post-LayerNorm residual
        glu = torch.nn.functional.gelu(projected[..., :INTERMEDIATE]) * projected[..., INTERMEDIATE:]
        expected = torch.nn.functional.layer_norm(glu @ mlp.wo.weight.T + mlp.wo.bias + hidden, (HIDDEN,),
                                                  mlp.layernorm.weight, mlp.layernorm.bias, eps=1e-12)
        torch.testing.assert_close(mlp(hidden), expected)
        ids = torch.tensor([[1, 5, 7, 2]])
        embeddings = model.embeddings
        # word + token type 0, no position embeddings, LayerNorm
        summed = embeddings.word_embeddings.weight[ids] + embeddings.token_type_embeddings.weight[0]
        expected = torch.nn.functional.layer_norm(summed, (HIDDEN,), embeddings.LayerNorm.weight,
                                                  embeddings.LayerNorm.bias, eps=1e-12)
        torch.testing.assert_close(embeddings(ids), expected)


def test_hidden_states_do_not_depend_on_padding(tiny):
    model_dir, model = tiny
    sequences = ["ACGTACGGTAACGT", "ACG", "TTGACAGG"]
    batch = _batch(model_dir, sequences)
    with torch.no_grad():
        batched = model(**batch).last_hidden_state
        for row, sequence in enumerate(sequences):
            alone = model(**_batch(model_dir, [sequence])).last_hidden_state[0]
            length = alone.shape[0]
            torch.testing.assert_close(batched[row, :length], alone, atol=1e-5, rtol=0)
            assert torch.all(batched[row, length:] == 0)  # padded positions come back as zeros


def test_prefix_tuning_reaches_the_keys_and_values_of_every_layer(tiny):
    model_dir, _ = tiny
    classifier, _, _, _ = build_model(model_dir, {}, "prefix_tuning", {"num_virtual_tokens": 3}, 2, False, total_steps=10)
    classifier.eval()
    batch = _batch(model_dir, ["ACGTACGG", "ACG"])
    classifier(batch["input_ids"], batch["attention_mask"]).sum().backward()
    (prefix,) = [p for n, p in classifier.named_parameters() if p.requires_grad and "prompt_encoder" in n]
    # peft's prefix embedding: (virtual tokens, layers x {key, value} x hidden)
    per_block = prefix.grad.reshape(3, LAYERS * 2, HIDDEN).abs().sum(dim=(0, 2))
    assert torch.all(per_block > 0), per_block


def test_lora_on_the_family_targets_trains_the_planted_motif(tiny, motif_task, tmp_path):
    model_dir, _ = tiny
    r = 4
    job = finetune_job(motif_task / "cache.npz", model_dir, tmp_path / "run", model="tiny_dnabert2", method="lora",
                       method_spec={"r": r}, training={"epochs": 4, "batch_size": 32, "learning_rate": 4e-3, "patience": 4})
    metrics = run_finetune(job)
    # LoRA r x (in + out) on Wqkv (32->96), attention dense (32->32), gated_layers (32->128), wo (64->32),
    # in each layer; plus the head (32 x 2 + 2).
    per_layer = r * ((32 + 96) + (32 + 32) + (32 + 128) + (64 + 32))
    assert metrics["trainable_params"] == LAYERS * per_layer + HIDDEN * 2 + 2
    with open(tmp_path / "run" / "history.csv") as handle:
        dev_loss = [float(row["dev_loss"]) for row in csv.DictReader(handle) if row["dev_loss"]]
    assert len(dev_loss) >= 2 and min(dev_loss[1:]) < dev_loss[0] - 0.05, dev_loss


def test_wrong_target_module_lists_the_dnabert2_module_names(tiny):
    model_dir, _ = tiny
    with pytest.raises(SeqpeftInputError, match=r"\['query'\] do not exist") as error:
        build_model(model_dir, {}, "lora", {"target_modules": ["query", "Wqkv"]}, 2, False, total_steps=10, model_name="dnabert2")
    for name in ("Wqkv", "dense", "gated_layers", "wo"):
        assert repr(name) in str(error.value)
