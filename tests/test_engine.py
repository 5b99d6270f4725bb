"""The engine on the simulated demo data: batches, objective, training, inference, run folders."""
import json

import anndata as ad
import mudata as md
import numpy as np
import pytest
import scipy.sparse as sp
import torch

import scmm
from scmm.batches import CSRRows
from scmm.module import objective
from scmm.settings import Settings
from scmm.train import kl_weight


@pytest.fixture(scope="module")
def demo():
    mdata = scmm.demo.simulate(n_cells=600, n_genes=300, seed=3)
    scmm.preprocess(mdata, n_top_genes=200)
    return mdata


@pytest.fixture(scope="module")
def trained(demo):
    model = scmm.SCMM(demo, device="cpu")
    model.train(epochs=3, warmup=1, batch_size=64, progress=False)
    model.get_latent()
    return model


def test_csr_rows_cut_dense_batches():
    rng = np.random.default_rng(0)
    matrix = sp.random(50, 30, density=0.2, format="csr", random_state=1, dtype=np.float32)
    matrix.data = np.ceil(matrix.data * 10)
    rows = CSRRows(matrix)
    pick = rng.choice(50, 17, replace=False)
    np.testing.assert_array_equal(rows.cut(torch.as_tensor(pick))[0].numpy(), matrix[pick].toarray())
    np.testing.assert_allclose(rows.library.numpy(), np.asarray(matrix.sum(1)).ravel())
    empty = CSRRows(sp.csr_matrix((3, 4), dtype=np.float32))
    assert empty.cut(torch.tensor([0, 2]))[0].abs().sum() == 0


def test_preprocess_selects_features_and_splits():
    mdata = scmm.demo.simulate(n_cells=400, n_genes=300, seed=1)
    scmm.preprocess(mdata, n_top_genes=100, test_fraction=0.25, seed=5)
    assert mdata["rna"].n_vars == 100 and mdata["prot"].n_vars == 18
    assert (mdata.obs["scmm_split"] == "test").sum() == 100
    again = scmm.demo.simulate(n_cells=400, n_genes=300, seed=1)
    scmm.preprocess(again, n_top_genes=100, test_fraction=0.25, seed=5)
    assert (again.obs["scmm_split"] == mdata.obs["scmm_split"]).all()
    lib = np.asarray(mdata["rna"].X.sum(1)).ravel()
    np.testing.assert_allclose(mdata["rna"].obs["scmm_library"], lib)


def test_top_peaks_fraction():
    from scmm.preprocess import select_top_peaks
    x = sp.csr_matrix(np.arange(40, dtype=np.float32).reshape(1, 40))
    keep = select_top_peaks(ad.AnnData(x), 0.25)
    assert keep.sum() == 10 and keep[-10:].all()


def reference_loss(model, xs, libs):
    """The stratified ELBO written plainly with torch.distributions, one encoder-decoder pair at a time."""
    D = torch.distributions
    posts = {n: model.encode(n, objective.normalise(xs[n], libs[n])) for n in model.names}
    prior = D.Laplace(torch.zeros(model.latent_dim), model.prior_scale())
    total = 0.0
    for n in model.names:
        loc, scale = posts[n]
        z = objective.laplace_rsample(loc, scale)
        log_lik = 0.0
        for target in model.names:
            mean, theta, gate = model.decode(target, z, libs[target])
            nb = D.NegativeBinomial(total_count=theta, probs=mean / (mean + theta), validate_args=False)
            log_lik = log_lik + nb.log_prob(xs[target]).sum(-1)
        experts = torch.stack([D.Laplace(l, s).log_prob(z).sum(-1) for l, s in posts.values()])
        log_q = torch.logsumexp(experts, 0) - np.log(len(posts))
        total = total + log_lik + prior.log_prob(z).sum(-1) - log_q
    return -(total / len(model.names)).mean()


