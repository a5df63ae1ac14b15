"""Training throughput and dev MCC: seqpeft's training path vs the seed projects' recipe.

The seed recipe (Mistral-DNA, DNABERT-2 fine-tuning scripts, ported to the transformers 5 API):
tokenize the whole dataset with ``padding="longest"`` (every batch as wide as the longest
sequence in the data set), ``AutoModelForSequenceClassification`` from the checkpoint with a
re-initialised head, Hugging Face ``Trainer`` with the seeds' own ``TrainingArguments`` choices
(``optim="adamw_torch"``, which both seeds' ``functions.py``/``train.py`` set explicitly, and a
checkpoint per evaluation with ``load_best_model_at_end``, as in the published run's
``trainer_state.json``), evaluation every epoch.

seqpeft: ``seqpeft.training.launch.run_finetune`` on the same checkpoint (re-initialised head) and the same
training subset from the tokenized cache: length-bucketed batches, dynamic padding,
inference-mode evaluation.

Both: same epochs, batch size, learning rate, warm-up, schedule, gradient clipping, CPU threads.
Samples/s = training samples x epochs / wall time of the whole training call (model loading,
training and the per-epoch dev evaluations; seqpeft also evaluates a test split and saves its
artifacts). Tokenization is done once beforehand for both and is not timed here (see
token_cache.py). Dev MCC is the best per-epoch dev MCC of each run, the quantity both select on.

    python benchmarks/throughput.py            # whole tf/0 training set, ~15 min on 2 cores
    python benchmarks/throughput.py --quick    # smoke mode, ~1 min
    python benchmarks/throughput.py --compile  # also seqpeft with training.compile (one-off compile per run)
"""

from __future__ import annotations

import argparse
import csv
import math
import shutil
import tempfile
from pathlib import Path

import numpy as np

from _common import CHECKPOINT, GUE_TF0, alternate, median, print_table, require

LABEL_COLUMNS = ("sequence", "label")


