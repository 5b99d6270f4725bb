"""The run folder's contract: every file name and status word, its atomic writers, its validated readers.

A run folder is shared by the CLI (``scmm train`` writes it), the library
(``SCMM.load`` reads it) and the app (jobs, pages).  Everything that reads
one goes through the readers here, which treat each file as untrusted: a
missing file reads as absent, a malformed or hostile one raises
:class:`RunFileError` naming the file and the problem (never an internal
exception), and values are checked for type and range before use.  This
module never imports torch.

Files of a run folder::

    config.json     model architecture, feature names, history (SCMM.save)
    model.pt        weights only (loaded with weights_only=True)
    results.h5mu    the data with latents, clusters and UMAPs
    checkpoint.pt   tensors of a resumable run (weights_only=True); its
                    non-tensor state is JSON inside it
    settings.json   the settings an app job trains with (scmm.settings.Settings)
    annotation.json names the user gave the clusters (several clusters, one name: merged)
    job.json        an app job: what was asked and its stage (the worker writes it)
    progress.json   written every epoch by ``scmm train --progress-file``
    CANCEL          asks a running training to stop
    job.log         the job's output
    analysis/       cached tables of ``scmm analyze`` (summary.json last)
    predictions/    cached predictions of the app
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import tempfile
from pathlib import Path

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.pt"
RESULTS_FILE = "results.h5mu"
CHECKPOINT_FILE = "checkpoint.pt"
SETTINGS_FILE = "settings.json"
ANNOTATION_FILE = "annotation.json"
JOB_FILE = "job.json"
PROGRESS_FILE = "progress.json"
CANCEL_FILE = "CANCEL"
LOG_FILE = "job.log"
ANALYSIS_DIR = "analysis"
SUMMARY_FILE = "summary.json"
PREDICTIONS_DIR = "predictions"

# keys the library writes into the data of a run (results.h5mu)
LATENT_KEY = "X_scmm"            # obsm: joint latent; per modality f"{LATENT_KEY}_{m}"
UMAP_KEY = "X_umap_scmm"         # obsm: UMAP of the joint latent; per modality f"{UMAP_KEY}_{m}"
CLUSTER_KEY = "scmm_cluster"     # obs: the clusters
CLUSTER_PARAMS = "scmm_cluster_params"  # uns: how the clusters were made (the explorer names the latent)
#: what ``scmm analyze`` clusters by default: the joint latent, as the paper (docs/bench/small-data.md compares)
DEFAULT_CLUSTER_ON = "joint"
SPLIT_KEY = "scmm_split"         # obs: "train" / "test"
LIBRARY_KEY = "scmm_library"     # mod[m].obs: counts per cell


def latent_key(modality: str | None = None) -> str:
    """``X_scmm`` (joint) or ``X_scmm_<modality>``."""
    return LATENT_KEY if modality is None else f"{LATENT_KEY}_{modality}"


def umap_key(latent: str) -> str:
    """Name of a latent's UMAP: ``X_scmm`` -> ``X_umap_scmm``, ``X_scmm_rna`` -> ``X_umap_scmm_rna``."""
    if not latent.startswith(LATENT_KEY):
        raise ValueError(f"latent keys start with {LATENT_KEY!r}, got {latent!r}")
    return UMAP_KEY + latent[len(LATENT_KEY):]


#: stages of an app job, in order; the last three are terminal
JOB_STAGES = ("queued", "training", "saving", "analysing", "done", "failed", "cancelled")
TERMINAL = ("done", "failed", "cancelled")
#: statuses written by ``scmm train --progress-file``
PROGRESS_STATUSES = ("running", "saving", "done", "failed", "cancelled")

#: a JSON file of a run larger than this is refused before it is parsed
MAX_JSON_BYTES = 64 * 2 ** 20
#: run names: what the app and the CLI create, and what a client may name
RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")

