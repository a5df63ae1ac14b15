rule build_tokenizer:
    output:
        directory(f"{R}/tokenizers/{{tokenizer}}"),
    log:
        f"{R}/logs/build_tokenizer/{{tokenizer}}.log",
    params:
        spec=lambda wildcards: canonical(config["tokenizers"][wildcards.tokenizer]),
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
        task=lambda wildcards: task_params(config, wildcards.task),
        data_path=lambda wildcards: task_data_path(config, wildcards.task),
    threads: 1
    resources:
        mem_mb=lambda wildcards, attempt: 8000 * attempt,
        runtime=lambda wildcards, attempt: 60 * attempt,
    conda:
        "../../envs/models.yaml"
    script:
        "../scripts/tokenize_task.py"


# Domain-shift prompting: the template depends on the task, the encoding on the model (its
# tokenizer, max_length and nucleotide ids), so these caches are per task x model x encoding.
rule tokenize_dsp:
    input:
        unpack(tokenize_dsp_input),
    output:
        f"{R}/tokenized/{{task}}/{{model}}.dsp-{{encoding}}.npz",
    log:
        f"{R}/logs/tokenize_dsp/{{task}}/{{model}}.{{encoding}}.log",
    params:
        task=lambda wildcards: task_params(config, wildcards.task),
        data_path=lambda wildcards: task_data_path(config, wildcards.task),
        # an experiment block's own max_length (rule tokenize_dsp_length) names the length in the file
        dsp=lambda wildcards: dsp_settings(config, wildcards.task, wildcards.model, wildcards.encoding,
                                           int(wildcards.length) if "length" in wildcards.keys() else None),
    threads: 1
    resources:
        mem_mb=lambda wildcards, attempt: 8000 * attempt,
        runtime=lambda wildcards, attempt: 60 * attempt,
    conda:
        "../../envs/models.yaml"
    script:
        "../scripts/tokenize_dsp.py"


# The same for the runs of an experiment block that sets its own max_length (DSP inputs are
# encoded for one length; seqpeft.config.jobs.dsp_cache_name names the file).
use rule tokenize_dsp as tokenize_dsp_length with:
    output:
        f"{R}/tokenized/{{task}}/{{model}}.dsp-{{encoding}}.len{{length}}.npz",
    log:
        f"{R}/logs/tokenize_dsp/{{task}}/{{model}}.{{encoding}}.len{{length}}.log",
    wildcard_constraints:
        length=r"[0-9]+",
