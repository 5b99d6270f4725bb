"""Server-side data for the pages: datasets, dataset summaries, and runs' results.

Loaded runs sit in an LRU cache keyed by (run folder, mtime of its results),
so a re-analysed run is reloaded and nothing large ever goes into a
``dcc.Store`` (which keeps only run ids and UI state).  Reading uses
mudata/anndata/numpy and the torch-free parts of ``scmm`` (:mod:`scmm.runfolder`,
:mod:`scmm.tl.traversal`, :mod:`scmm.tl.heatmap`); what needs the model runs
in a child process (:mod:`app.worker`).
"""
from __future__ import annotations

import difflib
import functools
import hashlib
import json
import re
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from scmm import runfolder
from scmm.normalise import library_scale
from scmm.runfolder import (CLUSTER_KEY, CLUSTER_PARAMS, DEFAULT_CLUSTER_ON, LATENT_KEY, LIBRARY_KEY, SPLIT_KEY,
                            UMAP_KEY, latent_key, umap_key)
from scmm.tl.traversal import CACHE_NAME as TRAVERSAL_CACHE
from scmm.tl.traversal import Traversal

from app import processes, raster

DATA_SUFFIXES = (".h5mu", ".h5ad", ".h5")
#: obs columns written by the library for its own bookkeeping (not offered as colours)
HIDDEN_OBS = {SPLIT_KEY}


# ------------------------------------------------------------------ datasets
UPLOADS = "uploads"


def upload_label(path: Path) -> str | None:
    """The original file name an upload was stored under (its metadata file), if any."""
    try:
        meta = runfolder.read_json(path.with_suffix(".json"), max_bytes=64 * 1024)
    except runfolder.RunFileError:
        return None
    name = meta.get("original_name") if isinstance(meta, dict) else None
    return str(name)[:200] if isinstance(name, str) else None


def list_datasets(data_dir: str | Path) -> list[dict]:
    """Datasets in ``data_dir``: ``.h5mu`` / ``.h5ad`` / 10x ``.h5`` files and 10x mtx folders.

    Returns ``[{"label", "value"}]``, demo first; ``value`` is the dataset id (its
    path relative to ``data_dir``), the only name a client ever sends back.
    Links that lead outside ``data_dir`` are not listed.
    """
    data_dir = Path(data_dir).resolve()
    if not data_dir.is_dir():
        return []
    found = []
    folders = [data_dir] + ([data_dir / UPLOADS] if (data_dir / UPLOADS).is_dir() else [])
    for folder in folders:
        try:
            entries = sorted(folder.iterdir())
        except OSError:
            continue
        for p in entries:
            if p.name.startswith(".") or not _inside(p, data_dir):
                continue
            try:
                if p.is_file() and p.suffix in DATA_SUFFIXES:
                    found.append(p)
                elif p.is_dir() and any((p / f).exists() for f in ("matrix.mtx", "matrix.mtx.gz")):
                    found.append(p)
            except OSError:
                continue
    found.sort(key=lambda p: (p.stem != "demo", p.parent.name == UPLOADS, p.name))
    out = []
    for p in found:
        label = str(p.relative_to(data_dir))
        original = upload_label(p) if p.parent.name == UPLOADS else None
        if original:
            label = f"{original} (uploaded)"
        elif p.stem == "demo" and p.parent == data_dir:
            label += " (built-in demo)"
        out.append({"label": label, "value": str(p.relative_to(data_dir))})
    return out


def _inside(path: Path, root: Path) -> bool:
    try:
        return path.resolve().is_relative_to(root)
    except (OSError, RuntimeError):
        return False


def resolve_dataset(data_dir: str | Path, dataset_id) -> Path | None:
    """The path of dataset ``dataset_id`` when it is one of :func:`list_datasets`'s ids, else None."""
    if not isinstance(dataset_id, str) or "\x00" in dataset_id or len(dataset_id) > 300:
        return None
    if dataset_id not in {d["value"] for d in list_datasets(data_dir)}:
        return None
    return (Path(data_dir).resolve() / dataset_id).resolve()


