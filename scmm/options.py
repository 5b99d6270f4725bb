"""Bounds of the user-facing options, checked in one place (CLI, ``SCMM``, ``preprocess``).

Each check raises ``ValueError`` naming the option and its allowed range, e.g.
``--epochs must be an integer in [1, 100000], got -5`` (the CLI spelling) or
``epochs must be an integer in [1, 100000], got -5`` (the keyword of the API).
This module never imports torch.
"""
from __future__ import annotations

import math
import numbers

from .runfolder import MAX_HIDDEN, MAX_LATENT_DIM, MAX_LAYERS

INF = math.inf

#: option -> (lowest, highest, integer, lowest excluded)
TRAIN_BOUNDS = {
    "epochs": (1, 100_000, True, False),
    "lr": (0, 10, False, True),
    "batch_size": (1, 65_536, True, False),
    "k_samples": (1, 1000, True, False),
    "warmup": (0, INF, True, False),
    "patience": (1, INF, True, False),
    "seed": (0, 2 ** 32 - 1, True, False),
}
PREPROCESS_BOUNDS = {
    "test_fraction": (0, 0.9, False, False),
    "n_top_genes": (1, INF, True, False),
    "peak_fraction": (0, 1, False, True),
}
MODEL_BOUNDS = {
    "latent_dim": (1, MAX_LATENT_DIM, True, False),
    "encoder_dropout": (0, 0.9, False, False),
}
OBJECTIVES = ("stratified", "naive")
LIKELIHOODS = ("nb", "zinb")


def option_name(key: str, cli: bool = False) -> str:
    """``batch_size`` as the API spells it, or ``--batch-size`` as the CLI does."""
    return "--" + key.replace("_", "-") if cli else key


def _number_text(x) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def allowed_range(lo, hi, integer: bool = False, lo_open: bool = False) -> str:
    """``an integer in [1, 100000]``, ``a number in (0, 10]``, ``an integer >= 0``..."""
    kind = "an integer" if integer else "a number"
    if hi == INF:
        return f"{kind} {'>' if lo_open else '>='} {_number_text(lo)}"
    return f"{kind} in {'(' if lo_open else '['}{_number_text(lo)}, {_number_text(hi)}]"


def check_option(name: str, value, lo=-INF, hi=INF, integer: bool = False, lo_open: bool = False):
    """``value`` when it is a finite number (an integer if asked) within the bounds; else ValueError.

    ``name`` is used as given in the message (pass ``--epochs`` or ``epochs``).
    """
    ok = not isinstance(value, bool) and isinstance(value, numbers.Real)
    if ok:
        try:
            ok = math.isfinite(value)
        except OverflowError:
            ok = False
    if ok and integer and not isinstance(value, numbers.Integral):
        ok = float(value).is_integer()
    if ok:
        ok = (lo < value if lo_open else lo <= value) and value <= hi
    if not ok:
        raise ValueError(f"{name} must be {allowed_range(lo, hi, integer, lo_open)}, got {value!r}")
    return int(value) if integer else value


def _check_all(bounds: dict, values: dict, cli: bool) -> dict:
    for key, value in values.items():
        if value is not None and key in bounds:
            check_option(option_name(key, cli), value, *bounds[key])
    return values


def validate_train_options(cli: bool = False, **options) -> dict:
    """Check training options (epochs, lr, batch_size, k_samples, warmup, patience, seed,
    objective); None means "the preset's" and is not checked.  Returns ``options``."""
    objective = options.get("objective")
    if objective is not None and objective not in OBJECTIVES:
        raise ValueError(f"{option_name('objective', cli)} must be one of {list(OBJECTIVES)}, "
                         f"got {objective!r}")
    unknown = set(options) - set(TRAIN_BOUNDS) - {"objective"}
    if unknown:
        raise TypeError(f"unknown training options {sorted(unknown)}")
    return _check_all(TRAIN_BOUNDS, options, cli)


def validate_preprocess_options(cli: bool = False, **options) -> dict:
    """Check test_fraction, n_top_genes and peak_fraction (None: keep all features)."""
    unknown = set(options) - set(PREPROCESS_BOUNDS)
    if unknown:
        raise TypeError(f"unknown preprocessing options {sorted(unknown)}")
    return _check_all(PREPROCESS_BOUNDS, options, cli)


def validate_model_options(cli: bool = False, latent_dim=None, hidden: dict | None = None,
                           likelihoods: dict | None = None, encoder_dropout=None) -> None:
    """Check the architecture: latent_dim, hidden layer sizes per modality, likelihoods, encoder_dropout."""
    _check_all(MODEL_BOUNDS, {"latent_dim": latent_dim, "encoder_dropout": encoder_dropout}, cli)
    for name, sizes in (hidden or {}).items():
        what = f"{option_name('hidden', cli)}[{name!r}]"
        if isinstance(sizes, (str, bytes)) or not hasattr(sizes, "__len__") \
                or not 1 <= len(sizes) <= MAX_LAYERS:
            raise ValueError(f"{what} must list 1 to {MAX_LAYERS} layer sizes, got {sizes!r:.80}")
        for size in sizes:
            check_option(f"{what} layer size", size, 1, MAX_HIDDEN, integer=True)
    for name, likelihood in (likelihoods or {}).items():
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood of {name!r} must be one of {list(LIKELIHOODS)}, "
                             f"got {likelihood!r}")
