"""What a causal-LM learner reads and where it runs: the training modes and the inputs at
their target positions, inference chunk sizes, and the torch device (``NTP_GYM_DEVICE``).
Shared by :mod:`agents.hf_lm` and the path-star agents of :mod:`agents.gpt`."""

from __future__ import annotations

import os

import numpy as np
import torch

from agents.base import DEVICE_ENV
from ntp_envs.type_aliases import IntArray

__all__ = ["CHUNK_ROWS", "CPU_CHUNK_TOKENS", "DEVICE_ENV", "MODES", "chunk_rows", "gpt_device",
           "parse_device", "target_inputs"]

MODES = ("tf", "reverse", "teacherless")
CHUNK_ROWS = 4096
"""Sequences per forward pass at inference on an accelerator (bounds memory)."""
CPU_CHUNK_TOKENS = 4096
"""Tokens per forward pass at inference on the CPU: small models score more tokens per second
in chunks that stay in cache (``benchmarks/bench_hf_score.py`` prints the rate per chunk
size)."""


def chunk_rows(length: int, device: torch.device) -> int:
    """Sequences of ``length`` tokens per forward pass at inference on ``device``."""
    if device.type != "cpu":
        return CHUNK_ROWS
    return max(1, CPU_CHUNK_TOKENS // max(1, length))


def parse_device(name: str, source: str = DEVICE_ENV) -> torch.device:
    """The torch device called ``name``; ValueError naming ``source`` (the variable or flag
    it came from) when it is not cpu, cuda[:i] or mps, or is not available here."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"{source} must name a torch device (cpu, cuda, cuda:0, mps), "
                         f"got {name!r}") from None
    if device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"{source} must be cpu, cuda[:i] or mps, got {name!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{source}={name!r} but torch sees no CUDA device; use cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{source}={name!r} but torch sees no MPS device; use cpu")
    return device


def gpt_device() -> torch.device:
    """The torch device named by ``NTP_GYM_DEVICE`` (default ``cpu``; ``ntp-bench sweep
    --device`` sets it for every worker); ValueError naming the variable when unusable."""
    return parse_device(os.environ.get(DEVICE_ENV, "cpu").strip() or "cpu")


def target_inputs(prefixes: IntArray, mode: str, dummy: int) -> IntArray:
    """What the model reads at the target positions before each target token: the tokens
    themselves (``tf``/``reverse``), or the dummy token at every position (``teacherless``)."""
    prefixes = np.asarray(prefixes, dtype=np.int64)
    if mode == "teacherless":
        return np.full(prefixes.shape, dummy, dtype=np.int64)
    return prefixes
