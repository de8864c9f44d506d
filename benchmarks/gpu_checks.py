"""Correctness of the engine on a CUDA device, on tiny random OPT and Llama models (seconds).

    python benchmarks/gpu_checks.py

Checks, for each family and for fp32 and fp16 weights:
- block-wise perplexity on the GPU equals the whole-model perplexity on the GPU;
- SparseGPT with the streams in host memory gives the same weights as with the streams on the GPU;
- ICP (alpha/beta, one epoch) runs on the GPU and prunes exactly the target fraction;
- a GPU-pruned model's perplexity is close to the CPU-pruned one's (SparseGPT).
And for a tiny random SAM: ICP 2:4 + int4 on the GPU keeps every N:M group and grid, SAM's
block-wise encoder on the GPU matches the CPU one, and the single-point IoU evaluation runs on
the GPU and agrees with the CPU's.
Exits non-zero on the first failure.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from tiny import generated_text, write_tiny_model  # noqa: E402

from icp.activations import block0_inputs  # noqa: E402
from icp.checkpoint import assemble  # noqa: E402
from icp.data.tokens import calibration_windows, evaluation_windows, tokenize_stream  # noqa: E402
from icp.evaluate.perplexity import perplexity, perplexity_blockwise  # noqa: E402
from icp.models import adapter_for  # noqa: E402
from icp.models.loading import load_model  # noqa: E402
from icp.runs import RunSpec, prune_group  # noqa: E402


def prune(model_dir, spec, x0_path, out, device, offload=False):
    prune_group(model_dir, spec, range(0, 100), x0_path, out / "blocks", out / "r.json", out / "c.pt",
                device=device, offload_streams=offload, log=lambda s: None)
    assemble(model_dir, [out / "blocks"], out / "model", {})
    return out / "model"


def check_sparsegpt_fast_path() -> list[tuple[int, int, str]]:
    """SparseGPT's fast path against the plain one on layer shapes of OPT-6.7B / Llama-2-7B, fp16
    weights and correlated fp16 inputs: the fused sweep (the default on CUDA) equal to the plain one
    bit for bit; the half-precision Hessian product against an fp32 one. The opt-in lazy update
    groups and flip factor are reported against the plain path and judged by their distance to a
    float64 sweep beside the plain path's, not asserted: returns the cases where one strayed further
    from float64 than the plain fp32 path (by more than half as much again)."""
    from torch import nn

    from icp.methods import make_pruner
    from icp.methods.pattern import Pattern
    from icp.methods.sparsegpt import InputHessian
    from icp.methods.wanda import FeatureNorms

    g = torch.Generator(device="cuda").manual_seed(0)
    opt_in_failures = []
    for rows, cols in ((4096, 4096), (11008, 4096), (4096, 11008)):
        mixing = torch.eye(cols, device="cuda") + 0.05 * torch.randn(cols, cols, device="cuda", generator=g)
        scales = torch.rand(cols, device="cuda", generator=g) * 2 + 0.1
        x = ((torch.randn(8 * 1024, cols, device="cuda", generator=g) @ mixing) * scales).half()
        held_out = ((torch.randn(1024, cols, device="cuda", generator=g) @ mixing) * scales).half()
        weight = (torch.randn(rows, cols, device="cuda", generator=g) * 0.02).half()

        half, full = InputHessian(cols, "cuda"), InputHessian(cols, "cuda")
        for chunk in x.split(2048):
            half.add_batch(chunk)
            full.add_batch(chunk.float())
        hessian_err = float((half.matrix - full.matrix).norm() / full.matrix.norm())
        assert hessian_err < 1e-5, ("half-precision Hessian", hessian_err)
        on_gpu, on_cpu = FeatureNorms(cols, "cuda"), FeatureNorms(cols, "cpu")
        for chunk in x.split(2048):
            on_gpu.add_batch(chunk)
            on_cpu.add_batch(chunk.cpu())
        norms_err = float((on_gpu.rms().cpu() - on_cpu.rms()).norm() / on_cpu.rms().norm())
        assert norms_err < 1e-5, ("Wanda feature norms on the GPU", norms_err)

        for pattern in (Pattern(sparsity=0.5), Pattern(n=2, m=4), Pattern(n=2, m=4, wbits=4), Pattern(sparsity=0.7, wbits=3)):
            outputs, masks, seconds = {}, {}, {}
            variants = {"torch": {"kernel": "torch"}, "fused": {"kernel": "triton"},
                        "lazy": {"lazy_columns": 1024}, "flip": {"flip_factor": True}}
            for name, options in variants.items():
                layer = nn.Linear(cols, rows, bias=False, device="cuda", dtype=torch.float16)
                layer.weight.data = weight.clone()
                pruner = make_pruner("sparsegpt", layer, options)
                for chunk in x.split(2048):
                    pruner.add_batch(chunk)
                torch.cuda.synchronize()
                started = time.perf_counter()
                masks[name] = pruner.prune(pattern).mask
                torch.cuda.synchronize()
                seconds[name] = time.perf_counter() - started
                outputs[name] = (held_out @ layer.weight.detach().t()).float()
            apart = {name: (float((masks["torch"] != masks[name]).float().mean()),
                            float((outputs[name] - outputs["torch"]).norm() / outputs["torch"].norm()))
                     for name in ("fused", "lazy", "flip")}
            print(f"ok sparsegpt fast paths {rows}x{cols} {pattern}: "
                  + "; ".join(f"{name} mask mismatch {m:.2e}, output rel. error {r:.2e}" for name, (m, r) in apart.items())
                  + f"; Hessian rel. error {hessian_err:.1e}, Wanda norms rel. error {norms_err:.1e}; prune "
                  + ", ".join(f"{name} {t:.3f} s" for name, t in seconds.items()), flush=True)
            assert apart["fused"][0] == 0 and apart["fused"][1] < 1e-6, ("fused", rows, cols, pattern, apart)  # no FMA: same roundings
            if not pattern.quantize:  # the opt-in paths, judged by their distance to a float64 sweep
                reference = fp64_outputs(x, held_out, weight, pattern)
                to_fp64 = {k: float((outputs[k] - reference).norm() / reference.norm()) for k in ("torch", "lazy", "flip")}
                verdict = "ok" if max(to_fp64["lazy"], to_fp64["flip"]) <= 1.5 * to_fp64["torch"] else "FAIL"
                print(f"{verdict} sparsegpt opt-in paths {rows}x{cols} {pattern}: distance to fp64: "
                      + ", ".join(f"{k} {v:.2e}" for k, v in to_fp64.items()), flush=True)
                opt_in_failures += [] if verdict == "ok" else [(rows, cols, str(pattern))]
    return opt_in_failures


def fp64_outputs(x, held_out, weight, pattern):
    """The plain sweep in float64 on the GPU (Hessian, factor and updates): the outputs a rounding-free
    SparseGPT would give, to judge which fp32 path strays."""
    from icp.methods.sparsegpt import InputHessian, sweep_blocks, sweep_columns

    hessian = InputHessian(x.shape[1], x.device)
    hessian.matrix = hessian.matrix.double()
    for chunk in x.split(2048):
        hessian.matrix.addmm_(chunk.double().t(), chunk.double(), alpha=2 / x.shape[0])
    hessian.tokens = x.shape[0]
    hinv, _ = hessian.inverse_factor(0.01)
    w = weight.double().clone()
    sweep_blocks(w, hinv, pattern, None, sweep_columns, 128, 128)
    return (held_out.double() @ w.t()).float()


def main() -> None:
    assert torch.cuda.is_available(), "no CUDA device"
    opt_in_failures = check_sparsegpt_fast_path()
    check_sliding_window_families()
    root = Path(tempfile.mkdtemp())
    text = generated_text()
    for family in ("llama", "opt"):
        for dtype in ("float32", "float16"):
            model_dir = write_tiny_model(root / family, family, blocks=4, hidden=128)
            model, tok = load_model(str(model_dir), dtype)
            adapter = adapter_for(model.config.model_type)
            windows = calibration_windows(tok, [text], 16, 64, 0)
            x0 = block0_inputs(model, adapter, windows)
            torch.save({"block0_inputs": x0}, root / "x0.pt")
            evals = evaluation_windows(tokenize_stream(tok, [text]), 64, 16)

            full = perplexity(model.to("cuda"), evals, batch_size=4)
            model.to("cpu")
            blockwise = perplexity_blockwise(model, adapter, evals, "cuda", batch_size=4)
            tol = 1e-4 if dtype == "float32" else 2e-3
            assert abs(blockwise - full) / full < tol, (family, dtype, full, blockwise)

            sgpt = RunSpec("sparsegpt", sparsity=0.5)
            on_gpu = prune(model_dir, sgpt, root / "x0.pt", root / "gpu", "cuda")
            on_host = prune(model_dir, sgpt, root / "x0.pt", root / "host", "cuda", offload=True)
            a, b = load_file(str(on_gpu / "model.safetensors")), load_file(str(on_host / "model.safetensors"))
            assert all(torch.equal(a[k], b[k]) for k in a), "offloaded streams changed the result"

            check_consumed_streams(model_dir, x0, dtype)

            icp = prune(model_dir, RunSpec("icp", sparsity=0.6, alpha=0.8, beta=0.9, compensation={"lr": 1e-3}),
                        root / "x0.pt", root / "icp", "cuda", offload=True)
            pruned, _ = load_model(str(icp), dtype)
            zeros = total = 0
            for block in adapter.blocks(pruned):
                for linear in adapter.prunable_linears(block).values():
                    zeros += int((linear.weight == 0).sum())
                    total += linear.weight.numel()
            assert abs(zeros / total - 0.6) < 2e-3, zeros / total
            icp_ppl = perplexity(pruned.to("cuda"), evals, batch_size=4)

            if dtype == "float32":
                on_cpu = prune(model_dir, sgpt, root / "x0.pt", root / "cpu", "cpu")
                ppl_gpu = perplexity(load_model(str(on_gpu))[0].to("cuda"), evals, batch_size=4)
                ppl_cpu = perplexity(load_model(str(on_cpu))[0].to("cuda"), evals, batch_size=4)
                assert abs(ppl_gpu - ppl_cpu) / ppl_cpu < 1e-2, (ppl_gpu, ppl_cpu)
            print(f"ok {family} {dtype}: dense ppl {full:.3f} (block-wise {blockwise:.3f}), ICP 60% ppl {icp_ppl:.3f}, "
                  f"measured sparsity {zeros / total:.4f}", flush=True)
    check_sam(root / "sam")
    if opt_in_failures:
        sys.exit(f"an opt-in SparseGPT path strayed further from float64 than the plain path on {opt_in_failures}")
    print("all GPU checks passed")


def check_consumed_streams(model_dir: Path, x0: torch.Tensor, dtype: str, device: str = "cuda") -> None:
    """The jobs' consuming step (each block's outputs written over its inputs, on the GPU and in
    pinned host memory) against the step that leaves its input streams alone: the same blocks and
    streams bit for bit, for SparseGPT with the dense stream and for ICP's targets (no training,
    which is not bit-deterministic on CUDA)."""
    from icp.engine import BlockRunner, Streams, place_stream, run_step
    from icp.models.loading import CheckpointReader, load_config
    from icp.runs import make_plan

    config = load_config(model_dir)
    adapter = adapter_for(config.model_type)
    for spec in (RunSpec("sparsegpt", sparsity=0.5), RunSpec("icp", sparsity=0.5, compensation={"epochs": 0})):
        for offload in (False, True):
            walks = []
            for consume in (False, True):
                runner = BlockRunner(adapter, config, CheckpointReader(model_dir), device, getattr(torch, dtype),
                                     x0.shape[1], batch_size=4)
                plan = make_plan(spec, runner)
                streams, pending, blocks = Streams.from_block0(place_stream(x0.to(runner.dtype), device, offload), plan), None, []
                for index in range(runner.num_blocks):
                    result = run_step(runner, index, streams, pending, plan, consume=consume)
                    streams, pending = result.streams, result.pending
                    blocks.append(result.block)
                walks.append((blocks, [streams.error.cpu(), streams.dense.cpu()]))
            (kept, kept_last), (consumed, consumed_last) = walks
            assert all(torch.equal(a[k], b[k]) for a, b in zip(kept, consumed) for k in a), (spec.method, offload)
            assert all(torch.equal(a, b) for a, b in zip(kept_last, consumed_last)), (spec.method, offload)
    print(f"ok: consuming steps = keeping steps ({config.model_type}, {dtype}; streams on the GPU and in host memory)")


def check_sliding_window_families() -> None:
    """Mistral (one window on every layer) and Gemma-3 (sliding and global layers, a rotary table
    each): the block walk on CUDA, with the adapter's explicit window masks, equals the model's
    own forward on CUDA, on sequences longer than the window."""
    from transformers import AutoModelForCausalLM

    from tiny import SEQLEN, tiny_family_config, write_tokenizer  # noqa: E402  (the tests' tiny configs)

    tokenizer = write_tokenizer(Path(tempfile.mkdtemp()))
    for family in ("mistral", "gemma3_text"):
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(tiny_family_config(family, len(tokenizer)),
                                                 attn_implementation="sdpa").eval().to("cuda")
        adapter = adapter_for(family)
        ids = calibration_windows(tokenizer, [generated_text(2000)], 2, SEQLEN, 0).to("cuda")
        hidden = block0_inputs(model, adapter, ids).to("cuda")  # captured inputs come back on the CPU
        for index, block in enumerate(adapter.blocks(model)):
            kwargs = adapter.block_kwargs(model.config, index, SEQLEN, torch.device("cuda"), torch.float32)
            if adapter.sliding_window(model.config, index):
                assert kwargs["attention_mask"] is not None, (family, index, "no explicit window mask on CUDA")
            with torch.no_grad():
                hidden = adapter.run_block(block, hidden, kwargs)
        with torch.no_grad():
            expected = model(ids, use_cache=False).logits
            got = adapter.logits(model, hidden)
        assert torch.allclose(got, expected, rtol=1e-3, atol=1e-3), (family, float((got - expected).abs().max()))
        print(f"ok: {family} block walk on CUDA = the model's forward (sliding window {model.config.sliding_window})")


def check_sam(root: Path) -> None:
    from tiny_sam import TINY_SAM_ARCH, write_image_sets, write_tiny_sam

    from icp.checks import verify_pruned
    from icp.evaluate.sam_iou import annotated_images, single_point_iou
    from icp.models.loading import export_dense

    dense = root / "dense"
    export_dense(str(write_tiny_sam(root / "sam_vit_b_tiny.pth")), dense, arch=TINY_SAM_ARCH)
    model, _ = load_model(str(dense))
    adapter = adapter_for("sam_vit")
    torch.manual_seed(0)
    x0 = block0_inputs(model, adapter, torch.randn(8, 3, 64, 64))
    torch.save({"block0_inputs": x0}, root / "x0.pt")
    spec = RunSpec("icp", pattern="2:4", wbits=4, compensation={"lr": 1e-3})
    gpu = prune(dense, spec, root / "x0.pt", root / "icp-gpu", "cuda")
    cpu = prune(dense, spec, root / "x0.pt", root / "icp-cpu", "cpu")
    checks = verify_pruned(gpu, spec.to_dict())
    sets = write_image_sets(root / "images")
    images = annotated_images(sets["sa1b"])
    iou_gpu = single_point_iou(load_model(str(gpu))[0], images, "cuda")["value"]
    iou_cpu = single_point_iou(load_model(str(gpu))[0], images, "cpu")["value"]
    assert abs(iou_gpu - iou_cpu) < 0.02, (iou_gpu, iou_cpu)
    a, b = load_file(str(gpu / "model.safetensors")), load_file(str(cpu / "model.safetensors"))
    same_masks = all(torch.equal(a[k] == 0, b[k] == 0) for k in a if k.endswith("mlp.lin2.weight"))
    print(f"ok sam: ICP 2:4+int4 checks {checks}; IoU gpu {iou_gpu:.4f} cpu {iou_cpu:.4f}; "
          f"first-block lin2 masks equal on CPU and GPU: {same_masks}", flush=True)


if __name__ == "__main__":
    main()
