rule train:
    input:
        data="data/{dataset}/prepare_report.json",
        backbone=backbone_input,
    output:
        f"{RUNS}/{{dataset}}/{{run}}/seed{{seed}}/result.json",
    conda:
        "../envs/mitp.yaml"
    log:
        f"logs/train/{{dataset}}/{{run}}/seed{{seed}}.log",
    benchmark:
        f"{RUNS}/{{dataset}}/{{run}}/seed{{seed}}/benchmark.tsv"
    threads: W["train_threads"]
    resources:
        gpu=gpus_for,
    params:
        setting=lambda wc: setting_of(wc.run),
        fraction=lambda wc: fraction_option(wc.run),
        launcher=launcher,
        mitp_config=MITP_CONFIG,
        epochs=f"--epochs {W['epochs']}" if W.get("epochs") else "",
    shell:
        "OMP_NUM_THREADS={threads} {params.launcher} train --config {params.mitp_config} --dataset {wildcards.dataset} "
        "--setting {params.setting} {params.fraction} {params.epochs} --seed {wildcards.seed} --out $(dirname {output}) "
        "--no-progress > {log} 2>&1"
