"""Child processes of the app: one launcher, a bounded pool of work slots, and death with the parent.

Every process the app starts goes through :func:`python_command` and one of
:func:`run_child` (wait for its output), :func:`start_child` (a job's stage)
or :func:`spawn_session` (a job's worker, which outlives the server), so they all get the same
environment (the project on ``PYTHONPATH``, torch threads leaving a core to
the server) and the same limits:

- :func:`work_slot` bounds concurrent child work (summaries, predictions,
  exports) across every process of the server with lock files, so five
  concurrent exports run at most ``slots`` at a time and the others wait
  in a visible queue;
- :func:`die_with_parent` (for a started program: a training stage, a
  prediction) and :func:`exit_with_parent` (for a forked Dash background
  callback) end a child when its parent dies, so no orphan keeps training or
  keeps the server's port.
"""
from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
_PR_SET_PDEATHSIG = 1


class Busy(RuntimeError):
    """No work slot became free in time (the message says how many are busy)."""


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Ask the kernel to send ``sig`` to this process when its parent exits (Linux; no-op elsewhere).

    Meant as ``preexec_fn`` of a child whose starting thread waits for it (the
    kernel signals when that thread ends).
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the parent died before the request took effect
        os.kill(os.getpid(), sig)


_watching: tuple | None = None   # (this pid, its parent) once exit_with_parent watches


def exit_with_parent(poll: float = 0.5) -> None:
    """End this (forked) process as soon as its parent process is gone.

    For Dash background callbacks, which are forked from a server thread:
    the kernel's parent-death signal follows the *thread* that forked, and a
    request thread may end long before the callback, so a watchdog thread
    checks the parent process instead.  Call it first thing in the callback.
    """
    global _watching
    parent = os.getppid()
    if _watching == (os.getpid(), parent):  # one watchdog per process (a Celery pool process runs many callbacks)
        return
    _watching = (os.getpid(), parent)

    def watch():
        while os.getppid() == parent:
            time.sleep(poll)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def child_env(threads: int | None = None) -> dict:
    """Environment of every child: the project importable, torch threads one fewer than the cores.

    Two spinning OpenMP threads beside a busy server on a 2-core machine slow
    training by an order of magnitude; one thread fewer than the cores avoids it.
    """
    threads = threads or max(1, (os.cpu_count() or 2) - 1)
    path = os.pathsep.join(p for p in [str(ROOT), os.environ.get("PYTHONPATH", "")] if p)
    return {**os.environ, "PYTHONPATH": path,
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(threads))}


def python_command(module: str, *args) -> list[str]:
    """``python -m module args...`` with this interpreter."""
    return [sys.executable, "-m", module, *map(str, args)]


def run_child(cmd: list[str], timeout: float) -> subprocess.CompletedProcess:
    """Run ``cmd`` to completion (captured text output); it dies with this process.

    A timeout kills the child's whole process group and raises ``subprocess.TimeoutExpired``.
    """
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=str(ROOT), env=child_env(),
                            start_new_session=True, preexec_fn=die_with_parent)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def library_warnings(stderr: str) -> list[str]:
    """The warnings a child's ``scmm`` raised (``...: UserWarning: text`` lines), in order, once each."""
    found = []
    for line in stderr.splitlines():
        _, sep, text = line.partition("Warning: ")
        if sep and text.strip() and text.strip() not in found:
            found.append(text.strip())
    return found


def start_child(cmd: list[str], log) -> subprocess.Popen:
    """Start ``cmd`` with its output going to the open file ``log``; it dies with this process."""
    return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=str(ROOT),
                            env=child_env(), preexec_fn=die_with_parent)


def spawn_session(cmd: list[str], log_path: Path) -> subprocess.Popen:
    """Start ``cmd`` in a new session (its own process group), output appended to ``log_path``.

    The child survives the server (a restarted server re-attaches to it);
    its group id is its pid, so :func:`kill_group` ends it and its children.
    """
    with open(log_path, "ab") as log:
        return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                cwd=str(ROOT), env=child_env(), start_new_session=True, close_fds=True)


def process_identity(pid: int) -> float | None:
    """The creation time of process ``pid`` (None when it is gone or a zombie).

    Stored with a pid, it tells a live process from a later one that reused the pid.
    """
    try:
        proc = psutil.Process(int(pid))
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc.create_time()
    except (psutil.Error, ValueError, OverflowError):
        return None


def same_process(pid: int | None, created: float | None) -> bool:
    """True when ``pid`` is alive and is the process that was created at ``created``."""
    if not pid or created is None:
        return False
    now = process_identity(pid)
    return now is not None and abs(now - created) < 0.01


def kill_group(pgid: int, sig: int = signal.SIGTERM) -> bool:
    """Send ``sig`` to process group ``pgid``; False when no such group exists."""
    try:
        os.killpg(int(pgid), sig)
        return True
    except (ProcessLookupError, PermissionError, ValueError):
        return False


def group_alive(pgid: int) -> bool:
    """True while any process of group ``pgid`` is alive (zombies excluded)."""
    for proc in psutil.process_iter(["pid", "status"]):
        try:
            if os.getpgid(proc.info["pid"]) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                return True
        except (ProcessLookupError, PermissionError, OSError):
            continue
    return False


@contextlib.contextmanager
def work_slot(folder: Path, slots: int, wait: float = 120.0, on_wait=None, poll: float = 0.2):
    """Hold one of ``slots`` lock files in ``folder`` for the duration of the block.

    Bounds concurrent child work across threads and processes of the server.
    ``on_wait(busy)`` is called once when every slot is taken (to show a
    "busy, queued" state); :class:`Busy` is raised after ``wait`` seconds.
    """
    folder.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait
    told = False
    while True:
        for i in range(max(1, slots)):
            handle = open(folder / f"slot-{i}.lock", "a+")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            try:
                yield i
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
                handle.close()
            return
        if not told and on_wait is not None:
            on_wait(slots)
            told = True
        if time.monotonic() > deadline:
            raise Busy(f"the server is busy: all {slots} work slots have been taken for "
                       f"{wait:.0f} s; try again in a moment")
        time.sleep(poll)
