"""ARLinear-v0: autoregressive linear-softmax learners against a finite-state expert."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import log_softmax

from ntp_envs.base import SequenceEnv
from ntp_envs.linear_softmax import LinearSoftmaxClass
from ntp_envs.sequence_model import FinitePrompts, FiniteStateModel, FiniteStateTables
from ntp_envs.task import SequenceTask
from ntp_envs.validation import check_float, check_int, reject_unknown

ENV_ID = "ntp_envs/ARLinear-v0"
MAX_EXPERT_STATES = 2**16
MAX_TABLE_ENTRIES = 2**24  # expert table / feature projection size: bounds memory (~128 MiB)
OUT_OF_CLASS_SCALE = 1.0

DEFAULTS: dict[str, Any] = {
    "horizon": 64,
    "vocab_size": 2,
    "num_contexts": 4,
    "learner_memory": 1,
    "expert_memory": 3,
    "misspecification": 0.5,
    "feature_dim": None,
    "context_probs": None,
    "task_seed": 0,
}


def make_ar_linear_task(**kwargs: Any) -> SequenceTask:
    """Build the ARLinear task (see :class:`ARLinearEnv` for the arguments)."""
    known = {k: kwargs.pop(k) for k in list(kwargs) if k in DEFAULTS}
    reject_unknown("ARLinear-v0", kwargs, list(DEFAULTS))
    p = {**DEFAULTS, **known}
    horizon = check_int("horizon", p["horizon"], 1)
    vocab = check_int("vocab_size", p["vocab_size"], 2, 64)
    n_ctx = check_int("num_contexts", p["num_contexts"], 1, 4096)
    m = check_int("learner_memory", p["learner_memory"], 0, 16)
    k = check_int("expert_memory", p["expert_memory"], m, 16)
    if vocab**k > MAX_EXPERT_STATES:
        raise ValueError(
            f"expert_memory must satisfy vocab_size**expert_memory <= {MAX_EXPERT_STATES}, "
            f"got {vocab}**{k}"
        )
    entries = n_ctx * min(k + 1, horizon) * vocab ** (k + 1)
    if entries > MAX_TABLE_ENTRIES:
        raise ValueError(
            "num_contexts * min(expert_memory + 1, horizon) * vocab_size**(expert_memory + 1) "
            f"(the expert's table) must be <= {MAX_TABLE_ENTRIES}, got {entries}"
        )
    eps = check_float("misspecification", p["misspecification"], 0.0, 1.0)
    seed = check_int("task_seed", p["task_seed"], 0)
    rng = np.random.default_rng(seed)

    if p["context_probs"] is None:
        log_mu = np.full(n_ctx, -np.log(n_ctx))
    else:
        probs = np.asarray(p["context_probs"], dtype=np.float64)
        if probs.shape != (n_ctx,) or (probs <= 0).any() or abs(probs.sum() - 1) > 1e-9:
            raise ValueError(
                f"context_probs must be {n_ctx} positive numbers summing to 1, "
                f"got {p['context_probs']}"
            )
        log_mu = np.log(probs)
    prompts = FinitePrompts(np.arange(n_ctx)[:, None], log_mu)

    full_dim = (n_ctx + m * vocab) * vocab
    projection = None
    if p["feature_dim"] is not None:
        d = check_int("feature_dim", p["feature_dim"], 1, min(full_dim,
                                                               MAX_TABLE_ENTRIES // full_dim))
        projection = rng.normal(0.0, 1.0 / np.sqrt(d), size=(d, full_dim))
    learner_class = LinearSoftmaxClass(prompts, vocab, m, horizon, projection)
    theta = rng.normal(0.0, 1.0, size=learner_class.dim)
    out_of_class = rng.normal(0.0, OUT_OF_CLASS_SCALE, size=(n_ctx, vocab**k, vocab))

    # expert logits = <theta, phi> lifted to memory k, plus eps times the out-of-class table
    linear_logits = learner_class.logits(theta)  # (C, T_m, V^m, V)
    positions = min(k + 1, horizon)
    lifted = linear_logits[:, np.minimum(np.arange(positions), learner_class.num_positions - 1)]
    lifted = lifted[:, :, np.arange(vocab**k) % vocab**m]
    logits = lifted + eps * out_of_class[:, None]
    expert = FiniteStateModel(FiniteStateTables(log_softmax(logits, -1), k, horizon), prompts)
    return SequenceTask(
        env_id=ENV_ID,
        params=p,
        horizon=horizon,
        vocab_size=vocab,
        prompt_vocab_size=n_ctx,
        prompts=prompts,
        expert=expert,
        learner_class=learner_class,
        well_specified_theta=theta if eps == 0.0 else None,
        extras={"linear_theta": theta, "out_of_class": out_of_class},
    )


class ARLinearEnv(SequenceEnv):
    """Autoregressive linear models with a misspecification knob.

    ## Description
    An episode writes one sequence ``a_1..a_H`` of tokens in ``{0..V-1}`` after a prompt
    ``x`` drawn from ``num_contexts`` contexts. The learner class is linear-softmax,
    ``pi_theta(a | x, a_{<h}) ∝ exp(<theta, phi(x, a_{<h}, a)>)``, whose feature map
    (:mod:`ntp_envs.linear_softmax`) is additive over the prompt and the last
    ``learner_memory`` tokens (optionally projected to ``feature_dim`` dimensions). The expert
    is a finite-state model of memory ``expert_memory`` with logits

    ``<theta*, phi(x, a_{<h}, a)> + misspecification * g(x, a_{h-1..h-expert_memory}, a)``,

    ``theta* ~ N(0, I)`` and ``g ~ N(0, 1)`` i.i.d. per (context, expert window, token),
    both drawn from ``task_seed``. ``g`` uses older tokens and lag interactions that
    ``phi`` cannot express. At ``misspecification = 0`` the expert *is* ``pi_{theta*}``
    (``task.well_specified_theta``).

    ## Action Space
    ``Discrete(vocab_size)``: the next token.

    ## Observation Space
    ``MultiDiscrete`` of length ``1 + 1 + H``: ``[x, h, a_1, ..., a_h, V, ..., V]`` (the
    prompt, the position, and the prefix padded with the token ``V``).

    ## Rewards
    ``log pi*(a_h | x, a_{<h})``: the expert's log-probability of the emitted token, so an
    episode's return is the expert log-likelihood of the sequence (each reward is clipped
    below at ``REWARD_FLOOR = -100``, :mod:`ntp_envs.task`; the expert's log-probabilities
    here are normally far above it).

    ## Episode End
    Terminated after exactly ``horizon`` tokens; never truncated. ``step`` after the end
    raises ``RuntimeError``.

    ## Arguments
    ``horizon`` (64, >= 1), ``vocab_size`` (2, in [2, 64]), ``num_contexts`` (4),
    ``learner_memory`` (1, >= 0), ``expert_memory`` (3, >= learner_memory,
    ``vocab_size**expert_memory <= 65536`` and the expert's table
    ``C * min(expert_memory + 1, H) * V**(expert_memory + 1) <= 2**24`` entries),
    ``misspecification`` (0.5, in [0, 1]), ``feature_dim`` (None = full features, else in
    [1, (C + m V) V] with ``feature_dim * (C + m V) V <= 2**24``), ``context_probs``
    (None = uniform), ``task_seed`` (0): the expert and features are a function of it.

    ## Version History
    * v0: initial version.
    """

    def __init__(
        self,
        horizon: int = 64,
        vocab_size: int = 2,
        num_contexts: int = 4,
        learner_memory: int = 1,
        expert_memory: int = 3,
        misspecification: float = 0.5,
        feature_dim: int | None = None,
        context_probs: list[float] | None = None,
        task_seed: int = 0,
        render_mode: str | None = None,
        **unknown: Any,
    ) -> None:
        reject_unknown("ARLinear-v0", unknown, [*DEFAULTS, "render_mode"])
        task = make_ar_linear_task(
            horizon=horizon,
            vocab_size=vocab_size,
            num_contexts=num_contexts,
            learner_memory=learner_memory,
            expert_memory=expert_memory,
            misspecification=misspecification,
            feature_dim=feature_dim,
            context_probs=context_probs,
            task_seed=task_seed,
        )
        super().__init__(task, render_mode=render_mode)
