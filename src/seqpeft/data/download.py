"""Fetch pinned data sources: download, verify (sha256 or git blob id), unpack, publish atomically.

Why this shape: workflow outputs must appear complete or not at all, otherwise a killed job or a
flaky mirror leaves a half-written data set that the next run trusts. So every step writes into a
temporary path beside its destination and finishes with ``os.replace``; every failure removes what
it wrote. Network hiccups are retried; a checksum mismatch is not (the bytes are wrong, asking again
will not fix the config or the mirror).

A source is verified by ``sha256`` (the digest of the file) and/or ``git_blob`` (the id git gives
the file: SHA-1 of ``blob <size>\0`` + bytes), so a file served from a git repository can be
checked against the id the repository itself publishes (``git hash-object FILE``,
``git ls-tree COMMIT PATH``).

Standard library only: this module is imported when the workflow is parsed.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import posixpath
import shutil
import socket
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from seqpeft.util.errors import SeqpeftInputError

CHUNK = 1 << 20
ARCHIVE_KINDS = ("zip", "tar", "tar.gz", "tar.bz2", "tar.xz", "none")
# Checksum kinds a source may give, with their hex length.
CHECKSUM_KINDS = {"sha256": 64, "git_blob": 40}
_SCHEMES = ("http", "https", "ftp", "file")
_HEX = set("0123456789abcdef")
# Errors worth asking the server again for: the connection, not the content, was at fault.
_TRANSIENT = (urllib.error.URLError, http.client.HTTPException, ConnectionError, socket.timeout, TimeoutError)
# Errors a broken archive raises while being read or extracted.
_ARCHIVE_ERRORS = (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, OSError)
_JUNK_TOP_LEVEL = {"__MACOSX", ".DS_Store"}


class _Incomplete(Exception):
    """The body ended before its Content-Length: retry, the server dropped the connection."""


def sha256_of(path: str | Path) -> str:
    """Hex sha256 of a file, read in chunks so multi-GB archives need no memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def git_blob_of(path: str | Path) -> str:
    """The git blob id of a file (what ``git hash-object FILE`` prints): SHA-1 of the header
    ``blob <size>\0`` followed by the bytes."""
    path = Path(path)
    digest = hashlib.sha1(b"blob %d\0" % path.stat().st_size)  # noqa: S324 - git's object id, not security
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


_DIGEST_OF = {"sha256": sha256_of, "git_blob": git_blob_of}


def checksums_of(path: str | Path, kinds=tuple(CHECKSUM_KINDS)) -> dict[str, str]:
    """The named checksums of a file, e.g. ``{"sha256": ..., "git_blob": ...}``."""
    return {kind: _DIGEST_OF[kind](path) for kind in kinds}


def source_checksums(spec: dict) -> dict[str, str]:
    """The checksums a source entry gives (``sha256`` and/or ``git_blob``), unchecked."""
    return {kind: str(spec[kind]) for kind in CHECKSUM_KINDS if isinstance(spec, dict) and spec.get(kind)}


# ---------------------------------------------------------------------------------------------
# download


def download(url: str, dest: str | Path, sha256: str | None = None, retries: int = 3, timeout: float = 60,
             backoff: float = 1.0, *, git_blob: str | None = None, verify: bool = True) -> Path:
    """Download ``url`` to ``dest`` if its checksums match; atomic, with retries on network errors.

    ``sha256`` and/or ``git_blob`` (the git object id of the file) are verified; at least one is
    required unless ``verify`` is False (``seqpeft pin`` and ``allow_unpinned`` runs, which record
    the sha256 of what they got instead). ``retries`` is the number of further attempts after the
    first fails (waiting ``backoff * 2**k`` seconds before attempt k+1). If ``dest`` already holds
    the expected bytes nothing is fetched. Schemes: http(s)://, ftp:// and file:// (a local
    mirror; its errors are not retried).
    """
    dest = Path(dest)
    given = {kind: value for kind, value in (("sha256", sha256), ("git_blob", git_blob)) if value}
    if not given and verify:
        raise SeqpeftInputError(url, "no checksum given, so the download cannot be verified.",
                                fix="set 'sha256' or 'git_blob' for this source (or run `seqpeft pin`).")
    expected = {kind: _check_digest(url, value, kind) for kind, value in given.items()}
    _check_scheme(url)
    if expected and dest.is_file() and checksums_of(dest, expected) == expected:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    last_error: BaseException | None = None
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(backoff * 2 ** (attempt - 1))
        try:
            return _download_once(url, dest, expected, timeout)
        except urllib.error.HTTPError as err:
            if not _retryable_status(err.code):
                raise SeqpeftInputError(url, f"server answered HTTP {err.code} ({err.reason}).",
                                        fix="check the url in the config (moved or private file?).") from None
            last_error = err
        except (_Incomplete, *_TRANSIENT) as err:
            if url.startswith("file:"):
                raise SeqpeftInputError(url, f"cannot read local file ({_reason(err)}).",
                                        fix="check the file:// path in the config.") from None
            last_error = err
    raise SeqpeftInputError(url, f"download failed after {retries + 1} attempt(s): {_reason(last_error)}.",
                            fix=f"check the network and the url, or fetch it by hand to {dest} "
                                "(its checksum is still verified) or use a 'local:' path.")


