rule download_source:
    output:
        directory(f"{R}/sources/{{source}}"),
    log:
        f"{R}/logs/download_source/{{source}}.log",
    params:
        spec=lambda wildcards: canonical(config["sources"][wildcards.source]),
    wildcard_constraints:
        source=DOWNLOADED_SOURCE,
    threads: 1
    resources:
        mem_mb=2000,
        runtime=120,
    retries: 3
    conda:
        "../../envs/data.yaml"
    script:
        "../scripts/download_source.py"


rule generate_demo_source:
    output:
        directory(f"{R}/sources/{{source}}"),
    log:
        f"{R}/logs/generate_demo_source/{{source}}.log",
    params:
        spec=lambda wildcards: canonical(config["sources"][wildcards.source]),
    wildcard_constraints:
        source=SYNTHETIC_SOURCE,
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
    conda:
        "../../envs/data.yaml"
    script:
        "../scripts/generate_demo_source.py"


rule derive_source:
    input:
        unpack(derive_source_input),
    output:
        directory(f"{R}/sources/{{source}}"),
    log:
        f"{R}/logs/derive_source/{{source}}.log",
    params:
        spec=lambda wildcards: canonical(config["sources"][wildcards.source]),
    wildcard_constraints:
        source=DERIVED_SOURCE,
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
    conda:
        "../../envs/data.yaml"
    script:
        "../scripts/derive_source.py"