# bounds of a model config, checked before anything is allocated
MAX_LATENT_DIM = 256
MAX_HIDDEN = 4096
MAX_LAYERS = 8
MAX_FEATURES = 2_000_000
MAX_MODALITIES = 8
MAX_PARAMETERS = 500_000_000
LIKELIHOODS = ("nb", "zinb")
POSTERIOR_SCALES = ("softplus", "softmax")
MODALITY_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


class RunFileError(ValueError):
    """A file of a run folder is malformed, hostile or out of bounds (the message names it)."""

    def __init__(self, path, problem: str):
        self.path, self.problem = Path(path), problem
        super().__init__(f"{self.path.name}: {problem}")


# ------------------------------------------------------------------ writing
def write_json_atomic(path: str | Path, payload) -> None:
    """Write ``payload`` as JSON to ``path`` through a temporary file in its folder and a rename.

    A failure (full or read-only disk) leaves the previous file untouched and no
    temporary file behind; the ``OSError`` is raised.
    """
    text = json.dumps(payload, allow_nan=False)

    def write(tmp: Path) -> None:
        with open(tmp, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())

    replace_atomic(write, path)


def replace_atomic(write, path: str | Path) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it over ``path``.

    For files other libraries write (h5mu, npz, torch): a failure removes the
    temporary file and leaves ``path`` as it was.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def check_writable(folder: str | Path, need_bytes: int = 0) -> None:
    """Raise ``OSError`` with a clear message when ``folder`` cannot take ``need_bytes`` more.

    Creates ``folder`` if needed, then writes and removes a probe file, so a
    read-only folder is found before hours of training rather than at the save.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-probe-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise OSError(f"cannot write to {folder}: {err.strerror or err}") from None
    free = free_bytes(folder)
    if need_bytes and free < need_bytes:
        raise OSError(f"not enough free disk space in {folder}: {free / 2 ** 20:,.0f} MB free, "
                      f"about {need_bytes / 2 ** 20:,.0f} MB needed")


def free_bytes(folder: str | Path) -> int:
    """Bytes free to this user on the file system of ``folder``."""
    st = os.statvfs(folder)
    return st.f_bavail * st.f_frsize


# ------------------------------------------------------------------ reading
def read_json(path: str | Path, max_bytes: int = MAX_JSON_BYTES):
    """The parsed JSON of ``path``; None when it does not exist.

    Raises :class:`RunFileError` for a file that is too large, not UTF-8, not
    JSON, nested beyond the parser's depth, or holding NaN/Infinity.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise RunFileError(path, f"{size:,} bytes, more than the {max_bytes:,} allowed")
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        return None
    except UnicodeDecodeError:
        raise RunFileError(path, "not UTF-8 text") from None
    except IsADirectoryError:
        raise RunFileError(path, "is a folder, not a file") from None
    except OSError as err:
        raise RunFileError(path, f"unreadable ({err.strerror or err})") from None

    def no_constants(name):
        raise ValueError(f"{name} is not allowed")

    try:
        return json.loads(text, parse_constant=no_constants)
    except RecursionError:
        raise RunFileError(path, "nested too deeply") from None
    except ValueError as err:
        raise RunFileError(path, f"not valid JSON ({err})") from None


def _fail(path, problem):
    raise RunFileError(path, problem)


def _mapping(value, path, what="the file") -> dict:
    if not isinstance(value, dict):
        _fail(path, f"{what} must be a JSON object, not {type(value).__name__}")
    return value


def _number(value, path, key, lo=-math.inf, hi=math.inf, integer=False, optional=True):
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            (integer and not (isinstance(value, int) or float(value).is_integer())):
        _fail(path, f"{key!r} must be {'an integer' if integer else 'a number'}, not {value!r:.60}")
    if not math.isfinite(value) or not lo <= value <= hi:
        _fail(path, f"{key!r} = {value!r} is outside [{lo}, {hi}]")
    return int(value) if integer else float(value)


def _text(value, path, key, max_len=10_000, optional=True):
    if value is None and optional:
        return None
    if not isinstance(value, str):
        _fail(path, f"{key!r} must be text, not {type(value).__name__}")
    if "\x00" in value:
        _fail(path, f"{key!r} contains a NUL byte")
    return value[:max_len]


