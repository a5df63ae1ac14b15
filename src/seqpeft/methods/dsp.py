"""Domain-shift prompting (DSP): a sequence-classification input wrapped in a text template.

A task's template (default ``DEFAULT_TEMPLATE``, read from the config schema) names the task's
domain and holds the sequence; a method variant with ``dsp: {encoding: ...}`` trains on the
templated inputs. Two encodings:

- ``bbpe``: the whole templated string goes through the model's own tokenizer (for byte-level
  BPE models the sequence merges into multi-nucleotide tokens, as in pre-training on text);
- ``nucleotide``: the template's text before and after ``{sequence}`` is tokenized normally and
  each nucleotide becomes one fixed token id of the model's vocabulary (by default the id of the
  tokenizer's single-character token; ``models.<name>.dsp_nucleotide_ids`` overrides it).

Too-long inputs lose nucleotides from the end of the sequence, never template text, so the
encoded input always holds the whole template. The result has the layout of the tokenized
cache (flat ids + offsets), so training, batching and masking need no DSP-specific path.

The module imports nothing heavy at import time: ``seqpeft.preflight.check`` and ``seqpeft.config.jobs`` use its template checks
while the workflow parses.
"""

from __future__ import annotations

import string
from pathlib import Path
from dataclasses import asdict, dataclass, fields
from typing import Any

from seqpeft.util.errors import SeqpeftInputError
from seqpeft.config.schema import ENTRY, default, defaults

DEFAULT_TEMPLATE = default("tasks", ENTRY, "dsp_template")
ENCODINGS = ("bbpe", "nucleotide")
NUCLEOTIDES = "ACGTN"
TEMPLATE_FIELDS = ("domain", "sequence")


def template_problem(template: str) -> str | None:
    """Why ``template`` is not usable (``None`` if it is): exactly one ``{sequence}``, at most
    ``{domain}`` besides, no format specs."""
    try:
        pieces = list(string.Formatter().parse(template))
    except ValueError as error:
        return f"is not a valid template ({error}); write literal braces as '{{{{' and '}}}}'."
    fields = [name for _, name, _, _ in pieces if name is not None]
    unknown = sorted({name for name in fields if name not in TEMPLATE_FIELDS})
    if unknown:
        named = ", ".join("{" + name + "}" for name in unknown)
        return f"uses unknown field(s) {named}; only {{domain}} and {{sequence}} are filled in."
    if fields.count("sequence") != 1:
        return f"must contain {{sequence}} exactly once (found {fields.count('sequence')})."
    if any(spec or conversion for _, name, spec, conversion in pieces if name is not None):
        return "fields take no format spec or conversion (write {domain} and {sequence} plainly)."
    return None


def split_template(template: str, domain: str) -> tuple[str, str]:
    """The template's text before and after ``{sequence}``, with ``{domain}`` filled in."""
    problem = template_problem(template)
    if problem:
        raise SeqpeftInputError(None, f"DSP template {template!r} {problem}")
    before: list[str] = []
    after: list[str] = []
    current = before
    for literal, name, _, _ in string.Formatter().parse(template):
        current.append(literal)
        if name == "domain":
            current.append(domain)
        elif name == "sequence":
            current = after
    return "".join(before), "".join(after)


@dataclass(frozen=True)
class DspSettings:
    """Everything that decides a DSP encoding; recorded in the cache and in a run's artifacts.
    ``seqpeft.config.jobs.dsp_settings`` gives every field; ``from_dict`` fills in the config schema's
    defaults (task template, model max_length and on_too_long) where others leave them out."""

    encoding: str
    template: str
    domain: str  # the workflow's default: the task name
    max_length: int
    on_too_long: str
    # Per-letter overrides of the tokenizer's single-character token ids (nucleotide encoding).
    nucleotide_ids: dict[str, int]

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "DspSettings":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise SeqpeftInputError(None, f"unknown DSP settings {unknown}.", fix=f"use only {sorted(known)}.")
        model = defaults("models", ENTRY)
        values = {"template": DEFAULT_TEMPLATE, "max_length": model["max_length"], "on_too_long": model["on_too_long"],
                  **values, "nucleotide_ids": dict(values.get("nucleotide_ids") or {})}
        missing = sorted(known - set(values))
        if missing:
            raise SeqpeftInputError(None, f"DSP settings without {missing}.", fix="give the encoding and the domain.")
        settings = cls(**values)
        if settings.encoding not in ENCODINGS:
            raise SeqpeftInputError(None, f"unknown DSP encoding {settings.encoding!r}.", fix=f"use one of {', '.join(ENCODINGS)}.")
        return settings

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def default_nucleotide_ids(tokenizer) -> dict[str, int | None]:
    """Each nucleotide's single-character token id in the tokenizer's vocabulary (None if absent)."""
    vocab = tokenizer.get_vocab()
    return {letter: vocab.get(letter) for letter in NUCLEOTIDES}


