"""Public multimodal datasets, downloaded once into a user cache and checked by SHA-256.

    import scmm
    mdata = scmm.datasets.pbmc10k_cite()        # 6,855 cells, 4,000 genes + 14 proteins
    mdata = scmm.datasets.snare_cortex()        # 10,309 cells, 1,677 genes + 25,734 peaks
    path = scmm.datasets.fetch("pbmc10k_cite")  # just the file

Like ``scanpy.datasets`` and ``scvi.data``: the first call downloads the file
(with a progress bar) to a temporary name beside its destination, checks its
SHA-256 and only then renames it into place, so the cache never holds a partial
or wrong file; later calls reuse the verified file without touching the network.

The cache folder is ``cache_dir`` if given, else ``$SCMM_DATA_DIR``, else
``$XDG_CACHE_HOME/scmm`` (``~/.cache/scmm``).  Files sit under
``<cache>/<dataset>/<file>``, the layout of the team's ``../shared/data``, so
``SCMM_DATA_DIR=../shared/data`` uses those copies as they are.

The files are the converted, QC-filtered versions the test suite and the
benchmarks use (MuData of raw counts), not the raw downloads of the original
publishers. ``DATA_URL`` is where the maintainers publish them (a release of
the project's data repository); a mirror can be given with ``url=``, the
checksum still applies.  Sources (see also tests/fixtures/README.md):

- ``pbmc10k_cite`` / ``pbmc10k_cite_10x``: 10x Genomics "10k PBMCs from a
  Healthy Donor - Gene Expression and Cell Surface Protein" (pbmc_10k_protein_v3,
  Cell Ranger 3.0.0), CC BY 4.0, originally from
  https://cf.10xgenomics.com/samples/cell-exp/3.0.0/pbmc_10k_protein_v3/ ;
  QC-filtered, doublets removed, 4,000 variable genes and 14 proteins.
- ``snare_cortex``: SNARE-seq of adult mouse cortex, Chen, Lake & Zhang, Nat.
  Biotechnol. 2019, GEO GSE126074, with the 23 published cell types.

This module imports neither torch nor anything outside the standard library
at import time; downloads use ``urllib``.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path, PurePosixPath
from typing import NamedTuple

__all__ = ["DATA_URL", "REGISTRY", "DatasetError", "Dataset", "cache_dir", "fetch",
           "pbmc10k_cite", "pbmc10k_cite_10x", "snare_cortex"]

DATA_URL = "https://github.com/scmm-explorer/data/releases/download/v1/"


class Dataset(NamedTuple):
    url: str
    sha256: str
    filename: str      # relative path inside the cache folder


REGISTRY: dict[str, Dataset] = {
    "pbmc10k_cite": Dataset(
        DATA_URL + "pbmc10k_cite.h5mu",
        "4e4336ab456ff08eb218d21fcd7500b2a0a73604f9f9b2b4fe10429c75190542",
        "pbmc10k_cite/pbmc10k_cite.h5mu"),
    "pbmc10k_cite_10x": Dataset(
        DATA_URL + "filtered_feature_bc_matrix.h5",
        "fbe57eb934a7c328616129179813beaa2db4189479edc947b2bd32053c32474d",
        "pbmc10k_cite/filtered_feature_bc_matrix.h5"),
    "snare_cortex": Dataset(
        DATA_URL + "snare_cortex.h5mu",
        "94274295820b0f77319a6c21c928df762ae49a6dda840ea797e7fffb3cc38aac",
        "snare_cortex/snare_cortex.h5mu"),
}

_CHUNK = 1 << 20


class DatasetError(RuntimeError):
    """A dataset could not be downloaded or did not match its checksum."""


def cache_dir(path: str | os.PathLike | None = None) -> Path:
    """The cache folder: ``path``, else ``$SCMM_DATA_DIR``, else ``$XDG_CACHE_HOME/scmm``."""
    if path is not None:
        return Path(path).expanduser()
    if os.environ.get("SCMM_DATA_DIR"):
        return Path(os.environ["SCMM_DATA_DIR"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(xdg).expanduser() / "scmm"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _relative(filename: str) -> Path:
    p = PurePosixPath(filename)
    if p.is_absolute() or not p.parts or ".." in p.parts:
        raise ValueError(f"dataset filename must be a relative path inside the cache, got {filename!r}")
    return Path(*p.parts)


def fetch(name: str, cache_dir: str | os.PathLike | None = None, url: str | None = None,
          sha256: str | None = None, filename: str | None = None, progress: bool = True) -> Path:
    """Path of dataset ``name`` in the cache, downloaded and verified first if needed.

    ``name``: a key of :data:`REGISTRY`; ``url`` replaces its address (a mirror),
    ``sha256`` and ``filename`` its checksum and cache path.  A name outside the
    registry needs ``url`` and ``sha256`` (nothing is kept unverified).
    Raises :class:`DatasetError` when the download fails (HTTP status or network
    reason in the message) or the file's SHA-256 differs; nothing is left behind.
    """
    entry = REGISTRY.get(name)
    if entry is None and (url is None or sha256 is None):
        raise KeyError(f"unknown dataset {name!r}; known: {sorted(REGISTRY)} "
                       "(or pass url= and sha256= for another file)")
    url = url or entry.url
    expected = (sha256 or entry.sha256).lower()
    rel = _relative(filename or (entry.filename if entry else f"{name}/{PurePosixPath(url).name}"))
    dest = _cache_path(cache_dir) / rel

    if dest.is_file():
        if _sha256(dest) == expected:
            return dest
        raise DatasetError(f"{dest} exists but its SHA-256 is not the expected {expected}: "
                           "delete it to download it again")

    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            got = _download(url, out, desc=name, progress=progress)
        if got != expected:
            raise DatasetError(f"{name}: the file downloaded from {url} has SHA-256 {got}, "
                               f"expected {expected}; it was not kept")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


_cache_path = cache_dir     # ``fetch``'s argument shadows the function's name


def _download(url: str, out, desc: str, progress: bool) -> str:
    """Stream ``url`` into the open file ``out``; returns the SHA-256 of what was written."""
    from tqdm.auto import tqdm

    h = hashlib.sha256()
    request = urllib.request.Request(url, headers={"User-Agent": "scmm-explorer"})
    try:
        with urllib.request.urlopen(request, timeout=60) as resp:
            total = resp.headers.get("Content-Length")
            with tqdm(total=int(total) if total else None, unit="B", unit_scale=True,
                      unit_divisor=1024, desc=desc, disable=not progress) as bar:
                for block in iter(lambda: resp.read(_CHUNK), b""):
                    out.write(block)
                    h.update(block)
                    bar.update(len(block))
    except urllib.error.HTTPError as e:
        raise DatasetError(f"{desc}: could not download {url}: HTTP {e.code} {e.reason}") from e
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise DatasetError(f"{desc}: could not download {url}: {reason}") from e
    return h.hexdigest()


def _read(name: str, cache_dir, **kwargs):
    from .io import read
    return read(fetch(name, cache_dir=cache_dir, **kwargs))


def pbmc10k_cite(cache_dir: str | os.PathLike | None = None, **kwargs):
    """CITE-seq, 10x pbmc_10k_protein_v3: 6,855 cells, ``rna`` (4,000 genes) and ``prot`` (14 ADT)."""
    return _read("pbmc10k_cite", cache_dir, **kwargs)


def pbmc10k_cite_10x(cache_dir: str | os.PathLike | None = None, **kwargs):
    """The same counts as :func:`pbmc10k_cite` in the Cell Ranger ``filtered_feature_bc_matrix.h5`` layout."""
    return _read("pbmc10k_cite_10x", cache_dir, **kwargs)


def snare_cortex(cache_dir: str | os.PathLike | None = None, **kwargs):
    """SNARE-seq mouse cortex: 10,309 cells, ``rna`` and ``atac`` (25,734 peaks), ``obs["cell_type"]``."""
    return _read("snare_cortex", cache_dir, **kwargs)