def _choice(value, path, key, allowed):
    if value not in allowed:
        _fail(path, f"{key!r} = {value!r:.60} is not one of {list(allowed)}")
    return value


def _history(value, path) -> list[dict]:
    if value is None:
        return []
    if not isinstance(value, list):
        _fail(path, "'history' must be a list")
    out = []
    for i, rec in enumerate(value):
        rec = _mapping(rec, path, f"history[{i}]")
        out.append({"epoch": _number(rec.get("epoch"), path, f"history[{i}].epoch", 0, 10 ** 9,
                                     integer=True, optional=False),
                    **{k: _number(rec.get(k), path, f"history[{i}].{k}")
                       for k in ("epochs", "step", "beta", "train_loss", "test_loss", "test_loss_smoothed",
                                 "seconds")
                       if k in rec}})
    return out


def read_job(run_dir: str | Path) -> dict | None:
    """The validated ``job.json`` of ``run_dir`` (None when absent).

    Keys: job_id, run, dataset, options, analyze, stage, created, message,
    finished, analysis_error.  Unknown keys are dropped; a pid is never read
    from a run folder.
    """
    path = Path(run_dir) / JOB_FILE
    raw = read_json(path)
    if raw is None:
        return None
    raw = _mapping(raw, path)
    options = raw.get("options") or {}
    if not isinstance(options, dict):
        _fail(path, "'options' must be a JSON object")
    return {"job_id": _text(raw.get("job_id"), path, "job_id", 64) or "",
            "run": _text(raw.get("run"), path, "run", 200) or Path(run_dir).name,
            "dataset": _text(raw.get("dataset"), path, "dataset", 4096) or "",
            "options": options,
            "analyze": bool(raw.get("analyze", True)),
            "stage": _choice(raw.get("stage", "queued"), path, "stage", JOB_STAGES),
            "created": _number(raw.get("created"), path, "created", 0, 1e11) or 0.0,
            "finished": _number(raw.get("finished"), path, "finished", 0, 1e11),
            "message": _text(raw.get("message"), path, "message", 2000) or "",
            "analysis_error": _text(raw.get("analysis_error"), path, "analysis_error", 2000)}


def read_progress(run_dir: str | Path) -> dict | None:
    """The validated ``progress.json`` of ``run_dir`` (None when absent).

    Keys: status, epoch, epochs, history, started, finished, message.
    """
    path = Path(run_dir) / PROGRESS_FILE
    raw = read_json(path)
    if raw is None:
        return None
    raw = _mapping(raw, path)
    return {"status": _choice(raw.get("status", "running"), path, "status", PROGRESS_STATUSES),
            "epoch": _number(raw.get("epoch", 0), path, "epoch", 0, 10 ** 9, integer=True) or 0,
            "epochs": _number(raw.get("epochs", 0), path, "epochs", 0, 10 ** 9, integer=True) or 0,
            "history": _history(raw.get("history"), path),
            "started": _number(raw.get("started"), path, "started", 0, 1e11),
            "finished": _number(raw.get("finished"), path, "finished", 0, 1e11),
            "message": _text(raw.get("message"), path, "message", 2000) or ""}


