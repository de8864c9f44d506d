# Stage 5: every number into results/results.csv, the figures, and the six tables into
# results/tables.md.   snakemake --report results/report.html  bundles them with captions.

from icp.report.ablations import ablation_plot_names

PLOTS = ["perplexity_vs_sparsity", "zeroshot_mean", "block_error", "cost"]
ABLATION_PLOTS = ablation_plot_names(config)  # one per swept parameter


rule collect_results:
    input:
        X.evaluation_targets(config),
    output:
        "results/results.csv",
    params:
        icp=ICP_CLI,
    conda:
        "../envs/icp.yaml"
    log:
        "results/logs/collect.log",
    shell:
        "{params.icp} collect --evals {input} --csv {output} > {log} 2>&1"


rule plots:
    input:
        csv="results/results.csv",
        records=X.run_records(config),
    output:
        **{
            f"{name}_png": report(
                f"results/plots/{name}.png",
                caption=f"{workflow.basedir}/workflow/report/{name.split('_')[0] if name in ABLATION_PLOTS else name}.rst",
                category="Plots",
            )
            for name in PLOTS + ABLATION_PLOTS
        },
        **{f"{name}_svg": f"results/plots/{name}.svg" for name in PLOTS + ABLATION_PLOTS},
        **{f"{name}_csv": f"results/plots/{name}.csv" for name in PLOTS + ABLATION_PLOTS},
    params:
        icp=ICP_CLI,
        config=json.dumps(config),
    conda:
        "../envs/icp.yaml"
    log:
        "results/logs/plots.log",
    shell:
        "{params.icp} plots --csv {input.csv} --records {input.records} --config {params.config:q} "
        "--out-dir results/plots > {log} 2>&1"


rule tables:
    input:
        csv="results/results.csv",
        plots=[f"results/plots/{name}.png" for name in PLOTS + ABLATION_PLOTS],
        cost="results/plots/cost.csv",
    output:
        report("results/tables.md", caption=f"{workflow.basedir}/workflow/report/tables.rst", category="Tables"),
    params:
        icp=ICP_CLI,
        config=json.dumps(config),
    conda:
        "../envs/icp.yaml"
    log:
        "results/logs/tables.log",
    shell:
        "{params.icp} tables --config {params.config:q} --csv {input.csv} --plots {input.plots} {input.cost} "
        "--md {output} > {log} 2>&1"
