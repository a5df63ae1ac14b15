"""Task kind ``regression``: one or more real numbers per sequence (promoter or enhancer activity,
protein stability, fluorescence, fitness; here also a signal peptide's length).

Files: ``train.csv``, ``dev.csv``, ``test.csv`` in the task's directory with the header
``sequence,target``; ``target`` holds one number, or several ``;``-separated (``0.5;-1.2``), the
same count in every row of every split, named ``target0``, ``target1``, ... by position. Extra
columns and an ``id`` column are allowed, as in the single-label CSV.

Targets are standardised with the training split's mean and standard deviation when the task is
tokenized (the cache's ``fitted`` meta, saved with the run's artifacts): the model learns
standardised values with summed MSE under every method, and every metric and prediction is on
the original scale. Metrics per target and their means: Spearman, Pearson, R², RMSE, MAE; the
dev Spearman selects the checkpoint (``regression: {select_on: ...}`` picks another). Partitions
are replicate seeds.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from seqpeft.data.readers import read_labeled_csv, read_named_column
from seqpeft.util.errors import SeqpeftInputError
from seqpeft.core.objectives import Objective
from seqpeft.training.predict import predict_sequences
from seqpeft.core.registry import REPLICATES, TaskKind, csv_columns, refuse_partition, register_task_kind
from seqpeft.data.tokenize import tokenize_csv_splits

KIND = "regression"
COLUMN = "target"
METRICS = ("spearman", "pearson", "r2", "rmse", "mae")


def target_names(count: int) -> list[str]:
    return [f"target{index}" for index in range(count)]


@dataclass(frozen=True)
class RegressionSettings:
    """A regression task's own settings (``tasks.<name>.regression``; defaults in the schema)."""

    select_on: str

    @classmethod
    def from_task(cls, task_spec: dict | None) -> "RegressionSettings":
        from seqpeft.config.schema import ENTRY, with_defaults

        return cls(**with_defaults((task_spec or {}).get(KIND), "tasks", ENTRY, KIND))


# ---- reading ----


def _targets(path: Path, text: str, line: int, expected: int | None) -> list[float]:
    cells = [cell.strip() for cell in text.split(";")]
    values = []
    for cell in cells:
        try:
            value = float(cell)
        except ValueError:
            raise SeqpeftInputError(path, f"target {cell!r} is not a number.",
                                    fix="write each target as a decimal number (e.g. 0.42 or -1.5e-3), several "
                                        "separated by ';'.", line=line) from None
        if not math.isfinite(value):
            raise SeqpeftInputError(path, f"target {cell!r} is not a finite number.",
                                    fix="replace NaN/inf with a measured value, or delete the row.", line=line)
        values.append(value)
    if expected is not None and len(values) != expected:
        raise SeqpeftInputError(path, f"target {text!r} holds {len(values)} value(s), the rows before {expected}.",
                                fix="give every row one value per target, in the same order.", line=line)
    return values


def read_regression_csv(path: str | Path, alphabet: str = "dna", expected: int | None = None):
    """The CSV's sequences (checked like a single-label CSV against ``alphabet``) and an
    (n, targets) float matrix in ``labels``; ``expected`` fixes the number of targets."""
    records = read_labeled_csv(path, alphabet=alphabet, require_labels=False)
    cells = read_named_column(path, records, COLUMN, "the header of a regression file is 'sequence,target' (target: "
                              "a number, or several separated by ';').")
    matrix: list[list[float]] = []
    for cell, line in cells:
        if not cell:
            raise SeqpeftInputError(records.path, "missing target.", fix="give every row its target value(s), or "
                                    "delete the row.", line=line)
        matrix.append(_targets(records.path, cell, line,
                               expected if expected is not None else (len(matrix[0]) if matrix else None)))
    records.labels = np.asarray(matrix, dtype=np.float64)
    return records


