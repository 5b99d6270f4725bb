"""Training jobs: start, progress, cancel, list.

A job is a child process tree started from here and detached from the Dash
server (``python -m app.worker job RUN_DIR``, which runs ``python -m scmm
train ...`` and then ``python -m scmm analyze RUN_DIR``).  All job state lives
in the run folder, never in this process:

``job.json``       what was asked (data, options) and the job's stage
                   (``training`` / ``analysing`` / ``done`` / ``failed`` /
                   ``cancelled``), written by the worker;
``progress.json``  written every epoch by ``scmm train --progress-file``;
``CANCEL``         created by :func:`cancel`; training stops at the next batch;
``config.json``    present once the model is saved (also for CLI runs).

So a reopened browser, another server process, or a queue-based manager
(Dash ``CeleryManager``) can find and follow the same jobs.  It uses only
torch-free parts of ``scmm`` (the progress file's atomic writer).
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from scmm.cli import write_json_atomic

JOB_FILE = "job.json"
PROGRESS_FILE = "progress.json"
CANCEL_FILE = "CANCEL"
CONFIG_FILE = "config.json"
RESULTS_FILE = "results.h5mu"
LOG_FILE = "job.log"
TERMINAL = ("done", "failed", "cancelled")
# the project root, so ``python -m app.worker`` resolves when the server was started elsewhere
_ROOT = Path(__file__).resolve().parent.parent


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def pid_alive(pid) -> bool:
    """True when process ``pid`` exists on this host and is not a zombie."""
    if not pid:
        return False
    try:
        import psutil
        proc = psutil.Process(int(pid))
        return proc.status() != psutil.STATUS_ZOMBIE
    except Exception:  # NoSuchProcess, AccessDenied, psutil missing
        try:
            os.kill(int(pid), 0)
            return True
        except OSError:
            return False


def new_run_name(data_path: str | Path, runs_dir: str | Path) -> str:
    """A fresh, readable run folder name: ``<dataset>-<YYYYmmdd-HHMMSS>``."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(str(data_path).split(",")[0]).name.split(".")[0])
    base = f"{stem or 'run'}-{time.strftime('%Y%m%d-%H%M%S')}"
    name, i = base, 1
    while (Path(runs_dir) / name).exists():
        i += 1
        name = f"{base}-{i}"
    return name


def train_command(data_path: str, run_dir: Path, options: dict) -> list[str]:
    """The ``python -m scmm train`` command line for ``options``.

    ``options`` keys: preset, epochs, lr, latent_dim, device, seed (None/absent = default).
    """
    cmd = [sys.executable, "-m", "scmm", "train", str(data_path), "--out", str(run_dir),
           "--progress-file", str(run_dir / PROGRESS_FILE),
           "--cancel-file", str(run_dir / CANCEL_FILE), "--quiet"]
    flags = {"preset": "--preset", "epochs": "--epochs", "lr": "--lr",
             "latent_dim": "--latent-dim", "device": "--device", "seed": "--seed"}
    for key, flag in flags.items():
        value = options.get(key)
        if value not in (None, ""):
            cmd += [flag, str(value)]
    return cmd


def start(data_path: str | Path, runs_dir: str | Path, options: dict | None = None,
          name: str | None = None, analyze: bool = True) -> str:
    """Start training ``data_path`` in a detached child process; return the run folder path.

    The worker is started through a short-lived launcher, so it is re-parented
    away from the server: closing the browser, a cancelled background callback
    or a restarted server leave it running.  Use :func:`cancel` to stop it.
    """
    runs_dir = Path(runs_dir)
    run_dir = runs_dir / (name or new_run_name(data_path, runs_dir))
    run_dir.mkdir(parents=True, exist_ok=False)
    spec = {"run": run_dir.name, "data": str(data_path), "options": dict(options or {}),
            "analyze": analyze, "stage": "queued", "created": time.time(), "message": "starting"}
    write_json_atomic(run_dir / JOB_FILE, spec)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in [str(_ROOT), os.environ.get("PYTHONPATH", "")] if p)}
    # the launcher starts the worker in a new session and exits at once (double fork)
    subprocess.run([sys.executable, "-m", "app.worker", "launch", str(run_dir)], env=env,
                   cwd=str(_ROOT), check=True, timeout=60)
    return str(run_dir)


