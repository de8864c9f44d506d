# Stage 5: every number into results/results.csv, and the six tables into results/tables.md.


rule tables:
    input:
        X.evaluation_targets(config),
    output:
        csv="results/results.csv",
        md="results/tables.md",
    params:
        config=json.dumps(config),
    log:
        "results/logs/tables.log",
    shell:
        "{PYTHON} -m icp.cli tables --config {params.config:q} --evals {input} "
        "--csv {output.csv} --md {output.md} > {log} 2>&1"
