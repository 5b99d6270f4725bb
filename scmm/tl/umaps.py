"""UMAP of the joint latent and of each modality's latent, cached in the run folder."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from ..runfolder import LATENT_KEY, replace_atomic, umap_key

CACHE_NAME = "umap.npz"


def latent_keys(mdata) -> list[str]:
    """The scMM latents in ``obsm``: ``X_scmm`` first, then ``X_scmm_<modality>``."""
    keys = [k for k in mdata.obsm if k == LATENT_KEY or k.startswith(LATENT_KEY + "_")]
    return sorted(keys, key=lambda k: (k != LATENT_KEY, k))


def _digest(latent: np.ndarray, params: dict) -> str:
    h = hashlib.sha1(np.ascontiguousarray(latent, dtype=np.float32).tobytes())
    h.update(repr(sorted(params.items())).encode())
    h.update(repr(latent.shape).encode())
    return h.hexdigest()[:20]


def _read_cache(path: Path) -> dict:
    if not path.exists():
        return {}
    try:
        with np.load(path) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError):
        return {}


def _write_cache(path: Path, entries: dict) -> None:
    replace_atomic(lambda tmp: np.savez(tmp, **entries), path)


def run_umap(latent: np.ndarray, seed: int = 0, n_neighbors: int = 15, min_dist: float = 0.3) -> np.ndarray:
    """2-D UMAP (umap-learn, Euclidean) of ``latent``; deterministic for a given ``seed``."""
    import warnings

    import umap as umap_learn
    latent = np.asarray(latent, dtype=np.float32)
    n = latent.shape[0]
    if n < 4:
        raise ValueError(f"UMAP needs at least 4 cells, got {n}")
    reducer = umap_learn.UMAP(n_neighbors=min(n_neighbors, n - 1), min_dist=min_dist,
                              random_state=seed, n_components=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "n_jobs overridden by setting random_state"
        return reducer.fit_transform(latent).astype(np.float32)


def umap(mdata, keys: list[str] | None = None, seed: int = 0, n_neighbors: int = 15,
         min_dist: float = 0.3, run_dir: str | Path | None = None) -> dict[str, np.ndarray]:
    """UMAP of each scMM latent in ``mdata.obsm`` (joint ``X_scmm`` and ``X_scmm_<mod>``).

    Writes ``obsm['X_umap_scmm']``, ``obsm['X_umap_scmm_<mod>']`` and returns
    ``{umap key: coordinates}``.  ``keys`` restricts the latents.  With
    ``run_dir``, results are cached in ``run_dir/umap.npz`` under a hash of the
    latent and the settings, so calling again with the same latent reads them
    back instead of recomputing.
    """
    keys = list(keys) if keys is not None else latent_keys(mdata)
    if not keys:
        raise KeyError("no scMM latent in obsm (expected 'X_scmm'); call model.get_latent() first")
    missing = [k for k in keys if k not in mdata.obsm]
    if missing:
        raise KeyError(f"latents {missing} not in obsm (have {list(mdata.obsm)})")
    params = {"seed": seed, "n_neighbors": n_neighbors, "min_dist": min_dist}
    cache_path = Path(run_dir) / CACHE_NAME if run_dir is not None else None
    cache = _read_cache(cache_path) if cache_path is not None else {}
    out, changed = {}, False
    for key in keys:
        latent = np.asarray(mdata.obsm[key])
        entry = f"{key}__{_digest(latent, params)}"
        if entry in cache:
            coords = cache[entry]
        else:
            coords = run_umap(latent, seed=seed, n_neighbors=n_neighbors, min_dist=min_dist)
            # keep one entry per latent key: drop stale ones
            cache = {k: v for k, v in cache.items() if not k.startswith(f"{key}__")}
            cache[entry] = coords
            changed = True
        mdata.obsm[umap_key(key)] = coords
        out[umap_key(key)] = coords
    if cache_path is not None and changed:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        _write_cache(cache_path, cache)
    return out
