"""Training jobs: a queue with a concurrency limit, server-issued job ids, progress, cancel, list.

The browser names a job only by the id this module issued.  The queue's own
records live in ``RUNS_DIR/.scmm-jobs/<job id>.json``, written only by the
server (and, with Celery, by the lab's ``scmm-worker`` processes; a run
folder, which anyone with the runs folder can write, is never trusted for a
pid): the job's dataset, options, state, and the worker's pid and creation
time.  A job can be cancelled only through its record, and
cancelling ends the worker's whole process group (training or analysis
included).  Records survive the server, so a restarted server re-attaches to
running jobs and starts the queued ones.

A job runs ``python -m app.worker job RUN_DIR`` in its own session: it trains
(``python -m scmm train``), then analyses; its stage goes to the run folder's
``job.json`` and the epochs to ``progress.json`` (see :mod:`scmm.runfolder`).
Jobs start in submission order while fewer than ``max_running`` run (default:
one per GPU, one on a CPU-only machine).

This is the embedded queue (no server needed).  With a Redis URL the app uses
:class:`app.celery_queue.CeleryJobQueue` instead: the same records and methods,
the jobs run by ``scmm-worker`` processes, possibly on other machines.
"""
from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import os
import re
import secrets
import signal
import subprocess
import threading
import time
from pathlib import Path

from scmm import runfolder
from scmm.runfolder import RunFileError
from scmm.settings import Settings

from app import processes

QUEUE_DIR = ".scmm-jobs"
STATES = ("queued", "running", "done", "failed", "cancelled")
TERMINAL = runfolder.TERMINAL
JOB_ID = re.compile(r"^[0-9a-f]{16}$")
#: the same request within this many seconds returns the job it already started
DUPLICATE_WINDOW_S = 30.0
#: a cancelled job's process group is killed outright after this grace period
KILL_AFTER_S = 20.0


