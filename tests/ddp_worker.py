"""One rank of a DDP test run: ``torchrun --nproc_per_node=2 tests/ddp_worker.py CONFIG.json``.

Trains with ``fastnoise.train.fit`` and saves what this rank ended with (its weights, the
metrics it was told, where fastnoise came from) to ``<out>/rank{RANK}.pt``, so a test can
compare the replicas with each other and with a single-process run. Rank 0 also writes the
usual checkpoint and metrics.jsonl.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

# the checkout this file sits in, not whichever fastnoise is installed (mutation testing
# runs a copy of the tree)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import fastnoise  # noqa: E402
from fastnoise.train import TrainConfig, fit  # noqa: E402


def main(config_path: str) -> None:
    config = TrainConfig.from_dict(json.loads(Path(config_path).read_text()))
    result = fit(config)
    rank = int(os.environ.get("RANK", "0"))
    state = {
        "model": result.model.state_dict(),
        "metrics": result.metrics,
        "fastnoise_file": fastnoise.__file__,
    }
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(state, out / f"rank{rank}.pt")


if __name__ == "__main__":
    main(sys.argv[1])
