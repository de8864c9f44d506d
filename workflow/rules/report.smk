# Stage 5: every number into results/results.csv, the figures, and the six tables into
# results/tables.md.   snakemake --report results/report.html  bundles them with captions.

from icp.report.ablations import ablation_plot_names

PLOTS = ["perplexity_vs_sparsity", "zeroshot_mean", "block_error", "cost"]
ABLATION_PLOTS = ablation_plot_names(config)  # one per swept parameter


rule collect_results:
    input:
        X.evaluation_targets(config),
    output:
        L.pattern("results_csv"),
    params:
        icp=ICP_CLI,
    conda:
        "../envs/icp.yaml"
    log:
        L.global_log("collect"),
    shell:
        "{params.icp} collect --evals {input} --csv {output} > {log} 2>&1"


rule plots:
    input:
        csv=L.pattern("results_csv"),
        records=X.run_records(config),
    output:
        **{
            f"{name}_png": report(
                L.path("plot", name=name, ext="png"),
                caption=f"{workflow.basedir}/workflow/report/{name.split('_')[0] if name in ABLATION_PLOTS else name}.rst",
                category="Plots",
            )
            for name in PLOTS + ABLATION_PLOTS
        },
        **{f"{name}_svg": L.path("plot", name=name, ext="svg") for name in PLOTS + ABLATION_PLOTS},
        **{f"{name}_csv": L.path("plot", name=name, ext="csv") for name in PLOTS + ABLATION_PLOTS},
    params:
        icp=ICP_CLI,
        config=REPORT_CONFIG,
        out_dir=L.pattern("plots_dir"),
    conda:
        "../envs/icp.yaml"
    log:
        L.global_log("plots"),
    shell:
        "{params.icp} plots --csv {input.csv} --records {input.records} --config {params.config:q} "
        "--out-dir {params.out_dir} > {log} 2>&1"


rule tables:
    input:
        csv=L.pattern("results_csv"),
        plots=[L.path("plot", name=name, ext="png") for name in PLOTS + ABLATION_PLOTS],
        cost=L.path("plot", name="cost", ext="csv"),
    output:
        report(L.pattern("tables"), caption=f"{workflow.basedir}/workflow/report/tables.rst", category="Tables"),
    params:
        icp=ICP_CLI,
        config=REPORT_CONFIG,
    conda:
        "../envs/icp.yaml"
    log:
        L.global_log("tables"),
    shell:
        "{params.icp} tables --config {params.config:q} --csv {input.csv} --plots {input.plots} {input.cost} "
        "--md {output} > {log} 2>&1"