def _scale(train) -> dict:
    """Mean and standard deviation of every target over the training split; a constant target
    (nothing to learn, and no scale) is an error."""
    mean, std = train.labels.mean(axis=0), train.labels.std(axis=0)
    for index, name in enumerate(target_names(train.labels.shape[1])):
        if not std[index] > 1e-12 * max(1.0, abs(mean[index])):
            raise SeqpeftInputError(train.path, f"{name} (value {index + 1} of each row's target) is "
                                    f"{train.labels[0, index]:g} in every training row, so nothing can be learnt.",
                                    fix="drop that target from every file, or add training rows where it varies.")
    return {"target_mean": mean.tolist(), "target_std": std.tolist()}


def _tokenize(data_dir, tokenizer, arrays: dict, encode=None, alphabet: str = "dna") -> dict:
    train = read_regression_csv(Path(data_dir) / "train.csv", alphabet)
    count = train.labels.shape[1]
    splits = {"train": train, **{name: read_regression_csv(Path(data_dir) / f"{name}.csv", alphabet, expected=count)
                                 for name in ("dev", "test")}}
    scale = _scale(train)
    mean, std = np.asarray(scale["target_mean"]), np.asarray(scale["target_std"])
    for records in splits.values():
        records.labels = ((records.labels - mean) / std).astype(np.float32)
    return {**tokenize_csv_splits(tokenizer, splits, arrays, encode), "label_names": target_names(count),
            "fitted": scale}


# ---- objective ----


def _mse_rows(outputs, targets):
    import torch

    loss = torch.nn.functional.mse_loss(outputs.float(), targets.float(), reduction="none")
    return loss.sum(dim=1), torch.full((len(targets),), targets.shape[1], dtype=torch.long)


def _loss(model, outputs, targets, attention, split, indices):
    import torch

    return torch.nn.functional.mse_loss(outputs.float(), targets.float(), reduction="sum")


def _predict(model, split, pad_id, max_length, batch_size, device) -> dict:
    return predict_sequences(model, split, pad_id, max_length, batch_size, device, row_loss=_mse_rows)


def unscale(values: np.ndarray, fitted: dict) -> np.ndarray:
    """Standardised outputs or targets back on the original scale of the training split."""
    return np.asarray(values, dtype=np.float64) * np.asarray(fitted["target_std"]) + np.asarray(fitted["target_mean"])


