"""Dirichlet-based tier mapping: Algorithm 1 of the RF² paper (Maeng et al., 2022, §4.2).

Algorithm 1, as implemented here (defaults follow the RF² authors' released simulator where the
paper's text leaves a choice open; the other readings are options of the spec
``dirichlet:ALPHA[:unbalanced][:draw=split|bernoulli][:tie=low|high|random][:null=sorted|last]``):

* line 2: items are visited in descending popularity, the number of distinct users who clicked
  them in *all* events (train and test: the tier belongs to the device, not to the split); ties
  by item id. Users who never clicked form one pseudo-item (the paper's "null item"), sorted
  among the items by its size (its number of users; after real items of the same size). With
  ``null=last`` (rf2 0.1) it is visited after every item;
* line 3: each visited item draws tier proportions ``p ~ Dirichlet(alpha, n_tiers)``;
* lines 4-5 (balanced, the default): the proportions, sorted descending, go to the tiers in
  ascending order of their current size, so the currently smallest tier gets the largest share.
  Ties between equally small tiers (above all at the first, most popular item, when every tier
  is empty) go to the lower tier index (``tie=low``, the authors'), the higher one
  (``tie=high``), or follow a random order of the tiers (``tie=random``: one permutation drawn
  from the seed, on a stream separate from the other draws, so the tie rule changes nothing
  else). ``unbalanced`` drops lines 4-5: ``p_t`` simply goes to tier ``t`` (the tie rule then has
  no effect);
* lines 6-12: the item's clicking users that have no tier yet (line 7) are assigned:
  ``draw=split`` (default, the authors'): they are shuffled and split by the proportions, the
  first ``⌊n·P_1⌋`` (``P`` the cumulative proportions) to the share of ``p_1``, the next up to
  ``⌊n·P_2⌋`` to ``p_2``, ..., the rest to the last; ``draw=bernoulli`` (the paper's text,
  rf2 0.1): each user draws ``r ~ U[0, 1)`` independently and joins the tier whose
  cumulative-proportion interval holds ``r``.

rf2 0.1's ``dirichlet:ALPHA`` equals ``dirichlet:ALPHA:draw=bernoulli:null=last`` on data where a
user clicks an item at most once (it counted clicks, not users, for popularity): same draws,
same tiers.

Small ``alpha`` makes each item's ``p`` nearly one-hot, so users who like the same items end up in
the same tier (high system-induced data heterogeneity); large ``alpha`` makes ``p`` nearly uniform,
i.e. a random mapping.

Draws: ``p`` for every visiting rank (``n_items + 1`` rows, in visiting order), then one uniform
per user (``r`` for ``bernoulli``, the shuffle key for ``split``), from ``default_rng(seed)``.

Speed: the per-user work (first item in visiting order, the draw, which share it falls into) is
vectorised; the only sequential part is the running tier sizes of lines 4-5, a loop over the
items that are some user's first item, with ``n_tiers`` integers per step. A MovieLens-20M-sized
log (138k users, 20M events) maps in about a second.
"""
from __future__ import annotations

import numpy as np

from .base import TierAssignment

#: how an item's users are assigned: "split" by its proportions (authors) or "bernoulli" per-user draws (paper text)
DRAWS = ("split", "bernoulli")
#: which of several equally small tiers gets the larger share: lowest index (authors), highest, random per seed
TIES = ("low", "high", "random")
#: where the pseudo-item of click-less users is visited: "sorted" among the items by size, or "last" (rf2 0.1)
NULLS = ("sorted", "last")


