"""Atlas scale: 100k / 300k / 1M CITE-seq cells from file to explorer, stage by stage.

The sets are built from pbmc10k_cite (cells drawn with replacement, counts
thinned binomially: ``bench/train_speed.py::resampled``), written under
``bench/out/scale/`` (generated, never committed).  Each size runs in a fresh
process; for every stage the wall time and the peak resident memory *during*
that stage (sampled every 20 ms) are reported, plus the process's peak:

- read, preprocess, one training epoch (``--full-train``: the default training
  length too, on sizes up to 100k), save;
- ``scmm.tl.analyze`` on the saved run, step by step: load + latents,
  clustering, UMAPs, traversal, markers, heatmap tables, saving results;
- the explorer over the run (``bench/app_latency.py``): in-process callback
  times and, in headless Chromium, first page render, colour change and
  traversal step (``--no-browser`` skips it).

    python bench/scale.py --sizes 100000,300000,1000000 [--full-train] [--threads 2]
    python bench/scale.py --summarise bench/out/scale.jsonl
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out" / "scale"
SOURCE = Path(os.environ.get("SCMM_SHARED_DATA", ROOT.parent / "shared" / "data")) / "pbmc10k_cite" / "pbmc10k_cite.h5mu"


class Memory:
    """Peak resident memory of this process per stage (a sampling thread, every ``interval`` s)."""

    def __init__(self, interval: float = 0.02):
        import psutil
        self.process = psutil.Process()
        self.interval = interval
        self.stage_peak = 0
        self.rows: list[dict] = []
        self._stop = threading.Event()
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self):
        while not self._stop.is_set():
            self.stage_peak = max(self.stage_peak, self.process.memory_info().rss)
            time.sleep(self.interval)

    def stage(self, name: str, fn, *args, **kwargs):
        """Run ``fn``, record its wall time and peak memory under ``name``; return its result."""
        self.stage_peak = self.process.memory_info().rss
        start = time.perf_counter()
        result = fn(*args, **kwargs)
        seconds = time.perf_counter() - start
        self.stage_peak = max(self.stage_peak, self.process.memory_info().rss)
        self.rows.append({"stage": name, "seconds": round(seconds, 2),
                          "peak_gb": round(self.stage_peak / 2**30, 2)})
        print(f"  {name:<28}{seconds:>9.1f} s {self.stage_peak / 2**30:>7.2f} GB", flush=True)
        return result

    def close(self):
        self._stop.set()


def dataset(n_cells: int, seed: int = 0) -> Path:
    """The resampled set of ``n_cells`` cells (built once, in a child process so that its memory is not counted)."""
    path = OUT / f"cite-{n_cells}.h5mu"
    if not path.exists():
        code = ("import sys, scmm; sys.path.insert(0, 'bench'); from train_speed import resampled; "
                f"m = resampled(scmm.read({str(SOURCE)!r}), {n_cells}, seed={seed}); m.write({str(path)!r} + '.tmp')")
        OUT.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
        os.replace(f"{path}.tmp", path)
    return path


def analysis_stages(memory: Memory, run_dir: Path) -> dict:
    """``scmm.tl.analyze`` with its steps timed through its progress callback."""
    from scmm.tl import analyze
    marks = []

    def progress(step, message):
        marks.append((step, time.perf_counter(), memory.stage_peak))
        memory.stage_peak = memory.process.memory_info().rss

    summary = memory.stage("analyze (all steps)", analyze, run_dir, progress=progress)
    steps = [{"stage": f"analyze: {step}", "seconds": round(t1 - t0, 2), "peak_gb": round(peak / 2**30, 2)}
             for (step, t0, _), (_, t1, peak) in zip(marks, marks[1:])]
    whole = memory.rows[-1]  # the progress callback restarted the stage's peak at each step
    whole["peak_gb"] = max([whole["peak_gb"]] + [row["peak_gb"] for row in steps])
    memory.rows.extend(steps)
    return summary


def explorer_stages(memory: Memory, run_dir: Path, repeats: int, browser: bool) -> None:
    """The app's callbacks in-process and, in headless Chromium, page render / colour change / traversal step."""
    sys.path.insert(0, str(ROOT / "bench"))
    import app_latency
    from app import data_access
    view = memory.stage("explorer: open run", data_access.get_run, run_dir)
    timings = app_latency.direct(view, repeats)
    if browser:
        timings.update(app_latency.browser(run_dir.parent, run_dir.name, view, repeats))
    for path, (median, worst) in timings.items():
        memory.rows.append({"stage": f"explorer: {path}", "median_ms": round(median, 1), "max_ms": round(worst, 1)})
        print(f"  {path:<40}{median:>9.1f} ms (max {worst:.1f})", flush=True)


