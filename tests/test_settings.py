"""Tests of the one settings schema (scmm.settings.Settings) and its path CLI / API / app job."""
from __future__ import annotations

import json

import pytest

from scmm import runfolder
from scmm.presets import PRESETS
from scmm.settings import Settings


def test_defaults_live_in_one_place_and_the_preset_fills_the_rest():
    s = Settings().resolve({"rna": "rna", "prot": "protein"})
    cite = PRESETS["cite"]
    assert s.preset == "cite" and s.latent_dim == 10
    keys = ("lr", "batch_size", "min_steps", "warmup_steps", "patience_steps", "smooth_steps")
    assert [getattr(s, k) for k in keys] == [cite[k] for k in keys]
    assert s.warmup is None and s.patience is None   # epochs: only when the user gives them
    assert s.hidden == {"rna": [200, 200, 200], "prot": [200, 200, 200]}
    assert s.likelihoods == {"rna": "nb", "prot": "nb"}
    atac = Settings(lr=1e-3).resolve({"rna": "rna", "atac": "atac"})
    assert atac.preset == "atac" and atac.lr == 1e-3 and atac.likelihoods["atac"] == "zinb"
    assert atac.hidden == {"rna": PRESETS["atac"]["hidden"]["rna"], "atac": PRESETS["atac"]["hidden"]["atac"]}


@pytest.mark.parametrize("values, message", [
    ({"epochs": -5}, "epochs must be an integer in [1, 100000], got -5"),
    ({"latent_dim": 0}, "latent_dim must be an integer in [1, 256], got 0"),
    ({"encoder_dropout": 0.95}, "encoder_dropout must be a number in [0, 0.9], got 0.95"),
    ({"encoder_dropout": -0.1}, "encoder_dropout must be a number in [0, 0.9], got -0.1"),
    ({"lr": 0.0}, "lr must be a number in (0, 10], got 0.0"),
    ({"preset": "../cite"}, "preset must be one of"),
    ({"hidden": {"rna": [200_000]}}, "layer size must be an integer in [1, 4096]"),
    ({"test_fraction": 1.0}, "test_fraction must be a number in [0, 0.9]"),
    ({"min_steps": -1}, "min_steps must be an integer >= 0"),
    ({"patience_steps": 0}, "patience_steps must be an integer >= 1"),
    ({"warmup_steps": 1.5}, "warmup_steps must be an integer >= 0"),
    ({"no_such": 1}, "unknown settings ['no_such']"),
])
def test_every_value_is_checked_once_on_construction(values, message):
    with pytest.raises(ValueError) as info:
        Settings.build(**values)
    assert message in str(info.value)
    with pytest.raises(ValueError):  # a copy is checked too
        Settings().replace(**{k: v for k, v in values.items() if k != "no_such"} or {"epochs": 0})


def test_schedule_is_in_steps_and_means_the_same_at_every_size():
    cite = PRESETS["cite"]
    for n_train in (945, 5_484, 160_000):
        plan = Settings().resolve({"rna": "rna", "prot": "protein"}).schedule(n_train)
        assert plan["warmup_steps"] == cite["warmup_steps"] and plan["patience_steps"] == cite["patience_steps"]
        assert plan["steps_per_epoch"] == n_train // 128
        assert plan["max_steps"] >= cite["min_steps"] and plan["min_steps"] == cite["min_steps"]
    assert Settings().resolve({"rna": "rna"}).schedule(160_000)["epochs"] == cite["epochs"]  # paper-sized
    # warm-up and patience given in epochs are converted for the data at hand; given epochs end min_steps
    plan = Settings(warmup=10, patience=5, epochs=50).resolve({"rna": "rna"}).schedule(945)
    assert (plan["warmup_steps"], plan["patience_steps"], plan["min_steps"], plan["max_steps"]) == (70, 35, 0, 350)


def test_settings_of_an_older_run_keep_their_epoch_schedule():
    old = {"preset": "cite", "latent_dim": 10, "warmup": 10, "patience": 10, "lr": 2e-3, "batch_size": 128,
           "min_steps": 4000}
    plan = Settings.from_dict(old).resolve({"rna": "rna"}).schedule(945)
    assert plan["warmup_steps"] == 70 and plan["patience_steps"] == 70


def test_runs_saved_before_encoder_dropout_are_read_as_trained_without_it():
    from scmm.settings import settings_of
    assert Settings().encoder_dropout == 0.2
    config = {"latent_dim": 10, "posterior_scale": "softplus", "modalities": {"rna": "nb"},
              "settings": {k: v for k, v in Settings().resolve({"rna": "rna"}).to_dict().items()
                           if k != "encoder_dropout"}}
    assert settings_of(config).encoder_dropout == 0.0
    config["settings"]["encoder_dropout"] = 0.3
    assert settings_of(config).encoder_dropout == 0.3


