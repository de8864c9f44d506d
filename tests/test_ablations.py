"""`ablations:` sweeps through the real workflow on a tiny model: shared runs are not recomputed,
bad values stop the run before any job, and the sweep lands in plots and tables.md."""

import copy
import re

import pandas as pd
import pytest

from workflow_helpers import planned_jobs, snakemake, tiny_workflow, write_config


def ablation_config(root):
    config = tiny_workflow(root)
    config["engine"]["blocks_per_step"] = "all"
    config["tables"] = {"table1": {"models": ["tiny-llama"], "methods": ["icp"], "sparsities": [0.5],
                                   "corpora": ["heldout"]}}
    config["ablations"] = {
        "model": "tiny-llama",
        "sparsities": [0.5],
        "sweeps": {
            "alpha": {"values": [0.8, 1.0]},  # 0.8 is the tables' setting: Table 1's own ICP run
            "nsamples": {"values": [2, 4]},  # 4 is the tables' setting (other methods: see below)
        },
    }
    write_config(root, config)
    return config


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    root = tmp_path_factory.mktemp("ablations")
    config = ablation_config(root)
    jobs = planned_jobs(root)  # before the dense export (a Snakemake checkpoint): steps are not planned yet
    snakemake(root, "--cores", "2", "results/tables.md")
    return root, config, jobs


def test_sweep_points_reuse_the_tables_runs(swept):
    _, _, jobs = swept
    # Table 1: ICP at 50 %. New for the sweeps: ICP alpha 1.0, ICP on 2 calibration windows.
    # Points at the tables' setting are Table 1's run.
    assert jobs["assemble_model"] == 1 + 2
    assert jobs["perplexity"] == 3 + 1  # every run, and the dense model


def test_sweep_runs_on_disk(swept):
    root, _, _ = swept
    assert len(list(root.glob("results/tiny-llama/runs/*/steps/000.json"))) == 3  # one step per run here
    assert len(list(root.glob("results/tiny-llama/data/calib-tokens-*.pt"))) == 2  # 4 and 2 windows
    assert len(list(root.glob("results/tiny-llama/activations/calib-*.pt"))) == 2


def test_sweeps_in_tables_and_plots(swept):
    root, _, _ = swept
    frame = pd.read_csv(root / "results" / "results.csv")
    md = (root / "results" / "tables.md").read_text()
    section = md.split("## Ablations")[1].split("## Cost")[0]
    icp_table = frame[(frame.method == "icp") & (frame.evaluation == "perplexity")]
    for name in ("alpha", "nsamples"):
        series = pd.read_csv(root / "results" / "plots" / f"ablation_{name}.csv")
        assert (root / "results" / "plots" / f"ablation_{name}.png").stat().st_size > 0
        assert series.perplexity.notna().all() and (series.perplexity > 1).all()
        assert f"plots/ablation_{name}.png" in section
        # the tables' setting is marked and is the very run (and number) of Table 1
        marked = series[series.table_setting]
        icp_marked = marked[marked.method == "icp"]
        assert len(icp_marked) == 1 and icp_marked.run.iloc[0] in set(icp_table.run)
        for value in series.perplexity:
            assert f"{value:.2f}" in section
    # Table 1 shows its own runs only, never a sweep's run of the same method and sparsity
    table1 = md.split("Table 1.")[1].split("Table 2.")[0]
    calib = pd.read_csv(root / "results" / "plots" / "ablation_nsamples.csv")
    for _, row in calib.iterrows():
        assert (f"{row.perplexity:.2f}" in table1) == bool(row.table_setting), row.to_dict()
    curves = pd.read_csv(root / "results" / "plots" / "perplexity_vs_sparsity.csv")
    assert len(curves[curves.method == "icp"]) == 1
    alpha = pd.read_csv(root / "results" / "plots" / "ablation_alpha.csv").set_index("value")
    assert alpha.perplexity[0.8] != alpha.perplexity[1.0]  # the rearrangement changes the model
    calib = pd.read_csv(root / "results" / "plots" / "ablation_nsamples.csv")
    assert set(zip(calib.method, calib.value)) == {("icp", 2), ("icp", 4)}
    assert "4 *" in section and "0.8 *" in section


