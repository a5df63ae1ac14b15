# Hyper-parameter search for runs whose training sets hpo (seqpeft.training.tune): a deterministic study in
# rounds of hpo.trial_jobs trials. Each trial is one job; its inputs are the results of every trial
# of the earlier rounds (the round barrier), from which it replays the study and draws its own
# parameters with the round's seeded sampler, so a study depends on its config and seed only,
# never on which job ran first. A killed trial reruns with the same parameters; finished trials
# (trials/{trial}.json) are not rerun.


rule tune_trials:
    input:
        unpack(tune_trial_input),
    output:
        f"{TUNE_DIR}/trials/{{trial}}.json",
    log:
        f"{TUNE_DIR}/logs/trial_{{trial}}.log",
    benchmark:
        f"{R}/benchmarks/tune_trials/{{task}}/{{model}}/{{method}}/{{partition}}/{{trial}}.tsv"
    params:
        spec=trial_spec,
        hpo=hpo_args,
    threads: FINETUNE_THREADS
    # a study's rounds and its tuned run are a chain of jobs that cannot overlap each other: started
    # first, they run beside the other fine-tuning jobs instead of after them
    priority: 10
    resources:
        # a tuning trial trains in one process on at most one GPU, whatever training.processes or the
        # model's size says (seqpeft.training.launch.run_finetune): it asks for what it uses
        gpu=lambda wildcards: min(int(size_resources(config, wildcards.model)["gpu"]), 1),
        **FINETUNE_GPU_MODEL,
        mem_mb=lambda wildcards, attempt: int(size_resources(config, wildcards.model)["mem_mb"]) * attempt,
        # one trial trains at most the run's epochs: a fine-tuning job's time
        runtime=lambda wildcards, attempt: int(size_resources(config, wildcards.model)["runtime"]) * attempt,
        attempt=lambda wildcards, attempt: attempt,  # not retried after an error retrying cannot fix (_script.py)
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
    params:
        hpo=hpo_args,
    priority: 10
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/train.yaml"
    script:
        "../scripts/tune.py"
