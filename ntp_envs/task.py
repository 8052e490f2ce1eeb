"""A sequence-generation task: prompt law, expert, and the learner class it is judged against."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ntp_envs.sequence_model import PromptDistribution, SequenceModel
from ntp_envs.type_aliases import FloatArray, IntArray

REWARD_FLOOR = -100.0
"""Lowest reward: the expert's token log-probability is clipped here, so emitting a token the
expert never emits (log-probability ``-inf``) gives a finite float reward."""


@dataclass(frozen=True)
class SequenceTask:
    """Everything an env, an agent and the evaluator need to know about one task.

    ``learner_class`` is the class ``Pi`` that ``C_apx`` is measured against (``None`` when
    the task defines none); ``well_specified_theta`` is a parameter of that class that
    reproduces the expert exactly when the task is well-specified (``None`` otherwise).
    Tasks with a right answer set ``answer_length`` (the answer is the last that many tokens
    of the expert's sequence) and may set ``test_prompts``, a held-out prompt law disjoint
    from ``prompts`` on which answer accuracy is measured (``prompts`` when ``None``).
    """

    env_id: str
    params: dict[str, Any]
    horizon: int
    vocab_size: int
    prompt_vocab_size: int
    prompts: PromptDistribution
    expert: SequenceModel
    learner_class: Any = None
    well_specified_theta: FloatArray | None = None
    reward_doc: str = "log-probability of the emitted token under the expert"
    extras: dict[str, Any] = field(default_factory=dict)
    answer_length: int | None = None
    test_prompts: PromptDistribution | None = None

    def reward(self, prompt: IntArray, prefix: IntArray, action: int) -> float:
        """Reward for emitting ``action`` after ``prefix``: the expert's token log-probability,
        clipped below at :data:`REWARD_FLOOR`."""
        logp = self.expert.next_token_logprobs(prompt[None, :], prefix[None, :])
        return max(float(logp[0, action]), REWARD_FLOOR)

    def sample_demonstrations(
        self, n: int, rng: np.random.Generator
    ) -> tuple[IntArray, IntArray]:
        """``n`` prompts and expert sequences, batched (no env stepping)."""
        prompts = self.prompts.sample(n, rng)
        return prompts, self.expert.sample(prompts, rng)