def first_items(user: np.ndarray, item: np.ndarray, label: np.ndarray, n_users: int, n_items: int,
                null: str = "sorted") -> tuple[np.ndarray, np.ndarray]:
    """Visiting order (Algorithm 1, line 2) and, per user, the rank of the first item that reaches them.

    Returns ``(order, first_rank)``: ``order[r]`` is the item of visiting rank ``r`` (``n_items``
    stands for the pseudo-item of users who never clicked); ``first_rank[u]`` is the rank of the
    most popular item ``u`` clicked, or the pseudo-item's rank.
    """
    if null not in NULLS:
        raise ValueError(f"null must be one of {list(NULLS)}, got {null!r}")
    clicked = np.asarray(label) == 1
    cu = np.asarray(user)[clicked].astype(np.int64)
    ci = np.asarray(item)[clicked].astype(np.int64)
    pairs = np.unique(cu * n_items + ci)  # a user counts once per item
    popularity = np.bincount(pairs % n_items, minlength=n_items) if n_items else np.zeros(0, np.int64)
    has_click = np.zeros(n_users, dtype=bool)
    has_click[cu] = True
    n_null = int(n_users - has_click.sum())
    size = np.r_[popularity, -1 if null == "last" else n_null]  # the pseudo-item is id n_items
    order = np.lexsort((np.arange(n_items + 1), -size))
    rank = np.empty(n_items + 1, dtype=np.int64)
    rank[order] = np.arange(n_items + 1)
    first_rank = np.full(n_users, rank[n_items], dtype=np.int64)
    click_rank = rank[ci]
    has = np.full(n_users, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(has, cu, click_rank)
    first_rank[has_click] = has[has_click]
    return order, first_rank


def dirichlet_mapping(
    user: np.ndarray,
    item: np.ndarray,
    label: np.ndarray,
    n_users: int,
    n_items: int,
    alpha: float,
    n_tiers: int = 3,
    balance: bool = True,
    seed: int = 0,
    spec: str | None = None,
    draw: str = "split",
    tie: str = "low",
    null: str = "sorted",
) -> TierAssignment:
    """Assign every user a tier by Algorithm 1 (see the module docstring)."""
    if not (alpha > 0 and np.isfinite(alpha)):
        raise ValueError(f"Dirichlet alpha must be a positive finite number, got {alpha!r}")
    if n_tiers < 2:
        raise ValueError(f"n_tiers must be >= 2, got {n_tiers}")
    for name, value, allowed in (("draw", draw, DRAWS), ("tie", tie, TIES)):
        if value not in allowed:
            raise ValueError(f"{name} must be one of {list(allowed)}, got {value!r}")
    rng = np.random.default_rng(seed)
    _, first_rank = first_items(user, item, label, n_users, n_items, null)
    # Line 3 for every visiting rank (items and the pseudo-item), then one uniform per user.
    p = rng.dirichlet(np.full(n_tiers, float(alpha)), size=n_items + 1)
    r = rng.random(n_users)
    tie_order = np.random.default_rng([seed, 1]).permutation(n_tiers) if tie == "random" else None
    tier = assign_tiers(first_rank, p, r, balance, draw=draw, tie=tie, tie_order=tie_order)
    return TierAssignment(
        tier=tier.astype(np.int8), n_tiers=n_tiers, spec=spec or f"dirichlet:{alpha:g}", seed=seed
    )


def share_slots(first_rank: np.ndarray, cum: np.ndarray, r: np.ndarray, draw: str = "split") -> np.ndarray:
    """Lines 6-11 per user: the index of the share (column of ``cum``, the cumulative proportions of
    each visiting rank) that user ``u`` joins, given the first rank that reaches them and their uniform."""
    n_ranks, n_tiers = cum.shape
    if draw == "bernoulli":  # each user on their own: the interval of cum that holds r
        c = cum.copy()
        c[:, -1] = 1.0  # guard against rounding: r < 1 always lands in some share
        return (r[:, None] >= c[first_rank]).sum(axis=1)
    # split: the item's new users, shuffled (ordered by r), cut at floor(n * cum)
    n_users = first_rank.size
    order = np.lexsort((r, first_rank))
    fr = first_rank[order]
    n_k = np.bincount(first_rank, minlength=n_ranks)
    start = np.r_[0, np.cumsum(n_k)[:-1]]
    pos = np.arange(n_users) - start[fr]
    cuts = np.floor(n_k[:, None] * cum[:, :-1]).astype(np.int64)  # [ranks, n_tiers - 1]
    slot = np.empty(n_users, dtype=np.int64)
    slot[order] = (pos[:, None] >= cuts[fr]).sum(axis=1)
    return slot


def assign_tiers(first_rank: np.ndarray, p: np.ndarray, r: np.ndarray, balance: bool = True, draw: str = "split",
                 tie: str = "low", tie_order: np.ndarray | None = None) -> np.ndarray:
    """Lines 4-12 of Algorithm 1 given the draws: ``p[k]`` are the tier proportions of the item of
    visiting rank ``k``, ``r[u]`` is user ``u``'s uniform (its draw, or its shuffle key for
    ``split``), ``first_rank[u]`` the rank of the first item that reaches ``u``. ``tie_order``
    (``tie="random"``) ranks the tiers for breaking size ties."""
    n_ranks, n_tiers = p.shape
    if balance:
        p = -np.sort(-p, axis=1)  # line 4: p_large >= p_mid >= p_small
    cum = np.cumsum(p, axis=1)
    slot = share_slots(first_rank, cum, r, draw)  # 0 = the largest share when balanced

    if not balance:
        return slot
    if tie == "low":
        tie_key = list(range(n_tiers))
    elif tie == "high":
        tie_key = [-t for t in range(n_tiers)]
    elif tie == "random":
        if tie_order is None:
            raise ValueError("tie='random' needs tie_order, a permutation of the tiers")
        tie_key = [0] * n_tiers
        for position, t in enumerate(np.asarray(tie_order).tolist()):
            tie_key[t] = position
    else:
        raise ValueError(f"tie must be one of {list(TIES)}, got {tie!r}")
    # Line 5 needs the tier sizes before each item: walk the items that are somebody's first.
    key = first_rank * n_tiers + slot
    counts = np.bincount(key, minlength=n_ranks * n_tiers).reshape(n_ranks, n_tiers)
    visited = np.flatnonzero(counts.any(axis=1))
    sizes = [0] * n_tiers
    tier_of_slot = np.empty((visited.size, n_tiers), dtype=np.int64)
    tiers = range(n_tiers)
    for row, c in enumerate(counts[visited].tolist()):
        by_size = sorted(tiers, key=lambda t: (sizes[t], tie_key[t]))  # ascending size: slot 0 -> smallest tier
        tier_of_slot[row] = by_size
        for s, t in enumerate(by_size):
            sizes[t] += c[s]
    row_of_rank = np.full(n_ranks, -1, dtype=np.int64)
    row_of_rank[visited] = np.arange(visited.size)
    return tier_of_slot[row_of_rank[first_rank], slot]
