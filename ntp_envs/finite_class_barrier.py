"""FiniteClassBarrier-v0: a two-member class where next-token prediction picks the wrong one."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ntp_envs.base import SequenceEnv
from ntp_envs.finite_class import FiniteClass
from ntp_envs.sequence_model import FinitePrompts, FiniteStateModel, FiniteStateTables
from ntp_envs.task import SequenceTask
from ntp_envs.validation import check_float, check_int, reject_unknown

ENV_ID = "ntp_envs/FiniteClassBarrier-v0"
EVENT = 2
"""The rare "event" token."""

DEFAULTS: dict[str, Any] = {
    "horizon": 64,
    "event_prob": 1e-4,
    "bias": 0.05,
    "misspecification": 1.0,
    "min_prob": 1e-30,
}


def _tables(
    first: tuple[float, float, float],
    after_coin: tuple[float, float, float],
    after_event: tuple[float, float, float],
    horizon: int,
) -> FiniteStateTables:
    """Memory-1 tables with ``T = min(2, H)``: position 0 is the first token, positions >= 1
    use the last token as the state."""
    with np.errstate(divide="ignore"):
        logp = np.log(np.array([
            [first, first, first],  # position 0: the (empty) window state is read as 0
            [after_coin, after_coin, after_event],  # positions >= 1: state = last token
        ], dtype=np.float64))
    return FiniteStateTables(logp[None, : min(2, horizon)], memory=1, horizon=horizon)


def barrier_closed_forms(
    horizon: int, event_prob: float, bias: float, delta: float
) -> dict[str, dict[str, float]]:
    """Exact ``D_H^2`` and ``KL(P* || P^pi)`` of both members (see :class:`FiniteClassBarrierEnv`).

    ``delta`` is the per-token probability of the event token after an event
    (``min_prob ** misspecification``).
    """
    rho, n = event_prob, horizon - 1
    half = 0.5 * n * math.log(delta)
    b = math.sqrt(0.5 * (0.5 - bias)) + math.sqrt(0.5 * (0.5 + bias))
    kl_token = -0.5 * math.log1p(-4.0 * bias * bias)  # kl(Bern(1/2) || Bern(1/2 + bias))
    return {
        "rare_event": {"hellinger2": -2.0 * rho * math.expm1(half),
                       "kl": rho * n * -math.log(delta) if n > 0 else 0.0},
        "biased": {"hellinger2": -2.0 * (1.0 - rho) * math.expm1(n * math.log(b)),
                   "kl": (1.0 - rho) * n * kl_token},
    }


def make_finite_class_barrier_task(**kwargs: Any) -> SequenceTask:
    """Build the FiniteClassBarrier task (see :class:`FiniteClassBarrierEnv`)."""
    known = {k: kwargs.pop(k) for k in list(kwargs) if k in DEFAULTS}
    reject_unknown("FiniteClassBarrier-v0", kwargs, list(DEFAULTS))
    p = {**DEFAULTS, **known}
    horizon = check_int("horizon", p["horizon"], 1)
    rho = check_float("event_prob", p["event_prob"], 0.0, 1.0, low_open=True, high_open=True)
    beta = check_float("bias", p["bias"], 0.0, 0.5, low_open=True, high_open=True)
    eps = check_float("misspecification", p["misspecification"], 0.0, 1.0)
    min_prob = check_float("min_prob", p["min_prob"], 0.0, 1.0, low_open=True, high_open=True)
    delta = min_prob**eps

    prompts = FinitePrompts(np.zeros((1, 1), dtype=np.int64), np.zeros(1))
    first = (0.5 * (1.0 - rho), 0.5 * (1.0 - rho), rho)
    coin = (0.5, 0.5, 0.0)
    expert = _tables(first, coin, (0.0, 0.0, 1.0), horizon)
    rare_event = _tables(first, coin, (0.5 * (1.0 - delta), 0.5 * (1.0 - delta), delta), horizon)
    biased = _tables(first, (0.5 - beta, 0.5 + beta, 0.0), (0.0, 0.0, 1.0), horizon)
    learner_class = FiniteClass(
        members=(FiniteStateModel(rare_event, prompts), FiniteStateModel(biased, prompts)),
        names=("rare_event", "biased"),
    )
    return SequenceTask(
        env_id=ENV_ID,
        params=p,
        horizon=horizon,
        vocab_size=3,
        prompt_vocab_size=1,
        prompts=prompts,
        expert=FiniteStateModel(expert, prompts),
        learner_class=learner_class,
        well_specified_theta=None,
        reward_doc="log-probability of the emitted token under the expert, floored at -100",
        extras={"delta": delta, "closed_forms": barrier_closed_forms(horizon, rho, beta, delta)},
    )


class FiniteClassBarrierEnv(SequenceEnv):
    """An explicit two-member class on which next-token prediction's ``C_apx`` is huge.

    ## Description
    Tokens are ``{0, 1, 2}``; ``2`` is a rare "event". There is one prompt ``x = 0``. The
    expert ``pi*`` emits the event first with probability ``rho = event_prob`` (else 0 or
    1, ``(1 - rho) / 2`` each); after an event it repeats it forever (probability 1);
    after a 0 or 1 it flips a fair coin between 0 and 1 and never emits the event.
    All models are memory-1 finite-state tables with two table positions.

    The learner class ``task.learner_class`` is a
    :class:`~ntp_envs.finite_class.FiniteClass` with two members, each differing from
    ``pi*`` in one row:

    * ``"rare_event"``: after an event it emits the event again only with probability
      ``delta = min_prob ** misspecification`` (0 and 1 with ``(1 - delta) / 2`` each).
      Rare (weight ``rho``) but catastrophic per token for the log loss.
    * ``"biased"``: after 0 or 1 it emits 0 with ``1/2 - beta`` and 1 with ``1/2 + beta``
      (``beta = bias``): a small error on every token.

    Closed forms (``barrier_closed_forms``; ``b = sqrt(0.5 (0.5 - beta)) +
    sqrt(0.5 (0.5 + beta))``, ``kl_beta = kl(Bern(1/2) || Bern(1/2 + beta)) =
    -log(1 - 4 beta^2) / 2``):

    * ``D_H^2(rare_event) = 2 rho (1 - delta^((H-1)/2))``,
      ``KL(P* || rare_event) = rho (H - 1) log(1 / delta)``;
    * ``D_H^2(biased) = 2 (1 - rho) (1 - b^(H-1))``,
      ``KL(P* || biased) = (1 - rho) (H - 1) kl_beta``.

    Population next-token prediction minimises the KL, so it picks ``"biased"`` whenever
    ``rho log(1 / delta) > (1 - rho) kl_beta`` (independent of ``H``; with the defaults,
    whenever ``misspecification > 0.727``), while the best in class (min ``D_H^2``) is
    ``"rare_event"``. With the defaults at ``H = 64``: ``D_H^2(rare_event) = 2.0e-4``,
    ``D_H^2(biased) = 0.152``, so ``C_apx = 760``; KL 0.435 vs 0.317. At
    ``misspecification = 0``, ``delta = 1`` and ``"rare_event"`` *is* the expert
    (well-specified; ``task.well_specified_theta`` is ``None``: the class is finite).

    ## Action Space
    ``Discrete(3)``: the next token.

    ## Observation Space
    ``MultiDiscrete([1, H + 1, 4, ..., 4])`` of length ``1 + 1 + H``:
    ``[x, h, a_1, ..., a_h, 3, ..., 3]`` (the prompt, the position, and the prefix padded
    with the token ``3``).

    ## Rewards
    ``max(log pi*(a_h | x, a_{<h}), REWARD_FLOOR)`` with ``REWARD_FLOOR = -100``
    (:mod:`ntp_envs.task`): the expert's log-probability of the emitted token, floored
    because the expert gives some tokens probability 0 (the event after a coin token, a
    coin token after an event).

    ## Episode End
    Terminated after exactly ``horizon`` tokens; never truncated. ``step`` after the end
    raises ``RuntimeError``.

    ## Arguments
    ``horizon`` (64, >= 1), ``event_prob`` (1e-4, ``rho`` in (0, 1)), ``bias`` (0.05,
    ``beta`` in (0, 0.5)), ``misspecification`` (1.0, in [0, 1]), ``min_prob`` (1e-30,
    ``delta_min`` in (0, 1)): ``delta = min_prob ** misspecification``.

    ## Version History
    * v0: initial version.
    """

    def __init__(
        self,
        horizon: int = 64,
        event_prob: float = 1e-4,
        bias: float = 0.05,
        misspecification: float = 1.0,
        min_prob: float = 1e-30,
        render_mode: str | None = None,
        **unknown: Any,
    ) -> None:
        reject_unknown("FiniteClassBarrier-v0", unknown, [*DEFAULTS, "render_mode"])
        task = make_finite_class_barrier_task(
            horizon=horizon,
            event_prob=event_prob,
            bias=bias,
            misspecification=misspecification,
            min_prob=min_prob,
        )
        super().__init__(task, render_mode=render_mode)
