rule report:
    input:
        paper=local("workflow/report/paper.yaml"),  # ships with the workflow, never in remote storage
        metrics=[f"{folder}/metrics-test.json" for d in W["datasets"] for folder in run_dirs(d)],
    output:
        table1=report(f"{REPORT}/table1.md", caption="../report/table1.rst", category="Tables"),
        table2=report(f"{REPORT}/table2.md", caption="../report/table2.rst", category="Tables"),
        table3=report(f"{REPORT}/table3.md", caption="../report/table3.rst", category="Tables"),
        heads=report(f"{REPORT}/heads.md", caption="../report/heads.rst", category="Tables"),
        readings=report(f"{REPORT}/readings.md", caption="../report/readings.rst", category="Tables"),
        runs=report(f"{REPORT}/runs.csv", caption="../report/runs.rst", category="Tables"),
        fig3=report(f"{REPORT}/fig3.png", caption="../report/fig3.rst", category="Figures"),
        fig4=report(f"{REPORT}/fig4.png", caption="../report/fig4.rst", category="Figures"),
        curves=report(f"{REPORT}/curves.png", caption="../report/curves.rst", category="Figures"),
        summary=f"{REPORT}/summary.json",
    conda:
        "../envs/mitp.yaml"
    log:
        f"{LOGS}/report.log",
    params:
        datasets=",".join(W["datasets"]),
        runs=lambda wildcards, input: RUNS,
        report=lambda wildcards, output: os.path.dirname(output.summary),
    shell:
        f"{LOGGED} mitp report --runs {{params.runs}} --paper {{input.paper}} --out {{params.report}} --datasets {{params.datasets}}"


rule report_quick:
    input:
        paper=local("workflow/report/paper.yaml"),
        metrics=lambda wildcards: f"{run_dir(*quick_run())}/metrics-test.json",
    output:
        table1=f"{QUICK_REPORT}/table1.md",
        summary=f"{QUICK_REPORT}/summary.json",
    conda:
        "../envs/mitp.yaml"
    log:
        f"{LOGS}/report_quick.log",
    params:
        dataset=lambda wildcards: quick_run()[0],
        runs=lambda wildcards, input: RUNS,
        report=lambda wildcards, output: os.path.dirname(output.summary),
    # the quick target's data set alone; runs of it that the full workflow has finished appear too
    shell:
        f"{LOGGED} mitp report --runs {{params.runs}} --paper {{input.paper}} --out {{params.report}} --datasets {{params.dataset}}"
