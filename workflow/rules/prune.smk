# Stage 3: per-block prune/compensate steps, each starting from the window state the previous
# step left (a temp file, so intermediate activations never pile up), then assembly.


rule prune_step:
    input:
        dense=rules.export_dense.output.weights,
        carry=carry_in,
    output:
        weights="results/{model}/runs/{run}/steps/{group}.safetensors",
        record="results/{model}/runs/{run}/steps/{group}.json",
        carry=temp("results/{model}/runs/{run}/steps/{group}.carry.pt"),
    params:
        icp=ICP_CLI,
        spec=lambda wc: json.dumps(experiment(wc).spec_data),
        first=lambda wc: int(wc.group) * config["engine"]["blocks_per_step"],
        last=lambda wc: (int(wc.group) + 1) * config["engine"]["blocks_per_step"],
        batch=config["engine"].get("batch_size", 8),
        device=DEVICE,
        offload="--offload-streams" if config["engine"].get("offload_streams") else "",
        progress=config["engine"].get("progress_seconds", 0),
    conda:
        "../envs/icp.yaml"
    log:
        "results/{model}/logs/runs/{run}/step-{group}.log",
    benchmark:
        "results/{model}/benchmarks/runs/{run}/step-{group}.tsv"
    resources:
        gpu=1 if uses_gpu() else 0,
        mem_mb=lambda wc: config["models"][wc.model].get("mem_mb", 8000),
        runtime=lambda wc: config["models"][wc.model].get("step_minutes", 60),
    shell:
        "{params.icp} prune-step --model-dir results/{wildcards.model}/dense --spec {params.spec:q} "
        "--first {params.first} --last {params.last} --carry-in {input.carry} --weights {output.weights} "
        "--record {output.record} --carry-out {output.carry} --device {params.device} "
        "--batch-size {params.batch} --progress-seconds {params.progress} {params.offload} > {log} 2>&1"


rule assemble_model:
    input:
        dense=rules.export_dense.output.weights,
        weights=lambda wc: step_files(wc, "safetensors"),
        records=lambda wc: step_files(wc, "json"),
    output:
        weights="results/{model}/runs/{run}/model/model.safetensors",
        record="results/{model}/runs/{run}/model/pruning.json",
    params:
        icp=ICP_CLI,
        spec=lambda wc: json.dumps(experiment(wc).spec_data),
    conda:
        "../envs/icp.yaml"
    log:
        "results/{model}/logs/runs/{run}/assemble.log",
    shell:
        "{params.icp} assemble --model-dir results/{wildcards.model}/dense --spec {params.spec:q} "
        "--weights {input.weights} --records {input.records} "
        "--out-dir results/{wildcards.model}/runs/{wildcards.run}/model > {log} 2>&1"
