"""The path-star GPT agents: a transformers GPT trained three ways (Bachmann & Nagarajan,
ICML 2024).

The model reads ``x`` (the prompt, ``L`` tokens) followed by ``H - 1`` target-position inputs
and predicts target token ``h`` at sequence position ``L - 1 + h`` (causal attention, rotary
positions, pre-LayerNorm blocks). Training is next-token log loss on the ``H``
target tokens of the demonstrations, in one of three modes:

* ``tf`` (agent ``gpt-tf``): teacher forcing: the inputs are the true target tokens.
* ``reverse`` (agent ``gpt-reverse``): teacher forcing on a target written goal-to-source;
  the task must emit it in that order (``PathStar-v0`` with ``target_order="reverse"``):
  a reverse-order model has no closed-form next-token conditionals in forward order, so
  it could not act in a forward-order env.
* ``teacherless`` (agent ``gpt-teacherless``): every target input is the dummy token (an
  input-only token: the tokenizer's pad word, :mod:`ntp_envs.hf`), so all ``H`` target tokens
  are predicted from ``x`` alone in one forward pass; the learned policy ignores its own
  previous tokens, its sequence law is the product ``prod_h p_h(a_h | x)`` and decoding is
  one pass.

The network is transformers' ``GPTNeoXForCausalLM`` at :class:`GPTConfig`'s sizes (random
init, no dropout, rotary positions on every head dimension, sequential residuals: the
architecture of the hand-written GPT it replaced): :func:`gpt_agent` is an
:class:`agents.hf_lm.HFAgent` of model type :data:`MODEL_TYPE` (the ``hf`` extra), so a
fitted policy is an :class:`agents.hf_lm.HFPolicy` (``.npz`` without pickle, or
``save_pretrained``). Not GPT-2: with learned absolute positions and this budget it does not
learn path-star (teacher-forced later nodes 0.656 instead of 1.0, reverse exact path 0.207
instead of 1.0 at 10,000 steps; docs/pathstar.md). ``benchmarks/bench_gpt.py`` times a step
against the hand-written net (``benchmarks/handwritten_gpt.py``, kept as the reference).

Device: the environment variable ``NTP_GYM_DEVICE`` (default ``"cpu"``; e.g. ``"cuda"``)
picks where the model trains and runs (:mod:`agents.lm_inputs`, with the modes' inputs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from agents.lm_inputs import MODES
from ntp_envs.validation import check_float, check_int

if TYPE_CHECKING:
    from agents.hf_lm import HFAgent

__all__ = ["CPU_CONFIG", "LARGE_CONFIG", "MODEL_TYPE", "GPTConfig", "gpt_agent"]

MODEL_TYPE = "gpt_neox"
"""The transformers model type of the path-star agents."""


@dataclass(frozen=True)
class GPTConfig:
    """Model size and training budget (``steps`` Adam steps of ``batch_size`` sequences,
    linear warm-up then cosine decay to ``lr / 10``)."""

    n_layer: int = 3
    n_head: int = 4
    d_model: int = 64
    steps: int = 10_000
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 0.01
    warmup: int = 100
    grad_clip: float = 1.0

    def __post_init__(self) -> None:
        check_int("n_layer", self.n_layer, 1, 64)
        check_int("n_head", self.n_head, 1, 64)
        check_int("d_model", self.d_model, 1, 8192)
        if self.d_model % self.n_head:
            raise ValueError(f"d_model must be a multiple of n_head {self.n_head}, "
                             f"got {self.d_model}")
        check_int("steps", self.steps, 1)
        check_int("batch_size", self.batch_size, 1)
        check_float("lr", self.lr, 0.0, 1.0, low_open=True)
        check_float("weight_decay", self.weight_decay, 0.0, 10.0)
        check_int("warmup", self.warmup, 0)
        check_float("grad_clip", self.grad_clip, 0.0, 1e6, low_open=True)


CPU_CONFIG = GPTConfig()
"""The registered agents' budget: 10,000 steps, about 41 ms each single-threaded at the
``PathStar-v0`` defaults (degree 2, path_length 4, num_nodes 20) on an idle 2-core machine,
i.e. about 7 minutes per fit on one CPU core (``benchmarks/bench_gpt.py``); enough for
``gpt-reverse`` to solve the task and for ``gpt-tf`` to learn the Clever-Hans lookup."""

LARGE_CONFIG = GPTConfig(n_layer=6, n_head=6, d_model=384, steps=50_000, batch_size=256,
                         lr=5e-4, warmup=1000)
"""The paper's model size (6 layers, width 384) and a 5x longer run, for a GPU
(``NTP_GYM_DEVICE=cuda``): agent ``gpt-teacherless-large``. The paper's teacherless
successes on small graphs came from long training; this configuration has not been run in
this repository's CPU-only development (see the README)."""


def gpt_agent(mode: str, config: GPTConfig = CPU_CONFIG, name: str = "") -> HFAgent:
    """The :data:`MODEL_TYPE` agent of ``mode`` at ``config``'s sizes (MLP width 4x) and
    budget, named ``gpt-<mode>`` (or ``name``)."""
    from agents.hf_lm import HFAgent

    if mode not in MODES:
        raise ValueError(f"mode must be one of {list(MODES)}, got {mode!r}")
    sizes = {"num_hidden_layers": config.n_layer, "num_attention_heads": config.n_head,
             "hidden_size": config.d_model, "intermediate_size": 4 * config.d_model}
    return HFAgent(model_type=MODEL_TYPE, sizes=sizes, mode=mode, steps=config.steps,
                   batch_size=config.batch_size, lr=config.lr,
                   weight_decay=config.weight_decay, warmup=config.warmup,
                   grad_clip=config.grad_clip, name=name or f"gpt-{mode}")