def write_subset(source: Path, out: Path, n_train: int, n_dev: int, seed: int) -> None:
    """A GUE-format task folder with a random training subset and the first ``n_dev`` dev rows (0: all)."""
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split, count in (("train", n_train), ("dev", n_dev), ("test", min(n_dev, 200))):
        with open(source / ("dev.csv" if split == "test" else f"{split}.csv"), newline="") as handle:
            rows = list(csv.DictReader(handle))
        count = min(count, len(rows)) if count > 0 else len(rows)
        picked = sorted(rng.choice(len(rows), count, replace=False)) if split == "train" else range(count)
        with open(out / f"{split}.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=LABEL_COLUMNS, lineterminator="\n")
            writer.writeheader()
            writer.writerows({key: rows[i][key] for key in LABEL_COLUMNS} for i in picked)


def read_split(folder: Path, split: str) -> tuple[list[str], list[int]]:
    with open(folder / f"{split}.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [row["sequence"] for row in rows], [int(row["label"]) for row in rows]


def seed_recipe(data: Path, training: dict, threads: int, out_dir: Path) -> dict:
    """The seed projects' fine-tuning recipe, HF Trainer over a whole-dataset-padded dataset."""
    import torch
    from sklearn.metrics import matthews_corrcoef
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, Trainer, TrainingArguments

    torch.set_num_threads(threads)
    tokenizer = AutoTokenizer.from_pretrained(str(CHECKPOINT))

    class SupervisedDataset(torch.utils.data.Dataset):
        """As in DNABERT-2's train.py: one tokenizer call over the whole split, padding="longest"."""

        def __init__(self, split: str):
            sequences, labels = read_split(data, split)
            encoded = tokenizer(sequences, padding="longest", truncation=True, max_length=512, return_tensors="pt")
            self.input_ids, self.attention_mask = encoded["input_ids"], encoded["attention_mask"]
            self.labels = torch.tensor(labels)

        def __len__(self):
            return len(self.labels)

        def __getitem__(self, i):
            return {"input_ids": self.input_ids[i], "attention_mask": self.attention_mask[i], "labels": self.labels[i]}

    train, dev = SupervisedDataset("train"), SupervisedDataset("dev")

    def compute_metrics(prediction):
        return {"mcc": matthews_corrcoef(prediction.label_ids, np.argmax(prediction.predictions, axis=-1))}

    import time

    started = time.perf_counter()
    torch.manual_seed(training["seed"])
    model = AutoModelForSequenceClassification.from_pretrained(str(CHECKPOINT), num_labels=2)
    model.score.weight.data.normal_(mean=0.0, std=model.config.initializer_range)
    args = TrainingArguments(
        output_dir=str(out_dir), use_cpu=True, eval_strategy="epoch", save_strategy="epoch", logging_strategy="epoch",
        load_best_model_at_end=True, metric_for_best_model="eval_loss", save_total_limit=3, optim="adamw_torch",
        per_device_train_batch_size=training["batch_size"], per_device_eval_batch_size=training["eval_batch_size"],
        num_train_epochs=training["epochs"], learning_rate=training["learning_rate"], weight_decay=training["weight_decay"],
        warmup_steps=int(training["warmup_ratio"] * math.ceil(len(train) / training["batch_size"]) * training["epochs"]),
        max_grad_norm=training["max_grad_norm"], lr_scheduler_type="linear", seed=training["seed"],
        report_to="none", disable_tqdm=True, dataloader_num_workers=0,
    )
    trainer = Trainer(model=model, args=args, train_dataset=train, eval_dataset=dev, processing_class=tokenizer,
                      compute_metrics=compute_metrics)
    trainer.train()
    seconds = time.perf_counter() - started
    mccs = [entry["eval_mcc"] for entry in trainer.state.log_history if "eval_mcc" in entry]
    tokens = int(train.attention_mask.shape[1]) * len(train) * training["epochs"]
    return {"samples_per_s": len(train) * training["epochs"] / seconds, "dev_mcc": max(mccs), "seconds": seconds,
            "padded_width": int(train.attention_mask.shape[1]), "tokens_processed": tokens}


def seqpeft_path(data: Path, cache: Path, training: dict, threads: int, out_dir: Path) -> dict:
    """seqpeft's own training path, ``run_finetune``, on the cached tokenized subset."""
    import time

    from seqpeft.training.launch import run_finetune
    from seqpeft.config.settings import FinetuneJob

    job = FinetuneJob(task="tf_0", model="mistral_dna", method="full", partition="0", task_spec={},
                      model_spec={"max_length": 512}, method_spec={}, training=training, cache_path=cache,
                      model_dir=CHECKPOINT, out_dir=out_dir, threads=threads)
    started = time.perf_counter()
    metrics = run_finetune(job)
    seconds = time.perf_counter() - started
    n_train = len(read_split(data, "train")[1])
    return {"samples_per_s": n_train * training["epochs"] / seconds, "dev_mcc": metrics["dev"]["mcc"], "seconds": seconds,
            "loop_samples_per_s": metrics["train_samples_per_second"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke mode: tiny subset, 1 epoch, 1 repeat")
    parser.add_argument("--train-samples", type=int, default=0, help="training sequences (0: all 32,378)")
    parser.add_argument("--dev-samples", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--compile", action="store_true",
                        help="a third contender: seqpeft with training.compile (compile time included in its time)")
    args = parser.parse_args()
    if args.quick:
        args.train_samples, args.dev_samples, args.epochs, args.repeats = 256, 128, 1, 1
    require(CHECKPOINT, GUE_TF0)

    from seqpeft.tasks import tokenize_task

    training = {"epochs": args.epochs, "batch_size": 32, "eval_batch_size": 128, "learning_rate": 5e-4,
                "weight_decay": 0.0, "warmup_ratio": 0.06, "max_grad_norm": 1.0, "patience": 100, "seed": 0,
                "device": "cpu"}
    work = Path(tempfile.mkdtemp(prefix="seqpeft-throughput-"))
    try:
        data = work / "data"
        write_subset(GUE_TF0, data, args.train_samples, args.dev_samples, seed=0)
        cache = work / "cache.npz"
        tokenize_task({"kind": "sequence_classification"}, data, CHECKPOINT, cache)
        n_train = len(read_split(data, "train")[1])
        print(f"GUE tf/0: {n_train} training sequences, {args.dev_samples} dev, {args.epochs} epochs, "
              f"batch 32, full fine-tuning, {args.threads} CPU thread(s), {args.repeats} alternating repeats")
        contenders = {
            "seed_recipe": lambda r: seed_recipe(data, training, args.threads, work / f"hf{r}"),
            "seqpeft": lambda r: seqpeft_path(data, cache, training, args.threads, work / f"sp{r}"),
        }
        if args.compile:
            contenders["seqpeft_compiled"] = lambda r: seqpeft_path(data, cache, {**training, "compile": True},
                                                                    args.threads, work / f"spc{r}")
        results = alternate(contenders, args.repeats)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    rows = [[name, median(r["samples_per_s"] for r in runs), median(r["seconds"] for r in runs),
             median(r["dev_mcc"] for r in runs)] for name, runs in results.items()]
    print()
    print_table(["recipe", "samples/s (median)", "seconds (median)", "dev MCC (median)"], rows)
    speedup = rows[1][1] / rows[0][1]
    mcc_delta = rows[1][3] - rows[0][3]
    print(f"speedup_vs_seed_recipe: {speedup:.2f} mcc_delta: {mcc_delta:+.3f}")


if __name__ == "__main__":
    main()
