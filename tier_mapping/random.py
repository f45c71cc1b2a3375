"""Random tier mapping: the setup of prior work (RF² §3.1), with no system-induced data heterogeneity.

Users are shuffled and cut into ``n_tiers`` groups of equal size (sizes differ by at most one),
so tier sizes match those of the balanced Dirichlet mapping and any difference between the two is
due to *which* users share a tier, not how many.
"""
from __future__ import annotations

import numpy as np

from .base import TierAssignment


def random_mapping(n_users: int, n_tiers: int = 3, seed: int = 0, spec: str = "random") -> TierAssignment:
    if n_tiers < 2:
        raise ValueError(f"n_tiers must be >= 2, got {n_tiers}")
    rng = np.random.default_rng(seed)
    tier = np.empty(n_users, dtype=np.int8)
    tier[rng.permutation(n_users)] = (np.arange(n_users) * n_tiers // max(n_users, 1)).astype(np.int8)
    return TierAssignment(tier=tier, n_tiers=n_tiers, spec=spec, seed=seed)
