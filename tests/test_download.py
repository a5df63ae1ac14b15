"""Downloads against a real local HTTP server: verify, retry, unpack, and never leave debris."""

from __future__ import annotations

import hashlib
import io
import shutil
import subprocess
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from seqpeft.data.download import download, fetch_source, git_blob_of, sha256_of, unpack
from seqpeft.util.errors import SeqpeftInputError

TRAIN_CSV = b"sequence,label\nACGT,1\nTTTT,0\n"
DEV_CSV = b"sequence,label\nACGA,1\n"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def make_tar(members: dict[str, bytes], mode: str = "w:gz") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


GUE_MEMBERS = {"GUE/tf/0/train.csv": TRAIN_CSV, "GUE/tf/0/dev.csv": DEV_CSV}


class _Handler(BaseHTTPRequestHandler):
    """Serves ``server.files``; ``server.faults[path]`` lists failures to inject, one per request."""

    def do_GET(self):  # noqa: N802 (http.server naming)
        server = self.server
        server.hits[self.path] = server.hits.get(self.path, 0) + 1
        body = server.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        faults = server.faults.get(self.path, [])
        fault = faults.pop(0) if faults else None
        if fault == "drop":  # close the socket without answering
            self.close_connection = True
            return
        if fault == "503":
            self.send_error(503)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if fault == "truncate":  # promise the whole body, send half, hang up
            self.wfile.write(body[: len(body) // 2])
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args):  # keep test output clean
        pass


@pytest.fixture(scope="module")
def _httpd():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)  # port 0: a free port
    httpd.daemon_threads = True
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def server(_httpd):
    """The shared server with fresh files, faults and hit counts for each test."""
    _httpd.files, _httpd.faults, _httpd.hits = {}, {}, {}
    return _httpd


def serve(server, path: str, body: bytes, faults: list[str] | None = None) -> str:
    server.files[path] = body
    server.faults[path] = list(faults or [])
    return server.url + path


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


# ---------------------------------------------------------------------------------------------


def test_sha256_of(tmp_path):
    path = tmp_path / "x"
    path.write_bytes(b"abc")
    assert sha256_of(path) == sha(b"abc")


def test_fetch_zip_strips_single_top_level_folder(server, tmp_path):
    body = make_zip(GUE_MEMBERS)
    url = serve(server, "/GUE.zip", body)
    out = tmp_path / "sources" / "gue"
    fetch_source({"url": url, "sha256": sha(body), "archive": "zip"}, out)
    assert (out / "tf" / "0" / "train.csv").read_bytes() == TRAIN_CSV
    assert (out / "tf" / "0" / "dev.csv").read_bytes() == DEV_CSV
    assert leftovers(out.parent) == ["gue"]


def test_fetch_tar_gz_keeps_multiple_top_level_entries(server, tmp_path):
    body = make_tar({"a/train.csv": TRAIN_CSV, "README": b"hi"})
    url = serve(server, "/data.tar.gz", body)
    out = tmp_path / "data"
    fetch_source({"url": url, "sha256": sha(body).upper(), "archive": "tar"}, out)
    assert (out / "a" / "train.csv").read_bytes() == TRAIN_CSV and (out / "README").read_bytes() == b"hi"
    assert leftovers(tmp_path) == ["data"]


def test_fetch_plain_file_with_and_without_filename(server, tmp_path):
    url = serve(server, "/files/train_set.fasta", b">x\nM\nI\n")
    fetch_source({"url": url, "sha256": sha(b">x\nM\nI\n"), "archive": "none"}, tmp_path / "a")
    assert (tmp_path / "a" / "train_set.fasta").read_bytes() == b">x\nM\nI\n"
    fetch_source({"url": url, "sha256": sha(b">x\nM\nI\n"), "archive": "none", "filename": "sp.fasta"},
                 tmp_path / "b")
    assert leftovers(tmp_path / "b") == ["sp.fasta"]
    assert leftovers(tmp_path) == ["a", "b"]


def test_fetch_replaces_existing_out_dir(server, tmp_path):
    body = make_zip(GUE_MEMBERS)
    url = serve(server, "/GUE.zip", body)
    out = tmp_path / "gue"
    (out / "stale").mkdir(parents=True)
    fetch_source({"url": url, "sha256": sha(body), "archive": "zip"}, out)
    assert leftovers(out) == ["tf"]


