"""Activity tier mapping: tiers by how much training data a user has (lightest users lowest).

Not one of RF²'s mappings: it encodes the assumption HeteFedRec (Yuan et al., 2024, §IV-A) makes
when it gives small models to clients with few interactions, so that a tier-aware run reports
its metrics (and MDAC, RF² Eq. 2) per *data-size group*. ``activity:5:3:2`` cuts the users,
sorted by their number of training events (ties: lower user index first), into consecutive groups
in proportion 5:3:2, fewest events -> tier 0; ``activity`` alone uses equal parts. With
``hetefedrec:...:group=tier`` this reproduces HeteFedRec's ``group=count`` grouping exactly.
"""
from __future__ import annotations

import numpy as np

from .base import TierAssignment


def count_groups(counts: np.ndarray, ratio) -> np.ndarray:
    """Users sorted by ``counts`` (ties: lower index first) cut into ``len(ratio)`` consecutive
    groups of (rounded) proportions ``ratio``; group 0 has the fewest events."""
    counts = np.asarray(counts)
    n = counts.size
    order = np.argsort(counts, kind="stable")
    cuts = np.round(np.cumsum(ratio) / np.sum(ratio) * n).astype(np.int64)
    cuts[-1] = n
    group = np.empty(n, dtype=np.int64)
    start = 0
    for g, end in enumerate(cuts):
        group[order[start:end]] = g
        start = end
    return group


def activity_mapping(train_counts: np.ndarray, n_tiers: int = 3, ratio=None, spec: str = "activity",
                     seed: int = 0) -> TierAssignment:
    ratio = tuple(ratio) if ratio else (1.0,) * n_tiers
    if len(ratio) != n_tiers:
        raise ValueError(f"tier mapping {spec!r} has {len(ratio)} ratio parts but there are {n_tiers} tiers; "
                         "give one part per tier, lowest tier first (e.g. activity:5:3:2 for 3 tiers)")
    tier = count_groups(train_counts, ratio).astype(np.int8)
    return TierAssignment(tier=tier, n_tiers=n_tiers, spec=spec, seed=seed)
