"""Encoder and decoder networks of one modality."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def full_precision(t: torch.Tensor) -> torch.Tensor:
    """``t`` in fp32 when autocast made it bf16 / fp16 (fp32 and fp64 pass unchanged)."""
    return t.float() if t.dtype in (torch.bfloat16, torch.float16) else t


def mlp(sizes: list[int], dropout: float = 0.0) -> nn.Sequential:
    """Hidden blocks ``Linear -> BatchNorm1d -> ReLU`` for consecutive ``sizes``, with
    ``Dropout(dropout)`` after each ReLU when ``dropout > 0``.

    The ReLU and its dropout share one parameter-free slot, so the weights' names
    (``0.weight``, ``1.running_mean``, ``3.weight``...) do not depend on ``dropout``:
    a model saved with one rate loads into a module built with another.
    """
    layers: list[nn.Module] = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        activation = nn.Sequential(nn.ReLU(), nn.Dropout(dropout)) if dropout > 0 else nn.ReLU()
        layers += [nn.Linear(n_in, n_out), nn.BatchNorm1d(n_out), activation]
    return nn.Sequential(*layers)


class Encoder(nn.Module):
    """Maps normalised counts to the location and scale of a Laplace posterior.

    ``scale="softplus"`` (default) gives an unconstrained positive scale per
    cell and dimension; ``scale="softmax"`` reproduces the authors' code
    (``D * softmax(h) + 1e-6``, summing to D like the prior).  ``dropout``: the rate
    applied after each hidden layer while training (none in evaluation mode).
    """

    def __init__(self, n_features: int, hidden: list[int], latent_dim: int, scale: str = "softplus",
                 dropout: float = 0.0):
        super().__init__()
        if scale not in ("softplus", "softmax"):
            raise ValueError(f"posterior scale must be 'softplus' or 'softmax', not {scale!r}")
        self.body = mlp([n_features, *hidden], dropout)
        self.loc = nn.Linear(hidden[-1], latent_dim)
        self.raw_scale = nn.Linear(hidden[-1], latent_dim)
        self.scale_kind = scale
        self.latent_dim = latent_dim

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Location and scale, in fp32 even when the layers ran under bf16 autocast."""
        h = self.body(x)
        raw = full_precision(self.raw_scale(h))
        if self.scale_kind == "softmax":
            scale = self.latent_dim * F.softmax(raw, dim=-1) + 1e-6
        else:
            scale = F.softplus(raw) + 1e-6
        return full_precision(self.loc(h)), scale


class Decoder(nn.Module):
    """Maps latent codes to per-feature log-proportions (and ZINB gate logits).

    The NB / ZINB mean is ``softmax(logits) * library``; the inverse dispersion
    is one learned value per feature.
    """

    def __init__(self, latent_dim: int, hidden: list[int], n_features: int, zero_inflated: bool):
        super().__init__()
        self.body = mlp([latent_dim, *hidden])
        self.logits = nn.Linear(hidden[-1], n_features)
        self.gate = nn.Linear(hidden[-1], n_features) if zero_inflated else None
        self.raw_theta = nn.Parameter(torch.zeros(n_features))

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Return log-proportions (rows sum to one after exp) and gate logits or None, in fp32
        even when the layers ran under bf16 autocast (the likelihood is computed in fp32)."""
        h = self.body(z)
        log_prop = F.log_softmax(full_precision(self.logits(h)), dim=-1)
        return log_prop, (full_precision(self.gate(h)) if self.gate is not None else None)

    @property
    def theta(self) -> torch.Tensor:
        return F.softplus(self.raw_theta) + 1e-4
