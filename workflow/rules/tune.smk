# Hyper-parameter search for runs whose training sets hpo: true (seqpeft.tune). The trial jobs of
# one study share an Optuna journal file (study.journal, beside the markers), each running its
# share of the trials; a killed trial job resumes the study on its retry. Delete study.journal to
# start a study over; a changed config starts a new study in it by itself.


rule tune_trials:
    input:
        unpack(training_input),
    output:
        f"{TUNE_DIR}/trials/{{trial_job}}.json",
    log:
        f"{TUNE_DIR}/logs/trials_{{trial_job}}.log",
    benchmark:
        f"{R}/benchmarks/tune_trials/{{task}}/{{model}}/{{method}}/{{partition}}/{{trial_job}}.tsv"
    params:
        spec=trial_spec,
        hpo=hpo_params(config),
        storage=f"{TUNE_DIR}/study.journal",
    threads: FINETUNE_THREADS
    resources:
        gpu=lambda wildcards: int(size_resources(config, wildcards.model)["gpu"]),
        **FINETUNE_GPU_MODEL,
        # a tuning trial trains in one process, whatever training.processes says (seqpeft.launch.run_finetune)
        mem_mb=lambda wildcards, attempt: int(size_resources(config, wildcards.model)["mem_mb"]) * attempt,
        runtime=lambda wildcards, attempt: tune_trials_runtime(config, wildcards.model, wildcards.method) * attempt,
    retries: 2
    conda:
        "../../envs/train.yaml"
    script:
        "../scripts/tune_trials.py"


rule tune:
    input:
        trials=tune_trial_markers,
    output:
        f"{TUNE_DIR}/best_params.json",
    log:
        f"{TUNE_DIR}/logs/tune.log",
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/train.yaml"
    script:
        "../scripts/tune.py"