def gpu_count() -> int:
    """NVIDIA GPUs visible to this machine, read from the driver (no torch import)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    folder = Path("/proc/driver/nvidia/gpus")
    return len(list(folder.iterdir())) if folder.is_dir() else 0


def default_max_running() -> int:
    """One training per GPU; one on a CPU-only machine."""
    return max(1, gpu_count())


def new_run_name(dataset_label: str, runs_dir: Path) -> str:
    """A readable run name, ``<dataset>-<YYYYmmdd-HHMMSS>``, created (mkdir) so it is never reused."""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", Path(dataset_label).name.split(".")[0])[:60].strip("_")
    base = f"{stem or 'run'}-{time.strftime('%Y%m%d-%H%M%S')}"
    for i in range(1, 1000):
        name = base if i == 1 else f"{base}-{i}"
        try:
            (runs_dir / name).mkdir(parents=True)
            return name
        except FileExistsError:
            continue
    raise RuntimeError(f"no free run name for {base}")


class JobQueue:
    """The server's training queue over ``runs_dir`` (safe across threads and server processes)."""

    #: the kind of queue, stored in each record it creates
    kind = "embedded"

    def __init__(self, runs_dir: str | Path, max_running: int | None = None):
        self.runs_dir = Path(runs_dir).resolve()
        self.folder = self.runs_dir / QUEUE_DIR
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError:  # a read-only runs folder: pages still work, Train says why it cannot start
            pass
        self.max_running = max_running or default_max_running()
        self._children: dict[str, subprocess.Popen] = {}   # workers this process started
        self._thread_lock = threading.Lock()

    # --------------------------------------------------------------- records
    @contextlib.contextmanager
    def _locked(self):
        with self._thread_lock, open(self.folder / "lock", "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _path(self, job_id: str) -> Path:
        return self.folder / f"{job_id}.json"

    def _write(self, record: dict) -> None:
        runfolder.write_json_atomic(self._path(record["job_id"]), record)

    def get(self, job_id) -> dict | None:
        """The record of ``job_id`` (None for an id this queue did not issue)."""
        if not isinstance(job_id, str) or not JOB_ID.match(job_id):
            return None
        try:
            record = runfolder.read_json(self._path(job_id))
        except RunFileError:
            return None
        return record if isinstance(record, dict) and record.get("job_id") == job_id else None

    def records(self) -> list[dict]:
        """Every record, oldest first."""
        out = []
        if not self.folder.is_dir():
            return out
        for path in self.folder.glob("*.json"):
            record = self.get(path.stem)
            if record is not None:
                out.append(record)
        return sorted(out, key=lambda r: r.get("submitted", 0))

    def by_run(self) -> dict[str, dict]:
        """``{run name: record}``."""
        return {r["run"]: r for r in self.records()}

    def describe(self) -> str:
        """Where and how many trainings run, in words (the Train page and the start-up line)."""
        return f"{self.max_running} training(s) at a time on this server"

    def position(self, job_id: str) -> int | None:
        """1-based place of a queued job in the queue (None when it is not queued)."""
        queued = [r["job_id"] for r in self.records() if r["state"] == "queued"]
        return queued.index(job_id) + 1 if job_id in queued else None

    # ---------------------------------------------------------------- submit
    def submit(self, dataset: Path, dataset_label: str, settings: Settings, analyze: bool = True) -> dict:
        """Queue a training of ``dataset`` (a server-resolved path) with ``settings``; return its record.

        The settings are written into the run folder (``settings.json``), which
        the job's ``scmm train --settings`` reads.

        The same request again within :data:`DUPLICATE_WINDOW_S` returns the
        first job (with ``"duplicate": True``) instead of starting a second.
        Raises ``OSError`` when the runs folder cannot be written.
        """
        options = settings.to_dict()
        key = hashlib.sha1(json.dumps([str(dataset), options, analyze], sort_keys=True).encode()).hexdigest()
        runfolder.check_writable(self.folder, need_bytes=50 * 2 ** 20)
        with self._locked():
            now = time.time()
            for record in self.records():
                if record.get("request_key") == key and record["state"] in ("queued", "running") \
                        and now - record.get("submitted", 0) < DUPLICATE_WINDOW_S:
                    return {**record, "duplicate": True}
            runfolder.check_writable(self.runs_dir, need_bytes=50 * 2 ** 20)
            run = new_run_name(dataset_label, self.runs_dir)
            job_id = secrets.token_hex(8)
            record = {"job_id": job_id, "run": run, "dataset": str(dataset), "dataset_label": dataset_label,
                      "options": options, "analyze": analyze, "state": "queued", "submitted": now,
                      "started": None, "finished": None, "pid": None, "pid_created": None,
                      "cancel_requested": None, "message": "queued", "request_key": key,
                      "queue": self.kind}
            settings.write(self.runs_dir / run / runfolder.SETTINGS_FILE)
            runfolder.write_json_atomic(self.runs_dir / run / runfolder.JOB_FILE, {
                "job_id": job_id, "run": run, "dataset": str(dataset), "options": options,
                "analyze": analyze, "stage": "queued", "created": now, "message": "queued"})
            self._write(record)
        self._dispatch(record)
        return self.get(job_id) or record

    def _dispatch(self, record: dict) -> None:
        """Hand a new job to whatever runs it: here, start it now if a slot is free."""
        self.tick()

    # ------------------------------------------------------------ scheduling
    def tick(self) -> None:
        """Reap finished or dead workers, enforce cancels, start queued jobs while slots are free."""
        if not self.folder.is_dir():
            return
        with self._locked():
            records = self.records()
            for record in records:
                if record["state"] == "running" and record.get("queue", self.kind) == self.kind:
                    self._check_running(record)  # a job of a Celery worker is watched by its own queue
            running = sum(r["state"] == "running" for r in records)
            for record in records:
                if record["state"] == "queued" and running < self.max_running:
                    self._start(record)
                    running += 1

    def _start(self, record: dict) -> None:
        run_dir = self.runs_dir / record["run"]
        try:
            proc = processes.spawn_session(processes.python_command("app.worker", "job", run_dir),
                                           run_dir / runfolder.LOG_FILE)
        except OSError as err:
            self._finish(record, "failed", f"could not start the job: {err}")
            return
        self._children[record["job_id"]] = proc
        record.update(state="running", started=time.time(), pid=proc.pid, queue=self.kind,
                      pid_created=processes.process_identity(proc.pid), message="started")
        self._write(record)

    def _exit_note(self, job_id: str) -> str:
        proc = self._children.pop(job_id, None)
        code = proc.poll() if proc is not None else None
        if code is None:
            return ""
        return f" (killed by signal {-code})" if code < 0 else f" (exit code {code})"

    def _check_running(self, record: dict) -> None:
        child = self._children.get(record["job_id"])
        if child is not None:
            child.poll()  # reap a finished worker of this process (no zombie)
        alive = processes.same_process(record["pid"], record["pid_created"])
        if alive:
            asked = record.get("cancel_requested")
            if asked and time.time() - asked > KILL_AFTER_S:
                processes.kill_group(record["pid"], signal.SIGKILL)
            return
        # the worker is gone: end whatever is left of its group, then read its last word
        processes.kill_group(record["pid"], signal.SIGKILL)
        self._conclude(record, self._exit_note(record["job_id"]))

    def _conclude(self, record: dict, note: str = "", where: str = "") -> None:
        """Settle the record of a job whose worker process has ended, from the run's job.json.

        A job that wrote its own last word (done, failed, cancelled) keeps it;
        otherwise it failed (or was cancelled, when asked), and job.json says so.
        ``note`` tells how the process ended, ``where`` on which worker.
        """
        run_dir = self.runs_dir / record["run"]
        try:
            job = runfolder.read_job(run_dir) or {}
        except RunFileError as err:
            job = {"stage": "failed", "message": f"unreadable job file: {err}"}
        stage = job.get("stage")
        if stage in TERMINAL:
            self._finish(record, stage, job.get("message") or stage)
            self._children.pop(record["job_id"], None)
            return
        if record.get("cancel_requested"):
            state, message = "cancelled", "cancelled by the user"
        else:
            state = "failed"
            message = (f"the job's worker process{where} stopped unexpectedly during {stage or 'start-up'}"
                       f"{note}; nothing was saved" +
                       ("" if stage != "analysing" else " beyond the trained model"))
        self._mark_job(run_dir, state, message)
        self._finish(record, state, message)

    def _mark_job(self, run_dir: Path, stage: str, message: str) -> None:
        try:
            job = runfolder.read_json(run_dir / runfolder.JOB_FILE)
        except RunFileError:
            job = None
        job = job if isinstance(job, dict) else {}
        job.update(stage=stage, message=message, finished=time.time())
        try:
            runfolder.write_json_atomic(run_dir / runfolder.JOB_FILE, job)
        except OSError:
            pass  # the queue record below still tells the truth

    def _finish(self, record: dict, state: str, message: str) -> None:
        record.update(state=state, message=message, finished=time.time())
        self._write(record)

    # ---------------------------------------------------------------- cancel
    def cancel(self, job_id) -> str:
        """Cancel job ``job_id``; returns what happened, in words.

        Only jobs of this queue can be cancelled; a running one gets the
        ``CANCEL`` file and SIGTERM to its whole process group (SIGKILL
        after :data:`KILL_AFTER_S`).
        """
        with self._locked():
            record = self.get(job_id)
            if record is None:
                return "unknown job"
            if record["state"] in TERMINAL:
                return f"the job had already {record['state'] if record['state'] != 'done' else 'finished'}"
            run_dir = self.runs_dir / record["run"]
            if record["state"] == "queued":
                self._mark_job(run_dir, "cancelled", "cancelled before it started")
                self._finish(record, "cancelled", "cancelled before it started")
                self._signal_cancel(record)
                return f"removed {record['run']} from the queue"
            record["cancel_requested"] = time.time()
            self._write(record)
            try:
                (run_dir / runfolder.CANCEL_FILE).touch()
            except OSError:
                pass
            self._signal_cancel(record)
        return f"cancelling {record['run']}…"

    def _signal_cancel(self, record: dict) -> None:
        """After a cancel was recorded: SIGTERM to a running job's process group (a worker of this machine)."""
        if record["state"] == "running" and processes.same_process(record["pid"], record["pid_created"]):
            processes.kill_group(record["pid"], signal.SIGTERM)

    def wait(self, job_id: str, timeout: float = 600, poll: float = 0.5) -> dict:
        """Block until the job ends (for scripts and tests); returns its record."""
        deadline = time.time() + timeout
        while True:
            self.tick()
            record = self.get(job_id)
            if record is None or record["state"] in TERMINAL or time.time() > deadline:
                return record
            time.sleep(poll)

    def run_forever(self, interval: float = 1.0, stop: threading.Event | None = None) -> None:
        """Tick every ``interval`` seconds until ``stop`` is set (the server's scheduler thread)."""
        stop = stop or threading.Event()
        while not stop.wait(interval):
            try:
                self.tick()
            except Exception as err:  # keep scheduling; the next tick retries
                print(f"scmm-app: job queue: {type(err).__name__}: {err}", flush=True)


# ------------------------------------------------------------------- state
def _stage(job: dict | None, prog: dict | None, record: dict | None, has_model: bool) -> tuple[str, str]:
    """(status, message) from the queue record, job.json and progress.json."""
    if record is not None and record["state"] in ("queued", "failed", "cancelled"):
        return record["state"], record.get("message", "")
    if job is not None:
        status = job["stage"]
        message = job["message"]
        if status == "queued" and record is not None and record["state"] == "running":
            status, message = "starting", "the worker is starting"
        if status in ("queued", "training") and prog is not None:
            status = {"running": "training", "saving": "saving", "done": "saving"}.get(prog["status"], status)
            message = prog["message"] or status
        return status, message
    if prog is not None:  # trained from the command line
        status = {"running": "training", "saving": "saving"}.get(prog["status"], prog["status"])
        return status, prog["message"] or ("trained with scmm train" if status == "done" else status)
    return ("done", "trained with scmm train") if has_model else ("unreadable", "no job, progress or model")


def progress(run_dir: str | Path, record: dict | None = None) -> dict:
    """The state of the run in ``run_dir`` (a job of this app or a CLI run), never raising.

    Returns ``{"run", "status", "epoch", "epochs", "history", "message", "dataset",
    "options", "has_model", "analysed", "created", "job_id", "position", "worker"}``
    (``worker``: the name of the Celery worker that took the job, else None).
    ``status``: queued, starting, training, saving, analysing, done, failed, cancelled,
    or ``unreadable`` (a file of the run is malformed; ``message`` says which
    and why).
    """
    run_dir = Path(run_dir)
    state = {"run": run_dir.name, "status": "unreadable", "epoch": 0, "epochs": 0, "history": [],
             "message": "", "dataset": (record or {}).get("dataset_label", ""),
             "options": (record or {}).get("options", {}), "has_model": False, "analysed": False,
             "created": (record or {}).get("submitted") or 0.0,
             "job_id": (record or {}).get("job_id"), "position": None,
             "worker": (record or {}).get("worker")}
    try:
        job = runfolder.read_job(run_dir)
        prog = runfolder.read_progress(run_dir)
        config = _read_config(run_dir)
    except (RunFileError, OSError) as err:
        state["message"] = str(err)
        return state
    state["has_model"] = config is not None and (run_dir / runfolder.WEIGHTS_FILE).is_file() \
        and (run_dir / runfolder.RESULTS_FILE).is_file()
    state["status"], state["message"] = _stage(job, prog, record, state["has_model"])
    history = (prog or {}).get("history") or (config or {}).get("history") or []
    if config is not None:  # what a finished run trained with (settings, cells), for estimates
        state["options"] = config.get("settings") or state["options"]
        state["n_train"] = config.get("n_train")
    state.update(history=history, analysed=runfolder.is_analysed(run_dir),
                 epoch=(prog or {}).get("epoch") or (history[-1]["epoch"] if history else 0),
                 epochs=(prog or {}).get("epochs") or len(history))
    if job is not None:
        state["options"] = state["options"] or job["options"]
        state["dataset"] = state["dataset"] or Path(job["dataset"]).name
        state["created"] = state["created"] or job["created"]
    state["created"] = state["created"] or (prog or {}).get("started") or _config_time(run_dir)
    return state


def _read_config(run_dir: Path) -> dict | None:
    """The run's validated config.json (None when absent), parsed once per version of the file.

    The runs table polls every run every 2 s; a config lists every feature name
    (tens of thousands of peaks), so it is re-read only when it changes.
    """
    try:
        st = (run_dir / runfolder.CONFIG_FILE).stat()
    except FileNotFoundError:
        return None
    return _parsed_config(str(run_dir), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=256)
def _parsed_config(run_dir: str, mtime_ns: int, size: int) -> dict:
    return runfolder.read_config(run_dir)


def _config_time(run_dir: Path) -> float:
    """When a CLI run was saved: its config.json's mtime (it is written once, at the save)."""
    try:
        return (run_dir / runfolder.CONFIG_FILE).stat().st_mtime
    except OSError:
        return 0.0


def list_runs(runs_dir: str | Path, queue: JobQueue | None = None) -> list[dict]:
    """:func:`progress` of every run under ``runs_dir``, newest first (unreadable ones included)."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return []
    records = queue.by_run() if queue is not None else {}
    queued = [r["job_id"] for r in records.values() if r["state"] == "queued"]
    queued.sort(key=lambda j: next(r["submitted"] for r in records.values() if r["job_id"] == j))
    runs = []
    for path in runs_dir.iterdir():
        if path.name.startswith(".") or not runfolder.RUN_NAME.match(path.name) \
                or path.is_symlink() or not runfolder.is_run_dir(path):
            continue
        state = progress(path, records.get(path.name))
        if state["job_id"] in queued:
            state["position"] = queued.index(state["job_id"]) + 1
        runs.append(state)
    return sorted(runs, key=lambda r: r["created"], reverse=True)
