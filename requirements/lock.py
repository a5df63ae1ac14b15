"""Write the environment locks from pyproject.toml: ``make lock`` runs this.

- ``cpu.lock``: ``pip freeze`` of a fresh venv holding CPU torch + seqpeft[dev,reports] (what
  ``make install`` and CI install). torch's local version label (``+cpu``) is dropped: ``torch==X``
  matches the CPU wheel wherever the index offers one (the PyTorch CPU index, a wheel folder).
- ``gpu.lock``: the same packages resolved (pip's dry-run report, no download) with the default
  Linux x86_64 torch wheel from PyPI, i.e. its CUDA build and the nvidia-* libraries it needs.

Both are for the Python that runs this script; each file says which.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HERE = REPO / "requirements"
EXTRAS = ".[dev,reports]"


def _run(*command: str, **kwargs) -> str:
    return subprocess.run(command, check=True, text=True, capture_output=True, **kwargs).stdout


def _header(kind: str, how: str) -> str:
    python = ".".join(platform.python_version_tuple()[:2])
    return (f"# {kind} lock of seqpeft's environment (Python {python}, {platform.system()} {platform.machine()}), "
            f"written by `make lock` from pyproject.toml; do not edit.\n# {how}\n")


def _write(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def cpu_lock(torch: str) -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        venv = Path(tmp) / "venv"
        _run(sys.executable, "-m", "venv", str(venv))
        pip = str(venv / "bin" / "pip")
        _run(pip, "install", "--quiet", "--upgrade", "pip")
        _run(pip, "install", "--quiet", torch, "-e", EXTRAS, cwd=REPO)
        frozen = _run(pip, "freeze", "--exclude-editable").splitlines()
    return sorted((re.sub(r"^(torch==[^+]+)\+\S+$", r"\1", line) for line in frozen if line and not line.startswith("#")),
                  key=str.lower)


def gpu_lock(cpu_pins: list[str]) -> list[str]:
    shared = [pin for pin in cpu_pins if not pin.lower().startswith("torch==")]
    torch = next(pin for pin in cpu_pins if pin.lower().startswith("torch=="))
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        constraints = Path(tmp) / "constraints.txt"
        constraints.write_text("\n".join(shared) + "\n")
        # --isolated: PyPI alone, no local wheel folders or caps that would pick the CPU build.
        env = {key: value for key, value in os.environ.items() if not key.startswith("PIP_")}
        _run(sys.executable, "-m", "pip", "install", "--isolated", "--dry-run", "--ignore-installed", "--quiet",
             "--report", str(report), "-c", str(constraints), torch, "-e", EXTRAS, cwd=REPO, env=env)
        installed = json.loads(report.read_text())["install"]
    return sorted((f"{item['metadata']['name']}=={item['metadata']['version']}" for item in installed
                   if item["metadata"]["name"].lower() != "seqpeft"), key=str.lower)


def main() -> None:
    torch = sys.argv[1] if len(sys.argv) > 1 else "torch==2.13.0"
    cpu = cpu_lock(torch)
    _write(HERE / "cpu.lock", _header("CPU", "`make install` installs exactly these; tests/test_lock.py checks the venv against it.")
           + "\n".join(cpu) + "\n")
    gpu = gpu_lock(cpu)
    _write(HERE / "gpu.lock", _header("GPU (CUDA torch from PyPI)", "pip install -r requirements/gpu.lock -e '.[reports]' (see README, GPU install).")
           + "\n".join(gpu) + "\n")
    print(f"requirements/cpu.lock: {len(cpu)} packages; requirements/gpu.lock: {len(gpu)} packages")


if __name__ == "__main__":
    main()
