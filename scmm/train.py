"""The training loop: Adam with AMSGrad, KL warm-up, early stopping, checkpoints.

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

log = logging.getLogger(__name__)

#: version of the checkpoint layout (tensors + a JSON string of the rest)
CHECKPOINT_FORMAT = 1


@dataclass
class TrainConfig:
    """The training loop's concrete settings, made from a resolved :class:`scmm.settings.Settings`
    by :meth:`scmm.SCMM.train` (no defaults here: the presets are the one source)."""

    epochs: int
    lr: float
    warmup: int
    patience: int
    batch_size: int
    seed: int
    objective: str
    k_samples: int
    log_input: bool
    grad_clip: float | None
    compile: str | bool = "auto"

    def to_dict(self) -> dict:
        return asdict(self)


class TrainingCancelled(Exception):
    """Raised inside the loop when the cancel callback asks to stop."""


def pick_device(device: str | None = None) -> torch.device:
    """The requested device, else CUDA when available, else CPU."""
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def kl_weight(epoch: int, warmup: int) -> float:
    """Deterministic warm-up: beta = (epoch - 1) / warmup for 1-based epochs, capped at 1."""
    if warmup <= 0:
        return 1.0
    return min(1.0, (epoch - 1) / warmup)


def make_loss_fn(cfg: TrainConfig, device: torch.device) -> Callable:
    """The loss function of a step, compiled with ``torch.compile`` where asked and possible.

    ``compile="auto"`` compiles on CUDA only.  The compiled step sees static
    shapes only: the count terms are taken from the dense batch (the sparse
    non-zeros vary in length from batch to batch) and beta is passed as a
    tensor so that the warm-up does not trigger recompilation.  Any failure to
    compile falls back to the eager step with a logged warning.
    """
    def eager(model, xs, libs, nonzeros, beta):
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
    """Mean negative ELBO (beta = 1) over all cells of ``batches``."""
    model.eval()
    total, n = 0.0, 0
    for rows in batches.epoch(batch_size, shuffle=False, drop_last=False):
        xs, libs, nonzeros = batches.batch(rows)
        total += float(objective.loss(model, xs, libs, 1.0, cfg.objective, cfg.k_samples,
                                      cfg.log_input, nonzeros)) * len(rows)
        n += len(rows)
    model.train()
    return total / max(n, 1)


def save_checkpoint(path: Path, state: dict) -> None:
    """Write ``state`` atomically (temporary file beside ``path``, then rename)."""
    from .runfolder import replace_atomic
    path.parent.mkdir(parents=True, exist_ok=True)
    replace_atomic(lambda tmp: torch.save(state, tmp), path)


def checkpoint_state(model: MMVAE, optimiser, epoch: int, history: list, best: dict,
                     shuffler: torch.Generator) -> dict:
    """What :func:`fit` writes after an epoch: tensors (and the optimiser's state dict, which
    loads under ``weights_only=True``) plus a JSON string of everything else."""
    def finite(value):
        return value if not isinstance(value, float) or math.isfinite(value) else None

    meta = {"format": CHECKPOINT_FORMAT, "epoch": epoch,
            "history": [{k: finite(v) for k, v in rec.items()} for rec in history],
            "best_loss": best["loss"] if math.isfinite(best["loss"]) else None,
            "best_epoch": best["epoch"]}
    return {"meta": json.dumps(meta, allow_nan=False), "model": model.state_dict(),
            "optimiser": optimiser.state_dict(), "best_state": best["state"],
            "shuffler": shuffler.get_state(), "torch_rng": torch.get_rng_state()}


def read_checkpoint(path: str | Path, map_location=None, mmap: bool = False) -> dict:
    """The checkpoint at ``path`` loaded with ``weights_only=True``, its JSON state decoded.

    Returns the stored dict with ``meta`` replaced by the parsed
    ``{"epoch", "history", "best_loss", "best_epoch"}``.  A file that needs
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
    saved["meta"] = {"epoch": epoch, "history": history,
                     "best_loss": float(best_loss) if best_loss is not None else float("inf"),
                     "best_epoch": best_epoch}
    return saved


def fit(model: MMVAE, train: MultiModalBatches, test: MultiModalBatches | None, cfg: TrainConfig,
        progress: bool = True, callback: Callable[[dict], None] | None = None,
        should_stop: Callable[[], bool] | None = None, checkpoint: str | Path | None = None,
        resume: bool = False) -> dict:
    """Train ``model`` in place; return ``{"history", "best_epoch", "status"}``.

    - ``callback(record)`` is called after every epoch with the epoch's record
      (epoch, epochs, beta, train_loss, test_loss, seconds);
    - ``should_stop()`` is polled between batches; when it returns True the
      run stops with status "cancelled" (the best weights so far are kept);
    - ``checkpoint``: a file written after every epoch; with ``resume=True``
      training continues from it.

    Early stopping watches the test loss once the KL warm-up is over, with
    ``cfg.patience`` epochs of patience, and reloads the best weights at the end.
    """
    device = next(model.parameters()).device
    torch.manual_seed(cfg.seed)
    shuffler = torch.Generator().manual_seed(cfg.seed)
    optimiser = make_optimiser(model, cfg.lr)
    loss_fn = make_loss_fn(cfg, device)
    history: list[dict] = []
    best = {"loss": float("inf"), "epoch": None, "state": None}
    start_epoch = 1
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
        best = {"loss": meta["best_loss"], "epoch": meta["best_epoch"], "state": saved["best_state"]}
        start_epoch = meta["epoch"] + 1

    status = "completed"
    model.train()
    bar = tqdm(range(start_epoch, cfg.epochs + 1), desc="scMM", unit="epoch", disable=not progress,
               initial=start_epoch - 1, total=cfg.epochs)
    try:
        for epoch in bar:
            tic = time.perf_counter()
            beta = kl_weight(epoch, cfg.warmup)
            running, n_seen = 0.0, 0
            for rows in train.epoch(cfg.batch_size, shuffler):
                if should_stop is not None and should_stop():
                    raise TrainingCancelled
                xs, libs, nonzeros = train.batch(rows)
                loss = loss_fn(model, xs, libs, nonzeros, beta)
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                optimiser.step()
                running += float(loss.detach()) * len(rows)
                n_seen += len(rows)
            if not math.isfinite(running):
                raise FloatingPointError(f"training loss became {running} in epoch {epoch}; "
                                         "try a lower learning rate or grad_clip")
            test_loss = evaluate(model, test, cfg) if test is not None and test.n_cells else None
            record = {"epoch": epoch, "epochs": cfg.epochs, "beta": beta,
                      "train_loss": running / max(n_seen, 1), "test_loss": test_loss,
                      "seconds": time.perf_counter() - tic}
            history.append(record)
            watched = test_loss if test_loss is not None else record["train_loss"]
            if beta >= 1.0 and watched < best["loss"]:
                best = {"loss": watched, "epoch": epoch, "state": copy.deepcopy(model.state_dict())}
            bar.set_postfix(train=f"{record['train_loss']:.1f}",
                            test=f"{test_loss:.1f}" if test_loss is not None else "-")
            if callback is not None:
                callback(record)
            if checkpoint:
                save_checkpoint(checkpoint, checkpoint_state(model, optimiser, epoch, history, best,
                                                             shuffler))
            if best["epoch"] is not None and epoch - best["epoch"] >= cfg.patience:
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
