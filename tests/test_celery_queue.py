"""Jobs on a real queue (app/celery_queue.py): a real Redis server, a real ``scmm-worker``, the app in between.

A session fixture starts Debian's ``redis-server`` on a free port (no
persistence); a module fixture builds the app with ``redis_url`` (its Train
page and its queue object, served over HTTP on a free port) and starts
``scmm-worker`` as a subprocess, as a lab would on its GPU server.  The jobs
are short real trainings of a 300-cell demo; the worker is SIGKILLed mid-job
in the last test.  Everything is torn down even when a test fails.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
from live_server import DashClient, free_port, wait_for

import scmm.demo
from app import celery_queue, jobs
from scmm import runfolder
from scmm.settings import Settings

REDIS_SERVER = shutil.which("redis-server") or next(
    (p for p in ("/usr/bin/redis-server", "/usr/sbin/redis-server") if Path(p).is_file()), None)
HEARTBEAT_S = 0.5      # the worker's --heartbeat-interval
TIMEOUT_S = 5.0        # the app's heartbeat timeout
WORKER = "pytest-gpu@lab"
#: a few seconds of training: 300 cells, 100 genes, no warm-up, no analysis
FAST = dict(n_top_genes=100, batch_size=64, min_steps=1, warmup_steps=0)


def text(value) -> str:
    return json.dumps(value)


def processes_of(run_dir: Path) -> list[psutil.Process]:
    """Live processes whose command line names ``run_dir`` (the job's worker and its training)."""
    out = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        try:
            if proc.info["status"] != psutil.STATUS_ZOMBIE and \
                    any(str(run_dir) in part for part in (proc.info["cmdline"] or [])):
                out.append(proc)
        except psutil.Error:
            continue
    return out


# ------------------------------------------------------------------ fixtures
@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    """A real Redis on a free port of 127.0.0.1, in a temporary folder, without persistence."""
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed: the Celery queue tests need Debian's redis-server "
                    "(apt-get install redis-server, as .ci/run does)")
    import redis
    folder = tmp_path_factory.mktemp("redis")
    port = free_port()
    with open(folder / "redis.log", "ab") as log:
        proc = subprocess.Popen([REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                 "--appendonly", "no", "--dir", str(folder)],
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"redis://127.0.0.1:{port}/0"

    def answers():
        try:
            return redis.Redis.from_url(url, socket_connect_timeout=1).ping()
        except redis.RedisError:
            return proc.poll() is not None  # stop waiting: it exited

    try:
        assert wait_for(answers, timeout=30) and proc.poll() is None, \
            (folder / "redis.log").read_text(errors="replace")[-2000:]
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Worker:
    """``scmm-worker`` as a lab starts it on its GPU server, in its own process group."""

    def __init__(self, redis_url: str, data: Path, runs: Path, root: Path):
        script = Path(sys.executable).parent / "scmm-worker"
        launcher = [str(script)] if script.is_file() else [sys.executable, "-m", "app.celery_queue"]
        self.cmd = [*launcher, "--redis-url", redis_url, "--runs-dir", str(runs), "--data-dir", str(data),
                    "--cache-dir", str(root / "worker-cache"), "--name", WORKER, "--concurrency", "1",
                    "--work-slots", "1", "--heartbeat-interval", str(HEARTBEAT_S), "--loglevel", "WARNING"]
        self.log = root / "worker.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.cmd, stdout=log, stderr=subprocess.STDOUT, cwd=str(self.log.parent),
                                         start_new_session=True)

    def wait_ready(self, queue: celery_queue.CeleryJobQueue) -> None:
        """Both Celery nodes (jobs, callbacks) answer a ping."""
        want = {WORKER, celery_queue.callbacks_name(WORKER)}

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"scmm-worker exited: {self.tail()}")
            answers = queue.celery.control.ping(destination=sorted(want), timeout=0.5)
            return want <= {name for answer in answers for name in answer}

        assert wait_for(ready, timeout=180, poll=0.5), f"scmm-worker did not start: {self.tail()}"

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""

    def kill(self) -> None:
        """SIGKILL to the worker's whole process group: both Celery nodes and their pool processes."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=20)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            pass
        self.kill()


@pytest.fixture(scope="module")
def lab(redis_url, tmp_path_factory):
    """The app over Redis (queue object, Train page over HTTP), and one scmm-worker sharing its folders."""
    from dash.background_callback.managers import BaseBackgroundCallbackManager
    from werkzeug.serving import make_server

    from app.main import create_app

    root = tmp_path_factory.mktemp("lab")
    data, runs = root / "data", root / "runs"
    demo = scmm.demo.write_demo(data / "demo.h5mu", n_cells=300, seed=0)
    worker = Worker(redis_url, data, runs, root)
    stop, app, server = threading.Event(), None, None
    worker.start()  # it starts (imports, builds the app) while this process builds its own
    try:
        app = create_app(data, runs, root / "cache", write_demo=False, schedule=False, work_slots=1,
                         redis_url=redis_url, heartbeat_timeout=TIMEOUT_S)
        queue = app.scmm_config.queue
        threading.Thread(target=queue.run_forever, args=(0.25, stop), daemon=True).start()
        port = free_port()
        server = make_server("127.0.0.1", port, app.server, threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        worker.wait_ready(queue)
        client = DashClient(f"http://127.0.0.1:{port}", timeout=120)
        yield {"app": app, "queue": queue, "client": client, "worker": worker, "demo": demo.resolve(),
               "runs": runs.resolve(), "redis_url": redis_url}
    finally:
        worker.stop()
        stop.set()
        if server is not None:
            server.shutdown()
        for proc in processes_of(runs.resolve()):  # a job left behind by a failed test (ours, by pid)
            try:
                proc.kill()
            except psutil.Error:
                pass
        manager = getattr(app, "_background_manager", None)
        if manager in BaseBackgroundCallbackManager.managers:  # later apps of this session register elsewhere
            BaseBackgroundCallbackManager.managers.remove(manager)


def follow(client: DashClient, job_id: str) -> dict:
    """The Train page's monitor of job ``job_id`` (stage line, status, Cancel enabled)."""
    return client.call("train-stage.children", {"train-poll.n_intervals": 1, "train-active.data": job_id},
                       trigger="train-poll.n_intervals")


