rule finetune:
    input:
        unpack(finetune_input),
    output:
        metrics=f"{RUN_DIR}/metrics.json",
        predictions=f"{RUN_DIR}/predictions_test.parquet",
        history=f"{RUN_DIR}/history.csv",
        artifacts=directory(f"{RUN_DIR}/artifacts"),
    log:
        f"{RUN_DIR}/train.log",
    benchmark:
        f"{R}/benchmarks/finetune/{{task}}/{{model}}/{{method}}/{{partition}}.tsv"
    params:
        spec=job_spec,
    threads: finetune_threads_of
    resources:
        gpu=lambda wildcards: int(size_resources(config, wildcards.model)["gpu"]),
        **FINETUNE_GPU_MODEL,
        mem_mb=finetune_mem_mb,
        runtime=finetune_runtime,
        attempt=lambda wildcards, attempt: attempt,  # not retried after an error retrying cannot fix (_script.py)
    retries: 2
    conda:
        "../../envs/train.yaml"
    script:
        "../scripts/finetune.py"
