"""ParityCoT-v0: the parity of a hidden subset of bits, with or without a chain of thought."""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from ntp_envs.base import SequenceEnv
from ntp_envs.sequence_model import DeterministicModel, PromptDistribution, UniformPrompts
from ntp_envs.task import SequenceTask
from ntp_envs.type_aliases import IntArray
from ntp_envs.validation import check_int, reject_unknown

ENV_ID = "ntp_envs/ParityCoT-v0"
COT_MODES = ("none", "count", "xor")
MAX_ENUMERATED_BITS = 16
"""Up to this many bits the prompt law lists its whole support (exact evaluation)."""

DEFAULTS: dict[str, Any] = {
    "num_bits": 16,
    "subset_size": 8,
    "cot": "count",
    "cot_stride": 1,
    "task_seed": 0,
    "horizon": None,
}


class UniformBits(PromptDistribution):
    """i.i.d. fair bits: prompts of shape ``(n, num_bits)`` (no listed support)."""

    def __init__(self, num_bits: int) -> None:
        self.prompt_length = num_bits

    def sample(self, n: int, rng: np.random.Generator) -> IntArray:
        return rng.integers(0, 2, size=(n, self.prompt_length), dtype=np.int64)


def all_bit_strings(num_bits: int) -> IntArray:
    """Every bit string of length ``num_bits``, shape ``(2**num_bits, num_bits)``."""
    index = np.arange(2**num_bits, dtype=np.int64)
    return (index[:, None] >> np.arange(num_bits - 1, -1, -1)) & 1


def checkpoints(num_bits: int, stride: int) -> IntArray:
    """Prompt lengths after which a CoT token is written: ``m, 2m, ...`` and ``num_bits``."""
    return np.minimum(np.arange(1, math.ceil(num_bits / stride) + 1) * stride, num_bits)


def parity_cot_sequences(prompts: IntArray, subset: IntArray, cot: str, stride: int) -> IntArray:
    """The expert's sequences ``(B, H)``: CoT tokens (if any), then the parity of ``subset``.

    ``count``: token ``j`` is the number of ones among the subset bits within the first
    ``min(j m, n)`` prompt bits; ``xor``: that number mod 2; ``none``: no CoT.
    """
    bits = np.asarray(prompts, dtype=np.int64)
    mask = np.zeros(bits.shape[1], dtype=np.int64)
    mask[np.asarray(subset)] = 1
    running = np.cumsum(bits * mask, axis=1)  # ones of the subset within x_1..x_t
    answer = running[:, -1:] % 2
    if cot == "none":
        return answer
    cot_tokens = running[:, checkpoints(bits.shape[1], stride) - 1]
    if cot == "xor":
        cot_tokens = cot_tokens % 2
    return np.concatenate([cot_tokens, answer], axis=1)


def format_sequence(prompt: IntArray, tokens: IntArray) -> str:
    """Readable text of one episode: ``"0110 : 0 1 1 2 = 0"`` (prompt bits : CoT = answer)."""
    bits = "".join(str(int(b)) for b in prompt)
    cot = " ".join(str(int(t)) for t in tokens[:-1])
    return f"{bits} : {cot} = {int(tokens[-1])}" if cot else f"{bits} : = {int(tokens[-1])}"


def parse_sequence(text: str) -> tuple[IntArray, IntArray]:
    """Inverse of :func:`format_sequence`: ``(prompt, tokens)``; ValueError if malformed."""
    try:
        bits, rest = text.split(" : ")
        cot, answer = rest.rsplit("=", 1)
        prompt = np.array([int(b) for b in bits], dtype=np.int64)
        tokens = [int(t) for t in cot.split()] + [int(answer)]
    except ValueError:
        raise ValueError(f"text must look like '0110 : 0 1 1 2 = 0', got {text!r}") from None
    if prompt.size == 0 or set(prompt.tolist()) - {0, 1}:
        raise ValueError(f"the prompt must be a non-empty bit string, got {bits!r}")
    return prompt, np.array(tokens, dtype=np.int64)


def parity_horizon(num_bits: int, cot: str, cot_stride: int) -> int:
    """Sequence length: ``ceil(num_bits / cot_stride)`` CoT tokens (none without CoT) + 1."""
    return 1 if cot == "none" else math.ceil(num_bits / cot_stride) + 1


