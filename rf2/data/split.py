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


# -- leave-one-out (FedEM, NCF-style implicit protocol) ------------------------------------------------------
#: Event roles of :func:`leave_one_out_split`.
TRAIN, VALID, TEST = 0, 1, 2
#: FedEM's filter (``min_rates = 10``) and its number of evaluation negatives per user.
LOO_MIN_INTERACTIONS = 10
LOO_NEGATIVES = 99


def leave_one_out_split(user: np.ndarray) -> np.ndarray:
    """Per-user leave-one-out roles (int8: ``TRAIN`` 0, ``VALID`` 1, ``TEST`` 2) for events already
    sorted by ``(user, timestamp, item)``: each user's **last** event -> test, the one before ->
    validation, the rest -> train.

    Tie rule: events with equal timestamps are ordered by item index (the dataset's canonical
    order), so among same-second events the one with the highest item index counts as the newest.
    This is deterministic, unlike FedEM's unstable sort (fedem-method.md §7.8). A user needs at
    least 3 events (one of each role); fewer is a ``ValueError`` (filter users first).
    """
    user = np.asarray(user)
    if user.size == 0:
        return np.zeros(0, dtype=np.int8)
    if np.any(np.diff(user) < 0):
        raise ValueError("leave_one_out_split needs events sorted by user")
    starts = np.flatnonzero(np.r_[True, user[1:] != user[:-1]])
    counts = np.diff(np.r_[starts, user.size])
    if counts.min() < 3:
        raise ValueError(f"leave-one-out needs >= 3 events per user (train, validation, test); user "
                         f"{int(user[starts[counts.argmin()]])} has {int(counts.min())}")
    pos_from_end = np.repeat(starts + counts, counts) - np.arange(user.size) - 1
    role = np.full(user.size, TRAIN, dtype=np.int8)
    role[pos_from_end == 0] = TEST
    role[pos_from_end == 1] = VALID
    return role


def sample_eval_negatives(user: np.ndarray, item: np.ndarray, n_users: int, pool: np.ndarray,
                          n: int = LOO_NEGATIVES, seed: int = 0) -> np.ndarray:
    """``[n_users, n]`` evaluation negatives: for each user, ``n`` distinct items drawn uniformly
    without replacement from ``pool`` (sorted item indices) minus every item the user has an
    event with (train, validation or test), as FedEM's ``_sample_negative`` (fedem-method.md §2.5).
    Drawn once from ``numpy.random.default_rng(seed)``, users in index order; each row is sorted.
    A user with fewer than ``n`` candidate items is a ``ValueError``."""
    pool = np.unique(np.asarray(pool, dtype=np.int64))
    rng = np.random.default_rng(seed)
    out = np.zeros((n_users, n), dtype=np.int32)
    order = np.argsort(user, kind="stable")
    ptr = np.r_[0, np.cumsum(np.bincount(user, minlength=n_users))]
    items_sorted = np.asarray(item, dtype=np.int64)[order]
    for u in range(n_users):
        cand = np.setdiff1d(pool, items_sorted[ptr[u]:ptr[u + 1]], assume_unique=False)
        if cand.size < n:
            raise ValueError(f"user {u} has only {cand.size} items it never interacted with, fewer than the {n} "
                             "evaluation negatives")
        out[u] = np.sort(rng.choice(cand, size=n, replace=False))
    return out


SPLITS = ("temporal", "leave-one-out")


def check_split(split: str, min_interactions: int, allowed: tuple[str, ...] = SPLITS) -> None:
    """``ValueError`` naming the option for a bad ``split`` / ``min_interactions`` loader option."""
    if split not in allowed:
        raise ValueError(f"split must be one of {allowed}, got {split!r}")
    if not isinstance(min_interactions, (int, np.integer)) or isinstance(min_interactions, bool) or min_interactions < 3:
        raise ValueError(f"min_interactions must be an integer >= 3 (train, validation and test each need one event; "
                         f"FedEM: {LOO_MIN_INTERACTIONS}), got {min_interactions!r}")


