"""TiedLogitBarrier-v0: a one-parameter logistic class on which next-token prediction pays ~H."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.optimize import brentq
from scipy.special import expit

from ntp_envs.base import SequenceEnv
from ntp_envs.linear_softmax import LinearSoftmaxClass
from ntp_envs.sequence_model import FinitePrompts, FiniteStateModel, FiniteStateTables
from ntp_envs.task import SequenceTask
from ntp_envs.type_aliases import FloatArray
from ntp_envs.validation import check_float, check_int, reject_unknown

ENV_ID = "ntp_envs/TiedLogitBarrier-v0"
NORMAL, EVENT = 0, 1
"""Context indices (the prompts are ``[0]`` and ``[1]``)."""

DEFAULTS: dict[str, Any] = {
    "horizon": 64,
    "event_prob": 0.1,
    "beta": 1.0,
    "event_logit": 20.0,
    "normal_logit": 0.0,
    "misspecification": 1.0,
}


def _log_sigmoid(x: FloatArray | float) -> FloatArray:
    """``log sigmoid(x)`` without overflow."""
    return -np.logaddexp(0.0, -np.asarray(x, dtype=np.float64))


def bernoulli_kl_logits(a: FloatArray | float, b: FloatArray | float) -> FloatArray:
    """``kl(Bern(sigmoid(a)) || Bern(sigmoid(b)))`` per token, from the logits (any sizes)."""
    a, b = np.broadcast_arrays(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))
    d = b - a
    q = np.exp(_log_sigmoid(a))
    near = np.abs(d) < 1.0
    with np.errstate(over="ignore"):
        # near: softplus(a + d) - softplus(a) = log1p(q expm1(d)), no cancellation in softplus
        close = np.log1p(q * np.expm1(np.where(near, d, 0.0))) - q * d
    far = np.logaddexp(0.0, b) - np.logaddexp(0.0, a) - q * d
    return np.maximum(np.where(near, close, far), 0.0)


def bernoulli_log_bc_logits(a: FloatArray | float, b: FloatArray | float) -> FloatArray:
    """``log BC(Bern(sigmoid(a)), Bern(sigmoid(b)))`` per token, from the logits."""
    a, b = np.broadcast_arrays(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))
    far = np.logaddexp(0.5 * (_log_sigmoid(a) + _log_sigmoid(b)),
                       0.5 * (_log_sigmoid(-a) + _log_sigmoid(-b)))
    # near: 1 - BC = h / 2 with h = diff^2 (1 / (sqrt q + sqrt p)^2 + 1 / (sqrt q' + sqrt p')^2),
    # diff = sigmoid(a) - sigmoid(b) written without cancellation
    near = np.abs(b - a) < 1.0
    aa, bb = np.where(near, a, 0.0), np.where(near, b, 0.0)
    diff = 2.0 * np.sinh(0.5 * (aa - bb)) * np.exp(
        0.5 * (_log_sigmoid(aa) + _log_sigmoid(-aa) + _log_sigmoid(bb) + _log_sigmoid(-bb)))
    ones = np.exp(0.5 * _log_sigmoid(aa)) + np.exp(0.5 * _log_sigmoid(bb))
    zeros = np.exp(0.5 * _log_sigmoid(-aa)) + np.exp(0.5 * _log_sigmoid(-bb))
    h = diff**2 * (1.0 / ones**2 + 1.0 / zeros**2)
    return np.where(near, np.log1p(-0.5 * h), far)


def expert_logits(beta: float, event_logit: float, misspecification: float,
                  normal_logit: float = 0.0) -> tuple[float, float]:
    """The expert's logits of a one, normal and event contexts:
    ``(misspecification normal_logit - (1 - misspecification) beta, -event_logit)``."""
    return misspecification * normal_logit - (1.0 - misspecification) * beta, -event_logit


def tied_closed_forms(
    theta: FloatArray | float, horizon: int, event_prob: float, beta: float,
    event_logit: float = 20.0, misspecification: float = 1.0, normal_logit: float = 0.0,
) -> dict[str, FloatArray]:
    """Exact ``D_H^2``, ``KL(P* || P^theta)`` and ``log BC`` of the tied member(s) ``theta``.

    ``BC = (1 - rho) bc_n^H + rho bc_e^H`` with the per-token Bhattacharyya coefficients
    ``bc_n``, ``bc_e`` of the normal and event contexts; ``KL = H ((1 - rho) kl_n + rho kl_e)``.
    """
    theta = np.asarray(theta, dtype=np.float64)
    tie = event_logit / beta
    a_normal, a_event = expert_logits(beta, event_logit, misspecification, normal_logit)
    log_bc_n = horizon * bernoulli_log_bc_logits(a_normal, theta)
    log_bc_e = horizon * bernoulli_log_bc_logits(a_event, tie * theta)
    rho = event_prob
    hellinger2 = -2.0 * ((1.0 - rho) * np.expm1(log_bc_n) + rho * np.expm1(log_bc_e))
    kl = horizon * ((1.0 - rho) * bernoulli_kl_logits(a_normal, theta)
                    + rho * bernoulli_kl_logits(a_event, tie * theta))
    log_bc = np.logaddexp(math.log1p(-rho) + log_bc_n, math.log(rho) + log_bc_e)
    return {"hellinger2": np.maximum(hellinger2, 0.0), "kl": kl, "log_bc": log_bc}


def tied_kl_projection(event_prob: float, beta: float, event_logit: float = 20.0,
                       misspecification: float = 1.0, normal_logit: float = 0.0) -> float:
    """``argmin_theta KL(P* || P^theta)``, the population NTP fit: the root of the increasing
    ``(1 - rho) (sigmoid(theta) - sigmoid(a_n)) + rho M (sigmoid(M theta) - sigmoid(a_e))``,
    which lies between the two contexts' own fits ``a_n`` and ``a_e / M = -beta``."""
    tie = event_logit / beta
    a_normal, a_event = expert_logits(beta, event_logit, misspecification, normal_logit)
    rho = event_prob

    def slope(theta: float) -> float:
        return float((1.0 - rho) * (expit(theta) - expit(a_normal))
                     + rho * tie * (expit(tie * theta) - expit(a_event)))

    lo, hi = min(a_normal, -beta), max(a_normal, -beta)
    if lo == hi:
        return lo
    return float(brentq(slope, lo, hi, xtol=1e-15, rtol=4 * np.finfo(float).eps, maxiter=500))