def test_fast_objective_matches_reference_loss_and_gradients(trained, demo):
    model = trained.module.double()
    try:
        model.eval()
        xs = {n: torch.as_tensor(demo[n].X[:40].toarray(), dtype=torch.float64) for n in model.names}
        libs = {n: xs[n].sum(1) for n in model.names}
        torch.manual_seed(11)
        fast = objective.loss(model, xs, libs, beta=1.0)
        fast_grads = torch.autograd.grad(fast, list(model.parameters()), allow_unused=True)
        torch.manual_seed(11)
        ref = reference_loss(model, xs, libs)
        ref_grads = torch.autograd.grad(ref, list(model.parameters()), allow_unused=True)
        torch.testing.assert_close(fast, ref, rtol=1e-6, atol=1e-6)
        for a, b in zip(fast_grads, ref_grads):
            if a is not None or b is not None:
                torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    finally:
        model.float()


def test_iwae_and_naive_objectives_are_finite(trained, demo):
    model = trained.module
    xs = {n: torch.as_tensor(demo[n].X[:32].toarray()) for n in model.names}
    libs = {n: xs[n].sum(1) for n in model.names}
    for kwargs in ({"k_samples": 4}, {"objective": "naive"}):
        assert torch.isfinite(objective.loss(model, xs, libs, 1.0, **kwargs))
    with pytest.raises(ValueError, match="objective"):
        objective.loss(model, xs, libs, 1.0, objective="bogus")


def test_kl_warmup_schedule():
    assert [kl_weight(step, 4) for step in range(6)] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    assert kl_weight(0, 0) == 1.0
    from scmm.train import smoothing_weight
    assert smoothing_weight(7, 100) == 0.07 and smoothing_weight(1250, 100) == 1.0 and smoothing_weight(7, 0) == 1.0


def test_training_reduces_loss_and_is_deterministic(demo):
    losses, latents = [], []
    for _ in range(2):
        model = scmm.SCMM(demo, device="cpu")
        result = model.train(epochs=4, warmup=2, batch_size=64, seed=4, progress=False)
        losses.append([r["train_loss"] for r in result["history"]])
        latents.append(model.encode("rna"))
    assert losses[0][-1] < losses[0][0]
    assert losses[0] == losses[1]
    np.testing.assert_array_equal(latents[0], latents[1])


def test_checkpoint_resume_equals_uninterrupted_run(demo, tmp_path):
    full = scmm.SCMM(demo, device="cpu")
    full.train(epochs=4, warmup=2, batch_size=64, seed=2, progress=False)
    part = scmm.SCMM(demo, device="cpu")
    ckpt = tmp_path / "ckpt.pt"
    part.train(epochs=2, warmup=2, batch_size=64, seed=2, progress=False, checkpoint=ckpt)
    resumed = scmm.SCMM(demo, device="cpu")
    result = resumed.train(epochs=4, warmup=2, batch_size=64, seed=2, progress=False,
                           checkpoint=ckpt, resume=True)
    assert [r["epoch"] for r in result["history"]] == [1, 2, 3, 4]
    np.testing.assert_allclose(resumed.encode("prot"), full.encode("prot"), rtol=1e-5, atol=1e-5)


def test_cancel_and_callback(demo):
    seen = []
    model = scmm.SCMM(demo, device="cpu")
    result = model.train(epochs=10, batch_size=64, progress=False, callback=seen.append,
                         should_stop=lambda: len(seen) >= 2)
    assert result["status"] == "cancelled"
    assert len(result["history"]) == 2 and seen[0]["test_loss"] is not None


def test_early_stopping_reloads_best_weights(demo):
    model = scmm.SCMM(demo, device="cpu")
    result = model.train(epochs=30, warmup=0, patience=1, lr=5e-2, batch_size=64, progress=False)
    smoothed = [r["test_loss_smoothed"] for r in result["history"]]
    best = result["best_epoch"]
    assert smoothed[best - 1] == min(smoothed)    # the best of the smoothed test loss
    if result["status"] == "early_stopping":
        assert len(smoothed) == best + 1           # patience of one epoch
    tests = [r["test_loss"] for r in result["history"]]
    from scmm.train import TrainConfig, evaluate
    split = demo.obs["scmm_split"].to_numpy()
    torch.manual_seed(0)
    reloaded = evaluate(model.module, model._batches(split == "test"), TrainConfig(**model.train_config))
    assert abs(reloaded - tests[best - 1]) < 0.05 * abs(tests[best - 1])


