"""``seqpeft plan``: what a full run asks for before it starts.

Per model x method: the number of fine-tuning jobs, the GPUs (count and type) and the hours each
asks for (the first attempt's ``runtime`` from the model's size, ``resources.sizes`` /
the schema's ``resources.sizes`` table; a retry asks for 2x, then 3x), the GPU-hours these add
up to, and the disk their artifacts take; then the totals and the unpinned entries. Tuning trial
jobs (methods with ``training.hpo``) are counted the same way.

Disk is an estimate from the parameter count (4 bytes a parameter, the float32 the runs save):
full fine-tuning saves the whole backbone per run; ``frozen`` only the head; other methods an
adapter, counted as 1% of the model (LoRA r=8 on these models is 0.3-1%; prompt methods far less).
The parameter count is read from a prepared model directory if there is one, else from the size
in the repository name (``-117M``, ``-1B``); ``?`` when neither says.

Where ``seqpeft rehearse`` has written ``rehearsal.csv`` in the config's results folder, each row
also shows the measured estimate: every rehearsed job's extrapolated time (its measured seconds
per step x the real number of steps, rows x epochs / batch size, plus its evaluations and its
start/load/save overhead, without early stopping: ``seqpeft.preflight.rehearse``), summed, beside the limits
asked for. Jobs without an ok rehearsal are counted at their limit and said so.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

BYTES_PER_PARAM = 4
ADAPTER_FRACTION = 0.01
_SIZE_IN_NAME = re.compile(r"(?<![A-Za-z0-9.])(\d+(?:\.\d+)?)([MmBb])(?![A-Za-z])")


@dataclass
class Row:
    model: str
    method: str
    jobs: int
    gpus: int
    gpu_model: str
    hours: float
    disk_bytes: float | None
    # rehearsal.csv: the extrapolated seconds of each job of the row that rehearsed ok
    estimated_seconds: list[float] = field(default_factory=list)
    rehearsed: bool = False  # the row's jobs are in rehearsal.csv (tuning trials are not)

    @property
    def gpu_hours(self) -> float:
        return self.jobs * self.gpus * self.hours

    @property
    def estimated_job_hours(self) -> float:
        """Measured hours of the rehearsed jobs, the limit for the others."""
        unmeasured = self.jobs - len(self.estimated_seconds)
        return sum(self.estimated_seconds) / 3600 + unmeasured * self.hours

    @property
    def estimated_gpu_hours(self) -> float:
        return self.estimated_job_hours * self.gpus


def load_config(configfile: Path) -> tuple[dict, Path | None]:
    """The config as the workflow sees it: pins.yaml beside it applied, schema defaults filled in,
    cross-references checked."""
    from seqpeft.preflight.read import read_config

    return read_config(configfile)


def parameter_count(config: dict, model: str) -> float | None:
    """Parameters of a model: from its prepared directory's weights, else its repository name."""
    from seqpeft.config.paths import model_dir

    spec = config["models"][model] or {}
    directory = Path(model_dir(config, model))
    weights = list(directory.glob("*.safetensors")) if directory.is_dir() else []
    if weights:
        import json
        import struct

        total = 0
        for path in weights:  # count elements from the safetensors header, without loading
            with open(path, "rb") as handle:
                header = json.loads(handle.read(struct.unpack("<Q", handle.read(8))[0]))
            for name, entry in header.items():
                if name != "__metadata__":
                    count = 1
                    for dim in entry["shape"]:
                        count *= dim
                    total += count
        return float(total)
    name = str(spec.get("hub") or spec.get("path") or "")
    match = _SIZE_IN_NAME.search(name.rsplit("/", 1)[-1])
    if not match:
        return None
    return float(match.group(1)) * (1e9 if match.group(2).lower() == "b" else 1e6)


def profile_gpu_model(profile: Path | None, rule: str = "finetune") -> str:
    """gpu_model a profile sets for a rule (set-resources) or for every job (default-resources)."""
    if profile is None:
        return ""
    import yaml

    path = profile / "config.yaml" if profile.is_dir() else profile
    data = yaml.safe_load(path.read_text()) or {}
    per_rule = ((data.get("set-resources") or {}).get(rule) or {}).get("gpu_model")
    default = (data.get("default-resources") or {})
    if isinstance(default, list):  # KEY=VALUE list form
        default = dict(item.split("=", 1) for item in default if "=" in item)
    return str(per_rule or default.get("gpu_model") or "")


