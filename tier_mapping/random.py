"""Random tier mapping: the setup of prior work (RF² §3.1), with no system-induced data heterogeneity.

``random`` (default, the RF² authors' simulator): users are sorted by their number of training
events and dealt out in turn, ``tier = position mod n_tiers``, so every tier gets users of every
data size and the tiers are balanced in data volume as well as in number (sizes differ by at most
one). Users with the same count are put in a seeded random order first (a permutation drawn from
``seed``), so different seeds give different mappings; the order is ascending, so the user with the
fewest events is in tier 0.

``random:shuffle`` (rf2 0.1's ``random``): a random permutation of the users cut into
``n_tiers`` consecutive groups of equal size; tier sizes match, data volumes only on average.

Either way the tier sizes match those of the balanced Dirichlet mapping, so any difference
between the two is due to *which* users share a tier, not how many.
"""
from __future__ import annotations

import numpy as np

from .base import TierAssignment


def random_mapping(train_counts: np.ndarray, n_tiers: int = 3, seed: int = 0, spec: str = "random") -> TierAssignment:
    """``random``: users sorted by training events (ties in a seeded random order), dealt
    round-robin: ``tier = position mod n_tiers``."""
    if n_tiers < 2:
        raise ValueError(f"n_tiers must be >= 2, got {n_tiers}")
    counts = np.asarray(train_counts)
    n_users = counts.size
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n_users)  # the tie order
    order = perm[np.argsort(counts[perm], kind="stable")]
    tier = np.empty(n_users, dtype=np.int8)
    tier[order] = (np.arange(n_users) % n_tiers).astype(np.int8)
    return TierAssignment(tier=tier, n_tiers=n_tiers, spec=spec, seed=seed)


def shuffle_mapping(n_users: int, n_tiers: int = 3, seed: int = 0, spec: str = "random:shuffle") -> TierAssignment:
    """``random:shuffle``: a seeded permutation of the users cut into ``n_tiers`` equal groups."""
    if n_tiers < 2:
        raise ValueError(f"n_tiers must be >= 2, got {n_tiers}")
    rng = np.random.default_rng(seed)
    tier = np.empty(n_users, dtype=np.int8)
    tier[rng.permutation(n_users)] = (np.arange(n_users) * n_tiers // max(n_users, 1)).astype(np.int8)
    return TierAssignment(tier=tier, n_tiers=n_tiers, spec=spec, seed=seed)
