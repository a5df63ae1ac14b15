"""A local HTTP server speaking the Hugging Face Hub routes huggingface_hub uses to pin and download
a model, so that `seqpeft pin` and prepare_model run for real, offline (point HF_ENDPOINT at it).

Routes (``repo`` is ``owner/name``; ``rev`` a branch or a commit):
  GET  /api/models/{repo}/revision/{rev}   model info: sha (the commit) and siblings (file list)
  GET  /api/models/{repo}/tree/{rev}[/...]  file listing (snapshot_download), one page
  HEAD /{repo}/resolve/{rev}/{file}         metadata: X-Repo-Commit, ETag, Content-Length
  GET  /{repo}/resolve/{rev}/{file}         the bytes
Anything else answers 404, like the Hub for an unknown repository or file. Data files of plain
downloads (sources) are served at their own paths from ``files``.

Real layouts (issue #22): ``real_layout_hub()`` serves every hub model the shipped configs name
under its real repository id and commit, in its real file layout and dtype (``REAL_REPOS``);
``served_repo(model entry)`` says which stand-in serves a config's entry, ``shipped_hub_models``
lists the entries, and the session fixture ``real_hub`` (tests/conftest.py) starts the hub and
gives the environment (``HF_ENDPOINT``, ``HF_HOME``) a ``seqpeft``/Snakemake process needs.
Repositories without a public commit (NT-500M-1000G, Mistral-DNA) are served on ``main``:
``seqpeft pin`` against the hub pins them.
"""

from __future__ import annotations

import hashlib
import json
import threading
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


@dataclass
class Repo:
    branches: dict[str, str]  # branch -> commit
    commits: dict[str, dict[str, bytes]]  # commit -> {filename: bytes}


@dataclass
class FakeHub:
    repos: dict[str, Repo] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)  # plain downloads: path -> bytes
    requests: list[str] = field(default_factory=list)

    def publish(self, repo: str, files: dict[str, bytes], branch: str = "main", commit: str | None = None) -> str:
        """Add a commit holding ``files`` on ``branch`` (at ``commit``, e.g. a real hub commit, else
        one derived from the contents); returns its 40-hex id."""
        if commit is None:
            digest = hashlib.sha1(repo.encode())
            for name in sorted(files):
                digest.update(name.encode() + b"\0" + hashlib.sha1(files[name]).digest())
            commit = digest.hexdigest()
        entry = self.repos.setdefault(repo, Repo({}, {}))
        entry.commits[commit] = dict(files)
        entry.branches[branch] = commit
        return commit

    def _resolve(self, repo: str, rev: str) -> tuple[str, dict[str, bytes]] | None:
        entry = self.repos.get(repo)
        if entry is None:
            return None
        commit = entry.branches.get(rev, rev)
        files = entry.commits.get(commit)
        return (commit, files) if files is not None else None


def _handler(hub: FakeHub):
    class Handler(BaseHTTPRequestHandler):
        def _send(self, status: int, body: bytes = b"", headers: dict | None = None, head: bool = False):
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head:
                self.wfile.write(body)

        def _json(self, data) -> None:
            self._send(200, json.dumps(data).encode(), {"Content-Type": "application/json"})

        def _route(self, head: bool) -> None:
            path = urllib.parse.unquote(urllib.parse.urlparse(self.path).path)
            hub.requests.append(f"{'HEAD' if head else 'GET'} {path}")
            parts = path.strip("/").split("/")
            if parts[:2] == ["api", "models"] and len(parts) >= 6 and parts[4] in ("revision", "tree"):
                resolved = hub._resolve("/".join(parts[2:4]), parts[5])
                if resolved is None:
                    return self._send(404, b'{"error": "Repository or revision not found"}',
                                      {"X-Error-Code": "RevisionNotFound"})
                commit, files = resolved
                if parts[4] == "revision":
                    return self._json({"id": "/".join(parts[2:4]), "modelId": "/".join(parts[2:4]), "sha": commit,
                                       "private": False, "siblings": [{"rfilename": name} for name in sorted(files)]})
                return self._json([{"type": "file", "path": name, "size": len(body),
                                    "oid": hashlib.sha1(b"blob %d\0" % len(body) + body).hexdigest()}
                                   for name, body in sorted(files.items())])
            if len(parts) >= 5 and parts[2] == "resolve":
                resolved = hub._resolve("/".join(parts[:2]), parts[3])
                name = "/".join(parts[4:])
                if resolved is None or name not in resolved[1]:
                    return self._send(404, b"Entry not found", {"X-Error-Code": "EntryNotFound"}, head)
                commit, files = resolved
                body = files[name]
                return self._send(200, body, {"X-Repo-Commit": commit, "ETag": f'"{hashlib.sha256(body).hexdigest()}"',
                                              "Content-Type": "application/octet-stream"}, head)
            if path in hub.files:
                return self._send(200, hub.files[path], {}, head)
            return self._send(404, b"not found", {}, head)

        def do_GET(self):  # noqa: N802
            self._route(head=False)

        def do_HEAD(self):  # noqa: N802
            self._route(head=True)

        def log_message(self, *args):
            pass

    return Handler


