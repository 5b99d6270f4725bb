"""Jobs on a real queue: Celery workers over Redis, sharing the runs folder (``scmm-worker``).

With a Redis URL (``scmm-app --redis-url redis://host:6379/0`` or
``SCMM_REDIS_URL``) the app's queue is a :class:`CeleryJobQueue`: the same
records in ``RUNS_DIR/.scmm-jobs/`` and the same methods as the embedded
:class:`app.jobs.JobQueue` (the pages do not know which one they talk to), but
a job is run by a ``scmm-worker`` process, on this machine or another one
(the GPU server) that sees the runs and data folders at the same paths.
Dash's background callbacks go to the same workers (Dash's ``CeleryManager``).

    scmm-worker --redis-url redis://web-host:6379/0 --runs-dir /shared/runs --data-dir /shared/data

How a job travels:

- **submit** (server): the record is written as today, then a Celery task
  ``scmm.train_job(job_id)`` is sent to the ``scmm-train`` queue with the job
  id as its task id.  Only the id travels: the worker reads the job from the
  record in its own runs folder, never a path or a pid from the message.
- **start** (worker): under the queue's lock, a record still ``queued`` becomes
  ``running`` with the worker's name and a heartbeat; any other state (a job
  cancelled while queued) is left alone, so a job starts at most once.  The
  worker runs ``python -m app.worker job RUN_DIR`` in its own process group,
  set to die with the worker's pool process (``PR_SET_PDEATHSIG``), and writes
  a heartbeat into the record every ``--heartbeat-interval`` seconds.
- **queue position** is the job's place among the queued records (oldest
  first), which is the order of Redis' list; workers take one job per free
  slot and reserve none ahead (``worker_disable_prefetch``), so a queued job
  stays in Redis, where any free worker can take it.
- **cancel** (server): a queued job's record becomes ``cancelled`` (its task,
  if it reaches a worker, finds that and does nothing; it is also revoked); a
  running job gets ``cancel_requested`` in its record and the run's CANCEL
  file, both in the shared folder.  The worker sees them at its next
  heartbeat and ends the job's process group on its own machine (SIGTERM,
  SIGKILL after :data:`app.jobs.KILL_AFTER_S`).  No pid crosses machines.
- **a lost worker** (killed, machine down): its heartbeat stops.  The server
  marks the job failed once the heartbeat has not changed for
  ``--heartbeat-timeout`` seconds of the server's own clock (no clock is
  compared across machines), naming the worker and the stage the job was in.
  The job's processes on the dead worker's machine die with it (parent-death
  signals), and a worker that comes back finds the record failed and ends any
  job it still runs.
- **fail-on-loss, not redelivery**: tasks are acknowledged when a worker
  starts them (``task_acks_late=False``), so a lost worker's job is never
  handed to another worker to re-run into a half-written run folder; it is
  marked failed and the user starts it again (a fresh run folder).
"""
from __future__ import annotations

import argparse
import functools
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from scmm import runfolder
from scmm.runfolder import RunFileError

from app import jobs, processes

TRAIN_QUEUE = "scmm-train"
CALLBACK_QUEUE = "scmm-callbacks"
TRAIN_TASK = "scmm.train_job"
#: the task state a worker stores when it cannot take a job (see :meth:`CeleryJobQueue._refusal`)
REFUSED = "REFUSED"
#: seconds between two heartbeats of a running job (the worker's ``--heartbeat-interval``)
DEFAULT_HEARTBEAT_S = 10.0
#: a running job whose heartbeat has not changed for this long is failed (``scmm-app --heartbeat-timeout``)
DEFAULT_HEARTBEAT_TIMEOUT_S = 120.0
ROLES = ("both", "jobs", "callbacks")

#: (queue, heartbeat interval) of this process when it is an ``scmm-worker``
_WORKER: tuple | None = None


class QueueUnavailable(RuntimeError):
    """Redis cannot be reached (the message names the URL, without its password)."""


def safe_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (for messages and logs)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname or ''}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def check_redis(url: str, timeout: float = 3.0) -> None:
    """Raise :class:`QueueUnavailable` unless Redis at ``url`` answers a PING within ``timeout``."""
    scheme = urlsplit(url).scheme if isinstance(url, str) else ""
    if scheme not in ("redis", "rediss"):
        raise QueueUnavailable(f"the Redis URL must start with redis:// or rediss://, got {safe_url(str(url))!r}")
    import redis
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
        try:
            client.ping()
        finally:
            client.close()
    except (redis.RedisError, OSError, ValueError) as err:
        raise QueueUnavailable(f"cannot reach Redis at {safe_url(url)}: {err}") from None


