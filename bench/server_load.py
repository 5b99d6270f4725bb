"""Load on a running ``scmm-app`` server, as a lab would use it, over plain HTTP.

    python bench/server_load.py --runs-dir /tmp/bench-runs --run pbmc10k [--clients 50] [--requests 20]
        [--data-dir D] [--skip-upload] [--skip-queue] [--old-tree PATH]

It starts the server (``python -m app.main``, its own process group) on a free
port and measures:

1. latency under ``--clients`` concurrent users (threads, one HTTP session
   each), each sending ``--requests`` callbacks that alternate a colour change
   on the Embeddings page and a step of the Traversal page: p50 / p99 / max
   per kind and requests/s;
2. five concurrent PNG exports of the embedding: wall time of each, and the
   peak process count and peak summed RSS of the server's process tree
   (sampled every 0.1 s);
3. (unless ``--skip-upload``) a streamed 250 MB upload (status, seconds, peak
   RSS delta), and a 250 MB upload over the limit of a second server started
   with ``--max-upload-mb 100``;
4. (unless ``--skip-queue``) three trainings of the demo submitted at once,
   followed every 2 s until all three end.

``--old-tree PATH`` starts the server from another checkout (cwd=PATH) so the
same bench measures before / after; the callbacks are discovered from
``/_dash-dependencies`` (``tests/live_server.py``), and the figure export of
the old tree (a MATCH callback that takes the figure as State) is supported.
Uploads and the queue are new-tree features: use ``--skip-upload
--skip-queue`` with ``--old-tree``.  Everything is printed as markdown tables.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import requests

ROOT = Path(__file__).resolve().parent.parent
for _p in (str(ROOT), str(ROOT / "tests")):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from live_server import (DashClient, _key, _split_outputs, declared_upload, free_port,  # noqa: E402
                         start_server, stop_server)

EMB_FIGURE = '{"g":"embedding","role":"graph"}.figure'
EMB_DOWNLOAD = '{"g":"embedding","role":"download"}.data'
EXPORT_PNG = '{"g":"embedding","role":"export-png"}.n_clicks'
TRAV_FIGURE = '{"g":"traversal-bars","role":"graph"}.figure'
UPLOAD_MB = 250
PREFERRED_GENES = ("CD3E", "CD14", "MS4A1", "NKG7", "LYZ", "CD8A", "GNLY")
TERMINAL = ("done", "failed", "cancelled", "unreadable")


def log(*args) -> None:
    print("[bench]", *args, file=sys.stderr, flush=True)


# --------------------------------------------------------------- server (as in tests/test_attacks.py)

def queue_pids(runs: Path, since: float) -> list[int]:
    """Job workers of ``runs`` still alive that were started after ``since`` (by this bench's server)."""
    out = []
    for path in (runs / ".scmm-jobs").glob("*.json"):
        try:
            record = json.loads(path.read_text())
            pid, created = record.get("pid"), record.get("pid_created")
            if not pid or (created and created < since):
                continue
            proc = psutil.Process(int(pid))
            if proc.create_time() >= since and "app.worker" in " ".join(proc.cmdline()):
                out.append(int(pid))
        except (OSError, ValueError, psutil.Error):
            continue
    return out


# --------------------------------------------------------------- process-tree sampling

def tree_usage(pid: int) -> tuple[int, int]:
    """(process count, summed RSS bytes) of ``pid`` and all its descendants."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0, 0
    rss = 0
    count = 0
    for p in procs:
        try:
            rss += p.memory_info().rss
            count += 1
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return count, rss


class Sampler:
    """Samples the server's process tree every ``every`` seconds while in a ``with`` block."""

    def __init__(self, pid: int, every: float = 0.1):
        self.pid, self.every = pid, every
        self.base_count, self.base_rss = tree_usage(pid)
        self.peak_count, self.peak_rss = self.base_count, self.base_rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            count, rss = tree_usage(self.pid)
            self.peak_count = max(self.peak_count, count)
            self.peak_rss = max(self.peak_rss, rss)
            self._stop.wait(self.every)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        count, rss = tree_usage(self.pid)
        self.end_count, self.end_rss = count, rss
        self.peak_count, self.peak_rss = max(self.peak_count, count), max(self.peak_rss, rss)


# --------------------------------------------------------------- callbacks

class Recorder:
    """Thread-safe list of (kind, seconds, status) plus the first bodies of failed requests."""

    def __init__(self):
        self.lock = threading.Lock()
        self.samples: list[tuple[str, float, int]] = []
        self.errors: dict[tuple[str, int], str] = {}
        self.error_counts: dict[tuple[str, int], int] = {}

    def add(self, kind: str, seconds: float, status: int, body: str = "") -> None:
        with self.lock:
            self.samples.append((kind, seconds, status))
            if status != 200 and status != 204:
                self.error_counts[(kind, status)] = self.error_counts.get((kind, status), 0) + 1
                self.errors.setdefault((kind, status), body[:600])


def timed_call(client: DashClient, rec: Recorder, kind: str, **kwargs):
    t0 = time.perf_counter()
    try:
        resp = client.call(raw=True, **kwargs)
        status, body = resp.status_code, (resp.text if resp.status_code not in (200, 204) else "")
    except requests.RequestException as err:
        resp, status, body = None, 0, f"{type(err).__name__}: {err}"
    rec.add(kind, time.perf_counter() - t0, status, body)
    return resp


def colour_kwargs(run: str, colour: str, trigger: str = "emb-colour.value") -> dict:
    return dict(output=EMB_FIGURE, inputs={"emb-key.value": "joint", "emb-colour.value": colour},
                state={"emb-run.data": run}, trigger=trigger)


def traversal_kwargs(run: str, dim: int, mod: str) -> dict:
    return dict(output=TRAV_FIGURE, inputs={"trav-dim.value": dim, "trav-mod.value": mod,
                                            "trav-logp.value": None, "trav-n.value": 15},
                state={"trav-step.value": 10, "trav-run.data": run}, trigger="trav-dim.value")


def run_features(runs_dir: Path, run: str) -> list[str]:
    """A few ``feat:rna:<gene>`` / ``feat:prot:<protein>`` colours from the run's config.json."""
    try:
        names = json.loads((runs_dir / run / "config.json").read_text()).get("feature_names", {})
    except (OSError, ValueError):
        return []
    out = []
    genes = names.get("rna", [])
    picked = [g for g in PREFERRED_GENES if g in genes][:3] or genes[:3]
    out += [f"feat:rna:{g}" for g in picked]
    out += [f"feat:prot:{p}" for p in names.get("prot", [])[:3]]
    return out


def latency(url: str, run: str, colours: list[str], mods: list[str], n_clients: int, n_requests: int,
            callbacks: list) -> dict:
    """``n_clients`` threads, each ``n_requests`` callbacks alternating colour change / traversal step."""
    rec = Recorder()
    clients = []
    for _ in range(n_clients):
        c = DashClient.__new__(DashClient)   # share the dependency list; one Session per client
        c.url, c.timeout, c.session, c.callbacks = url, 300, requests.Session(), callbacks
        clients.append(c)
    barrier = threading.Barrier(n_clients + 1)

    def worker(i: int, client: DashClient):
        barrier.wait()
        for r in range(n_requests):
            k = i + r // 2
            if r % 2 == 0:
                timed_call(client, rec, "colour change", **colour_kwargs(run, colours[k % len(colours)]))
            else:
                timed_call(client, rec, "traversal step", **traversal_kwargs(run, k % 10, mods[k % len(mods)]))

    threads = [threading.Thread(target=worker, args=(i, c), daemon=True) for i, c in enumerate(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    for c in clients:
        c.session.close()
    return {"rec": rec, "wall": wall}


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    if not values:
        return float("nan")
    pos = (len(values) - 1) * q
    lo, hi = int(pos), min(int(pos) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (pos - lo)


# --------------------------------------------------------------- PNG export

def find_export(client: DashClient) -> dict:
    """The embedding's export callback: concrete ids (new tree) or a MATCH pattern (old tree)."""
    for cb in client.callbacks:
        for ident, prop in _split_outputs(cb["output"]):
            if prop.split("@")[0] == "data" and isinstance(ident, dict) and ident.get("role") == "download" \
                    and ident.get("g") in ("embedding", ["MATCH"]):
                return cb
    raise KeyError("no export callback for the embedding")


def post_export(session: requests.Session, url: str, cb: dict, values: dict, changed: str) -> requests.Response:
    """Post ``cb`` with every ``["MATCH"]`` in its ids replaced by ``embedding`` (the browser's request)."""
    def concrete(ident):
        if isinstance(ident, str) and ident.startswith("{"):   # dependencies list dict ids as JSON text
            ident = json.loads(ident)
        if isinstance(ident, dict):
            return {k: ("embedding" if v == ["MATCH"] else v) for k, v in ident.items()}
        return ident

    def specs(items):
        out = []
        for spec in items:
            ident = concrete(spec["id"])
            out.append({"id": ident, "property": spec["property"],
                        "value": values.get(f"{_key(ident)}.{spec['property']}")})
        return out

    outs = [{"id": concrete(i), "property": p} for i, p in _split_outputs(cb["output"])]
    body = {"output": cb["output"], "outputs": outs if cb["output"].startswith("..") else outs[0],
            "inputs": specs(cb["inputs"]), "state": specs(cb["state"]), "changedPropIds": [changed]}
    return session.post(f"{url}/_dash-update-component", json=body, timeout=600)


def exports(url: str, pid: int, run: str, client: DashClient, colours: list[str], n: int = 5) -> dict:
    cb = find_export(client)
    state_names = [f"{_key(s['id'])}.{s['property']}" for s in cb["state"]]
    takes_figure = any(name.endswith(".figure") for name in state_names)
    values_for = []
    for i in range(n):
        colour = colours[i % len(colours)]
        values = {EXPORT_PNG: 1, "emb-run.data": run, "emb-key.value": "joint", "emb-colour.value": colour}
        if takes_figure:   # the old tree exports the figure the browser holds: fetch a full one first
            resp = client.call(raw=True, **colour_kwargs(run, colour, trigger="emb-key.value"))
            resp.raise_for_status()
            values[EMB_FIGURE] = resp.json()["response"]['{"g":"embedding","role":"graph"}']["figure"]
        values_for.append(values)
    results = [None] * n
    barrier = threading.Barrier(n + 1)

    def one(i):
        session = requests.Session()
        barrier.wait()
        t0 = time.perf_counter()
        try:
            resp = post_export(session, url, cb, values_for[i], EXPORT_PNG)
            secs = time.perf_counter() - t0
            out = {"seconds": secs, "status": resp.status_code, "png_kb": None, "note": ""}
            if resp.status_code == 200:
                payload = resp.json().get("response", {})
                data = (payload.get('{"g":"embedding","role":"download"}') or {}).get("data")
                msg = (payload.get('{"g":"embedding","role":"export-msg"}') or {}).get("children")
                if data and data.get("base64"):
                    out["png_kb"] = len(base64.b64decode(data["content"])) / 1024
                elif data:
                    out["png_kb"] = len(data.get("content", "")) / 1024
                if msg:
                    out["note"] = json.dumps(msg)[:200]
                if out["png_kb"] is None and not msg:
                    out["note"] = f"no file in the answer: {resp.text[:200]}"
            else:
                out["note"] = resp.text[:300].replace("\n", " ")
        except requests.RequestException as err:
            out = {"seconds": time.perf_counter() - t0, "status": 0, "png_kb": None, "note": str(err)[:200]}
        results[i] = out

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    with Sampler(pid) as samp:
        barrier.wait()
        t0 = time.perf_counter()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
    return {"results": results, "wall": wall, "sampler": samp, "takes_figure": takes_figure,
            "colours": [v["emb-colour.value"] for v in values_for]}


# --------------------------------------------------------------- uploads

def random_file(size: int) -> Path:
    fd, path = tempfile.mkstemp(prefix="scmm-bench-", suffix=".h5ad")
    with os.fdopen(fd, "wb") as out:
        left = size
        while left:
            chunk = os.urandom(min(left, 8 * 2 ** 20))
            out.write(chunk)
            left -= len(chunk)
    return Path(path)


def upload_stream(url: str, pid: int, path: Path) -> dict:
    with Sampler(pid) as samp:
        t0 = time.perf_counter()
        try:
            with open(path, "rb") as body:
                resp = requests.post(f"{url}/upload", data=body, timeout=600,
                                     headers={"X-Requested-With": "scmm-upload", "X-File-Name": "x.h5ad"})
            status, text = resp.status_code, resp.text
        except requests.RequestException as err:
            status, text = 0, f"{type(err).__name__}: {err}"
        secs = time.perf_counter() - t0
    return {"status": status, "seconds": secs, "body": text[:300], "sampler": samp}


def uploads(url: str, pid: int, data_dir: Path, tree: Path, workdir: Path, run_files: list) -> dict:
    size = UPLOAD_MB * 2 ** 20
    path = random_file(size)
    out = {}
    try:
        log(f"upload: streaming {UPLOAD_MB} MB")
        ok = upload_stream(url, pid, path)
        try:
            name = json.loads(ok["body"]).get("id", "")
        except ValueError:
            name = ""
        removed = []
        if name:
            target = data_dir / name
            for f in (target, target.with_suffix(".json")):
                if f.exists():
                    f.unlink()
                    removed.append(f.name)
        ok["removed"] = removed
        out["ok"] = ok
        log("upload: second server with --max-upload-mb 100")
        port = free_port()
        small = workdir / "limit-server"
        (small / "runs").mkdir(parents=True, exist_ok=True)
        proc = start_server(data_dir, small / "runs", small / "cache", port, workdir / "server-limit.log",
                            "--max-upload-mb", "100", tree=tree)
        run_files.append(workdir / "server-limit.log")
        url2 = f"http://127.0.0.1:{port}"
        try:
            base = tree_usage(proc.pid)[1]
            t0 = time.perf_counter()
            line = declared_upload(url2, size)
            out["declared"] = {"status": line, "seconds": time.perf_counter() - t0,
                               "rss_delta": tree_usage(proc.pid)[1] - base}
            full = upload_stream(url2, proc.pid, path)
            out["over"] = full
            left = sorted(p.name for p in (data_dir / "uploads").glob("*")) if (data_dir / "uploads").exists() else []
            out["left_after_refusal"] = [n for n in left if n.endswith(".h5ad") or n.startswith(".upload-")]
        finally:
            stop_server(proc)
    finally:
        path.unlink(missing_ok=True)
    return out


# --------------------------------------------------------------- training queue

def stage_status(stage: str) -> str:
    """``"run: queued (#2) (message)"`` -> ``"queued"``."""
    text = stage.split(": ", 1)[1] if ": " in stage else stage
    return text.split(" ", 1)[0]


def queue(url: str, callbacks: list, timeout: float) -> dict:
    lrs = (1e-3, 2e-3, 3e-3)
    results: list = [None] * len(lrs)
    barrier = threading.Barrier(len(lrs))

    def submit(i):
        c = DashClient.__new__(DashClient)
        c.url, c.timeout, c.session, c.callbacks = url, 120, requests.Session(), callbacks
        barrier.wait()
        t0 = time.perf_counter()
        try:
            resp = c.call(output="train-active.data", trigger="train-start.n_clicks",
                          inputs={"train-start.n_clicks": 1},
                          state={"train-data.value": "demo.h5mu", "train-epochs.value": 3,
                                 "train-latent.value": 4, "train-lr.value": lrs[i], "train-preset.value": ""})
            results[i] = {"job": resp.get("train-active.data"), "msg": resp.get("train-cancel-msg.children"),
                          "seconds": time.perf_counter() - t0}
        except Exception as err:  # noqa: BLE001  (reported in the table)
            results[i] = {"job": None, "msg": f"{type(err).__name__}: {err}", "seconds": time.perf_counter() - t0}

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(len(lrs))]
    t_start = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    monitor = DashClient.__new__(DashClient)
    monitor.url, monitor.timeout, monitor.session, monitor.callbacks = url, 120, requests.Session(), callbacks
    lines, ended, n = [], {}, 0
    while True:
        n += 1
        stages = []
        for i, r in enumerate(results):
            if not r["job"]:
                stages.append("(not submitted)")
                ended.setdefault(i, None)
                continue
            try:
                resp = monitor.call(output="train-stage.children", trigger="train-poll.n_intervals",
                                    inputs={"train-poll.n_intervals": n, "train-active.data": r["job"]})
                stage = str(resp.get("train-stage.children"))
            except Exception as err:  # noqa: BLE001
                stage = f"poll error {type(err).__name__}: {str(err)[:100]}"
            stages.append(stage)
            if stage_status(stage) in TERMINAL and i not in ended:
                ended[i] = time.time() - t_start
        elapsed = time.time() - t_start
        line = f"{elapsed:7.1f} s | " + " | ".join(stages)
        print(line, flush=True)
        lines.append(line)
        if len(ended) == len(results) or elapsed > timeout:
            break
        time.sleep(2)
    for i, r in enumerate(results):
        r["lr"] = lrs[i]
        r["final"] = stages[i]
        r["ended_s"] = ended.get(i)
    return {"jobs": results, "lines": lines, "timed_out": len(ended) < len(results)}


# --------------------------------------------------------------- report

def mb(x: float) -> str:
    return f"{x / 2 ** 20:,.0f}"


def server_errors(log_path: Path, limit: int = 3) -> list[str]:
    """The last few tracebacks in a server log."""
    try:
        text = log_path.read_text(errors="replace")
    except OSError:
        return []
    blocks = text.split("Traceback (most recent call last):")[1:]
    out = []
    for b in blocks[-limit:]:
        lines = [ln for ln in b.strip().splitlines() if ln.strip()]
        out.append("Traceback ... " + " / ".join(lines[-3:])[:600])
    return out


def report(args, info, lat, exp, up, qu, log_paths) -> None:
    p = print
    p()
    p(f"## scmm-app server load ({info['tree']})")
    p()
    p("| | |")
    p("|---|---|")
    for k, v in info["rows"]:
        p(f"| {k} | {v} |")
    if lat:
        rec = lat["rec"]
        p()
        p(f"### Latency: {args.clients} concurrent clients x {args.requests} requests "
          f"(alternating colour change / traversal step)")
        p()
        p("| callback | requests | errors | no update (204) | p50 ms | p99 ms | max ms | mean ms |")
        p("|---|---:|---:|---:|---:|---:|---:|---:|")
        for kind in ("colour change", "traversal step"):
            rows = [s for s in rec.samples if s[0] == kind]
            ok = [s[1] * 1000 for s in rows if s[2] in (200, 204)]
            errs = len(rows) - len(ok)
            alltimes = [s[1] * 1000 for s in rows]
            n204 = sum(1 for s in rows if s[2] == 204)
            p(f"| {kind} | {len(rows)} | {errs} | {n204} | {percentile(ok, .5):,.0f} | {percentile(ok, .99):,.0f} | "
              f"{max(alltimes, default=float('nan')):,.0f} | "
              f"{(statistics.mean(ok) if ok else float('nan')):,.0f} |")
        total = len(rec.samples)
        p()
        p(f"Throughput: {total} requests in {lat['wall']:.1f} s = **{total / lat['wall']:.1f} requests/s**. "
          f"Cold first calls (one client, before the load): colour {info['cold_colour'] * 1000:,.0f} ms, "
          f"traversal {info['cold_trav'] * 1000:,.0f} ms.")
        if rec.errors:
            p()
            p("| failed callback | HTTP status | count | first body |")
            p("|---|---:|---:|---|")
            for (kind, status), body in rec.errors.items():
                p(f"| {kind} | {status} | {rec.error_counts[(kind, status)]} | "
                  f"`{body.replace('|', '/').replace(chr(10), ' ')[:300]}` |")
    if exp:
        s = exp["sampler"]
        p()
        p(f"### {len(exp['results'])} concurrent PNG exports of the embedding "
          f"({'figure sent as State (old tree)' if exp['takes_figure'] else 'rebuilt on the server from run/emb/colour'})")
        p()
        p("| export | colour | HTTP | seconds | PNG kB | note |")
        p("|---:|---|---:|---:|---:|---|")
        for i, r in enumerate(exp["results"]):
            kb = f"{r['png_kb']:,.0f}" if r["png_kb"] is not None else "-"
            p(f"| {i + 1} | {exp['colours'][i]} | {r['status']} | {r['seconds']:.1f} | {kb} | "
              f"{r['note'].replace('|', '/')} |")
        p()
        p("| server process tree | before | peak | after |")
        p("|---|---:|---:|---:|")
        p(f"| processes | {s.base_count} | {s.peak_count} | {s.end_count} |")
        p(f"| summed RSS (MB) | {mb(s.base_rss)} | {mb(s.peak_rss)} | {mb(s.end_rss)} |")
        p()
        p(f"All {len(exp['results'])} exports answered within {exp['wall']:.1f} s.")
    if up:
        p()
        p(f"### Uploads ({UPLOAD_MB} MB of random bytes as x.h5ad)")
        p()
        p("| upload | HTTP | seconds | server RSS before (MB) | peak RSS delta (MB) | answer |")
        p("|---|---|---:|---:|---:|---|")
        ok = up.get("ok")
        if ok:
            s = ok["sampler"]
            p(f"| streamed, limit 2,048 MB | {ok['status']} | {ok['seconds']:.1f} | {mb(s.base_rss)} | "
              f"{mb(s.peak_rss - s.base_rss)} | `{ok['body'].strip()[:160]}` (removed {', '.join(ok['removed']) or 'nothing'}) |")
        d = up.get("declared")
        if d:
            p(f"| declared 250 MB, 1 kB sent, limit 100 MB | {d['status']} | {d['seconds']:.2f} | - | "
              f"{mb(d['rss_delta'])} | |")
        o = up.get("over")
        if o:
            s = o["sampler"]
            p(f"| streamed, limit 100 MB | {o['status']} | {o['seconds']:.1f} | {mb(s.base_rss)} | "
              f"{mb(s.peak_rss - s.base_rss)} | `{o['body'].strip()[:160]}` |")
        if "left_after_refusal" in up:
            p()
            p(f"Upload files left in DATA/uploads after the refusals: {up['left_after_refusal'] or 'none'}.")
    if qu:
        p()
        p("### Three trainings submitted at once (demo.h5mu, 3 epochs, latent 4)")
        p()
        p("| lr | job | submit answer | submit s | final status | ended after s |")
        p("|---|---|---|---:|---|---:|")
        for r in qu["jobs"]:
            ended = f"{r['ended_s']:.1f}" if r.get("ended_s") else "-"
            p(f"| {r['lr']:g} | {r['job']} | {str(r['msg'])[:80]} | {r['seconds']:.2f} | {r['final'][:120]} | "
              f"{ended} |")
        if qu["timed_out"]:
            p()
            p("The queue did not finish within --queue-timeout.")
    errs = [e for path in log_paths for e in server_errors(path)]
    p()
    p("### Server log")
    p()
    if errs:
        for e in errs:
            p(f"- `{e}`")
    else:
        p("No traceback in the server log(s).")


# --------------------------------------------------------------- main

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Load on a running scmm-app server (see the module docstring).")
    parser.add_argument("--runs-dir", required=True, type=Path, help="runs folder holding --run")
    parser.add_argument("--run", default="pbmc10k", help="an analysed run of --runs-dir (default pbmc10k)")
    parser.add_argument("--data-dir", type=Path, default=None, help="datasets (default: a temporary folder)")
    parser.add_argument("--clients", type=int, default=50, help="concurrent clients (default 50)")
    parser.add_argument("--requests", type=int, default=20,
                        help="requests per client, alternating colour change / traversal step (default 20)")
    parser.add_argument("--skip-upload", action="store_true")
    parser.add_argument("--skip-queue", action="store_true")
    parser.add_argument("--queue-timeout", type=float, default=900, help="seconds to follow the trainings")
    parser.add_argument("--old-tree", type=Path, default=None,
                        help="start the server from this checkout instead (before / after comparisons)")
    args = parser.parse_args(argv)
    runs_dir = args.runs_dir.resolve()
    if not (runs_dir / args.run).is_dir():
        parser.error(f"no run {args.run!r} in {runs_dir}")
    tree = (args.old_tree or ROOT).resolve()
    if args.old_tree and not (args.skip_upload and args.skip_queue):
        log("--old-tree: the upload and queue parts are new-tree features; they are skipped")
        args.skip_upload = args.skip_queue = True
    workdir = Path(tempfile.mkdtemp(prefix="scmm-load-"))
    data_dir = (args.data_dir or workdir / "data").resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = workdir / "server.log"
    log_paths = [log_path]
    rev = subprocess.run(["git", "-C", str(tree), "log", "-1", "--format=%h %s"], capture_output=True,
                         text=True).stdout.strip()[:80]
    dirty = subprocess.run(["git", "-C", str(tree), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    bench_start = time.time()
    log(f"starting the server from {tree} on port {port} (log {log_path})")
    t0 = time.perf_counter()
    proc = start_server(data_dir, runs_dir, workdir / "cache", port, log_path, tree=tree)
    startup = time.perf_counter() - t0
    lat = exp = up = qu = None
    load_before = os.getloadavg()
    try:
        server_line = next((ln for ln in log_path.read_text(errors="replace").splitlines()
                            if "scMM Explorer on" in ln), "")
        client = DashClient(url, timeout=300)
        colours = ["obs:scmm_cluster", *[f"z:{d}" for d in range(10)], *run_features(runs_dir, args.run)]
        mods = ["rna", "prot"]
        rec0 = Recorder()
        t = time.perf_counter()
        timed_call(client, rec0, "colour", **colour_kwargs(args.run, colours[0]))
        cold_colour = time.perf_counter() - t
        t = time.perf_counter()
        timed_call(client, rec0, "traversal", **traversal_kwargs(args.run, 0, "rna"))
        cold_trav = time.perf_counter() - t
        for (kind, status), body in rec0.errors.items():
            log(f"cold {kind} call: HTTP {status}: {body[:300]}")
        info = {"tree": f"{'old tree ' + str(tree) if args.old_tree else 'current tree'}: {rev}"
                        f"{' + uncommitted changes' if dirty else ''}",
                "cold_colour": cold_colour, "cold_trav": cold_trav,
                "rows": [("server", server_line.strip()[:200] or "(no start line)"),
                         ("start-up to /healthz", f"{startup:.1f} s"),
                         ("run", f"{args.run} ({runs_dir / args.run})"),
                         ("colours cycled", ", ".join(colours)),
                         ("machine", f"{os.cpu_count()} CPU cores (nproc), "
                                     f"{psutil.virtual_memory().total / 2 ** 30:.0f} GiB RAM; "
                                     f"load average at start {load_before[0]:.2f}")]}
        log(f"latency: {args.clients} clients x {args.requests} requests")
        lat = latency(url, args.run, colours, mods, args.clients, args.requests, client.callbacks)
        log(f"latency done in {lat['wall']:.1f} s; 5 PNG exports")
        exp = exports(url, proc.pid, args.run, client, colours)
        if not args.skip_upload:
            up = uploads(url, proc.pid, data_dir, tree, workdir, log_paths)
        if not args.skip_queue:
            log("queue: three trainings")
            qu = queue(url, client.callbacks, args.queue_timeout)
        info["rows"].append(("load average at end", f"{os.getloadavg()[0]:.2f}"))
    finally:
        stop_server(proc)
        for pid in queue_pids(runs_dir, bench_start):
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    report(args, info, lat, exp, up, qu, log_paths)
    if args.data_dir is None:
        shutil.rmtree(workdir / "data", ignore_errors=True)
    log(f"server logs kept in {workdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