class HubServer:
    """``with HubServer(hub) as url:`` serves ``hub`` on a free local port."""

    def __init__(self, hub: FakeHub):
        self.hub = hub
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(hub))
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> str:
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        return self.url

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def hub_env(url: str, home: Path) -> dict[str, str]:
    """Environment of a process that talks to the fake hub (and to nothing else)."""
    return {"HF_ENDPOINT": url, "HF_HUB_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "0", "HF_HOME": str(home / "hf_home"),
            "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_XET": "1", "HF_HUB_ETAG_TIMEOUT": "5",
            "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
            "http_proxy": "", "https_proxy": "", "HTTP_PROXY": "", "HTTPS_PROXY": ""}


def published_llama(tiny_dir: Path) -> dict[str, bytes]:
    """A published-layout repository of a tiny Llama: LlamaForCausalLM weights under ``model.``
    in ``pytorch_model.bin`` only (no safetensors), its config and tokenizer files."""
    import io

    import torch
    from transformers import AutoConfig, LlamaForCausalLM

    config = AutoConfig.from_pretrained(tiny_dir)
    config.architectures = ["LlamaForCausalLM"]
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    files = {"pytorch_model.bin": buffer.getvalue(), "config.json": config.to_json_string().encode()}
    for path in tiny_dir.iterdir():
        if path.name.startswith(("tokenizer", "special_tokens")) and path.is_file():
            files[path.name] = path.read_bytes()
    files["README.md"] = b"# tiny published model\n"
    return files


# ---------------------------------------------------------------------------------------------
# Real-layout stand-ins of every hub model the shipped configs name (issue #22)
#
# Each is served under its real repository id and commit, with the file layout and dtype the real
# repository holds at that commit (../shared/models/layouts/LAYOUTS.md), the real small files read
# from ../shared at test time where they were recovered, and random weights at the real tensor
# names and shapes with fewer layers and narrower widths (the width relations that matter kept:
# OPT-350m's word_embed_proj_dim != hidden_size).

