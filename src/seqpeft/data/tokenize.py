"""Tokenizers the project builds, and the tokenized-task cache every fine-tuning job reads.

Tokenization runs once per (task, tokenizer): the cache holds token ids as one flat int32 array
per split plus offsets, which loads in milliseconds, and the tokenizer's fingerprint, so a job
given a cache made by another tokenizer refuses to train instead of silently learning noise.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from seqpeft.util.atomic import atomic_directory, atomic_file
from seqpeft.util.errors import SeqpeftInputError

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
ESM_VOCAB = [
    "<cls>", "<pad>", "<eos>", "<unk>", "L", "A", "G", "V", "S", "E", "R", "T", "I", "D", "P", "K", "Q",
    "N", "F", "Y", "M", "H", "W", "C", "X", "B", "U", "Z", "O", ".", "-", "<null_1>", "<mask>",
]
CACHE_FORMAT = 1


def _char_level_tokenizer(vocab: list[str], specials: dict[str, str], split_pattern: str):
    """A fast tokenizer that cuts the sequence by a regex and maps each piece through ``vocab``."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    ids = {token: index for index, token in enumerate(vocab)}
    tokenizer = Tokenizer(models.WordLevel(ids, unk_token=specials["unk"]))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(split_pattern), behavior="isolated")
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{specials['cls']} $A {specials['sep']}",
        special_tokens=[(specials["cls"], ids[specials["cls"]]), (specials["sep"], ids[specials["sep"]])],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token=specials["pad"], unk_token=specials["unk"], cls_token=specials["cls"],
        sep_token=specials["sep"], mask_token=specials["mask"], padding_side="right",
    )


