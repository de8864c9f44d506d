"""Bad input and damaged files: nothing silently wrong, nothing outside results/, a damaged file
named and rebuilt, finished blocks never thrown away (CPU only)."""

import copy
import json
import os

import pytest
import torch

from icp import experiments as X
from icp.checkpoint import DamagedFile, load_cached
from icp.methods.pattern import Pattern, parse_pattern
from icp.models import adapter_for
from icp.models.loading import load_model
from icp.runs import RunSpec, prune_group

from test_official_settings import lm_config


@pytest.mark.parametrize("pattern", ["2:0", "0:4", "4:4", "5:4"])
def test_an_nm_pattern_that_prunes_nothing_or_everything_is_rejected(pattern):
    with pytest.raises(ValueError, match="needs 0 < N < M"):
        parse_pattern(pattern)
    with pytest.raises(ValueError, match="needs 0 < N < M"):
        RunSpec("sparsegpt", pattern=pattern)
    config = lm_config()
    config["tables"]["table4"] = {"models": ["a"], "methods": ["sparsegpt"], "patterns": [pattern], "corpora": ["c"]}
    with pytest.raises(ValueError, match="needs 0 < N < M"):
        X.check_config(config)


def test_pattern_2_of_0_is_not_unstructured_at_zero():
    with pytest.raises(ValueError):
        Pattern(n=2, m=0)


@pytest.mark.parametrize("section", ["models", "corpora", "image_sets"])
@pytest.mark.parametrize("name", ["..", ".", "a/b", "a b", "x;rm -rf y", ".hidden"])
def test_keys_that_are_not_safe_folder_names_are_rejected(section, name):
    import jsonschema
    import yaml

    from test_official_settings import REPO

    config = lm_config()
    entry = {"models": {"source": "some/x"}, "corpora": {"source": "wikitext2"}, "image_sets": {"source": "sa1b", "dir": "d"}}
    config.setdefault(section, {})[name] = entry[section]
    with pytest.raises(ValueError, match="is not an allowed name"):
        X.check_config(config)
    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(config, schema)


def test_dotted_model_names_stay_allowed():
    config = lm_config()
    config["models"]["opt-1.3b"] = config["models"].pop("b")
    config["tables"]["table1"]["models"] = ["a", "opt-1.3b"]
    X.check_config(config)


@pytest.mark.parametrize("path,value", [
    (("methods", "icp", "alpha"), float("nan")),
    (("methods", "icp", "compensation", "lr"), float("nan")),
    (("methods", "sparsegpt", "percdamp"), float("inf")),
    (("tables", "table1", "sparsities"), [0.5, float("nan")]),
])
def test_nan_and_infinity_are_rejected_naming_the_key(path, value):
    config = lm_config()
    node = config
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(ValueError, match="is not a finite number"):
        X.check_config(config)


def test_icp_settings_are_checked_at_the_dry_run():
    config = lm_config()
    config["methods"]["icp"]["beta"] = 5.0
    with pytest.raises(ValueError, match="beta 5.0 x sparsity 0.5"):
        X.check_config(config)
    config = lm_config()
    config["methods"]["icp"]["compensation"]["gamma"] = 0.5
    with pytest.raises(ValueError, match="compensation: .*needs schedule: exponential"):
        X.check_config(config)


def test_sparsegpt_lazy_columns_that_split_a_block_are_named_at_the_dry_run():
    config = lm_config()
    config["methods"]["sparsegpt"] = {"blocksize": 128, "lazy_columns": 200}
    with pytest.raises(ValueError, match="methods.sparsegpt.lazy_columns: 200 is not a multiple of blocksize"):
        X.check_config(config)
    config["methods"]["sparsegpt"]["lazy_columns"] = 1024
    X.check_config(config)


def test_icp_alpha_beta_checked_against_real_shapes_when_known(tiny_dirs):
    """beta 1.9 at 50 % keeps q/k/v below 100 % but pushes fc2 below 0: only the shapes tell."""
    from icp.engine import layer_shapes
    from icp.models.loading import load_config

    config = lm_config()
    config["methods"]["icp"]["beta"] = 1.9
    X.check_config(config)  # shapes unknown: the shape-free part passes
    shapes = layer_shapes(adapter_for("opt"), load_config(tiny_dirs["opt"]))
    with pytest.raises(ValueError, match="outside"):
        X.check_config(config, shapes_for=lambda model: shapes)


