"""The training loop: Adam with AMSGrad, KL warm-up, early stopping, checkpoints.

The schedule is counted in optimiser steps, so that it means the same on 1,000
cells (7 steps an epoch) as on the paper's 160,000 (1,250): the KL weight rises
linearly over ``warmup_steps`` steps; the test loss is evaluated after every
epoch and smoothed over about ``smooth_steps`` steps (an exponential moving
average, so that a tiny test split's noise does not decide); training stops
once the smoothed loss has not improved for ``patience_steps`` steps, and never
before ``min_steps`` steps.

It knows nothing of AnnData: it takes the torch module and two
:class:`~scmm.batches.MultiModalBatches` (train and test cells).
"""
from __future__ import annotations

import copy
import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from .batches import MultiModalBatches
from .module import objective
from .module.mmvae import MMVAE
from .precision import autocast
from .presets import steps_per_epoch

log = logging.getLogger(__name__)

#: version of the checkpoint layout (tensors + a JSON string of the rest)
CHECKPOINT_FORMAT = 1


@dataclass
class TrainConfig:
    """The training loop's concrete settings, made from a resolved :class:`scmm.settings.Settings`
    by :meth:`scmm.SCMM.train` (no defaults here: the presets are the one source)."""

    epochs: int
    lr: float
    warmup_steps: int
    patience_steps: int
    min_steps: int
    smooth_steps: int
    batch_size: int
    seed: int
    objective: str
    k_samples: int
    log_input: bool
    grad_clip: float | None
    compile: str | bool = "auto"
    precision: str = "fp32"          # "bf16" (autocast of the network) or "fp32"; see scmm.precision

    def to_dict(self) -> dict:
        return asdict(self)


class TrainingCancelled(Exception):
    """Raised inside the loop when the cancel callback asks to stop."""


def pick_device(device: str | None = None) -> torch.device:
    """The requested device, else CUDA when available, else CPU."""
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def kl_weight(step: int, warmup_steps: int) -> float:
    """Deterministic warm-up: beta = step / warmup_steps for the 0-based optimiser step, capped at 1."""
    if warmup_steps <= 0:
        return 1.0
    return min(1.0, step / warmup_steps)


def smoothing_weight(steps: int, smooth_steps: int) -> float:
    """Weight of a new test loss in the moving average when ``steps`` steps passed since the last
    one: 1 (no smoothing) once an epoch is at least ``smooth_steps`` steps long."""
    return 1.0 if smooth_steps <= 0 else min(1.0, steps / smooth_steps)


def make_loss_fn(cfg: TrainConfig, device: torch.device) -> Callable:
    """The loss function of a step, compiled with ``torch.compile`` where asked and possible.

    ``compile="auto"`` compiles on CUDA only.  The compiled step sees static
    shapes only: the count terms are taken from the dense batch (the sparse
    non-zeros vary in length from batch to batch) and beta is passed as a
    tensor so that the warm-up does not trigger recompilation.  Any failure to
    compile falls back to the eager step with a logged warning.
    """
    def eager(model, xs, libs, nonzeros, beta):
        with autocast(cfg.precision, device):
            return objective.loss(model, xs, libs, beta, cfg.objective, cfg.k_samples, cfg.log_input,
                                  nonzeros)

    want = cfg.compile if cfg.compile != "auto" else device.type == "cuda"
    if not want:
        return eager
    try:
        compiled = torch.compile(eager, dynamic=False)
    except Exception as err:  # torch.compile unavailable on this platform
        log.warning("torch.compile unavailable (%s); training eagerly", err)
        return eager
    state = {"compiled": True}

    def step(model, xs, libs, nonzeros, beta):
        if state["compiled"]:
            try:
                return compiled(model, xs, libs, None, torch.tensor(beta, device=device))
            except Exception as err:  # compilation errors surface on the first call
                log.warning("compiled step failed (%s); falling back to eager", err)
                state["compiled"] = False
        return eager(model, xs, libs, nonzeros, beta)
    return step


