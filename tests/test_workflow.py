"""The real Snakemake workflow end to end on tiny models, plus its incremental and resume behaviour."""

import copy
import math
import signal
import subprocess
import sys
import time

import pandas as pd
import yaml
import pytest

from workflow_helpers import REPO, planned_jobs, snakemake, snakemake_env, tiny_workflow, write_config


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    root = tmp_path_factory.mktemp("wf")
    config = tiny_workflow(root)
    snakemake(root, "--cores", "2", "results/tables.md")
    return root, config


def test_tables_and_csv_agree(finished):
    root, config = finished
    md = (root / "results" / "tables.md").read_text()
    frame = pd.read_csv(root / "results" / "results.csv")
    for title in ("Table 1.", "Table 2.", "Table 4.", "Table 5."):
        assert title in md
    assert "_Omitted" in md.split("Table 3.")[1].split("Table 4.")[0]
    # every pruned run of table 1 has a finite perplexity, and each number in the markdown comes from the CSV
    t1 = frame[(frame.model == "tiny-llama") & (frame.evaluation == "perplexity")]
    assert set(t1.method) == {"dense", "magnitude", "wanda", "sparsegpt", "icp", "sparsegpt+ic"}
    assert all(math.isfinite(v) and v > 1 for v in t1.value)
    for value in t1.value:
        assert f"{value:.2f}" in md
    best = t1[t1.method != "dense"].value.min()
    assert f"**{best:.2f}**" in md
    t4 = frame[(frame.model == "tiny-opt") & (frame.evaluation == "perplexity")]
    assert {(p, w) for p, w in zip(t4.pattern, t4.wbits) if p != "dense"} == {("2:4", 16), ("2:4", 4)}
    zs = frame[frame.evaluation == "zeroshot"]
    assert set(zs.dataset) == {"wiki_description", "mean"}
    assert all(0 <= v <= 1 for v in zs.value)
    assert "2:4+int4" in md
    # every accuracy cell carries lm-eval's standard error, kept in the CSV too
    task = zs[zs.dataset == "wiki_description"]
    assert (task.stderr > 0).all()
    for value, stderr in zip(task.value, task.stderr):
        assert f"{100 * value:.2f} ± {100 * stderr:.2f}" in md
    assert "tokens (4 windows)" in md  # perplexity tables say what they cover
    cost = md.split("## Cost (the paper's Table 9)")[1].split("##")[0]  # from the runs' own records
    for method in ("Magnitude", "Wanda", "SparseGPT", "ICP"):
        assert f"| {method} |" in cost
    assert "CPU (" in cost and "not recorded" not in cost


def test_best_is_bold_only_beyond_the_combined_standard_error():
    from icp.report.tables import rank_marks

    assert rank_marks([(0.60, 0.02), (0.50, 0.02), None], higher_better=True) == ["best", "", ""]
    # 0.55 vs 0.50 with se 0.05 each: the gap is under sqrt(2) * 0.05, a tie; 0.30 is out of it
    assert rank_marks([(0.50, 0.05), (0.55, 0.05), (0.30, 0.05)], higher_better=True) == ["tied", "tied", ""]
    assert rank_marks([(12.0, None), (10.0, None)], higher_better=False) == ["", "best"]  # perplexity: no errors


def test_plots_are_drawn_from_the_results(finished):
    root, _ = finished
    plots = root / "results" / "plots"
    for name in ("perplexity_vs_sparsity", "zeroshot_mean", "block_error", "cost"):
        for ext in ("png", "svg", "csv"):
            assert (plots / f"{name}.{ext}").stat().st_size > 0, name
    frame = pd.read_csv(root / "results" / "results.csv")
    series = pd.read_csv(plots / "perplexity_vs_sparsity.csv")
    ppl = frame[(frame.evaluation == "perplexity") & (frame.pattern == "unstructured")]
    assert sorted(series.value) == sorted(ppl.value)
    errors = pd.read_csv(plots / "block_error.csv")
    assert set(errors.block) == {0, 1, 2} and (errors.rel_mse > 0).all()
    md = (root / "results" / "tables.md").read_text()
    assert "plots/perplexity_vs_sparsity.png" in md


def test_report_bundles_tables_and_plots(finished):
    root, _ = finished
    snakemake(root, "--report", str(root / "results" / "report.html"))
    html = (root / "results" / "report.html").read_text(errors="ignore")
    assert "block_error.png" in html and "tables.md" in html


def test_pruned_checkpoints_are_complete(finished):
    import json

    root, _ = finished
    records = list((root / "results" / "tiny-opt" / "runs").glob("*/model/pruning.json"))
    assert len(records) == 4
    for path in records:
        rec = json.loads(path.read_text())
        assert rec["measured_sparsity"] == pytest.approx(0.5, abs=1e-6)
        assert len(rec["blocks"]) == 3
    # temp window states, and the steps' copies of the pruned blocks, are gone once the run is
    # assembled (test_nothing_left_to_do: and nothing is planned again for their absence)
    assert not list((root / "results").rglob("*.carry.pt"))
    assert list((root / "results").rglob("steps/*.json")) and not list((root / "results").rglob("steps/*.blocks"))


