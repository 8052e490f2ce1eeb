"""MixtureProduct-v0: a two-component mixture of Bernoulli products against the product class."""

from __future__ import annotations

from typing import Any

import numpy as np

from ntp_envs.base import SequenceEnv
from ntp_envs.linear_softmax import LinearSoftmaxClass
from ntp_envs.sequence_model import CountLaw, FinitePrompts, SequenceModel
from ntp_envs.task import SequenceTask
from ntp_envs.type_aliases import FloatArray, IntArray
from ntp_envs.validation import check_float, check_int, reject_unknown

ENV_ID = "ntp_envs/MixtureProduct-v0"

DEFAULTS: dict[str, Any] = {
    "horizon": 64,
    "weight": 0.05,
    "p0": 0.2,
    "p1": 0.8,
}


def _log_weight(x: float) -> float:
    """``log x`` with ``log 0 = -inf`` and no warning."""
    return float(np.log(x)) if x > 0 else -np.inf


class MixtureOfProducts(SequenceModel):
    """``P(a_{1:H} | x) = (1 - w) prod_h Bern(a_h; p0) + w prod_h Bern(a_h; p1)`` (V = 2).

    The same law in every context of ``prompts``. The next-token law is the posterior
    mixture given the number of ones ``k`` in the prefix of length ``h``:
    ``P(a = 1 | k, h) = sum_z r_z(k, h) p_z`` with ``r_z ∝ w_z p_z^k (1 - p_z)^(h - k)``.
    """

    vocab_size = 2

    def __init__(
        self, prompts: FinitePrompts, horizon: int, weight: float, p0: float, p1: float
    ) -> None:
        self.prompts = prompts
        self.horizon = check_int("horizon", horizon, 1)
        self.weight = check_float("weight", weight, 0.0, 1.0)
        self.p0 = check_float("p0", p0, 0.0, 1.0, low_open=True, high_open=True)
        self.p1 = check_float("p1", p1, 0.0, 1.0, low_open=True, high_open=True)
        self._log_w = np.array([_log_weight(1.0 - self.weight), _log_weight(self.weight)])
        self._log_p = np.log([self.p0, self.p1])  # log P(a = 1 | component)
        self._log_q = np.log1p(-np.array([self.p0, self.p1]))  # log P(a = 0 | component)

    def _log_joint(self, ones: IntArray, length: IntArray | int) -> FloatArray:
        """``log w_z + k log p_z + (h - k) log(1 - p_z)``: shape ``(*ones.shape, 2)``."""
        ones = np.asarray(ones, dtype=np.float64)[..., None]
        zeros = np.asarray(length, dtype=np.float64)[..., None] - ones
        return self._log_w + ones * self._log_p + zeros * self._log_q

    def count_law(self) -> CountLaw:
        k = np.arange(self.horizon + 1)
        log_seq = np.logaddexp.reduce(self._log_joint(k, self.horizon), axis=-1)
        return CountLaw(np.broadcast_to(log_seq, (self.prompts.num_contexts, k.size)).copy())

    def next_token_logprobs(self, prompts: IntArray, prefixes: IntArray) -> FloatArray:
        prefixes = self._check_tokens(np.asarray(prefixes).reshape(len(prompts), -1))
        h = prefixes.shape[1]
        if h >= self.horizon:
            raise ValueError(f"prefix length must be < horizon {self.horizon}, got {h}")
        self.prompts.index_of(prompts)
        joint = self._log_joint(prefixes.sum(axis=1), h)  # (B, 2)
        norm = np.logaddexp(joint[:, 0], joint[:, 1])
        one = np.logaddexp(*(joint + self._log_p).T) - norm
        zero = np.logaddexp(*(joint + self._log_q).T) - norm
        return np.stack([zero, one], axis=1)

    def token_logprobs(self, prompts: IntArray, tokens: IntArray) -> FloatArray:
        tokens = self._check_tokens(tokens)
        self.prompts.index_of(prompts)
        length = tokens.shape[1]
        before = np.cumsum(tokens, axis=1) - tokens  # ones strictly before each position
        joint = self._log_joint(before, np.arange(length)[None, :])  # (B, L, 2)
        emit = np.where(tokens[..., None] == 1, self._log_p, self._log_q)
        return np.logaddexp(*np.moveaxis(joint + emit, -1, 0)) - np.logaddexp(
            *np.moveaxis(joint, -1, 0)
        )

    def sequence_logprob(self, prompts: IntArray, tokens: IntArray) -> FloatArray:
        tokens = self._check_tokens(tokens)
        self.prompts.index_of(prompts)
        joint = self._log_joint(tokens.sum(axis=1), tokens.shape[1])
        return np.logaddexp(joint[:, 0], joint[:, 1])

    def sample(self, prompts: IntArray, rng: np.random.Generator) -> IntArray:
        prompts = np.asarray(prompts, dtype=np.int64)
        self.prompts.index_of(prompts)
        component = rng.random(prompts.shape[0]) < self.weight
        p = np.where(component, self.p1, self.p0)[:, None]
        return (rng.random((prompts.shape[0], self.horizon)) < p).astype(np.int64)


