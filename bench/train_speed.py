"""Training speed on pbmc10k_cite: our cells/s beside totalVI's, in one run.

Prints: the machine's fp32 matmul peak, the FLOPs per cell of a training
step, our throughput (paper preset, training cells x epochs / time inside
``train``), seconds per epoch, how a step splits into data loading / forward /
backward / optimiser, peak memory, and totalVI's throughput on the same data
and epochs (scvi-tools 1.4.2, n_latent=10, defaults; installed into its own
virtual environment under bench/out/ when missing).

    python bench/train_speed.py                      # paper preset, 5 epochs, + totalVI
    python bench/train_speed.py --no-totalvi --batch-size 512
    python bench/train_speed.py --cells 160000 --epochs 2   # resampled, binomially thinned set
    python bench/train_speed.py --time-to-model      # + wall time to a trained model and its quality

Mixed precision: the same epochs are trained in fp32 and with bf16 autocast
(``precision="bf16"``, forced), and the automatic choice on this machine is
reported (bf16 only where the CPU / GPU computes it natively).

Time to a good model (``--time-to-model``): wall time from reading the file
to a trained model at each tool's default training length, and the held-out
protein-prediction quality it reaches (median per-protein Pearson r of CLR
values on scMM's test split).  scMM predicts protein from the test cells' RNA
alone (inductive).  totalVI has no RNA-only encoder, so its closest
equivalent is used: the test cells are trained as a second batch whose
proteins are all zero (totalVI treats them as missing), and their protein is
imputed with ``get_normalized_expression(transform_batch="train")``; totalVI
sees those cells' RNA during training (transductive), which favours it.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

import scmm
from scmm.module import objective
from scmm.train import make_optimiser

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "pbmc10k_cite" / "pbmc10k_cite.h5mu"
OUT = Path(__file__).resolve().parent / "out"
TOTALVI_ENV = OUT / "scvi-env"

TOTALVI_SCRIPT = r"""
import sys, time, json, warnings
warnings.simplefilter("ignore")
import mudata as md, numpy as np, scvi
path, epochs = sys.argv[1], int(sys.argv[2])
mdata = md.read_h5mu(path)
rna = mdata["rna"].copy()
rna.obsm["protein"] = mdata["prot"].X.toarray() if hasattr(mdata["prot"].X, "toarray") else mdata["prot"].X
tic = time.perf_counter()
scvi.model.TOTALVI.setup_anndata(rna, protein_expression_obsm_key="protein")
model = scvi.model.TOTALVI(rna, n_latent=10)
model.train(max_epochs=epochs, early_stopping=False, enable_progress_bar=False)
seconds = time.perf_counter() - tic
n_train = len(model.train_indices)
print(json.dumps({"version": scvi.__version__, "seconds": seconds, "n_train": n_train,
                  "cells_per_s": n_train * epochs / seconds}))
"""


TOTALVI_TTM_SCRIPT = r"""
import sys, time, json, warnings
warnings.simplefilter("ignore")
tic = time.perf_counter()
import mudata as md, numpy as np, scvi
path, test_file, out = sys.argv[1], sys.argv[2], sys.argv[3]
mdata = md.read_h5mu(path)
test = set(open(test_file).read().split())
rna = mdata["rna"].copy()
prot = mdata["prot"].X.toarray() if hasattr(mdata["prot"].X, "toarray") else np.asarray(mdata["prot"].X)
is_test = np.array([c in test for c in rna.obs_names])
prot = prot.copy()
prot[is_test] = 0
rna.obsm["protein"] = prot
rna.obs["batch"] = np.where(is_test, "test", "train")
scvi.model.TOTALVI.setup_anndata(rna, protein_expression_obsm_key="protein", batch_key="batch")
model = scvi.model.TOTALVI(rna, n_latent=10)
model.train(enable_progress_bar=False)
seconds = time.perf_counter() - tic
_, protein = model.get_normalized_expression(indices=np.flatnonzero(is_test), transform_batch="train",
                                             n_samples=25, return_mean=True)
np.save(out, np.asarray(protein, dtype=np.float32))
epochs = len(model.history["elbo_train"])
print(json.dumps({"version": scvi.__version__, "seconds_to_model": seconds, "epochs_run": epochs,
                  "n_cells_in_training": int(rna.n_obs)}))
