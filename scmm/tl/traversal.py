"""Latent traversal: decode pseudocells along each latent dimension, Spearman-test every feature.

For each dimension d the other dimensions are held at 0 and z_d moves from
-span·σ_d to +span·σ_d in steps of step·σ_d (σ_d = √2·b_d, the prior's s.d.;
21 points by default).  Every modality is decoded at every point, once; the
Spearman correlation between z_d and each feature's decoded mean, its p-value
and the decoded change over the range of z_d that the cells occupy are kept in
a :class:`Traversal`, so that a new threshold, dimension or modality is a
table look-up.  ``traverse(model, run_dir=...)`` caches it as
``traversal.npz`` + ``traversal.json`` in the run folder.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from ..runfolder import LATENT_KEY, replace_atomic

CACHE_NAME = "traversal.npz"
#: The paper's p-value thresholds by modality kind.
DEFAULT_PVALUES = {"rna": 1e-12, "protein": 1e-3, "atac": 1e-21}
_FORMAT = 1


def spearman_rows(x: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Spearman ρ and two-sided p-value between ``x`` (n,) and each column of ``Y`` (n, F).

    Vectorised: ranks (ties averaged), then Pearson on the ranks; the p-value
    comes from the t distribution with n - 2 degrees of freedom (as
    ``scipy.stats.spearmanr``).  A constant column gets ρ = 0, p = 1.
    """
    x = np.asarray(x, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    if Y.ndim == 1:
        Y = Y[:, None]
    n = len(x)
    if n < 3:
        raise ValueError("need at least 3 points for a Spearman test")
    rx = stats.rankdata(x)
    rY = stats.rankdata(Y, axis=0)
    rx = rx - rx.mean()
    rY = rY - rY.mean(axis=0)
    sx = np.sqrt((rx ** 2).sum())
    sY = np.sqrt((rY ** 2).sum(axis=0))
    constant = (sY == 0) | (sx == 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = (rx @ rY) / (sx * sY)
    rho = np.where(constant, 0.0, np.clip(rho, -1.0, 1.0))
    dof = n - 2
    with np.errstate(divide="ignore", invalid="ignore"):
        t = rho * np.sqrt(dof / ((1.0 - rho) * (1.0 + rho)))
    pvalue = 2 * stats.t.sf(np.abs(t), dof)
    pvalue = np.where(np.abs(rho) >= 1.0, 0.0, pvalue)
    pvalue = np.where(constant, 1.0, pvalue)
    return rho, pvalue


class Traversal:
    """Decoded pseudocells along every latent dimension, with per-feature statistics.

    Attributes (all NumPy, per modality ``m`` where keyed):

    - ``steps`` (P,): grid in units of σ (-5 ... +5);
    - ``sigma`` (D,): σ_d = √2·b_d; ``grid`` (D, P): z values, ``steps * sigma[d]``;
    - ``means[m]`` (D, P, F): decoded means (library ``library[m]``);
    - ``rho[m]``, ``pvalue[m]`` (D, F): Spearman statistics of z_d vs decoded mean;
    - ``occupied`` (D, 2): 1st and 99th percentile of the cells' joint latent on d;
    - ``edge_means[m]`` (D, 2, F): decoded means at those two values;
    - ``log2_fc[m]`` (D, F): log2 of their ratio (high over low);
    - ``features[m]``, ``kinds[m]``, ``pvalues[m]`` (the default thresholds; settable).
    """

    def __init__(self, steps, sigma, means, rho, pvalue, occupied, edge_means, features, kinds,
                 library, key: str = ""):
        self.steps = np.asarray(steps, dtype=np.float64)
        self.sigma = np.asarray(sigma, dtype=np.float64)
        self.grid = self.sigma[:, None] * self.steps[None, :]
        self.means = {m: np.asarray(v) for m, v in means.items()}
        self.rho = {m: np.asarray(v) for m, v in rho.items()}
        self.pvalue = {m: np.asarray(v) for m, v in pvalue.items()}
        self.occupied = np.asarray(occupied, dtype=np.float64)
        self.edge_means = {m: np.asarray(v) for m, v in edge_means.items()}
        self.features = {m: [str(f) for f in v] for m, v in features.items()}
        self.kinds = dict(kinds)
        self.library = {m: float(v) for m, v in library.items()}
        self.key = key
        self.pvalues = {m: DEFAULT_PVALUES.get(k, 1e-3) for m, k in self.kinds.items()}
        self._feature_index = {m: {f: i for i, f in enumerate(v)} for m, v in self.features.items()}
        tiny = 1e-12
        self.log2_fc = {m: np.log2((e[:, 1, :] + tiny) / (e[:, 0, :] + tiny))
                        for m, e in self.edge_means.items()}

    # ------------------------------------------------------------ queries
    @property
    def modalities(self) -> list[str]:
        return list(self.features)

    @property
    def n_dims(self) -> int:
        return len(self.sigma)

    def _check(self, dim: int, modality: str) -> None:
        if modality not in self.features:
            raise KeyError(f"unknown modality {modality!r}; the traversal has {self.modalities}")
        if not 0 <= int(dim) < self.n_dims:
            raise IndexError(f"dimension {dim} out of range 0..{self.n_dims - 1}")

    def associated(self, dim: int, modality: str, pvalue: float | None = None, n: int | None = None,
                   direction: str | None = None) -> pd.DataFrame:
        """Features associated with latent dimension ``dim`` (0-based) in ``modality``.

        Significant features (Spearman p-value below ``pvalue``; default the
        modality kind's threshold in ``self.pvalues``: RNA 1e-12, protein 1e-3,
        ATAC 1e-21) ranked by |log2_fc|, the change of the decoded mean over the
        range of z_d occupied by the cells (1st to 99th percentile).  Columns:
        ``feature, rho, pvalue, log2_fc, direction`` (sign of ρ: "positive" /
        "negative"), ``mean_low, mean_high`` (decoded means at the two ends).
        ``direction`` keeps only one sign; ``n`` keeps the top n.
        """
        self._check(dim, modality)
        threshold = self.pvalues[modality] if pvalue is None else float(pvalue)
        rho, pv = self.rho[modality][dim], self.pvalue[modality][dim]
        fc = self.log2_fc[modality][dim]
        keep = (pv < threshold) & (rho != 0)
        if direction is not None:
            if direction not in ("positive", "negative"):
                raise ValueError(f"direction must be 'positive' or 'negative', not {direction!r}")
            keep &= (rho > 0) if direction == "positive" else (rho < 0)
        idx = np.flatnonzero(keep)
        idx = idx[np.argsort(-np.abs(fc[idx]), kind="stable")]
        if n is not None:
            idx = idx[:int(n)]
        names = np.asarray(self.features[modality], dtype=object)
        edges = self.edge_means[modality][dim]
        return pd.DataFrame({
            "feature": names[idx], "rho": rho[idx], "pvalue": pv[idx], "log2_fc": fc[idx],
            "direction": np.where(rho[idx] > 0, "positive", "negative"),
            "mean_low": edges[0, idx], "mean_high": edges[1, idx],
        })

    def table(self, dim: int, modality: str) -> pd.DataFrame:
        """Every feature's statistics on ``dim`` (unfiltered, in feature order)."""
        self._check(dim, modality)
        return pd.DataFrame({"feature": self.features[modality], "rho": self.rho[modality][dim],
                             "pvalue": self.pvalue[modality][dim],
                             "log2_fc": self.log2_fc[modality][dim]})

    def summary(self, pvalues: dict | None = None) -> pd.DataFrame:
        """Counts of positively / negatively associated features per dimension and modality."""
        rows = []
        for m in self.modalities:
            threshold = (pvalues or {}).get(m, self.pvalues[m])
            for d in range(self.n_dims):
                sig = self.pvalue[m][d] < threshold
                rows.append({"dim": d, "modality": m, "sigma": self.sigma[d],
                             "n_positive": int((sig & (self.rho[m][d] > 0)).sum()),
                             "n_negative": int((sig & (self.rho[m][d] < 0)).sum())})
        return pd.DataFrame(rows)

    def profile(self, dim: int, modality: str, features) -> pd.DataFrame:
        """Decoded means of ``features`` along the grid of ``dim`` (index: z; column ``z_sigma``)."""
        self._check(dim, modality)
        if isinstance(features, str):
            features = [features]
        index = self._feature_index[modality]
        missing = [f for f in features if f not in index]
        if missing:
            raise KeyError(f"features not in {modality!r}: {missing[:5]}")
        cols = [index[f] for f in features]
        table = pd.DataFrame(self.means[modality][dim][:, cols], columns=list(features),
                             index=pd.Index(self.grid[dim], name="z"))
        table.insert(0, "z_sigma", self.steps)
        return table

    # ------------------------------------------------------------ storage
    def save(self, path: str | Path) -> Path:
        """Write ``path`` (.npz arrays) and the same name with ``.json`` (metadata), atomically."""
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_suffix(".npz")
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {"steps": self.steps, "sigma": self.sigma, "occupied": self.occupied}
        for i, m in enumerate(self.modalities):
            arrays[f"means_{i}"] = self.means[m]
            arrays[f"rho_{i}"] = self.rho[m]
            arrays[f"pvalue_{i}"] = self.pvalue[m]
            arrays[f"edge_{i}"] = self.edge_means[m]
        meta = {"format": _FORMAT, "key": self.key, "modalities": self.modalities,
                "features": self.features, "kinds": self.kinds, "library": self.library,
                "pvalues": self.pvalues}
        replace_atomic(lambda tmp: np.savez(tmp, **arrays), path)
        replace_atomic(lambda tmp: tmp.write_text(json.dumps(meta)), path.with_suffix(".json"))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Traversal":
        """Read a traversal written by :meth:`save`."""
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_suffix(".npz")
        meta_file = path.with_suffix(".json")
        if not path.exists() or not meta_file.exists():
            raise FileNotFoundError(f"no traversal at {path} (needs {path.name} and {meta_file.name})")
        meta = json.loads(meta_file.read_text())
        if meta.get("format") != _FORMAT:
            raise ValueError(f"{path}: unknown traversal format {meta.get('format')}")
        mods = meta["modalities"]
        with np.load(path) as data:
            out = cls(data["steps"], data["sigma"],
                      {m: data[f"means_{i}"] for i, m in enumerate(mods)},
                      {m: data[f"rho_{i}"] for i, m in enumerate(mods)},
                      {m: data[f"pvalue_{i}"] for i, m in enumerate(mods)},
                      data["occupied"],
                      {m: data[f"edge_{i}"] for i, m in enumerate(mods)},
                      meta["features"], meta["kinds"], meta["library"], key=meta.get("key", ""))
        out.pvalues.update({m: float(v) for m, v in meta.get("pvalues", {}).items()})
        return out

    def __repr__(self) -> str:
        mods = ", ".join(f"{m} ({len(f)})" for m, f in self.features.items())
        return f"Traversal({self.n_dims} dims x {len(self.steps)} points; {mods})"


# ---------------------------------------------------------------- building
def _model_hash(model) -> str:
    h = hashlib.sha1()
    for name, tensor in model.module.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().numpy().tobytes())
    return h.hexdigest()


def _cache_key(model, latent, span, step, library) -> str:
    h = hashlib.sha1(_model_hash(model).encode())
    h.update(json.dumps([span, step, library], sort_keys=True, default=str).encode())
    if latent is not None:
        h.update(np.ascontiguousarray(latent, dtype=np.float32).tobytes())
    return h.hexdigest()[:20]


def _joint_latent(model):
    mdata = getattr(model, "mdata", None)
    if mdata is None:
        return None
    if LATENT_KEY in mdata.obsm:
        return np.asarray(mdata.obsm[LATENT_KEY])
    return model.get_latent()[LATENT_KEY]


def traverse(model, run_dir: str | Path | None = None, span: float = 5.0, step: float = 0.5,
             library: dict | float | None = None, latent: np.ndarray | None = None,
             percentiles: tuple[float, float] = (1.0, 99.0), recompute: bool = False) -> Traversal:
    """Latent traversal of a trained :class:`scmm.SCMM` (see the module docstring).

    Parameters
    ----------
    run_dir
        Run folder: the result is cached there as ``traversal.npz``/``.json``
        and reused while the model, settings and latent are unchanged.
    span, step
        Grid from -span·σ to +span·σ by step·σ (paper: 5 and 0.5, 21 points).
    library
        Library size of the decoded pseudocells: a number, ``{modality: number}``,
        or None for the median training library of each modality.
    latent
        Cells' joint latent (cells x D) giving the occupied range of each dimension;
        default ``model.mdata.obsm['X_scmm']`` (computed if absent).  Without
        cells the whole grid range is used.
    percentiles
        The occupied range (default 1st to 99th percentile).
    """
    from ..preprocess import modality_kind
    if step <= 0 or span <= 0:
        raise ValueError("span and step must be positive")
    if latent is None:
        latent = _joint_latent(model)
    libraries = {}
    for m in model.names:
        value = library.get(m) if isinstance(library, dict) else library
        libraries[m] = float(value) if value is not None else float(model.median_library.get(m, 1e4))
    key = _cache_key(model, latent, span, step, libraries)
    cache = Path(run_dir) / CACHE_NAME if run_dir is not None else None
    if cache is not None and cache.exists() and not recompute:
        try:
            cached = Traversal.load(cache)
            if cached.key == key:
                return cached
        except (ValueError, KeyError, OSError):
            pass

    D = model.latent_dim
    n_steps = int(round(span / step))
    steps = np.arange(-n_steps, n_steps + 1) * step
    P = len(steps)
    sigma = np.sqrt(2.0) * np.asarray(model.prior_scale(), dtype=np.float64)
    if latent is not None and len(latent):
        occupied = np.percentile(np.asarray(latent, dtype=np.float64), percentiles, axis=0).T
    else:
        occupied = np.stack([steps[0] * sigma, steps[-1] * sigma], axis=1)
    # one batch: D x P grid points, then D x 2 occupied-range ends
    z = np.zeros((D * P + D * 2, D), dtype=np.float32)
    for d in range(D):
        z[d * P:(d + 1) * P, d] = steps * sigma[d]
        z[D * P + 2 * d:D * P + 2 * d + 2, d] = occupied[d]
    means, rho, pvalue, edges = {}, {}, {}, {}
    for m in model.names:
        decoded = model.decode(z, m, library=libraries[m])
        means[m] = decoded[:D * P].reshape(D, P, -1)
        edges[m] = decoded[D * P:].reshape(D, 2, -1)
        r = np.empty((D, decoded.shape[1]))
        p = np.empty_like(r)
        for d in range(D):
            r[d], p[d] = spearman_rows(steps, means[m][d])
        rho[m], pvalue[m] = r, p
    kinds = {m: model.kinds.get(m, modality_kind(m)) for m in model.names}
    trav = Traversal(steps, sigma, means, rho, pvalue, occupied, edges, model.feature_names, kinds,
                     libraries, key=key)
    if cache is not None:
        trav.save(cache)
    return trav


#: a dimension whose cells spread less than these fractions of the prior s.d. is weak / inactive
WEAK_STRENGTH, INACTIVE_STRENGTH = 0.5, 0.1


def dimension_overview(trav: Traversal, latent, pvalues: dict | None = None) -> pd.DataFrame:
    """One row per latent dimension, strongest first: how much of its prior the cells use.

    ``latent`` (cells x D) is the joint latent the traversal was made for.
    Columns: ``dim`` (0-based), ``prior_sd`` (σ_d), ``cells_sd`` (s.d. of the
    cells on d), ``strength`` (their ratio), ``low`` / ``high`` (1st / 99th
    percentile the cells occupy), ``status`` (``active``; ``weak`` below
    :data:`WEAK_STRENGTH`; ``inactive`` below :data:`INACTIVE_STRENGTH`, the
    "active units" rule of Burda et al. on the s.d.), and per modality ``m``
    the number of associated features (``n_<m>``) and the largest |log2 FC|
    among them over the occupied range (``max_fc_<m>``).
    """
    latent = np.asarray(latent, dtype=np.float64)
    if latent.ndim != 2 or latent.shape[1] != trav.n_dims:
        raise ValueError(f"latent must be cells x {trav.n_dims}, got {latent.shape}")
    cells_sd = latent.std(axis=0)
    strength = np.divide(cells_sd, trav.sigma, out=np.zeros_like(cells_sd), where=trav.sigma > 0)
    table = pd.DataFrame({"dim": np.arange(trav.n_dims), "prior_sd": trav.sigma, "cells_sd": cells_sd,
                          "strength": strength, "low": trav.occupied[:, 0], "high": trav.occupied[:, 1]})
    table["status"] = np.where(strength < INACTIVE_STRENGTH, "inactive",
                               np.where(strength < WEAK_STRENGTH, "weak", "active"))
    for m in trav.modalities:
        threshold = (pvalues or {}).get(m, trav.pvalues[m])
        significant = trav.pvalue[m] < threshold
        table[f"n_{m}"] = significant.sum(axis=1)
        fc = np.where(significant, np.abs(trav.log2_fc[m]), 0.0)
        table[f"max_fc_{m}"] = fc.max(axis=1) if fc.shape[1] else 0.0
    return table.sort_values("strength", ascending=False, kind="stable").reset_index(drop=True)