def leave_one_out(dataset, min_interactions: int = LOO_MIN_INTERACTIONS, n_negatives: int = LOO_NEGATIVES,
                  seed: int = 0, order: str = "timestamp"):
    """The implicit-feedback leave-one-out version of a loaded :class:`~rf2.data.InteractionDataset`
    (FedEM's protocol, fedem-method.md §2):

    1. every event is an interaction and becomes a positive (``label`` = 1: binarised, whatever
       the rating or click threshold; a loader must not pass it sampled negatives);
    2. users with fewer than ``min_interactions`` events are dropped (one pass, no item filter) and
       the rest re-indexed ``0..n-1`` in their original order; the count dropped is in the
       description;
    3. :func:`leave_one_out_split` on the dataset's event order ``(user, timestamp, item)``: newest
       -> test (``is_test``), second newest -> validation (``is_valid``), rest -> training;
       ``order`` only names that order in the description (e.g. ``"file order"`` when the
       timestamp is a pseudo-time);
    4. :func:`sample_eval_negatives`: ``n_negatives`` per user, from the items with at least one
       event after filtering (FedEM's item universe) that the user never interacted with, seeded
       by ``seed``; stored as ``eval_negatives`` and shared by validation and test.

    A ``user_id`` feature (user index + 1) is added if the dataset has none, for models with a
    per-user embedding (NCF, FedEM's FCF). The item table, ids and features are kept unchanged (items that lost all their events stay in
    the table but are never candidates). Training negatives (FedEM re-draws 4 per positive every
    round) are not part of the dataset: they belong to the training loop (issue 13 §1).
    """
    from .dataset import InteractionDataset

    check_split("leave-one-out", min_interactions, ("leave-one-out",))
    if not isinstance(n_negatives, (int, np.integer)) or n_negatives < 1:
        raise ValueError(f"n_negatives must be an integer >= 1, got {n_negatives!r}")
    ds = dataset
    counts = np.bincount(ds.user, minlength=ds.n_users)
    keep_user = counts >= min_interactions
    if not keep_user.any():
        raise ValueError(f"{ds.name}: no user has >= {min_interactions} interactions (min_interactions)")
    new_id = np.cumsum(keep_user) - 1
    ev = ds.events[keep_user[ds.user]].copy()
    ev["user"] = new_id[ev["user"].to_numpy()].astype(np.int32)
    ev["label"] = np.ones(len(ev), dtype=np.int8)
    role = leave_one_out_split(ev["user"].to_numpy())
    ev["is_test"] = role == TEST
    ev["is_valid"] = role == VALID
    ev = ev.reset_index(drop=True)
    users = ds.users[keep_user].reset_index(drop=True).rename_axis(ds.users.index.name or "user")
    n_users = int(keep_user.sum())
    schema = ds.schema
    if "user_id" not in schema.columns:  # per-user embedding models (NCF, FedEM's FCF) read a user id
        from .schema import Schema, SparseFeature

        users.insert(0, "user_id", np.arange(1, n_users + 1, dtype=np.int32))
        schema = Schema((SparseFeature("user_id", n_users + 1, "user"), *schema.features))
    pool = np.unique(ev["item"].to_numpy())
    neg = sample_eval_negatives(ev["user"].to_numpy(), ev["item"].to_numpy(), n_users, pool, n_negatives, seed)
    dropped = int((~keep_user).sum())
    ties = " (ties: higher item index = newer)" if order == "timestamp" else ""
    info = (f"leave-one-out (implicit): every interaction a positive; {dropped} of {ds.n_users} users with < "
            f"{min_interactions} interactions dropped; per user by {order}{ties} the newest "
            f"-> test, the second newest -> validation, the rest -> train; {n_negatives} evaluation negatives per user "
            f"(seed {seed}) from the {pool.size} items with an interaction, never rated by the user, shared by "
            "validation and test")
    return InteractionDataset(
        name=ds.name, events=ev, users=users, items=ds.items, schema=schema,
        item_sequences=ds.item_sequences, description=f"{ds.description}; that split replaced by {info}" if ds.description else info,
        source=ds.source, eval_negatives=neg,
    )