def test_schedule_runs_in_steps_with_a_smoothed_test_loss(demo):
    """Warm-up over ``warmup_steps`` steps (not epochs), never stopping before ``min_steps``."""
    model = scmm.SCMM(demo, device="cpu", settings=Settings(warmup_steps=50, patience_steps=1, min_steps=150,
                                                           smooth_steps=200, lr=5e-2, batch_size=64))
    history = model.train(progress=False)["history"]
    per_epoch = history[0]["step"]
    n_train = int((demo.obs["scmm_split"] == "train").sum())
    assert per_epoch == n_train // 64 and [r["step"] for r in history[:3]] == [per_epoch, 2 * per_epoch, 3 * per_epoch]
    assert all(r["beta"] == min(1.0, r["step"] / 50) for r in history)   # beta after the epoch's last step
    assert history[-1]["step"] >= 150                   # min_steps: no early stop before
    raw, smoothed = history[1]["test_loss"], history[1]["test_loss_smoothed"]
    weight = per_epoch / 200
    assert smoothed == pytest.approx(weight * raw + (1 - weight) * history[0]["test_loss_smoothed"])


def test_latents_written_to_obsm(trained, demo):
    assert {"X_scmm", "X_scmm_rna", "X_scmm_prot"} <= set(demo.obsm)
    np.testing.assert_allclose(demo.obsm["X_scmm"], (demo.obsm["X_scmm_rna"] + demo.obsm["X_scmm_prot"]) / 2,
                               rtol=1e-6)
    assert demo.obsm["X_scmm"].shape == (demo.n_obs, 10)


def test_predict_means_and_sparse_samples(trained, demo):
    means = trained.predict("prot", from_modality="rna")
    assert means.shape == demo["prot"].shape and (means.X > 0).all()
    np.testing.assert_allclose(means.X.sum(1), trained.median_library["prot"], rtol=1e-4)
    draws = trained.predict("rna", from_modality="prot", kind="sample", seed=1)
    assert sp.issparse(draws.X) and draws.X.format == "csr"
    assert (draws.X.data >= 0).all() and np.allclose(draws.X.data, np.round(draws.X.data))
    again = trained.predict("rna", from_modality="prot", kind="sample", seed=1)
    assert (draws.X != again.X).nnz == 0


def test_query_features_aligned_by_name(trained, demo):
    rna = demo["rna"]
    reference = trained.predict("prot", from_modality="rna", adata=rna[:50].copy())
    shuffled = rna[:50, np.random.default_rng(0).permutation(rna.n_vars)].copy()
    np.testing.assert_allclose(trained.predict("prot", "rna", adata=shuffled).X, reference.X, rtol=1e-5)
    partial = rna[:50, 7:].copy()
    with pytest.warns(UserWarning, match="7 of 200 training features are missing"):
        out = trained.predict("prot", "rna", adata=partial)
    assert out.shape == (50, 18)
    stranger = ad.AnnData(sp.csr_matrix(np.ones((3, 2), np.float32)))
    stranger.var_names = ["nope1", "nope2"]
    with pytest.raises(ValueError, match="shares no feature names"):
        trained.predict("prot", "rna", adata=stranger)


def test_save_load_round_trip(trained, demo, tmp_path):
    run = trained.save(tmp_path / "run")
    assert {"config.json", "model.pt", "results.h5mu"} <= {p.name for p in run.iterdir()}
    config = json.loads((run / "config.json").read_text())
    assert config["scmm_version"] == scmm.__version__ and config["modalities"] == {"rna": "nb", "prot": "nb"}
    torch.load(run / "model.pt", weights_only=True)
    loaded = scmm.SCMM.load(run)
    np.testing.assert_array_equal(loaded.encode("rna", demo), trained.encode("rna", demo))
    np.testing.assert_array_equal(loaded.mdata.obsm["X_scmm"], demo.obsm["X_scmm"])
    assert loaded.history == trained.history


