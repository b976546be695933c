# Training jobs evaluate their best checkpoint on the test split themselves (metrics-test.json, rule train).
# This rule evaluates a finished run again, on any split, in a process of its own: after the evaluation code
# or the prepared test data changed, or for the validation split, e.g.
#   snakemake --profile workflow/profiles/demo results/demo/runs/demo-food101/mitp/seed0/reevaluated/metrics-val.json
rule evaluate:
    input:
        f"{RUNS}/{{dataset}}/{{run}}/seed{{seed}}/result.json",
    output:
        f"{RUNS}/{{dataset}}/{{run}}/seed{{seed}}/reevaluated/metrics-{{split}}.json",
    conda:
        "../envs/mitp.yaml"
    log:
        f"{LOGS}/evaluate/{{dataset}}/{{run}}/seed{{seed}}-{{split}}.log",
    threads: res("evaluate", "threads")
    resources:
        gpu=1,
        mem_mb=res("evaluate", "mem_mb"),
        runtime=res("evaluate", "runtime"),
    shell:
        f"OMP_NUM_THREADS={{threads}} {OFFLINE} {LOGGED} mitp evaluate --checkpoint $(dirname {{input}}) --split {{wildcards.split}} --out {{output}}"