def test_nothing_left_to_do(finished):
    root, _ = finished
    assert planned_jobs(root) == {}


def test_icp_setting_reruns_only_icp(finished):
    root, config = finished
    changed = copy.deepcopy(config)
    changed["methods"]["icp"]["alpha"] = 0.7
    write_config(root, changed, "alpha.yaml")
    jobs = planned_jobs(root, "alpha.yaml")
    icp_runs = 1 + 2 + 1  # table1/2 at 50 %, table4 2:4 x {16, 4}, table5 2:4 -> 4 runs
    assert jobs.get("assemble_model") == icp_runs
    assert jobs.get("prune_step") == 2 * icp_runs
    assert "calibration_tokens" not in jobs and "block0_activations" not in jobs and "export_dense" not in jobs


def test_input_compensation_stage_in_the_tables_and_its_own_reruns(finished):
    """`sparsegpt+ic` is a row beside `sparsegpt`; changing IC's settings re-runs the stage and
    its evaluation, never the pruning."""
    root, config = finished
    tables = (root / "results" / "tables.md").read_text()
    ic_section = tables.split("Input compensation (IC paper, Table 3)")[1]
    assert "| SparseGPT + IC |" in ic_section and "| SparseGPT |" in ic_section
    frame = pd.read_csv(root / "results" / "results.csv")
    staged = frame[frame["method"] == "sparsegpt+ic"]
    assert len(staged) == 1 and staged["stages"].iloc[0] == "ic" and math.isfinite(staged["value"].iloc[0])
    plain = frame[(frame["method"] == "sparsegpt") & (frame["sparsity"] == 0.5) & (frame["pattern"] == "unstructured")
                  & (frame["evaluation"] == "perplexity")]
    assert staged["run"].iloc[0].startswith(plain["run"].iloc[0] + "+ic-")
    changed = copy.deepcopy(config)
    changed["stages"]["ic"]["epochs"] = 3
    write_config(root, changed, "changed.yaml")
    jobs = planned_jobs(root, "changed.yaml")
    assert jobs.get("input_compensation") == 1 and jobs.get("perplexity") == 1
    assert not {"prune_step", "assemble_model", "dense_outputs"} & set(jobs)


def test_eval_setting_reruns_only_evaluations(finished):
    root, config = finished
    changed = copy.deepcopy(config)
    changed["perplexity"]["max_windows"] = 3
    write_config(root, changed, "evals.yaml")
    jobs = planned_jobs(root, "evals.yaml")
    assert set(jobs) == {"eval_tokens", "perplexity", "collect_results", "plots", "tables"}
    assert jobs["eval_tokens"] == 2


def test_new_sparsity_adds_only_its_runs(finished):
    root, config = finished
    changed = copy.deepcopy(config)
    changed["tables"]["table1"]["sparsities"] = [0.5, 0.6]
    write_config(root, changed, "sparsity.yaml")
    jobs = planned_jobs(root, "sparsity.yaml")
    assert jobs["assemble_model"] == 4 and jobs["prune_step"] == 8
    assert "zeroshot" not in jobs  # table 2 still asks only for 50 %


def test_bad_config_stops_before_any_work(finished, tmp_path):
    """A schema error stops Snakemake before any job; the cross-reference checks the Snakefile runs
    next (`check_config`) name the bad value (through Snakemake: test_ablations' bad sweep)."""
    from icp.experiments import check_config

    root, config = finished
    bad = copy.deepcopy(config)
    bad["calibration"]["nsampels"] = 3
    write_config(root, bad, "typo.yaml")
    result = snakemake(root, "-n", "--cores", "1", config="typo.yaml", check=False)
    assert result.returncode != 0 and "nsampels" in result.stdout + result.stderr
    bad = copy.deepcopy(config)
    bad["tables"]["table1"]["models"] = ["opt-99b"]
    with pytest.raises(ValueError, match="unknown model 'opt-99b'"):
        check_config(bad)
    bad = copy.deepcopy(config)
    bad["tables"]["table1"]["sparsities"] = [1.5]
    with pytest.raises(ValueError, match="1.5"):
        check_config(bad)


def test_grid_tables_render_a_finished_tree_as_the_workflow_does(finished, tmp_path):
    """benchmarks/grid_tables.py (the tables of a grid run in parts) gives the workflow's own
    results.csv and tables.md from the same tree, and names what is missing."""
    root, config = finished
    sys.path.insert(0, str(REPO / "benchmarks"))
    import grid_tables

    tables = grid_tables.render(config, root / "results", tmp_path / "out")
    assert tables.read_text() == (root / "results" / "tables.md").read_text()
    assert (tmp_path / "out" / "results.csv").read_text() == (root / "results" / "results.csv").read_text()
    assert (tmp_path / "out" / "plots" / "perplexity_vs_sparsity.png").exists()
    more = copy.deepcopy(config)
    more["tables"]["table1"]["sparsities"] = [0.5, 0.6]
    # the four new runs: their perplexities and records
    with pytest.raises(SystemExit, match=r"8 of the config's evaluation files and run records are not under"):
        grid_tables.render(more, root / "results", tmp_path / "more")


