"""The mixture-of-experts multimodal VAE (torch module: encoders, decoders, prior)."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .networks import Decoder, Encoder

LIKELIHOODS = ("nb", "zinb")


@dataclass(frozen=True)
class ModalitySpec:
    """What the model needs to know of one modality."""

    name: str
    n_features: int
    likelihood: str            # "nb" or "zinb"
    hidden: tuple[int, ...]    # hidden layer sizes of its encoder and decoder

    def __post_init__(self):
        if self.likelihood not in LIKELIHOODS:
            raise ValueError(f"modality {self.name!r}: likelihood must be one of {LIKELIHOODS}, "
                             f"not {self.likelihood!r}")
        if self.n_features < 1 or not self.hidden:
            raise ValueError(f"modality {self.name!r}: needs features and at least one hidden layer")

    def to_dict(self) -> dict:
        return {**asdict(self), "hidden": list(self.hidden)}


class MMVAE(nn.Module):
    """Per-modality Laplace encoders, NB/ZINB decoders and a learned Laplace prior.

    The prior's scales are ``b = D * softmax(prior_logits)`` so that they sum to D;
    ``encoder_dropout`` is the dropout rate of the encoders' hidden layers in training.
    """

    def __init__(self, specs: list[ModalitySpec], latent_dim: int = 10,
                 posterior_scale: str = "softplus", encoder_dropout: float = 0.0):
        super().__init__()
        if len(specs) < 2:
            raise ValueError("scMM needs at least two modalities")
        self.specs = list(specs)
        self.latent_dim = latent_dim
        self.encoders = nn.ModuleDict({
            s.name: Encoder(s.n_features, list(s.hidden), latent_dim, posterior_scale, encoder_dropout)
            for s in specs})
        self.decoders = nn.ModuleDict({
            s.name: Decoder(latent_dim, list(s.hidden)[::-1], s.n_features, s.likelihood == "zinb")
            for s in specs})
        self.prior_logits = nn.Parameter(torch.zeros(latent_dim))

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.specs]

    def prior_scale(self) -> torch.Tensor:
        """Per-dimension Laplace scale b_d of the prior (sums to D)."""
        return self.latent_dim * F.softmax(self.prior_logits, dim=0)

    def encode(self, name: str, x_norm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior location and scale of modality ``name`` from its normalised input."""
        return self.encoders[name](x_norm)

    def decode(self, name: str, z: torch.Tensor, library: torch.Tensor):
        """NB/ZINB parameters of modality ``name``: (mean, theta, gate logit or None)."""
        log_prop, gate = self.decoders[name](z)
        mean = torch.exp(log_prop) * library.reshape(-1, 1)
        return mean, self.decoders[name].theta, gate
