"""Child-process entry points of the app (``python -m app.worker COMMAND ...``).

The Dash server never imports torch (a forked background job could not use
CUDA afterwards); everything that trains, decodes or reads raw data runs
here, in a separate process:

``job RUN_DIR``         train (``python -m scmm train``), then analyse
                        (``analyze RUN_DIR``); the stage is written to job.json.
                        Started by :class:`app.jobs.JobQueue` (or a Celery
                        worker, :mod:`app.celery_queue`) in its own
                        process group; SIGTERM (a cancel) ends the stage and
                        records "cancelled"; each stage dies with the worker.
``analyze RUN_DIR``     ``scmm.tl.analyze`` with its step messages in job.json
``group RUN_DIR --groupby COL``  heatmap tables grouped by an obs column
``summarize PATH``      print the JSON summary of a dataset (or its read error)
"""
from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from scmm import runfolder

from app import processes


def _update_job(run_dir: Path, **changes) -> dict:
    """Merge ``changes`` into job.json (validated read, atomic write)."""
    spec = runfolder.read_job(run_dir) or {}
    spec.update(changes)
    runfolder.write_json_atomic(run_dir / runfolder.JOB_FILE, spec)
    return spec


def train_command(spec: dict, run_dir: Path) -> list[str]:
    """The ``python -m scmm train`` command line of job ``spec``: its settings travel as
    the run's ``settings.json`` (written by the server), never as re-spelled flags."""
    return processes.python_command(
        "scmm", "train", spec["dataset"], "--out", run_dir, "--settings", run_dir / runfolder.SETTINGS_FILE,
        "--progress-file", run_dir / runfolder.PROGRESS_FILE,
        "--cancel-file", run_dir / runfolder.CANCEL_FILE, "--quiet")


class Stages:
    """Runs the job's stages one at a time; SIGTERM ends the running one and marks the job cancelled."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.proc: subprocess.Popen | None = None
        self.terminated = False
        signal.signal(signal.SIGTERM, self._on_term)

    def _on_term(self, *_):
        self.terminated = True
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()

    def run(self, cmd: list[str]) -> int:
        """Run one stage to its end (its output appended to job.log); its exit code."""
        with open(self.run_dir / runfolder.LOG_FILE, "ab") as log:
            log.write(("$ " + " ".join(cmd) + "\n").encode())
            log.flush()
            self.proc = processes.start_child(cmd, log)
            if self.terminated:
                self.proc.terminate()
            return self.proc.wait()

    @property
    def cancelled(self) -> bool:
        return self.terminated or (self.run_dir / runfolder.CANCEL_FILE).exists()


def _tail(path: Path) -> str:
    """The most telling line of a stage's log: the last error line, else the last line."""
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines()
                 if line.strip() and not line.startswith("$ ")]
    except OSError:
        return ""
    errors = [line for line in lines if "error" in line.lower() and "warning" not in line.lower()]
    return (errors or lines or [""])[-1][:500]


def cmd_analyze(args) -> int:
    """``scmm.tl.analyze(RUN_DIR)`` with each step's message written to job.json."""
    import scmm.tl
    run_dir = Path(args.run_dir)

    def report(step, message):
        if (run_dir / runfolder.JOB_FILE).exists():
            _update_job(run_dir, message=f"analysing: {message}")

    scmm.tl.analyze(run_dir, progress=report)
    return 0


def cmd_group(args) -> int:
    """Cluster x feature tables of RUN_DIR grouped by obs column ``--groupby`` (the app's Generation page)."""
    import scmm
    from scmm.tl.heatmap import heatmap_tables
    run_dir = Path(args.run_dir)
    model = scmm.SCMM.load(run_dir)
    mdata = model.mdata
    column = args.groupby
    if column == runfolder.ANNOTATION_COLUMN:
        names = runfolder.read_annotation(run_dir)
        mdata.obs[column] = [names.get(c, f"cluster {c}") for c in mdata.obs[runfolder.CLUSTER_KEY].astype(str)]
    if column not in mdata.obs:
        raise SystemExit(f"no cell annotation {column!r} in this run")
    groups = mdata.obs[column].astype(str).astype("category")
    if not 2 <= len(groups.cat.categories) <= 60:
        raise SystemExit(f"{column!r} has {len(groups.cat.categories)} groups; grouping needs 2 to 60")
    mdata.obs[column] = groups
    tables = heatmap_tables(model, mdata, groupby=column)
    folder = runfolder.grouped_folder(run_dir, column)
    runfolder.write_heatmap_tables(tables, folder)
    runfolder.write_json_atomic(folder / runfolder.SUMMARY_FILE, {
        "column": column, "heatmap_tables": [k for k in tables if k != "similarity"],
        "cluster_digest": runfolder.labels_digest(groups)})
    return 0