def make_optimiser(model: MMVAE, lr: float) -> torch.optim.Optimizer:
    """Adam with AMSGrad; the fused kernel where this torch build has it (one pass over all
    parameters instead of several per tensor), else the default implementation."""
    try:
        return torch.optim.Adam(model.parameters(), lr=lr, amsgrad=True, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(model.parameters(), lr=lr, amsgrad=True)


@torch.no_grad()
def evaluate(model: MMVAE, batches: MultiModalBatches, cfg: TrainConfig, batch_size: int = 1024) -> float:
    """Mean negative ELBO (beta = 1) over all cells of ``batches``, in the training's precision."""
    model.eval()
    total, n = 0.0, 0
    device = next(model.parameters()).device
    for rows in batches.epoch(batch_size, shuffle=False, drop_last=False):
        xs, libs, nonzeros = batches.batch(rows)
        with autocast(cfg.precision, device):
            loss = objective.loss(model, xs, libs, 1.0, cfg.objective, cfg.k_samples, cfg.log_input, nonzeros)
        total += float(loss) * len(rows)
        n += len(rows)
    model.train()
    return total / max(n, 1)


def save_checkpoint(path: Path, state: dict) -> None:
    """Write ``state`` atomically (temporary file beside ``path``, then rename)."""
    from .runfolder import replace_atomic
    path.parent.mkdir(parents=True, exist_ok=True)
    replace_atomic(lambda tmp: torch.save(state, tmp), path)


def checkpoint_state(model: MMVAE, optimiser, epoch: int, history: list, best: dict,
                     shuffler: torch.Generator, step: int = 0, smoothed: float | None = None) -> dict:
    """What :func:`fit` writes after an epoch: tensors (and the optimiser's state dict, which
    loads under ``weights_only=True``) plus a JSON string of everything else."""
    def finite(value):
        return value if not isinstance(value, float) or math.isfinite(value) else None

    meta = {"format": CHECKPOINT_FORMAT, "epoch": epoch,
            "history": [{k: finite(v) for k, v in rec.items()} for rec in history],
            "best_loss": best["loss"] if math.isfinite(best["loss"]) else None,
            "best_epoch": best["epoch"], "best_step": best.get("step"), "step": step,
            "smoothed": finite(smoothed)}
    return {"meta": json.dumps(meta, allow_nan=False), "model": model.state_dict(),
            "optimiser": optimiser.state_dict(), "best_state": best["state"],
            "shuffler": shuffler.get_state(), "torch_rng": torch.get_rng_state()}


def read_checkpoint(path: str | Path, map_location=None, mmap: bool = False) -> dict:
    """The checkpoint at ``path`` loaded with ``weights_only=True``, its JSON state decoded.

    Returns the stored dict with ``meta`` replaced by the parsed
    ``{"epoch", "history", "best_loss", "best_epoch", "best_step", "step", "smoothed"}``.  A file that needs
    anything but tensors and plain containers to load (a pickle that would run
    code), or that is not a checkpoint of this version, raises
    :class:`~scmm.runfolder.RunFileError` and nothing in it is executed.
    """
    from .runfolder import RunFileError, _history
    path = Path(path)
    try:
        saved = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except FileNotFoundError:
        raise
    except Exception as err:  # UnpicklingError for a hostile pickle, RuntimeError for garbage
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise RunFileError(path, "refused: not a checkpoint that loads as plain tensors "
                                 f"(weights_only=True: {first[:200]}); delete it to start afresh") from None
    if not isinstance(saved, dict) or not isinstance(saved.get("meta"), str):
        raise RunFileError(path, "not a checkpoint of this scmm version (no JSON state); "
                                 "delete it to start afresh")
    try:
        meta = json.loads(saved["meta"])
    except (ValueError, RecursionError):
        raise RunFileError(path, "its JSON state is malformed") from None
    if not isinstance(meta, dict) or meta.get("format") != CHECKPOINT_FORMAT:
        raise RunFileError(path, "not a checkpoint of this scmm version; delete it to start afresh")
    epoch = meta.get("epoch")
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 1:
        raise RunFileError(path, f"'epoch' must be a positive integer, not {epoch!r:.60}")
    best_epoch, best_loss = meta.get("best_epoch"), meta.get("best_loss")
    if best_epoch is not None and (isinstance(best_epoch, bool) or not isinstance(best_epoch, int)):
        raise RunFileError(path, f"'best_epoch' must be an integer, not {best_epoch!r:.60}")
    if best_loss is not None and (isinstance(best_loss, bool) or not isinstance(best_loss, (int, float))):
        raise RunFileError(path, f"'best_loss' must be a number, not {best_loss!r:.60}")
    history = _history(meta.get("history"), path)
    for key, kind in (("model", dict), ("optimiser", dict), ("shuffler", torch.Tensor),
                      ("torch_rng", torch.Tensor)):
        if not isinstance(saved.get(key), kind):
            raise RunFileError(path, f"missing or malformed {key!r}")
    if saved.get("best_state") is not None and not isinstance(saved["best_state"], dict):
        raise RunFileError(path, "malformed 'best_state'")
    if (best_epoch is None) != (saved.get("best_state") is None):
        raise RunFileError(path, "'best_epoch' and 'best_state' disagree")
    counters = {}
    for key in ("step", "best_step"):
        value = meta.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise RunFileError(path, f"{key!r} must be a non-negative integer, not {value!r:.60}")
        counters[key] = value
    smoothed = meta.get("smoothed")
    if smoothed is not None and (isinstance(smoothed, bool) or not isinstance(smoothed, (int, float))):
        raise RunFileError(path, f"'smoothed' must be a number, not {smoothed!r:.60}")
    saved["meta"] = {"epoch": epoch, "history": history,
                     "best_loss": float(best_loss) if best_loss is not None else float("inf"),
                     "best_epoch": best_epoch, "step": counters["step"], "best_step": counters["best_step"],
                     "smoothed": float(smoothed) if smoothed is not None else None}
    return saved


def fit(model: MMVAE, train: MultiModalBatches, test: MultiModalBatches | None, cfg: TrainConfig,
        progress: bool = True, callback: Callable[[dict], None] | None = None,
        should_stop: Callable[[], bool] | None = None, checkpoint: str | Path | None = None,
        resume: bool = False) -> dict:
    """Train ``model`` in place; return ``{"history", "best_epoch", "status"}``.

    - ``callback(record)`` is called after every epoch with the epoch's record
      (epoch, epochs, step, beta, train_loss, test_loss, test_loss_smoothed, seconds);
    - ``should_stop()`` is polled between batches; when it returns True the
      run stops with status "cancelled" (the best weights so far are kept);
    - ``checkpoint``: a file written after every epoch; with ``resume=True``
      training continues from it.

    Early stopping watches the smoothed test loss once the KL warm-up is over
    (the schedule of the module docstring, in optimiser steps) and reloads the
    best weights at the end.
    """
    device = next(model.parameters()).device
    torch.manual_seed(cfg.seed)
    shuffler = torch.Generator().manual_seed(cfg.seed)
    optimiser = make_optimiser(model, cfg.lr)
    loss_fn = make_loss_fn(cfg, device)
    history: list[dict] = []
    best = {"loss": float("inf"), "epoch": None, "step": None, "state": None}
    start_epoch, step, smoothed = 1, 0, None
    checkpoint = Path(checkpoint) if checkpoint else None
    if resume and checkpoint and checkpoint.exists():
        saved = read_checkpoint(checkpoint, map_location=device)
        meta = saved["meta"]
        try:
            model.load_state_dict(saved["model"])
            optimiser.load_state_dict(saved["optimiser"])
            shuffler.set_state(saved["shuffler"].cpu())
            torch.set_rng_state(saved["torch_rng"].cpu())
        except (RuntimeError, ValueError, KeyError, TypeError) as err:
            from .runfolder import RunFileError
            raise RunFileError(checkpoint, "does not match this model and data (was it written "
                                           f"for another run?): {str(err)[:300]}") from None
        history = meta["history"]
        per_epoch = steps_per_epoch(train.n_cells, cfg.batch_size)   # checkpoints written before steps
        step = meta["step"] if meta["step"] is not None else meta["epoch"] * per_epoch
        best = {"loss": meta["best_loss"], "epoch": meta["best_epoch"], "state": saved["best_state"],
                "step": meta["best_step"] if meta["best_step"] is not None else (meta["best_epoch"] or 0) * per_epoch}
        smoothed = meta["smoothed"]
        start_epoch = meta["epoch"] + 1

    status = "completed"
    model.train()
    bar = tqdm(range(start_epoch, cfg.epochs + 1), desc="scMM", unit="epoch", disable=not progress,
               initial=start_epoch - 1, total=cfg.epochs)
    try:
        for epoch in bar:
            tic = time.perf_counter()
            running, n_seen, first_step = 0.0, 0, step
            for rows in train.epoch(cfg.batch_size, shuffler):
                if should_stop is not None and should_stop():
                    raise TrainingCancelled
                xs, libs, nonzeros = train.batch(rows)
                beta = kl_weight(step, cfg.warmup_steps)
                loss = loss_fn(model, xs, libs, nonzeros, beta)
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                optimiser.step()
                running += float(loss.detach()) * len(rows)
                n_seen += len(rows)
                step += 1
            if not math.isfinite(running):
                raise FloatingPointError(f"training loss became {running} in epoch {epoch}; "
                                         "try a lower learning rate or grad_clip")
            test_loss = evaluate(model, test, cfg) if test is not None and test.n_cells else None
            watched = test_loss if test_loss is not None else running / max(n_seen, 1)
            weight = smoothing_weight(step - first_step, cfg.smooth_steps)
            smoothed = watched if smoothed is None else weight * watched + (1 - weight) * smoothed
            beta = kl_weight(step, cfg.warmup_steps)
            record = {"epoch": epoch, "epochs": cfg.epochs, "step": step, "beta": beta,
                      "train_loss": running / max(n_seen, 1), "test_loss": test_loss,
                      "test_loss_smoothed": smoothed, "seconds": time.perf_counter() - tic}
            history.append(record)
            if beta >= 1.0 and smoothed < best["loss"]:
                best = {"loss": smoothed, "epoch": epoch, "step": step, "state": copy.deepcopy(model.state_dict())}
            bar.set_postfix(train=f"{record['train_loss']:.1f}",
                            test=f"{test_loss:.1f}" if test_loss is not None else "-")
            if callback is not None:
                callback(record)
            if checkpoint:
                save_checkpoint(checkpoint, checkpoint_state(model, optimiser, epoch, history, best,
                                                             shuffler, step, smoothed))
            if best["step"] is not None and step - best["step"] >= cfg.patience_steps \
                    and step >= cfg.min_steps:
                status = "early_stopping"
                break
    except TrainingCancelled:
        status = "cancelled"
    finally:
        bar.close()
    if best["state"] is not None:
        model.load_state_dict(best["state"])
    model.eval()
    return {"history": history, "best_epoch": best["epoch"], "status": status}