def test_two_four_inference_says_why_it_was_not_measured(tmp_path):
    """On a CPU the inference job records why it measured nothing; the table says so."""
    import json

    from icp.cli import main
    from icp.report.tables import collect_results, inference_table

    out = tmp_path / "inference.json"
    main(["inference-speed", "--dense-dir", "unused", "--model-dir", "unused", "--device", "cpu", "--out", str(out),
          "--meta", json.dumps({"model": "m", "run": "sparsegpt-2of4-0000", "method": "sparsegpt", "pattern": "2:4"})])
    frame = collect_results([str(out)])
    assert (frame.metric == "reason").all()
    assert "_Not measured: no CUDA device" in inference_table(frame, {"models": {}})


def test_two_four_check():
    import torch

    from icp.evaluate.inference import is_two_four

    w = torch.tensor([[1.0, 0, 0, 2, 0, 3, 4, 0]])
    assert is_two_four(w)
    assert not is_two_four(torch.tensor([[1.0, 1, 0, 2, 0, 0, 0, 0]]))
    assert not is_two_four(torch.ones(2, 6))


def test_sparse_linears_take_flat_contiguous_inputs(monkeypatch):
    """The 2:4 linears are swapped in by module path, and a batched, non-contiguous input (decode at
    batch 16) reaches the kernel as one contiguous matrix and comes back in its own shape."""
    import torch
    from torch import nn

    from icp.evaluate.inference import SemiStructuredLinear, sparsify_linears

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 12), nn.ReLU(), nn.Linear(12, 4))
    with torch.no_grad():
        model[0].weight.mul_(torch.tensor([1.0, 0, 1, 0]).repeat(2))  # 2:4 along each row
    x = torch.randn(16, 8, 3).transpose(1, 2)  # [16, 3, 8], not contiguous
    reference = model(x)
    # the GPU-only conversion replaced by a copy; F.linear watched for what the sparse weight is fed
    assert sparsify_linears(model, {"0": model[0], "2": model[2]}, torch.clone) == ["0"]
    assert isinstance(model[0], SemiStructuredLinear) and isinstance(model[2], nn.Linear)
    seen, linear = [], torch.nn.functional.linear

    def watched(inp, weight, bias=None):
        if weight is model[0].weight:
            seen.append((tuple(inp.shape), inp.is_contiguous()))
        return linear(inp, weight, bias)

    monkeypatch.setattr(torch.nn.functional, "linear", watched)
    torch.testing.assert_close(model(x), reference)
    assert seen == [((48, 8), True)]


def test_calibration_sweep_for_every_method_shares_the_tables_runs(tmp_path):
    from icp.experiments import ablation_points, all_experiments, calibration_key, table_experiments

    config = ablation_config(tmp_path)
    config["tables"]["table1"]["methods"] = ["magnitude", "wanda", "sparsegpt", "icp"]
    config["ablations"]["sweeps"] = {"nsamples": {"values": [2, 4, 8], "methods": ["wanda", "sparsegpt", "icp"]}}
    points = ablation_points(config)
    assert len(points) == 3 * 3
    table = {e.run for e in table_experiments(config, "table1")}
    shared = [p for p in points if p.experiment.run in table]
    assert {(p.method, p.value) for p in shared} == {("wanda", 4), ("sparsegpt", 4), ("icp", 4)}
    assert all(p.table_setting for p in shared)
    assert len(all_experiments(config)) == len(table) + 6  # 2 and 8 windows for three methods
    keys = {p.experiment.calibration for p in points}
    assert len(keys) == 3 and calibration_key(config, "tiny-llama") in keys


