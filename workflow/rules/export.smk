rule export:
    input:
        f"{RUNS}/{{dataset}}/{{setting}}/seed{W['seeds'][0]}/result.json",
    output:
        directory(f"{BUNDLES}/{{dataset}}/{{setting}}"),
    conda:
        "../envs/mitp.yaml"
    log:
        f"{LOGS}/export/{{dataset}}/{{setting}}.log",
    priority: 1  # as soon as its run is trained, beside the other training jobs, not all at the end
    threads: res("export", "threads")
    resources:
        mem_mb=res("export", "mem_mb"),
        runtime=res("export", "runtime"),
    params:
        variants=" ".join(flag for flag, wanted in (("--fp16", W["export_fp16"]), ("--int8", W["export_int8"])) if wanted),
    shell:
        f"OMP_NUM_THREADS={{threads}} {OFFLINE} {LOGGED} mitp export --checkpoint $(dirname {{input}}) --out {{output}} {{params.variants}}"


rule sample_pairs:
    input:
        "data/{dataset}/prepare_report.json",
    output:
        f"{BUNDLES}/{{dataset}}/smoke_pairs.jsonl",
    conda:
        "../envs/mitp.yaml"
    log:
        f"{LOGS}/export/{{dataset}}/sample_pairs.log",
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
        f"{LOGS}/export/{{dataset}}/{{setting}}.predict.log",
    threads: res("light", "threads")
    resources:
        mem_mb=res("light", "mem_mb"),
        runtime=res("light", "runtime"),
    shell:
        f"{LOGGED} bash -c 'mitp bundle verify {{input.bundle}} && mitp predict --batch {{input.pairs}} --model {{input.bundle}} --provider cpu --out {{output}}'"
