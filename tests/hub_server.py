"""A local HTTP server speaking the Hugging Face Hub routes huggingface_hub uses to pin and download
a model, so that `seqpeft pin` and prepare_model run for real, offline (point HF_ENDPOINT at it).

Routes (``repo`` is ``owner/name``; ``rev`` a branch or a commit):
  GET  /api/models/{repo}/revision/{rev}   model info: sha (the commit) and siblings (file list)
  GET  /api/models/{repo}/tree/{rev}[/...]  file listing (snapshot_download), one page
  HEAD /{repo}/resolve/{rev}/{file}         metadata: X-Repo-Commit, ETag, Content-Length
  GET  /{repo}/resolve/{rev}/{file}         the bytes
Anything else answers 404, like the Hub for an unknown repository or file. Data files of plain
downloads (sources) are served at their own paths from ``files``.
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

    def publish(self, repo: str, files: dict[str, bytes], branch: str = "main") -> str:
        """Add a commit holding ``files`` on ``branch``; returns its 40-hex id."""
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