def dataset_label(data_dir: str | Path, dataset_id: str) -> str:
    """The label of a dataset id (the id itself when unknown)."""
    return next((d["label"] for d in list_datasets(data_dir) if d["value"] == dataset_id), str(dataset_id))


def _file_key(path: Path) -> str:
    try:
        st = path.stat()
        stamp = f"{st.st_mtime_ns}:{st.st_size}"
    except OSError:
        stamp = "missing"
    return hashlib.sha1(f"{path.resolve()}|{stamp}".encode()).hexdigest()[:16]


def summarize(path: str | Path, cache_dir: str | Path, timeout: float = 300, slots: int = 1,
              wait: float = 60, naming: dict | None = None) -> dict:
    """The reader's summary of ``path`` (or its error), computed in a child process and cached.

    Returns ``{"ok": True, "summary": {...}, "likelihoods": {...}, "kinds": {...},
    "obs_columns": [...]}`` or ``{"ok": False, "error": message}``.  Failures are
    cached too (keyed by the file's size and mtime, so a replaced file is read
    again).  The child runs in one of the server's ``slots`` work slots; when
    none frees up within ``wait`` seconds the result says the server is busy.
    """
    path = Path(path)
    naming = naming or {}
    key = _file_key(path) + (hashlib.sha1(json.dumps(naming, sort_keys=True).encode()).hexdigest()[:8]
                             if naming else "")
    cache = Path(cache_dir) / "summaries" / f"{key}.json"
    try:
        cached = runfolder.read_json(cache)
    except runfolder.RunFileError:
        cached = None
    if isinstance(cached, dict) and "ok" in cached:
        return cached
    try:
        with processes.work_slot(Path(cache_dir) / "slots", slots, wait=wait):
            args = ["--naming", json.dumps(naming)] if naming else []
            proc = processes.run_child(processes.python_command("app.worker", "summarize", path, *args), timeout)
    except processes.Busy as err:
        return {"ok": False, "error": str(err), "busy": True}
    except subprocess.TimeoutExpired:
        out = {"ok": False, "error": f"reading the file took longer than {timeout:.0f} s"}
    else:
        try:
            out = json.loads(proc.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            lines = proc.stderr.strip().splitlines()
            out = {"ok": False, "error": (lines or [f"the reader crashed (exit code {proc.returncode})"])[-1]}
    cache.parent.mkdir(parents=True, exist_ok=True)
    runfolder.write_json_atomic(cache, out)
    return out


NAMING_DIR = ".scmm-datasets"


def _naming_file(runs_dir, dataset_id: str) -> Path:
    return Path(runs_dir) / NAMING_DIR / (hashlib.sha1(dataset_id.encode()).hexdigest()[:16] + ".json")


def dataset_naming(runs_dir, dataset_id) -> dict:
    """The modality names and kinds a user chose for dataset ``dataset_id``: ``{"names", "kinds"}``
    (empty when none, or when the saved file is unreadable)."""
    if not isinstance(dataset_id, str):
        return {}
    try:
        saved = runfolder.read_json(_naming_file(runs_dir, dataset_id), max_bytes=64 * 1024)
    except runfolder.RunFileError:
        return {}
    if not isinstance(saved, dict) or saved.get("dataset") != dataset_id:
        return {}
    names, kinds = saved.get("names"), saved.get("kinds")
    return {"names": names, "kinds": kinds} if isinstance(names, dict) and isinstance(kinds, dict) else {}


def save_dataset_naming(runs_dir, dataset_id: str, names: dict, kinds: dict) -> None:
    """Keep the user's modality names and kinds for ``dataset_id`` (validated first: ValueError)."""
    from scmm.settings import Settings
    Settings.build(modality_names=names, kinds=kinds)  # the one validation of names and kinds
    path = _naming_file(runs_dir, dataset_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    runfolder.write_json_atomic(path, {"dataset": dataset_id, "names": names, "kinds": kinds})


# ---------------------------------------------------------------------- runs
def resolve_run(runs_dir: str | Path, run_id) -> Path | None:
    """The folder of run ``run_id`` under ``runs_dir`` (None when absent, outside it or not a run)."""
    path = runfolder.resolve_inside(runs_dir, run_id)
    if path is None or not runfolder.is_run_dir(path):
        return None
    return path


def results_mtime(run_dir: Path) -> float:
    """mtime of the run's results file (0 when it has none)."""
    try:
        return (Path(run_dir) / runfolder.RESULTS_FILE).stat().st_mtime
    except OSError:
        return 0.0


def _uns_value(mapping, key):
    """``mapping[key]`` unwrapped from a one-element array (h5 round trips); None when ``mapping``
    is not a mapping or lacks ``key``."""
    value = mapping.get(key) if hasattr(mapping, "get") else None
    return value.item() if isinstance(value, np.ndarray) and value.size == 1 else value


def _uns_int(mapping, key) -> int | None:
    value = _uns_value(mapping, key)
    return int(value) if isinstance(value, (int, np.integer)) and not isinstance(value, bool) else None


def _uns_str(mapping, key) -> str | None:
    value = _uns_value(mapping, key)
    return value if isinstance(value, str) else None


class RunView:
    """A trained run's results held in memory for the pages (read-only).

    ``mdata`` is ``results.h5mu``; feature matrices are kept as CSC so that a
    colour-by-feature is one column slice.
    """

    def __init__(self, run_dir: Path):
        import mudata as md
        md.set_options(pull_on_update=False)
        self.path = Path(run_dir)
        self.id = self.path.name
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.mdata = md.read_h5mu(self.path / runfolder.RESULTS_FILE)
        self.config = runfolder.read_config(self.path)
        self.annotation = runfolder.read_annotation(self.path)
        if self.annotation and CLUSTER_KEY in self.mdata.obs:
            clusters = self.mdata.obs[CLUSTER_KEY].astype(str)
            self.mdata.obs[runfolder.ANNOTATION_COLUMN] = pd.Categorical(
                [self.annotation.get(c, f"cluster {c}") for c in clusters])
        self.modalities = list(self.config.get("modalities") or self.mdata.mod)
        missing = [m for m in self.modalities if m not in self.mdata.mod]
        if missing:
            raise ValueError(f"{runfolder.RESULTS_FILE} lacks the modalities {missing} of the model")
        self.cell_ids = np.asarray(self.mdata.obs_names.astype(str))
        self.n_cells = len(self.cell_ids)
        self._csc: dict[str, tuple] = {}
        self._feature_index = {m: {str(v): i for i, v in enumerate(self.mdata.mod[m].var_names)}
                               for m in self.modalities}
        self._traversal = None
        self._chromatin = (None, None)
        self._points: dict[str, raster.Points] = {}
        self._group_labels: dict[tuple[str, str], list[dict]] = {}

    # ----------------------------------------------------------- layout
    def embeddings(self) -> dict[str, tuple[str, tuple[str, str]]]:
        """``{label: (obsm key, axis names)}``: the joint and per-modality UMAPs.

        When the run is not analysed yet, the first two latent dimensions stand in.
        """
        obsm = self.mdata.obsm
        out = {}
        for mod in [None] + self.modalities:
            label = "joint" if mod is None else mod
            latent = latent_key(mod)
            umap = umap_key(latent)
            if umap in obsm:
                out[label] = (umap, ("UMAP1", "UMAP2"))
            elif latent in obsm:
                out[label] = (latent, ("z1", "z2"))
        return out

    def coords(self, key: str) -> np.ndarray:
        """The first two columns of ``obsm[key]`` as float32."""
        return np.asarray(self.mdata.obsm[key], dtype=np.float32)[:, :2]

    @property
    def latent_dim(self) -> int:
        return int(np.asarray(self.mdata.obsm[LATENT_KEY]).shape[1]) if LATENT_KEY in self.mdata.obsm else 0

    @property
    def analysed(self) -> bool:
        return any(k.startswith(UMAP_KEY) for k in self.mdata.obsm)

    def cluster_label(self, cluster: str) -> str:
        """``name (cluster)`` when the user named the cluster, else ``cluster <id>``."""
        name = self.annotation.get(str(cluster))
        return f"{name} ({cluster})" if name else f"cluster {cluster}"

    def held_out(self) -> tuple[np.ndarray, str]:
        """(indices, words) of the cells quality is measured on: the test split when the run has one."""
        if SPLIT_KEY in self.mdata.obs:
            test = np.flatnonzero(self.mdata.obs[SPLIT_KEY].astype(str).to_numpy() == "test")
            if test.size >= 2:
                return test, f"{test.size:,} held-out test cells"
        return np.arange(self.n_cells), f"all {self.n_cells:,} cells (the run has no test split)"

    # ----------------------------------------------------------- colours
    @functools.cached_property
    def cluster_column_label(self) -> str:
        """"cluster", or "cluster (<rep> latent)" when ``scmm analyze --cluster-on`` chose another
        representation than the default (read from ``uns``, validated)."""
        on = _uns_str(self.mdata.uns.get(CLUSTER_PARAMS), "cluster_on")
        if on and on != DEFAULT_CLUSTER_ON and re.fullmatch(r"[A-Za-z0-9_.-]{1,40}", on):
            return f"cluster ({on} latent)"
        return "cluster"

    def approximation_notes(self) -> list[str]:
        """Sentences naming the atlas-scale approximations ``scmm analyze`` used (read from ``uns``,
        validated; nothing when the UMAPs were fitted on all cells and the neighbours were exact)."""
        notes = []
        umap = self.mdata.uns.get("scmm_umap_params")
        fit, n = _uns_int(umap, "fit_cells"), _uns_int(umap, "n_cells")
        if fit is not None and n == self.n_cells and 0 < fit < n:
            notes.append(f"The UMAPs were fitted on a random {fit:,} of the {n:,} cells; the other cells are "
                         "placed at the weighted mean of their nearest fitted cells (not optimised among "
                         "themselves).")
        if _uns_str(self.mdata.uns.get(CLUSTER_PARAMS), "neighbors") == "approximate":
            notes.append("The clusters were computed on approximate nearest neighbours (pynndescent).")
        return notes

    def obs_columns(self) -> list[str]:
        """obs columns offered as colours (cluster first)."""
        cols = [str(c) for c in self.mdata.obs.columns if c not in HIDDEN_OBS]
        return sorted(cols, key=lambda c: (c != runfolder.ANNOTATION_COLUMN, c != CLUSTER_KEY, c))

    def colour_options(self, search: str | None = None, limit: int = 60) -> list[dict]:
        """Dropdown options for colour-by: obs columns, latent dims, then features matching ``search``.

        Values: ``obs:<col>``, ``z:<dim>`` (0-based joint latent dim) and
        ``feat:<modality>:<feature>``.  Without a search, the first features of
        each modality are offered; with one, features containing it.
        """
        opts = [{"label": (self.cluster_column_label if c == CLUSTER_KEY else c), "value": f"obs:{c}"}
                for c in self.obs_columns()]
        opts += [{"label": f"latent z{d + 1}", "value": f"z:{d}"} for d in range(self.latent_dim)]
        needle = (search or "").strip().lower()
        genes = self.peak_genes()
        label = lambda m, n: f"{m}: {n}" + (f" · {genes[n]}" if n in genes else "")
        if not needle:
            for m in self.modalities:
                opts += [{"label": label(m, n), "value": f"feat:{m}:{n}"} for n in list(self._feature_index[m])[:limit]]
            return opts
        opts = [o for o in opts if needle in o["label"].lower()]
        n_hits = 0
        for m in self.modalities:
            # a peak is found by its own name or by its nearest gene's
            hits = [n for n in self._feature_index[m] if needle in n.lower() or needle in genes.get(n, "").lower()]
            # exact (any case) first, then prefixes, then the rest, shortest first
            hits.sort(key=lambda n: (n.lower() != needle, not n.lower().startswith(needle), len(n), n))
            n_hits += len(hits)
            opts += [{"label": label(m, n), "value": f"feat:{m}:{n}"} for n in hits[:limit]]
        shown = {o["value"] for o in opts}
        opts += [{"label": f"{m}: {n} (close match)", "value": f"feat:{m}:{n}"}
                 for m, n in self.close_features(search) if f"feat:{m}:{n}" not in shown]
        if not n_hits:
            opts.insert(0, {"label": f"{search.strip()[:60]}: not a feature of this run", "disabled": True,
                            "value": f"missing:{search.strip()[:60]}"})
        return opts

    def close_features(self, name: str, n: int = 8) -> list[tuple[str, str]]:
        """(modality, feature) pairs close to ``name``: same name in another case, then fuzzy matches."""
        wanted = str(name).strip().lower()
        found = [(m, f) for m in self.modalities for f in self._feature_index[m] if f.lower() == wanted]
        for m in self.modalities:
            lower = {f.lower(): f for f in self._feature_index[m]}
            found += [(m, lower[c]) for c in difflib.get_close_matches(wanted, list(lower), n=n, cutoff=0.7)
                      if (m, lower[c]) not in found]
        return found[:n]

    def colour_problem(self, spec: str) -> str | None:
        """Why colour ``spec`` cannot be shown (None when it can), naming close matches for features."""
        kind, _, rest = str(spec or "").partition(":")
        if kind == "feat":
            mod, _, feat = rest.partition(":")
            if mod not in self._feature_index:
                return f"{mod!r} is not a modality of this run (it has {', '.join(self.modalities)})"
            if feat in self._feature_index[mod]:
                return None
            close = self.close_features(feat)
            hint = f"; close matches: {', '.join(f'{m}:{f}' for m, f in close)}" if close else ""
            return (f"{feat!r} is not among the {len(self._feature_index[mod]):,} {mod} features of this "
                    f"run{hint}")
        if kind == "z":
            if rest.isdigit() and int(rest) < self.latent_dim:
                return None
            return f"latent dimension {rest!r} does not exist (this run has z1 to z{self.latent_dim})"
        if kind == "obs":
            return None if rest in self.obs_columns() else \
                f"{rest!r} is not a cell annotation of this run (it has {', '.join(self.obs_columns())})"
        return f"{str(spec)[:80]!r} is not a colour (use obs:<column>, z:<dim> or feat:<modality>:<feature>)"

    def _matrix(self, modality: str):
        if modality not in self._csc:
            adata = self.mdata.mod[modality]
            X = sp.csc_matrix(adata.X, dtype=np.float32)
            if LIBRARY_KEY in adata.obs:
                lib = adata.obs[LIBRARY_KEY].to_numpy(dtype=np.float32)
            else:
                lib = np.asarray(X.sum(axis=1), dtype=np.float32).ravel()
            self._csc[modality] = (X, library_scale(lib))
        return self._csc[modality]

    def feature_values(self, modality: str, feature: str) -> np.ndarray:
        """log1p(counts / library x 1e4) of one feature for every cell (float32)."""
        X, scale = self._matrix(modality)
        j = self._feature_index[modality][feature]
        col = X[:, j]
        out = np.zeros(self.n_cells, dtype=np.float32)
        out[col.indices] = col.data
        return np.log1p(out * scale)

    def colour(self, spec: str) -> dict:
        """Values to colour cells by: ``{"values", "kind", "label", "categories"}``.

        ``spec`` as in :meth:`colour_options`; unknown specs fall back to the cluster
        (or the first obs column).
        """
        kind, _, rest = (spec or "").partition(":")
        if kind == "feat":
            mod, _, feat = rest.partition(":")
            if mod in self._feature_index and feat in self._feature_index[mod]:
                return {"values": self.feature_values(mod, feat), "kind": "continuous",
                        "label": f"{mod}:{feat}", "categories": None}
        if kind == "z" and rest.isdigit() and int(rest) < self.latent_dim:
            d = int(rest)
            return {"values": np.asarray(self.mdata.obsm[LATENT_KEY][:, d], dtype=np.float32),
                    "kind": "continuous", "label": f"z{d + 1}", "categories": None}
        cols = self.obs_columns()
        col = rest if kind == "obs" and rest in cols else (cols[0] if cols else None)
        if col is None:
            return {"values": np.zeros(self.n_cells, np.float32), "kind": "continuous",
                    "label": "none", "categories": None}
        series = self.mdata.obs[col]
        label = self.cluster_column_label if col == CLUSTER_KEY else col
        if pd.api.types.is_numeric_dtype(series) and not isinstance(series.dtype, pd.CategoricalDtype) \
                and series.nunique() > 30:
            return {"values": series.to_numpy(dtype=np.float32), "kind": "continuous",
                    "label": label, "categories": None}
        cat = series.astype("category")
        cats = [str(c) for c in cat.cat.categories]
        if all(c.isdigit() for c in cats):
            order = sorted(range(len(cats)), key=lambda i: int(cats[i]))
            cat = cat.cat.reorder_categories([cat.cat.categories[i] for i in order])
            cats = [cats[i] for i in order]
        return {"values": cat.cat.codes.to_numpy(dtype=np.int32), "kind": "categorical",
                "label": label, "categories": cats}

    def points(self, key: str) -> raster.Points:
        """Embedding ``key``'s cells for rasterising and hit-testing (:class:`app.raster.Points`, kept)."""
        if key not in self._points:
            self._points[key] = raster.Points(self.coords(key))
        return self._points[key]

    def group_labels(self, key: str, c: dict) -> list[dict]:
        """:func:`app.figures.group_labels` of the categorical colouring ``c`` on embedding ``key``,
        kept (a median per group costs ~0.1 s at 1,000,000 cells)."""
        from app.figures import group_labels
        if (key, c["label"]) not in self._group_labels:
            self._group_labels[key, c["label"]] = group_labels(self.coords(key), c["values"], c["categories"])
        return self._group_labels[key, c["label"]]

    # --------------------------------------------------------- selections
    def cells_in_polygon(self, key: str, xs, ys) -> np.ndarray:
        """Indices of cells of embedding ``key`` inside the lasso polygon (xs, ys): at most
        :data:`MAX_VERTICES` finite vertices (ValueError otherwise); the polygon's bounding box first."""
        from matplotlib.path import Path as MplPath
        poly = _vertices(xs, ys)
        xy = self.points(key).xy
        (x0, y0), (x1, y1) = poly.min(axis=0), poly.max(axis=0)
        near = np.flatnonzero((xy[:, 0] >= x0) & (xy[:, 0] <= x1) & (xy[:, 1] >= y0) & (xy[:, 1] <= y1))
        return near[MplPath(poly).contains_points(xy[near])]

    def cells_in_box(self, key: str, xrange, yrange) -> np.ndarray:
        """Indices of cells of embedding ``key`` inside a box selection (two finite numbers a side)."""
        xy = self.points(key).xy
        (x0, x1), (y0, y1) = np.sort(_vertices(xrange, yrange, least=2, most=2), axis=0).T
        return np.flatnonzero((xy[:, 0] >= x0) & (xy[:, 0] <= x1) & (xy[:, 1] >= y0) & (xy[:, 1] <= y1))

    # ---------------------------------------------------------- analyses
    def traversal(self):
        """The run's cached ``scmm.tl`` traversal (None when not computed or unreadable)."""
        if self._traversal is None:
            cache = self.path / TRAVERSAL_CACHE
            try:
                self._traversal = Traversal.load(cache) if cache.exists() else None
            except (OSError, ValueError, KeyError, TypeError):
                self._traversal = None
        return self._traversal

    def peak_genes(self) -> dict[str, str]:
        """``{peak: "Gene (+1.2 kb)"}`` from the chromatin analyses (empty without them)."""
        try:
            res = self.chromatin()
        except runfolder.RunFileError:
            return {}
        return {} if res is None else res.gene_labels()

    def chromatin(self):
        """The run's chromatin analyses (:func:`scmm.tl.chromatin_io.read_chromatin`; None when not
        computed), re-read when ``scmm chromatin`` rewrote them; RunFileError when malformed."""
        from scmm.tl.chromatin_io import SUMMARY, chromatin_folder, read_chromatin
        try:
            stamp = (chromatin_folder(self.path) / SUMMARY).stat().st_mtime_ns
        except OSError:
            return None
        if self._chromatin[0] != stamp:
            labels = self.mdata.obs[CLUSTER_KEY].astype(str) if CLUSTER_KEY in self.mdata.obs else None
            self._chromatin = (stamp, read_chromatin(self.path, labels=labels))
        return self._chromatin[1]

    def group_columns(self) -> list[str]:
        """obs columns the heatmaps can be grouped by instead of the clusters (2 to 60 groups)."""
        out = []
        for col in self.obs_columns():
            if col != CLUSTER_KEY and 2 <= self.mdata.obs[col].astype(str).nunique() <= 60:
                out.append(col)
        return out

    def grouped_tables(self, column: str) -> dict[str, pd.DataFrame] | None:
        """Tables grouped by ``column`` computed for the current groups (None until computed)."""
        if column not in self.group_columns():
            return None
        return runfolder.read_heatmap_tables(self.path, labels=self.mdata.obs[column].astype(str),
                                             folder=runfolder.grouped_folder(self.path, column))

    def heatmap_tables(self) -> dict[str, pd.DataFrame]:
        """Cluster x feature tables written by the analysis (``{name: DataFrame}``; empty when absent)."""
        return runfolder.read_heatmap_tables(self.path) or {}


#: the most vertices a lasso may have (a browser's lasso has a few hundred)
MAX_VERTICES = 5000


def _vertices(xs, ys, least: int = 3, most: int = MAX_VERTICES) -> np.ndarray:
    """(n, 2) float array of a selection's outline from the browser: ``least`` to ``most`` finite
    numbers a side (ValueError otherwise)."""
    ok = isinstance(xs, list) and isinstance(ys, list) and len(xs) == len(ys) and least <= len(xs) <= most
    if ok and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in xs + ys):
        out = np.column_stack([np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)])
        if np.isfinite(out).all():
            return out
    raise ValueError(f"a selection outline must be {least} to {most} finite points")


