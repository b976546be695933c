rule export:
    input:
        f"{RUNS}/{{dataset}}/{{setting}}/seed{W['seeds'][0]}/result.json",
    output:
        directory(f"{BUNDLES}/{{dataset}}/{{setting}}"),
    conda:
        "../envs/mitp.yaml"
    log:
        "logs/export/{dataset}/{setting}.log",
    threads: W["train_threads"]
    params:
        variants=" ".join(flag for flag, wanted in (("--fp16", W["export_fp16"]), ("--int8", W["export_int8"])) if wanted),
    shell:
        "OMP_NUM_THREADS={threads} mitp export --checkpoint $(dirname {input}) --out {output} {params.variants} > {log} 2>&1"


rule sample_pairs:
    input:
        "data/{dataset}/prepare_report.json",
    output:
        f"{BUNDLES}/{{dataset}}/smoke_pairs.jsonl",
    conda:
        "../envs/mitp.yaml"
    log:
        "logs/export/{dataset}/sample_pairs.log",
    params:
        pairs=8,
    script:
        "../scripts/sample_pairs.py"


rule predict_smoke:
    input:
        bundle=f"{BUNDLES}/{{dataset}}/{{setting}}",
        pairs=f"{BUNDLES}/{{dataset}}/smoke_pairs.jsonl",
    output:
        f"{BUNDLES}/{{dataset}}/{{setting}}.predictions.jsonl",
    conda:
        "../envs/mitp.yaml"
    log:
        "logs/export/{dataset}/{setting}.predict.log",
    shell:
        "mitp predict --batch {input.pairs} --model {input.bundle} --out {output} > {log} 2>&1"