def test_checksum_mismatch_raises_without_retry_and_leaves_nothing(server, tmp_path):
    url = serve(server, "/GUE.zip", make_zip(GUE_MEMBERS))
    wrong = "1" * 64
    with pytest.raises(SeqpeftInputError) as caught:
        fetch_source({"url": url, "sha256": wrong, "archive": "zip"}, tmp_path / "gue")
    message = str(caught.value)
    assert url in message and wrong in message and sha(server.files["/GUE.zip"]) in message
    assert "sha256" in message and "mirror" in message
    assert server.hits["/GUE.zip"] == 1
    assert leftovers(tmp_path) == []


def test_download_checksum_mismatch_leaves_no_file(server, tmp_path):
    url = serve(server, "/f.bin", b"payload")
    dest = tmp_path / "f.bin"
    with pytest.raises(SeqpeftInputError, match="sha256 mismatch"):
        download(url, dest, "1" * 64, backoff=0)
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("fault", ["truncate", "drop", "503"])
def test_transient_failure_is_retried(server, tmp_path, fault):
    body = b"x" * 100_000
    url = serve(server, "/big.bin", body, faults=[fault])
    dest = download(url, tmp_path / "big.bin", sha(body), retries=2, backoff=0)
    assert dest.read_bytes() == body
    assert server.hits["/big.bin"] == 2
    assert leftovers(tmp_path) == ["big.bin"]


def test_persistent_failure_gives_up_cleanly(server, tmp_path):
    body = b"y" * 10_000
    url = serve(server, "/flaky.bin", body, faults=["truncate", "drop", "truncate"])
    with pytest.raises(SeqpeftInputError, match="failed after 2 attempt"):
        download(url, tmp_path / "flaky.bin", sha(body), retries=1, backoff=0)
    assert server.hits["/flaky.bin"] == 2
    assert leftovers(tmp_path) == []


def test_http_404_is_not_retried(server, tmp_path):
    with pytest.raises(SeqpeftInputError, match="HTTP 404"):
        download(server.url + "/missing.zip", tmp_path / "m.zip", "a" * 64, retries=3, backoff=0)
    assert server.hits["/missing.zip"] == 1
    assert leftovers(tmp_path) == []


def test_existing_verified_file_is_not_downloaded_again(server, tmp_path):
    url = serve(server, "/f.bin", b"data")
    dest = tmp_path / "f.bin"
    download(url, dest, sha(b"data"), backoff=0)
    download(url, dest, sha(b"data"), backoff=0)
    assert server.hits["/f.bin"] == 1