@functools.lru_cache(maxsize=4)
def _load(run_dir: str, mtime: float, annotation_stamp: int) -> RunView:
    return RunView(Path(run_dir))


#: why a run could not be opened, by (folder, results mtime, annotation mtime)
_PROBLEMS: dict[tuple[str, float, int], str] = {}


def _annotation_stamp(run_dir: Path) -> int:
    try:
        return (run_dir / runfolder.ANNOTATION_FILE).stat().st_mtime_ns
    except OSError:
        return 0


def get_run(run_dir: str | Path | None) -> RunView | None:
    """The cached :class:`RunView` of ``run_dir`` (None when it has no results or cannot be read).

    A run whose files are malformed gives None; :func:`run_problem` says why.
    """
    if run_dir is None:
        return None
    mtime = results_mtime(Path(run_dir))
    if not mtime:
        return None
    key = (str(Path(run_dir).resolve()), mtime, _annotation_stamp(Path(run_dir)))
    if key in _PROBLEMS:
        return None
    try:
        return _load(*key)
    except Exception as err:  # any malformed file: the run is listed as unreadable, the page says why
        _PROBLEMS[key] = f"{type(err).__name__}: {err}"[:500]
        return None


def run_problem(run_dir: str | Path | None) -> str | None:
    """Why :func:`get_run` could not open ``run_dir`` (None when it could, or never tried)."""
    if run_dir is None:
        return None
    return _PROBLEMS.get((str(Path(run_dir).resolve()), results_mtime(Path(run_dir)),
                          _annotation_stamp(Path(run_dir))))
