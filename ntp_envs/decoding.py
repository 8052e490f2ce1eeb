"""Greedy decoding of any sequence model (answer accuracy, path-star metrics, early stopping)."""

from __future__ import annotations

import numpy as np

from ntp_envs.sequence_model import SequenceModel
from ntp_envs.type_aliases import IntArray

DECODE_ROWS = 4096
"""Prompts decoded together (bounds the memory of one next-token query)."""


def greedy_decode(model: SequenceModel, prompts: IntArray) -> IntArray:
    """The argmax sequence ``(B, H)`` of ``model`` for each prompt."""
    prompts = np.asarray(prompts, dtype=np.int64)
    tokens = np.zeros((len(prompts), model.horizon), dtype=np.int64)
    for start in range(0, len(prompts), DECODE_ROWS):
        rows = slice(start, start + DECODE_ROWS)
        for h in range(model.horizon):
            logp = model.next_token_logprobs(prompts[rows], tokens[rows, :h])
            tokens[rows, h] = np.argmax(logp, axis=1)
    return tokens
