"""Safe on a shared server: hostile run files, bad options and full/read-only disks are refused
early with a clear message (the real CLI, run in-process through ``scmm.cli.main``)."""
from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import mudata as md
import pytest
import torch

import scmm
import scmm.model
import scmm.cli
from scmm import runfolder
from scmm.runfolder import RunFileError

# small and fast: 300 cells, 100 genes kept, one torch thread (2-core machines spin-wait otherwise)
FAST = ["--n-top-genes", "100", "--batch-size", "64", "--device", "cpu", "--quiet"]


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> Path:
    return scmm.demo.write_demo(tmp_path_factory.mktemp("data") / "demo.h5mu", n_cells=300, seed=0)


@pytest.fixture(scope="module")
def trained_run(data_file, tmp_path_factory) -> Path:
    """A run trained 2 epochs by ``scmm train --checkpoint --progress-file`` (copy it to change it)."""
    run = tmp_path_factory.mktemp("runs") / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            code = scmm.cli.main(["train", str(data_file), "--out", str(run), "--epochs", "2",
                                  "--checkpoint", "--progress-file", str(run / "progress.json"),
                                  *FAST])
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    return run


def copy_run(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / "run"))


def train(data, out, *options) -> int:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return scmm.cli.main(["train", str(data), "--out", str(out), *FAST, *options])


