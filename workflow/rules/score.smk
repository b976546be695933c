# `snakemake score`: the collection named in the config's `score:` block, one job per input shard (each
# with one GPU where score.gpus says so), gathered into one manifest. On a cluster profile the jobs spread
# over its nodes; each writes its own shard's files, so they never collide (mitp.score.engine).
#   snakemake score --cores 2 --configfile config.yaml score.yaml     (score.yaml: score: {input: pairs/, model: bundles/food101})


rule score_shard:
    input:
        SCORE.get("input", []),
    output:
        scores=f"{SCORE_OUT}/shards/{{shard}}.parquet",
        record=f"{SCORE_OUT}/shards/{{shard}}.json",
    conda:
        "../envs/mitp.yaml"
    log:
        f"{LOGS}/score/{{shard}}.log",
    threads: res("export", "threads")
    resources:
        gpu=SCORE.get("gpus", 1),
        mem_mb=res("export", "mem_mb"),
        runtime=res("export", "runtime"),
    params:
        model=SCORE.get("model", ""),
        options=f"--variant {SCORE.get('variant', 'fp32')} --batch-size {SCORE.get('batch_size', 32)}",
    shell:
        f"{LOGGED} mitp score {{input}} --model {{params.model}} --out {SCORE_OUT} --shard {{wildcards.shard}} {{params.options}} --no-progress"


rule score:
    input:
        score_records,
    output:
        f"{SCORE_OUT}/manifest.json",
    conda:
        "../envs/mitp.yaml"
    log:
        f"{LOGS}/score/manifest.log",
    params:
        source=SCORE.get("input", ""),
        model=SCORE.get("model", ""),
        variant=SCORE.get("variant", "fp32"),
    shell:
        f"{LOGGED} mitp score {{params.source}} --model {{params.model}} --out {SCORE_OUT} --variant {{params.variant}} --no-progress"
