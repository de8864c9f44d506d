# Stage 1: the dense model as a plain checkpoint, and token windows for calibration and evaluation.


checkpoint export_dense:
    output:
        config=L.pattern("dense_config"),
        weights=L.pattern("dense_weights"),
    params:
        icp=ICP_CLI,
        source=lambda wc: config["models"][wc.model]["source"],
        dtype=lambda wc: config["models"][wc.model].get("dtype", "float32"),
        sam=lambda wc: sam_export_args(wc.model),
        dense=lambda wc: dense_dir(wc.model),
    conda:
        "../envs/icp.yaml"
    log:
        L.log("export_dense"),
    benchmark:
        L.benchmark("export_dense")
    resources:
        mem_mb=lambda wc: config["models"][wc.model].get("mem_mb", 8000),
    shell:
        "{params.icp} export-dense --source {params.source:q} --dtype {params.dtype} {params.sam} "
        "--out {params.dense} > {log} 2>&1"


rule calibration_tokens:
    input:
        rules.export_dense.output.config,
    output:
        L.pattern("calibration_tokens"),
    params:
        dense=lambda wc: dense_dir(wc.model),
        icp=ICP_CLI,
        corpus=lambda wc: json.dumps(config["corpora"][X.calibration_settings(config, wc.model, wc.key)["corpus"]]),
        cal=lambda wc: X.calibration_settings(config, wc.model, wc.key),
    conda:
        "../envs/icp.yaml"
    log:
        L.log("calib-tokens-{key}"),
    shell:
        "{params.icp} calibration --model-dir {params.dense} --corpus {params.corpus:q} "
        "--nsamples {params.cal[nsamples]} --seqlen {params.cal[seqlen]} --seed {params.cal[seed]} "
        "--sampler {params.cal[sampler]} --out {output} > {log} 2>&1"


rule shape_images:
    output:
        directory(L.pattern("shape_images")),
    params:
        icp=ICP_CLI,
        spec=lambda wc: json.dumps(shape_set_spec(wc.key)),
    conda:
        "../envs/icp.yaml"
    log:
        L.global_log("shapes-{key}"),
    shell:
        "{params.icp} shape-images --spec {params.spec:q} --out-dir {output} > {log} 2>&1"


rule calibration_images:
    input:
        rules.export_dense.output.config,
        lambda wc: image_set_inputs(X.calibration_settings(config, wc.model, wc.key)["images"]),
    output:
        L.pattern("calibration_images"),
    params:
        dense=lambda wc: dense_dir(wc.model),
        icp=ICP_CLI,
        image_set=lambda wc: json.dumps(X.concrete_image_set(config, X.calibration_settings(config, wc.model, wc.key)["images"])),
        cal=lambda wc: X.calibration_settings(config, wc.model, wc.key),
    conda:
        "../envs/icp.yaml"
    log:
        L.log("calib-images-{key}"),
    shell:
        "{params.icp} calibration-images --model-dir {params.dense} --image-set {params.image_set:q} "
        "--nsamples {params.cal[nsamples]} --seed {params.cal[seed]} --out {output} > {log} 2>&1"


rule eval_tokens:
    input:
        rules.export_dense.output.config,
    output:
        L.pattern("eval_tokens"),
    params:
        dense=lambda wc: dense_dir(wc.model),
        icp=ICP_CLI,
        corpus=lambda wc: json.dumps(config["corpora"][wc.corpus]),
        seqlen=config["perplexity"]["seqlen"],
        max_windows=config["perplexity"].get("max_windows") or 0,
    conda:
        "../envs/icp.yaml"
    log:
        L.log("eval-{corpus}-{key}"),
    shell:
        "{params.icp} eval-tokens --model-dir {params.dense} --corpus {params.corpus:q} "
        "--seqlen {params.seqlen} --max-windows {params.max_windows} --out {output} > {log} 2>&1"
