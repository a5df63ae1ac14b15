rule prepare_model:
    input:
        unpack(model_tokenizer_input),
    output:
        directory(f"{R}/models/{{model}}"),
    log:
        f"{R}/logs/prepare_model/{{model}}.log",
    params:
        spec=model_spec,
    wildcard_constraints:
        model=PREPARED_MODEL,
    threads: 1
    resources:
        mem_mb=prepare_mem_mb,
        runtime=120,
    retries: 2
    conda:
        "../../envs/models.yaml"
    script:
        "../scripts/prepare_model.py"
