"""The user-facing model: ``SCMM(mdata).train()``, latents, cross-modal prediction, save/load."""
from __future__ import annotations

import warnings
from pathlib import Path

import anndata as ad
import mudata as md
import numpy as np
import scipy.sparse as sp
import torch

from . import run, runfolder
from .settings import Settings, settings_of
from .batches import MultiModalBatches
from .module import MMVAE, ModalitySpec
from .module.distributions import nb_sample, zinb_sample
from .module.objective import normalise
from .preprocess import modality_kind
from .runfolder import LATENT_KEY, LIBRARY_KEY, SPLIT_KEY
from .precision import choose_precision
from .train import TrainConfig, fit, pick_device



def align_features(adata: ad.AnnData, names: list[str], what: str = "query") -> sp.csr_matrix:
    """Counts of ``adata`` with columns reordered to ``names``; missing ones zero-filled.

    Warns with the number of training features absent from ``adata``.
    """
    index = {name: i for i, name in enumerate(adata.var_names)}
    present = np.array([name in index for name in names])
    if not present.any():
        raise ValueError(f"{what} shares no feature names with the training features "
                         f"(e.g. {list(names[:3])} vs {list(adata.var_names[:3])})")
    n_missing = int((~present).sum())
    if n_missing:
        warnings.warn(f"{n_missing} of {len(names)} training features are missing from the {what}; "
                      "they are filled with zeros", UserWarning, stacklevel=3)
    source = sp.csr_matrix(adata.X, dtype=np.float32)
    cols = np.array([index[n] for n, p in zip(names, present) if p])
    stacked = sp.hstack([source[:, cols], sp.csr_matrix((adata.n_obs, n_missing), dtype=np.float32)])
    order = np.concatenate([np.flatnonzero(present), np.flatnonzero(~present)])
    return stacked.tocsc()[:, np.argsort(order)].tocsr()


