"""What a tier mapping produces: one device tier per user."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def tier_names(n_tiers: int) -> tuple[str, ...]:
    """Tier 0 is the lowest-end device tier."""
    if n_tiers == 3:
        return ("low", "mid", "high")
    if n_tiers == 2:
        return ("low", "high")
    return tuple(f"tier{t}" for t in range(n_tiers))


@dataclass(frozen=True, eq=False)
class TierAssignment:
    """``tier[u]`` is user ``u``'s device tier (0 = lowest end)."""

    tier: np.ndarray
    n_tiers: int
    spec: str  # the mapping that produced it, e.g. "random" or "dirichlet:0.05"
    seed: int

    def __post_init__(self) -> None:
        t = np.asarray(self.tier)
        if t.ndim != 1 or (t.size and (t.min() < 0 or t.max() >= self.n_tiers)):
            raise ValueError(f"tiers must be a 1-D array of integers in [0, {self.n_tiers})")

    @property
    def names(self) -> tuple[str, ...]:
        return tier_names(self.n_tiers)

    @property
    def n_users(self) -> int:
        return int(self.tier.size)

    def sizes(self) -> np.ndarray:
        return np.bincount(self.tier, minlength=self.n_tiers)

    def users_in(self, tier: int | str) -> np.ndarray:
        t = self.names.index(tier) if isinstance(tier, str) else tier
        return np.flatnonzero(self.tier == t)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, TierAssignment)
            and self.n_tiers == other.n_tiers
            and np.array_equal(self.tier, other.tier)
        )

    def __hash__(self) -> int:
        return hash((self.n_tiers, self.tier.tobytes()))
