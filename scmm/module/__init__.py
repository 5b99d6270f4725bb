"""The torch side of scMM: distributions, networks, the MMVAE module and its objectives."""
from .mmvae import MMVAE, ModalitySpec

__all__ = ["MMVAE", "ModalitySpec"]
