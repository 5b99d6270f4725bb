"""Log-likelihoods written directly in torch (no ``torch.distributions`` objects).

The NB / ZINB densities are split into the terms that depend only on the
counts (``lgamma(x + 1)``), only on the per-feature dispersion, or on both the
counts and the dispersion (``lgamma(x + theta)``), which the objective computes
once per batch, and the part that depends on the decoded mean, which it
computes once per encoder-decoder pair.  :func:`nb_log_prob` and
:func:`zinb_log_prob` assemble the full density for callers that need it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

EPS = 1e-8


def laplace_log_prob(z: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Element-wise log density of Laplace(loc, scale) at ``z``."""
    return -torch.log(2.0 * scale) - (z - loc).abs() / scale


def laplace_rsample(loc: torch.Tensor, scale: torch.Tensor, generator=None) -> torch.Tensor:
    """Reparameterised Laplace sample (inverse-CDF of a uniform on (-1/2, 1/2))."""
    u = torch.rand(loc.shape, device=loc.device, dtype=loc.dtype, generator=generator)
    u = (u - 0.5).clamp(-0.5 + 1e-6, 0.5 - 1e-6)
    return loc - scale * u.sign() * torch.log1p(-2.0 * u.abs())


def laplace_kl(loc1, scale1, loc2, scale2) -> torch.Tensor:
    """Element-wise KL( Laplace(loc1, scale1) || Laplace(loc2, scale2) )."""
    d = (loc1 - loc2).abs()
    return torch.log(scale2 / scale1) + d / scale2 + scale1 / scale2 * torch.exp(-d / scale1) - 1.0


def count_terms(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Terms of the NB log density that do not depend on the mean.

    ``lgamma(x + theta) - lgamma(theta) - lgamma(x + 1) + theta * log(theta)``;
    computed once per batch and shared by every encoder's decoding.
    """
    return (
        torch.lgamma(x + theta) - torch.lgamma(theta) - torch.lgamma(x + 1.0)
        + theta * torch.log(theta + EPS)
    )


def sparse_log_lik(log_mu: torch.Tensor, theta: torch.Tensor, nonzeros: tuple,
                   gate_logit: torch.Tensor | None = None) -> torch.Tensor:
    """NB (or ZINB when ``gate_logit`` is given) log density summed over features, per cell.

    ``log_mu`` and ``gate_logit`` have shape (S, B, F) for S latent samples of
    B cells; the counts are given only by their non-zero entries
    ``(row, column, value)``.  The dense work per sample is what a zero count
    needs (``theta log(theta + mu)`` for NB; the zero-inflated mass for ZINB);
    everything that involves a count is evaluated at the non-zeros only.
    Returns shape (S, B).
    """
    rows, cols, vals = nonzeros
    s, b, _ = log_mu.shape
    log_theta_mu = torch.log(theta + torch.exp(log_mu))                  # (S, B, F)
    nz_log_mu, nz_log_theta_mu = log_mu[:, rows, cols], log_theta_mu[:, rows, cols]
    t = theta[cols]
    nz_nb = (torch.lgamma(vals + t) - torch.lgamma(t) - torch.lgamma(vals + 1.0)
             + t * torch.log(t + EPS) + vals * nz_log_mu - (t + vals) * nz_log_theta_mu)  # (S, nnz)
    if gate_logit is None:
        zero_case = theta * (torch.log(theta + EPS) - log_theta_mu)      # log NB(0 | mu)
        nz_value = nz_nb
    else:
        nb_zero = theta * (torch.log(theta + EPS) - log_theta_mu)
        zero_case = F.softplus(-gate_logit + nb_zero) - F.softplus(-gate_logit)
        nz_value = nz_nb - F.softplus(gate_logit[:, rows, cols])
    correction = nz_value - zero_case[:, rows, cols]
    return zero_case.sum(-1) + log_mu.new_zeros(s, b).index_add(1, rows, correction)


def nb_mean_terms(x: torch.Tensor, log_mu: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Mean-dependent part of the NB log density: ``x log mu - (theta + x) log(theta + mu)``."""
    return x * log_mu - (theta + x) * torch.log(theta + torch.exp(log_mu))


def nb_log_prob(x, mu, theta) -> torch.Tensor:
    """Element-wise NB log density with mean ``mu`` and inverse dispersion ``theta``."""
    return count_terms(x, theta) + nb_mean_terms(x, torch.log(mu + EPS), theta)


def zinb_from_nb(nb_logp: torch.Tensor, x: torch.Tensor, log_mu: torch.Tensor, theta: torch.Tensor,
                 gate_logit: torch.Tensor) -> torch.Tensor:
    """ZINB log density from the NB log density and the zero-inflation gate logit.

    ``pi = sigmoid(gate_logit)`` is the probability of a structural zero.
    """
    log_theta_mu = torch.logaddexp(torch.log(theta + EPS), log_mu)
    nb_zero = theta * (torch.log(theta + EPS) - log_theta_mu)   # log NB(0)
    zero_case = F.softplus(-gate_logit + nb_zero) - F.softplus(-gate_logit)
    nonzero_case = nb_logp - F.softplus(gate_logit)             # log(1 - pi) + log NB(x)
    return torch.where(x < 0.5, zero_case, nonzero_case)


def zinb_log_prob(x, mu, theta, gate_logit) -> torch.Tensor:
    """Element-wise ZINB log density."""
    log_mu = torch.log(mu + EPS)
    return zinb_from_nb(nb_log_prob(x, mu, theta), x, log_mu, theta, gate_logit)


def nb_sample(mu: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Draw NB counts as a Gamma-Poisson mixture (uses the global torch RNG)."""
    theta = theta.expand_as(mu)
    rate = torch.distributions.Gamma(theta, theta / mu.clamp_min(EPS)).sample()
    return torch.poisson(rate)


def zinb_sample(mu, theta, gate_logit) -> torch.Tensor:
    """Draw ZINB counts (uses the global torch RNG)."""
    counts = nb_sample(mu, theta)
    zero = torch.rand(mu.shape, device=mu.device) < torch.sigmoid(gate_logit)
    return counts.masked_fill(zero, 0.0)