def test_round_trip_through_a_file(tmp_path):
    s = Settings.build(preset="atac", latent_dim=16, epochs=3, lr=1e-3, hidden={"rna": [64, 32]})
    s.write(tmp_path / "settings.json")
    assert Settings.read(tmp_path / "settings.json") == s
    (tmp_path / "bad.json").write_text(json.dumps({**s.to_dict(), "latent_dim": 0}))
    with pytest.raises(runfolder.RunFileError, match="bad.json: latent_dim must be"):
        Settings.read(tmp_path / "bad.json")


def test_the_cli_takes_a_settings_file_and_flags_override_it(tmp_path):
    from scmm.cli import build_parser, settings_from_args
    Settings.build(latent_dim=7, epochs=4).write(tmp_path / "s.json")
    args = build_parser().parse_args(["train", "d.h5mu", "--out", "r", "--settings", str(tmp_path / "s.json"),
                                      "--epochs", "2"])
    s = settings_from_args(args)
    assert (s.latent_dim, s.epochs) == (7, 2)
    args = build_parser().parse_args(["train", "d.h5mu", "--out", "r", "--epochs", "-5"])
    with pytest.raises(ValueError, match=r"^--epochs must be an integer in \[1, 100000\], got -5$"):
        settings_from_args(args)
    args = build_parser().parse_args(["train", "d.h5mu", "--out", "r", "--encoder-dropout", "0"])
    assert settings_from_args(args).encoder_dropout == 0.0
    args = build_parser().parse_args(["train", "d.h5mu", "--out", "r", "--encoder-dropout", "1"])
    with pytest.raises(ValueError, match=r"^--encoder-dropout must be a number in \[0, 0.9\], got 1.0$"):
        settings_from_args(args)


def test_an_app_job_trains_with_the_settings_file_it_was_given(tmp_path, monkeypatch):
    from app import jobs, processes
    from app.pages.train import form_settings
    from app.worker import train_command
    monkeypatch.setattr(processes, "spawn_session", lambda cmd, log: (_ for _ in ()).throw(OSError("not here")))
    settings = form_settings("", 12, 3, None)
    queue = jobs.JobQueue(tmp_path / "runs", max_running=1)
    record = queue.submit(tmp_path / "d.h5mu", "d.h5mu", settings)
    run = tmp_path / "runs" / record["run"]
    assert Settings.read(run / runfolder.SETTINGS_FILE) == settings
    cmd = train_command(runfolder.read_job(run), run)
    assert cmd[cmd.index("--settings") + 1] == str(run / runfolder.SETTINGS_FILE)
    assert not {"--epochs", "--latent-dim", "--lr", "--preset"} & set(cmd)  # no re-spelled flags
    with pytest.raises(ValueError, match="^Latent size must be an integer in"):
        form_settings("", 0, None, None)


def test_a_trained_model_records_its_resolved_settings(tmp_path):
    import scmm
    mdata = scmm.demo.simulate(n_cells=200, seed=1)
    scmm.preprocess(mdata, n_top_genes=200)
    model = scmm.SCMM(mdata, settings=Settings(latent_dim=4, lr=1e-3), device="cpu")
    model.train(epochs=1, progress=False)
    assert model.train_config["lr"] == 1e-3 and model.train_config["epochs"] == 1
    model.save(tmp_path / "run")
    saved = runfolder.read_config(tmp_path / "run")["settings"]
    assert Settings.from_dict(saved) == model.settings and saved["preset"] == "cite" and saved["epochs"] == 1
    assert scmm.SCMM.load(tmp_path / "run").settings == model.settings


def test_scmm_train_renames_and_types_modalities_from_the_settings(tmp_path):
    import mudata as md
    import scmm
    from scmm.cli import main
    demo = scmm.demo.simulate(n_cells=200, seed=3)
    md.MuData({"rna": demo.mod["rna"], "prot.v2": demo.mod["prot"]}).write(tmp_path / "x.h5mu")
    Settings.build(epochs=1, n_top_genes=200, modality_names={"prot.v2": "adt"},
                   kinds={"adt": "protein"}).write(tmp_path / "s.json")
    assert main(["train", str(tmp_path / "x.h5mu"), "--out", str(tmp_path / "run"), "--settings",
                 str(tmp_path / "s.json"), "--quiet"]) == 0
    config = runfolder.read_config(tmp_path / "run")
    assert [s["name"] for s in config["specs"]] == ["rna", "adt"]
    assert config["settings"]["kinds"] == {"rna": "rna", "adt": "protein"}


def test_small_data_warning_names_the_numbers():
    from scmm.settings import describe_schedule, small_data_warning
    assert small_data_warning(1000, 200) is None
    assert small_data_warning(999, 200) is not None
    text = small_data_warning(945, 189)
    assert text.startswith("Only 945 cells: with fewer than 1,000 cells the test split (189")
    assert "(adjusted Rand index 0.73 vs 0.94)" in text
    plan = Settings().resolve({"rna": "rna"}).schedule(945)
    text = describe_schedule(plan, 128)
    assert text.startswith(f"up to {plan['epochs']:,} epochs = {plan['max_steps']:,} optimiser steps of 128 cells (7 an")
    assert f"not before step {plan['min_steps']:,}" in text
