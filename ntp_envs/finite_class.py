"""An explicit finite learner class ``Pi = {pi_1, ..., pi_K}``."""

from __future__ import annotations

from dataclasses import dataclass

from ntp_envs.sequence_model import SequenceModel


@dataclass(frozen=True)
class FiniteClass:
    """Named member policies over one task (same vocabulary and horizon)."""

    members: tuple[SequenceModel, ...]
    names: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.members) < 1:
            raise ValueError("a finite class needs at least one member")
        if len(self.names) != len(self.members) or len(set(self.names)) != len(self.names):
            raise ValueError("names must be distinct, one per member")
        first = self.members[0]
        for member in self.members:
            if (member.vocab_size, member.horizon) != (first.vocab_size, first.horizon):
                raise ValueError("members must share vocab_size and horizon")

    def __len__(self) -> int:
        return len(self.members)

    def index(self, name: str) -> int:
        """Position of the member called ``name``."""
        if name not in self.names:
            raise ValueError(f"unknown member {name!r}; members: {list(self.names)}")
        return self.names.index(name)
