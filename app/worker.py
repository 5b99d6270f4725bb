"""Child-process entry points of the app (``python -m app.worker COMMAND ...``).

The Dash server never imports torch (a forked background job could not use
CUDA afterwards); everything that trains, decodes or reads raw data runs
here, in a separate process:

``launch RUN_DIR``      start ``job RUN_DIR`` in a new session and return at once
``job RUN_DIR``         train (``python -m scmm train``), then analyse
                        (``analyze RUN_DIR``); stage written to job.json
``analyze RUN_DIR``     ``scmm.tl.analyze`` with its step messages in job.json
``summarize PATH``      print the JSON summary of a dataset (or its read error)
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from app import jobs


def _update_job(run_dir: Path, **changes) -> dict:
    spec = jobs._read_json(run_dir / jobs.JOB_FILE)
    spec.update(changes)
    jobs.write_json_atomic(run_dir / jobs.JOB_FILE, spec)
    return spec


def cmd_launch(args) -> int:
    """Start the job worker detached (own session, re-parented once this process exits)."""
    run_dir = Path(args.run_dir)
    log = open(run_dir / jobs.LOG_FILE, "ab")
    proc = subprocess.Popen([sys.executable, "-m", "app.worker", "job", str(run_dir)],
                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True, close_fds=True)
    _update_job(run_dir, worker_pid=proc.pid)
    return 0


def _stage_env() -> dict:
    """Environment of a stage: torch's CPU threads leave one core to the server and browser.

    Two spinning OpenMP threads on a machine whose other core is busy slow
    training by an order of magnitude; one thread fewer than the cores avoids it.
    """
    threads = str(max(1, (os.cpu_count() or 2) - 1))
    return {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", threads)}


def _run_stage(run_dir: Path, cmd: list[str]) -> int:
    with open(run_dir / jobs.LOG_FILE, "ab") as log:
        log.write(("$ " + " ".join(cmd) + "\n").encode())
        log.flush()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                env=_stage_env())
        _update_job(run_dir, child_pid=proc.pid)
        return proc.wait()


def _tail(path: Path) -> str:
    """The most telling line of a stage's log: the last error line, else the last line."""
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines()
                 if line.strip() and not line.startswith("$ ")]
    except OSError:
        return ""
    errors = [line for line in lines if "error" in line.lower() and "warning" not in line.lower()]
    return (errors or lines or [""])[-1]


def cmd_analyze(args) -> int:
    """``scmm.tl.analyze(RUN_DIR)`` with each step's message written to job.json."""
    import scmm.tl
    run_dir = Path(args.run_dir)

    def report(step, message):
        if (run_dir / jobs.JOB_FILE).exists():
            _update_job(run_dir, message=f"analysing: {message}", analysis_step=step)

    scmm.tl.analyze(run_dir, progress=report)
    return 0


def cmd_job(args) -> int:
    """Train, then analyse; every stage change goes to job.json."""
    run_dir = Path(args.run_dir)
    spec = _update_job(run_dir, stage="training", message="training", worker_pid=os.getpid())
    code = _run_stage(run_dir, jobs.train_command(spec["data"], run_dir, spec.get("options", {})))
    prog = jobs._read_json(run_dir / jobs.PROGRESS_FILE)
    if (run_dir / jobs.CANCEL_FILE).exists() or prog.get("status") == "cancelled":
        _update_job(run_dir, stage="cancelled", message="cancelled by the user", finished=time.time())
        return 130
    if code != 0 or not (run_dir / jobs.CONFIG_FILE).exists():
        message = prog.get("message") or _tail(run_dir / jobs.LOG_FILE) or f"exit code {code}"
        _update_job(run_dir, stage="failed", message=message, finished=time.time())
        return 1
    if spec.get("analyze", True):
        _update_job(run_dir, stage="analysing", message="clusters, UMAPs, traversal, heatmaps")
        code = _run_stage(run_dir, [sys.executable, "-m", "app.worker", "analyze", str(run_dir)])
        if code != 0:
            _update_job(run_dir, stage="done", analysis_error=_tail(run_dir / jobs.LOG_FILE),
                        message="trained; the analysis failed (see job.log)", finished=time.time())
            return 0
    _update_job(run_dir, stage="done", message="done", finished=time.time())
    return 0


def cmd_summarize(args) -> int:
    """Print ``{"ok": true, "summary": ..., "likelihoods": ...}`` or ``{"ok": false, "error": ...}``."""
    try:
        import scmm
        from scmm.presets import DEFAULT_LIKELIHOOD
        from scmm.preprocess import modality_kind
        mdata = scmm.read(*args.path.split(","))
        summary = scmm.io.summarize(mdata)
        kinds = {m: modality_kind(m) for m in mdata.mod}
        out = {"ok": True, "summary": summary, "kinds": kinds,
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
    for name, fn in (("launch", cmd_launch), ("job", cmd_job), ("analyze", cmd_analyze)):
        p = sub.add_parser(name)
        p.add_argument("run_dir")
        p.set_defaults(func=fn)
    p = sub.add_parser("summarize")
    p.add_argument("path")
    p.set_defaults(func=cmd_summarize)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
