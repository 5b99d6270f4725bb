"""Attacks on a real running ``scmm-app`` (waitress, its own process) over plain HTTP.

Each test plays a hostile or careless client: it posts callbacks with values
no page would send (paths, pids, ``..``, NUL bytes, huge numbers), uploads
what it should not, breaks run folders, kills processes, and asserts the
safe outcome.  See also tests/test_cli_safety.py for the command line.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import psutil
import pytest
import requests

import synthetic_run
from live_server import DashClient, declared_upload, free_port, start_server, stop_server, wait_for

UPLOAD_MB = 5


def start(folder: Path, port: int) -> subprocess.Popen:
    return start_server(folder / "data", folder / "runs", folder / "cache", port,
                        folder / f"server-{port}.log", "--max-upload-mb", UPLOAD_MB)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("attack")
    synthetic_run.make_run(folder / "runs" / "syn", n_cells=300, n_genes=40)
    port = free_port()
    proc = start(folder, port)
    yield {"url": f"http://127.0.0.1:{port}", "folder": folder, "proc": proc,
           "client": DashClient(f"http://127.0.0.1:{port}")}
    stop_server(proc)
    for pid in queue_pids(folder / "runs"):
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def queue_pids(runs: Path) -> list[int]:
    out = []
    for path in (runs / ".scmm-jobs").glob("*.json"):
        pid = json.loads(path.read_text()).get("pid")
        if pid:
            out.append(pid)
    return out


def files_under(folder: Path) -> set[str]:
    """Every path in the server's data and runs folders (its cache is its own business)."""
    return {str(p) for sub in ("data", "runs") for p in (folder / sub).rglob("*")}


def text(value) -> str:
    return json.dumps(value)


def upload(url, name, body, headers=None):
    return requests.post(f"{url}/upload", data=body, timeout=60,
                         headers={"X-Requested-With": "scmm-upload", "X-File-Name": name, **(headers or {})})


# ------------------------------------------------------------------ identity
def test_cancel_never_signals_a_process_named_by_the_client(server):
    """The old attack: an upload named progress.json with a pid, then Cancel on that folder."""
    victim = subprocess.Popen(["sleep", "60"])
    try:
        forged = json.dumps({"status": "running", "pid": victim.pid}).encode()
        assert upload(server["url"], "progress.json", forged).status_code == 400
        evil = server["folder"] / "runs" / "evil"
        evil.mkdir()
        (evil / "progress.json").write_bytes(forged)
        (evil / "job.json").write_text(json.dumps({"stage": "training", "worker_pid": victim.pid}))
        for value in (str(evil), "evil", victim.pid, str(victim.pid), "../evil", {"job_id": "x"},
                      "0123456789abcdef", "a\x00b", "x" * 10_000):
            out = server["client"].call("train-cancel-msg.children", {"train-cancel.n_clicks": 1},
                                        {"train-active.data": value}, trigger="train-cancel.n_clicks")
            assert out["train-cancel-msg.children"] == "unknown job"
        time.sleep(0.5)
        assert victim.poll() is None  # never signalled
    finally:
        victim.kill()
        shutil.rmtree(server["folder"] / "runs" / "evil", ignore_errors=True)


# --------------------------------------------------------------- confinement
@pytest.mark.parametrize("value", ["/etc/passwd", "../../../../etc/passwd", "/nonexistent/file.h5ad",
                                   "demo.h5mu\x00.txt", "x" * 5000, "uploads/../../runs/syn/results.h5mu",
                                   ["demo.h5mu"], {"path": "/etc"}])
def test_the_dataset_picker_reads_only_listed_datasets(server, value):
    out = server["client"].call("data-summary.children", {"data-select.value": value})
    assert "is not a dataset of this server" in text(out)
    assert "root:" not in text(out)


def test_an_existing_and_a_missing_path_get_the_same_answer(server):
    answers = [text(server["client"].call("data-summary.children", {"data-select.value": p}))
               for p in ("/etc/hostname", "/etc/no-such-file")]
    assert answers[0].replace("hostname", "X") == answers[1].replace("no-such-file", "X")