def test_a_damaged_cache_is_named_and_removed(tmp_path):
    path = tmp_path / "calib-abc.pt"
    torch.save({"block0_inputs": torch.randn(4, 4)}, path)
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(DamagedFile, match=r"calib-abc.pt is damaged.*rule block0_activations rebuilds it"):
        load_cached(path, "block0_activations")
    assert not path.exists()


@pytest.fixture
def opt_run(tiny_dirs, text, tmp_path):
    from icp.activations import block0_inputs
    from icp.data.tokens import calibration_windows

    model_dir = tiny_dirs["opt"]
    model, tok = load_model(str(model_dir))
    x0 = block0_inputs(model, adapter_for("opt"), calibration_windows(tok, [text], 4, 32, seed=0))
    torch.save({"block0_inputs": x0}, tmp_path / "x0.pt")
    return model_dir, tmp_path


def prune(model_dir, tmp, spec, name, stop=3, log=lambda s: None):
    out = tmp / name
    prune_group(model_dir, spec, range(0, stop), tmp / "x0.pt", out / "blocks", out / "r.json", out / "c.pt", log=log)
    return out


def kill_after(monkeypatch, blocks):
    import icp.runs as runs

    real, calls = runs.run_step, {"n": 0}

    def dying(*args, **kwargs):
        if calls["n"] == blocks:
            raise KeyboardInterrupt
        calls["n"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(runs, "run_step", dying)
    return lambda: monkeypatch.setattr(runs, "run_step", real)


SPEC = RunSpec("icp", sparsity=0.5, alpha=0.9, compensation={"epochs": 1, "lr": 1e-3},
               method_options={"blocksize": 16})


def killed_after_two_blocks(model_dir, tmp, monkeypatch, name):
    revive = kill_after(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        prune(model_dir, tmp, SPEC, name)
    revive()
    return tmp / name / "blocks.partial"


@pytest.mark.parametrize("keep", [100, -8])  # inside the header; the last bytes of the tensor data
def test_a_damaged_finished_block_is_redone_not_trusted(opt_run, monkeypatch, keep):
    model_dir, tmp = opt_run
    reference = json.loads((prune(model_dir, tmp, SPEC, "reference") / "r.json").read_text())
    block1 = killed_after_two_blocks(model_dir, tmp, monkeypatch, "killed") / "block_0001.safetensors"
    block1.write_bytes(block1.read_bytes()[:keep])  # truncated after the kill
    logs = []
    out = prune(model_dir, tmp, SPEC, "killed", log=logs.append)
    assert any("finished block 1" in line and "does not read back" in line for line in logs)
    assert any("resuming at block 1" in line for line in logs)
    records = json.loads((out / "r.json").read_text())
    assert [r["output_mse"] for r in records] == [r["output_mse"] for r in reference]


def test_a_result_neutral_option_keeps_the_finished_blocks(opt_run, monkeypatch):
    model_dir, tmp = opt_run
    killed_after_two_blocks(model_dir, tmp, monkeypatch, "run")
    other_kernel = RunSpec(**{**SPEC.to_dict(), "method_options": {"blocksize": 16, "kernel": "torch"}})
    logs = []
    prune(model_dir, tmp, other_kernel, "run", log=logs.append)
    assert any("resuming at block 2" in line for line in logs)


def test_blocks_of_other_settings_are_moved_aside_not_deleted(opt_run, monkeypatch):
    model_dir, tmp = opt_run
    killed_after_two_blocks(model_dir, tmp, monkeypatch, "run")
    changed = RunSpec(**{**SPEC.to_dict(), "sparsity": 0.6})
    logs = []
    prune(model_dir, tmp, changed, "run", log=logs.append)
    aside = tmp / "run" / "blocks.partial.old-1"
    assert sorted(p.name for p in aside.glob("block_*.safetensors")) == ["block_0000.safetensors", "block_0001.safetensors"]
    assert any("moved to" in line for line in logs) and not any("resuming" in line for line in logs)


def test_an_ablation_config_with_a_bad_model_override_is_named():
    config = copy.deepcopy(lm_config())
    config["models"]["a"]["methods"] = {"icp": {"compensation": {"autocast": "fp8"}}}
    with pytest.raises(ValueError, match=r"model 'a'.*'autocast' must be one of"):
        X.check_config(config)


def test_gpu_locks_refuse_a_planted_symlink(tmp_path):
    from icp.gpu_slots import acquire_gpu, lock_dir

    assert str(os.getuid()) in lock_dir().name
    locks = tmp_path / "locks"
    locks.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (locks / "gpu0.lock").symlink_to(victim)
    with pytest.raises(OSError):
        acquire_gpu(1, directory=locks, poll_seconds=0.01)
    assert victim.read_text() == "keep me"
    linked = tmp_path / "linked"
    linked.symlink_to(locks)
    with pytest.raises(PermissionError, match="is a link"):
        acquire_gpu(1, directory=linked, poll_seconds=0.01)


def test_the_export_records_layer_shapes_the_dry_run_reads_without_model_code(tiny_dirs, tmp_path):
    from icp.cli import main
    from icp.engine import layer_shapes
    from icp.models.loading import load_config

    out = tmp_path / "results" / "tiny" / "dense"
    main(["export-dense", "--source", str(tiny_dirs["llama"]), "--out", str(out)])
    config = {"models": {"tiny": {"source": "not/on/disk"}}}
    shapes = X.model_layer_shapes(config, "tiny", root=str(tmp_path / "results"))
    assert shapes == layer_shapes(adapter_for("llama"), load_config(out))
    assert (out / X.SHAPES_FILE).is_file()


def test_a_misspelled_corpus_option_is_named_at_the_dry_run():
    config = lm_config()
    config["corpora"]["c"] = {"source": "wikitext2", "splt": "test"}
    with pytest.raises(ValueError, match=r"corpora.c: 'splt' is not an option of source 'wikitext2'"):
        X.check_config(config)
    config["corpora"]["c"] = {"source": "wiki_offline"}
    with pytest.raises(ValueError, match=r"corpora.c: source 'wiki_offline' needs \['part'\]"):
        X.check_config(config)


def test_model_sources_on_disk_are_checked_before_any_export(tmp_path):
    config = lm_config()
    config["models"]["a"]["source"] = str(tmp_path / "missing" / "model")
    with pytest.raises(ValueError, match="models.a.source: .*: no such directory"):
        X.check_config(config)
    qwen = tmp_path / "qwen"
    qwen.mkdir()
    (qwen / "config.json").write_text(json.dumps({"model_type": "falcon"}))
    config["models"]["a"]["source"] = str(qwen)
    with pytest.raises(ValueError, match="unsupported model family 'falcon'; supported:"):
        X.check_config(config)
    from icp.models.loading import resolve_source

    with pytest.raises(FileNotFoundError, match="no such directory"):
        resolve_source("./not/here")
    assert resolve_source("facebook/opt-125m").location == "facebook/opt-125m"


def test_a_damaged_model_or_evaluation_json_is_named_and_removed(tiny_dirs, tmp_path):
    import shutil

    from icp.report.tables import collect_results

    run = tmp_path / "results" / "m" / "runs" / "r" / "model"
    shutil.copytree(tiny_dirs["opt"], run)
    weights = run / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-16])
    with pytest.raises(DamagedFile, match=r"model.safetensors is damaged.*rule assemble_model rebuilds it"):
        load_model(str(run))
    assert not weights.exists()
    evaluation = tmp_path / "ppl.json"
    evaluation.write_text('{"metric": "perplexity", "val')
    with pytest.raises(ValueError, match="ppl.json is damaged"):
        collect_results([str(evaluation)])
    assert not evaluation.exists()


