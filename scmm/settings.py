"""One schema for every setting of a training: :class:`Settings`.

A ``Settings`` is built once from a preset of the registry
(:data:`scmm.presets.PRESETS`) and the user's overrides, validated on
construction (:mod:`scmm.options`; a frozen dataclass, so every copy made with
:meth:`Settings.replace` is validated again), and serialised once into the run
(``config.json["settings"]``).  The CLI (``scmm train`` flags or
``--settings FILE``), the API (``SCMM(..., settings=)`` and the keyword
arguments of ``SCMM`` / ``SCMM.train``) and the app's jobs (a ``settings.json``
in the run folder) all produce and consume it.  Torch-free.

Fields left ``None`` come from the preset when the data's modalities are
known (:meth:`Settings.resolve`); ``preset=None`` picks ``atac`` when a
modality is chromatin accessibility, else ``cite``.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from . import presets, runfolder
from .options import (check_option, validate_model_options, validate_preprocess_options,
                      validate_train_options)

#: fields whose unset value comes from the preset
PRESET_FIELDS = ("lr", "batch_size", "min_steps", "warmup_steps", "patience_steps", "smooth_steps")
POSTERIOR_SCALES = runfolder.POSTERIOR_SCALES


@dataclass(frozen=True)
class Settings:
    """Everything that decides what a training learns (not where it runs: device, threads)."""

    preset: str | None = None
    latent_dim: int = 10
    hidden: dict = field(default_factory=dict)          # {modality: [sizes]} over the preset's
    likelihoods: dict = field(default_factory=dict)     # {modality: "nb" | "zinb"} over the defaults
    kinds: dict = field(default_factory=dict)           # {modality: "rna" | "protein" | "atac"} over the detected
    modality_names: dict = field(default_factory=dict)  # {name in the file: name to train under}
    posterior_scale: str = "softplus"
    encoder_dropout: float = 0.2                        # totalVI's encoder rate; runs saved without it had 0
    log_input: bool = True
    epochs: int | None = None                           # None: the preset's, raised to min_steps
    lr: float | None = None
    warmup: int | None = None                           # in epochs: overrides warmup_steps
    patience: int | None = None                         # in epochs: overrides patience_steps
    batch_size: int | None = None
    min_steps: int | None = None
    warmup_steps: int | None = None
    patience_steps: int | None = None
    smooth_steps: int | None = None
    seed: int = 0
    objective: str = "stratified"
    k_samples: int = 1
    grad_clip: float | None = None
    n_top_genes: int | None = 5000
    peak_fraction: float | None = 0.25
    test_fraction: float = 0.2

    def __post_init__(self):
        if self.preset is not None and self.preset not in presets.PRESETS:
            raise ValueError(f"preset must be one of {sorted(presets.PRESETS)}, got {self.preset!r}")
        if self.posterior_scale not in POSTERIOR_SCALES:
            raise ValueError(f"posterior_scale must be one of {list(POSTERIOR_SCALES)}, "
                             f"got {self.posterior_scale!r}")
        if not isinstance(self.log_input, bool):
            raise ValueError(f"log_input must be true or false, got {self.log_input!r}")
        if not all(isinstance(v, dict) for v in (self.hidden, self.likelihoods, self.kinds)):
            raise ValueError("hidden, likelihoods and kinds must map modality names to values")
        if not isinstance(self.modality_names, dict):
            raise ValueError("modality_names must map the file's modality names to new names")
        renamed = list(self.modality_names.values())
        wrong = [n for n in renamed if not isinstance(n, str) or not runfolder.MODALITY_NAME.match(n)]
        if wrong:
            raise ValueError(f"modality names must be a letter or _ then letters, digits or _ (at most 64), "
                             f"got {wrong[0]!r}")
        if len(set(renamed)) != len(renamed):
            raise ValueError(f"modality names must differ, got {renamed}")
        bad = {m: k for m, k in self.kinds.items() if k not in presets.DEFAULT_LIKELIHOOD}
        if bad:
            raise ValueError(f"kinds must be among {sorted(presets.DEFAULT_LIKELIHOOD)}, got {bad}")
        validate_model_options(latent_dim=self.latent_dim, hidden=self.hidden, likelihoods=self.likelihoods,
                               encoder_dropout=self.encoder_dropout)
        validate_train_options(epochs=self.epochs, lr=self.lr, warmup=self.warmup, patience=self.patience,
                               batch_size=self.batch_size, seed=self.seed, objective=self.objective,
                               k_samples=self.k_samples)
        for name in ("min_steps", "warmup_steps", "smooth_steps"):
            if getattr(self, name) is not None:
                check_option(name, getattr(self, name), 0, math.inf, integer=True)
        if self.patience_steps is not None:
            check_option("patience_steps", self.patience_steps, 1, math.inf, integer=True)
        if self.grad_clip is not None:
            check_option("grad_clip", self.grad_clip, 0, math.inf, lo_open=True)
        validate_preprocess_options(n_top_genes=self.n_top_genes, peak_fraction=self.peak_fraction,
                                    test_fraction=self.test_fraction)

    # ------------------------------------------------------------ building
    @classmethod
    def build(cls, **values) -> "Settings":
        """Settings from keyword values; ``None`` values are left to the preset / defaults."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown settings {unknown}; known: {sorted(names)}")
        return cls(**{k: v for k, v in values.items() if v is not None})

    def replace(self, **changes) -> "Settings":
        """A validated copy with ``changes`` (``None`` values change nothing)."""
        changes = {k: v for k, v in changes.items() if v is not None}
        return dataclasses.replace(self, **changes) if changes else self

    def resolve(self, kinds: dict[str, str]) -> "Settings":
        """Concrete settings for modalities ``{name: detected kind}`` (kinds set here win): the
        preset chosen, its values filled in."""
        kinds = {m: self.kinds.get(m, kind) for m, kind in kinds.items()}
        preset = self.preset or presets.default_preset(list(kinds.values()))
        values = presets.get_preset(preset)
        filled = {k: getattr(self, k) if getattr(self, k) is not None else values[k] for k in PRESET_FIELDS}
        hidden = {m: list(self.hidden.get(m, values["hidden"][kind])) for m, kind in kinds.items()}
        likelihoods = {m: self.likelihoods.get(m, presets.DEFAULT_LIKELIHOOD[kind]) for m, kind in kinds.items()}
        return dataclasses.replace(self, preset=preset, hidden=hidden, likelihoods=likelihoods, kinds=kinds,
                                   **filled)

    def schedule(self, n_train: int) -> dict:
        """The training schedule of ``n_train`` cells in optimiser steps (resolved settings):
        ``epochs``, ``steps_per_epoch``, ``max_steps``, ``warmup_steps``, ``patience_steps``
        (``warmup`` / ``patience`` given in epochs converted), ``min_steps``, ``smooth_steps``."""
        per_epoch = presets.steps_per_epoch(n_train, self.batch_size)
        epochs = self.planned_epochs(n_train)
        return {"epochs": epochs, "steps_per_epoch": per_epoch, "max_steps": epochs * per_epoch,
                "warmup_steps": self.warmup * per_epoch if self.warmup is not None else self.warmup_steps,
                "patience_steps": self.patience * per_epoch if self.patience is not None else self.patience_steps,
                "min_steps": self.min_steps if self.epochs is None else 0,   # epochs given: the user's length
                "smooth_steps": self.smooth_steps}

    def planned_epochs(self, n_train: int) -> int:
        """The epochs a training of ``n_train`` cells runs (resolved settings): ``epochs`` if set,
        else the preset's, raised so that training makes at least ``min_steps`` optimiser steps."""
        if self.epochs is not None:
            return self.epochs
        preset = presets.get_preset(self.preset or "cite")
        return presets.epochs_for({"epochs": preset["epochs"], "min_steps": self.min_steps or 0},
                                  n_train, self.batch_size or preset["batch_size"])

    # -------------------------------------------------------- serialising
    def to_dict(self) -> dict:
        """JSON-ready form (the one stored in a run's config.json and settings.json)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values) -> "Settings":
        """Settings from :meth:`to_dict`'s form (validated; unknown keys refused)."""
        if not isinstance(values, dict):
            raise ValueError(f"settings must be a JSON object, not {type(values).__name__}")
        return cls.build(**values)

    def write(self, path: str | Path) -> Path:
        """Write the settings as JSON (atomically)."""
        runfolder.write_json_atomic(path, self.to_dict())
        return Path(path)

    @classmethod
    def read(cls, path: str | Path) -> "Settings":
        """Settings from a JSON file (clear errors for a missing, malformed or out-of-range one)."""
        raw = runfolder.read_json(path, max_bytes=2 ** 20)
        if raw is None:
            raise FileNotFoundError(f"no settings file {path}")
        try:
            return cls.from_dict(raw)
        except (ValueError, TypeError) as err:
            raise runfolder.RunFileError(path, str(err)) from None

    def __str__(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


#: below this many cells results are unreliable: in bench/quality.py (docs/bench/small-data.md) the joint
#: latent clustered worse than simple baselines at 500 cells and matched or beat them from 1,000
SMALL_DATA_CELLS = 1000


def describe_schedule(plan: dict, batch_size: int) -> str:
    """One line saying what :meth:`Settings.schedule` plans, e.g. for the CLI and the Train page."""
    text = (f"up to {plan['epochs']:,} epochs = {plan['max_steps']:,} optimiser steps of {batch_size} cells "
            f"({plan['steps_per_epoch']:,} an epoch); KL warm-up {plan['warmup_steps']:,} steps; early stopping "
            f"after {plan['patience_steps']:,} steps without improvement of the smoothed test loss")
    return text + (f", not before step {plan['min_steps']:,}" if plan["min_steps"] else "")


def small_data_warning(n_cells: int, n_test: int) -> str | None:
    """Why results on ``n_cells`` cells (``n_test`` held out) are unreliable; None when they are not."""
    if n_cells >= SMALL_DATA_CELLS:
        return None
    return (f"Only {n_cells:,} cells: with fewer than {SMALL_DATA_CELLS:,} cells the test split ({n_test:,} cells) "
            "is small, so early stopping and the held-out metrics are noisy, and results are unreliable: on "
            "500-cell subsets of pbmc10k_cite the joint latent separated the known cell types less well than "
            "PCA of the RNA with CLR protein in our benchmark (adjusted Rand index 0.73 vs 0.94); from 1,000 "
            "cells, on pbmc10k_cite and snare_cortex, it matched or beat it.")


def settings_of(config: dict) -> Settings:
    """The settings of a saved run's (validated) config; runs saved before ``settings``
    existed are read from their ``preset``, ``specs`` and ``train_settings``, and runs saved
    before ``encoder_dropout`` existed trained without dropout."""
    if "settings" in config:
        settings = Settings.from_dict({"encoder_dropout": 0.0, **config["settings"]})
        architecture = {"latent_dim": config["latent_dim"], "posterior_scale": config["posterior_scale"],
                        "likelihoods": config["modalities"]}
        for key, value in architecture.items():
            if getattr(settings, key) != value:
                raise runfolder.RunFileError(runfolder.CONFIG_FILE, f"{key!r} = {value!r} disagrees with the "
                                             f"settings ({getattr(settings, key)!r})")
        return settings
    legacy = config.get("train_settings") or {}
    return Settings.build(
        preset=config["preset"], latent_dim=int(config["latent_dim"]),
        posterior_scale=config["posterior_scale"], log_input=bool(config.get("log_input", True)),
        likelihoods=dict(config["modalities"]), hidden={s["name"]: list(s["hidden"]) for s in config["specs"]},
        encoder_dropout=0.0, **{k: legacy[k] for k in PRESET_FIELDS if legacy.get(k) is not None})