_HOW = {"sha256": "sha256sum FILE", "git_blob": "git hash-object FILE, or git ls-tree COMMIT PATH"}


def _check_digest(url: str, value: str, kind: str = "sha256") -> str:
    digest = str(value or "").strip().lower()
    length = CHECKSUM_KINDS[kind]
    if len(digest) != length or not set(digest) <= _HEX:
        raise SeqpeftInputError(url, f"{kind} {value!r} is not a {length}-character hex digest.",
                                fix=f"set '{kind}' in the config to the file's digest ({_HOW[kind]}).")
    if set(digest) == {"0"}:
        # The placeholder of a source nobody has recorded yet: refuse before fetching gigabytes.
        raise SeqpeftInputError(url, f"the configured {kind} is the all-zero placeholder, so the download cannot be verified.",
                                fix="remove it and run `seqpeft pin`, record the digest of a trusted copy "
                                    f"({_HOW[kind]}) in the config, or use 'local:' with pre-staged data.")
    return digest


def _check_scheme(url: str) -> None:
    scheme = urllib.parse.urlparse(url).scheme.lower()
    if scheme not in _SCHEMES:
        raise SeqpeftInputError(url, f"unsupported url scheme {scheme or '(none)'!r}.",
                                fix=f"use one of {', '.join(s + '://' for s in _SCHEMES)}, or a 'local:' path.")


def _retryable_status(code: int) -> bool:
    return code == 408 or code == 429 or code >= 500


def _reason(err: BaseException | None) -> str:
    if isinstance(err, urllib.error.URLError) and not isinstance(err, urllib.error.HTTPError):
        return str(err.reason)
    return f"{type(err).__name__}: {err}" if err is not None else "unknown error"


