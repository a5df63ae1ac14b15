# What an allow_unpinned run used: the commit of every hub model and the checksums of every
# downloaded source (seqpeft.config.pins); a ready-made pins file to review.


rule resolved_pins:
    input:
        **resolved_pins_inputs(config),
    output:
        f"{R}/pins.resolved.yaml",
    log:
        f"{R}/logs/resolved_pins.log",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../../envs/data.yaml"
    script:
        "../scripts/resolved_pins.py"