@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_truncated_archive_raises_and_leaves_no_out_dir(server, tmp_path, kind):
    whole = make_zip(GUE_MEMBERS) if kind == "zip" else make_tar({"GUE/big.csv": bytes(range(256)) * 400})
    body = whole[: len(whole) * 2 // 3]
    url = serve(server, f"/cut.{kind}", body)
    out = tmp_path / "cut"
    with pytest.raises(SeqpeftInputError) as caught:
        fetch_source({"url": url, "sha256": sha(body), "archive": kind}, out)
    message = str(caught.value)
    assert message.startswith(f"{url}: the downloaded archive is truncated or corrupt")
    assert f"matches the configured sha256 {sha(body)}, so the source itself is broken" in message
    assert "delete" not in message  # the download is already gone: nothing for the user to delete
    assert leftovers(tmp_path) == []


def test_truncated_tar_xz_verified_by_git_blob_names_the_git_blob(server, tmp_path):
    """#25.5: the message names the checksum that verified the file, and no deleted temporary file."""
    whole = make_tar({"GUE/big.csv": bytes(range(256)) * 400}, mode="w:xz")
    body = whole[: len(whole) // 2]
    url = serve(server, "/cut.tar.xz", body)
    probe = tmp_path / "probe"
    probe.write_bytes(body)
    blob = git_blob_of(probe)
    probe.unlink()
    with pytest.raises(SeqpeftInputError) as caught:
        fetch_source({"url": url, "git_blob": blob, "archive": "tar.xz"}, tmp_path / "cut")
    message = str(caught.value)
    assert message.startswith(f"{url}: the downloaded archive is truncated or corrupt")
    assert f"matches the configured git_blob {blob}" in message and "sha256" not in message
    assert "delete" not in message and ".fetch" not in message
    assert leftovers(tmp_path) == []


def test_file_url(tmp_path):
    source = tmp_path / "src" / "GUE.tar"
    source.parent.mkdir()
    body = make_tar(GUE_MEMBERS, mode="w")
    source.write_bytes(body)
    out = tmp_path / "out" / "gue"
    fetch_source({"url": source.as_uri(), "sha256": sha(body), "archive": "tar"}, out)
    assert (out / "tf" / "0" / "train.csv").read_bytes() == TRAIN_CSV
    assert leftovers(out.parent) == ["gue"]


def test_file_url_missing_is_not_retried(tmp_path):
    with pytest.raises(SeqpeftInputError, match="cannot read local file"):
        download((tmp_path / "nope.zip").as_uri(), tmp_path / "x.zip", "a" * 64, backoff=10)
    assert leftovers(tmp_path) == []


# ---- git blob ids: the identity a git repository publishes for a file (the GUE archive) ----

GUE_FAMILIES = {
    f"GUE/{family}/{task}/{split}.csv": TRAIN_CSV if split == "train" else DEV_CSV
    for family, task in (("EMP", "H3"), ("tf", "0"), ("prom", "prom_300_all"), ("virus", "covid"))
    for split in ("train", "dev", "test")
}


def git_hash_object(path: Path) -> str:
    """The blob id git itself computes for a file (the test's independent reference)."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    return subprocess.run(["git", "hash-object", str(path)], check=True, capture_output=True, text=True).stdout.strip()


def test_git_blob_of_matches_git_hash_object(tmp_path):
    for body in (b"", b"abc\n", bytes(range(256)) * 5000):
        path = tmp_path / "f"
        path.write_bytes(body)
        assert git_blob_of(path) == git_hash_object(path)


def test_fetch_tar_xz_verified_by_git_blob_has_the_gue_layout(server, tmp_path):
    body = make_tar(GUE_FAMILIES, mode="w:xz")
    archive = tmp_path / "GUE.tar.xz"
    archive.write_bytes(body)
    blob = git_hash_object(archive)
    url = serve(server, "/raphaelmourad/Mistral-DNA/COMMIT/data/GUE.tar.xz", body)
    out = tmp_path / "sources" / "gue"
    digests = fetch_source({"url": url, "git_blob": blob, "archive": "tar.xz"}, out)
    assert digests == {"sha256": sha(body), "git_blob": blob}
    # the task paths of config/config.yaml resolve below the source directory (GUE/ stripped)
    for family, task in (("EMP", "H3"), ("tf", "0"), ("prom", "prom_300_all"), ("virus", "covid")):
        assert sorted(p.name for p in (out / family / task).iterdir()) == ["dev.csv", "test.csv", "train.csv"]
    assert (out / "tf" / "0" / "train.csv").read_bytes() == TRAIN_CSV
    assert leftovers(out.parent) == ["gue"]


def test_tar_xz_with_dot_slash_names_and_macos_junk_keeps_the_gue_layout(tmp_path):
    # `tar -cJf GUE.tar.xz ./GUE` on a Mac: ./-prefixed names, AppleDouble ._ files beside the folder
    members = {f"./{name}": body for name, body in GUE_FAMILIES.items()}
    members.update({"./._GUE": b"\x00\x05\x16\x07", "./.DS_Store": b"junk"})
    archive = tmp_path / "GUE.tar.xz"
    archive.write_bytes(make_tar(members, mode="w:xz"))
    out = unpack(archive, tmp_path / "gue")
    assert sorted(p.name for p in out.iterdir()) == ["EMP", "prom", "tf", "virus"]
    assert (out / "tf" / "0" / "train.csv").read_bytes() == TRAIN_CSV


def test_git_blob_mismatch_is_refused_and_leaves_nothing(server, tmp_path):
    body = make_tar(GUE_FAMILIES, mode="w:xz")
    archive = tmp_path / "GUE.tar.xz"
    archive.write_bytes(body[:-1] + b"x")
    wrong = git_hash_object(archive)  # the id of other bytes
    url = serve(server, "/GUE.tar.xz", body)
    out = tmp_path / "sources" / "gue"
    with pytest.raises(SeqpeftInputError, match=f"git_blob mismatch: expected {wrong}, got "):
        fetch_source({"url": url, "git_blob": wrong, "archive": "tar.xz"}, out)
    assert leftovers(out.parent) == []
    assert server.hits["/GUE.tar.xz"] == 1  # wrong bytes are not asked for again


def test_sha256_and_git_blob_are_both_checked(server, tmp_path):
    body = make_tar(GUE_FAMILIES, mode="w:xz")
    url = serve(server, "/GUE.tar.xz", body)
    with pytest.raises(SeqpeftInputError, match="sha256 mismatch"):
        fetch_source({"url": url, "git_blob": hashlib.sha1(b"blob %d\0" % len(body) + body).hexdigest(),
                      "sha256": "a" * 64}, tmp_path / "gue")
    with pytest.raises(SeqpeftInputError, match="git_blob 'xyz' is not a 40-character hex digest"):
        fetch_source({"url": url, "git_blob": "xyz"}, tmp_path / "gue")
    with pytest.raises(SeqpeftInputError, match="git_blob is the all-zero placeholder"):
        fetch_source({"url": url, "git_blob": "0" * 40}, tmp_path / "gue")
    assert leftovers(tmp_path) == []


def test_unverified_fetch_only_when_asked_and_reports_the_sha256(server, tmp_path):
    body = make_tar(GUE_FAMILIES, mode="w:xz")
    url = serve(server, "/GUE.tar.xz", body)
    with pytest.raises(SeqpeftInputError, match="no checksum"):
        fetch_source({"url": url}, tmp_path / "gue")
    assert server.hits.get("/GUE.tar.xz") is None
    assert fetch_source({"url": url}, tmp_path / "gue", verify=False) == {"sha256": sha(body)}
    assert (tmp_path / "gue" / "EMP" / "H3" / "test.csv").is_file()


@pytest.mark.parametrize("builder,name", [
    (lambda members: make_tar(members, mode="w:xz"), "../evil.txt"),
    (lambda members: make_tar(members, mode="w:xz"), "GUE/../../evil.txt"),
    (make_zip, "../evil.txt"),
    (make_zip, "/abs/evil.txt"),
    (make_tar, "../evil.txt"),
    (make_tar, "/tmp/evil.txt"),
    (make_tar, "ok/../../evil.txt"),
])
def test_path_traversal_is_refused(tmp_path, builder, name):
    archive = tmp_path / "bad.archive"
    archive.write_bytes(builder({"good/file.txt": b"ok", name: b"evil"}))
    dest = tmp_path / "out" / "data"
    with pytest.raises(SeqpeftInputError, match="outside the target folder"):
        unpack(archive, dest)
    assert leftovers(tmp_path / "out") == []
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "out" / "evil.txt").exists()


def test_tar_symlink_escaping_is_refused(tmp_path):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tf:
        link = tarfile.TarInfo("data/link")
        link.type, link.linkname = tarfile.SYMTYPE, "../../etc/passwd"
        tf.addfile(link)
    archive = tmp_path / "link.tar"
    archive.write_bytes(buffer.getvalue())
    with pytest.raises(SeqpeftInputError, match="points outside"):
        unpack(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_not_an_archive(tmp_path):
    archive = tmp_path / "junk.zip"
    archive.write_bytes(b"<html>not found</html>")
    with pytest.raises(SeqpeftInputError, match=r"junk\.zip.*truncated or corrupt"):
        unpack(archive, tmp_path / "out")
    assert leftovers(tmp_path) == ["junk.zip"]


def test_bad_specs_are_named(tmp_path):
    with pytest.raises(SeqpeftInputError, match=r"no checksum \('sha256' or 'git_blob'\)"):
        fetch_source({"url": "https://example.org/x.zip"}, tmp_path / "x")
    with pytest.raises(SeqpeftInputError, match="not a 64-character hex digest"):
        fetch_source({"url": "https://example.org/x.zip", "sha256": "abc"}, tmp_path / "x")
    with pytest.raises(SeqpeftInputError, match="unknown archive kind 'rar'"):
        fetch_source({"url": "https://example.org/x.rar", "sha256": "a" * 64, "archive": "rar"}, tmp_path / "x")
    with pytest.raises(SeqpeftInputError, match="unsupported url scheme 'gopher'"):
        fetch_source({"url": "gopher://example.org/x.zip", "sha256": "a" * 64}, tmp_path / "x")
    assert leftovers(tmp_path) == []


def test_placeholder_checksum_is_refused_before_any_download(tmp_path):
    from seqpeft.data.download import fetch_source

    spec = {"url": "http://127.0.0.1:9/GUE.zip", "sha256": "0" * 64, "archive": "zip"}
    with pytest.raises(SeqpeftInputError, match="placeholder"):
        fetch_source(spec, tmp_path / "gue")
    assert list(tmp_path.iterdir()) == []
