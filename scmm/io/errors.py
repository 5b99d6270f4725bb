"""The error raised for input that cannot be read as raw multimodal counts."""

from __future__ import annotations


class ReadError(ValueError):
    """The input could not be read as raw multimodal counts.

    The message always names the file (or ``source``) and the problem.
    """
