"""Per-user temporal train/test split.

Each user's events are ordered by ``(timestamp, item)``; the last ``floor(test_fraction * n)``
of them (at least one, and never all: a user with ``n >= 2`` events keeps at least one training
event; a user with a single event keeps it for training) form the test set. The split is a pure
function of the log, so it is deterministic and identical across tier mappings, optimisations
and seeds. In federated terms every client evaluates on its own most recent interactions.
"""
from __future__ import annotations

import numpy as np


def temporal_split(user: np.ndarray, test_fraction: float = 0.2) -> np.ndarray:
    """Return ``is_test`` for events already sorted by ``(user, timestamp, item)``."""
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    user = np.asarray(user)
    if user.size == 0:
        return np.zeros(0, dtype=bool)
    if np.any(np.diff(user) < 0):
        raise ValueError("temporal_split needs events sorted by user")
    starts = np.flatnonzero(np.r_[True, user[1:] != user[:-1]])
    counts = np.diff(np.r_[starts, user.size])
    n_test = np.floor(counts * test_fraction).astype(np.int64)
    if test_fraction > 0:
        n_test = np.clip(n_test, 1, None)
    n_test = np.minimum(n_test, counts - 1)  # keep >= 1 training event (0 test events for n == 1)
    # position of each event within its user's block, counted from the end
    pos_from_end = np.repeat(starts + counts, counts) - np.arange(user.size) - 1
    return pos_from_end < np.repeat(n_test, counts)