def _download_once(url: str, dest: Path, expected: dict[str, str], timeout: float) -> Path:
    """One attempt: stream into a temp file beside ``dest``; on any failure the temp file goes."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            received = 0
            for chunk in iter(lambda: response.read(CHUNK), b""):
                out.write(chunk)
                digest.update(chunk)
                received += len(chunk)
        # http.client does not raise when a sized body ends early, so check it ourselves.
        if length is not None and length.isdigit() and received < int(length):
            raise _Incomplete(f"got {received} of {length} bytes")
        actual = {"sha256": digest.hexdigest()}
        if "git_blob" in expected:
            actual["git_blob"] = git_blob_of(tmp)
        for kind, value in expected.items():
            if actual[kind] != value:
                raise SeqpeftInputError(
                    url, f"{kind} mismatch: expected {value}, got {actual[kind]}.",
                    fix=f"if the source legitimately changed, update '{kind}' in the config; otherwise the mirror "
                        "serves different bytes: use another mirror.")
        os.replace(tmp, dest)
        return dest
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------------------------------------
# unpack


def unpack(archive: str | Path, dest_dir: str | Path) -> Path:
    """Extract a zip or tar(.gz/.bz2/.xz) archive into ``dest_dir``, atomically and safely.

    The format is sniffed from the content (names lie). Members with absolute paths, ``..``
    components or links leading out are refused. A single top-level folder (``GUE/...``) is stripped
    so ``dest_dir`` holds its contents. An existing ``dest_dir`` is replaced.
    """
    archive, dest_dir = Path(archive), Path(dest_dir)
    if not archive.is_file():
        raise SeqpeftInputError(archive, "archive not found.", fix="download it first (check the path).")
    dest_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest_dir.name}.", suffix=".unpack", dir=dest_dir.parent))
    try:
        _extract(archive, tmp)
        _publish(_content_root(tmp), dest_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest_dir


class CorruptArchive(SeqpeftInputError):
    """An archive that cannot be read to its end (``fetch_source`` words it for a download)."""


def _corrupt(archive: Path, detail: str) -> SeqpeftInputError:
    return CorruptArchive(archive, f"archive is truncated or corrupt ({detail}).",
                          fix=f"delete {archive} and download it again (check its sha256 in the config).")


def _extract(archive: Path, into: Path) -> None:
    try:
        if zipfile.is_zipfile(archive):
            _extract_zip(archive, into)
        elif tarfile.is_tarfile(archive):
            _extract_tar(archive, into)
        else:
            raise _corrupt(archive, "not a readable zip or tar archive")
    except SeqpeftInputError:
        raise
    except _ARCHIVE_ERRORS as err:
        raise _corrupt(archive, f"{type(err).__name__}: {err}") from None


def _check_member(archive: Path, name: str) -> None:
    """Refuse path traversal: an archive may only write below the directory it is unpacked into."""
    normal = name.replace("\\", "/")
    parts = PurePosixPath(normal).parts
    if normal.startswith("/") or (len(normal) > 1 and normal[1] == ":") or ".." in parts:
        raise SeqpeftInputError(archive, f"archive member {name!r} would be written outside the target folder.",
                                fix="refusing to unpack (absolute path or '..'): the archive is unsafe; "
                                    "get it from a trusted source.", record=name)


def _extract_zip(archive: Path, into: Path) -> None:
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            _check_member(archive, info.filename)
        bad = zf.testzip()  # CRC check of every member: catches damage inside the data
        if bad is not None:
            raise _corrupt(archive, f"member {bad!r} fails its CRC check")
        zf.extractall(into)


def _extract_tar(archive: Path, into: Path) -> None:
    with tarfile.open(archive, "r:*") as tf:
        members = tf.getmembers()  # reads the whole stream: a truncated archive fails here
        for member in members:
            _check_member(archive, member.name)
            if member.issym() or member.islnk():
                _check_link(archive, member)
            elif not (member.isfile() or member.isdir()):
                raise SeqpeftInputError(archive, f"archive member {member.name!r} is a device or special file.",
                                        fix="refusing to unpack: data archives hold only files and folders.",
                                        record=member.name)
        tf.extractall(into, members=members, filter="data")


def _check_link(archive: Path, member: tarfile.TarInfo) -> None:
    target = member.linkname.replace("\\", "/")
    base = posixpath.dirname(member.name) if member.issym() else ""
    resolved = posixpath.normpath(posixpath.join(base, target))
    if target.startswith("/") or resolved == ".." or resolved.startswith("../"):
        raise SeqpeftInputError(archive, f"archive link {member.name!r} -> {member.linkname!r} points outside the "
                                "target folder.", fix="refusing to unpack: the archive is unsafe.",
                                record=member.name)


def _content_root(tmp: Path) -> Path:
    """The folder whose contents become ``dest_dir``: strip one lone top-level folder."""
    for entry in list(tmp.iterdir()):
        # macOS archivers add __MACOSX/, .DS_Store and AppleDouble "._NAME" files beside the data
        if entry.name in _JUNK_TOP_LEVEL or entry.name.startswith("._"):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink()
    entries = list(tmp.iterdir())
    if len(entries) == 1 and entries[0].is_dir() and not entries[0].is_symlink():
        return entries[0]
    return tmp


def _publish(source: Path, dest_dir: Path) -> None:
    if dest_dir.is_symlink() or dest_dir.is_file():
        dest_dir.unlink()
    elif dest_dir.exists():
        shutil.rmtree(dest_dir)
    os.replace(source, dest_dir)


# ---------------------------------------------------------------------------------------------
# fetch_source


def fetch_source(spec: dict, out_dir: str | Path, verify: bool = True, record: str | None = None) -> dict[str, str]:
    """Materialise one configured source into ``out_dir`` (complete or not at all).

    ``spec``: ``url``, ``sha256`` and/or ``git_blob``, ``archive`` (``zip``, ``tar``, ``tar.gz``,
    ``tar.bz2``, ``tar.xz`` or ``none``; if absent, guessed from the url's extension; the format
    itself is read from the content) and for ``none`` an optional ``filename`` (default: the url's
    basename). Everything is staged in a temp folder beside ``out_dir`` and renamed into place at
    the end. ``verify=False`` accepts a source without a checksum (an ``allow_unpinned`` run).
    Returns the checksums of the downloaded file (``sha256`` always); ``record`` names a JSON file
    written into ``out_dir`` with the url and those checksums (what an unpinned run used).
    """
    out_dir = Path(out_dir)
    url = _require_key(spec, "url")
    given = source_checksums(spec)
    if not given and verify:
        raise SeqpeftInputError(None, f"data source {spec!r} has no checksum ('sha256' or 'git_blob').",
                                fix="run `seqpeft pin` to record the sha256 of what it downloads (review it), "
                                    "or set allow_unpinned: true in the config.")
    kind = _archive_kind(spec, url)
    for name, value in given.items():
        _check_digest(url, value, name)
    _check_scheme(url)
    filename = _target_filename(spec, url)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".fetch", dir=out_dir.parent))
    try:
        downloaded = download(url, staging / f"download-{filename}", given.get("sha256"),
                              git_blob=given.get("git_blob"), verify=verify)
        digests = {"sha256": sha256_of(downloaded), **given}
        content = staging / "content"
        if kind == "none":
            content.mkdir()
            os.replace(downloaded, content / filename)
        else:
            try:
                unpack(downloaded, content)
            except CorruptArchive as error:  # its temporary copy is gone: the fix is about the source
                named = " and ".join(f"{kind} {value}" for kind, value in given.items())
                raise SeqpeftInputError(url, f"the downloaded {error.problem} Nothing was unpacked or kept.", fix=(
                    f"the file matches the configured {named}, so the source itself is broken (pinned from an "
                    "incomplete copy?): check the url and its checksum." if given else
                    "the download was incomplete: run the job again.")) from None
        if record:
            (content / record).write_text(json.dumps({"url": url, **digests}, indent=1, sort_keys=True) + "\n")
        _publish(content, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return digests


def _require_key(spec: dict, key: str) -> str:
    value = spec.get(key) if isinstance(spec, dict) else None
    if not value:
        raise SeqpeftInputError(None, f"data source {spec!r} has no {key!r}.",
                                fix=f"give every downloaded source 'url', 'sha256' or 'git_blob', and 'archive' ({'/'.join(ARCHIVE_KINDS)}).")
    return str(value)


def _archive_kind(spec: dict, url: str) -> str:
    kind = spec.get("archive")
    if kind is None:
        path = urllib.parse.urlparse(url).path.lower()
        if path.endswith(".zip"):
            return "zip"
        for suffix, guessed in ((".tar.gz", "tar.gz"), (".tgz", "tar.gz"), (".tar.bz2", "tar.bz2"),
                                (".tar.xz", "tar.xz"), (".txz", "tar.xz"), (".tar", "tar")):
            if path.endswith(suffix):
                return guessed
        return "none"
    if kind not in ARCHIVE_KINDS:
        raise SeqpeftInputError(url, f"unknown archive kind {kind!r}.", fix=f"set 'archive' to one of {', '.join(ARCHIVE_KINDS)}.")
    return str(kind)


def _target_filename(spec: dict, url: str) -> str:
    name = spec.get("filename") or posixpath.basename(urllib.parse.unquote(urllib.parse.urlparse(url).path))
    if not name or name in (".", "..") or "/" in name or "\\" in name:
        raise SeqpeftInputError(url, f"cannot use {name!r} as the downloaded file's name.",
                                fix="set 'filename' in the source to a plain file name.")
    return str(name)
