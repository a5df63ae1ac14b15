"""The ``seqpeft`` command: what people do outside the DAG (evaluate, predict, validate, list, view-report, pin, plan)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from seqpeft.errors import SeqpeftInputError


def _evaluate(args: argparse.Namespace) -> int:
    from seqpeft.evaluate import evaluate_file, load_predictor
    from seqpeft.atomic import write_json_atomic

    model, adapter = _model_args(args)
    data = _input_file(args.data, "--data")
    predictor = load_predictor(model, adapter, args.max_length)
    metrics = evaluate_file(predictor, data, args.partition)
    table = metrics.pop("signalp", None)
    for name, value in metrics.items():
        print(f"{name:>14}: {value:.4f}")
    if table is not None:
        _print_signalp_table(table)
    if args.output:
        write_json_atomic(Path(args.output), {"data": str(args.data), "model": str(args.model),
                                              "adapter": args.adapter, **metrics,
                                              **({"signalp": table} if table is not None else {})})
    return 0


def _print_signalp_table(table: dict) -> None:
    """MCC1 (SP type vs no SP, in the kingdom) and MCC2 (type vs every other protein) per kingdom x type."""
    import math

    print("\nper kingdom x SP type (MCC1: type vs proteins without SP; MCC2: type vs all other proteins; - = undefined)")
    print(f"{'kingdom':<14}{'type':<10}{'MCC1':>8}{'MCC2':>8}")
    for kingdom, types in table.items():
        for sp_type, cell in types.items():
            values = [cell.get(key, math.nan) for key in ("mcc1", "mcc2")]
            shown = ["-" if value is None or math.isnan(value) else f"{value:.4f}" for value in values]
            print(f"{kingdom:<14}{sp_type:<10}{shown[0]:>8}{shown[1]:>8}")


def _predict(args: argparse.Namespace) -> int:
    from seqpeft.evaluate import load_predictor, predict_file

    model, adapter = _model_args(args)
    source = _input_file(args.input, "--input")
    predictor = load_predictor(model, adapter, args.max_length)
    count = predict_file(predictor, source, Path(args.output))
    print(f"wrote {count} predictions to {args.output}")
    return 0


def _input_file(value: str, option: str) -> Path:
    """A data file named on the command line: a missing one is the user's path, not the config's."""
    path = Path(value)
    if not path.exists():
        raise SeqpeftInputError(path, "file not found.", fix=f"check the path you passed to {option} "
                                f"(relative paths start at {Path.cwd()}).")
    if not path.is_file():
        raise SeqpeftInputError(path, "is a directory, not a data file.", fix=f"pass the file itself to {option}.")
    return path


def _model_dir(value: str, option: str) -> Path:
    """A run directory instead of its ``artifacts/``, or a missing path, named with the CLI fix."""
    path = Path(value)
    if not path.exists():
        raise SeqpeftInputError(path, "does not exist.", fix=f"check the path you passed to {option}.")
    if not path.is_dir():
        raise SeqpeftInputError(path, "is a file, not a directory.",
                                fix=f"pass a run's artifacts/ directory or a model checkpoint directory to {option}.")
    if not (path / "seqpeft.json").is_file() and (path / "artifacts" / "seqpeft.json").is_file():
        raise SeqpeftInputError(path, "is a run directory; the trained model is in its artifacts/ subdirectory.",
                                fix=f"pass {option} {path / 'artifacts'}")
    return path


def _model_args(args: argparse.Namespace) -> tuple[Path, Path | None]:
    model = _model_dir(args.model, "--model")
    adapter = _model_dir(args.adapter, "--adapter") if args.adapter else None
    checked = adapter or model
    if adapter is not None and not (adapter / "seqpeft.json").is_file():
        raise SeqpeftInputError(adapter, "is not a seqpeft run's artifacts directory (no seqpeft.json).",
                                fix="pass --adapter results/runs/<task>/<model>/<method>/<partition>/artifacts.")
    if not (checked / "seqpeft.json").is_file() and not (checked / "config.json").is_file():
        raise SeqpeftInputError(checked, "is neither a run's artifacts directory (no seqpeft.json) nor a model "
                                "checkpoint (no config.json).",
                                fix="pass --model results/runs/<task>/<model>/<method>/<partition>/artifacts, "
                                    "or a checkpoint saved with save_pretrained.")
    return model, adapter


def _validate(args: argparse.Namespace) -> int:
    from seqpeft.sequences import validate_file

    for path in args.files:
        count = validate_file(Path(path), args.alphabet)
        print(f"{path}: {count} records, valid")
    return 0


def _list(args: argparse.Namespace) -> int:
    if args.what == "methods":
        from seqpeft.methods import METHODS

        for name, method in METHODS.items():
            print(f"{name:<15} {method.description}")
        print(f"{'<peft config>':<15} any other peft config class by name (methods.<name>.peft: LoHaConfig, ...)")
        print(f"{'+ dsp':<15} domain-shift prompting with any method above: methods.<name>.dsp: {{encoding: bbpe|nucleotide}} "
              "wraps each sequence in the task's dsp_template (sequence classification)")
        return 0
    if args.what == "kinds":
        from seqpeft.tasks import TASK_KINDS

        for name, kind in TASK_KINDS.items():
            print(f"{name:<28} {kind.summary}; partitions: {kind.partitions.meaning}")
        return 0
    config = _load_config(args.config)
    if args.what == "models":
        for name, spec in config.get("models", {}).items():
            where = spec.get("hub") or spec.get("path") or f"built {spec.get('build', {}).get('family', '?')}"
            print(f"{name:<28} {where}")
    else:
        for name, spec in config.get("tasks", {}).items():
            print(f"{name:<28} {spec['kind']:<28} source {spec.get('source')}:{spec.get('path')}")
    return 0


def _view_report(args: argparse.Namespace) -> int:
    from seqpeft.report_view import view_figures

    views = view_figures(Path(args.report), Path(args.screenshots) if args.screenshots else None, args.chromium)
    for view in views:
        where = f" -> {view.screenshot}" if view.screenshot else ""
        print(f"{'shown' if view.shown else 'NOT SHOWN':<9} {view.width:>5}x{view.height:<5} {view.path}{where}")
    missing = [view.path for view in views if not view.shown]
    if not views or missing:
        print(f"seqpeft: error: {len(missing)} of {len(views)} figures did not render" if views
              else "seqpeft: error: the report holds no figures", file=sys.stderr)
        return 1
    print(f"all {len(views)} figures render in headless Chromium")
    return 0


def _pin(args: argparse.Namespace) -> int:
    from seqpeft.pins import pin_config

    path, new = pin_config(Path(args.configfile), used_only=not args.all)
    count = len(new["models"]) + len(new["sources"])
    print(f"{'wrote' if count else 'nothing to pin; kept'} {path}" + (f" ({count} new pin(s)): review it, then commit it" if count else ""))
    return 0


def _plan(args: argparse.Namespace) -> int:
    from seqpeft.plan import print_plan

    print_plan(Path(args.configfile), Path(args.profile) if args.profile else None)
    return 0


def _load_config(path: str) -> dict:
    import yaml

    config_path = Path(path)
    if not config_path.is_file():
        raise SeqpeftInputError(config_path, "config file not found.", fix="pass --config config/config.yaml or config/demo.yaml.")
    return yaml.safe_load(config_path.read_text()) or {}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seqpeft", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    evaluate = commands.add_parser("evaluate", help="score a model on a labelled CSV (sequence,label): accuracy, f1, mcc, precision, recall, loss; "
                                      "a signal-peptide model on a SignalP 6.0 FASTA: the workflow's SignalP metrics")
    evaluate.add_argument("--model", required=True, help="a run's artifacts directory, or a checkpoint with a classification head")
    evaluate.add_argument("--adapter", help="a run's artifacts directory to apply on top of --model (the base model)")
    evaluate.add_argument("--data", required=True, help="CSV with sequence,label columns (GUE format), or a "
                          "SignalP 6.0 three-line FASTA for a signal-peptide model")
    evaluate.add_argument("--output", help="also write the metrics to this JSON file")
    evaluate.add_argument("--max-length", type=int, help="truncate inputs to this many tokens")
    evaluate.add_argument("--partition", type=int, help="signal-peptide models: score only this partition of the "
                          "SignalP FASTA (a t0v1 run's test set is partition 0)")
    evaluate.set_defaults(handler=_evaluate)

    predict = commands.add_parser("predict", help="predict labels for sequences in a CSV or FASTA file")
    predict.add_argument("--model", required=True, help="a run's artifacts directory, or a checkpoint with a classification head")
    predict.add_argument("--adapter", help="a run's artifacts directory to apply on top of --model")
    predict.add_argument("--input", required=True, help="CSV with a sequence column, or FASTA")
    predict.add_argument("--output", required=True, help="CSV to write: id, prediction, one probability column per label")
    predict.add_argument("--max-length", type=int, help="truncate inputs to this many tokens")
    predict.set_defaults(handler=_predict)

    validate = commands.add_parser("validate", help="check data files (GUE CSV, SignalP 6.0 FASTA, FASTA) before running jobs on them")
    validate.add_argument("files", nargs="+", help="files to check; the first problem is reported with its line and fix")
    validate.add_argument("--alphabet", default="dna", help="letters allowed in sequences (CSV, plain FASTA): dna, "
                          "protein, or the upper-case letters themselves (a task's family: or alphabet:)")
    validate.set_defaults(handler=_validate)

    view = commands.add_parser("view-report", help="open a Snakemake HTML report in headless Chromium, display every "
                               "figure as a reader would, and fail if one does not render")
    view.add_argument("report", help="the report, e.g. results/demo/report.html")
    view.add_argument("--screenshots", help="also save a screenshot of each displayed figure in this directory")
    view.add_argument("--chromium", help="Chromium executable (default: chromium / chromium-browser / google-chrome on PATH)")
    view.set_defaults(handler=_view_report)

    pin = commands.add_parser("pin", help="resolve unpinned hub models to the commit of their branch now and unpinned "
                              "sources to the sha256 of what they serve now; writes pins.yaml next to the config")
    pin.add_argument("--configfile", default="config/config.yaml", help="the workflow config (pins.yaml is written beside it)")
    pin.add_argument("--all", action="store_true", help="also entries no experiment uses (e.g. alternative sources)")
    pin.set_defaults(handler=_pin)

    plan = commands.add_parser("plan", help="what a full run asks for before it starts: jobs, GPU type and hours per model "
                               "x method, total GPU-hours, disk for checkpoints/adapters, unpinned entries")
    plan.add_argument("--configfile", default="config/config.yaml", help="the workflow config (its pins.yaml is applied)")
    plan.add_argument("--profile", help="a profile directory (e.g. profiles/slurm) whose default-resources fill in gpu_model")
    plan.set_defaults(handler=_plan)

    listing = commands.add_parser("list", help="list the models, methods or tasks seqpeft knows")
    listing.add_argument("what", choices=["models", "methods", "tasks", "kinds"])
    listing.add_argument("--config", default="config/config.yaml", help="config whose models/tasks to list")
    listing.set_defaults(handler=_list)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from seqpeft.quiet import quiet_third_party

    quiet_third_party()
    try:
        code = args.handler(args)
        sys.stdout.flush()  # a closed pipe (`seqpeft list tasks | head -1`) surfaces here, inside the try
        return code
    except SeqpeftInputError as error:
        print(f"seqpeft: error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader stopped reading: not an error of ours. Point stdout at /dev/null so that the
        # interpreter's own flush at exit does not raise again (the Python docs' recipe).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for a command stopped by a closed pipe


if __name__ == "__main__":
    sys.exit(main())