def tied_projection(tie: float) -> FloatArray:
    """The ``(1, 4)`` projection of the memory-0 class over two contexts and V = 2: ``theta``
    is the logit of a one in the normal context, ``tie * theta`` in the event context."""
    return np.array([[0.0, 1.0, 0.0, tie]])


def make_tied_logit_barrier_task(**kwargs: Any) -> SequenceTask:
    """Build the TiedLogitBarrier task (see :class:`TiedLogitBarrierEnv`)."""
    known = {k: kwargs.pop(k) for k in list(kwargs) if k in DEFAULTS}
    reject_unknown("TiedLogitBarrier-v0", kwargs, list(DEFAULTS))
    p = {**DEFAULTS, **known}
    horizon = check_int("horizon", p["horizon"], 1)
    rho = check_float("event_prob", p["event_prob"], 0.0, 1.0, low_open=True, high_open=True)
    beta = check_float("beta", p["beta"], 1e-9, 1e6)
    event_logit = check_float("event_logit", p["event_logit"], 0.0, 700.0, low_open=True)
    normal_logit = check_float("normal_logit", p["normal_logit"], -50.0, 50.0)
    eps = check_float("misspecification", p["misspecification"], 0.0, 1.0)
    tie = event_logit / beta

    prompts = FinitePrompts(np.array([[NORMAL], [EVENT]], dtype=np.int64),
                            np.log([1.0 - rho, rho]))
    a_normal, a_event = expert_logits(beta, event_logit, eps, normal_logit)
    logits = np.array([a_normal, a_event])
    logp = np.stack([_log_sigmoid(-logits), _log_sigmoid(logits)], axis=-1)  # (C, V)
    expert = FiniteStateModel(FiniteStateTables(logp[:, None, None, :], 0, horizon), prompts)
    learner_class = LinearSoftmaxClass(prompts, vocab_size=2, memory=0, horizon=horizon,
                                       projection=tied_projection(tie))
    # NTP's population fit minimises the KL, whose argmin does not depend on H
    ntp_theta = tied_kl_projection(rho, beta, event_logit, eps, normal_logit)
    members = {"normal_matching": a_normal, "event_matching": -beta, "kl_projection": ntp_theta}
    closed = {name: {key: float(value) for key, value in tied_closed_forms(
        theta, horizon, rho, beta, event_logit, eps, normal_logit).items()}
        for name, theta in members.items()}
    return SequenceTask(
        env_id=ENV_ID,
        params=p,
        horizon=horizon,
        vocab_size=2,
        prompt_vocab_size=2,
        prompts=prompts,
        expert=expert,
        learner_class=learner_class,
        well_specified_theta=np.array([-beta]) if eps == 0.0 else None,
        extras={"tie": tie, "expert_logits": (a_normal, a_event), "member_thetas": members,
                "closed_forms": closed},
    )