def make_celery(url: str):
    """The Celery app of the lab: broker and result store in Redis at ``url``; JSON only.

    Trainings go to :data:`TRAIN_QUEUE`, Dash's background callbacks to
    :data:`CALLBACK_QUEUE`.  Tasks are acknowledged when they start
    (fail-on-loss: see the module's docstring) and a worker reserves no task
    beyond its free slots.
    """
    from celery import Celery
    app = Celery("scmm", broker=url, backend=url, set_as_current=False)
    app.conf.update(
        task_serializer="json", result_serializer="json", accept_content=["json"],
        task_default_queue=CALLBACK_QUEUE,
        task_routes={TRAIN_TASK: {"queue": TRAIN_QUEUE}, "background_callback_*": {"queue": CALLBACK_QUEUE}},
        task_acks_late=False, task_reject_on_worker_lost=False,
        worker_prefetch_multiplier=1, worker_disable_prefetch=True,
        broker_connection_retry_on_startup=True, broker_connection_timeout=5,
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.5,
                                   "interval_max": 1},
        redis_socket_connect_timeout=5, result_expires=24 * 3600, task_store_errors_even_if_ignored=True,
        worker_send_task_events=False, task_track_started=True,
    )

    @app.task(name=TRAIN_TASK, bind=True, acks_late=False, ignore_result=False)
    def train_job(self, job_id):
        """Run job ``job_id`` of this worker's runs folder (see :meth:`CeleryJobQueue.run_job`)."""
        if _WORKER is None:
            raise RuntimeError("scmm.train_job runs only in an scmm-worker")
        queue, interval = _WORKER
        answer = queue.run_job(job_id, self.request.hostname, interval)
        if answer.get("refused"):  # stored even though results are ignored: the server reads it
            self.update_state(state=REFUSED, meta=answer)
        return answer

    return app


def _number(value, default: float = 0.0) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else default


