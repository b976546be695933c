# One job per run: multi-GPU runs, and every run when workflow.runs_per_job is 1 (the default).
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


# workflow.runs_per_job > 1: one job per pack of single-GPU runs (common.smk, training_packs), each run exactly
# as rule train makes it, in one process. A rule without wildcards wins over rule train for the same file.
for _name, _dataset, _runs in TRAINING_PACKS:

    rule:
        name:
            f"train_{_name.replace('-', '_')}"
        input:
            data=f"data/{_dataset}/prepare_report.json",
            backbone=backbone_input,
        output:
            [f"{run_dir(_dataset, run, seed)}/{name}" for run, seed in _runs for name in ("result.json", "metrics-test.json")],
        conda:
            "../envs/mitp.yaml"
        log:
            f"{LOGS}/train/{_dataset}/pack-{_name}.log",
        benchmark:
            f"{PLANS}/{_name}.benchmark.tsv"
        threads: res("train", "threads")
        resources:
            gpu=1,
            mem_mb=res("train", "mem_mb"),
            runtime=res("train", "runtime") * len(_runs),
        params:
            plan=f"{PLANS}/{_name}.yaml",
            runs=PACK_PLANS[_name].model_dump_json(),  # a changed pack reruns it
            mitp_config=MITP_CONFIG,
            config_hash=CONFIG_HASH,
            epochs=f"--epochs {W['epochs']}" if W.get("epochs") else "",
        shell:
            f"OMP_NUM_THREADS={{threads}} {OFFLINE} {LOGGED} mitp train-runs {{params.plan}} --config {{params.mitp_config}} "
            f"--backbone {BACKBONE} {{params.epochs}} --evaluate test --no-progress"