class Hostile:
    """Unpickling this runs ``open(marker, "w")``: it creates the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


# ----------------------------------------------------------------- checkpoint
def test_hostile_checkpoint_is_refused_and_never_run(data_file, tmp_path, capsys, monkeypatch):
    # the payload is real: loading it the old way (weights_only=False) creates the marker
    probe_marker = tmp_path / "probe-marker"
    torch.save({"epoch": 1, "payload": Hostile(probe_marker)}, tmp_path / "probe.pt")
    torch.load(tmp_path / "probe.pt", weights_only=False)
    assert probe_marker.exists()

    run, marker = tmp_path / "run", tmp_path / "PWNED"
    run.mkdir()
    torch.save({"epoch": 1, "payload": Hostile(marker)}, run / runfolder.CHECKPOINT_FILE)
    read = []
    monkeypatch.setattr(scmm, "read", lambda *a, **k: read.append(a) or pytest.fail("data read"))
    assert train(data_file, run, "--epochs", "3", "--resume") == 2
    err = capsys.readouterr().err
    assert err.startswith("scmm train: error: checkpoint.pt: refused")
    assert "weights_only" in err and "delete it" in err
    assert not marker.exists() and not read
    assert not (run / runfolder.CONFIG_FILE).exists()


def test_hostile_checkpoint_refused_by_the_api(tmp_path):
    mdata = scmm.demo.simulate(n_cells=120, n_genes=100, seed=1)
    scmm.preprocess(mdata, n_top_genes=40)
    model = scmm.SCMM(mdata, device="cpu")
    marker, ckpt = tmp_path / "PWNED", tmp_path / "ckpt.pt"
    torch.save({"model": Hostile(marker)}, ckpt)
    with pytest.raises(RunFileError, match="refused"):
        model.train(epochs=2, progress=False, checkpoint=ckpt, resume=True)
    assert not marker.exists()
    # a plain-tensor file that is not a checkpoint of this version is refused too
    torch.save({"epoch": 3, "history": []}, ckpt)
    with pytest.raises(RunFileError, match="no JSON state"):
        model.train(epochs=2, progress=False, checkpoint=ckpt, resume=True)


def test_checkpoint_holds_only_tensors_and_json(trained_run):
    saved = torch.load(trained_run / runfolder.CHECKPOINT_FILE, weights_only=True)
    meta = json.loads(saved["meta"])
    assert meta["epoch"] == 2 and [r["epoch"] for r in meta["history"]] == [1, 2]
    assert not list(trained_run.glob(".checkpoint*"))       # written through a temporary file


def test_resume_keeps_the_whole_history(trained_run, data_file, tmp_path):
    first = runfolder.read_progress(trained_run)
    assert first["status"] == "done" and [r["epoch"] for r in first["history"]] == [1, 2]
    run = copy_run(trained_run, tmp_path)
    progress = tmp_path / "progress.json"
    assert train(data_file, run, "--epochs", "4", "--resume", "--progress-file", str(progress)) == 0
    raw = json.loads(progress.read_text())
    assert "pid" not in raw and "pid" not in json.loads((trained_run / "progress.json").read_text())
    state = runfolder.read_progress(tmp_path)
    assert state["status"] == "done" and state["epoch"] == 4
    assert [r["epoch"] for r in state["history"]] == [1, 2, 3, 4]
    # the first two epochs are the ones the first run trained, not new ones
    assert state["history"][:2] == first["history"]
    config = runfolder.read_config(run)
    assert [r["epoch"] for r in config["history"]] == [1, 2, 3, 4]


# ------------------------------------------------------------- config.json
def base_config(trained_run) -> dict:
    return json.loads((trained_run / runfolder.CONFIG_FILE).read_text())


def hostile_configs(config):
    huge = json.loads(json.dumps(config))
    huge["specs"][0]["hidden"] = [200_000]
    zero = json.loads(json.dumps(config))
    zero["latent_dim"] = 0
    return {"hidden 200000": (json.dumps(huge), "hidden"),
            "latent_dim 0": (json.dumps(zero), "latent_dim"),
            "a list": ("[1, 2]", "JSON object"),
            "deeply nested": ("[" * 100_000, "nested too deeply|not valid JSON")}


@pytest.mark.parametrize("case", ["hidden 200000", "latent_dim 0", "a list", "deeply nested"])
def test_hostile_config_refused_before_allocation(trained_run, tmp_path, case, capsys, monkeypatch):
    text, reason = hostile_configs(base_config(trained_run))[case]
    run = copy_run(trained_run, tmp_path)
    (run / runfolder.CONFIG_FILE).write_text(text)

    def no_model(*args, **kwargs):
        pytest.fail("a model was built from a hostile config")
    monkeypatch.setattr(scmm.model, "MMVAE", no_model)
    with pytest.raises(RunFileError, match=reason) as info:
        scmm.SCMM.load(run)
    assert str(info.value).startswith("config.json: ")
    assert scmm.cli.main(["embed", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("scmm embed: error: config.json: ") and "Traceback" not in err
    assert scmm.cli.main(["analyze", str(run), "--quiet"]) == 2
    assert "config.json" in capsys.readouterr().err


def test_weights_that_do_not_fit_the_config_are_refused(trained_run, tmp_path):
    run = copy_run(trained_run, tmp_path)
    config = base_config(trained_run)
    config["latent_dim"] = 12
    (run / runfolder.CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(RunFileError, match="'latent_dim' = 12 disagrees with the settings"):
        scmm.SCMM.load(run)
    config["settings"]["latent_dim"] = 12
    (run / runfolder.CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(RunFileError, match="model.pt: does not fit"):
        scmm.SCMM.load(run)


# ----------------------------------------------------------------- options
BAD_OPTIONS = [
    (["--epochs", "-5"], "--epochs must be an integer in [1, 100000], got -5"),
    (["--epochs", "0"], "--epochs must be an integer in [1, 100000], got 0"),
    (["--latent-dim", "0"], "--latent-dim must be an integer in [1, 256], got 0"),
    (["--batch-size", "0"], "--batch-size must be an integer in [1, 65536], got 0"),
    (["--k-samples", "0"], "--k-samples must be an integer in [1, 1000], got 0"),
    (["--test-fraction", "1.0"], "--test-fraction must be a number in [0, 0.9], got 1.0"),
    (["--lr", "0"], "--lr must be a number in (0, 10], got 0.0"),
    (["--lr", "nan"], "--lr must be a number in (0, 10], got nan"),
    (["--peak-fraction", "0"], "--peak-fraction must be a number in (0, 1], got 0.0"),
    (["--n-top-genes", "0"], "--n-top-genes must be an integer >= 1, got 0"),
    (["--likelihood", "rna=poisson"], "--likelihood must be MOD=nb or MOD=zinb, got 'rna=poisson'"),
]


@pytest.mark.parametrize("options,message", BAD_OPTIONS, ids=[" ".join(o) for o, _ in BAD_OPTIONS])
def test_bad_option_exits_2_and_writes_nothing(data_file, tmp_path, capsys, monkeypatch,
                                               options, message):
    monkeypatch.setattr(scmm, "read", lambda *a, **k: pytest.fail("the data was read"))
    out = tmp_path / "runs" / "R"
    code = scmm.cli.main(["train", str(data_file), "--out", str(out), "--progress-file",
                          str(tmp_path / "progress.json"), "--checkpoint", *options])
    assert code == 2
    assert capsys.readouterr().err.strip() == f"scmm train: error: {message}"
    assert list(tmp_path.iterdir()) == []          # no run folder, no parent, no progress file


def test_api_options_are_checked_with_their_keyword_names():
    mdata = scmm.demo.simulate(n_cells=120, n_genes=100, seed=1)
    with pytest.raises(ValueError, match=r"^test_fraction must be a number in \[0, 0.9\], got 1.0$"):
        scmm.preprocess(mdata, test_fraction=1.0)
    with pytest.raises(ValueError, match=r"^peak_fraction must be a number in \(0, 1\], got 1.5$"):
        scmm.preprocess(mdata, peak_fraction=1.5)
    scmm.preprocess(mdata, n_top_genes=40)
    with pytest.raises(ValueError, match=r"^latent_dim must be an integer in \[1, 256\], got 0$"):
        scmm.SCMM(mdata, latent_dim=0, device="cpu")
    with pytest.raises(ValueError, match=r"hidden\['rna'\] layer size must be an integer in \[1, 4096\]"):
        scmm.SCMM(mdata, hidden={"rna": [200_000]}, device="cpu")
    with pytest.raises(ValueError, match="at most|1 to 8 layer sizes"):
        scmm.SCMM(mdata, hidden={"rna": [8] * 9}, device="cpu")
    model = scmm.SCMM(mdata, device="cpu")
    for kwargs, message in [({"epochs": -5}, r"^epochs must be an integer in \[1, 100000\], got -5$"),
                            ({"lr": 11.0}, r"^lr must be a number in \(0, 10\], got 11.0$"),
                            ({"batch_size": 0}, r"^batch_size must be an integer in \[1, 65536\]"),
                            ({"k_samples": 1001}, r"^k_samples must be an integer in \[1, 1000\]"),
                            ({"warmup": -1}, r"^warmup must be an integer >= 0, got -1$"),
                            ({"patience": 0}, r"^patience must be an integer >= 1, got 0$"),
                            ({"objective": "elbo"}, r"^objective must be one of")]:
        with pytest.raises(ValueError, match=message):
            model.train(progress=False, **kwargs)
    assert model.history == [] and model.status == "untrained"


# ------------------------------------------------------- read-only / full disk
def test_unwritable_output_parent_fails_before_reading(data_file, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(scmm, "read", lambda *a, **k: pytest.fail("the data was read"))
    blocker = tmp_path / "runs"
    blocker.write_text("a file where the runs folder should be")   # fails for root too
    assert train(data_file, blocker / "R", "--epochs", "1") == 2
    err = capsys.readouterr().err
    assert err.startswith(f"scmm train: error: cannot write to {blocker}")
    assert blocker.read_text().startswith("a file")


def test_read_only_runs_folder_fails_before_reading(data_file, capsys, monkeypatch):
    """sysfs refuses new files even to root: a read-only runs folder for every user."""
    monkeypatch.setattr(scmm, "read", lambda *a, **k: pytest.fail("the data was read"))
    runs = Path("/sys/kernel")
    assert train(data_file, runs / "R", "--epochs", "1") == 2
    assert "cannot write to" in capsys.readouterr().err and not (runs / "R").exists()


def test_save_checks_space_and_names_the_folder(trained_run, tmp_path, monkeypatch):
    model = scmm.SCMM.load(trained_run)
    monkeypatch.setattr(runfolder, "free_bytes", lambda folder: 1000)
    with pytest.raises(OSError, match="not enough free disk space"):
        model.save(tmp_path / "full" / "run")
    assert not (tmp_path / "full" / "run").exists()
    monkeypatch.undo()

    def disk_full(self, *args, **kwargs):
        Path(args[0]).write_bytes(b"partial")
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(md.MuData, "write", disk_full)
    target = tmp_path / "disk" / "run"
    with pytest.raises(OSError, match=f"could not save the run to {target}: No space left") as info:
        model.save(target)
    assert info.value.errno == 28
    assert list((tmp_path / "disk").iterdir()) == []      # the staging folder is gone


def test_failed_analysis_write_leaves_old_results_and_no_temp_file(trained_run, tmp_path, capsys,
                                                                   monkeypatch):
    run = copy_run(trained_run, tmp_path)
    before = (run / runfolder.RESULTS_FILE).read_bytes()
    written = []

    def disk_full(self, path, *args, **kwargs):
        written.append(Path(path))
        Path(path).write_bytes(b"partial h5mu")
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(md.MuData, "write", disk_full)
    for command in (["cluster", str(run)], ["analyze", str(run), "--no-umap", "--quiet"]):
        assert scmm.cli.main(command) == 2
        assert "No space left on device" in capsys.readouterr().err
    assert len(written) == 2 and all(p.parent == run and p.name.startswith(".results.") for p in written)
    assert (run / runfolder.RESULTS_FILE).read_bytes() == before
    leftovers = [p.name for p in run.rglob("*") if ".tmp" in p.name or p.name.startswith(".results")]
    assert leftovers == []
    assert not runfolder.is_analysed(run)


def test_analysis_needs_room_for_a_second_results_file(trained_run, tmp_path, capsys, monkeypatch):
    run = copy_run(trained_run, tmp_path)
    size = (run / runfolder.RESULTS_FILE).stat().st_size
    monkeypatch.setattr(runfolder, "free_bytes", lambda folder: size)
    monkeypatch.setattr(scmm.SCMM, "load", lambda *a, **k: pytest.fail("loaded without room"))
    assert scmm.cli.main(["analyze", str(run), "--quiet"]) == 2
    assert "not enough free disk space" in capsys.readouterr().err


def test_analysis_writes_strict_json_summary(trained_run, tmp_path):
    from scmm.tl import analyze
    run = copy_run(trained_run, tmp_path)
    summary = analyze(run, umap=False)
    assert runfolder.is_analysed(run)
    saved = runfolder.read_json(run / runfolder.ANALYSIS_DIR / runfolder.SUMMARY_FILE)
    assert saved["n_cells"] == summary["n_cells"]
    assert not [p for p in run.rglob("*") if ".tmp" in p.name]


def test_train_prints_the_plan_and_warns_on_small_data(data_file, tmp_path, capsys):
    assert train(data_file, tmp_path / "small", "--epochs", "1", "--precision", "fp32") == 0
    err = capsys.readouterr().err
    assert "plan: 300 cells (240 for training), preset cite, fp32 on cpu: up to 1 epochs = 3 optimiser steps" in err
    assert "KL warm-up" in err and "early stopping after" in err
    assert "warning: Only 300 cells: with fewer than 1,000 cells the test split (60 cells) is small" in err