def submit(lab, epochs: int) -> dict:
    return lab["queue"].submit(lab["demo"], "demo.h5mu", Settings(epochs=epochs, **FAST), analyze=False)


def started(lab, job_id: str):
    """The record once the job runs and its training process is up."""
    queue = lab["queue"]

    def check():
        record = queue.get(job_id)
        if record["state"] in jobs.TERMINAL:
            raise AssertionError(f"the job ended before it was seen running: {record}")
        run_dir = lab["runs"] / record["run"]
        training = [p for p in processes_of(run_dir) if "train" in p.info["cmdline"]]
        return record if record["state"] == "running" and training else None

    return wait_for(check, timeout=120)


# ------------------------------------------------------------------ tests
def test_without_a_redis_url_nothing_changes_and_nothing_is_imported(tmp_path):
    code = ("import sys, app.main; a = app.main.create_app('d', 'r', 'c', write_demo=False, schedule=False); "
            "print(type(a.scmm_config.queue).__name__, type(a._background_manager).__name__, "
            "[m for m in ('celery', 'kombu', 'redis') if m in sys.modules])")
    env = {k: v for k, v in os.environ.items() if k != "SCMM_REDIS_URL"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=tmp_path, env=env)
    assert out.stdout.strip() == "JobQueue DiskcacheManager []"


