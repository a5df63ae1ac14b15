rule build_tokenizer:
    output:
        directory(f"{R}/tokenizers/{{tokenizer}}"),
    log:
        f"{R}/logs/build_tokenizer/{{tokenizer}}.log",
    params:
        spec=tokenizer_spec,
    wildcard_constraints:
        tokenizer=BUILT_TOKENIZER,
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/models.yaml"
    script:
        "../scripts/build_tokenizer.py"


rule tokenize:
    input:
        unpack(tokenize_input),
    output:
        f"{R}/tokenized/{{task}}/{{tokenizer}}.npz",
    log:
        f"{R}/logs/tokenize/{{task}}/{{tokenizer}}.log",
    params:
        task=task_spec,
        data_path=data_path,
    threads: 1
    resources:
        mem_mb=lambda wildcards, attempt: 8000 * attempt,
        runtime=lambda wildcards, attempt: 60 * attempt,
    conda:
        "../../envs/models.yaml"
    script:
        "../scripts/tokenize_task.py"
