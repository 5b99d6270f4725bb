"""Training presets: the paper's (CITE-seq, RNA+ATAC) and a large-batch one.

Each preset gives per-kind hidden sizes and training settings; anything a user
passes to :class:`scmm.SCMM` or :meth:`scmm.SCMM.train` overrides it.

``min_steps``: the paper's epoch budgets were set on 160,000 cells (about 1,000
optimiser steps an epoch); on a small dataset the same number of epochs is a
few hundred steps and under-trains.  Unless the user sets ``epochs``, training
runs at least ``min_steps`` optimiser steps (more epochs, still early-stopped),
which leaves paper-sized datasets at the paper's epochs.
"""
from __future__ import annotations

DEFAULT_LIKELIHOOD = {"rna": "nb", "protein": "nb", "atac": "zinb"}   # by modality kind

PRESETS: dict[str, dict] = {
    # Paper, CITE-seq: 3 x 200 for both modalities, lr 2e-3, warm-up 10, at most 20 epochs.
    "cite": {
        "hidden": {"rna": [200, 200, 200], "protein": [200, 200, 200], "atac": [200, 200, 200]},
        "lr": 2e-3, "epochs": 20, "warmup": 10, "patience": 10, "batch_size": 128, "min_steps": 4000,
    },
    # Paper, SHARE-seq: 2 x 500 for RNA, 2 x 100 for ATAC, lr 1e-4, warm-up 50, at most 100 epochs.
    "atac": {
        "hidden": {"rna": [500, 500], "atac": [100, 100], "protein": [100, 100]},
        "lr": 1e-4, "epochs": 100, "warmup": 50, "patience": 10, "batch_size": 128, "min_steps": 4000,
    },
    # Large-batch variant of "cite" for GPUs: batch x4, learning rate scaled by sqrt(4),
    # half the steps, patience x2 (an epoch is 4x fewer steps).
    "cite-large-batch": {
        "hidden": {"rna": [200, 200, 200], "protein": [200, 200, 200], "atac": [200, 200, 200]},
        "lr": 4e-3, "epochs": 20, "warmup": 10, "patience": 20, "batch_size": 512, "min_steps": 2000,
    },
    # Large-batch variant of "atac" for GPUs, scaled the same way.
    "atac-large-batch": {
        "hidden": {"rna": [500, 500], "atac": [100, 100], "protein": [100, 100]},
        "lr": 3e-4, "epochs": 100, "warmup": 50, "patience": 10, "batch_size": 1024, "min_steps": 1000,
    },
}


def epochs_for(settings: dict, n_train: int, batch_size: int) -> int:
    """The preset's epochs, raised so that training makes at least ``min_steps`` steps."""
    steps_per_epoch = max(1, n_train // max(1, min(batch_size, n_train)))
    return max(settings["epochs"], -(-settings.get("min_steps", 0) // steps_per_epoch))


def default_preset(kinds: list[str]) -> str:
    """'atac' when a modality is chromatin accessibility, else 'cite'."""
    return "atac" if "atac" in kinds else "cite"


def get_preset(name: str) -> dict:
    """A copy of preset ``name`` (KeyError listing the known ones otherwise)."""
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; known: {sorted(PRESETS)}")
    preset = dict(PRESETS[name])
    preset["hidden"] = {k: list(v) for k, v in preset["hidden"].items()}
    return preset
