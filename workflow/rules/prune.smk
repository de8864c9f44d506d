# Stage 3: prune/compensate steps over groups of blocks (engine.blocks_per_step; "all": one job per
# run), each starting from the window state the previous group left (a temp file, so intermediate
# activations never pile up), then assembly. A step writes each finished block once, into its
# output directory, as it finishes: that is also where a killed step resumes.


rule prune_step:
    input:
        dense=rules.export_dense.output.weights,
        dense_config=rules.export_dense.output.config,  # the block groups (params) are read from it
        carry=carry_in,
    output:
        # the assembled model holds every pruned block: once it is written the step's copy goes
        # (halves a grid's disk use; `snakemake --notemp` keeps them)
        blocks=temp(directory(L.pattern("step_blocks"))),
        record=L.pattern("step_record"),
        carry=temp(L.pattern("step_carry")),
    wildcard_constraints:
        run=L.RUN_NAME,  # a pruning run (a staged run's name holds a '+')
    params:
        dense=lambda wc: dense_dir(wc.model),
        icp=ICP_CLI,
        spec=lambda wc: json.dumps(experiment(wc).spec_data),
        first=lambda wc: step_groups(wc.model)[int(wc.group)].start,
        last=lambda wc: step_groups(wc.model)[int(wc.group)].stop,
        batch=config["engine"].get("batch_size", 8),
        device=DEVICE,
        offload="--offload-streams" if config["engine"].get("offload_streams") else "",
    conda:
        "../envs/icp.yaml"
    log:
        L.log("runs/{run}/step-{group}"),
    benchmark:
        L.benchmark("runs/{run}/step-{group}")
    resources:
        gpu=1 if uses_gpu() else 0,
        mem_mb=lambda wc: config["models"][wc.model].get("mem_mb", 8000),
        runtime=lambda wc: config["models"][wc.model].get("step_minutes", 60),
    shell:
        "{params.icp} prune-step --model-dir {params.dense} --spec {params.spec:q} "
        "--first {params.first} --last {params.last} --carry-in {input.carry} --blocks {output.blocks} "
        "--record {output.record} --carry-out {output.carry} --device {params.device} "
        "--batch-size {params.batch} {params.offload} > {log} 2>&1"


rule assemble_model:
    input:
        dense=rules.export_dense.output.weights,
        blocks=lambda wc: step_files(wc, "blocks"),
        records=lambda wc: step_files(wc, "json"),
    output:
        weights=run_weights(L.pattern("run_weights")),
        record=L.pattern("run_record"),
    wildcard_constraints:
        run=L.RUN_NAME,
    params:
        icp=ICP_CLI,
        dense=lambda wc: dense_dir(wc.model),
        out=lambda wc: L.model_dir(wc.model, wc.run),
        spec=lambda wc: json.dumps(experiment(wc).spec_data),
        identity=lambda wc: json.dumps(experiment(wc).identity()),
    conda:
        "../envs/icp.yaml"
    log:
        L.log("runs/{run}/assemble"),
    shell:
        "{params.icp} assemble --model-dir {params.dense} --spec {params.spec:q} "
        "--identity {params.identity:q} --blocks {input.blocks} --records {input.records} "
        "--out-dir {params.out} > {log} 2>&1"