def test_encoder_dropout_acts_in_training_only_and_keeps_the_weight_names():
    from scmm.module.mmvae import MMVAE, ModalitySpec
    specs = [ModalitySpec("rna", 30, "nb", (16, 16)), ModalitySpec("prot", 5, "nb", (8,))]
    torch.manual_seed(0)
    plain, dropped = MMVAE(specs, 4), MMVAE(specs, 4, encoder_dropout=0.5)
    assert list(plain.state_dict()) == list(dropped.state_dict())   # old runs load into new modules
    dropped.load_state_dict(plain.state_dict())
    x = torch.rand(20, 30)
    plain.eval(), dropped.eval()
    torch.testing.assert_close(dropped.encode("rna", x), plain.encode("rna", x))   # no dropout in evaluation
    dropped.train()
    first, second = dropped.encode("rna", x)[0], dropped.encode("rna", x)[0]
    assert not torch.equal(first, second)
    assert not any(isinstance(m, torch.nn.Dropout) for m in dropped.decoders.modules())  # encoders only


def test_three_modalities_train():
    base = scmm.demo.simulate(n_cells=300, n_genes=150, seed=9)
    rna = base["rna"]
    rng = np.random.default_rng(0)
    atac = ad.AnnData(sp.csr_matrix(rng.poisson(0.3, size=(300, 120)).astype(np.float32)),
                      obs=rna.obs[[]].copy())
    atac.var_names = [f"chr1_{i * 1000}_{i * 1000 + 500}" for i in range(120)]
    mdata = md.MuData({"rna": rna.copy(), "prot": base["prot"].copy(), "atac": atac})
    scmm.preprocess(mdata, n_top_genes=100, peak_fraction=0.5)
    model = scmm.SCMM(mdata, device="cpu", hidden={"rna": [32], "prot": [16], "atac": [16]})
    assert model.likelihoods == {"rna": "nb", "prot": "nb", "atac": "zinb"}
    result = model.train(epochs=2, batch_size=32, progress=False)
    assert all(np.isfinite(r["train_loss"]) for r in result["history"])
    latents = model.get_latent()
    assert set(latents) == {"X_scmm", "X_scmm_rna", "X_scmm_prot", "X_scmm_atac"}
    peaks = model.predict("atac", from_modality="prot")
    assert peaks.shape == (mdata.n_obs, 60)


def test_model_rejects_unprepared_or_unknown_input():
    raw = scmm.demo.simulate(n_cells=100, n_genes=100)
    with pytest.raises(ValueError, match="preprocess"):
        scmm.SCMM(raw)
    scmm.preprocess(raw)
    with pytest.raises(KeyError, match="not in the data"):
        scmm.SCMM(raw, modalities={"rna": "nb", "adt": "nb"})
    with pytest.raises(ValueError, match="likelihood"):
        scmm.SCMM(raw, modalities={"rna": "poisson", "prot": "nb"})


def test_sparse_count_terms_match_dense_path(trained, demo):
    from scmm.batches import MultiModalBatches
    model = trained.module
    model.eval()
    batches = MultiModalBatches({n: demo[n].X for n in model.names})
    xs, libs, nonzeros = batches.batch(torch.arange(10, 60))
    results = []
    for nz in (nonzeros, None):
        torch.manual_seed(5)
        value = objective.loss(model, xs, libs, 0.7, nonzeros=nz)
        grads = torch.autograd.grad(value, [model.decoders["rna"].raw_theta, model.prior_logits])
        results.append((value, grads))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-5, atol=1e-3)
    for a, b in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_failed_compilation_falls_back_to_eager(demo, monkeypatch, caplog):
    def broken_compile(fn, **kwargs):
        def call(*args, **kw):
            raise RuntimeError("no compiler here")
        return call
    monkeypatch.setattr(torch, "compile", broken_compile)
    model = scmm.SCMM(demo, device="cpu")
    result = model.train(epochs=1, batch_size=64, compile=True, progress=False)
    assert result["status"] == "completed" and np.isfinite(result["history"][0]["train_loss"])
    assert "falling back to eager" in caplog.text


def test_epochs_raised_to_min_steps_on_small_data():
    from scmm.presets import epochs_for, get_preset
    cite = get_preset("cite")
    assert epochs_for(cite, n_train=128_000, batch_size=128) == 20       # paper-sized: paper's epochs
    assert epochs_for(cite, n_train=5_484, batch_size=128) == 96         # 42 steps an epoch
    assert epochs_for({"epochs": 5}, n_train=100, batch_size=500) == 5
