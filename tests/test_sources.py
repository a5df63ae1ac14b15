"""Every shipped config's data sources name a commit and a checksum (issue #22, point 1).

A GitHub url that names a branch (``.../PEFT-SP/main/...``) breaks when the branch moves or does
not exist (PEFT-SP has no ``main``): the SignalP source was such a url. Offline tests cannot see
that, so the shipped configs are read as text here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from helpers import REPO, shared_path
from seqpeft.data.download import git_blob_of, sha256_of
from seqpeft.preflight.plan import load_config

SHIPPED = sorted([*REPO.glob("config/*.yaml"), *REPO.glob("config/seeds/*.yaml")])
SIGNALP_URL = ("https://raw.githubusercontent.com/shuaizengMU/PEFT-SP/"
               "fedc350b8e0e3e4a6b45f62f5b67cdd920a25e42/data/train_set.fasta")
# raw.githubusercontent.com/OWNER/REPO/REF/..., github.com/OWNER/REPO/{raw,blob,archive}/REF...,
# codeload.github.com/OWNER/REPO/{zip,tar.gz}/REF
_GITHUB_REF = re.compile(
    r"^https?://(?:raw\.githubusercontent\.com/[^/]+/[^/]+/(?:refs/heads/)?(?P<raw>[^/]+)"
    r"|github\.com/[^/]+/[^/]+/(?:raw|blob|archive)/(?:refs/heads/)?(?P<web>[^/?#]+?)(?:\.zip|\.tar\.gz)?(?:[/?#]|$)"
    r"|codeload\.github\.com/[^/]+/[^/]+/(?:zip|tar\.gz)/(?P<load>[^/?#]+))")
COMMIT = re.compile(r"^[0-9a-f]{40}$")


def github_ref(url: str) -> str | None:
    """The branch, tag or commit a GitHub download url names (None: not a GitHub file url)."""
    match = _GITHUB_REF.match(url)
    return next((ref for ref in match.groups() if ref), None) if match else None


def url_sources(path: Path) -> dict[str, dict]:
    config = yaml.safe_load(path.read_text()) or {}
    return {name: spec for name, spec in (config.get("sources") or {}).items()
            if isinstance(spec, dict) and spec.get("url")}


def test_the_checker_sees_branches_and_commits():
    assert github_ref("https://raw.githubusercontent.com/shuaizengMU/PEFT-SP/main/data/SignalP6/train_set.fasta") == "main"
    assert github_ref("https://github.com/o/r/archive/refs/heads/master.zip") == "master"
    assert github_ref("https://codeload.github.com/o/r/tar.gz/dev") == "dev"
    assert github_ref(SIGNALP_URL) == "fedc350b8e0e3e4a6b45f62f5b67cdd920a25e42"
    assert github_ref("https://drive.usercontent.google.com/download?id=x") is None


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(REPO)))
def test_shipped_sources_name_commits_and_checksums(path):
    for name, spec in url_sources(path).items():
        ref = github_ref(spec["url"])
        assert ref is None or COMMIT.match(ref), \
            f"{path.name}: sources.{name} names GitHub ref {ref!r}, not a 40-hex commit: {spec['url']}"
        assert spec.get("sha256") or spec.get("git_blob") or spec.get("unverified_reason"), \
            f"{path.name}: sources.{name} has no sha256/git_blob and no unverified_reason saying why"


def test_shipped_configs_have_github_sources_at_all():
    # the check above must have something to check: the GUE and SignalP urls are GitHub files
    refs = [github_ref(spec["url"]) for path in SHIPPED for spec in url_sources(path).values()]
    assert sum(ref is not None for ref in refs) >= 4


@pytest.mark.parametrize("relative", ["config/config.yaml", "config/seeds/peft_sp.yaml"])
def test_signalp_source_is_the_pinned_file(relative):
    spec = url_sources(REPO / relative)["signalp"]
    assert spec["url"] == SIGNALP_URL
    fasta = shared_path("data/signalp/train_set.fasta")
    assert spec["git_blob"] == git_blob_of(fasta) == "f765ff6d745e945d19f6e080fcba824b048568df"
    assert spec["sha256"] == sha256_of(fasta)


def test_unverified_reason_is_a_documented_key():
    # the schema takes it (the Google Drive alternative of config.yaml carries one) ...
    config, _ = load_config(REPO / "config" / "config.yaml")
    assert config["sources"]["gue_dnabert2"]["unverified_reason"]
    # ... and only as text
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    from seqpeft.config.schema import SCHEMA

    config["sources"]["gue_dnabert2"]["unverified_reason"] = ""
    with pytest.raises(WorkflowError, match="unverified_reason"):
        validate(config, str(SCHEMA))


# Commits seen in public Hugging Face cache paths (../shared/models/layouts/LAYOUTS.md).
PUBLIC_PINS = {
    "facebook/esm2_t30_150M_UR50D": "a695f6045e2e32885fa60af20c13cb35398ce30c",
    "facebook/esm2_t36_3B_UR50D": "476b639933c8baad5ad09a60ac1a87f987b656fc",
    "facebook/opt-125m": "27dcfa74d334bc871f3234de431e71c6eeba5dd6",
    "togethercomputer/LLaMA-2-7B-32K": "46c24bb5aef59722fa7aa6d75e832afd1d64b980",
}


def test_seed_configs_pin_the_public_commits():
    used = {}
    for path in REPO.glob("config/seeds/*.yaml"):
        for spec in (yaml.safe_load(path.read_text()).get("models") or {}).values():
            if spec.get("hub") in PUBLIC_PINS:
                used.setdefault(spec["hub"], set()).add(spec.get("revision"))
    assert used == {hub: {commit} for hub, commit in PUBLIC_PINS.items()}