def validate_model_config(config, path: str | Path = CONFIG_FILE) -> dict:
    """Check a model config (``config.json``) for types and sane bounds; return it.

    Runs before any tensor is allocated, so a hostile config (hidden layers of
    200,000, a 0-dimensional latent) is refused with the reason.
    """
    config = _mapping(config, path)
    for key in ("modalities", "latent_dim", "specs", "feature_names", "median_library",
                "posterior_scale", "preset"):
        if key not in config:
            _fail(path, f"missing key {key!r}")
    if "settings" not in config and "train_settings" not in config:
        _fail(path, "missing key 'settings'")
    _number(config["latent_dim"], path, "latent_dim", 1, MAX_LATENT_DIM, integer=True, optional=False)
    _choice(config["posterior_scale"], path, "posterior_scale", POSTERIOR_SCALES)
    _text(config["preset"], path, "preset", 64, optional=False)
    specs = config["specs"]
    if not isinstance(specs, list) or not 2 <= len(specs) <= MAX_MODALITIES:
        _fail(path, f"'specs' must list 2 to {MAX_MODALITIES} modalities")
    _mapping(config["modalities"], path, "'modalities'")
    names = _mapping(config["feature_names"], path, "'feature_names'")
    _mapping(config["median_library"], path, "'median_library'")
    _mapping(config.get("settings", config.get("train_settings")), path, "'settings'")
    n_params = 0
    latent = int(config["latent_dim"])
    for i, spec in enumerate(specs):
        spec = _mapping(spec, path, f"specs[{i}]")
        name = _text(spec.get("name"), path, f"specs[{i}].name", 64, optional=False)
        if not MODALITY_NAME.match(name):
            _fail(path, f"specs[{i}].name {name!r} is not a valid modality name")
        n_feat = _number(spec.get("n_features"), path, f"specs[{i}].n_features", 1, MAX_FEATURES,
                         integer=True, optional=False)
        _choice(spec.get("likelihood"), path, f"specs[{i}].likelihood", LIKELIHOODS)
        hidden = spec.get("hidden")
        if not isinstance(hidden, list) or not 1 <= len(hidden) <= MAX_LAYERS:
            _fail(path, f"specs[{i}].hidden must list 1 to {MAX_LAYERS} layer sizes")
        sizes = [_number(h, path, f"specs[{i}].hidden", 1, MAX_HIDDEN, integer=True, optional=False)
                 for h in hidden]
        feats = names.get(name)
        if not isinstance(feats, list) or len(feats) != n_feat:
            _fail(path, f"feature_names[{name!r}] must list {n_feat} names")
        # encoder and decoder of this modality: features -> hidden... -> latent, and back
        dims = [n_feat] + sizes + [2 * latent]
        n_params += 2 * sum(a * b for a, b in zip(dims[:-1], dims[1:]))
    if n_params > MAX_PARAMETERS:
        _fail(path, f"the model would have about {n_params:,} parameters "
                    f"(more than the {MAX_PARAMETERS:,} allowed)")
    if "history" in config:
        config["history"] = _history(config.get("history"), path)
    return config


def read_config(run_dir: str | Path) -> dict:
    """The validated ``config.json`` of ``run_dir``.

    Raises ``FileNotFoundError`` when the folder holds no run and
    :class:`RunFileError` when the config is malformed or out of bounds.
    """
    path = Path(run_dir) / CONFIG_FILE
    raw = read_json(path)
    if raw is None:
        raise FileNotFoundError(f"{run_dir} is not a scMM run folder (no {CONFIG_FILE})")
    return validate_model_config(raw, path)


ANNOTATION_COLUMN = "annotation"


def read_annotation(run_dir: str | Path) -> dict[str, str]:
    """``{cluster: name}`` from the run's ``annotation.json`` ({} when absent; RunFileError when malformed)."""
    path = Path(run_dir) / ANNOTATION_FILE
    raw = read_json(path, max_bytes=2 ** 20)
    if raw is None:
        return {}
    raw = _mapping(raw, path)
    names = _mapping(raw.get("names", {}), path, "'names'")
    return {_text(k, path, "cluster", 100, optional=False): _text(v, path, "name", 100, optional=False).strip()
            for k, v in names.items()}


def write_annotation(run_dir: str | Path, names: dict) -> None:
    """Keep ``{cluster: name}`` (names of at most 100 characters; empty ones dropped) in the run."""
    clean = {}
    for cluster, name in names.items():
        if not isinstance(cluster, str) or not isinstance(name, str) or len(name) > 100 or "\x00" in name:
            raise ValueError(f"cluster names must be text of at most 100 characters, got {str(name)[:40]!r}")
        if name.strip():
            clean[cluster] = name.strip()
    write_json_atomic(Path(run_dir) / ANNOTATION_FILE, {"column": CLUSTER_KEY, "names": clean})