BAD_SWEEPS = [
    ({"alpha": {"values": [0.8, 1.5]}}, "ablations.sweeps.alpha: 1.5 is not allowed"),
    ({"epochs": {"values": [-1]}}, "ablations.sweeps.epochs: -1 is not allowed"),
    ({"nsamples": {"values": [2.5], "methods": ["wanda"]}}, "ablations.sweeps.nsamples: 2.5 is not a whole number"),
    ({"lr": {"values": [1e-3], "methods": ["wanda"]}}, "lr means nothing for 'wanda'"),
    # q/k/v at 0.2 x 90 % push the down projection past 100 %: found from the model's real shapes
    ({"beta": {"values": [0.2]}}, "ablations.sweeps.beta = 0.2"),
]


def test_bad_sweep_values_stop_before_any_job(tmp_path):
    from icp.experiments import check_config

    config = ablation_config(tmp_path)
    for sweep, message in BAD_SWEEPS[:-1]:  # found from the config alone
        bad = copy.deepcopy(config)
        bad["ablations"]["sweeps"] = sweep
        with pytest.raises(ValueError, match=re.escape(message)):
            check_config(bad)
    # through Snakemake, with a value only the model's layer shapes show to be bad
    sweep, message = BAD_SWEEPS[-1]
    bad = copy.deepcopy(config)
    bad["ablations"].update(sweeps=sweep, sparsities=[0.9])
    write_config(tmp_path, bad, "bad.yaml")
    result = snakemake(tmp_path, "-n", "--cores", "1", config="bad.yaml", check=False)
    assert result.returncode != 0
    assert message in result.stdout + result.stderr and "outside [0, 1)" in result.stdout + result.stderr
    assert not (tmp_path / "results").exists()


def test_inference_table_from_a_measured_run(tmp_path):
    """The table a GPU run renders: a measured prefill row and a decode case that failed."""
    import json

    from icp.report.tables import collect_results, inference_table

    record = {"model": "m", "run": "sparsegpt-2of4-0000", "method": "sparsegpt", "pattern": "2:4", "wbits": 16,
              "metric": "inference", "measured": True, "linears": 210, "sparse_linears": 210,
              "rows": [{"kind": "prefill", "tokens": 2048, "batch": 1, "dense_s": 0.04, "sparse_s": 0.2, "speedup": 0.2,
                        "dense_tokens_per_s": 51200.0, "sparse_tokens_per_s": 10240.0},
                       {"kind": "decode", "tokens": 64, "batch": 16, "failed": "CUDA out of memory"}],
              "versions": {"torch": "2.11.0"}, "machine": {"gpu": "NVIDIA H100 80GB HBM3"}}
    path = tmp_path / "inference.json"
    path.write_text(json.dumps(record))
    md = inference_table(collect_results([str(path)]), {"models": {}})
    assert "| Prefill, 2,048 tokens (tokens/s) | 51,200 | 10,240 | 0.20× |" in md
    assert "failed: CUDA out of memory" in md
    assert "210 of 210 linears sparse" in md and "NVIDIA H100 80GB HBM3, torch 2.11.0" in md


def test_inference_workloads_run(tmp_path):
    """The prefill and cached-decode workloads the GPU times, run once on a tiny model on the CPU."""
    from tiny import write_tiny_model

    from icp.evaluate.inference import _decode, _prefill
    from icp.models.loading import load_model

    model, _ = load_model(str(write_tiny_model(tmp_path / "m", "llama")))
    calls = []
    original = model.forward
    model.forward = lambda *a, **k: calls.append(k.get("input_ids", a[0] if a else None).shape) or original(*a, **k)
    _prefill(model, 32, model.config.vocab_size, "cpu")()
    _decode(model, 2, 5, model.config.vocab_size, "cpu")()
    assert calls == [(1, 32), (2, 16)] + [(2, 1)] * 5  # one prefill; a prompt, then one token per step
