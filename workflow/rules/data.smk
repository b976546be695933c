rule download:
    output:
        touch("data/raw/{dataset}.done"),
    conda:
        "../envs/mitp.yaml"
    log:
        f"{LOGS}/download/{{dataset}}.log",
    # Snakemake does not retry: `mitp data download` resumes an interrupted download itself, and a refusal, a
    # missing credential or an unreachable host cannot change on a retry
    shell:
        f"{LOGGED} mitp data download {{wildcards.dataset}} --raw data/raw/{{wildcards.dataset}}"


if BACKBONE_FILE and not W.get("standin"):  # a hub backbone: fetched once, then read offline

    localrules:
        fetch_backbone,

    rule fetch_backbone:
        output:
            f"{BACKBONE}/config.json",
        conda:
            "../envs/mitp.yaml"
        log:
            f"{LOGS}/fetch_backbone.log",
        params:
            name=config["backbone"],
        shell:
            f"{LOGGED} mitp fetch-backbone {{params.name}} --out {BACKBONE}"


rule prepare:
    input:
        "data/raw/{dataset}.done",
    output:
        "data/{dataset}/prepare_report.json",
    conda:
        "../envs/mitp.yaml"
    log:
        f"{LOGS}/prepare/{{dataset}}.log",
    threads: res("prepare", "threads")
    resources:
        mem_mb=res("prepare", "mem_mb"),
        runtime=res("prepare", "runtime"),
    params:
        raw=lambda wildcards, input: input[0].removesuffix(".done"),
    shell:
        f"{LOGGED} mitp data prepare {{wildcards.dataset}} --raw {{params.raw}} --out data/{{wildcards.dataset}} "
        f"--workers {{threads}} --cache-size {IMAGE_SIZE}"


rule standin:
    output:
        f"{W.get('standin') or 'models/standin'}/config.json",
    conda:
        "../envs/mitp.yaml"
    log:
        f"{LOGS}/standin.log",
    threads: res("light", "threads")
    resources:
        mem_mb=res("light", "mem_mb"),
        runtime=res("light", "runtime"),
    params:
        steps=W.get("standin_steps", 500),
    shell:
        f"OMP_NUM_THREADS={{threads}} {LOGGED} mitp pretrain-standin --out $(dirname {{output}}) --steps {{params.steps}}"
