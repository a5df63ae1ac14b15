"""The ``seqpeft`` command: what people do outside the DAG (evaluate, predict, validate, list, view-report, pin, plan, rehearse)."""

from __future__ import annotations

import argparse
import errno
import os
import sys
from pathlib import Path

from seqpeft.util.errors import SeqpeftInputError


def _evaluate(args: argparse.Namespace) -> int:
    from seqpeft.training.evaluate import evaluate_file, load_predictor
    from seqpeft.util.atomic import write_json_atomic

    model, adapter = _model_args(args)
    data = _input_file(args.data, "--data")
    if args.output:
        _output_file(args.output, "--output", "metrics.json", data)
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
    from seqpeft.training.evaluate import load_predictor, predict_file

    model, adapter = _model_args(args)
    source = _input_file(args.input, "--input")
    output = _output_file(args.output, "--output", "predictions.csv", source)
    predictor = load_predictor(model, adapter, args.max_length)
    count = predict_file(predictor, source, output)
    print(f"wrote {count} predictions to {args.output}")
    return 0


def _positive_int(value: str) -> int:
    """``--max-length``: a positive number of tokens (0 would silently mean the model's default)."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number of tokens") from None
    if number <= 0:
        raise argparse.ArgumentTypeError(f"{number} tokens: give a positive length, or leave the option out to use "
                                         "the run's max_length")
    return number


def _input_file(value: str, option: str) -> Path:
    """A data file named on the command line: a missing one is the user's path, not the config's."""
    path = Path(value)
    if not path.exists():
        raise SeqpeftInputError(path, "file not found.", fix=f"check the path you passed to {option} "
                                f"(relative paths start at {Path.cwd()}).")
    if not path.is_file():
        raise SeqpeftInputError(path, "is a directory, not a data file.", fix=f"pass the file itself to {option}.")
    return path


def _output_file(value: str, option: str, example: str, source: Path) -> Path:
    """A file to write, checked before the model loads: not a directory, not the input file."""
    path = Path(value)
    if path.is_dir():
        raise SeqpeftInputError(path, "is a directory.", fix=f"pass a file name to {option}, e.g. {path / example}.")
    if path.exists() and path.resolve() == source.resolve():
        raise SeqpeftInputError(path, "is also the input file: writing it would replace the data.",
                                fix=f"pass another file name to {option}.")
    return path


_OS_FIXES = {errno.ENOSPC: "free space there (or write elsewhere) and run the command again.",
             errno.EDQUOT: "free space in your quota (or write elsewhere) and run the command again.",
             errno.EFBIG: "the file size limit (ulimit -f) was reached: raise it or write less.",
             errno.EACCES: "write to a folder you may write to (or ask its owner for access).",
             errno.EPERM: "write to a folder you may write to (or ask its owner for access).",
             errno.EROFS: "that file system is read-only: write to another folder."}


def _os_error_message(error: OSError) -> str:
    """An operating-system failure (full disk, read-only folder) as one line: the file and the fix."""
    where = error.filename or "<file>"
    return f"{where}: {error.strerror or error}. Nothing was written there. Fix: " + \
        _OS_FIXES.get(error.errno, "check the path and its file system, then run the command again.")


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
    from seqpeft.preflight.validate import validate_task_file

    for path in args.files:
        count, checked = validate_task_file(Path(path), args.kind, args.alphabet)
        print(f"{path}: {count} records, valid as {checked}")
    return 0


def _list(args: argparse.Namespace) -> int:
    if args.what == "methods":
        from seqpeft.methods.registry import METHODS

        for name, method in METHODS.items():
            print(f"{name:<15} {method.description}")
        print(f"{'<peft config>':<15} any other peft config class by name (methods.<name>.peft: LoHaConfig, ...)")
        print(f"{'+ dsp':<15} domain-shift prompting with any method above: methods.<name>.dsp: {{encoding: bbpe|nucleotide}} "
              "wraps each sequence in the task's dsp_template (sequence classification)")
        return 0
    if args.what == "kinds":
        from seqpeft.tasks import task_kinds

        for name, kind in task_kinds().items():
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
    from seqpeft.analysis.report_view import view_figures

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
    from seqpeft.preflight.read import read_config
    from seqpeft.config.pins import pin_config

    read_config(Path(args.configfile), cross_check=False)  # what the workflow would refuse, refused before pinning
    path, new = pin_config(Path(args.configfile), used_only=not args.all)
    count = len(new["models"]) + len(new["sources"])
    if count:
        print(f"wrote {path} ({count} new pin(s)): review it, then commit it")
    else:
        print(f"nothing to pin; {f'kept {path}' if path.is_file() else 'no pins.yaml written'}")
    return 0


def _plan(args: argparse.Namespace) -> int:
    from seqpeft.preflight.plan import print_plan

    print_plan(Path(args.configfile), Path(args.profile) if args.profile else None)
    return 0


def _rehearse(args: argparse.Namespace) -> int:
    from seqpeft.preflight.rehearse import rehearse_config

    return rehearse_config(Path(args.configfile), Path(args.profile) if args.profile else None, args.steps,
                           args.snakemake)


def _load_config(path: str) -> dict:
    """The config as the workflow reads it (schema checked: an unknown task kind is refused here too)."""
    from seqpeft.preflight.read import read_config

    return read_config(Path(path), cross_check=False)[0]


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
    evaluate.add_argument("--max-length", type=_positive_int, help="truncate inputs to this many tokens (default: the "
                          "run's max_length; how many are cut is printed)")
    evaluate.add_argument("--partition", type=int, help="signal-peptide models: score only this partition of the "
                          "SignalP FASTA (a t0v1 run's test set is partition 0)")
    evaluate.set_defaults(handler=_evaluate)

    predict = commands.add_parser("predict", help="predict labels for sequences in a CSV or FASTA file")
    predict.add_argument("--model", required=True, help="a run's artifacts directory, or a checkpoint with a classification head")
    predict.add_argument("--adapter", help="a run's artifacts directory to apply on top of --model")
    predict.add_argument("--input", required=True, help="CSV with a sequence column, or FASTA")
    predict.add_argument("--output", required=True, help="CSV to write: id, prediction, one probability column per label")
    predict.add_argument("--max-length", type=_positive_int, help="truncate inputs to this many tokens (default: the "
                          "run's max_length; how many are cut is printed)")
    predict.set_defaults(handler=_predict)

    validate = commands.add_parser("validate", help="check data files (GUE CSV, SignalP 6.0 FASTA, FASTA) before running jobs on them")
    validate.add_argument("files", nargs="+", help="files to check; the first problem is reported with its line and fix")
    validate.add_argument("--kind", help="the task kind that will read the files (seqpeft list kinds); default: "
                          "inferred from each file's header (a plain FASTA is checked as predict input)")
    validate.add_argument("--alphabet", help="letters allowed in sequences: dna, protein, or the upper-case letters "
                          "themselves (a task's family: or alphabet:); default: the kind's, dna for a plain FASTA")
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

    rehearse = commands.add_parser("rehearse", help="before a benchmark spends GPU-hours: every fine-tuning job runs a few "
                                   "steps, one dev evaluation and a save and reload, as the workflow would run it; "
                                   "writes <results>/rehearsal.csv (outcome, step time, memory, extrapolated time) and "
                                   "prints it per model x method")
    rehearse.add_argument("--configfile", default="config/config.yaml", help="the workflow config (its pins.yaml is applied)")
    rehearse.add_argument("--profile", help="Snakemake profile to run the jobs with, e.g. profiles/slurm "
                          "(default: the checkout's profiles/local)")
    rehearse.add_argument("--steps", type=int, help="optimizer steps per job (default: rehearsal.steps of the config, 20)")
    rehearse.add_argument("snakemake", nargs="*", help="further Snakemake arguments, after --, e.g. -- --cores 8")
    rehearse.set_defaults(handler=_rehearse)

    listing = commands.add_parser("list", help="list the models, methods or tasks seqpeft knows")
    listing.add_argument("what", choices=["models", "methods", "tasks", "kinds"])
    listing.add_argument("--config", default="config/config.yaml", help="config whose models/tasks to list")
    listing.set_defaults(handler=_list)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from seqpeft.util.quiet import quiet_third_party

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
    except OSError as error:  # after BrokenPipeError, which is one
        print(f"seqpeft: error: {_os_error_message(error)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