class TiedLogitBarrierEnv(SequenceEnv):
    """A one-parameter logistic class with tied features: NTP's ``C_apx`` grows like ``H``.

    ## Description
    Binary tokens after one of two prompts: ``x = 0`` ("normal", probability
    ``1 - rho``, ``rho = event_prob``) and ``x = 1`` ("event", probability ``rho``). Given
    the prompt, the expert emits ``H`` i.i.d. tokens: a fair coin in the normal context
    (``misspecification = 1``) and ``P(1) = sigmoid(-L)`` (``L = event_logit``, about
    ``2e-9`` at the default 20) in the event context.

    The learner class ``task.learner_class`` is one-parameter logistic with tied features
    (:class:`~ntp_envs.linear_softmax.LinearSoftmaxClass`, memory 0, projection
    ``[[0, 1, 0, M]]``): ``P_theta(1 | normal) = sigmoid(theta)``,
    ``P_theta(1 | event) = sigmoid(M theta)`` with the tie ``M = L / beta``. No member fits
    both contexts: ``theta = 0`` fits the normal coins and gives the event context a fair
    coin (a loss of order ``rho`` in ``D_H^2``, but ``rho H log 2`` in KL);
    ``theta = -beta`` fits the event context and biases every normal token
    (``D_H^2 ~ H beta^2 / 16`` while small). Population next-token prediction minimises
    ``KL = H ((1 - rho) kl_n(theta) + rho kl_e(theta))``, whose argmin does not depend on
    ``H``; the Hellinger error of that fixed ``theta`` grows like ``H`` on the normal
    context while the best in class stays near ``min(2 rho, H beta^2 / 16)``, so over a
    family of ``(rho, beta)`` NTP's worst ``C_apx`` grows about linearly in ``H``.

    Closed forms (``tied_closed_forms``; per-token Bernoulli ``bc`` and ``kl`` from logits,
    ``a_n``, ``a_e`` the expert's logits of a one):
    ``D_H^2(theta) = 2 (1 - rho) (1 - bc(a_n, theta)^H) + 2 rho (1 - bc(a_e, M theta)^H)``,
    ``KL(P* || P^theta) = H ((1 - rho) kl(a_n || theta) + rho kl(a_e || M theta))``.
    ``task.extras`` holds ``tie`` (``M``), ``expert_logits`` ``(a_n, a_e)``,
    ``member_thetas`` (``normal_matching`` ``a_n``, ``event_matching`` ``-beta`` and
    ``kl_projection``, NTP's population fit, :func:`tied_kl_projection`) and their
    ``closed_forms`` (``hellinger2``, ``kl``, ``log_bc``).

    Misspecification knob: the expert's normal-context logit is
    ``a_n = misspecification * normal_logit - (1 - misspecification) beta`` (a fair coin at
    1 with the default ``normal_logit = 0``). At ``misspecification = 0`` the expert is the
    member ``theta = -beta`` (well-specified, ``task.well_specified_theta = [-beta]``); in
    between, the normal context moves from the event-matching member's coin to the
    ``normal_logit`` coin.

    ``normal_logit > 0`` makes the barrier harder: the member that fits the normal context
    (``theta = a_n``) then emits ones in the event context with logit ``M a_n``, a
    per-token KL of about ``M a_n`` instead of ``log 2``, so NTP gives up the normal
    context for a rare event more often. With ``normal_logit = 0``, NTP's worst ``C_apx``
    over ``event_prob`` in [1e-5, 0.1] x ``beta`` in [1e-3, 1] is about ``H / 20``
    (3.2 / 9.9 / 36.4 at ``H`` = 64 / 256 / 1024); with ``normal_logit`` in
    ``{0, 0.1, 0.3, 1}`` it exceeds ``H``. The defaults (``event_prob = 0.1``, frequent
    enough that a few resets show both prompts; ``beta = 1``) give NTP ``C_apx`` 1.05 / 1.13
    / 3.21 / 7.19 at ``H`` = 16 / 64 / 256 / 1024 (capped near ``1 / rho = 10``); rarer
    events raise the cap.

    ## Action Space
    ``Discrete(2)``: the next token.

    ## Observation Space
    ``MultiDiscrete([2, H + 1, 3, ..., 3])`` of length ``1 + 1 + H``:
    ``[x, h, a_1, ..., a_h, 2, ..., 2]`` (the prompt, the position, and the prefix padded
    with the token ``2``).

    ## Rewards
    ``log pi*(a_h | x)``: the expert's log-probability of the emitted token (clipped below
    at ``REWARD_FLOOR = -100``, reached only when ``event_logit > 100``), so an episode's
    return is the expert log-likelihood of the sequence.

    ## Episode End
    Terminated after exactly ``horizon`` tokens; never truncated. ``step`` after the end
    raises ``RuntimeError``.

    ## Arguments
    ``horizon`` (64, >= 1), ``event_prob`` (0.1, ``rho`` in (0, 1)), ``beta`` (1.0, in
    [1e-9, 1e6]: ``M = event_logit / beta``), ``event_logit`` (20, ``L`` in (0, 700]),
    ``normal_logit`` (0, in [-50, 50]), ``misspecification`` (1.0, in [0, 1]).

    ## Version History
    * v0: initial version.
    """

    def __init__(
        self,
        horizon: int = 64,
        event_prob: float = 0.1,
        beta: float = 1.0,
        event_logit: float = 20.0,
        normal_logit: float = 0.0,
        misspecification: float = 1.0,
        render_mode: str | None = None,
        **unknown: Any,
    ) -> None:
        reject_unknown("TiedLogitBarrier-v0", unknown, [*DEFAULTS, "render_mode"])
        task = make_tied_logit_barrier_task(
            horizon=horizon, event_prob=event_prob, beta=beta, event_logit=event_logit,
            normal_logit=normal_logit, misspecification=misspecification,
        )
        super().__init__(task, render_mode=render_mode)