def test_unkept_models_go_once_read_and_nothing_reruns_for_them(finished):
    """`keep_models: false` is in no run's hash (nothing re-plans); a new run's weights are deleted
    once its evaluations have read them, its record and evaluations stay, the kept runs' weights
    stay, and their absence plans nothing again. Runs last on the shared tree: it adds a run."""
    root, config = finished
    runs = root / "results" / "tiny-llama" / "runs"
    kept = {p.parent.parent.name for p in runs.glob("*/model/model.safetensors")}
    unkept = copy.deepcopy(config)
    unkept["keep_models"] = False
    write_config(root, unkept, "unkept.yaml")
    assert planned_jobs(root, "unkept.yaml") == {}
    unkept["tables"]["table1"]["sparsities"] = [0.5, 0.6]
    unkept["tables"]["table1"]["methods"] = ["magnitude"]
    write_config(root, unkept, "unkept.yaml")
    snakemake(root, "--cores", "2", "results/tables.md", config="unkept.yaml")
    new = {p.name for p in runs.iterdir()} - kept - {p.name for p in runs.iterdir() if "+" in p.name}
    assert len(new) == 1, new
    run = runs / new.pop()
    assert not (run / "model" / "model.safetensors").exists()
    assert (run / "model" / "pruning.json").exists() and list((root / "results" / "tiny-llama" / "evals" / run.name).glob("ppl-*.json"))
    assert all((runs / name / "model" / "model.safetensors").exists() for name in kept)
    assert planned_jobs(root, "unkept.yaml") == {}


def test_killed_run_resumes_to_identical_results(tmp_path):
    root = tmp_path
    config = tiny_workflow(root, blocks=2)  # one job per block: killed after block 0, resumed at block 1
    config["tables"] = {"table1": {"models": ["tiny-llama"], "methods": ["icp"], "sparsities": [0.5], "corpora": ["heldout"]}}
    config["engine"]["blocks_per_step"] = 1
    write_config(root, config)
    # an uninterrupted run in a sibling directory
    clean = tmp_path / "clean"
    clean.mkdir()
    for item in ("models", "text"):
        (clean / item).symlink_to(root / item)
    write_config(clean, config)
    snakemake(clean, "--cores", "1", "results/results.csv")  # the numbers, without plots and tables

    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(root),
           "--configfile", str(root / "config.yaml"), "--cores", "1", "results/tables.md"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            env=snakemake_env())
    deadline = time.time() + 300
    while time.time() < deadline and not list(root.glob("results/tiny-llama/runs/*/steps/000.json")):
        time.sleep(0.2)
    __import__("os").killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert list(root.glob("results/tiny-llama/runs/*/steps/000.json")), "the first block never finished"
    assert not (root / "results" / "tables.md").exists()
    # a SIGKILL leaves Snakemake's lock behind: the user unlocks once, then runs the same command
    snakemake(root, "--unlock")
    result = snakemake(root, "--cores", "1", "results/tables.md")
    assert "prune_step" in result.stdout + result.stderr
    a = pd.read_csv(clean / "results" / "results.csv").sort_values(["run", "dataset"]).value.tolist()
    b = pd.read_csv(root / "results" / "results.csv").sort_values(["run", "dataset"]).value.tolist()
    assert a == b


def test_block_groups_and_neutral_options_in_run_hashes():
    from icp.experiments import all_experiments
    from icp.layout import block_groups

    assert block_groups(30, "all") == [range(0, 30)]
    assert block_groups(5, 2) == [range(0, 2), range(2, 4), range(4, 5)]
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    runs = list(all_experiments(config))
    forced = copy.deepcopy(config)
    forced["methods"]["sparsegpt"]["kernel"] = "torch"  # how the sweep runs, not what it computes
    assert list(all_experiments(forced)) == runs
    changed = copy.deepcopy(config)
    changed["methods"]["sparsegpt"]["blocksize"] = 64
    assert list(all_experiments(changed)) != runs


@pytest.mark.parametrize("name", ["config.yaml", "paper.yaml", "offline-gpu.yaml"])
def test_shipped_configs_validate_and_expand(name):
    """Every shipped config passes the schema and the cross-reference checks, and expands to runs."""
    import jsonschema

    from icp.experiments import all_experiments, check_config

    config = yaml.safe_load((REPO / "config" / name).read_text())
    jsonschema.validate(config, yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text()))
    check_config(config)
    runs = [run for (_, run), exp in all_experiments(config).items() if exp.spec is not None]
    assert runs and len(runs) == len(set(runs))
    if name == "offline-gpu.yaml":  # 9 sparsities x 4 methods + 2 patterns x 3 bit-widths x 3 methods
        # + the sweeps' own runs: alpha 4, beta 4, epochs 4, lr 2, calibration 4 x 3 methods
        # + input compensation after each method at 50 and 70 %; Gemma-3-270M: Tables 1/2 and 4/5 again
        assert len(runs) == 36 + 18 + 4 + 4 + 4 + 2 + 12 + 8 + 36 + 18