def rehearsal_estimates(config: dict) -> dict[tuple[str, str, str, str], float] | None:
    """(task, model, method, partition) -> extrapolated seconds of each job whose rehearsal (its
    own, or its stand-in's: ``config.jobs.rehearsal_stand_ins``) was ok, from the config's
    ``rehearsal.csv``; None where there is none."""
    import csv

    from seqpeft.config.jobs import rehearsal_stand_ins
    from seqpeft.config.paths import rehearsal_table

    path = Path(rehearsal_table(config))
    if not path.is_file():
        return None
    with open(path, newline="") as handle:
        measured = {(row["task"], row["model"], row["method"], row["partition"]): float(row["estimated_seconds"])
                    for row in csv.DictReader(handle) if row["outcome"] == "ok"}
    estimates = dict(measured)
    for run, stand_in in rehearsal_stand_ins(config).items():
        key = (stand_in.task, stand_in.model, stand_in.method, stand_in.partition)
        if key in measured:
            estimates.setdefault((run.task, run.model, run.method, run.partition), measured[key])
    return estimates


def plan_rows(config: dict, profile: Path | None = None) -> list[Row]:
    from seqpeft.preflight.check import size_resources
    from seqpeft.config.jobs import expand_runs, method_spec, training_for
    from seqpeft.config.tune_settings import study_settings

    counts: dict[tuple[str, str], int] = defaultdict(int)
    estimates = rehearsal_estimates(config)
    measured: dict[tuple[str, str], list[float]] = defaultdict(list)
    for run in expand_runs(config):
        counts[(run.model, run.method)] += 1
        if estimates is not None and (run.task, run.model, run.method, run.partition) in estimates:
            measured[(run.model, run.method)].append(estimates[(run.task, run.model, run.method, run.partition)])
    fallback_gpu_model = profile_gpu_model(profile)
    rows = []
    for (model, method), jobs in counts.items():
        resources = size_resources(config, model)
        gpus = int(resources["gpu"])
        gpu_model = str(resources.get("gpu_model") or fallback_gpu_model or ("any" if gpus else "-"))
        params = parameter_count(config, model)
        registry = method_spec(config, method).get("method")
        if params is None:
            per_run = None
        elif registry == "full":
            per_run = params * BYTES_PER_PARAM
        elif registry == "frozen":
            per_run = 0.0
        else:
            per_run = params * BYTES_PER_PARAM * ADAPTER_FRACTION
        rows.append(Row(model, method, jobs, gpus, gpu_model, int(resources["runtime"]) / 60,
                        None if per_run is None else per_run * jobs, measured[(model, method)], estimates is not None))
        if training_for(config, method).get("hpo"):
            studies = len({(r.task, r.partition) for r in expand_runs(config) if (r.model, r.method) == (model, method)})
            # one job per trial, each at most a fine-tuning job's time
            trial_jobs = studies * study_settings(config, method).trials
            rows.append(Row(model, f"{method} (tuning)", trial_jobs, gpus, gpu_model,
                            int(resources["runtime"]) / 60, 0.0))
    return rows


def _gb(value: float | None) -> str:
    return "?" if value is None else f"{value / 1e9:,.1f} GB"


