"""Experts as policies, and expert demonstrations (batched collection, storage, imitation)."""

from experts.demonstrations import Demonstrations, collect_demonstrations
from experts.policy import ExpertPolicy, ImitationExpert, as_sb3_policy, make_imitation_expert

__all__ = [
    "Demonstrations",
    "ExpertPolicy",
    "ImitationExpert",
    "as_sb3_policy",
    "collect_demonstrations",
    "make_imitation_expert",
]
