"""Training objectives of scMM: the stratified mixture ELBO (default), its
K-sample importance-weighted form, and the authors' code's "naive" objective.

All take dense count batches ``xs[name]`` (cells x features, float), the
cells' library sizes ``libs[name]`` and optionally the batch's non-zero
entries ``nonzeros[name]`` (``(row, column, value)``, as cut by
:class:`scmm.batches.CSRRows`), which make the count-only NB terms cost one
pass over the non-zeros; they return the loss averaged over cells.
"""
from __future__ import annotations

import math

import torch

from ..normalise import TARGET_SUM
from .distributions import (count_terms, laplace_kl, laplace_log_prob, laplace_rsample,
                            nb_mean_terms, sparse_log_lik, zinb_from_nb)
from .mmvae import MMVAE

OBJECTIVES = ("stratified", "naive")


def normalise(x: torch.Tensor, library: torch.Tensor, log: bool = True) -> torch.Tensor:
    """Encoder input: counts / library x 1e4, then log1p (``log=False`` skips the log)."""
    x = x * (TARGET_SUM / library.clamp_min(1.0)).reshape(-1, 1)
    return torch.log1p(x) if log else x


def encode_all(model: MMVAE, xs: dict, libs: dict, log_input: bool = True):
    """Posterior (loc, scale) of every modality, in ``model.names`` order."""
    return [model.encode(n, normalise(xs[n], libs[n], log_input)) for n in model.names]


def reconstruction_log_lik(model: MMVAE, z: torch.Tensor, xs: dict, libs: dict,
                           nonzeros: dict | None = None) -> torch.Tensor:
    """log p(x_1..M | z) summed over modalities and features.

    ``z`` has shape (S, B, D) for S latent samples of the B cells in the batch;
    every sample is decoded into every modality in one decoder call.  With
    ``nonzeros`` the terms that involve a count are evaluated at the non-zero
    counts only (:func:`~scmm.module.distributions.sparse_log_lik`).
    """
    s, b, d = z.shape
    total = z.new_zeros(s, b)
    for spec in model.specs:
        x, lib = xs[spec.name], libs[spec.name]
        log_prop, gate = model.decoders[spec.name](z.reshape(s * b, d))
        theta = model.decoders[spec.name].theta
        log_mu = log_prop.reshape(s, b, -1) + torch.log(lib).reshape(1, b, 1)
        gate = gate.reshape(s, b, -1) if gate is not None else None
        if nonzeros is not None:
            total = total + sparse_log_lik(log_mu, theta, nonzeros[spec.name], gate)
            continue
        logp = count_terms(x, theta) + nb_mean_terms(x, log_mu, theta)
        if gate is not None:
            logp = zinb_from_nb(logp, x, log_mu, theta, gate)
        total = total + logp.sum(-1)
    return total


def mixture_log_q(model: MMVAE, z: torch.Tensor, posteriors) -> torch.Tensor:
    """log q(z | x_1..M) = logsumexp_m log q_m(z | x_m) - log M, for z of shape (..., B, D)."""
    per_expert = torch.stack([laplace_log_prob(z, loc, scale).sum(-1) for loc, scale in posteriors])
    return torch.logsumexp(per_expert, dim=0) - math.log(len(posteriors))


def stratified_elbo(model: MMVAE, xs: dict, libs: dict, beta: float = 1.0, k_samples: int = 1,
                    log_input: bool = True, nonzeros: dict | None = None) -> torch.Tensor:
    """Per-cell stratified mixture ELBO (paper eq. 3); IWAE bound when ``k_samples > 1``.

    Returns a tensor of shape (B,).
    """
    posteriors = encode_all(model, xs, libs, log_input)
    m = len(posteriors)
    # z[m, k] ~ q_m(z | x_m): shape (M, K, B, D)
    z = torch.stack([torch.stack([laplace_rsample(loc, scale) for _ in range(k_samples)])
                     for loc, scale in posteriors])
    b, d = z.shape[2], z.shape[3]
    log_lik = reconstruction_log_lik(model, z.reshape(m * k_samples, b, d), xs, libs, nonzeros)
    log_lik = log_lik.reshape(m, k_samples, b)
    log_prior = laplace_log_prob(z, torch.zeros_like(z), model.prior_scale()).sum(-1)
    log_w = log_lik + beta * (log_prior - mixture_log_q(model, z, posteriors))
    if k_samples == 1:
        return log_w[:, 0].mean(0)
    return (torch.logsumexp(log_w, dim=1) - math.log(k_samples)).mean(0)


def naive_elbo(model: MMVAE, xs: dict, libs: dict, beta: float = 1.0,
               log_input: bool = True, nonzeros: dict | None = None) -> torch.Tensor:
    """The authors' code's objective: (1/M) sum_m [log p(x_1..M | z_m) - beta KL(q_m || p)]."""
    posteriors = encode_all(model, xs, libs, log_input)
    z = torch.stack([laplace_rsample(loc, scale) for loc, scale in posteriors])
    log_lik = reconstruction_log_lik(model, z, xs, libs, nonzeros)
    prior_scale = model.prior_scale()
    kl = torch.stack([laplace_kl(loc, scale, torch.zeros_like(loc), prior_scale).sum(-1)
                      for loc, scale in posteriors])
    return (log_lik - beta * kl).mean(0)


def loss(model: MMVAE, xs: dict, libs: dict, beta: float, objective: str = "stratified",
         k_samples: int = 1, log_input: bool = True, nonzeros: dict | None = None) -> torch.Tensor:
    """Negative ELBO averaged over the cells of the batch."""
    if objective == "stratified":
        elbo = stratified_elbo(model, xs, libs, beta, k_samples, log_input, nonzeros)
    elif objective == "naive":
        elbo = naive_elbo(model, xs, libs, beta, log_input, nonzeros)
    else:
        raise ValueError(f"objective must be one of {OBJECTIVES}, not {objective!r}")
    return -elbo.mean()
