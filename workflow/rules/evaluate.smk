# Stage 4: evaluations, one small JSON each: perplexity per corpus, zero-shot accuracy (lm-eval),
# SAM single-point IoU per image set.


rule perplexity:
    input:
        weights=model_weights,
        tokens=lambda wc: L.path("eval_tokens", model=wc.model, corpus=wc.corpus, key=wc.key),
    output:
        L.pattern("perplexity"),
    params:
        icp=ICP_CLI,
        model_dir=lambda wc: model_dir(wc.model, wc.run),
        meta=lambda wc: run_meta(wc, corpus=wc.corpus),
        dtype=lambda wc: config["models"][wc.model].get("dtype", "float32"),
        device=DEVICE,
        batch=config["perplexity"].get("batch_size", 4),
    conda:
        "../envs/icp.yaml"
    log:
        L.log("evals/{run}/ppl-{corpus}-{key}"),
    benchmark:
        L.benchmark("evals/{run}/ppl-{corpus}-{key}")
    resources:
        gpu=1 if uses_gpu() else 0,
    shell:
        "{params.icp} perplexity --model-dir {params.model_dir} --tokens {input.tokens} "
        "--meta {params.meta:q} --dtype {params.dtype} --device {params.device} --batch-size {params.batch} "
        "--out {output} > {log} 2>&1"


rule zeroshot_tasks:
    output:
        directory(L.pattern("zeroshot_tasks")),
    params:
        icp=ICP_CLI,
        settings=json.dumps(config["zeroshot"]),
    conda:
        "../envs/icp.yaml"
    log:
        L.global_log("zeroshot_tasks-{key}"),
    shell:
        "{params.icp} zeroshot-tasks --settings {params.settings:q} --out-dir {output} > {log} 2>&1"


rule zeroshot:
    input:
        weights=model_weights,
        tasks=local_task_dir() if config["zeroshot"].get("local_tasks") else [],
    output:
        L.pattern("zeroshot"),
    params:
        icp=ICP_CLI,
        model_dir=lambda wc: model_dir(wc.model, wc.run),
        meta=lambda wc: run_meta(wc),
        settings=lambda wc: json.dumps(X.zeroshot_settings(config, wc.model)),
        task_dir=f"--task-dir {local_task_dir()}" if config["zeroshot"].get("local_tasks") else "",
        dtype=lambda wc: config["models"][wc.model].get("dtype", "float32"),
        device=DEVICE,
    conda:
        "../envs/icp.yaml"
    log:
        L.log("evals/{run}/zeroshot-{key}"),
    benchmark:
        L.benchmark("evals/{run}/zeroshot-{key}")
    resources:
        gpu=1 if uses_gpu() else 0,
    shell:
        "{params.icp} zeroshot --model-dir {params.model_dir} --settings {params.settings:q} "
        "{params.task_dir} --meta {params.meta:q} --dtype {params.dtype} --device {params.device} "
        "--out {output} > {log} 2>&1"


rule sam_iou:
    input:
        weights=model_weights,
        images=lambda wc: image_set_inputs(wc.dataset),
    output:
        L.pattern("iou"),
    params:
        icp=ICP_CLI,
        model_dir=lambda wc: model_dir(wc.model, wc.run),
        image_set=lambda wc: json.dumps(X.concrete_image_set(config, wc.dataset)),
        meta=lambda wc: run_meta(wc, dataset=wc.dataset),
        selection=config.get("sam", {}).get("evaluation", {}).get("selection", "best_score"),
        seed=config.get("sam", {}).get("evaluation", {}).get("seed", 0),
        dtype=lambda wc: config["models"][wc.model].get("dtype", "float32"),
        device=DEVICE,
    conda:
        "../envs/icp.yaml"
    log:
        L.log("evals/{run}/iou-{dataset}-{key}"),
    benchmark:
        L.benchmark("evals/{run}/iou-{dataset}-{key}")
    resources:
        gpu=1 if uses_gpu() else 0,
    shell:
        "{params.icp} sam-iou --model-dir {params.model_dir} --image-set {params.image_set:q} "
        "--selection {params.selection} --seed {params.seed} --meta {params.meta:q} --dtype {params.dtype} "
        "--device {params.device} --out {output} > {log} 2>&1"


rule inference_speed:
    input:
        dense=lambda wc: L.path("dense_weights", model=wc.model),
        weights=model_weights,
    output:
        L.pattern("inference"),
    params:
        icp=ICP_CLI,
        model_dir=lambda wc: model_dir(wc.model, wc.run),
        meta=lambda wc: run_meta(wc),
        dense=lambda wc: dense_dir(wc.model),
        settings=json.dumps(X.inference_settings(config)),
        device=DEVICE,
        slots=JOBS_PER_GPU,
    conda:
        "../envs/icp.yaml"
    log:
        L.log("evals/{run}/inference-{key}"),
    benchmark:
        L.benchmark("evals/{run}/inference-{key}")
    resources:
        # timings need a GPU to themselves: the job counts as jobs_per_gpu GPU jobs here and, on a
        # multi-GPU host, locks every slot of the GPU it is pinned to (icp/gpu_slots.py)
        gpu=JOBS_PER_GPU if uses_gpu() else 0,
    shell:
        "{params.icp} inference-speed --dense-dir {params.dense} --model-dir {params.model_dir} "
        "--settings {params.settings:q} --meta {params.meta:q} --device {params.device} --gpu-slots {params.slots} "
        "--out {output} > {log} 2>&1"