class CeleryJobQueue(jobs.JobQueue):
    """:class:`app.jobs.JobQueue`'s records and methods; the jobs run on Celery workers.

    The server's instance submits, cancels and watches heartbeats
    (:meth:`tick`); a worker's instance runs jobs (:meth:`run_job`).
    """

    kind = "celery"

    def __init__(self, runs_dir: str | Path, redis_url: str, heartbeat_timeout: float | None = None,
                 celery_app=None):
        super().__init__(runs_dir, max_running=1)
        self.redis_url = redis_url
        self.celery = celery_app or make_celery(redis_url)
        self.heartbeat_timeout = float(heartbeat_timeout or DEFAULT_HEARTBEAT_TIMEOUT_S)
        self._seen: dict[str, tuple] = {}   # job id -> (last heartbeat seen, server monotonic time it changed)

    def describe(self) -> str:
        return "trainings run on the lab's workers (scmm-worker), first come first served"

    # ---------------------------------------------------------------- server
    def _dispatch(self, record: dict) -> None:
        """Send the job's id to the workers; a queue that cannot be reached fails the job, in words."""
        try:
            self._send(record["job_id"])
        except Exception as err:  # kombu's OperationalError and friends: Redis is down or refused us
            reason = " ".join(str(err).split())
            message = f"could not queue the job: Redis at {safe_url(self.redis_url)} is unreachable ({reason})"
            with self._locked():
                current = self.get(record["job_id"])
                if current is not None and current["state"] == "queued":
                    self._mark_job(self.runs_dir / record["run"], "failed", message)
                    self._finish(current, "failed", message)
            raise OSError(message) from None

    def _send(self, job_id: str) -> None:
        """Queue task ``scmm.train_job(job_id)`` (its task id is the job id).  No result is awaited: a
        worker that cannot take the job stores a REFUSED state, which :meth:`tick` reads."""
        self.celery.send_task(TRAIN_TASK, args=[job_id], task_id=job_id, queue=TRAIN_QUEUE, ignore_result=True)

    def tick(self) -> None:
        """Fail jobs whose worker stopped sending heartbeats, or whose worker could not take them."""
        if not self.folder.is_dir():
            return
        with self._locked():
            records = self.records()
            running, queued = set(), []
            for record in records:
                if record.get("queue", jobs.JobQueue.kind) != self.kind:
                    self._adopt(record)  # left by the embedded queue
                elif record["state"] == "running":
                    running.add(record["job_id"])
                    self._check_heartbeat(record)
                elif record["state"] == "queued":
                    queued.append(record["job_id"])
            for job_id in set(self._seen) - running:
                self._seen.pop(job_id, None)
        # Redis is asked outside the lock: a slow Redis must not hold up the workers' heartbeats
        refused = {job_id: answer for job_id in queued if (answer := self._refusal(job_id)) is not None}
        if refused:
            with self._locked():
                for job_id, message in refused.items():
                    record = self.get(job_id)
                    if record is not None and record["state"] == "queued":
                        self._mark_job(self.runs_dir / record["run"], "failed", message)
                        self._finish(record, "failed", message)

    def _adopt(self, record: dict) -> None:
        """A record of the embedded queue: a running one is watched as there, a queued one sent to the workers."""
        if record["state"] == "running":
            self._check_running(record)
        elif record["state"] == "queued":
            record["queue"] = self.kind
            self._write(record)
            try:
                self._send(record["job_id"])
            except Exception as err:
                self._finish(record, "failed", f"could not queue the job: {err}")

    def _check_heartbeat(self, record: dict) -> None:
        job_id = record["job_id"]
        beat = (record.get("worker"), record.get("beats"), record.get("heartbeat"))
        now = time.monotonic()
        seen = self._seen.get(job_id)
        if seen is None or seen[0] != beat:
            self._seen[job_id] = (beat, now)
            return
        timeout = max(self.heartbeat_timeout, 3 * _number(record.get("heartbeat_interval")))
        silent = now - seen[1]
        if silent <= timeout:
            return
        self._seen.pop(job_id, None)
        worker = record.get("worker") or "(unknown)"
        run_dir = self.runs_dir / record["run"]
        try:
            stage = (runfolder.read_job(run_dir) or {}).get("stage")
        except RunFileError:
            stage = None
        if record.get("cancel_requested"):
            state, message = "cancelled", f"cancelled by the user (its worker {worker} stopped responding)"
        else:
            state = "failed"
            message = (f"worker {worker} stopped responding during {stage or 'start-up'} (no heartbeat for "
                       f"{silent:.0f} s: the worker was stopped or its machine lost); the job was not re-run, "
                       "nothing was saved" + (" beyond the trained model" if stage == "analysing" else ""))
        self._mark_job(run_dir, state, message)
        self._finish(record, state, message)

    def _refusal(self, job_id: str) -> str | None:
        """Why a worker could not take queued job ``job_id`` (its task ended, the record still says
        queued: e.g. the worker sees no such record), else None."""
        try:
            result = self.celery.AsyncResult(job_id)
            if result.state not in (REFUSED, "FAILURE"):
                return None
            answer = result.info
        except Exception:  # Redis unreachable right now: the next tick asks again
            return None
        if isinstance(answer, dict) and answer.get("refused"):
            return f"worker {answer.get('worker', '?')} could not take the job: {answer['refused']}"[:1000]
        return f"a worker could not take the job: {answer}"[:1000]

    def _signal_cancel(self, record: dict) -> None:
        """Cancels travel through the record and the CANCEL file (shared); a queued task is also revoked."""
        if record.get("queue") != self.kind:
            super()._signal_cancel(record)
        elif record["state"] == "cancelled":  # revoked from a thread: the queue's lock is held here
            threading.Thread(target=self._revoke, args=(record["job_id"],), daemon=True).start()

    def _revoke(self, job_id: str) -> None:
        try:
            self.celery.control.revoke(job_id)
        except Exception:  # the record already says cancelled: a worker that gets the task skips it
            pass

    # ---------------------------------------------------------------- worker
    def run_job(self, job_id, worker: str, interval: float = DEFAULT_HEARTBEAT_S) -> dict:
        """Run job ``job_id`` here, as worker ``worker``: start it if still queued, heartbeat, obey cancels.

        Returns what happened (the task's result).  A job that is not queued
        (cancelled before it started, or already taken) is not started.
        """
        if not isinstance(job_id, str) or not jobs.JOB_ID.match(job_id):
            return {"refused": "not a job id", "worker": worker}
        with self._locked():
            record = self.get(job_id)
            if record is None:
                return {"refused": f"no record of the job in {self.folder} on this worker: is the runs folder "
                                   "shared at the same path as on the web server?", "worker": worker}
            if record["state"] != "queued":
                return {"skipped": record["state"], "worker": worker}
            run_dir = self.runs_dir / record["run"]
            if not runfolder.RUN_NAME.match(record["run"]) or run_dir.is_symlink() or not run_dir.is_dir():
                message = f"worker {worker} finds no run folder {record['run']!r} under {self.runs_dir}"
                self._finish(record, "failed", message)
                return {"state": "failed", "worker": worker}
            now = time.time()
            record.update(state="running", started=now, worker=worker, heartbeat=now, beats=0,
                          heartbeat_interval=float(interval), message=f"started on {worker}")
            self._write(record)
        try:
            proc = start_job_process(run_dir)
        except OSError as err:
            message = f"worker {worker} could not start the job: {err}"
            self._settle(job_id, worker, lambda record: self._finish(record, "failed", message))
            return {"state": "failed", "worker": worker}
        error = None
        try:
            self._supervise(job_id, worker, proc, interval)
        except Exception as err:  # settle the job below, then let Celery record the error
            error = err
            raise
        finally:
            processes.kill_group(proc.pid, signal.SIGKILL)  # whatever is left of the job's group
            try:
                code = proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                code = None
            note = "" if code in (None, 0) else (f" (killed by signal {-code})" if code < 0 else f" (exit code {code})")
            if error is not None:
                note += f" (the worker's supervision failed: {type(error).__name__}: {error})"
            self._settle(job_id, worker, lambda record: self._conclude(record, note, where=f" on {worker}"))
        final = self.get(job_id) or {}
        return {"state": final.get("state"), "worker": worker}

    def _supervise(self, job_id: str, worker: str, proc: subprocess.Popen, interval: float) -> None:
        """Until the job's process ends: heartbeat into the record, end the job when it is cancelled
        (SIGTERM, then SIGKILL) or when the record is no longer this worker's (the server gave it up)."""
        cancelled_at = None
        while True:
            try:
                proc.wait(timeout=interval)
                return
            except subprocess.TimeoutExpired:
                pass
            try:
                with self._locked():
                    record = self.get(job_id)
                    if record is None:
                        continue  # unreadable for now; without heartbeats the server decides
                    if record["state"] != "running" or record.get("worker") != worker:
                        processes.kill_group(proc.pid, signal.SIGKILL)
                        proc.wait()
                        return
                    record.update(heartbeat=time.time(), beats=int(_number(record.get("beats"))) + 1)
                    self._write(record)
                    asked = record.get("cancel_requested")
            except OSError:
                continue  # the shared folder hiccupped: try again at the next beat
            if asked and cancelled_at is None:
                processes.kill_group(proc.pid, signal.SIGTERM)
                cancelled_at = time.monotonic()
            elif asked and time.monotonic() - cancelled_at > jobs.KILL_AFTER_S:
                processes.kill_group(proc.pid, signal.SIGKILL)

    def _settle(self, job_id: str, worker: str, conclude) -> None:
        """Apply ``conclude(record)`` if the job is still this worker's running job."""
        with self._locked():
            record = self.get(job_id)
            if record is not None and record["state"] == "running" and record.get("worker") == worker:
                conclude(record)