def format_plan(config: dict, rows: list[Row], pins: Path | None, configfile: Path) -> str:
    from seqpeft.config.paths import rehearsal_table
    from seqpeft.config.pins import unpinned_entries
    from seqpeft.config.schema import with_defaults

    lines = [f"seqpeft plan for {configfile}" + (f" (pins from {pins})" if pins else " (no pins.yaml beside it)"), ""]
    rehearsed = any(row.rehearsed for row in rows)
    header = f"{'model':<24} {'method':<22} {'jobs':>6} {'GPUs/job':>8} {'GPU type':<10} {'h/job':>6} {'GPU-h':>10} {'disk':>11}"
    if rehearsed:
        header += f" {'measured':>9} {'est. h/job':>10} {'est. GPU-h':>10}"
    lines += [header, "-" * len(header)]
    if rehearsed:
        lines.insert(-2, "h/job and GPU-h: the limits asked for (runtime); measured, est. h/job and est. GPU-h: "
                         "measured by the rehearsal")
    for row in rows:
        line = (f"{row.model:<24} {row.method:<22} {row.jobs:>6} {row.gpus:>8} {row.gpu_model:<10} {row.hours:>6.1f} "
                f"{row.gpu_hours:>10,.0f} {_gb(row.disk_bytes):>11}")
        if rehearsed:
            line += (f" {f'{len(row.estimated_seconds)}/{row.jobs}':>9} {row.estimated_job_hours / row.jobs:>10.3f} "
                     f"{row.estimated_gpu_hours:>10,.1f}" if row.rehearsed else f" {'-':>9} {'-':>10} {'-':>10}")
        lines.append(line)
    jobs = sum(row.jobs for row in rows)
    gpu_jobs = sum(row.jobs for row in rows if row.gpus)
    gpu_hours = sum(row.gpu_hours for row in rows)
    known = [row.disk_bytes for row in rows if row.disk_bytes is not None]
    unknown = [f"{row.model}/{row.method}" for row in rows if row.disk_bytes is None]
    model_bytes = [parameter_count(config, m) for m in {row.model for row in rows}]
    lines += ["-" * len(header),
              f"total: {jobs} jobs ({gpu_jobs} on GPUs), {gpu_hours:,.0f} GPU-hours asked for (first attempts' runtime "
              "limits, an upper bound; a retry asks for 2x, then 3x)"]
    if rehearsed:
        measured = sum(len(row.estimated_seconds) for row in rows)
        limited = [row for row in rows if len(row.estimated_seconds) < row.jobs]
        estimate = sum(row.estimated_gpu_hours if row.rehearsed else row.gpu_hours for row in rows)
        job_hours = sum(row.estimated_job_hours if row.rehearsed else row.jobs * row.hours for row in rows)
        lines.append(f"estimate: {estimate:,.1f} GPU-hours ({job_hours:,.2f} job-hours) measured by `seqpeft rehearse` "
                     f"({rehearsal_table(config)}) for {measured} of {jobs} jobs: each one's measured seconds per step "
                     "x its real steps (rows x epochs / batch size), evaluations and start-up included, without early "
                     "stopping" + (f"; the other {jobs - measured} (not rehearsed, or not ok{', tuning trials' if any(not r.rehearsed for r in rows) else ''}) "
                                   "at their limits" if limited else ""))
        if with_defaults(config.get("rehearsal"), "rehearsal")["partitions"] == "first":
            lines.append("          (rehearsal.partitions: first: a job of another partition counts at the measurement "
                         "of its task x model x method's first partition)")
    lines += _cost_lines(config, rows, rehearsed)
    lines += [f"disk: {_gb(sum(known))} for checkpoints/adapters (full fine-tuning: float32 backbone per run; adapters "
              f"counted as {ADAPTER_FRACTION:.0%} of the model)" + (f"; unknown for {', '.join(unknown)}" if unknown else ""),
              f"      + {_gb(sum(b * BYTES_PER_PARAM for b in model_bytes if b))} for the prepared models (float32 upper bound)"]
    unpinned = unpinned_entries(config)
    lines.append("")
    if unpinned:
        lines.append(f"unpinned ({len(unpinned)}): their jobs refuse to run until pinned (`seqpeft pin`) "
                     "or allow_unpinned: true")
        lines += [f"  {entry.line()}" for entry in unpinned]
    else:
        lines.append("every model and source the experiments use is pinned")
    return "\n".join(lines)


def _cost_lines(config: dict, rows: list[Row], rehearsed: bool) -> list[str]:
    """``resources.gpu_hour_price`` x GPU-hours per GPU type: the limits' cost, and the rehearsal's
    estimate's where there is one; GPU types without a price (and no ``any``) are named."""
    from seqpeft.config.schema import with_defaults

    resources = with_defaults(config.get("resources"), "resources")
    prices = {str(name).lower(): float(price) for name, price in (resources["gpu_hour_price"] or {}).items()}
    if not prices:
        return []
    unit = f" {resources['price_unit']}" if resources["price_unit"] else ""
    limits = estimate = 0.0
    unpriced = set()
    for row in rows:
        if not row.gpus:
            continue
        price = prices.get(row.gpu_model.lower(), prices.get("any"))
        if price is None:
            unpriced.add(row.gpu_model)
            continue
        limits += row.gpu_hours * price
        estimate += (row.estimated_gpu_hours if row.rehearsed else row.gpu_hours) * price
    listed = ", ".join(f"{name} {price:g}" for name, price in prices.items())
    line = f"cost: {limits:,.2f}{unit} at the limits asked for"
    if rehearsed:
        line += f", {estimate:,.2f}{unit} at the rehearsal's estimate"
    line += f" (resources.gpu_hour_price per GPU-hour: {listed})"
    if unpriced:
        line += f"; no price for GPU type(s) {', '.join(sorted(unpriced))}, left out (add them or `any`)"
    return [line]


def print_plan(configfile: Path, profile: Path | None = None) -> str:
    config, pins = load_config(configfile)
    text = format_plan(config, plan_rows(config, profile), pins, configfile)
    print(text)
    return text
