# `seqpeft rehearse` (target: rehearsal): every fine-tuning job for a few steps, with the finetune
# rule's inputs (less a tuning study: the configured settings), GPUs, memory and profile; each
# writes its outcome row rather than failing, and nothing of the real run is written or touched.


rule rehearse_job:
    input:
        unpack(training_input),
    output:
        row=f"{REHEARSAL_DIR}/rehearsal.json",
    log:
        f"{REHEARSAL_DIR}/train.log",
    params:
        spec=job_spec,
        steps=config["rehearsal"]["steps"],
    threads: finetune_threads_of
    resources:
        gpu=lambda wildcards: int(size_resources(config, wildcards.model)["gpu"]),
        **FINETUNE_GPU_MODEL,
        mem_mb=finetune_mem_mb,
        runtime=rehearsal_runtime,
    conda:
        "../../envs/train.yaml"
    script:
        "../scripts/rehearse_job.py"


rule rehearsal:
    input:
        rows=rehearsal_rows(),
    output:
        table=rehearsal_table(config),
    log:
        f"{R}/logs/rehearsal.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
    conda:
        "../../envs/report.yaml"
    script:
        "../scripts/rehearsal_table.py"