def one_size(n_cells: int, args) -> dict:
    """Every stage for one size, in this process."""
    import torch

    import scmm
    if args.threads:
        torch.set_num_threads(args.threads)
    path = dataset(n_cells)
    run_dir = OUT / "runs" / f"cite-{n_cells}"
    memory = Memory()
    mdata = memory.stage("read", scmm.read, path)
    memory.stage("preprocess", scmm.preprocess, mdata)
    model = scmm.SCMM(mdata, preset="cite")
    memory.stage("train: 1 epoch", model.train, epochs=1, progress=False)
    if args.full_train and n_cells <= 100_000:
        model = scmm.SCMM(mdata, preset="cite")
        result = memory.stage("train: default length", model.train, progress=False)
        memory.rows[-1]["epochs"] = len(result["history"])
    memory.stage("save run", model.save, run_dir)
    del model, mdata
    summary = analysis_stages(memory, run_dir)
    explorer_stages(memory, run_dir, args.repeats, not args.no_browser)
    memory.close()
    peak_gb = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
    return {"n_cells": n_cells, "threads": torch.get_num_threads(), "n_clusters": summary["n_clusters"],
            "peak_gb": peak_gb, "stages": memory.rows}


def table(rows: list[dict]) -> str:
    """Markdown: stages x sizes, seconds (or median ms) and peak GB."""
    sizes = [r["n_cells"] for r in rows]
    stages = list(dict.fromkeys(s["stage"] for r in rows for s in r["stages"]))
    lines = ["| stage | " + " | ".join(f"{n:,} cells" for n in sizes) + " |",
             "|---|" + "---|" * len(sizes)]
    for stage in stages:
        cells = []
        for r in rows:
            s = next((s for s in r["stages"] if s["stage"] == stage), None)
            if s is None:
                cells.append("–")
            elif "median_ms" in s:
                cells.append(f"{s['median_ms']:.0f} ms (max {s['max_ms']:.0f})")
            else:
                cells.append(f"{s['seconds']:.1f} s, {s['peak_gb']:.2f} GB")
        lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    lines.append("| process peak memory | " + " | ".join(f"{r['peak_gb']:.2f} GB" for r in rows) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,300000,1000000")
    parser.add_argument("--full-train", action="store_true", help="also the default training length (sizes <= 100k)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default torch's)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-browser", action="store_true")
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=str(ROOT / "bench" / "out" / "scale.jsonl"))
    parser.add_argument("--summarise", default=None, metavar="JSONL")
    args = parser.parse_args()
    if args.summarise:
        print(table([json.loads(line) for line in Path(args.summarise).read_text().splitlines() if line.strip()]))
        return
    if args.one is not None:
        row = one_size(args.one, args)
        with open(args.out, "a") as f:
            f.write(json.dumps(row) + "\n")
        return
    if not SOURCE.exists():
        sys.exit(f"{SOURCE} not found: the scale sets are built from pbmc10k_cite (see ../shared/data/README)")
    passed = ["--out", args.out, "--repeats", str(args.repeats)]
    passed += (["--threads", str(args.threads)] if args.threads else []) + \
        (["--full-train"] if args.full_train else []) + (["--no-browser"] if args.no_browser else [])
    for n in [int(s) for s in args.sizes.split(",")]:
        print(f"# {n:,} cells", flush=True)
        subprocess.run([sys.executable, __file__, "--one", str(n), *passed], cwd=ROOT, check=True)
    rows = [json.loads(line) for line in Path(args.out).read_text().splitlines() if line.strip()]
    print(table(rows[-len(args.sizes.split(",")):]))


if __name__ == "__main__":
    main()
