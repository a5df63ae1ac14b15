"""`make install` gives what CI tested: the venv holds exactly the packages of requirements/cpu.lock."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _pins(lines: list[str]) -> dict[str, str]:
    pins = {}
    for line in lines:
        line = line.strip()
        if not line or line.startswith(("#", "-e ")):
            continue  # comments, and the editable seqpeft itself
        name, version = line.split("==")
        # torch's local label (+cpu, +cu130) names the build, which the index decides, not the release
        pins[re.sub(r"[-_.]+", "-", name).lower()] = version.split("+")[0]
    return pins


def test_installed_environment_equals_the_cpu_lock():
    frozen = subprocess.run([sys.executable, "-m", "pip", "freeze"], capture_output=True, text=True, check=True).stdout
    locked = _pins((REPO / "requirements" / "cpu.lock").read_text().splitlines())
    installed = _pins(frozen.splitlines())
    assert "torch" in locked and "transformers" in locked and "snakemake" in locked
    differ = {name: (locked.get(name), installed.get(name)) for name in locked.keys() | installed.keys()
              if locked.get(name) != installed.get(name)}
    assert not differ, f"(lock, installed) per package: {differ}; run `make lock` after changing pyproject.toml, then reinstall"


def test_gpu_lock_pins_the_same_packages_with_a_cuda_torch():
    cpu = _pins((REPO / "requirements" / "cpu.lock").read_text().splitlines())
    gpu = _pins((REPO / "requirements" / "gpu.lock").read_text().splitlines())
    assert gpu["torch"] == cpu["torch"]
    assert any(name.startswith("nvidia-") for name in gpu), "the GPU lock must carry torch's CUDA libraries"
    shared = {name for name in cpu if name in gpu}
    assert {name: (cpu[name], gpu[name]) for name in shared if cpu[name] != gpu[name]} == {}
    assert set(cpu) - set(gpu) == set(), "every CPU package is in the GPU environment too"
