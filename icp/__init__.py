"""ICP — Immediate Compensation Pruning, with Magnitude, Wanda and SparseGPT baselines.

The package is organised as the data flows:
config -> data -> dense activations -> per-block steps (engine) -> checkpoint -> evaluations -> tables.
"""

__version__ = "0.1.0"