def _defined(x: np.ndarray, y: np.ndarray) -> bool:
    return len(x) >= 2 and np.ptp(x) > 0 and np.ptp(y) > 0


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rho as the Pearson correlation of average ranks (what ``scipy.stats.spearmanr``
    computes, without its argument checks); NaN where undefined (fewer than 2 values, a constant
    side). ``resampled_spearman`` computes the same for many resamples at once."""
    from scipy.stats import rankdata

    if not _defined(x, y):
        return math.nan
    return float(np.corrcoef(rankdata(x), rankdata(y))[0, 1])


def resampled_spearman(x: np.ndarray, y: np.ndarray, picks: np.ndarray) -> np.ndarray:
    """``spearman`` of every resample at once (row b of ``picks``: example indices). Each value is
    replaced by its code among the distinct values, so a row's average ranks come from per-row
    counts of each code: ranks = (values below) + (ties + 1) / 2."""
    draws = len(picks)

    def ranks(values: np.ndarray) -> np.ndarray:
        codes = np.unique(values, return_inverse=True)[1].reshape(-1)[picks]
        distinct = int(codes.max()) + 1 if codes.size else 1
        counts = np.bincount((codes + np.arange(draws)[:, None] * distinct).ravel(),
                             minlength=draws * distinct).reshape(draws, distinct)
        table = np.cumsum(counts, axis=1) - counts + (counts + 1) / 2
        return np.take_along_axis(table, codes, axis=1)

    rx, ry = ranks(np.asarray(x, dtype=np.float64)), ranks(np.asarray(y, dtype=np.float64))
    rx -= rx.mean(axis=1, keepdims=True)
    ry -= ry.mean(axis=1, keepdims=True)
    spread = np.sqrt((rx * rx).sum(axis=1) * (ry * ry).sum(axis=1))
    defined = (spread > 0) & (picks.shape[1] >= 2)
    return np.where(defined, (rx * ry).sum(axis=1) / np.where(defined, spread, 1.0), math.nan)


def regression_metrics(truth: np.ndarray, predicted: np.ndarray) -> dict:
    """Per target (``spearman_target0``, ...) and their means: Spearman, Pearson, R², RMSE, MAE
    (NaN where a correlation is undefined, e.g. constant predictions)."""
    from scipy.stats import pearsonr
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    per_target: dict[str, float] = {}
    for index, name in enumerate(target_names(truth.shape[1])):
        x, y = truth[:, index], predicted[:, index]
        per_target[f"spearman_{name}"] = spearman(x, y)
        per_target[f"pearson_{name}"] = float(pearsonr(x, y)[0]) if _defined(x, y) else math.nan
        per_target[f"r2_{name}"] = float(r2_score(x, y)) if len(x) > 1 else math.nan
        per_target[f"rmse_{name}"] = float(math.sqrt(mean_squared_error(x, y)))
        per_target[f"mae_{name}"] = float(mean_absolute_error(x, y))
    means = {}
    for metric in METRICS:
        values = [value for key, value in per_target.items() if key.startswith(metric + "_") and not math.isnan(value)]
        means[metric] = float(np.mean(values)) if values else math.nan
    return {**means, **(per_target if truth.shape[1] > 1 else {})}


def regression_objective(task_spec: dict | None) -> Objective:
    """MSE on standardised targets; metrics on the original scale (``task_spec["fitted"]``: the
    training split's scale, from the cache in training and from the artifacts in evaluate)."""
    settings = RegressionSettings.from_task(task_spec)
    fitted = (task_spec or {}).get("fitted")

    def score(split, predictions: dict) -> dict:
        if not fitted:
            raise SeqpeftInputError(None, "this regression model carries no target scale.",
                                    fix="retokenize the task (delete its cache) and retrain with this seqpeft.")
        truth, outputs = unscale(predictions["labels"], fitted), unscale(predictions["logits"], fitted)
        metrics = regression_metrics(truth, outputs)
        chosen = metrics[settings.select_on]
        # larger is better for selection; an undefined correlation (constant outputs) ranks last
        selection = -1.0 if math.isnan(chosen) else chosen
        return {**metrics, "loss": float(predictions["loss"].sum()) / max(int(predictions["count"].sum()), 1),
                "selection": float(selection)}

    def predict(model, split, pad_id, max_length, batch_size, device) -> dict:
        predictions = _predict(model, split, pad_id, max_length, batch_size, device)
        if fitted:  # the original scale, for predictions_test.parquet
            predictions["target"] = unscale(predictions["labels"], fitted)
            predictions["predicted"] = unscale(predictions["logits"], fitted)
        return predictions

    return Objective(KIND, num_outputs=lambda n: n, attach=lambda model: None, loss=_loss,
                     normaliser=lambda prepared, indices: sum(int(targets.numel()) for _, _, targets in prepared),
                     predict=predict, score=score)


def _prediction_columns(split, predictions: dict) -> dict:
    """``example_id`` (0-based row of test.csv), then per target ``target_<name>`` and
    ``predicted_<name>`` on the original scale."""
    truth = np.asarray(predictions.get("target", predictions["labels"]), dtype=np.float64)
    outputs = np.asarray(predictions.get("predicted", predictions["logits"]), dtype=np.float64)
    truth, outputs = truth.reshape(len(truth), -1), outputs.reshape(len(outputs), -1)
    columns = {"example_id": np.arange(len(truth))}
    for index, name in enumerate(target_names(truth.shape[1])):
        columns[f"target_{name}"] = truth[:, index]
        columns[f"predicted_{name}"] = outputs[:, index]
    return columns


def _score_predictions(frame) -> float:
    """Mean Spearman over targets (the kind's score, the run's test ``spearman``)."""
    names = [key[len("target_"):] for key in frame.keys() if str(key).startswith("target_")]
    truth = np.column_stack([np.asarray(frame[f"target_{name}"], dtype=np.float64) for name in names])
    outputs = np.column_stack([np.asarray(frame[f"predicted_{name}"], dtype=np.float64) for name in names])
    values = [spearman(truth[:, index], outputs[:, index]) for index in range(len(names))]
    values = [value for value in values if not math.isnan(value)]
    return float(np.mean(values)) if values else math.nan


def _score_resamples(columns, picks: np.ndarray) -> np.ndarray:
    from seqpeft.training.metrics import mean_of_defined

    names = [key[len("target_"):] for key in columns.keys() if str(key).startswith("target_")]
    return mean_of_defined([resampled_spearman(np.asarray(columns[f"target_{name}"]),
                                               np.asarray(columns[f"predicted_{name}"]), picks) for name in names],
                           len(picks))


# ---- the command line ----


def _evaluate_file(predictor, data_path: Path, partition=None) -> dict:
    """The run's test metrics on a ``sequence,target`` CSV, on the original scale; the file's
    targets are standardised with the run's training scale, as its test split was."""
    refuse_partition(data_path, partition)
    records = read_regression_csv(data_path, predictor.alphabet, expected=predictor.num_labels)
    fitted = predictor.objective_spec["fitted"]
    scaled = (records.labels - np.asarray(fitted["target_mean"])) / np.asarray(fitted["target_std"])
    return predictor.evaluate(predictor.split_for(records.sequences, scaled.astype(np.float32), source=data_path))


def _predict_file(predictor, input_path: Path, output_path: Path) -> int:
    """One row per record: ``id``, ``prediction`` (target0's value) and ``pred_<target>`` for
    every target, on the original scale of the training targets."""
    from seqpeft.util.atomic import write_text_atomic
    from seqpeft.data.sequences import read_sequences

    ids, sequences = read_sequences(Path(input_path), alphabet=predictor.alphabet)
    split = predictor.split_for(sequences, np.zeros((len(sequences), predictor.num_labels), dtype=np.float32),
                                source=input_path)
    values = unscale(predictor.logits(split), predictor.objective_spec["fitted"])
    names = predictor.label_names or target_names(values.shape[1])
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["id", "prediction"] + [f"pred_{name}" for name in names])
    for record_id, row in zip(ids, values):
        writer.writerow([record_id, f"{row[0]:.6g}"] + [f"{value:.6g}" for value in row])
    write_text_atomic(Path(output_path), buffer.getvalue())
    return len(ids)


