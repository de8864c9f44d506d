# Stage 3b: post-pruning stages. Each reads a finished run's model and writes a run of its own,
# named '<run>+<stage>-<hash>' (its settings' hash): changing a stage's settings re-runs the stage
# and what reads it, never the pruning. Input compensation (IC) is the one stage today.


rule dense_outputs:
    input:
        dense=rules.export_dense.output.weights,
        inputs=lambda wc: X.calibration_path(config, wc.model, wc.key),  # token windows, or SAM's images
    output:
        L.pattern("dense_outputs"),
    params:
        icp=ICP_CLI,
        dense=lambda wc: dense_dir(wc.model),
        dtype=lambda wc: config["models"][wc.model].get("dtype", "float32"),
        device=DEVICE,
    conda:
        "../envs/icp.yaml"
    log:
        L.log("dense-outputs-{key}"),
    benchmark:
        L.benchmark("dense-outputs-{key}")
    resources:
        gpu=1 if uses_gpu() else 0,
    shell:
        "{params.icp} dense-outputs --model-dir {params.dense} --inputs {input.inputs} --dtype {params.dtype} "
        "--device {params.device} --out {output} > {log} 2>&1"


def staged(wc):
    """The wildcards of the staged run an input_compensation job writes (its full name)."""
    from types import SimpleNamespace

    return SimpleNamespace(model=wc.model, run=f"{wc.run}+ic-{wc.stage_key}")


def last_stage(wc):
    exp = experiment(wc)
    if not exp.stages or exp.stages[-1].name != "ic":
        raise ValueError(f"run {wc.run!r} of model {wc.model!r} does not end in an input-compensation stage")
    return exp.stages[-1]


rule input_compensation:
    input:
        weights=lambda wc: L.path("run_weights", model=wc.model, run=last_stage(staged(wc)).input_run),
        targets=lambda wc: L.path("dense_outputs", model=wc.model, key=last_stage(staged(wc)).calibration),
    output:
        weights=run_weights(L.pattern("run_weights").replace("{run}", "{run}+ic-{stage_key}")),
        record=L.pattern("run_record").replace("{run}", "{run}+ic-{stage_key}"),
    wildcard_constraints:
        stage_key=r"[0-9a-f]{8}",
    params:
        icp=ICP_CLI,
        in_dir=lambda wc: L.model_dir(wc.model, last_stage(staged(wc)).input_run),
        out_dir=lambda wc: L.model_dir(wc.model, f"{wc.run}+ic-{wc.stage_key}"),
        progress=lambda wc: L.path("stage_progress", model=wc.model, run=f"{wc.run}+ic-{wc.stage_key}"),
        stage=lambda wc: json.dumps(last_stage(staged(wc)).to_dict()),
        identity=lambda wc: json.dumps(experiment(staged(wc)).identity()),
        dtype=lambda wc: config["models"][wc.model].get("dtype", "float32"),
        device=DEVICE,
    conda:
        "../envs/icp.yaml"
    log:
        L.log("runs/{run}+ic-{stage_key}/input-compensation"),
    benchmark:
        L.benchmark("runs/{run}+ic-{stage_key}/input-compensation")
    resources:
        gpu=1 if uses_gpu() else 0,
        mem_mb=lambda wc: config["models"][wc.model].get("mem_mb", 8000),
    shell:
        "{params.icp} input-compensation --in-dir {params.in_dir} --dense-outputs {input.targets} "
        "--stage {params.stage:q} --identity {params.identity:q} --progress {params.progress} "
        "--out-dir {params.out_dir} --dtype {params.dtype} --device {params.device} > {log} 2>&1"
