"""Log-likelihoods written in torch, against torch.distributions and scipy.stats."""
import numpy as np
import pytest
import scipy.stats as st
import torch

from scmm.module import distributions as dist


@pytest.fixture
def rng():
    return np.random.default_rng(7)


def test_laplace_log_prob_matches_torch(rng):
    loc = torch.tensor(rng.normal(size=(50, 4)))
    scale = torch.tensor(rng.uniform(0.1, 3, size=(50, 4)))
    z = torch.tensor(rng.normal(scale=3, size=(50, 4)))
    ref = torch.distributions.Laplace(loc, scale).log_prob(z)
    torch.testing.assert_close(dist.laplace_log_prob(z, loc, scale), ref)


def test_laplace_kl_matches_monte_carlo(rng):
    p = torch.distributions.Laplace(torch.tensor(0.7), torch.tensor(0.5))
    q = torch.distributions.Laplace(torch.tensor(-0.3), torch.tensor(1.7))
    z = p.sample((400_000,))
    mc = (p.log_prob(z) - q.log_prob(z)).mean()
    exact = dist.laplace_kl(p.loc, p.scale, q.loc, q.scale)
    assert abs(float(mc - exact)) < 0.01


def test_laplace_rsample_distribution():
    torch.manual_seed(0)
    loc, scale = torch.full((200_000,), 1.5), torch.full((200_000,), 0.8)
    draws = dist.laplace_rsample(loc, scale).numpy()
    assert st.kstest(draws, st.laplace(loc=1.5, scale=0.8).cdf).pvalue > 1e-3


def test_nb_log_prob_matches_scipy(rng):
    x = rng.poisson(5, size=(40, 30)).astype(np.float64)
    mu = rng.uniform(0.01, 50, size=(40, 30))
    theta = rng.uniform(0.05, 20, size=(30,))
    ours = dist.nb_log_prob(torch.tensor(x), torch.tensor(mu), torch.tensor(theta)).numpy()
    ref = st.nbinom.logpmf(x, theta, theta / (theta + mu))
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-6)


def test_nb_log_prob_matches_torch_distribution(rng):
    x = torch.tensor(rng.poisson(3, size=(20, 10)), dtype=torch.float64)
    mu = torch.tensor(rng.uniform(0.1, 10, size=(20, 10)))
    theta = torch.tensor(rng.uniform(0.5, 5, size=(10,)))
    # torch's NegativeBinomial counts failures with success prob p: mean = r p / (1 - p)
    ref = torch.distributions.NegativeBinomial(total_count=theta, probs=mu / (mu + theta)).log_prob(x)
    torch.testing.assert_close(dist.nb_log_prob(x, mu, theta), ref, rtol=1e-6, atol=1e-6)


def test_zinb_log_prob_matches_mixture(rng):
    x = rng.poisson(1, size=(30, 25)).astype(np.float64)
    mu = rng.uniform(0.01, 5, size=(30, 25))
    theta = rng.uniform(0.1, 5, size=(25,))
    gate = rng.normal(size=(30, 25))
    pi = 1 / (1 + np.exp(-gate))
    nb = st.nbinom.pmf(x, theta, theta / (theta + mu))
    ref = np.log(np.where(x == 0, pi + (1 - pi) * nb, (1 - pi) * nb))
    ours = dist.zinb_log_prob(torch.tensor(x), torch.tensor(mu), torch.tensor(theta), torch.tensor(gate))
    np.testing.assert_allclose(ours.numpy(), ref, rtol=1e-6, atol=1e-6)


def test_split_terms_sum_to_full_density(rng):
    x = torch.tensor(rng.poisson(4, size=(10, 8)), dtype=torch.float64)
    mu = torch.tensor(rng.uniform(0.5, 9, size=(10, 8)))
    theta = torch.tensor(rng.uniform(0.5, 5, size=(8,)))
    split = dist.count_terms(x, theta) + dist.nb_mean_terms(x, torch.log(mu), theta)
    torch.testing.assert_close(split, dist.nb_log_prob(x, mu, theta))


def test_nb_sample_mean_and_variance():
    torch.manual_seed(1)
    mu = torch.full((200_000,), 6.0)
    theta = torch.tensor(2.0)
    draws = dist.nb_sample(mu, theta)
    assert abs(float(draws.mean()) - 6.0) < 0.05
    assert abs(float(draws.var()) - (6.0 + 36.0 / 2.0)) < 0.5


def test_zinb_sample_zero_fraction():
    torch.manual_seed(2)
    mu = torch.full((100_000,), 50.0)
    draws = dist.zinb_sample(mu, torch.tensor(10.0), torch.zeros(100_000))  # pi = 0.5
    assert abs(float((draws == 0).float().mean()) - 0.5) < 0.01


@pytest.mark.parametrize("zero_inflated", [False, True])
def test_sparse_log_lik_matches_dense_density(rng, zero_inflated):
    counts = rng.poisson(0.4, size=(6, 40)).astype(np.float64)          # B=6 cells, F=40 features
    x = torch.tensor(counts)
    log_mu = torch.tensor(rng.normal(-1, 1, size=(3, 6, 40)), requires_grad=True)   # S=3 samples
    theta = torch.tensor(rng.uniform(0.2, 4, size=40), requires_grad=True)
    gate = torch.tensor(rng.normal(size=(3, 6, 40)), requires_grad=True) if zero_inflated else None
    rows, cols = np.nonzero(counts)
    nonzeros = (torch.tensor(rows), torch.tensor(cols), torch.tensor(counts[rows, cols]))
    sparse = dist.sparse_log_lik(log_mu, theta, nonzeros, gate)
    mu = torch.exp(log_mu)
    dense = (dist.zinb_log_prob(x, mu, theta, gate) if zero_inflated
             else dist.nb_log_prob(x, mu, theta)).sum(-1)
    torch.testing.assert_close(sparse, dense, rtol=1e-7, atol=1e-7)
    inputs = [log_mu, theta] + ([gate] if zero_inflated else [])
    for a, b in zip(torch.autograd.grad(sparse.sum(), inputs), torch.autograd.grad(dense.sum(), inputs)):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
