"""Command-line subcommands of the analyses in :mod:`scmm.tl`."""
from __future__ import annotations


def add_subcommands(sub) -> None:
    """Register the analysis subcommands on the ``scmm`` parser's subparsers."""