def make_mixture_product_task(**kwargs: Any) -> SequenceTask:
    """Build the MixtureProduct task (see :class:`MixtureProductEnv` for the arguments)."""
    known = {k: kwargs.pop(k) for k in list(kwargs) if k in DEFAULTS}
    reject_unknown("MixtureProduct-v0", kwargs, list(DEFAULTS))
    p = {**DEFAULTS, **known}
    horizon = check_int("horizon", p["horizon"], 1)
    weight = check_float("weight", p["weight"], 0.0, 1.0)
    p0 = check_float("p0", p["p0"], 0.0, 1.0, low_open=True, high_open=True)
    p1 = check_float("p1", p["p1"], 0.0, 1.0, low_open=True, high_open=True)
    prompts = FinitePrompts(np.zeros((1, 1), dtype=np.int64), np.zeros(1))
    expert = MixtureOfProducts(prompts, horizon, weight, p0, p1)
    learner_class = LinearSoftmaxClass(prompts, vocab_size=2, memory=0, horizon=horizon)
    # memory 0: W = theta.reshape(1, 2) holds the logits of tokens 0 and 1 for the context
    well_specified = np.array([np.log1p(-p0), np.log(p0)]) if weight == 0.0 else None
    ntp_q = (1.0 - weight) * p0 + weight * p1  # KL projection onto i.i.d. Bernoulli(q)
    return SequenceTask(
        env_id=ENV_ID,
        params=p,
        horizon=horizon,
        vocab_size=2,
        prompt_vocab_size=1,
        prompts=prompts,
        expert=expert,
        learner_class=learner_class,
        well_specified_theta=well_specified,
        extras={"kl_projection_q": ntp_q},
    )


class MixtureProductEnv(SequenceEnv):
    """A mixture of two Bernoulli products, learned by the class of Bernoulli products.

    ## Description
    An episode writes one binary sequence ``a_1..a_H`` after the single prompt ``x = 0``.
    The expert law is the two-component mixture

    ``P*(a_{1:H}) = (1 - weight) Bern(p0)^H + weight Bern(p1)^H``

    (:class:`MixtureOfProducts`): a hidden component is drawn once per sequence, then the
    tokens are i.i.d. given it, so the next-token law depends on the count of ones so far.
    The learner class is ``{Bern(q)^H}`` (:class:`~ntp_envs.linear_softmax.LinearSoftmaxClass`
    with ``memory = 0``: one logit per token). ``weight`` is the misspecification knob: at
    ``weight = 0`` the expert is ``Bern(p0)^H``, inside the class
    (``task.well_specified_theta = [log(1 - p0), log p0]``).

    Population next-token prediction (the KL projection) fits
    ``q = (1 - weight) p0 + weight p1`` (``task.extras["kl_projection_q"]``): a product that
    sits between the components, and whose Hellinger distance to ``P*`` tends to 2 as ``H``
    grows. The best product instead copies the heavier component, with
    ``D_H^2 -> 2 (1 - sqrt(1 - weight))``. So ``C_apx`` of population NTP grows with ``H``
    until it saturates near ``1 / (1 - sqrt(1 - weight))``. With the defaults
    (``min_q`` over a dense logit grid, then a bounded refinement):

    ====  ============  ==========  =====
       H  D^2 (NTP)     best D^2    C_apx
    ====  ============  ==========  =====
       8  0.0358        0.0316       1.13
      16  0.0647        0.0469       1.38
      64  0.1322        0.0506       2.61
     256  0.3568        0.0506       7.05
    1024  1.0158        0.0506      20.06
    4096  1.8734        0.0506      36.99
    ====  ============  ==========  =====

    (least-squares slope of ``log C_apx`` against ``log H`` over ``H = 16..1024``: 0.66).
    The best product is ``q ~ p0`` (0.2017 at ``H = 16``, 0.2000 from ``H = 64`` on), and
    the landscape in ``q`` is bimodal from ``H ~ 64`` on (a second local minimum at
    ``q ~ p1`` with ``D_H^2 ~ 2 (1 - sqrt(weight)) = 1.55``): search it globally. The
    expert has no finite-state form; it exposes its count law (sufficient statistics) for
    exact evaluation at any ``H``.

    ## Action Space
    ``Discrete(2)``: the next token.

    ## Observation Space
    ``MultiDiscrete([1, H + 1, 3, ..., 3])`` of length ``1 + 1 + H``:
    ``[x, h, a_1, ..., a_h, 2, ..., 2]`` (the prompt, the position, and the prefix padded
    with the token ``2``).

    ## Rewards
    ``log pi*(a_h | x, a_{<h})``: the expert's (posterior-mixture) log-probability of the
    emitted token, so an episode's return is the expert log-likelihood of the sequence
    (each reward is clipped below at ``REWARD_FLOOR = -100``, reached only when ``p0`` or
    ``p1`` lies within ``e^-100`` of 0 or 1).

    ## Episode End
    Terminated after exactly ``horizon`` tokens; never truncated. ``step`` after the end
    raises ``RuntimeError``.

    ## Arguments
    ``horizon`` (64, >= 1), ``weight`` (0.05, in [0, 1]: the weight of component 1, the
    misspecification knob), ``p0`` (0.2, in (0, 1)), ``p1`` (0.8, in (0, 1)): the
    probabilities of a one in components 0 and 1.

    ## Version History
    * v0: initial version.
    """

    def __init__(
        self,
        horizon: int = 64,
        weight: float = 0.05,
        p0: float = 0.2,
        p1: float = 0.8,
        render_mode: str | None = None,
        **unknown: Any,
    ) -> None:
        reject_unknown("MixtureProduct-v0", unknown, [*DEFAULTS, "render_mode"])
        task = make_mixture_product_task(horizon=horizon, weight=weight, p0=p0, p1=p1)
        super().__init__(task, render_mode=render_mode)
