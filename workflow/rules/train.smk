rule train:
    input:
        data="data/{dataset}/prepare_report.json",
        backbone=backbone_input,
    output:
        result=f"{RUNS}/{{dataset}}/{{run}}/seed{{seed}}/result.json",
        # evaluated in the process that trained it (mitp train --evaluate): no second process loads the backbone
        metrics=f"{RUNS}/{{dataset}}/{{run}}/seed{{seed}}/metrics-test.json",
    conda:
        "../envs/mitp.yaml"
    log:
        f"{LOGS}/train/{{dataset}}/{{run}}/seed{{seed}}.log",
    benchmark:
        f"{RUNS}/{{dataset}}/{{run}}/seed{{seed}}/benchmark.tsv"
    threads: res("train", "threads")
    resources:
        gpu=gpu_resource,
        mem_mb=res("train", "mem_mb"),
        runtime=res("train", "runtime"),
    params:
        setting=lambda wc: setting_of(wc.run),
        fraction=lambda wc: fraction_option(wc.run),
        launcher=launcher,
        mitp_config=MITP_CONFIG,
        config_hash=CONFIG_HASH,  # a changed model or training value reruns the training jobs
        epochs=f"--epochs {W['epochs']}" if W.get("epochs") else "",
    shell:
        f"OMP_NUM_THREADS={{threads}} {OFFLINE} {LOGGED} {{params.launcher}} train --config {{params.mitp_config}} "
        f"--dataset {{wildcards.dataset}} --setting {{params.setting}} --backbone {BACKBONE} {{params.fraction}} "
        f"{{params.epochs}} --seed {{wildcards.seed}} --out $(dirname {{output.result}}) --evaluate test --no-progress"