SHARED_MODELS = Path(__file__).resolve().parents[2] / "shared" / "models"
LAYOUTS = SHARED_MODELS / "layouts"
NARROW = {"hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4, "num_hidden_layers": 2}


@dataclass(frozen=True)
class RealRepo:
    """One hub repository as the stand-in hub serves it."""

    repo: str
    commit: str | None  # None: no public record of a commit; served on main under a made-up one
    checkpoint_dtype: str  # what the weight files hold
    layout: str  # in words, for failure messages
    build: object = field(repr=False, compare=False, default=None)  # () -> {filename: bytes}

    def files(self) -> dict[str, bytes]:
        return _built(self.repo)


def _layout_file(repo: str, name: str) -> bytes:
    path = LAYOUTS / repo.replace("/", "--") / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing (../shared must sit beside the checkout)")
    return path.read_bytes()


def _json(data: dict) -> bytes:
    return (json.dumps(data, indent=2) + "\n").encode()


def _torch_bytes(state: dict) -> bytes:
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def _safetensors_bytes(state: dict) -> bytes:
    from safetensors.torch import save

    return save({k: v.contiguous() for k, v in state.items()}, metadata={"format": "pt"})


def _random_state(model, dtype, seed: int = 0) -> dict:
    """The model's state dict with seeded random values, in ``dtype`` (floating tensors)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point():
            tensor = (torch.randn(tensor.shape, generator=generator) * 0.02).to(dtype)
        state[name] = tensor.clone()
    return state


# ---- tokenizers -------------------------------------------------------------------------------


def _byte_level_vocab(specials: dict[str, int]) -> dict[str, int]:
    from tokenizers.pre_tokenizers import ByteLevel

    vocab = dict(specials)
    for char in sorted(ByteLevel.alphabet()):
        vocab.setdefault(char, len(vocab))
    return vocab


def _gpt2_files() -> dict[str, bytes]:
    """OPT's tokenizer files (vocab.json + merges.txt, GPT-2 byte-level BPE), a byte-only vocabulary
    with OPT's special ids (<s> 0, <pad> 1, </s> 2, <unk> 3)."""
    vocab = _byte_level_vocab({"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3})
    return {"vocab.json": _json(vocab), "merges.txt": b"#version: 0.2\n",
            "special_tokens_map.json": _json({"bos_token": "</s>", "eos_token": "</s>", "unk_token": "</s>",
                                              "pad_token": "<pad>"}),
            "tokenizer_config.json": _json({"add_bos_token": True, "add_prefix_space": False, "bos_token": "</s>",
                                            "eos_token": "</s>", "errors": "replace", "pad_token": "<pad>",
                                            "unk_token": "</s>", "tokenizer_class": "GPT2Tokenizer"})}


def _byte_level_tokenizer_json(base: dict[str, int], added: dict[str, int], bos: str | None) -> bytes:
    """A tokenizer.json (byte-level BPE over single bytes) with ``added`` special tokens at their ids."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    tokenizer = Tokenizer(models.BPE(vocab=base, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    data = json.loads(tokenizer.to_str())
    data["added_tokens"] = [{"id": i, "content": token, "single_word": False, "lstrip": False, "rstrip": False,
                             "normalized": False, "special": True} for token, i in sorted(added.items(), key=lambda x: x[1])]
    if bos:
        data["post_processor"] = json.loads(processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, added[bos])]).__getstate__())
    return json.dumps(data).encode()


def _llama3_tokenizer_files() -> dict[str, bytes]:
    """Llama-3.2-1B's recovered tokenizer_config.json and special_tokens_map.json; its tokenizer.json
    (9 MB) was not recovered: one with the same 256 special tokens at ids 128000-128255 stands in."""
    config = json.loads(_layout_file("meta-llama/Llama-3.2-1B", "tokenizer_config.json"))
    added = {entry["content"]: int(i) for i, entry in config["added_tokens_decoder"].items()}
    base = _byte_level_vocab({})
    return {"tokenizer.json": _byte_level_tokenizer_json(base, added, "<|begin_of_text|>"),
            "tokenizer_config.json": _layout_file("meta-llama/Llama-3.2-1B", "tokenizer_config.json"),
            "special_tokens_map.json": _layout_file("meta-llama/Llama-3.2-1B", "special_tokens_map.json")}


def _llama2_tokenizer_files() -> dict[str, bytes]:
    """LLaMA-2's special ids (<unk> 0, <s> 1, </s> 2), no pad token, byte-level stand-in vocabulary."""
    added = {"<unk>": 0, "<s>": 1, "</s>": 2}
    base = {token: i + 3 for token, i in _byte_level_vocab({}).items()}
    return {"tokenizer.json": _byte_level_tokenizer_json(base, added, "<s>"),
            "tokenizer_config.json": _json({"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>",
                                            "eos_token": "</s>", "unk_token": "<unk>", "model_max_length": 32768}),
            "special_tokens_map.json": _json({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"})}


def _esm_tokenizer_files() -> dict[str, bytes]:
    """The ESM-2 family's tokenizer files (no tokenizer.json: the slow EsmTokenizer), recovered from 650M."""
    repo = "facebook/esm2_t33_650M_UR50D"
    return {name: _layout_file(repo, name) for name in ("vocab.txt", "special_tokens_map.json", "tokenizer_config.json")}


def _nt_tokenizer_files() -> dict[str, bytes]:
    """Nucleotide Transformer v1: EsmTokenizer over 6-mers, then single letters. The real vocab.txt
    was not recovered (LAYOUTS.md: 4,105 entries); this one has every special EsmTokenizer uses."""
    import itertools

    kmers = ["".join(p) for p in itertools.product("ATCG", repeat=6)]
    vocab = ["<unk>", "<pad>", "<mask>", "<cls>", "<eos>", "<bos>", *kmers, "A", "T", "C", "G", "N"]
    return {"vocab.txt": ("\n".join(vocab) + "\n").encode(),
            "special_tokens_map.json": _json({"unk_token": "<unk>", "pad_token": "<pad>", "mask_token": "<mask>",
                                              "cls_token": "<cls>", "eos_token": "<eos>", "bos_token": "<bos>"}),
            "tokenizer_config.json": _json({"tokenizer_class": "EsmTokenizer", "model_max_length": 1000})}


# ---- models -----------------------------------------------------------------------------------


def _opt(real: dict) -> dict[str, bytes]:
    """OPT: one float16 pytorch_model.bin, lm_head tied (not in the file), decoder.* keys."""
    import torch
    from transformers import OPTConfig, OPTModel

    config = OPTConfig(**real)
    state = _random_state(OPTModel(config), torch.float16)
    config_json = {**config.to_dict(), "architectures": ["OPTForCausalLM"], "torch_dtype": "float16"}
    config_json.pop("dtype", None)
    return {"config.json": _json(config_json), "pytorch_model.bin": _torch_bytes(state),
            "generation_config.json": _json({"bos_token_id": 2, "eos_token_id": 2, "pad_token_id": 1}),
            **_gpt2_files()}


def _opt_350m() -> dict[str, bytes]:
    # real: hidden 1024, word_embed_proj_dim 512 (project_in/out), post-LayerNorm, 24 layers, 16 heads
    return _opt({"vocab_size": 50272, "hidden_size": 64, "word_embed_proj_dim": 32, "ffn_dim": 128,
                 "num_hidden_layers": 2, "num_attention_heads": 4, "do_layer_norm_before": False,
                 "max_position_embeddings": 2048, "pad_token_id": 1, "bos_token_id": 2, "eos_token_id": 2,
                 "dropout": 0.1, "activation_function": "relu"})


def _opt_125m() -> dict[str, bytes]:
    # real: hidden = word_embed_proj_dim 768, ffn 3072, pre-LayerNorm, 12 layers, 12 heads
    return _opt({"vocab_size": 50272, "hidden_size": 64, "word_embed_proj_dim": 64, "ffn_dim": 128,
                 "num_hidden_layers": 2, "num_attention_heads": 4, "do_layer_norm_before": True,
                 "max_position_embeddings": 2048, "pad_token_id": 1, "bos_token_id": 2, "eos_token_id": 2,
                 "dropout": 0.1, "activation_function": "relu"})


def _esm_model(real_config: dict, tokenizer_files: dict[str, bytes], real_depth: bool = False):
    """``real_depth``: keep the real number of layers (narrowed only in width), for a model whose
    config entries name its layers (config.yaml's lora_last6: ESM-2 650M's layers 27-32)."""
    import torch
    from transformers import EsmConfig, EsmForMaskedLM

    narrow = {k: v for k, v in NARROW.items() if not (real_depth and k == "num_hidden_layers")}
    config_json = {**real_config, **narrow}
    model = EsmForMaskedLM(EsmConfig(**config_json))
    state = _random_state(model, torch.float32)
    # ESM's MLM decoder is tied to the embeddings in the published files too
    state["lm_head.decoder.weight"] = state["esm.embeddings.word_embeddings.weight"]
    return config_json, state, tokenizer_files


def _esm_single_bin(repo_config: dict) -> dict[str, bytes]:
    config_json, state, tokenizer = _esm_model(repo_config, _esm_tokenizer_files())
    return {"config.json": _json(config_json), "pytorch_model.bin": _torch_bytes(state), **tokenizer}


def _esm2_150m() -> dict[str, bytes]:
    return _esm_single_bin(json.loads(_layout_file("facebook/esm2_t30_150M_UR50D", "config.json")))


def _esm2_650m() -> dict[str, bytes]:
    config_json, state, tokenizer = _esm_model(json.loads(_layout_file("facebook/esm2_t33_650M_UR50D", "config.json")),
                                               _esm_tokenizer_files(), real_depth=True)
    state.pop("lm_head.decoder.weight")  # safetensors stores a tied tensor once
    return {"config.json": _json(config_json),
            "model.safetensors": _safetensors_bytes(state), **tokenizer}


def _esm2_3b() -> dict[str, bytes]:
    """Two pickled shards and their index, as the 3B repository holds them."""
    real = {**json.loads(_layout_file("facebook/esm2_t33_650M_UR50D", "config.json")),
            "hidden_size": 2560, "intermediate_size": 10240, "num_attention_heads": 40, "num_hidden_layers": 36}
    config_json, state, tokenizer = _esm_model(real, _esm_tokenizer_files())
    names = sorted(state)
    first = {k for k in names if ".layer.1." not in k and not k.startswith(("lm_head", "esm.contact_head"))}
    shards = {"pytorch_model-00001-of-00002.bin": {k: state[k] for k in names if k in first},
              "pytorch_model-00002-of-00002.bin": {k: state[k] for k in names if k not in first}}
    index = {"metadata": {"total_size": sum(v.numel() * v.element_size() for v in state.values())},
             "weight_map": {k: shard for shard, part in shards.items() for k in part}}
    return {"config.json": _json(config_json), "pytorch_model.bin.index.json": _json(index),
            **{name: _torch_bytes(part) for name, part in shards.items()}, **tokenizer}


def _nucleotide_transformer() -> dict[str, bytes]:
    # real: ESM architecture, learned absolute positions, 1,002 positions, 6-mer vocabulary
    real = {"architectures": ["EsmForMaskedLM"], "model_type": "esm", "vocab_size": 4107, "pad_token_id": 1,
            "mask_token_id": 2, "position_embedding_type": "absolute", "max_position_embeddings": 1002,
            "emb_layer_norm_before": False, "token_dropout": True, "layer_norm_eps": 1e-12,
            "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0, "is_folding_model": False,
            "torch_dtype": "float32"}
    config_json, state, tokenizer = _esm_model(real, _nt_tokenizer_files())
    return {"config.json": _json(config_json), "pytorch_model.bin": _torch_bytes(state), **tokenizer}


def _llama_3_2_1b() -> dict[str, bytes]:
    """One bfloat16 model.safetensors, embeddings tied (no lm_head.weight), the real config narrowed."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config_json = {**json.loads(_layout_file("meta-llama/Llama-3.2-1B", "config.json")), **NARROW,
                   "num_key_value_heads": 2, "head_dim": 16}
    model = LlamaForCausalLM(LlamaConfig(**config_json))
    state = _random_state(model, torch.bfloat16)
    state.pop("lm_head.weight", None)
    return {"config.json": _json(config_json), "model.safetensors": _safetensors_bytes(state),
            "generation_config.json": _json({"bos_token_id": 128000, "eos_token_id": 128001}),
            **_llama3_tokenizer_files()}


def _llama2_7b_32k() -> dict[str, bytes]:
    """Layout not established: float16 .bin shards with an auto_map to remote code (never run)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config_json = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 32000,
                   "max_position_embeddings": 32768, "rope_scaling": {"type": "linear", "factor": 8.0},
                   "bos_token_id": 1, "eos_token_id": 2, "rms_norm_eps": 1e-5, "tie_word_embeddings": False,
                   "torch_dtype": "float16", **NARROW,
                   "auto_map": {"AutoModelForCausalLM": "modeling_flash_llama.LlamaForCausalLM"}}
    state = _random_state(LlamaForCausalLM(LlamaConfig(**config_json)), torch.float16)
    names = sorted(state)
    shards = {"pytorch_model-00001-of-00002.bin": names[: len(names) // 2],
              "pytorch_model-00002-of-00002.bin": names[len(names) // 2:]}
    index = {"metadata": {}, "weight_map": {k: shard for shard, keys in shards.items() for k in keys}}
    return {"config.json": _json(config_json), "pytorch_model.bin.index.json": _json(index),
            **{shard: _torch_bytes({k: state[k] for k in keys}) for shard, keys in shards.items()},
            "modeling_flash_llama.py": b"raise RuntimeError('remote code of the stand-in must never run')\n",
            **_llama2_tokenizer_files()}


def _dnabert2() -> dict[str, bytes]:
    """DNABERT-2: BertForMaskedLM keys (fused Wqkv, GLU gated_layers, no position embeddings,
    the unused cls.predictions.*), one float32 pytorch_model.bin, remote-code files never run."""
    import torch

    repo = "zhihan1996/DNABERT-2-117M"
    hidden, inner, layers, vocab = NARROW["hidden_size"], NARROW["intermediate_size"], NARROW["num_hidden_layers"], 4096
    shapes = {"bert.embeddings.word_embeddings.weight": (vocab, hidden),
              "bert.embeddings.token_type_embeddings.weight": (2, hidden),
              "bert.embeddings.LayerNorm.weight": (hidden,), "bert.embeddings.LayerNorm.bias": (hidden,)}
    for i in range(layers):
        prefix = f"bert.encoder.layer.{i}."
        shapes.update({prefix + "attention.self.Wqkv.weight": (3 * hidden, hidden),
                       prefix + "attention.self.Wqkv.bias": (3 * hidden,),
                       prefix + "attention.output.dense.weight": (hidden, hidden),
                       prefix + "attention.output.dense.bias": (hidden,),
                       prefix + "attention.output.LayerNorm.weight": (hidden,),
                       prefix + "attention.output.LayerNorm.bias": (hidden,),
                       prefix + "mlp.gated_layers.weight": (2 * inner, hidden),
                       prefix + "mlp.wo.weight": (hidden, inner), prefix + "mlp.wo.bias": (hidden,),
                       prefix + "mlp.layernorm.weight": (hidden,), prefix + "mlp.layernorm.bias": (hidden,)})
    shapes.update({"bert.pooler.dense.weight": (hidden, hidden), "bert.pooler.dense.bias": (hidden,),
                   "cls.predictions.transform.dense.weight": (hidden, hidden),
                   "cls.predictions.transform.dense.bias": (hidden,),
                   "cls.predictions.transform.LayerNorm.weight": (hidden,),
                   "cls.predictions.transform.LayerNorm.bias": (hidden,),
                   "cls.predictions.decoder.bias": (vocab,)})
    generator = torch.Generator().manual_seed(0)
    state = {name: torch.randn(shape, generator=generator) * 0.02 for name, shape in shapes.items()}
    state["cls.predictions.decoder.weight"] = state["bert.embeddings.word_embeddings.weight"]  # tied
    config_json = {**json.loads(_layout_file(repo, "config.json")), "architectures": ["BertForMaskedLM"],
                   "model_type": "bert", "hidden_size": hidden, "intermediate_size": inner,
                   "num_hidden_layers": layers, "num_attention_heads": NARROW["num_attention_heads"]}
    never = b"raise RuntimeError('remote code of the stand-in must never run')\n"
    return {"config.json": _json(config_json), "pytorch_model.bin": _torch_bytes(state),
            "tokenizer.json": _layout_file(repo, "tokenizer.json"),
            "tokenizer_config.json": _layout_file(repo, "tokenizer_config.json"),
            "bert_layers.py": never, "configuration_bert.py": never, "bert_padding.py": never,
            "flash_attn_triton.py": never}


def _mistral_dna(max_positions: int) -> dict[str, bytes]:
    """Mistral-DNA: MixtralForCausalLM in the per-expert (w1/w2/w3) names of transformers 4, the
    DNABERT-2 tokenizer (pad 3), float32 model.safetensors. Names and shapes follow the published
    Mistral-DNA-v1-1M checkpoint in ../shared (its fine-tuned score head replaced by lm_head)."""
    import torch
    from safetensors import safe_open

    shared = SHARED_MODELS / "mistral-dna-v1-1m-hg38-tf0"
    config_json = json.loads((shared / "config.json").read_text())
    config_json.update({"architectures": ["MixtralForCausalLM"], "num_hidden_layers": 2,
                        "max_position_embeddings": max_positions})
    config_json.pop("problem_type", None)
    generator = torch.Generator().manual_seed(0)
    state = {}
    with safe_open(str(shared / "model.safetensors"), framework="pt") as handle:
        for name in handle.keys():
            if name == "score.weight" or (".layers." in name and int(name.split(".")[2]) >= 2):
                continue
            shape = handle.get_slice(name).get_shape()
            state[name] = torch.randn(shape, generator=generator) * 0.02
    state["lm_head.weight"] = torch.randn(config_json["vocab_size"], config_json["hidden_size"], generator=generator) * 0.02
    return {"config.json": _json(config_json), "model.safetensors": _safetensors_bytes(state),
            "tokenizer.json": (shared / "tokenizer.json").read_bytes(),
            "tokenizer_config.json": (shared / "tokenizer_config.json").read_bytes()}


REAL_REPOS: dict[str, RealRepo] = {r.repo: r for r in (
    RealRepo("zhihan1996/DNABERT-2-117M", "d064dece8a8b41d9fb8729fbe3435278786931f1", "float32",
             "one pytorch_model.bin (bert.* + cls.predictions.*), remote code files", _dnabert2),
    RealRepo("facebook/esm2_t30_150M_UR50D", "a695f6045e2e32885fa60af20c13cb35398ce30c", "float32",
             "one pytorch_model.bin, no tokenizer.json", _esm2_150m),
    RealRepo("facebook/esm2_t33_650M_UR50D", "08e4846e537177426273712802403f7ba8261b6c", "float32",
             "one model.safetensors, no tokenizer.json", _esm2_650m),
    RealRepo("facebook/esm2_t36_3B_UR50D", "476b639933c8baad5ad09a60ac1a87f987b656fc", "float32",
             "two pytorch_model-0000N-of-00002.bin shards + index", _esm2_3b),
    RealRepo("facebook/opt-350m", "08ab08cc4b72ff5593870b5d527cf4230323703c", "float16",
             "one float16 pytorch_model.bin, lm_head tied, project_in/out", _opt_350m),
    RealRepo("facebook/opt-125m", "27dcfa74d334bc871f3234de431e71c6eeba5dd6", "float16",
             "one float16 pytorch_model.bin, lm_head tied", _opt_125m),
    RealRepo("meta-llama/Llama-3.2-1B", "4e20de362430cd3b72f300e6b0f18e50e7166e08", "bfloat16",
             "one bfloat16 model.safetensors, tied embeddings", _llama_3_2_1b),
    RealRepo("togethercomputer/LLaMA-2-7B-32K", "46c24bb5aef59722fa7aa6d75e832afd1d64b980", "float16",
             "float16 .bin shards + index, auto_map to remote code (layout not established)", _llama2_7b_32k),
    RealRepo("InstaDeepAI/nucleotide-transformer-500m-1000g", None, "float32",
             "ESM architecture, 6-mer EsmTokenizer, one pytorch_model.bin", _nucleotide_transformer),
    RealRepo("RaphaelMourad/Mistral-DNA-v1-17M-hg38", None, "float32",
             "MixtralForCausalLM, per-expert w1/w2/w3, model.safetensors", lambda: _mistral_dna(512)),
    RealRepo("RaphaelMourad/Mistral-DNA-v1-1M-hg38", None, "float32",
             "MixtralForCausalLM, per-expert w1/w2/w3, model.safetensors", lambda: _mistral_dna(256)),
)}


_BUILT: dict[str, dict[str, bytes]] = {}


def _built(repo: str) -> dict[str, bytes]:
    if repo not in _BUILT:
        _BUILT[repo] = REAL_REPOS[repo].build()
    return _BUILT[repo]


def real_layout_repos() -> dict[str, RealRepo]:
    """Every hub repository the shipped configs name, by repository id."""
    return dict(REAL_REPOS)


def real_layout_hub(repos: list[str] | None = None) -> FakeHub:
    """A FakeHub serving the real-layout stand-ins (all, or the named repositories) at their commits."""
    hub = FakeHub()
    for name in repos or REAL_REPOS:
        repo = REAL_REPOS[name]
        hub.publish(repo.repo, repo.files(), commit=repo.commit)
    return hub


def served_repo(spec: dict) -> RealRepo:
    """The stand-in serving a config's model entry (``hub:``, ``revision:``); KeyError if none does."""
    repo = REAL_REPOS.get(spec.get("hub"))
    if repo is None:
        raise KeyError(f"no real-layout stand-in for hub repository {spec.get('hub')!r}: add it to REAL_REPOS")
    if spec.get("revision") and spec["revision"] != repo.commit:
        raise KeyError(f"{repo.repo}: the config pins {spec['revision']}, the stand-in serves {repo.commit}")
    return repo


def shipped_hub_models(root: Path) -> dict[str, dict]:
    """``{config file: {model name: entry}}`` of every shipped config's hub models."""
    import yaml

    found = {}
    for path in sorted([*root.glob("config/*.yaml"), *root.glob("config/seeds/*.yaml")]):
        models = (yaml.safe_load(path.read_text()) or {}).get("models") or {}
        hub_models = {name: spec for name, spec in models.items() if isinstance(spec, dict) and spec.get("hub")}
        if hub_models:
            found[str(path.relative_to(root))] = hub_models
    return found
