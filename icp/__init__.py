"""ICP — Immediate Compensation Pruning, with Magnitude, Wanda and SparseGPT baselines.

The package is organised as the data flows:
config -> data -> dense activations -> per-block steps (engine) -> checkpoint -> evaluations -> tables.
"""

__version__ = "0.1.0"

# The library front door (icp/api.py), imported on first use so that `import icp` stays light.
_API = ("prune", "input_compensation", "dense_outputs", "perplexity", "zero_shot", "sam_iou", "PruneReport")
__all__ = [*_API, "__version__"]


def __getattr__(name: str):
    if name in _API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'icp' has no attribute {name!r}")