def start_job_process(run_dir: Path) -> subprocess.Popen:
    """``python -m app.worker job RUN_DIR`` in its own process group, killed when this process dies."""
    with open(run_dir / runfolder.LOG_FILE, "ab") as log:
        return subprocess.Popen(processes.python_command("app.worker", "job", run_dir), stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, cwd=str(processes.ROOT),
                                env=processes.child_env(), start_new_session=True, close_fds=True,
                                preexec_fn=functools.partial(processes.die_with_parent, signal.SIGKILL))


# --------------------------------------------------------------------- scmm-worker
def _pool_process_init(**_) -> None:
    """A pool process ends when its worker does (SIGKILL included): its job dies with it."""
    processes.exit_with_parent()


def callbacks_name(name: str) -> str:
    """The Celery node name of the background-callback worker beside job worker ``name``."""
    node, at, host = name.partition("@")
    return f"{node}-callbacks{at}{host}"


def main(argv: list[str] | None = None) -> int:
    """``scmm-worker --redis-url URL --runs-dir DIR --data-dir DIR [...]``: a Celery worker of the lab."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="scmm-worker", description="Run the trainings and background computations of an scmm-app "
        "started with --redis-url; the runs and data folders must be the app's, at the same paths.")
    parser.add_argument("--redis-url", default=os.environ.get("SCMM_REDIS_URL"),
                        help="the app's Redis, e.g. redis://web-host:6379/0 (default: $SCMM_REDIS_URL)")
    parser.add_argument("--runs-dir", default="runs", help="the app's runs folder (shared, same path)")
    parser.add_argument("--data-dir", default="data", help="the app's data folder (shared, same path)")
    parser.add_argument("--cache-dir", default=None, help="this worker's cache (default: temporary)")
    parser.add_argument("--concurrency", type=int, default=None,
                        help="trainings at a time on this worker (default: one per GPU, one without a GPU)")
    parser.add_argument("--work-slots", type=int, default=None,
                        help="background computations at a time (default: cores - 1, at most 4)")
    parser.add_argument("--name", default=None, help="the worker's name, shown in the app "
                        "(default: scmm@HOSTNAME)")
    parser.add_argument("--role", choices=ROLES, default="both",
                        help="jobs: trainings only; callbacks: the app's background computations only; "
                        "both (default): a job worker and a callback worker")
    parser.add_argument("--heartbeat-interval", type=float, default=DEFAULT_HEARTBEAT_S,
                        help=f"seconds between heartbeats of a running job (default {DEFAULT_HEARTBEAT_S:g})")
    parser.add_argument("--genome-fasta", default=None, help="as for scmm-app (the Chromatin page's analyses)")
    parser.add_argument("--genes", default=None, help="as for scmm-app")
    parser.add_argument("--loglevel", default="INFO")
    args = parser.parse_args(argv)
    if not args.redis_url:
        parser.error("--redis-url (or SCMM_REDIS_URL) is required: the Redis of the scmm-app to work for")
    for name in ("concurrency", "work_slots"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    if not args.heartbeat_interval > 0:
        parser.error(f"--heartbeat-interval must be positive, got {args.heartbeat_interval}")
    try:
        check_redis(args.redis_url)
    except QueueUnavailable as err:
        print(f"scmm-worker: {err}", file=sys.stderr, flush=True)
        return 2
    from app.main import create_app  # the same app as the server's: its background callbacks get registered
    try:
        dash_app = create_app(args.data_dir, args.runs_dir, args.cache_dir, write_demo=False, schedule=False,
                              work_slots=args.work_slots, redis_url=args.redis_url,
                              genome_fasta=args.genome_fasta, genes=args.genes)
    except (FileNotFoundError, QueueUnavailable) as err:
        parser.error(str(err))
    cfg = dash_app.scmm_config
    queue: CeleryJobQueue = cfg.queue
    name = args.name or f"scmm@{socket.gethostname()}"
    if "@" not in name:
        name = f"{name}@{socket.gethostname()}"
    common = ["--without-gossip", "--without-mingle", "-P", "prefork", "-l", args.loglevel]
    from celery.signals import worker_process_init
    worker_process_init.connect(_pool_process_init, weak=False)
    if args.role == "callbacks":
        return _run_worker(queue, ["worker", "-n", callbacks_name(name), "-Q", CALLBACK_QUEUE,
                                   "-c", str(cfg.work_slots), *common])
    global _WORKER
    _WORKER = (queue, float(args.heartbeat_interval))
    concurrency = args.concurrency or jobs.default_max_running()
    print(f"scmm-worker {name}: {concurrency} training(s) at a time from {safe_url(args.redis_url)}, "
          f"runs {cfg.runs_dir}, data {cfg.data_dir}", flush=True)
    helper = None
    if args.role == "both":  # the background callbacks in their own worker, so a training never blocks them
        rest = [a for a in argv if a != "--role" and not a.startswith("--role=")]
        rest = [a for i, a in enumerate(rest) if not (i and rest[i - 1] == "--role" and a in ROLES)]
        helper = subprocess.Popen(processes.python_command("app.celery_queue", *rest, "--name", name,
                                                           "--role", "callbacks"),
                                  cwd=str(processes.ROOT), preexec_fn=processes.die_with_parent)
    try:
        return _run_worker(queue, ["worker", "-n", name, "-Q", TRAIN_QUEUE, "-c", str(concurrency), *common])
    finally:
        if helper is not None and helper.poll() is None:
            helper.terminate()
            try:
                helper.wait(timeout=60)
            except subprocess.TimeoutExpired:
                helper.kill()


def _run_worker(queue: CeleryJobQueue, argv: list[str]) -> int:
    try:
        queue.celery.worker_main(argv)
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else 0
    return 0


if __name__ == "__main__":
    from app import celery_queue  # the package's module, not a second copy named __main__
    sys.exit(celery_queue.main())