def _stage_from_progress(prog: dict) -> str:
    status = prog.get("status")
    return {"running": "training", "saving": "saving"}.get(status, status or "queued")


def progress(run_dir: str | Path) -> dict:
    """The state of the run in ``run_dir`` (a job of this app or a CLI run).

    Returns ``{"run", "path", "status", "epoch", "epochs", "history", "message",
    "data", "options", "analysed", "created"}``; ``status`` is one of queued,
    training, saving, analysing, done, failed, cancelled.  A job whose process
    disappeared without writing a final state reads as failed (or cancelled if
    a cancel was asked).
    """
    run_dir = Path(run_dir)
    job = _read_json(run_dir / JOB_FILE)
    prog = _read_json(run_dir / PROGRESS_FILE)
    has_model = (run_dir / CONFIG_FILE).exists()
    if job:  # a job of this app: the worker's stage leads, progress.json details training
        status = job.get("stage", "queued")
        if status in ("queued", "training"):
            pstat = prog.get("status")
            status = {"running": "training", "saving": "saving", "done": "saving",
                      "cancelled": "cancelled", "failed": "failed"}.get(pstat, status)
    else:  # trained from the command line
        status = _stage_from_progress(prog) if prog else ("done" if has_model else "queued")
    message = job.get("message", "") if status not in ("training", "saving") else \
        (prog.get("message") or status)
    if status not in TERMINAL:
        pid = job.get("worker_pid") or prog.get("pid")
        age = time.time() - float(job.get("created", prog.get("started", 0)) or 0)
        if pid and not pid_alive(pid) or (not pid and age > 120):
            cancelled = (run_dir / CANCEL_FILE).exists()
            status = "cancelled" if cancelled else "failed"
            message = "cancelled" if cancelled else "the training process stopped unexpectedly"
    history = prog.get("history") or []
    if not history and has_model:
        history = _read_json(run_dir / CONFIG_FILE).get("history", [])
    return {"run": run_dir.name, "path": str(run_dir), "status": status,
            "epoch": int(prog.get("epoch") or (history[-1]["epoch"] if history else 0)),
            "epochs": int(prog.get("epochs") or len(history) or 0), "history": history,
            "message": message, "data": job.get("data", ""), "options": job.get("options", {}),
            "has_model": has_model, "analysed": (run_dir / "analysis" / "summary.json").exists(),
            "created": float(job.get("created") or prog.get("started") or _mtime(run_dir))}


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def cancel(run_dir: str | Path) -> bool:
    """Ask the job in ``run_dir`` to stop; True when it was still running.

    Creates the ``CANCEL`` file (training stops at the next batch and saves
    nothing) and sends SIGTERM to the training process and the worker.
    """
    run_dir = Path(run_dir)
    state = progress(run_dir)
    if state["status"] in TERMINAL:
        return False
    (run_dir / CANCEL_FILE).touch()
    job, prog = _read_json(run_dir / JOB_FILE), _read_json(run_dir / PROGRESS_FILE)
    for pid in (prog.get("pid"), job.get("child_pid")):
        if pid and pid_alive(pid):
            try:
                os.kill(int(pid), signal.SIGTERM)
            except OSError:
                pass
    return True


def is_run_dir(path: Path) -> bool:
    """True for a folder that holds a run (a job of this app or one trained from the CLI)."""
    return path.is_dir() and any((path / f).exists() for f in (JOB_FILE, PROGRESS_FILE, CONFIG_FILE))


def list_runs(runs_dir: str | Path) -> list[dict]:
    """:func:`progress` of every run under ``runs_dir``, newest first."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return []
    runs = [progress(p) for p in runs_dir.iterdir() if not p.name.startswith(".") and is_run_dir(p)]
    return sorted(runs, key=lambda r: r["created"], reverse=True)


def wait(run_dir: str | Path, timeout: float = 600, poll: float = 0.5) -> dict:
    """Block until the job in ``run_dir`` reaches a terminal state (for scripts and tests)."""
    deadline = time.time() + timeout
    while True:
        state = progress(run_dir)
        if state["status"] in TERMINAL or time.time() > deadline:
            return state
        time.sleep(poll)
