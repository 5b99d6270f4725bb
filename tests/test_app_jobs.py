"""Tests of the job interface (app/jobs.py) on run folders, without training a model."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from app import jobs


def write(path, payload):
    path.write_text(json.dumps(payload))


def test_train_command_carries_options(tmp_path):
    cmd = jobs.train_command("d.h5mu", tmp_path, {"preset": "cite", "epochs": 3, "lr": None,
                                                 "latent_dim": 8})
    assert cmd[1:4] == ["-m", "scmm", "train"]
    assert cmd[cmd.index("--epochs") + 1] == "3" and cmd[cmd.index("--latent-dim") + 1] == "8"
    assert "--lr" not in cmd
    assert cmd[cmd.index("--progress-file") + 1] == str(tmp_path / "progress.json")
    assert cmd[cmd.index("--cancel-file") + 1] == str(tmp_path / "CANCEL")


def test_cli_run_appears_with_its_progress(tmp_path):
    run = tmp_path / "cli-run"
    run.mkdir()
    history = [{"epoch": 1, "train_loss": 5.0, "test_loss": 6.0}]
    write(run / "progress.json", {"status": "running", "epoch": 1, "epochs": 4, "history": history,
                                  "pid": os.getpid(), "started": time.time()})
    state = jobs.progress(run)
    assert state["status"] == "training" and state["epoch"] == 1 and state["epochs"] == 4
    assert [r["run"] for r in jobs.list_runs(tmp_path)] == ["cli-run"]
    (tmp_path / "not-a-run").mkdir()
    assert len(jobs.list_runs(tmp_path)) == 1


def test_dead_process_reads_as_failed_or_cancelled(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    run = tmp_path / "r"
    run.mkdir()
    write(run / "progress.json", {"status": "running", "epoch": 0, "epochs": 2, "pid": proc.pid})
    assert jobs.progress(run)["status"] == "failed"
    (run / "CANCEL").touch()
    assert jobs.progress(run)["status"] == "cancelled"


def test_worker_stage_leads_progress(tmp_path):
    run = tmp_path / "job"
    run.mkdir()
    write(run / "job.json", {"stage": "training", "worker_pid": os.getpid(), "created": time.time(),
                             "data": "x.h5mu"})
    write(run / "progress.json", {"status": "done", "epoch": 2, "epochs": 2, "pid": os.getpid()})
    # training finished but the worker has not moved on yet: still in progress (analysis follows)
    assert jobs.progress(run)["status"] == "saving"
    write(run / "job.json", {"stage": "analysing", "worker_pid": os.getpid(), "message": "analysing: UMAP"})
    assert jobs.progress(run)["status"] == "analysing"
    write(run / "job.json", {"stage": "done", "worker_pid": 0})
    (run / "config.json").write_text(json.dumps({"history": [{"epoch": 1}, {"epoch": 2}]}))
    state = jobs.progress(run)
    assert state["status"] == "done" and state["has_model"]


def test_cancel_touches_file_and_signals(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        run = tmp_path / "r"
        run.mkdir()
        write(run / "job.json", {"stage": "training", "worker_pid": sleeper.pid, "created": time.time()})
        write(run / "progress.json", {"status": "running", "epoch": 1, "epochs": 9, "pid": sleeper.pid})
        assert jobs.cancel(run) is True
        assert (run / "CANCEL").exists()
        assert sleeper.wait(timeout=10) != 0  # SIGTERM reached the training process
        write(run / "job.json", {"stage": "cancelled"})
        assert jobs.cancel(run) is False
    finally:
        sleeper.kill()


def test_server_modules_do_not_import_torch():
    code = ("import sys, app.main, app.data_access, app.engine; "
            "app.engine.load_traversal('.'); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_job_is_detached_and_reports_a_read_error(tmp_path):
    import psutil
    bad = tmp_path / "bad.h5ad"
    bad.write_bytes(b"not hdf5")
    run = jobs.start(bad, tmp_path / "runs", {"epochs": 1})
    spec = json.loads((tmp_path / "runs" / os.path.basename(run) / "job.json").read_text())
    children = {p.pid for p in psutil.Process().children(recursive=True)}
    assert spec.get("worker_pid") and spec["worker_pid"] not in children  # survives the server
    state = jobs.wait(run, timeout=120)
    assert state["status"] == "failed"
    assert "bad.h5ad" in state["message"] or "scmm" in state["message"]