def resolve_nucleotide_ids(tokenizer, overrides: dict[str, int], model: str = "") -> dict[str, int]:
    """The five ids the nucleotide encoding uses: overrides first, else the tokenizer's own."""
    ids = {**default_nucleotide_ids(tokenizer), **{k: int(v) for k, v in overrides.items()}}
    name = model or "<model>"
    missing = [letter for letter, value in ids.items() if value is None]
    if missing:
        raise SeqpeftInputError(
            None, f"DSP nucleotide encoding: the tokenizer of model {name!r} has no single-character token for "
            f"{', '.join(missing)}.",
            fix=f"set models.{name}.dsp_nucleotide_ids: {{{', '.join(f'{m}: <token id>' for m in missing)}}} "
                "to ids of its vocabulary, or use dsp encoding bbpe.")
    size = len(tokenizer)
    bad = {letter: value for letter, value in ids.items() if not 0 <= value < size}
    if bad:
        raise SeqpeftInputError(None, f"DSP nucleotide ids {bad} of model {name!r} are outside its vocabulary (size {size}).",
                                fix=f"set models.{name}.dsp_nucleotide_ids to ids below {size}.")
    return ids


def special_wrapping(tokenizer) -> tuple[list[int], list[int]]:
    """The special tokens the tokenizer puts before and after a single sequence (e.g. [CLS] / [SEP]).

    Found by encoding a probe with and without special tokens, so it works for any post-processor.
    """
    probe = "Sequence"
    plain = tokenizer(probe, add_special_tokens=False)["input_ids"]
    full = tokenizer(probe, add_special_tokens=True)["input_ids"]
    for start in range(len(full) - len(plain) + 1):
        if full[start:start + len(plain)] == plain:
            return full[:start], full[start + len(plain):]
    raise SeqpeftInputError(None, "cannot tell where this tokenizer puts its special tokens around a sequence.",
                            fix="use a tokenizer whose special tokens only wrap the text (e.g. [CLS] ... [SEP]).")


