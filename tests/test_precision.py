"""Mixed precision: the automatic choice follows the hardware, and bf16 changes only the networks' matmuls."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import scmm
from scmm import precision
from scmm.module import objective


@pytest.fixture(scope="module")
def demo():
    mdata = scmm.demo.simulate(n_cells=600, n_genes=300, seed=3)
    scmm.preprocess(mdata, n_top_genes=200)
    return mdata


def test_auto_follows_native_bf16_and_forcing_works(monkeypatch):
    cpu = torch.device("cpu")
    expected = "bf16" if precision.cpu_has_native_bf16() else "fp32"
    assert precision.choose_precision("auto", cpu) == expected
    precision.cpu_has_native_bf16.cache_clear()
    monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx2", "avx512f", "avx512_bf16"})
    assert precision.choose_precision("auto", cpu) == "bf16"
    precision.cpu_has_native_bf16.cache_clear()
    monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx2", "fma"})
    assert precision.choose_precision("auto", cpu) == "fp32"
    assert precision.choose_precision("bf16", cpu) == "bf16" and precision.choose_precision("fp32", cpu) == "fp32"
    with pytest.raises(ValueError, match="precision must be one of"):
        precision.choose_precision("fp16", cpu)
    precision.cpu_has_native_bf16.cache_clear()


def test_bf16_autocast_keeps_the_likelihood_in_fp32(demo):
    model = scmm.SCMM(demo, device="cpu")
    batches = model._batches(demo.obs["scmm_split"].to_numpy() == "train")
    xs, libs, nonzeros = batches.batch(torch.arange(128))
    torch.manual_seed(0)
    exact = objective.loss(model.module, xs, libs, 1.0, nonzeros=nonzeros)
    with precision.autocast("bf16", torch.device("cpu")):
        log_prop, _ = model.module.decoders["rna"](torch.zeros(4, model.latent_dim))
        loc, scale = model.module.encoders["prot"](torch.ones(4, demo["prot"].n_vars))
        torch.manual_seed(0)
        mixed = objective.loss(model.module, xs, libs, 1.0, nonzeros=nonzeros)
    assert log_prop.dtype == loc.dtype == scale.dtype == mixed.dtype == torch.float32
    assert abs(float(mixed) - float(exact)) < 1e-2 * abs(float(exact))   # bf16 has ~3 significant digits


def test_training_in_bf16_learns_is_deterministic_and_is_recorded(demo):
    runs = []
    for prec in ("bf16", "bf16", "fp32"):
        model = scmm.SCMM(demo, device="cpu")
        result = model.train(epochs=3, batch_size=64, seed=1, precision=prec, progress=False)
        runs.append([r["train_loss"] for r in result["history"]])
    assert np.all(np.isfinite(runs[0])) and runs[0][-1] < runs[0][0]
    assert runs[0] == runs[1]                                  # same machine, same threads: bitwise
    assert runs[0] != runs[2]                                  # but not the fp32 numbers ...
    np.testing.assert_allclose(runs[0], runs[2], rtol=0.05)    # ... though close to them
    model = scmm.SCMM(demo, device="cpu")
    model.train(epochs=1, batch_size=64, precision="bf16", progress=False)
    assert model.train_config["precision"] == "bf16"
    assert model.encode("rna").dtype == np.float32             # inference stays fp32
