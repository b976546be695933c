rule download:
    output:
        touch("data/raw/{dataset}.done"),
    conda:
        "../envs/mitp.yaml"
    log:
        "logs/download/{dataset}.log",
    retries: 3
    shell:
        "mitp data download {wildcards.dataset} --raw data/raw/{wildcards.dataset} > {log} 2>&1"


rule prepare:
    input:
        "data/raw/{dataset}.done",
    output:
        "data/{dataset}/prepare_report.json",
    conda:
        "../envs/mitp.yaml"
    log:
        "logs/prepare/{dataset}.log",
    threads: 4
    params:
        raw=lambda wildcards, input: input[0].removesuffix(".done"),
    shell:
        "mitp data prepare {wildcards.dataset} --raw {params.raw} --out data/{wildcards.dataset} "
        "--workers {threads} > {log} 2>&1"


rule standin:
    output:
        f"{W.get('standin') or 'models/standin'}/config.json",
    conda:
        "../envs/mitp.yaml"
    log:
        "logs/standin.log",
    threads: 2
    params:
        steps=W.get("standin_steps", 500),
    shell:
        "OMP_NUM_THREADS={threads} mitp pretrain-standin --out $(dirname {output}) --steps {params.steps} > {log} 2>&1"