def test_uploads_get_server_chosen_names_and_a_size_limit(server):
    url, data = server["url"], server["folder"] / "data"
    before = files_under(server["folder"])
    resp = upload(url, "..%2F..%2Fruns%2Fevil%20name.h5ad", b"\x89HDF-not-really" * 100)
    assert resp.status_code == 200, resp.text
    stored = resp.json()["id"]
    assert stored.startswith("uploads/") and "evil" not in stored and ".." not in stored
    new = files_under(server["folder"]) - before
    assert all(p.startswith(str(data / "uploads")) for p in new)
    listed = server["client"].call("data-select.options", {"upload-result.data": resp.json()})
    assert listed["data-select.value"] == stored and "evil name.h5ad" in text(listed)
    # the summary of a corrupt upload is the reader's error, not a crash
    summary = server["client"].call("data-summary.children", {"data-select.value": stored})
    assert "Cannot read" in text(summary)
    # too large: refused from the declared size, before anything is read or stored
    rss = psutil.Process(server["proc"].pid).memory_info().rss
    status = declared_upload(url, 250 * 2 ** 20)
    assert status.startswith("HTTP/1.1 413")
    assert psutil.Process(server["proc"].pid).memory_info().rss - rss < 50 * 2 ** 20
    over = upload(url, "over.h5mu", b"x" * (UPLOAD_MB * 2 ** 20 + 1))
    assert over.status_code == 413
    assert upload(url, "notes.txt", b"x").status_code == 400
    assert requests.post(f"{url}/upload", data=b"x", timeout=10,
                         headers={"X-File-Name": "a.h5ad"}).status_code == 400  # not from the page
    assert files_under(server["folder"]) - before == new  # nothing else was stored
    # a forged upload result naming a path is not selected
    forged = server["client"].call("data-select.options", {"upload-result.data": {"ok": True, "id": "/etc/passwd"}})
    assert "not in the data folder" in text(forged)


def test_requests_other_than_uploads_are_bounded(server):
    resp = requests.post(f"{server['url']}/_dash-update-component", data=b"x" * (40 * 2 ** 20),
                         headers={"Content-Type": "application/json"}, timeout=60)
    assert resp.status_code == 413


