"""A real ``scmm-app`` server for tests and benchmarks, and a plain HTTP client to attack it.

:func:`start_server` runs ``python -m app.main`` (from this checkout or
another) in its own process group; :class:`DashClient` reads
``/_dash-dependencies`` once and posts any callback with any values, as a
browser would but with whatever the caller chooses.  Background callbacks are
followed (``cacheKey`` / ``job`` polling) to their result.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent


def wait_for(predicate, timeout=60.0, poll=0.25):
    """The first truthy value of ``predicate()``, polled every ``poll`` s for ``timeout`` s; else None."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    return None


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(data: Path, runs: Path, cache: Path, port: int, log_path: Path, *extra,
                 tree: Path = ROOT, timeout: float = 300) -> subprocess.Popen:
    """``python -m app.main`` from checkout ``tree`` in a new process group; returns once /healthz says ok."""
    cmd = [sys.executable, "-m", "app.main", "--data-dir", str(data), "--runs-dir", str(runs),
           "--cache-dir", str(cache), "--port", str(port), *map(str, extra)]
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(cmd, cwd=str(tree), stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2).text == "ok":
                return proc
        except requests.RequestException:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {Path(log_path).read_text(errors='replace')[-2000:]}")
        time.sleep(0.3)
    stop_server(proc)
    raise TimeoutError("server did not start")


def stop_server(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    """Signal the server's whole process group and wait for it."""
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def declared_upload(url: str, size: int) -> str:
    """POST /upload declaring ``size`` bytes but sending only 1 kB; the status line of the answer."""
    host, port = url.split("//")[1].split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall((f"POST /upload HTTP/1.1\r\nHost: {host}\r\nX-Requested-With: scmm-upload\r\n"
                      f"X-File-Name: big.h5mu\r\nContent-Length: {size}\r\n\r\n").encode() + b"x" * 1024)
        return sock.recv(4096).decode(errors="replace").splitlines()[0]


def _split_outputs(output: str) -> list[tuple]:
    """``..a.b...c.d..`` (or ``a.b``) -> [(id, property), ...]; dict ids are parsed from JSON."""
    parts = output[2:-2].split("...") if output.startswith("..") else [output]
    out = []
    for part in parts:
        ident, _, prop = part.rpartition(".")
        out.append((json.loads(ident) if ident.startswith("{") else ident, prop))
    return out


def _key(ident) -> str:
    return json.dumps(ident, sort_keys=True, separators=(",", ":")) if isinstance(ident, dict) else ident


class DashClient:
    """``DashClient(url).call(output="train-active.data", inputs={...}, state={...})``."""

    def __init__(self, url: str, timeout: float = 120):
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        self.callbacks = self.session.get(f"{self.url}/_dash-dependencies", timeout=timeout).json()

    def find(self, output: str, trigger: str | None = None) -> dict:
        """The callback whose outputs include ``output`` (``id.prop``), and whose inputs include ``trigger``."""
        for cb in self.callbacks:
            outs = [f"{_key(i)}.{p.split('@')[0]}" for i, p in _split_outputs(cb["output"])]
            ins = [f"{_key(i['id'])}.{i['property']}" for i in cb["inputs"]]
            if output in outs and (trigger is None or trigger in ins):
                return cb
        raise KeyError(f"no callback outputs {output} (trigger {trigger})")

    def call(self, output: str, inputs: dict | None = None, state: dict | None = None,
             trigger: str | None = None, raw: bool = False):
        """Post the callback; returns ``{"id.prop": value}`` of its response (or the HTTP response with ``raw``).

        ``inputs`` / ``state`` map ``id.prop`` (dict ids as sorted compact JSON)
        to values; unnamed ones are sent as None.  ``trigger`` names the
        changed input (default: the first input).
        """
        cb = self.find(output, trigger)
        inputs, state = inputs or {}, state or {}

        def values(specs, given):
            out = []
            for spec in specs:
                name = f"{_key(spec['id'])}.{spec['property']}"
                out.append({"id": spec["id"], "property": spec["property"], "value": given.get(name)})
            return out

        outs = [{"id": i, "property": p} for i, p in _split_outputs(cb["output"])]
        first = cb["inputs"][0]
        changed = trigger or f"{_key(first['id'])}.{first['property']}"
        body = {"output": cb["output"], "outputs": outs if cb["output"].startswith("..") else outs[0],
                "inputs": values(cb["inputs"], inputs), "state": values(cb["state"], state),
                "changedPropIds": [changed]}
        url = f"{self.url}/_dash-update-component"
        deadline = time.time() + self.timeout
        resp = self.session.post(url, json=body, timeout=self.timeout)
        first = resp.json() if resp.status_code == 200 and resp.content else {}
        if "cacheKey" in first:  # a background callback: poll its job until it answers
            handles = {"cacheKey": first["cacheKey"], "job": first["job"]}
            while True:
                if time.time() > deadline:
                    raise TimeoutError("background callback did not finish")
                time.sleep(0.3)
                resp = self.session.post(url, json=body, timeout=self.timeout, params=handles)
                if resp.status_code != 200 or "response" in resp.json():
                    break
        if raw:
            return resp
        if resp.status_code == 204:
            return {}
        resp.raise_for_status()
        payload = resp.json().get("response", {})
        return {f"{_key(json.loads(i) if i.startswith('{') else i)}.{p}": v
                for i, props in payload.items() for p, v in props.items()}