_DNA_SPECIALS = {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"}


def _nucleotide(spec: dict):
    return _char_level_tokenizer(SPECIAL_TOKENS + list("ACGTN"), _DNA_SPECIALS, ".")


def _kmer(spec: dict):
    import itertools

    k = int(spec.get("k", 3))
    if not 1 <= k <= 6:
        raise SeqpeftInputError(None, f"k-mer tokenizer k={k} is out of range.", fix="use 1 <= k <= 6.")
    kmers = ["".join(p) for size in range(1, k + 1) for p in itertools.product("ACGTN", repeat=size)]
    # Non-overlapping k-mers; the tail shorter than k gets its own shorter token.
    return _char_level_tokenizer(SPECIAL_TOKENS + kmers, _DNA_SPECIALS, f".{{1,{k}}}")


def _esm(spec: dict):
    specials = {"pad": "<pad>", "unk": "<unk>", "cls": "<cls>", "sep": "<eos>", "mask": "<mask>"}
    return _char_level_tokenizer(ESM_VOCAB, specials, ".")


def byte_symbols() -> list[str]:
    """The 256 printable stand-ins byte-level BPE uses for bytes (GPT-2's table), by byte value."""
    printable = {*range(ord("!"), ord("~") + 1), *range(ord("\u00a1"), ord("\u00ac") + 1), *range(ord("\u00ae"), ord("\u00ff") + 1)}
    symbols, shifted = [], 0
    for byte in range(256):
        if byte in printable:
            symbols.append(chr(byte))
        else:
            symbols.append(chr(256 + shifted))
            shifted += 1
    return symbols


def _bytes(spec: dict):
    """Byte-level BPE: any text is spelled exactly (no unknown tokens), like GPT-2 / Llama 3.

    ``dna_merges: true`` adds merges of nucleotide pairs and of pairs of those, so a run of
    A/C/G/T becomes 4-mer tokens (the compression a DNA BPE model learns) while template text
    stays one token per byte.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    symbols = byte_symbols()
    vocab = {token: index for index, token in enumerate(SPECIAL_TOKENS + symbols)}
    merges: list[tuple[str, str]] = []
    if spec.get("dna_merges", False):
        pairs = [a + b for a in "ACGT" for b in "ACGT"]
        merges = [(pair[0], pair[1]) for pair in pairs] + [(left, right) for left in pairs for right in pairs]
        for left, right in merges:
            vocab.setdefault(left + right, len(vocab))
    tokenizer = Tokenizer(models.BPE(vocab, merges, unk_token=_DNA_SPECIALS["unk"]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    cls, sep = _DNA_SPECIALS["cls"], _DNA_SPECIALS["sep"]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{cls} $A {sep}", special_tokens=[(cls, vocab[cls]), (sep, vocab[sep])])
    specials = {f"{key}_token": value for key, value in _DNA_SPECIALS.items()}
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, padding_side="right", **specials)


TOKENIZER_BUILDERS: dict[str, Callable[[dict], object]] = {
    "nucleotide": _nucleotide,
    "kmer": _kmer,
    "esm": _esm,
    "bytes": _bytes,
}


def build_tokenizer(spec: dict, out_dir: Path) -> None:
    """Build a project tokenizer (``spec['kind']``) and save it atomically to ``out_dir``."""
    kind = spec.get("kind")
    if kind not in TOKENIZER_BUILDERS:
        raise SeqpeftInputError(None, f"unknown tokenizer kind {kind!r}.", fix=f"use one of {sorted(TOKENIZER_BUILDERS)}.")
    tokenizer = TOKENIZER_BUILDERS[kind](spec)
    with atomic_directory(out_dir) as tmp:
        tokenizer.save_pretrained(tmp)


def tokenizer_fingerprint(tokenizer) -> str:
    """A hash of everything that decides token ids, so caches are keyed by identity, not by name."""
    if getattr(tokenizer, "is_fast", False):
        payload = tokenizer.backend_tokenizer.to_str()
    else:
        payload = json.dumps(sorted(tokenizer.get_vocab().items()))
    return hashlib.sha256(payload.encode()).hexdigest()


def _encode(tokenizer, sequences: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Batch-encode with the fast tokenizer; returns flat ids and offsets (len n + 1)."""
    encoded = tokenizer(sequences, add_special_tokens=True, truncation=False,
                        return_attention_mask=False, return_token_type_ids=False)["input_ids"]
    lengths = np.fromiter((len(ids) for ids in encoded), dtype=np.int64, count=len(encoded))
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    flat = np.fromiter((token for ids in encoded for token in ids), dtype=np.int32, count=int(offsets[-1]))
    return flat, offsets


@dataclass
class TokenizedSplit:
    """Token ids of one split, plus per-sequence labels (or per-residue labels) and record fields."""

    ids: np.ndarray
    offsets: np.ndarray
    labels: np.ndarray
    label_offsets: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def sequence(self, index: int) -> np.ndarray:
        return self.ids[self.offsets[index]:self.offsets[index + 1]]

    def residue_labels(self, index: int) -> np.ndarray:
        return self.labels[self.label_offsets[index]:self.label_offsets[index + 1]]

    def subset(self, indices: np.ndarray) -> "TokenizedSplit":
        indices = np.asarray(indices, dtype=np.int64)
        ids, offsets = _gather(self.ids, self.offsets, indices)
        if self.label_offsets is None:
            return TokenizedSplit(ids, offsets, self.labels[indices])
        labels, label_offsets = _gather(self.labels, self.label_offsets, indices)
        return TokenizedSplit(ids, offsets, labels, label_offsets)


def _gather(flat: np.ndarray, offsets: np.ndarray, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lengths = offsets[indices + 1] - offsets[indices]
    new_offsets = np.zeros(len(indices) + 1, dtype=np.int64)
    np.cumsum(lengths, out=new_offsets[1:])
    pieces = [flat[offsets[i]:offsets[i + 1]] for i in indices]
    gathered = np.concatenate(pieces) if pieces else flat[:0]
    return gathered, new_offsets


@dataclass
class TokenizedTask:
    kind: str
    fingerprint: str
    splits: dict[str, TokenizedSplit]
    meta: dict


def tokenize_csv_splits(tokenizer, splits: dict, arrays: dict,
                        encode: Callable[[list[str], Path], tuple[np.ndarray, np.ndarray]] | None = None) -> dict:
    """Token ids and labels of read CSV splits (``seqpeft.data.readers.LabeledSequences`` by name) into
    ``arrays``; labels keep their shape (one per sequence, or a row of flags per sequence)."""
    encode = encode or (lambda sequences, path: _encode(tokenizer, sequences))
    for name, records in splits.items():
        ids, offsets = encode(records.sequences, records.path)
        arrays[f"{name}_ids"], arrays[f"{name}_offsets"] = ids, offsets
        real = records.labels.dtype.kind == "f"  # regression targets
        arrays[f"{name}_labels"] = records.labels.astype(np.float32 if real else np.int64)
    labels = [records.labels for records in splits.values()]
    num_labels = labels[0].shape[1] if labels[0].ndim == 2 else int(max(int(values.max()) for values in labels)) + 1
    return {"num_labels": int(num_labels), "splits": list(splits)}


def cache_meta(kind: str, tokenizer, tokenizer_dir: Path, data_path: Path) -> dict:
    return {"format": CACHE_FORMAT, "kind": kind, "fingerprint": tokenizer_fingerprint(tokenizer),
            "tokenizer": str(tokenizer_dir), "data": str(data_path)}


def save_cache(out_path: Path, arrays: dict[str, np.ndarray], meta: dict) -> None:
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    _save_npz_atomic(Path(out_path), arrays)


def _save_npz_atomic(out_path: Path, arrays: dict[str, np.ndarray]) -> None:
    with atomic_file(out_path) as tmp:
        with open(tmp, "wb") as stream:
            np.savez(stream, **arrays)


def load_cache(path: Path) -> TokenizedTask:
    """Load a cache written by ``tokenize_task``."""
    path = Path(path)
    if not path.is_file():
        raise SeqpeftInputError(path, "tokenized cache is missing.", fix="run the tokenize rule for this task and tokenizer.")
    with np.load(path, allow_pickle=False) as archive:
        data = {key: archive[key] for key in archive.files}
    meta = json.loads(bytes(data.pop("meta")).decode())
    splits = {}
    for name in meta["splits"]:
        label_offsets = data.get(f"{name}_label_offsets")
        splits[name] = TokenizedSplit(data[f"{name}_ids"], data[f"{name}_offsets"], data[f"{name}_labels"], label_offsets)
    meta["records"] = {key[4:]: value for key, value in data.items()
                       if key.startswith("all_") and key[4:] in ("partition", "kingdom", "sp_type", "accession", "sequence")}
    return TokenizedTask(meta["kind"], meta["fingerprint"], splits, meta)


def load_tokenizer(model_dir: Path):
    """A model's tokenizer as every step loads it (tokenize, train, predict). Never with repository
    code: a config's ``auto_map`` (DNABERT-2) otherwise makes transformers ask "run the custom code?
    [y/N]" and wait. Without a pad token (Llama) it pads with end-of-sequence: padding is masked."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir), trust_remote_code=False)
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
