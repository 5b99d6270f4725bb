"""Tests of the job queue and run-state reading (app/jobs.py), with stand-in workers (no training)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from app import jobs, processes
from scmm import runfolder
from scmm.settings import Settings


def write(path, payload):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(payload if isinstance(payload, str) else json.dumps(payload))


#: a stand-in worker: starts a grandchild in its group, then sleeps
SLEEPER = ("import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); "
           "time.sleep(120)")


@pytest.fixture
def fake_worker(monkeypatch):
    """Jobs run a sleeping stand-in instead of ``app.worker job`` (records which pids it started)."""
    started = []
    real = processes.spawn_session

    def spawn(cmd, log_path):
        proc = real([sys.executable, "-c", SLEEPER], log_path)
        started.append(proc)
        return proc

    monkeypatch.setattr(processes, "spawn_session", spawn)
    yield started
    for proc in started:
        processes.kill_group(proc.pid, signal.SIGKILL)


def group_members(pgid):
    out = []
    for proc in psutil.process_iter(["pid", "status"]):
        try:
            if os.getpgid(proc.info["pid"]) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                out.append(proc.info["pid"])
        except OSError:
            continue
    return out


def wait_for(predicate, timeout=20.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_cli_run_appears_with_its_progress(tmp_path):
    history = [{"epoch": 1, "train_loss": 5.0, "test_loss": 6.0}]
    write(tmp_path / "cli-run" / "progress.json", {"status": "running", "epoch": 1, "epochs": 4,
                                                   "history": history, "started": time.time()})
    state = jobs.progress(tmp_path / "cli-run")
    assert state["status"] == "training" and state["epoch"] == 1 and state["epochs"] == 4
    (tmp_path / "not-a-run").mkdir()
    assert [r["run"] for r in jobs.list_runs(tmp_path)] == ["cli-run"]


@pytest.mark.parametrize("name, content", [
    ("job.json", "[1, 2]"),
    ("job.json", '{"stage": "training", "created": "yesterday"}'),
    ("job.json", '{"stage": "hacked"}'),
    ("progress.json", '{"status": "running", "epoch": "three"}'),
    ("progress.json", '{"status": "running", "epoch": NaN}'),
    ("progress.json", "not json"),
    ("progress.json", b"\xff\xfe"),
    ("config.json", "[" * 100_000 + "]" * 100_000),
    ("config.json", json.dumps({"latent_dim": 10, "specs": [{"hidden": [200_000]}]})),
])
def test_a_malformed_file_makes_one_run_unreadable_and_no_other(tmp_path, name, content):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    write(tmp_path / "good" / "progress.json", {"status": "done", "epoch": 2, "epochs": 2})
    runs = {r["run"]: r for r in jobs.list_runs(tmp_path)}
    assert runs["good"]["status"] == "done"
    assert runs["bad"]["status"] == "unreadable" and name in runs["bad"]["message"]


def test_queue_runs_one_at_a_time_in_order_and_tells_the_place(tmp_path, fake_worker):
    queue = jobs.JobQueue(tmp_path / "runs", max_running=1)
    first = queue.submit(tmp_path / "a.h5mu", "a.h5mu", Settings(epochs=1))
    second = queue.submit(tmp_path / "b.h5mu", "b.h5mu", Settings(epochs=1))
    third = queue.submit(tmp_path / "c.h5mu", "c.h5mu", Settings(epochs=1))
    states = {r["job_id"]: r["state"] for r in queue.records()}
    assert [states[j["job_id"]] for j in (first, second, third)] == ["running", "queued", "queued"]
    assert queue.position(second["job_id"]) == 1 and queue.position(third["job_id"]) == 2
    listed = {r["run"]: r for r in jobs.list_runs(tmp_path / "runs", queue)}
    assert listed[third["run"]]["status"] == "queued" and listed[third["run"]]["position"] == 2
    assert queue.cancel(second["job_id"]).startswith("removed")
    assert queue.cancel(first["job_id"]).startswith("cancelling")
    assert wait_for(lambda: (queue.tick() or queue.get(third["job_id"])["state"] == "running"))
    assert queue.get(first["job_id"])["state"] == "cancelled"
    assert queue.get(second["job_id"])["state"] == "cancelled"
    assert runfolder.read_job(tmp_path / "runs" / second["run"])["stage"] == "cancelled"


def test_the_same_request_twice_is_one_job(tmp_path, fake_worker):
    queue = jobs.JobQueue(tmp_path / "runs", max_running=1)
    one = queue.submit(tmp_path / "a.h5mu", "a.h5mu", Settings(epochs=3))
    two = queue.submit(tmp_path / "a.h5mu", "a.h5mu", Settings(epochs=3))
    assert two["job_id"] == one["job_id"] and two["duplicate"]
    assert len(queue.records()) == 1 and len(fake_worker) == 1


def test_cancel_ends_the_whole_process_group_and_only_known_jobs(tmp_path, fake_worker):
    queue = jobs.JobQueue(tmp_path / "runs", max_running=1)
    job = queue.submit(tmp_path / "a.h5mu", "a.h5mu", Settings())
    pgid = fake_worker[0].pid
    assert wait_for(lambda: len(group_members(pgid)) == 2)
    for hostile in ("../x", str(pgid), "0" * 16, None, 12, {"job_id": job["job_id"]}):
        assert queue.cancel(hostile) == "unknown job"
    assert group_members(pgid)  # nothing was signalled
    queue.cancel(job["job_id"])
    assert wait_for(lambda: not group_members(pgid))
    assert wait_for(lambda: queue.tick() or queue.get(job["job_id"])["state"] == "cancelled")


def test_a_killed_worker_fails_the_job_and_leaves_no_orphan(tmp_path, fake_worker):
    queue = jobs.JobQueue(tmp_path / "runs", max_running=1)
    job = queue.submit(tmp_path / "a.h5mu", "a.h5mu", Settings())
    pgid = fake_worker[0].pid
    assert wait_for(lambda: len(group_members(pgid)) == 2)
    os.kill(pgid, signal.SIGKILL)
    assert wait_for(lambda: queue.tick() or queue.get(job["job_id"])["state"] == "failed")
    record = queue.get(job["job_id"])
    assert "stopped unexpectedly" in record["message"] and "signal 9" in record["message"]
    assert wait_for(lambda: not group_members(pgid))  # the grandchild went with it
    state = jobs.progress(tmp_path / "runs" / job["run"], record)
    assert state["status"] == "failed"


def test_a_restarted_server_reattaches_to_running_jobs(tmp_path, fake_worker):
    queue = jobs.JobQueue(tmp_path / "runs", max_running=1)
    job = queue.submit(tmp_path / "a.h5mu", "a.h5mu", Settings())
    queued = queue.submit(tmp_path / "b.h5mu", "b.h5mu", Settings())
    restarted = jobs.JobQueue(tmp_path / "runs", max_running=1)
    restarted.tick()
    assert restarted.get(job["job_id"])["state"] == "running"
    assert restarted.get(queued["job_id"])["state"] == "queued"
    restarted.cancel(job["job_id"])
    assert wait_for(lambda: not group_members(fake_worker[0].pid))
    assert wait_for(lambda: restarted.tick() or restarted.get(queued["job_id"])["state"] == "running")


def test_a_read_only_runs_folder_is_refused_before_anything_starts(tmp_path, fake_worker, monkeypatch):
    queue = jobs.JobQueue(tmp_path / "runs", max_running=1)

    def refuse(folder, need_bytes=0):
        raise OSError(f"cannot write to {folder}: Read-only file system")

    monkeypatch.setattr(runfolder, "check_writable", refuse)
    with pytest.raises(OSError, match="Read-only"):
        queue.submit(tmp_path / "a.h5mu", "a.h5mu", Settings())
    assert queue.records() == [] and fake_worker == []


def test_a_real_job_reports_the_readers_error(tmp_path):
    bad = tmp_path / "bad.h5ad"
    bad.write_bytes(b"not hdf5")
    queue = jobs.JobQueue(tmp_path / "runs", max_running=1)
    job = queue.submit(bad, "bad.h5ad", Settings(epochs=1))
    record = queue.wait(job["job_id"], timeout=120)
    assert record["state"] == "failed"
    assert "bad.h5ad" in record["message"]
    worker = psutil.Process().children(recursive=True)
    assert all(p.pid != record["pid"] for p in worker)


def test_server_modules_do_not_import_torch(tmp_path):
    code = ("import sys, app.main, app.data_access, app.jobs, scmm.runfolder, scmm.tl; "
            "app.main.create_app('d', 'r', 'c', write_demo=False, schedule=False); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=tmp_path)
    assert out.stdout.strip() == "False"
