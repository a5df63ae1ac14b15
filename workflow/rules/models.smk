rule prepare_model:
    input:
        unpack(model_tokenizer_input),
    output:
        directory(f"{R}/models/{{model}}"),
    log:
        f"{R}/logs/prepare_model/{{model}}.log",
    params:
        spec=lambda wildcards: model_params(config, wildcards.model),
    wildcard_constraints:
        model=PREPARED_MODEL,
    threads: 1
    resources:
        mem_mb=lambda wildcards, attempt: int(size_resources(config, wildcards.model)["mem_mb"]) * attempt,
        runtime=120,
    retries: 2
    conda:
        "../../envs/models.yaml"
    script:
        "../scripts/prepare_model.py"