class _PieceTokenizer:
    """A stand-in tokenizer: a vocabulary, and an encoder that either keeps whole words or spells
    every word out character by character (what a GGUF tokenizer rebuilt without its merges does)."""

    def __init__(self, whole_words: bool) -> None:
        self.whole_words = whole_words
        self.vocab: dict[str, int] = {}

    def get_vocab(self) -> dict[str, int]:
        return self.vocab

    def _id(self, piece: str) -> int:
        return self.vocab.setdefault(piece, len(self.vocab))

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict:
        ids = []
        for word in text.replace(",", "").replace(".", "").split():
            whole = self._id("\u2581" + word)
            ids += [whole] if self.whole_words else [self._id(c) for c in word]
        return {"input_ids": ids}


def test_a_gguf_tokenizer_that_spells_out_whole_words_is_named():
    from icp.models.loading import PROBE_TEXT, check_whole_words

    good, bad = _PieceTokenizer(True), _PieceTokenizer(False)
    for tokenizer in (good, bad):
        for word in PROBE_TEXT.replace(",", "").replace(".", "").split():
            tokenizer._id("\u2581" + word)  # the vocabulary holds every word whole
    check_whole_words(good, "pkg:x/model.gguf")
    with pytest.raises(ValueError, match=r"splits words its own vocabulary holds whole \(capital, Germany"):
        check_whole_words(bad, "pkg:x/model.gguf")
