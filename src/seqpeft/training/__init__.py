"""One fine-tuning job: assembling model and device, the loop, the optimizer step, checkpoints and
resume, data-parallel ranks, predictions and metrics, the run's artifacts and ``metrics.json``,
evaluation outside the DAG, and the hyper-parameter study. Asks ``seqpeft.core`` for the task
kind; never imports one."""
