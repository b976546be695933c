rule evaluate:
    input:
        f"{RUNS}/{{dataset}}/{{run}}/seed{{seed}}/result.json",
    output:
        f"{RUNS}/{{dataset}}/{{run}}/seed{{seed}}/metrics-test.json",
    conda:
        "../envs/mitp.yaml"
    log:
        f"{LOGS}/evaluate/{{dataset}}/{{run}}/seed{{seed}}.log",
    threads: res("evaluate", "threads")
    resources:
        gpu=1,
        mem_mb=res("evaluate", "mem_mb"),
        runtime=res("evaluate", "runtime"),
    shell:
        f"OMP_NUM_THREADS={{threads}} {OFFLINE} {LOGGED} mitp evaluate --checkpoint $(dirname {{input}}) --split test --out {{output}}"