class SCMM:
    """Mixture-of-experts multimodal VAE on a preprocessed MuData of raw counts.

    Parameters
    ----------
    mdata
        Output of :func:`scmm.preprocess` (needs ``obs['scmm_split']`` and
        ``mod[m].obs['scmm_library']``).
    modalities
        ``{name: "nb" | "zinb"}``; default: every modality of ``mdata``, NB for
        RNA and proteins, ZINB for ATAC.
    preset
        ``"cite"``, ``"atac"`` or ``"cite-large-batch"`` (see :mod:`scmm.presets`);
        default: ``"atac"`` when a modality is ATAC, else ``"cite"``.
    latent_dim, hidden
        Latent size D (10) and ``{name: [sizes]}`` overriding the preset's hidden layers.
    posterior_scale
        ``"softplus"`` (default) or ``"softmax"`` (the authors' code).
    encoder_dropout
        Dropout rate after each hidden layer of the encoders while training (0.2;
        0 is the paper's network, which overfits small datasets: ``docs/bench/small-data.md``).
    log_input
        Encoder input log1p(counts / library x 1e4) (default) or without the log.
    device
        ``"cpu"``, ``"cuda"``...; default CUDA when available.
    seed
        Seed of the weight initialisation (training has its own ``seed``).
    settings
        A :class:`scmm.settings.Settings` (the CLI's and the app's way in); the
        keyword arguments above override it.  The resolved settings are
        :attr:`settings` and are saved with the run.
    """

    def __init__(self, mdata: md.MuData, modalities: dict | None = None, preset: str | None = None,
                 latent_dim: int | None = None, hidden: dict | None = None, posterior_scale: str | None = None,
                 encoder_dropout: float | None = None, log_input: bool | None = None, device: str | None = None,
                 seed: int = 0, settings: Settings | None = None):
        modalities = dict(modalities or {})
        names = list(modalities) or list(mdata.mod)
        missing = [n for n in names if n not in mdata.mod]
        if missing:
            raise KeyError(f"modalities {missing} are not in the data (it has {list(mdata.mod)})")
        chosen = (settings or Settings()).replace(
            preset=preset, latent_dim=latent_dim, hidden=hidden, likelihoods=modalities or None,
            posterior_scale=posterior_scale, encoder_dropout=encoder_dropout, log_input=log_input)
        self.settings = chosen.resolve({n: modality_kind(n, mdata.mod[n]) for n in names})
        self.feature_names = {n: [str(v) for v in mdata.mod[n].var_names] for n in names}
        self.specs = [ModalitySpec(n, len(self.feature_names[n]), self.likelihoods[n],
                                   tuple(self.settings.hidden[n])) for n in names]
        self.device = pick_device(device)
        torch.manual_seed(seed)
        self.module = self._build_module()
        self.history: list[dict] = []
        self.status = "untrained"
        self.median_library = {}
        self.mdata = None
        if mdata is not None:
            self._attach(mdata)

    def _build_module(self) -> MMVAE:
        """The torch module of :attr:`specs` and :attr:`settings`, on :attr:`device` (fresh weights)."""
        return MMVAE(self.specs, self.latent_dim, self.posterior_scale,
                     self.settings.encoder_dropout).to(self.device)

    # ------------------------------------------------------------ settings
    @property
    def preset(self) -> str:
        return self.settings.preset

    @property
    def latent_dim(self) -> int:
        return self.settings.latent_dim

    @property
    def likelihoods(self) -> dict:
        return self.settings.likelihoods

    @property
    def posterior_scale(self) -> str:
        return self.settings.posterior_scale

    @property
    def kinds(self) -> dict:
        """``{modality: "rna" | "protein" | "atac"}`` (detected from the data, or as set)."""
        return self.settings.kinds or {n: modality_kind(n) for n in self.names}

    @property
    def log_input(self) -> bool:
        return self.settings.log_input

    # ------------------------------------------------------------------ data
    def _attach(self, mdata: md.MuData) -> None:
        if SPLIT_KEY not in mdata.obs or any(LIBRARY_KEY not in mdata.mod[n].obs for n in self.names):
            raise ValueError("the data is not preprocessed: call scmm.preprocess(mdata) first")
        for n in self.names:
            if list(mdata.mod[n].var_names) != self.feature_names[n]:
                raise ValueError(f"modality {n!r}: features differ from the model's")
        self.mdata = mdata
        train = (mdata.obs[SPLIT_KEY] == "train").to_numpy()
        self.n_train = int(train.sum())
        self.median_library = {n: float(np.median(mdata.mod[n].obs[LIBRARY_KEY].to_numpy()[train]))
                               for n in self.names}

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.specs]

    def _batches(self, mask: np.ndarray) -> MultiModalBatches:
        mats = {n: self.mdata.mod[n].X[mask] for n in self.names}
        libs = {n: self.mdata.mod[n].obs[LIBRARY_KEY].to_numpy()[mask] for n in self.names}
        return MultiModalBatches(mats, self.device, libs)

    # ---------------------------------------------------------------- train
    def train(self, epochs: int | None = None, lr: float | None = None, batch_size: int | None = None,
              warmup: int | None = None, patience: int | None = None, seed: int | None = None,
              objective: str | None = None, k_samples: int | None = None, grad_clip: float | None = None,
              compile: str | bool = "auto", precision: str = "auto", progress: bool = True, callback=None, should_stop=None,
              checkpoint: str | Path | None = None, resume: bool = False) -> dict:
        """Train on the 'train' cells, early-stopping on the 'test' cells.

        Unset settings are the model's :attr:`settings` (the preset's unless
        overridden); the ones given here replace them (validated) and are
        recorded in the run.  Unset ``epochs`` are the preset's, raised where
        needed to make the preset's ``min_steps`` optimiser steps; ``warmup`` and
        ``patience`` in epochs replace the preset's schedule in steps
        (:meth:`scmm.settings.Settings.schedule`).  ``precision``: ``"auto"`` (bf16
        autocast of the networks where the device computes bf16 natively, else
        fp32), ``"bf16"`` or ``"fp32"`` (:mod:`scmm.precision`).
        ``callback(record)`` receives each epoch's losses; ``should_stop()``
        cancels; ``checkpoint`` (a file) makes the run resumable with
        ``resume=True``.  Returns ``{"history", "best_epoch", "status"}``.
        """
        if self.mdata is None:
            raise ValueError("no data attached: build the model from a MuData first")
        self.settings = self.settings.replace(
            epochs=epochs, lr=lr, batch_size=batch_size, warmup=warmup, patience=patience, seed=seed,
            objective=objective, k_samples=k_samples, grad_clip=grad_clip)
        s = self.settings
        plan = self.schedule()
        cfg = TrainConfig(epochs=plan["epochs"], lr=s.lr, warmup_steps=plan["warmup_steps"],
                          patience_steps=plan["patience_steps"], min_steps=plan["min_steps"],
                          smooth_steps=plan["smooth_steps"], batch_size=s.batch_size, seed=s.seed, objective=s.objective, k_samples=s.k_samples,
                          log_input=s.log_input, grad_clip=s.grad_clip, compile=compile,
                          precision=choose_precision(precision, self.device))
        torch.manual_seed(s.seed)
        split = self.mdata.obs[SPLIT_KEY].to_numpy()
        train_set, test_set = self._batches(split == "train"), self._batches(split == "test")
        result = fit(self.module, train_set, test_set, cfg, progress=progress, callback=callback,
                     should_stop=should_stop, checkpoint=checkpoint, resume=resume)
        self.train_config = cfg.to_dict()
        self.history, self.status = result["history"], result["status"]
        return result

    def schedule(self) -> dict:
        """The training schedule for the attached data (:meth:`scmm.settings.Settings.schedule`)."""
        return self.settings.schedule(int((self.mdata.obs[SPLIT_KEY] == "train").sum()))

    def planned_epochs(self, batch_size: int | None = None) -> int:
        """Epochs that :meth:`train` runs when ``epochs`` is not given (see :mod:`scmm.presets`)."""
        n_train = int((self.mdata.obs[SPLIT_KEY] == "train").sum())
        return self.settings.replace(batch_size=batch_size).planned_epochs(n_train)

    # ------------------------------------------------------------ inference
    def _counts_and_library(self, source, modality: str):
        """Aligned CSR counts and library sizes of ``modality`` from a MuData / AnnData / None."""
        if source is None:
            source = self.mdata
        adata = source.mod[modality] if isinstance(source, md.MuData) else source
        if list(map(str, adata.var_names)) == self.feature_names[modality]:
            counts = sp.csr_matrix(adata.X, dtype=np.float32)
        else:
            counts = align_features(adata, self.feature_names[modality], f"{modality!r} input")
        library = np.asarray(counts.sum(axis=1)).ravel().astype(np.float32)
        if (library == 0).any():
            warnings.warn(f"{int((library == 0).sum())} cells have no {modality} counts over the "
                          "training features; their latent is the encoder's answer to an empty cell",
                          UserWarning, stacklevel=3)
        return counts, library

    @torch.no_grad()
    def encode(self, modality: str, source=None, batch_size: int = 4096) -> np.ndarray:
        """Posterior locations (cells x D) of ``modality``'s encoder.

        ``source`` is a MuData with that modality, an AnnData of it (features
        aligned by name), or None for the attached data.
        """
        self._check_modality(modality)
        counts, library = self._counts_and_library(source, modality)
        self.module.eval()
        out = []
        for start in range(0, counts.shape[0], batch_size):
            x = torch.as_tensor(counts[start:start + batch_size].toarray(), device=self.device)
            lib = torch.as_tensor(library[start:start + batch_size], device=self.device)
            loc, _ = self.module.encode(modality, normalise(x, lib, self.log_input))
            out.append(loc.cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.latent_dim), np.float32)

    def get_latent(self, mdata: md.MuData | None = None) -> dict[str, np.ndarray]:
        """Per-modality latents ``X_scmm_<mod>`` and the joint ``X_scmm`` (their mean).

        Written into ``mdata.obsm`` (the attached data by default) and returned.
        """
        mdata = mdata if mdata is not None else self.mdata
        latents = {f"{LATENT_KEY}_{n}": self.encode(n, mdata) for n in self.names}
        latents[LATENT_KEY] = np.mean(list(latents.values()), axis=0)
        for key, value in latents.items():
            mdata.obsm[key] = value
        return latents

    @torch.no_grad()
    def decode(self, z: np.ndarray, modality: str, library=None, batch_size: int = 4096) -> np.ndarray:
        """Expected counts (NB mean, or (1 - pi) x mean for ZINB) decoded from latent codes ``z``.

        ``library``: a scalar or per-cell array; default the median training library.
        """
        self._check_modality(modality)
        z = np.asarray(z, dtype=np.float32)
        libs = self._library_vector(modality, library, len(z))
        self.module.eval()
        out = []
        for start in range(0, len(z), batch_size):
            mean, _, gate = self._decode_params(modality, z[start:start + batch_size],
                                                libs[start:start + batch_size])
            if gate is not None:
                mean = mean * torch.sigmoid(-gate)
            out.append(mean.cpu().numpy())
        return np.concatenate(out)

    def _decode_params(self, modality, z, libs):
        zt = torch.as_tensor(z, device=self.device)
        return self.module.decode(modality, zt, torch.as_tensor(libs, device=self.device))

    def _library_vector(self, modality, library, n):
        if library is None:
            library = self.median_library.get(modality, 1e4)
        return np.broadcast_to(np.asarray(library, dtype=np.float32), (n,)).copy()

    @torch.no_grad()
    def predict(self, target: str, from_modality: str, adata=None, kind: str = "mean", library=None,
                seed: int = 0, batch_size: int = 4096) -> ad.AnnData:
        """Generate ``target`` from ``from_modality`` alone (cross-modal when they differ).

        ``adata``: a query AnnData with only ``from_modality`` (features aligned to
        the training ones by name), a MuData, or None for the attached data.
        ``kind="mean"`` gives NB/ZINB means (dense float32); ``"sample"`` gives
        counts drawn from them, stored sparse.  ``library`` of the generated
        modality: scalar or per-cell; default the median training library.
        """
        if kind not in ("mean", "sample"):
            raise ValueError(f"kind must be 'mean' or 'sample', not {kind!r}")
        z = self.encode(from_modality, adata, batch_size)
        libs = self._library_vector(target, library, len(z))
        if kind == "mean":
            values = self.decode(z, target, libs, batch_size)
        else:
            torch.manual_seed(seed)
            blocks = []
            for start in range(0, len(z), batch_size):
                mean, theta, gate = self._decode_params(target, z[start:start + batch_size],
                                                        libs[start:start + batch_size])
                draw = nb_sample(mean, theta) if gate is None else zinb_sample(mean, theta, gate)
                blocks.append(sp.csr_matrix(draw.cpu().numpy()))
            values = sp.vstack(blocks).tocsr() if blocks else sp.csr_matrix((0, len(self.feature_names[target])))
        source = adata if adata is not None else self.mdata
        out = ad.AnnData(values)
        out.obs_names = [str(o) for o in source.obs_names]
        out.var_names = self.feature_names[target]
        out.uns["scmm_prediction"] = {"target": target, "from": from_modality, "kind": kind}
        return out

    def _check_modality(self, modality: str) -> None:
        if modality not in self.names:
            raise KeyError(f"unknown modality {modality!r}; the model has {self.names}")

    def prior_scale(self) -> np.ndarray:
        """The learned Laplace prior scales b_d (they sum to D)."""
        return self.module.prior_scale().detach().cpu().numpy()

    # ------------------------------------------------------------ save/load
    def config(self) -> dict:
        """Everything needed to rebuild this model (JSON-serialisable)."""
        return {
            "modalities": self.likelihoods, "preset": self.preset, "latent_dim": self.latent_dim,
            "posterior_scale": self.posterior_scale, "log_input": self.log_input,
            "specs": [s.to_dict() for s in self.specs], "feature_names": self.feature_names,
            "median_library": self.median_library, "settings": self.settings.to_dict(),
            "n_train": getattr(self, "n_train", None),
            "train_config": getattr(self, "train_config", None), "status": self.status,
            "history": self.history,
        }

    @classmethod
    def from_config(cls, config: dict, device: str | None = None) -> "SCMM":
        """An untrained model with the architecture and metadata of ``config`` (no data).

        ``config`` is validated first (:func:`scmm.runfolder.validate_model_config`), so a
        malformed or out-of-bounds one raises :class:`~scmm.runfolder.RunFileError` before
        any tensor is allocated.
        """
        config = runfolder.validate_model_config(config)
        model = cls.__new__(cls)
        model.settings = settings_of(config)
        model.specs = [ModalitySpec(s["name"], s["n_features"], s["likelihood"], tuple(s["hidden"]))
                       for s in config["specs"]]
        model.feature_names = {k: list(v) for k, v in config["feature_names"].items()}
        model.median_library = {k: float(v) for k, v in config["median_library"].items()}
        n_train = config.get("n_train")
        model.n_train = n_train if isinstance(n_train, int) and not isinstance(n_train, bool) else None
        if config.get("train_config"):
            model.train_config = dict(config["train_config"])
        model.status = config.get("status", "untrained")
        model.history = list(config.get("history", []))
        model.device = pick_device(device)
        model.module = model._build_module()
        model.mdata = None
        return model

    def save(self, path: str | Path, overwrite: bool = True) -> Path:
        """Write the run folder (``config.json``, ``model.pt``, ``results.h5mu``)."""
        return run.save_run(self, path, overwrite=overwrite)

    @classmethod
    def load(cls, path: str | Path, device: str | None = None, load_data: bool = True) -> "SCMM":
        """Rebuild a model (and its data, if saved) from a run folder.

        The config is validated (:func:`scmm.runfolder.read_config`) before the
        model is built, then the weights are loaded with ``weights_only=True``.
        """
        model = cls.from_config(runfolder.read_config(path), device=device)
        run.load_weights(path, model.module)
        if load_data:
            model.mdata = run.read_results(path)
        return model
