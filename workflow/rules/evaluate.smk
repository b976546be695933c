rule evaluate:
    input:
        f"{RUNS}/{{dataset}}/{{run}}/seed{{seed}}/result.json",
    output:
        f"{RUNS}/{{dataset}}/{{run}}/seed{{seed}}/metrics-test.json",
    conda:
        "../envs/mitp.yaml"
    log:
        f"logs/evaluate/{{dataset}}/{{run}}/seed{{seed}}.log",
    threads: W["train_threads"]
    resources:
        gpu=1,
    shell:
        "OMP_NUM_THREADS={threads} mitp evaluate --checkpoint $(dirname {input}) --split test --out {output} > {log} 2>&1"
