"""Command line: ``scmm train | embed | predict | demo`` (plus the analyses of ``scmm.tl``).

Run ``scmm COMMAND --help`` for the options of each.
"""
from __future__ import annotations

import argparse
import math
import signal
import sys
import time
from pathlib import Path

from .options import option_name
from .precision import choose_precision
from .presets import PRESETS
from .settings import Settings, describe_schedule, small_data_warning
from .runfolder import CHECKPOINT_FILE, LATENT_KEY, SPLIT_KEY, check_writable, write_json_atomic


class ProgressFile:
    """Writes the training state to a JSON file after every epoch (the app polls it).

    ``history``: the epochs a resumed run already has (from its checkpoint), so
    the file always holds the whole run.  No process id is written: nothing
    reads a pid from a run folder.
    """

    def __init__(self, path: str | None, total_epochs: int, history: list[dict] | None = None):
        self.path = Path(path) if path else None
        history = [_finite(rec) for rec in history or []]
        self.state = {"status": "running", "epoch": history[-1]["epoch"] if history else 0,
                      "epochs": total_epochs, "history": history, "started": time.time(),
                      "message": ""}
        self.write()

    def write(self, **changes) -> None:
        self.state.update(changes)
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(self.path, self.state)

    def __call__(self, record: dict) -> None:
        self.state["history"].append(_finite(record))
        self.write(epoch=record["epoch"])