def test_an_unreachable_redis_is_named_at_start(tmp_path, capsys):
    from app import main as app_main
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    folders = ["--data-dir", str(tmp_path / "d"), "--runs-dir", str(tmp_path / "r"), "--cache-dir", str(tmp_path / "c")]
    assert app_main.main(["--redis-url", url, *folders]) == 2
    assert celery_queue.main(["--redis-url", url, *folders]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all("cannot reach Redis at redis://:***@127.0.0.1:" in line for line in err), err
    assert err[0].startswith("scmm-app:") and err[1].startswith("scmm-worker:")
    assert not (tmp_path / "d").exists()  # refused before anything was written
    # Redis gone after start: Train says why, and the job is failed rather than left queued
    queue = celery_queue.CeleryJobQueue(tmp_path / "runs", url)
    with pytest.raises(OSError, match=r"could not queue the job: Redis at redis://:\*\*\*@127\.0\.0\.1:"):
        queue.submit(tmp_path / "a.h5mu", "a.h5mu", Settings(epochs=1))
    [record] = queue.records()
    assert record["state"] == "failed" and "hunter2" not in json.dumps(record)
    assert runfolder.read_job(tmp_path / "runs" / record["run"])["stage"] == "failed"


def test_a_job_runs_on_the_worker_with_its_place_its_worker_and_a_queued_cancel(lab):
    """Submit, queue position, worker name, cancel while queued (through the Train page), done."""
    import redis
    client, queue = lab["client"], lab["queue"]
    first = submit(lab, epochs=2)
    record = wait_for(lambda: (lambda r: r if r["state"] != "queued" else None)(queue.get(first["job_id"])),
                      timeout=120)
    assert record["state"] == "running" and record["worker"] == WORKER, record
    assert wait_for(lambda: f"on {WORKER}" in text(follow(client, first["job_id"])), timeout=30)

    # the Train page submits a second job: it waits, first in line, in Redis (not reserved by the busy worker)
    form = {"train-data.value": "demo.h5mu", "train-preset.value": "", "train-latent.value": 4,
            "train-epochs.value": 300, "train-lr.value": None}
    answer = client.call("train-active.data", {"train-start.n_clicks": 1}, form)
    second = answer["train-active.data"]
    assert jobs.JOB_ID.match(second) and "submitted" in text(answer)
    assert queue.get(first["job_id"])["state"] == "running", "the first job ended too soon to test a queue"
    assert queue.get(second)["state"] == "queued" and queue.position(second) == 1
    assert "queued (#1)" in text(follow(client, second))
    assert redis.Redis.from_url(lab["redis_url"]).llen(celery_queue.TRAIN_QUEUE) == 1

    answer = client.call("train-cancel-msg.children", {"train-cancel.n_clicks": 1}, {"train-active.data": second},
                         trigger="train-cancel.n_clicks")
    assert "removed" in text(answer) and queue.get(second)["state"] == "cancelled"

    done = queue.wait(first["job_id"], timeout=180)
    assert done["state"] == "done" and done["message"] == "trained", done
    run_dir = lab["runs"] / done["run"]
    assert all((run_dir / name).is_file() for name in (runfolder.CONFIG_FILE, runfolder.WEIGHTS_FILE,
                                                       runfolder.RESULTS_FILE))
    assert "finished" in text(follow(client, first["job_id"]))
    # the cancelled job never ran, even though its task reached the worker (revoked, or skipped there)
    time.sleep(2 * HEARTBEAT_S)
    cancelled = queue.get(second)
    assert cancelled["state"] == "cancelled" and cancelled.get("worker") is None
    assert runfolder.read_job(lab["runs"] / cancelled["run"])["stage"] == "cancelled"
    assert not (lab["runs"] / cancelled["run"] / runfolder.CONFIG_FILE).exists()


def test_a_background_callback_runs_on_the_worker(lab):
    """Dash's CeleryManager: the Embeddings page's ranking is computed by the worker's callback node."""
    answer = lab["client"].call("sel-table.children", {"sel-rank.n_clicks": 1},
                                {"emb-run.data": "no-such-run", "sel-current.data": []})
    assert "Select at least 2 cells" in text(answer)


def test_cancel_a_running_job_on_the_worker(lab):
    client, queue = lab["client"], lab["queue"]
    job = submit(lab, epochs=400)
    record = started(lab, job["job_id"])
    assert record, queue.get(job["job_id"])
    answer = client.call("train-cancel-msg.children", {"train-cancel.n_clicks": 1},
                         {"train-active.data": job["job_id"]}, trigger="train-cancel.n_clicks")
    assert "cancelling" in text(answer)
    final = queue.wait(job["job_id"], timeout=jobs.KILL_AFTER_S + 30)
    assert final["state"] == "cancelled", final
    run_dir = lab["runs"] / final["run"]
    assert wait_for(lambda: not processes_of(run_dir), timeout=20), processes_of(run_dir)
    assert not (run_dir / runfolder.CONFIG_FILE).exists()


def test_only_ids_the_server_issued_name_a_job(lab):
    queue = lab["queue"]
    before = queue.records()
    known = [r["job_id"] for r in before] or ["0" * 16]
    for hostile in ("../x", "0" * 16, str(os.getpid()), None, 7, {"job_id": known[0]}, [known[0]]):
        assert queue.cancel(hostile) == "unknown job"
        assert queue.run_job(hostile, "intruder@x", HEARTBEAT_S).get("refused")  # a forged task starts nothing
    assert queue.records() == before
    # a task for a job the worker has no record of: it starts nothing and says so, naming itself
    forged = "0123456789abcdef"
    queue._send(forged)
    refusal = wait_for(lambda: queue._refusal(forged), timeout=30)
    assert refusal and WORKER in refusal and "no record of the job" in refusal
    assert queue.records() == before


def test_a_killed_worker_fails_its_job_naming_it_and_leaves_no_orphan(lab):
    """SIGKILL to the worker and its pool mid-training: the job fails within the heartbeat timeout."""
    client, queue, worker = lab["client"], lab["queue"], lab["worker"]
    job = submit(lab, epochs=400)
    record = started(lab, job["job_id"])
    assert record and record["worker"] == WORKER, queue.get(job["job_id"])
    run_dir = lab["runs"] / record["run"]
    assert len(processes_of(run_dir)) >= 2  # the job's worker process and its training
    time.sleep(3 * HEARTBEAT_S)
    worker.kill()
    killed = time.time()
    final = wait_for(lambda: (lambda r: r if r["state"] != "running" else None)(queue.get(job["job_id"])),
                     timeout=TIMEOUT_S + 20, poll=0.1)
    assert final and final["state"] == "failed", final or queue.get(job["job_id"])
    assert time.time() - killed < TIMEOUT_S + 5
    assert WORKER in final["message"] and "during training" in final["message"], final["message"]
    assert wait_for(lambda: not processes_of(run_dir), timeout=20), \
        [p.info["cmdline"] for p in processes_of(run_dir)]
    assert runfolder.read_job(run_dir)["stage"] == "failed"
    shown = follow(client, job["job_id"])
    assert "failed" in text(shown) and WORKER in text(shown)
    assert not (run_dir / runfolder.CONFIG_FILE).exists()
