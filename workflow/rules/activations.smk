# Stage 2: dense inputs of block 0 on the calibration windows (or images), once per (model, calibration),
# shared by every method, sparsity and pattern.


rule block0_activations:
    input:
        dense=rules.export_dense.output.weights,
        inputs=lambda wc: X.calibration_path(config, wc.model, wc.key),
    output:
        L.pattern("block0_inputs"),
    params:
        dense=lambda wc: dense_dir(wc.model),
        icp=ICP_CLI,
        dtype=lambda wc: config["models"][wc.model].get("dtype", "float32"),
    conda:
        "../envs/icp.yaml"
    log:
        L.log("activations-{key}"),
    benchmark:
        L.benchmark("activations-{key}")
    shell:
        "{params.icp} activations --model-dir {params.dense} --tokens {input.inputs} "
        "--dtype {params.dtype} --out {output} > {log} 2>&1"