def _finite(record: dict) -> dict:
    """``record`` with NaN and infinite numbers as None (progress.json is strict JSON)."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}


#: settings a ``scmm train`` flag sets (flag --a-b <-> field a_b)
SETTINGS_FLAGS = ("preset", "latent_dim", "encoder_dropout", "epochs", "lr", "batch_size", "objective", "k_samples",
                  "n_top_genes", "peak_fraction", "test_fraction", "seed")


def settings_from_args(args) -> Settings:
    """The run's :class:`~scmm.settings.Settings`: ``--settings FILE`` and/or the flags given.

    Validated once, by ``Settings`` itself; a bad value's message names the flag
    (``--epochs must be ...``).  Nothing is read or written.
    """
    likelihoods = {}
    for item in args.likelihood or []:
        name, sep, value = item.partition("=")
        if not sep or not name or value not in ("nb", "zinb"):
            raise ValueError(f"--likelihood must be MOD=nb or MOD=zinb, got {item!r}")
        likelihoods[name] = value
    given = {name: getattr(args, name) for name in SETTINGS_FLAGS}
    try:
        base = Settings.read(args.settings) if args.settings else Settings()
        return base.replace(likelihoods=likelihoods or None, **given)
    except ValueError as err:
        field, _, rest = str(err).partition(" ")
        if field in SETTINGS_FLAGS and rest.startswith("must"):
            raise ValueError(f"{option_name(field, cli=True)} {rest}") from None
        raise


def cmd_train(args) -> int:
    settings = settings_from_args(args)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {out} exists and is not a folder")
    # a read-only or missing runs folder fails now, not after hours of training
    check_writable(out.parent)
    if out.exists():
        check_writable(out)
    checkpoint = out / CHECKPOINT_FILE if args.checkpoint or args.resume else None
    history = []
    if args.resume and checkpoint.exists():
        from .train import read_checkpoint   # refuses a hostile file before any data is read
        history = read_checkpoint(checkpoint, map_location="cpu", mmap=True)["meta"]["history"]

    import scmm
    naming = {"modality_names": settings.modality_names or None, "kinds": settings.kinds or None} \
        if args.data else {}
    mdata = scmm.io.read_modalities(args.data, args.modality, **naming)
    scmm.preprocess(mdata, n_top_genes=settings.n_top_genes, peak_fraction=settings.peak_fraction,
                    test_fraction=settings.test_fraction, seed=settings.seed)
    model = scmm.SCMM(mdata, settings=settings, device=args.device)
    n_test = int((mdata.obs[SPLIT_KEY] == "test").sum())
    precision = choose_precision(args.precision, model.device)
    print(f"plan: {mdata.n_obs:,} cells ({mdata.n_obs - n_test:,} for training), preset {model.preset}, "
          f"{precision} on {model.device}: {describe_schedule(model.schedule(), model.settings.batch_size)}",
          file=sys.stderr)
    warning = small_data_warning(mdata.n_obs, n_test)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    progress = ProgressFile(args.progress_file, model.planned_epochs(), history=history)
    cancel_file = Path(args.cancel_file) if args.cancel_file else None
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))

    def should_stop() -> bool:
        return stop["now"] or (cancel_file is not None and cancel_file.exists())

    try:
        result = model.train(progress=not args.quiet, callback=progress, should_stop=should_stop,
                             checkpoint=checkpoint, resume=args.resume, precision=args.precision)
        if result["status"] == "cancelled":
            progress.write(status="cancelled", message="cancelled by the user")
            print(f"cancelled after {len(result['history'])} epochs; nothing saved", file=sys.stderr)
            return 130
        progress.write(status="saving", message="computing latents")
        model.get_latent()
        model.save(out)
        progress.write(status="done", message=f"saved to {out}", finished=time.time())
    except BaseException as err:
        progress.write(status="failed", message=f"{type(err).__name__}: {err}"[:2000])
        raise
    best = (f"best epoch {result['best_epoch']}" if result["best_epoch"] is not None else
            "no best epoch: the KL warm-up never finished, so the last weights are kept")
    print(f"{result['status']} after {len(result['history'])} epochs ({best}); run saved to {out}")
    return 0


def cmd_embed(args) -> int:
    import scmm
    model = scmm.SCMM.load(args.run, device=args.device)
    if args.data:
        mdata = scmm.read(*args.data.split(","))
        latents = model.get_latent(mdata)
    else:
        latents = model.get_latent()
        model.save(args.run)
    if args.csv:
        import pandas as pd
        obs = (mdata if args.data else model.mdata).obs_names
        table = pd.DataFrame(latents[LATENT_KEY], index=obs,
                             columns=[f"z{i + 1}" for i in range(model.latent_dim)])
        table.to_csv(args.csv)
        print(f"joint latent written to {args.csv}")
    print("latents: " + ", ".join(f"{k} {v.shape}" for k, v in latents.items()))
    return 0


def cmd_predict(args) -> int:
    import scmm
    model = scmm.SCMM.load(args.run, device=args.device)
    query = scmm.read_query(args.query, modality=args.source) if args.query else None
    out = model.predict(args.target, from_modality=args.source, adata=query, kind=args.kind,
                        library=args.library)
    target = Path(args.out)
    if target.suffix == ".csv":
        import pandas as pd
        values = out.X.toarray() if hasattr(out.X, "toarray") else out.X
        pd.DataFrame(values, index=out.obs_names, columns=out.var_names).to_csv(target)
    else:
        out.write_h5ad(target)
    print(f"{args.target} predicted from {args.source} for {out.n_obs} cells -> {target}")
    return 0


def cmd_demo(args) -> int:
    from scmm.demo import write_demo
    path = write_demo(args.out, n_cells=args.n_cells, seed=args.seed)
    print(f"demo dataset at {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scmm", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="preprocess a dataset, train scMM, save a run folder")
    train.add_argument("data", nargs="?", default=None,
                       help=".h5mu, 10x .h5 / mtx folder, folder of .mtx files, or .h5ad / .mtx[.gz] / "
                            ".csv[.gz] / .tsv[.gz] files (comma-separated); or use --modality")
    train.add_argument("--modality", action="append", default=None,
                       metavar="NAME[:KIND]=FILE",
                       help="one modality per flag (repeatable, instead of DATA): its name, optional "
                            "kind (rna, protein, atac) and file (.h5ad, .mtx[.gz], .csv/.tsv[.gz]; "
                            "a Matrix Market file as MATRIX or MATRIX,FEATURES,BARCODES), e.g. "
                            "--modality rna=rna.h5ad --modality prot:protein=adt.csv.gz")
    train.add_argument("--out", required=True, help="run folder to write")
    train.add_argument("--settings", default=None, metavar="FILE",
                       help="settings JSON (scmm.settings.Settings; the app's jobs pass theirs so); "
                            "flags given beside it override it")
    train.add_argument("--preset", choices=sorted(PRESETS), default=None,
                       help="paper preset (default: atac when a modality is ATAC, else cite)")
    train.add_argument("--likelihood", action="append", metavar="MOD=nb|zinb",
                       help="likelihood of a modality (repeatable)")
    defaults = Settings()
    train.add_argument("--latent-dim", type=int, default=None, help=f"latent size (default {defaults.latent_dim})")
    train.add_argument("--encoder-dropout", type=float, default=None,
                       help=f"dropout rate of the encoders' hidden layers in training (default "
                            f"{defaults.encoder_dropout}; 0: the paper's network)")
    train.add_argument("--epochs", type=int, default=None,
                       help="epochs (default: the preset's, raised to its min_steps optimiser steps)")
    train.add_argument("--lr", type=float, default=None, help="learning rate (default: the preset's)")
    train.add_argument("--batch-size", type=int, default=None, help="batch size (default: the preset's)")
    train.add_argument("--objective", choices=["stratified", "naive"], default=None,
                       help=f"default {defaults.objective}")
    train.add_argument("--k-samples", type=int, default=None,
                       help=f"importance samples (IWAE) per cell (default {defaults.k_samples})")
    train.add_argument("--n-top-genes", type=int, default=None, help=f"default {defaults.n_top_genes}")
    train.add_argument("--peak-fraction", type=float, default=None, help=f"default {defaults.peak_fraction}")
    train.add_argument("--test-fraction", type=float, default=None, help=f"default {defaults.test_fraction}")
    train.add_argument("--seed", type=int, default=None, help=f"default {defaults.seed}")
    train.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    train.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto",
                       help="auto (default): bf16 autocast of the networks where the device computes bf16 "
                            "natively (detected), else fp32")
    train.add_argument("--checkpoint", action="store_true", help="write OUT/checkpoint.pt every epoch")
    train.add_argument("--resume", action="store_true",
                       help="continue from OUT/checkpoint.pt (implies --checkpoint)")
    train.add_argument("--progress-file", default=None, help="JSON file updated every epoch")
    train.add_argument("--cancel-file", default=None, help="training stops when this file appears")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(func=cmd_train)

    embed = sub.add_parser("embed", help="write latents of a run's data (or of another dataset)")
    embed.add_argument("run")
    embed.add_argument("--data", default=None, help="embed this dataset instead of the run's")
    embed.add_argument("--csv", default=None, help="also write the joint latent as CSV")
    embed.add_argument("--device", default=None)
    embed.set_defaults(func=cmd_embed)

    predict = sub.add_parser("predict", help="cross-modal generation from one modality")
    predict.add_argument("run")
    predict.add_argument("--target", required=True, help="modality to generate, e.g. prot")
    predict.add_argument("--from", dest="source", required=True, help="modality given, e.g. rna")
    predict.add_argument("--query", default=None, help="one-modality dataset (default: the run's data)")
    predict.add_argument("--kind", choices=["mean", "sample"], default="mean")
    predict.add_argument("--library", type=float, default=None,
                         help="library size of the generated modality (default: training median)")
    predict.add_argument("--out", required=True, help=".h5ad or .csv")
    predict.add_argument("--device", default=None)
    predict.set_defaults(func=cmd_predict)

    demo = sub.add_parser("demo", help="write the built-in simulated CITE-seq dataset")
    demo.add_argument("--out", default="data/demo.h5mu")
    demo.add_argument("--n-cells", type=int, default=3000)
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=cmd_demo)

    from .tl.cli import add_subcommands
    add_subcommands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``scmm`` console script."""
    args = build_parser().parse_args(argv)
    from .io import ReadError
    try:
        return args.func(args)
    except (ReadError, OSError, KeyError, ValueError) as err:
        print(f"scmm {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