"""


def matmul_peak_gflops(device: torch.device, n: int = 2048, repeats: int = 10) -> float:
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    tic = time.perf_counter()
    for _ in range(repeats):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 2 * n ** 3 * repeats / (time.perf_counter() - tic) / 1e9


def flops_per_cell(model: scmm.SCMM) -> float:
    """Matrix-multiply FLOPs of one training step per cell: forward (every encoder once,
    every decoder once per encoder's sample) and backward (about twice the forward)."""
    def linear_flops(module):
        return sum(2 * m.in_features * m.out_features for m in module.modules()
                   if isinstance(m, torch.nn.Linear))
    enc = sum(linear_flops(e) for e in model.module.encoders.values())
    dec = sum(linear_flops(d) for d in model.module.decoders.values()) * len(model.names)
    return 3.0 * (enc + dec)


def step_breakdown(model: scmm.SCMM, batch_size: int, n_batches: int = 40) -> dict:
    """Seconds spent in data loading, forward, backward and optimiser over ``n_batches`` steps."""
    split = model.mdata.obs["scmm_split"].to_numpy()
    batches = model._batches(split == "train")
    opt = make_optimiser(model.module, 1e-3)
    sync = torch.cuda.synchronize if model.device.type == "cuda" else (lambda: None)
    parts = dict(data=0.0, forward=0.0, backward=0.0, optimiser=0.0)
    generator = torch.Generator().manual_seed(0)
    done = 0
    model.module.train()
    while done < n_batches:
        for rows in batches.epoch(batch_size, generator):
            t0 = time.perf_counter()
            xs, libs, nz = batches.batch(rows)
            sync(); t1 = time.perf_counter()
            loss = objective.loss(model.module, xs, libs, 1.0, nonzeros=nz)
            sync(); t2 = time.perf_counter()
            opt.zero_grad()
            loss.backward()
            sync(); t3 = time.perf_counter()
            opt.step()
            sync(); t4 = time.perf_counter()
            if done >= 5:  # skip warm-up steps
                for key, dt in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                    parts[key] += dt
            done += 1
            if done >= n_batches:
                break
    total = sum(parts.values())
    return {"cells_per_s_steps_only": (n_batches - 5) * batch_size / total,
            **{f"share_{k}": round(v / total, 3) for k, v in parts.items()}}


def resampled(mdata, n_cells: int, seed: int = 0):
    """``n_cells`` cells drawn with replacement, each count matrix thinned binomially (p ~ U(0.5, 1))."""
    import anndata as ad
    import mudata as md
    import scipy.sparse as sp
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, mdata.n_obs, n_cells)
    keep = rng.uniform(0.5, 1.0, n_cells)
    mods = {}
    for name, adata in mdata.mod.items():
        x = sp.csr_matrix(adata.X)[pick].astype(np.float32)
        per_entry = np.repeat(keep, np.diff(x.indptr))
        x.data = rng.binomial(x.data.astype(np.int64), per_entry).astype(np.float32)
        x.eliminate_zeros()
        mods[name] = ad.AnnData(x, var=adata.var[[]].copy())
        mods[name].obs_names = [f"c{i}" for i in range(n_cells)]
    return md.MuData(mods)


def ensure_totalvi(env: Path) -> None:
    """A virtual environment ``env`` with scvi-tools 1.4.2 (made when missing)."""
    python = env / "bin" / "python"
    if not python.exists():
        print("installing scvi-tools 1.4.2 into", env, file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(env)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "scvi-tools==1.4.2"], check=True)