def make_parity_cot_task(**kwargs: Any) -> SequenceTask:
    """Build the ParityCoT task (see :class:`ParityCoTEnv` for the arguments)."""
    known = {k: kwargs.pop(k) for k in list(kwargs) if k in DEFAULTS}
    reject_unknown("ParityCoT-v0", kwargs, list(DEFAULTS))
    p = {**DEFAULTS, **known}
    num_bits = check_int("num_bits", p["num_bits"], 1, 1024)
    subset_size = check_int("subset_size", p["subset_size"], 1, num_bits)
    cot = p["cot"]
    if cot not in COT_MODES:
        raise ValueError(f"cot must be one of {list(COT_MODES)}, got {cot!r}")
    stride = check_int("cot_stride", p["cot_stride"], 1, num_bits)
    if cot == "none" and stride != 1:
        raise ValueError(f"cot_stride must be 1 when cot='none', got {stride}")
    seed = check_int("task_seed", p["task_seed"], 0)
    horizon = parity_horizon(num_bits, cot, stride)
    if p["horizon"] is not None and check_int("horizon", p["horizon"], 1) != horizon:
        raise ValueError(f"horizon is set by num_bits, cot and cot_stride: it must be {horizon} "
                         f"(or None), got {p['horizon']}")
    p["horizon"] = horizon
    subset = np.sort(np.random.default_rng(seed).choice(num_bits, subset_size, replace=False))
    vocab = subset_size + 1 if cot == "count" else 2
    prompts: PromptDistribution = (
        UniformPrompts(all_bit_strings(num_bits)) if num_bits <= MAX_ENUMERATED_BITS
        else UniformBits(num_bits)
    )

    return SequenceTask(
        env_id=ENV_ID,
        params=p,
        horizon=horizon,
        vocab_size=max(vocab, 2),
        prompt_vocab_size=2,
        prompts=prompts,
        expert=DeterministicModel(
            functools.partial(parity_cot_sequences, subset=subset, cot=cot, stride=stride),
            max(vocab, 2), horizon, num_bits),
        learner_class=None,
        reward_doc="0 for the expert's token, REWARD_FLOOR (-100) for any other",
        extras={"subset": subset},
        answer_length=1,
    )


class ParityCoTEnv(SequenceEnv):
    """Parity of a hidden subset of the prompt bits, answered with or without a chain of thought.

    ## Description
    The prompt is ``num_bits`` fair bits ``x``. A hidden subset ``S`` of ``subset_size``
    positions (drawn once from ``task_seed``: ``task.extras["subset"]``) defines the target
    ``y = sum_{i in S} x_i mod 2``. The deterministic expert writes a chain of thought (CoT),
    then ``y`` (the last token):

    * ``cot="none"``: just ``y`` (``H = 1``);
    * ``cot="count"``: the running count of ones of ``S`` within the first ``t`` bits, written
      at ``t = m, 2m, ...`` and at ``t = num_bits`` (``m = cot_stride``), then ``y``
      (``H = ceil(num_bits / m) + 1``, tokens ``0..subset_size``);
    * ``cot="xor"``: the same running counts mod 2 (running parities), then ``y``.

    The learner class of the suite's CoT experiments is linear next-token prediction on the
    one-hot encoding of the whole context (``agents.LinearAR``): every CoT step of ``count``
    is linearly computable (at ``m = 1`` the next count is the previous count token plus one
    bit; at any ``m`` a count is an argmax of logits ``-(a - s)^2 = 2 a s - a^2 + const``,
    linear in the bits), and so is the answer (the parity of the last count is a lookup of
    one token): the expert is in the class's closure (well-specified). Without CoT ``y`` is
    a degree-``|S|`` function of the bits, uncorrelated with every linear one: not in the
    class. The ``xor`` CoT is *not* a way in: each step is the XOR of the previous parity
    token with new bits, and XOR is not linearly computable (``d = u(p) + v(b)`` cannot be
    positive at ``(0,1), (1,0)`` and negative at ``(0,0), (1,1)``: both pairs sum to the
    same), so the chain breaks after its first step. ``cot`` is the misspecification knob.

    ``format_sequence``/``parse_sequence`` give the text form ``"0110 : 0 1 1 2 = 0"``.

    ## Action Space
    ``Discrete(V)``: ``V = subset_size + 1`` for ``count``, 2 otherwise.

    ## Observation Space
    ``MultiDiscrete`` of length ``num_bits + 1 + H``: ``[x_1..x_n, h, a_1..a_h, V, ..., V]``.

    ## Rewards
    The expert is deterministic and open-loop (it emits its own next token whatever the
    prefix): reward 0 for emitting the expert's token, ``REWARD_FLOOR = -100`` for any other.

    ## Episode End
    Terminated after exactly ``H`` tokens; never truncated.

    ## Arguments
    ``num_bits`` (16, in [1, 1024]; up to 16 the prompt law lists its ``2^n`` support, so
    evaluation is exact), ``subset_size`` (8, in [1, num_bits]), ``cot`` (``"count"``; one of
    none, count, xor), ``cot_stride`` (1, in [1, num_bits]; must be 1 for ``none``),
    ``task_seed`` (0: the subset), ``horizon`` (None: derived; a given value must equal it).

    ## Version History
    * v0: initial version.
    """

    def __init__(
        self,
        num_bits: int = 16,
        subset_size: int = 8,
        cot: str = "count",
        cot_stride: int = 1,
        task_seed: int = 0,
        horizon: int | None = None,
        render_mode: str | None = None,
        **unknown: Any,
    ) -> None:
        reject_unknown("ParityCoT-v0", unknown, [*DEFAULTS, "render_mode"])
        task = make_parity_cot_task(num_bits=num_bits, subset_size=subset_size, cot=cot,
                                    cot_stride=cot_stride, task_seed=task_seed, horizon=horizon)
        super().__init__(task, render_mode=render_mode)