class DspEncoder:
    """Turns raw sequences into DSP token ids for one tokenizer and one ``DspSettings``."""

    def __init__(self, tokenizer, settings: DspSettings, model: str = ""):
        self.tokenizer = tokenizer
        self.settings = settings
        self.model = model or "<model>"
        self.prefix, self.suffix = split_template(settings.template, settings.domain)
        self.head, self.tail = special_wrapping(tokenizer)
        self.nucleotide_ids: dict[str, int] | None = None
        if settings.encoding == "nucleotide":
            self.nucleotide_ids = resolve_nucleotide_ids(tokenizer, settings.nucleotide_ids, model)
            self.prefix_ids = self._plain(self.prefix)
            self.suffix_ids = self._plain(self.suffix)
            template_tokens = len(self.head) + len(self.prefix_ids) + len(self.suffix_ids) + len(self.tail)
        else:
            template_tokens = len(self._whole(""))
        self.template_tokens = template_tokens
        if template_tokens >= settings.max_length:
            raise SeqpeftInputError(
                None, f"the DSP template alone is {template_tokens} tokens of model {self.model!r} "
                f"({settings.encoding} encoding), leaving no room for the sequence within max_length={settings.max_length}.",
                fix=f"shorten the task's dsp_template or domain, or raise models.{self.model}.max_length "
                    "(or the max_length of its experiment block, where one sets it).")

    def _plain(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []

    def _whole(self, sequence: str) -> list[int]:
        return list(self.tokenizer(self.prefix + sequence + self.suffix, add_special_tokens=True)["input_ids"])

    def template_unknown_tokens(self) -> int:
        """How many of the template's tokens are the unknown token (text the vocabulary cannot spell)."""
        unk = self.tokenizer.unk_token_id
        if unk is None:
            return 0
        ids = self._whole("") if self.settings.encoding == "bbpe" else self.prefix_ids + self.suffix_ids
        return sum(1 for token in ids if token == unk)

    def encode(self, sequences: list[str], source: Any = None) -> tuple[Any, Any, list[int]]:
        """(flat int32 ids, offsets of length n + 1, indices of truncated sequences).

        With ``on_too_long: refuse`` a sequence that does not fit is an error naming it.
        """
        import numpy as np

        if self.settings.encoding == "nucleotide":
            encoded, truncated = self._encode_nucleotide(sequences)
        else:
            encoded, truncated = self._encode_bbpe(sequences)
        if truncated and self.settings.on_too_long == "refuse":
            first = truncated[0]
            raise SeqpeftInputError(
                source, f"{len(truncated)} sequences do not fit max_length={self.settings.max_length} tokens of model "
                f"{self.model!r} with the DSP template ({self.template_tokens} template tokens); the first is sequence {first + 1}.",
                fix=f"set models.{self.model}.on_too_long: truncate, raise max_length, or shorten the template.")
        lengths = np.fromiter((len(ids) for ids in encoded), dtype=np.int64, count=len(encoded))
        offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        flat = np.fromiter((token for ids in encoded for token in ids), dtype=np.int32, count=int(offsets[-1]))
        return flat, offsets, truncated

    def _encode_nucleotide(self, sequences: list[str]) -> tuple[list[list[int]], list[int]]:
        room = self.settings.max_length - self.template_tokens
        lookup = self.nucleotide_ids
        before = self.head + self.prefix_ids
        after = self.suffix_ids + self.tail
        encoded, truncated = [], []
        for index, sequence in enumerate(sequences):
            if len(sequence) > room:
                truncated.append(index)
                sequence = sequence[:room]
            try:
                encoded.append(before + [lookup[letter] for letter in sequence] + after)
            except KeyError as error:
                raise SeqpeftInputError(None, f"sequence {index + 1} has letter {error.args[0]!r}, which the DSP nucleotide "
                                        f"encoding does not map.", fix=f"use only {NUCLEOTIDES}.") from None
        return encoded, truncated

    def _encode_bbpe(self, sequences: list[str]) -> tuple[list[list[int]], list[int]]:
        texts = [self.prefix + sequence + self.suffix for sequence in sequences]
        encoded = [list(ids) for ids in self.tokenizer(texts, add_special_tokens=True)["input_ids"]] if texts else []
        truncated = []
        for index, ids in enumerate(encoded):
            if len(ids) > self.settings.max_length:
                truncated.append(index)
                encoded[index] = self._longest_fitting(sequences[index])
        return encoded, truncated

    def _longest_fitting(self, sequence: str) -> list[int]:
        """The whole templated string with the longest sequence head that fits (binary search).

        Token counts grow with the sequence length up to BPE's local merges, so the search is
        followed by a step back while the result is still too long.
        """
        limit = self.settings.max_length
        low, high = 0, len(sequence)  # _whole(sequence[:low]) fits (the template check ensured it)
        while low < high:
            middle = (low + high + 1) // 2
            if len(self._whole(sequence[:middle])) <= limit:
                low = middle
            else:
                high = middle - 1
        ids = self._whole(sequence[:low])
        while len(ids) > limit and low > 0:
            low -= 1
            ids = self._whole(sequence[:low])
        return ids

    def description(self) -> dict[str, Any]:
        """What artifacts and caches record: the settings plus the ids actually used."""
        return {**self.settings.to_dict(), "resolved_nucleotide_ids": self.nucleotide_ids,
                "template_tokens": self.template_tokens}


def tokenize_dsp_task(task_spec: dict, data_path: Path, tokenizer_dir: Path, dsp: dict, out_path: Path,
                      model: str = "") -> None:
    """Tokenize a task with a DSP template (``seqpeft.methods.dsp``) into a cache.

    Same layout as ``tokenize_task`` (training reads it unchanged); ``meta["dsp"]`` records the
    settings and the ids used, ``meta["dsp_truncated"]`` how many sequences lost nucleotides.
    """
    from seqpeft.core.registry import task_kind
    from seqpeft.data.tokenize import cache_meta, load_tokenizer, save_cache

    kind = task_kind(task_spec["kind"])
    if not kind.text_template:
        raise SeqpeftInputError(None, f"domain-shift prompting does not apply to {kind.name} tasks.",
                                fix="drop the dsp method variants from this task's experiments.")
    tokenizer = load_tokenizer(tokenizer_dir)
    encoder = DspEncoder(tokenizer, DspSettings.from_dict(dsp), model)
    unknown = encoder.template_unknown_tokens()
    print(f"[seqpeft] DSP {encoder.settings.encoding}: template is {encoder.template_tokens} tokens"
          + (f", {unknown} of them unknown to the tokenizer (text its vocabulary cannot spell)" if unknown else ""))
    truncated: dict[str, int] = {}

    def encode(sequences: list[str], path: Path):
        ids, offsets, cut = encoder.encode(sequences, source=path)
        truncated[Path(path).stem] = len(cut)
        return ids, offsets

    arrays: dict = {}
    alphabet = kind.alphabet_of(task_spec)
    meta = {**cache_meta(kind.name, tokenizer, tokenizer_dir, data_path), "dsp": encoder.description(), "alphabet": alphabet}
    meta.update(kind.tokenize(Path(data_path), tokenizer, arrays, encode, alphabet))
    meta["dsp_truncated"] = truncated
    if any(truncated.values()):
        print(f"[seqpeft] DSP: sequences shortened to fit max_length={encoder.settings.max_length} with the whole "
              f"template: {truncated}")
    save_cache(Path(out_path), arrays, meta)