def run_totalvi(path: Path, epochs: int, env: Path) -> dict:
    """totalVI's training throughput, run in the virtual environment ``env`` (made if missing)."""
    python = env / "bin" / "python"
    ensure_totalvi(env)
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as script:
        script.write(TOTALVI_SCRIPT)
    done = subprocess.run([str(python), script.name, str(path), str(epochs)], capture_output=True,
                          text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def time_to_model(args) -> dict:
    """Wall time from reading the file to a trained model at the default training length, and the
    held-out protein prediction it reaches, for scMM and (unless ``--no-totalvi``) totalVI."""
    from scmm.tl.metrics import clr, pearson_per_feature
    tic = time.perf_counter()
    mdata = scmm.read(DATA)
    scmm.preprocess(mdata)
    model = scmm.SCMM(mdata, device=args.device)
    result = model.train(progress=False)
    seconds = time.perf_counter() - tic
    test = (mdata.obs["scmm_split"] == "test").to_numpy()
    observed = clr(mdata["prot"].X[test])

    def median_r(predicted):
        return round(float(np.nanmedian(pearson_per_feature(clr(predicted), observed))), 3)

    predicted = model.predict("prot", from_modality="rna", adata=mdata["rna"][test].copy()).X
    out = {"scmm": {"seconds_to_model": round(seconds, 1), "epochs_run": len(result["history"]),
                    "steps_run": result["history"][-1]["step"], "status": result["status"],
                    "precision": model.train_config["precision"],
                    "median_protein_r_rna_only_test": median_r(predicted)}}
    if not args.no_totalvi:
        env = Path(args.totalvi_env)
        ensure_totalvi(env)
        with tempfile.TemporaryDirectory() as tmp:
            names = Path(tmp) / "test.txt"
            names.write_text("\n".join(mdata.obs_names[test]))
            script = Path(tmp) / "ttm.py"
            script.write_text(TOTALVI_TTM_SCRIPT)
            done = subprocess.run([str(env / "bin" / "python"), str(script), str(DATA), str(names),
                                   str(Path(tmp) / "protein.npy")], capture_output=True, text=True, check=True)
            tv = json.loads(done.stdout.strip().splitlines()[-1])
            tv["median_protein_r_rna_only_test"] = median_r(np.load(Path(tmp) / "protein.npy"))
        tv["seconds_to_model"] = round(tv["seconds_to_model"], 1)
        out["totalvi"] = tv
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=None, help="default: the preset's")
    parser.add_argument("--preset", default="cite")
    parser.add_argument("--cells", type=int, default=None, help="resample to this many cells")
    parser.add_argument("--device", default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-totalvi", action="store_true")
    parser.add_argument("--time-to-model", action="store_true",
                        help="also train both tools at their default lengths (minutes)")
    parser.add_argument("--totalvi-env", default=str(TOTALVI_ENV),
                        help="virtual environment with scvi-tools (created when missing)")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    if args.threads:
        torch.set_num_threads(args.threads)

    tic = time.perf_counter()
    mdata = scmm.read(DATA)
    if args.cells:
        mdata = resampled(mdata, args.cells)
    scmm.preprocess(mdata)
    model = scmm.SCMM(mdata, preset=args.preset, device=args.device)
    read_seconds = time.perf_counter() - tic
    n_train = int((mdata.obs["scmm_split"] == "train").sum())
    batch_size = args.batch_size or model.settings.batch_size
    device = model.device

    report = {"device": str(device), "torch_threads": torch.get_num_threads(), "cells": mdata.n_obs,
              "train_cells": n_train, "features": {n: mdata[n].n_vars for n in model.names},
              "preset": model.preset, "batch_size": batch_size, "epochs": args.epochs}
    report["matmul_peak_gflops"] = round(matmul_peak_gflops(device), 1)
    report["mflops_per_cell_step"] = round(flops_per_cell(model) / 1e6, 2)
    report["ceiling_cells_per_s"] = round(report["matmul_peak_gflops"] * 1e3 / report["mflops_per_cell_step"])
    report.update(step_breakdown(model, batch_size))

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    from scmm.precision import choose_precision, cpu_flags
    report["cpu_bf16_flags"] = sorted(cpu_flags() & {"avx512_bf16", "amx_bf16", "bf16"})
    report["auto_precision"] = choose_precision("auto", device)
    model = scmm.SCMM(mdata, preset=args.preset, device=args.device)
    tic = time.perf_counter()
    result = model.train(epochs=args.epochs, batch_size=batch_size, warmup=1, patience=10 ** 6,
                         precision="fp32", progress=False)
    train_seconds = time.perf_counter() - tic
    bf16_model = scmm.SCMM(mdata, preset=args.preset, device=args.device)
    bf16_tic = time.perf_counter()
    bf16_model.train(epochs=args.epochs, batch_size=batch_size, warmup=1, patience=10 ** 6,
                     precision="bf16", progress=False)
    report["scmm_bf16_cells_per_s"] = round(n_train * args.epochs / (time.perf_counter() - bf16_tic))
    latents_tic = time.perf_counter()
    model.get_latent()
    report["latent_seconds"] = round(time.perf_counter() - latents_tic, 2)
    report["read_preprocess_seconds"] = round(read_seconds, 2)
    report["train_seconds"] = round(train_seconds, 2)
    report["scmm_cells_per_s"] = round(n_train * args.epochs / train_seconds)
    report["seconds_per_epoch"] = [round(r["seconds"], 2) for r in result["history"]]
    report["ceiling_ratio"] = round(report["ceiling_cells_per_s"] / report["scmm_cells_per_s"], 2)
    report["peak_host_memory_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2)
    if device.type == "cuda":
        report["peak_gpu_memory_gb"] = round(torch.cuda.max_memory_allocated() / 1e9, 2)

    if not args.no_totalvi and not args.cells:
        tv = run_totalvi(DATA, args.epochs, Path(args.totalvi_env))
        report["totalvi"] = tv
        report["speedup_vs_totalvi"] = round(report["scmm_cells_per_s"] / tv["cells_per_s"], 2)
        report["speedup_bf16_vs_totalvi"] = round(report["scmm_bf16_cells_per_s"] / tv["cells_per_s"], 2)
    report["bf16_vs_fp32"] = round(report["scmm_bf16_cells_per_s"] / report["scmm_cells_per_s"], 2)
    if args.time_to_model and not args.cells:
        report["time_to_model"] = time_to_model(args)
    report["speedup_vs_authors_505"] = round(report["scmm_cells_per_s"] / 505, 2)
    OUT.mkdir(exist_ok=True)
    (OUT / f"train_speed-{device.type}-{args.preset}-bs{batch_size}.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