def test_exports_are_rebuilt_on_the_server_from_its_own_data(server):
    client = server["client"]
    for cb in client.callbacks:  # no callback takes a figure from the browser
        assert all(s["property"] != "figure" for s in cb["state"])
    out = client.call('{"g":"embedding","role":"download"}.data', {'{"g":"embedding","role":"export-svg"}.n_clicks': 1},
                      {"emb-run.data": "../../etc", "emb-key.value": "joint", "emb-colour.value": "obs:x"},
                      trigger='{"g":"embedding","role":"export-svg"}.n_clicks')
    assert out['{"g":"embedding","role":"export-msg"}.children'] == "nothing to export yet"
    out = client.call('{"g":"embedding","role":"download"}.data', {'{"g":"embedding","role":"export-png"}.n_clicks': 1},
                      {"emb-run.data": "syn", "emb-key.value": "joint", "emb-colour.value": "feat:rna:../../G0001"},
                      trigger='{"g":"embedding","role":"export-png"}.n_clicks')
    download = out['{"g":"embedding","role":"download"}.data']
    assert download["filename"].endswith(".png") and "/" not in download["filename"]
    assert not download["filename"].startswith(".")
    import base64
    assert base64.b64decode(download["content"])[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("target", ["../../../../tmp/scmm-evil", "prot/../../x", "rna\x00", "atac"])
def test_query_prediction_names_cannot_leave_the_run(server, target):
    before = files_under(server["folder"])
    out = server["client"].call("gen-query-status.children", {"gen-query-run.n_clicks": 1},
                                {"gen-query.value": "demo.h5mu", "gen-query-source.value": "rna",
                                 "gen-query-target.value": target, "gen-run.data": "syn"})
    assert "modalities must be among" in text(out)
    assert files_under(server["folder"]) == before
    assert not Path("/tmp/scmm-evil").exists()


@pytest.mark.parametrize("run", ["../../etc", "/etc", "syn/../syn", "a\x00b", "x" * 300, "", None, 7, ["syn"]])
def test_any_run_id_renders_a_page(server, run):
    for page in ("/embeddings", "/traversal", "/generation", "/train", "/data"):
        out = server["client"].call("page.children", {"url.pathname": page, "run-select.value": None},
                                    {"url.search": "?" + "run=" + str(run)})
        assert "page.children" in out


def test_hostile_selections_and_features_are_refused(server):
    client = server["client"]
    for cells in ([10 ** 9, 1], [-1, 2], ["a", "b"], {"x": 1}, [1.5, 2.5]):
        out = client.call("sel-table.children", {"sel-rank.n_clicks": 1},
                          {"sel-current.data": cells, "sel-mod.value": "rna", "emb-run.data": "syn"})
        assert "Ranking failed" in text(out) or "Select at least 2" in text(out)
    out = client.call("sel-table.children", {"sel-rank.n_clicks": 1},
                      {"sel-current.data": [0, 1, 2], "sel-mod.value": "../x", "emb-run.data": "syn"})
    assert "unknown modality" in text(out)


# ------------------------------------------------------------ tolerant reading
@pytest.mark.parametrize("name, content", [
    ("job.json", "[1, 2]"), ("progress.json", '{"status": "running", "epoch": "three"}'),
    ("progress.json", "\"a string\""), ("job.json", '{"stage": "done", "created": "yesterday"}'),
    ("config.json", "[" * 100_000 + "]" * 100_000),
    ("config.json", json.dumps({"latent_dim": 10, "specs": [{"name": "rna", "hidden": [200000]}] * 2})),
])
def test_one_malformed_run_file_takes_no_page_down(server, name, content):
    bad = server["folder"] / "runs" / "broken"
    bad.mkdir(exist_ok=True)
    (bad / name).write_text(content)
    try:
        client = server["client"]
        for page in ("/data", "/train", "/embeddings", "/traversal", "/generation"):
            out = client.call("page.children", {"url.pathname": page}, {"url.search": "?run=broken"})
            assert "page.children" in out
        table = client.call("train-runs.children", {"train-runs-refresh.n_intervals": 1})
        assert "unreadable" in text(table) and name in text(table) and "syn" in text(table)
        picker = client.call("run-select.options", {"runs-refresh.n_intervals": 1})
        assert [o["value"] for o in picker["run-select.options"]] == ["syn"]
    finally:
        shutil.rmtree(bad)


# ------------------------------------------------------------------- options
@pytest.mark.parametrize("field, value, message", [
    ("train-epochs.value", -5, "Epochs must be an integer in [1, 100000]"),
    ("train-epochs.value", 1e308, "Epochs must be an integer"),
    ("train-latent.value", 0, "Latent size must be an integer in [1, 256]"),
    ("train-lr.value", "abc", "Learning rate must be a number in (0, 10]"),
    ("train-preset.value", "../cite", "Preset must be one of"),
])
def test_bad_training_options_are_refused_and_nothing_is_queued(server, field, value, message):
    runs = set(os.listdir(server["folder"] / "runs"))
    state = {"train-data.value": "demo.h5mu", "train-preset.value": "", "train-latent.value": 10,
             "train-epochs.value": 1, "train-lr.value": None, field: value}
    out = server["client"].call("train-active.data", {"train-start.n_clicks": 1}, state)
    assert message in text(out)
    assert set(os.listdir(server["folder"] / "runs")) == runs


def test_a_training_path_is_not_a_dataset(server):
    state = {"train-data.value": str(server["folder"] / "data" / "demo.h5mu"), "train-latent.value": 10}
    out = server["client"].call("train-active.data", {"train-start.n_clicks": 1}, state)
    assert "Pick a dataset of the data folder" in text(out)


# ---------------------------------------------------------------------- limits
def test_concurrent_summaries_run_in_bounded_slots_and_failures_are_cached(server):
    ids = []
    for i in range(5):
        resp = upload(server["url"], f"corrupt{i}.h5ad", f"not hdf5 {i}".encode())
        ids.append(resp.json()["id"])
    peak = {"n": 0}
    done = threading.Event()

    def sample():
        server_proc = psutil.Process(server["proc"].pid)
        while not done.is_set():
            try:
                kids = [p for p in server_proc.children(recursive=True)
                        if "app.worker" in " ".join(p.cmdline())]
            except psutil.Error:
                kids = []
            peak["n"] = max(peak["n"], len(kids))
            time.sleep(0.05)

    watcher = threading.Thread(target=sample)
    watcher.start()
    answers = []
    threads = [threading.Thread(target=lambda i=i: answers.append(server["client"].call(
        "data-summary.children", {"data-select.value": i}))) for i in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    watcher.join()
    assert len(answers) == 5 and all("Cannot read" in text(a) or "busy" in text(a) for a in answers)
    slots = int(requests.get(server["url"] + "/healthz").ok) and 1  # 2-core CI: cores - 1 = 1 slot
    assert 1 <= peak["n"] <= max(slots, (os.cpu_count() or 2) - 1)
    tic = time.perf_counter()
    again = server["client"].call("data-summary.children", {"data-select.value": ids[0]})
    assert "Cannot read" in text(again) and time.perf_counter() - tic < 1.0  # cached failure


# ------------------------------------------------------------------ real jobs
def follow(client, job_id):
    return client.call("train-stage.children", {"train-poll.n_intervals": 1, "train-active.data": job_id},
                       trigger="train-poll.n_intervals")


def submit_long_training(client) -> str:
    state = {"train-data.value": "demo.h5mu", "train-preset.value": "", "train-latent.value": 4,
             "train-epochs.value": 400, "train-lr.value": None}
    answers = []
    threads = [threading.Thread(target=lambda: answers.append(
        client.call("train-active.data", {"train-start.n_clicks": 1}, state))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = {a["train-active.data"] for a in answers}
    assert len(ids) == 1, answers  # two clicks at once: one job
    return ids.pop()


def training_processes(run_name: str) -> list[psutil.Process]:
    out = []
    for proc in psutil.process_iter(["cmdline"]):
        if any(run_name in part for part in (proc.info["cmdline"] or [])):
            out.append(proc)
    return out


def test_a_killed_worker_ends_its_training_and_says_so(server):
    client = server["client"]
    job_id = submit_long_training(client)
    assert wait_for(lambda: "epochs" in text(follow(client, job_id)) and
                    "training" in text(follow(client, job_id)), timeout=180)
    record = json.loads((server["folder"] / "runs" / ".scmm-jobs" / f"{job_id}.json").read_text())
    assert wait_for(lambda: len(training_processes(record["run"])) >= 2, timeout=60)
    os.kill(record["pid"], signal.SIGKILL)
    final = wait_for(lambda: (lambda s: s if "failed" in s else None)(text(follow(client, job_id))), timeout=60)
    assert final and "stopped unexpectedly" in final
    assert wait_for(lambda: not training_processes(record["run"]), timeout=30)  # no orphan trains on
    assert not (server["folder"] / "runs" / record["run"] / "model.pt").exists()


def test_a_restarted_server_takes_its_port_back_and_reattaches(tmp_path):
    (tmp_path / "data").mkdir()
    synthetic_run.make_run(tmp_path / "runs" / "syn", n_cells=300, n_genes=40)
    port = free_port()
    first = start(tmp_path, port)
    client = DashClient(f"http://127.0.0.1:{port}")
    job_id = submit_long_training(client)
    assert wait_for(lambda: "training" in text(follow(client, job_id)), timeout=180)
    # a background callback (a forked child of the server) is started just before the server dies
    rank = client.find("sel-table.children")
    body = {"output": rank["output"], "outputs": {"id": "sel-table", "property": "children"},
            "inputs": [{"id": "sel-rank", "property": "n_clicks", "value": 1}],
            "state": [{"id": s["id"], "property": s["property"],
                       "value": {"sel-current": list(range(100)), "sel-mod": "rna", "emb-run": "syn"}.get(s["id"])}
                      for s in rank["state"]], "changedPropIds": ["sel-rank.n_clicks"]}
    requests.post(f"http://127.0.0.1:{port}/_dash-update-component", json=body, timeout=30)
    stop_server(first, signal.SIGKILL)
    second = start(tmp_path, port)
    try:
        client = DashClient(f"http://127.0.0.1:{port}")
        assert "training" in text(follow(client, job_id))
        out = client.call("train-cancel-msg.children", {"train-cancel.n_clicks": 1},
                          {"train-active.data": job_id}, trigger="train-cancel.n_clicks")
        assert "cancelling" in text(out)
        final = wait_for(lambda: (lambda s: s if "cancelled" in s else None)(text(follow(client, job_id))),
                         timeout=90)
        assert final
        run = json.loads((tmp_path / "runs" / ".scmm-jobs" / f"{job_id}.json").read_text())["run"]
        assert wait_for(lambda: not training_processes(run), timeout=30)
    finally:
        stop_server(second)