# ---- demo data ----


def write_gc_regression_task(out_dir: str | Path, *, seed: int, n_train: int = 800, n_dev: int = 200,
                             n_test: int = 300, length: int = 60) -> None:
    """train/dev/test CSVs of random DNA whose target is its GC content (percent): each sequence
    draws its own GC probability in [0.2, 0.8], so targets spread over the whole range."""
    rng = np.random.default_rng(seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, count in (("train", n_train), ("dev", n_dev), ("test", n_test)):
        rows = ["sequence,target"]
        for _ in range(count):
            gc = rng.uniform(0.2, 0.8)
            sequence = "".join(rng.choice(list("ACGT"), length, p=[(1 - gc) / 2, gc / 2, gc / 2, (1 - gc) / 2]))
            rows.append(f"{sequence},{100 * (sequence.count('G') + sequence.count('C')) / length:.4f}")
        (out_dir / f"{name}.csv").write_text("\n".join(rows) + "\n")


REGRESSION = register_task_kind(TaskKind(
    KIND, summary="train/dev/test.csv with header sequence,target (target: a number, or several ';'-separated)",
    partitions=REPLICATES, tokenize=_tokenize, objective=regression_objective,
    evaluate_file=_evaluate_file, predict_file=_predict_file, text_template=True,
    settings=lambda task_spec: {KIND: asdict(RegressionSettings.from_task(task_spec))},
    score="spearman", history_metrics=("spearman", "rmse"),
    synthetic={"dna_gc_regression": write_gc_regression_task},
    validate_file=lambda path, alphabet: len(read_regression_csv(path, alphabet)),
    claims=lambda first_line: COLUMN in csv_columns(first_line),
    prediction_columns=_prediction_columns, score_predictions=_score_predictions, score_resamples=_score_resamples))
