"""Mixed precision: where bf16 runs natively, and the autocast context of a training step.

``precision="auto"`` (the default) trains with bf16 autocast for the network's
matrix multiplies only where the hardware computes bf16 natively: CUDA devices
that support it, and CPUs whose flags show bf16 units (``avx512_bf16`` or
``amx_bf16`` on x86, ``bf16`` on Arm; read from ``/proc/cpuinfo``, or
``sysctl`` on macOS).  Elsewhere bf16 is emulated and slower, so ``auto``
keeps fp32.  ``"bf16"`` / ``"fp32"`` force either.  The networks return fp32
outputs (:mod:`scmm.module.networks`), so the likelihoods, the KL and the loss
reduction are always computed in fp32.
"""
from __future__ import annotations

import contextlib
import functools
import platform
import subprocess

import torch

PRECISIONS = ("auto", "bf16", "fp32")
#: CPU flags of native bf16 arithmetic (x86: AVX512-BF16, AMX; Arm: FEAT_BF16)
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")


def cpu_flags() -> set[str]:
    """The CPU's feature flags as the OS reports them (empty when unknown)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    if platform.system() == "Darwin":
        try:
            out = subprocess.run(["sysctl", "-n", "hw.optional.arm.FEAT_BF16"], capture_output=True,
                                 text=True, timeout=5).stdout.strip()
            return {"bf16"} if out == "1" else set()
        except (OSError, subprocess.SubprocessError):
            return set()
    return set()


@functools.lru_cache(maxsize=None)
def cpu_has_native_bf16() -> bool:
    """True when this CPU computes bf16 natively (detected from its flags, never assumed)."""
    return bool(cpu_flags() & set(BF16_CPU_FLAGS))


def native_bf16(device: torch.device) -> bool:
    """True when ``device`` computes bf16 natively."""
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return cpu_has_native_bf16()
    return False


def choose_precision(requested: str, device: torch.device) -> str:
    """``"bf16"`` or ``"fp32"`` for ``requested`` (``auto``: bf16 where native) on ``device``."""
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {requested!r}")
    if requested == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return requested


def autocast(precision: str, device: torch.device):
    """The context a training step runs in: bf16 autocast, or nothing for fp32."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
