"""Training presets: the paper's (CITE-seq, RNA+ATAC) and a large-batch one.

Each preset gives per-kind hidden sizes and training settings; anything a user
passes to :class:`scmm.SCMM` or :meth:`scmm.SCMM.train` overrides it.

The schedule is in optimiser steps (see :mod:`scmm.train`).  The paper's
schedules are in epochs and were set on about 160,000 cells (1,250 steps an
epoch at batch 128): there, warm-up and patience of 10 epochs are 12,500 steps
each.  On a 1,000-cell dataset (7 steps an epoch) the same epochs are 70 steps,
so the warm-up is over before the decoders have learnt anything and early
stopping ends training on noise.  Counted in steps, the schedule means the same
at every size:

- ``warmup_steps``: KL warm-up length;
- ``patience_steps``: early stopping after this many steps without improvement
  of the smoothed test loss;
- ``smooth_steps``: the test loss is averaged over about this many steps
  (no smoothing once an epoch is that long);
- ``min_steps``: training runs at least this many steps (more epochs than the
  preset's ``epochs`` on small data) and never early-stops before;
- ``epochs``: the paper's epoch budget, kept where it is longer (large data).

``SCMM.train(warmup=, patience=)`` still take epochs (converted to steps for
the data at hand) for users who think in epochs.
"""
from __future__ import annotations

DEFAULT_LIKELIHOOD = {"rna": "nb", "protein": "nb", "atac": "zinb"}   # by modality kind

#: the schedule shared by every preset, in optimiser steps (chosen by bench/quality.py's small-data table)
WARMUP, PATIENCE, SMOOTH = 2500, 1000, 100

PRESETS: dict[str, dict] = {
    # Paper, CITE-seq: 3 x 200 for both modalities, lr 2e-3, warm-up 10, at most 20 epochs.
    "cite": {
        "hidden": {"rna": [200, 200, 200], "protein": [200, 200, 200], "atac": [200, 200, 200]},
        "lr": 2e-3, "epochs": 20, "batch_size": 128, "min_steps": 4000,
        "warmup_steps": WARMUP, "patience_steps": PATIENCE, "smooth_steps": SMOOTH,
    },
    # Paper, SHARE-seq: 2 x 500 for RNA, 2 x 100 for ATAC, lr 1e-4, warm-up 50, at most 100 epochs.
    "atac": {
        "hidden": {"rna": [500, 500], "atac": [100, 100], "protein": [100, 100]},
        "lr": 1e-4, "epochs": 100, "batch_size": 128, "min_steps": 4000,
        "warmup_steps": WARMUP, "patience_steps": PATIENCE, "smooth_steps": SMOOTH,
    },
    # Large-batch variant of "cite" for GPUs: batch x4, learning rate scaled by sqrt(4),
    # half the steps (schedule halved too).
    "cite-large-batch": {
        "hidden": {"rna": [200, 200, 200], "protein": [200, 200, 200], "atac": [200, 200, 200]},
        "lr": 4e-3, "epochs": 20, "batch_size": 512, "min_steps": 2000,
        "warmup_steps": WARMUP // 2, "patience_steps": PATIENCE // 2, "smooth_steps": SMOOTH // 2,
    },
    # Large-batch variant of "atac" for GPUs: batch x8, a quarter of the steps.
    "atac-large-batch": {
        "hidden": {"rna": [500, 500], "atac": [100, 100], "protein": [100, 100]},
        "lr": 3e-4, "epochs": 100, "batch_size": 1024, "min_steps": 1000,
        "warmup_steps": WARMUP // 4, "patience_steps": PATIENCE // 4, "smooth_steps": SMOOTH // 4,
    },
}


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    """Optimiser steps in an epoch of ``n_train`` cells (full batches only; at least 1)."""
    return max(1, n_train // max(1, min(batch_size, n_train)))


def epochs_for(settings: dict, n_train: int, batch_size: int) -> int:
    """The preset's epochs, raised so that training makes at least ``min_steps`` steps."""
    return max(settings["epochs"], -(-settings.get("min_steps", 0) // steps_per_epoch(n_train, batch_size)))


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