def is_run_dir(path: str | Path) -> bool:
    """True for a folder holding a run (an app job or a CLI run), whatever the state of its files."""
    path = Path(path)
    return path.is_dir() and any((path / f).exists() for f in (JOB_FILE, PROGRESS_FILE, CONFIG_FILE))


def is_analysed(run_dir: str | Path) -> bool:
    """True when ``scmm analyze`` finished on the run (its summary is written last)."""
    return (Path(run_dir) / ANALYSIS_DIR / SUMMARY_FILE).is_file()


def resolve_inside(root: str | Path, name: str) -> Path | None:
    """``root / name`` when ``name`` is one plain run-style name and the result stays in ``root``.

    Links are resolved before the check; None for anything else (separators,
    ``..``, NUL bytes, over-long names, a link pointing outside).
    """
    if not isinstance(name, str) or not RUN_NAME.match(name) or name in (".", ".."):
        return None
    root = Path(root).resolve()
    path = (root / name).resolve()
    return path if path.parent == root else None


# ------------------------------------------------------------- cached tables
SIMILARITY_TABLE = "similarity"
HEATMAP_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}\|[A-Za-z0-9_]{1,80}$")


def labels_digest(labels) -> str:
    """A short hash of cluster labels (to tell whether saved tables match the current clusters)."""
    text = "\n".join(map(str, labels))
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def heatmap_file(folder: str | Path, key: str) -> Path:
    """``heatmap_<target>_<kind>.csv`` (``heatmap_similarity.csv``) for table ``key``."""
    if key == SIMILARITY_TABLE:
        return Path(folder) / "heatmap_similarity.csv"
    target, kind = key.split("|", 1)
    return Path(folder) / f"heatmap_{target}_{kind}.csv"


def write_heatmap_tables(tables: dict, folder: str | Path) -> list[Path]:
    """Write each cluster x feature table (keys ``<target>|<kind>`` and ``similarity``) as CSV."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for key, table in tables.items():
        path = heatmap_file(folder, key)
        replace_atomic(lambda tmp, t=table, k=key: t.to_csv(tmp, index=k != SIMILARITY_TABLE), path)
        paths.append(path)
    return paths


GROUPED_DIR = "grouped"


def grouped_folder(run_dir: str | Path, column: str) -> Path:
    """Where the tables grouped by obs ``column`` (instead of the clusters) are kept in a run."""
    return Path(run_dir) / ANALYSIS_DIR / GROUPED_DIR / hashlib.sha1(str(column).encode()).hexdigest()[:12]


def read_heatmap_tables(run_dir: str | Path, labels=None, folder: str | Path | None = None) -> dict | None:
    """The cluster x feature tables saved by ``scmm analyze`` (``{key: DataFrame}``), or those in
    ``folder`` (tables grouped by another column, :func:`grouped_folder`).

    None when there are none, when ``labels`` (current groups) differ from
    those the tables were made with, or when the summary or a table is
    malformed (keys are checked before they become file names).
    """
    import pandas as pd

    folder = Path(folder) if folder is not None else Path(run_dir) / ANALYSIS_DIR
    try:
        saved = read_json(folder / SUMMARY_FILE)
    except RunFileError:
        return None
    if not isinstance(saved, dict):
        return None
    if labels is not None and saved.get("cluster_digest") != labels_digest(labels):
        return None
    keys = saved.get("heatmap_tables", [])
    if not isinstance(keys, list) or not all(isinstance(k, str) and HEATMAP_KEY.match(k) for k in keys):
        return None
    out = {}
    try:
        for key in keys:
            table = pd.read_csv(heatmap_file(folder, key), index_col=0)
            table.index = table.index.astype(str)
            out[key] = table
        sim = heatmap_file(folder, SIMILARITY_TABLE)
        if sim.exists():
            out[SIMILARITY_TABLE] = pd.read_csv(sim)
    except (OSError, ValueError, pd.errors.ParserError):
        return None
    return out