def cmd_job(args) -> int:
    """Train, then analyse; every stage change goes to job.json."""
    run_dir = Path(args.run_dir)
    stages = Stages(run_dir)
    spec = _update_job(run_dir, stage="training", message="training")
    code = stages.run(train_command(spec, run_dir))
    if stages.cancelled:
        _update_job(run_dir, stage="cancelled", message="cancelled by the user; nothing was saved",
                    finished=time.time())
        return 130
    has_model = (run_dir / runfolder.CONFIG_FILE).exists()
    if code != 0 or not has_model:
        try:
            prog = runfolder.read_progress(run_dir) or {}
        except runfolder.RunFileError:
            prog = {}
        message = _tail(run_dir / runfolder.LOG_FILE) or prog.get("message") or f"exit code {code}"
        if code < 0:
            message = f"the training process was killed by signal {-code}; nothing was saved"
        _update_job(run_dir, stage="failed", message=message, finished=time.time())
        return 1
    if spec.get("analyze", True):
        _update_job(run_dir, stage="analysing", message="clusters, UMAPs, traversal, heatmaps")
        code = stages.run(processes.python_command("app.worker", "analyze", run_dir))
        if stages.cancelled:
            _update_job(run_dir, stage="cancelled", message="cancelled during the analysis; the trained "
                        "model is kept (run `scmm analyze` on it)", finished=time.time())
            return 130
        if code != 0:
            _update_job(run_dir, stage="done", analysis_error=_tail(run_dir / runfolder.LOG_FILE),
                        message="trained; the analysis failed (see job.log)", finished=time.time())
            return 0
    _update_job(run_dir, stage="done", message="trained and analysed" if spec.get("analyze", True) else "trained",
                finished=time.time())
    return 0


def cmd_summarize(args) -> int:
    """Print ``{"ok": true, "summary": ..., "likelihoods": ...}`` or ``{"ok": false, "error": ...}``."""
    try:
        import scmm
        from scmm.preprocess import modality_kind
        from scmm.presets import DEFAULT_LIKELIHOOD
        naming = json.loads(args.naming) if args.naming else {}
        mdata = scmm.read(*args.path.split(","), modality_names=naming.get("names") or None,
                          kinds=naming.get("kinds") or None)
        summary = scmm.io.summarize(mdata)
        kinds = {m: modality_kind(m, mdata.mod[m]) for m in mdata.mod}
        original = {m: str(mdata.mod[m].uns.get("scmm_original_name", m)) for m in mdata.mod}
        out = {"ok": True, "summary": summary, "kinds": kinds, "original_names": original,
               "likelihoods": {m: DEFAULT_LIKELIHOOD[k] for m, k in kinds.items()},
               "obs_columns": [str(c) for c in mdata.obs.columns]}
    except Exception as err:  # the reader's message is what the user needs to see
        out = {"ok": False, "error": str(err), "type": type(err).__name__}
    print(json.dumps(out, default=float))
    return 0


def main(argv=None) -> int:
    """Parse the command line and dispatch."""
    parser = argparse.ArgumentParser(prog="python -m app.worker")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, fn in (("job", cmd_job), ("analyze", cmd_analyze)):
        p = sub.add_parser(name)
        p.add_argument("run_dir")
        p.set_defaults(func=fn)
    p = sub.add_parser("group")
    p.add_argument("run_dir")
    p.add_argument("--groupby", required=True)
    p.set_defaults(func=cmd_group)
    p = sub.add_parser("summarize")
    p.add_argument("path")
    p.add_argument("--naming", default=None, help='JSON {"names": {file name: new}, "kinds": {name: kind}}')
    p.set_defaults(func=cmd_summarize)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
