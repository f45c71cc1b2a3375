"""Training negatives re-drawn every round, for implicit-feedback (leave-one-out) datasets.

FedEM (fedem-method.md §2.7, §7 item 7) trains on each client's positives plus ``k`` = 4 sampled
negatives per positive, drawn afresh at the start of every round:

* for each training positive ``(u, i)``: ``k`` **distinct** items, uniformly from the item universe
  minus every item ``u`` ever rated (train + validation + test);
* the draws of different positives are independent, so a negative can repeat within a user;
* the user's evaluation negatives (``dataset.eval_negatives[u]``) stay in the pool, as in the
  authors' code; ``exclude_eval_negatives=True`` removes them too;
* ``pool="untrained"`` subtracts only the user's *training* items, so its held-out items can be
  drawn (see :func:`sample_training_negatives`).

Item universe
    The one the evaluation negatives of :func:`rf2.data.split.leave_one_out` are drawn from: the
    items with at least one event in the (filtered) dataset, ``np.unique(dataset.item)``. Items
    that are in the item table but lost all their events are never negatives (FedEM §2.3: "the item
    universe is exactly the items present after filtering").

Randomness
    Client ``c``'s draws come only from ``numpy_rng(seeds[c], "training_negatives")`` (pass the
    client's per-round seed, ``ClientContext.seed``, i.e. ``ctx.rng("training_negatives")``). So
    they depend on nothing but that seed, the dataset and ``k``: not on the other clients of the
    round nor on their order, and a new round (new seed) gives new draws.

Algorithm (vectorised; the only Python loop is over clients, for their generators, plus one over
the ``k`` columns)
    1. each client's allowed pool is an implicit sorted list of ``m_u`` universe positions (the
       universe minus the user's excluded positions, never materialised);
    2. **Floyd's algorithm**, one column at a time for all positives at once: for column
       ``s = 0..k-1`` draw ``t`` uniformly in ``[0, m_u - k + s]``; if ``t`` already is in the
       row's columns ``0..s-1`` take ``j = m_u - k + s`` instead (never taken before: every earlier
       value is ``< j``). Each row is then a uniformly random ``k``-subset of ``0..m_u-1``, from
       exactly ``k`` random numbers per positive (no rejection loop, so no slow case when ``m_u``
       is close to ``k``). Use a row as a set: Floyd's insertion order is not a random permutation
       (column 0 never holds the pool's ``k - 1`` last items). ``t`` is
       ``floor(U * (m_u - k + s + 1))`` with ``U`` from ``rng.random`` (one call per client,
       ``[n_positives, k]``): uniform up to float64 resolution (relative bias < ``m_u / 2**53``),
       about 3x cheaper than ``rng.integers`` with per-column bounds;
    3. the ``i``-th allowed position of a user whose excluded positions are ``e_0 < e_1 < ...`` is
       ``i + #{j : e_j - j <= i}``: one ``searchsorted`` over all clients' ``e_j - j`` (offset per
       client) maps every draw to its item.

Cost: ``O(E log E + P k log E)`` per call (``E`` events of the clients, ``P`` positives), memory
``O(E + P k)``, no ``[clients, items]`` matrix; timings on ML-100K in :func:`sample_training_negatives`.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from rf2.data import FeatureEncoder, InteractionDataset
from rf2.data.schema import SequenceFeature
from rf2.seeding import numpy_rng

#: purpose key of the per-client stream: ``numpy_rng(client_seed, PURPOSE)``
PURPOSE = "training_negatives"


def item_universe(dataset: InteractionDataset) -> np.ndarray:
    """Sorted item indices with at least one event: the pool of evaluation and training negatives."""
    return np.unique(dataset.item).astype(np.int64)


def _ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``concat(arange(s, s + n) for s, n in zip(starts, counts))`` without a Python loop."""
    offsets = np.repeat(starts - np.r_[0, np.cumsum(counts)[:-1]], counts)
    return np.arange(int(counts.sum()), dtype=np.int64) + offsets


def _check_k(k) -> int:
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 0:
        raise ValueError(f"the number of training negatives per positive must be an integer >= 0, got {k!r}")
    return int(k)


def sample_training_negatives(
    dataset: InteractionDataset,
    clients: np.ndarray,
    seeds: Sequence[int],
    k: int = 4,
    exclude_eval_negatives: bool = False,
    pool: str = "unrated",
) -> np.ndarray:
    """``[P, k]`` int64 item indices: ``k`` distinct negatives for each training positive of
    ``clients`` (see the module doc for the pool, the randomness and the algorithm).

    Row order = the positives in :meth:`rf2.clients.batch.RoundBatch.gather` order: client by
    client in the order of ``clients``, and within a client
    ``dataset.train_index[train_ptr[c]:train_ptr[c + 1]]``. So ``P = train_counts[clients].sum()``.

    ``seeds[j]`` is client ``clients[j]``'s seed for this round (one integer per client). A client
    whose pool (universe minus rated items, minus its evaluation negatives if
    ``exclude_eval_negatives``) holds fewer than ``k`` items is a ``ValueError`` naming it and ``k``.

    ``pool``: ``"unrated"`` (default) excludes every item the user rated (training, validation and
    test events; FedEM's code; HeteFedRec §V-A: "items the user never interacted with"); ``"untrained"``
    excludes only the items of its training events, so its test items can be drawn like any other
    item. With ``"unrated"`` a test item is never a training negative: a model that learns per user
    and per item (Standalone: each client's own item table) can learn "never shown as a negative"
    and rank its test items first; ``"untrained"`` uses only what a client can know.

    Measured on 2 shared cores (load ~5): all 943 ML-100K leave-one-out clients, 98,114 positives,
    k = 4: 80-110 ms per round for the draws (about 25 ms of it the per-client generators), 230 ms
    for the whole ``RoundBatch.gather(..., negatives=4)`` (490,570 rows; 30 ms without negatives).
    ``RF2_DATA_DIR=... python -m rf2.clients.negatives`` re-measures it.
    """
    k = _check_k(k)
    ds = dataset
    clients = np.asarray(clients, dtype=np.int64).ravel()
    seeds = [int(s) for s in np.asarray(seeds, dtype=object).ravel()] if seeds is not None else None
    if seeds is None or len(seeds) != clients.size:
        raise ValueError(f"training negatives need one seed per client: {clients.size} clients, "
                         f"{'no seeds' if seeds is None else f'{len(seeds)} seeds'}")
    if clients.size and (clients.min() < 0 or clients.max() >= ds.n_users):
        raise ValueError(f"client ids must lie in [0, {ds.n_users}); got {clients.min()}..{clients.max()}")
    C = clients.size
    n_pos = (ds.train_ptr[clients + 1] - ds.train_ptr[clients]).astype(np.int64)
    P = int(n_pos.sum())
    if k == 0 or C == 0:
        return np.zeros((P, k), dtype=np.int64)

    # 1. each client's excluded universe positions, sorted and unique, as CSR over the clients
    present = np.bincount(ds.item, minlength=ds.n_items) > 0
    universe = np.flatnonzero(present)  # == item_universe(ds)
    n = universe.size
    where = np.cumsum(present) - 1  # item -> its position in the universe (for items in it)
    if pool == "unrated":  # every event of the user: train, validation and test
        user_ptr = np.r_[0, np.cumsum(np.bincount(ds.user, minlength=ds.n_users))].astype(np.int64)  # events sorted by user
        ev_counts = user_ptr[clients + 1] - user_ptr[clients]
        ev = _ranges(user_ptr[clients], ev_counts)
    elif pool == "untrained":  # its training events only
        ev_counts = n_pos
        ev = ds.train_index[_ranges(ds.train_ptr[clients], n_pos)]
    else:
        raise ValueError(f"training negatives: pool must be 'unrated' or 'untrained', got {pool!r}")
    owner = np.repeat(np.arange(C, dtype=np.int64), ev_counts)
    key = owner * n + where[ds.item[ev]]
    if exclude_eval_negatives:
        if ds.eval_negatives is None:
            raise ValueError(f"{ds.name}: exclude_eval_negatives=True, but the dataset has no evaluation negatives "
                             "(only leave-one-out datasets do)")
        en = np.asarray(ds.eval_negatives, dtype=np.int64)[clients]
        en_owner = np.repeat(np.arange(C, dtype=np.int64), en.shape[1])
        en = en.ravel()
        inside = present[en]  # (always, for negatives drawn by leave_one_out)
        key = np.concatenate([key, en_owner[inside] * n + where[en[inside]]])
    key = np.sort(key)
    key = key[np.r_[True, key[1:] != key[:-1]]]
    ex_owner, ex_pos = key // n, key % n
    ex_ptr = np.r_[0, np.cumsum(np.bincount(ex_owner, minlength=C))].astype(np.int64)
    m = n - np.diff(ex_ptr)  # pool size per client
    short = np.flatnonzero(m < k)
    if short.size:
        c = int(short[0])
        what = "items it never rated" if pool == "unrated" else "items it has no training event with"
        what += " and that are not among its evaluation negatives" if exclude_eval_negatives else ""
        raise ValueError(f"user {int(clients[c])} has only {int(m[c])} {what} (of {n} with an interaction), fewer than "
                         f"the k={k} distinct training negatives needed per positive")

    # 2. Floyd's algorithm: column s uniform in [0, m - k + s], a repeat within the row replaced by m - k + s
    u = np.empty((P, k), dtype=np.float64)
    starts = np.r_[0, np.cumsum(n_pos)]
    for c in np.flatnonzero(n_pos):
        numpy_rng(seeds[c], PURPOSE).random(out=u[starts[c]:starts[c + 1]])
    row_c = np.repeat(np.arange(C, dtype=np.int64), n_pos)
    low = np.repeat(m - k, n_pos)[:, None]  # column s: j = low + s, t uniform in [0, j]
    size = low + 1 + np.arange(k, dtype=np.int64)
    idx = np.minimum((u * size).astype(np.int64), size - 1)  # floor(u * size); the clamp only guards rounding
    for s in range(1, k):
        hit = (idx[:, :s] == idx[:, s:s + 1]).any(axis=1)
        idx[hit, s] = low[hit, 0] + s

    # 3. i-th allowed position = i + #{j : e_j - j <= i}, for all clients in one searchsorted
    g = ex_pos - (np.arange(key.size, dtype=np.int64) - ex_ptr[ex_owner])  # non-decreasing within a client, in [0, n]
    gkey = ex_owner * (n + 1) + g
    below = np.searchsorted(gkey, row_c[:, None] * (n + 1) + idx, side="right") - ex_ptr[row_c][:, None]
    return universe[idx + below]


def item_columns(encoder: FeatureEncoder) -> list[tuple[int, int]]:
    """Column ranges that depend on the item alone: item-source features and the non-history
    sequence features (looked up by item, :mod:`rf2.data.encoding`), with their length columns."""
    schema = encoder.schema
    out = []
    for f in schema.features:
        if isinstance(f, SequenceFeature):
            if f.source != "history":
                out.append(schema.columns[f.name])
                if f.length_name:
                    out.append(schema.columns[f.length_name])
        elif f.source == "item":
            out.append(schema.columns[f.name])
    return out


def encode_negatives(encoder: FeatureEncoder, X_pos: np.ndarray, items: np.ndarray) -> np.ndarray:
    """``[P * k, cols]`` model rows of the negatives ``items`` (``[P, k]``) of the positives whose
    rows are ``X_pos`` (``[P, cols]``); row ``p * k + j`` is negative ``j`` of positive ``p``.

    A negative is its positive's row with the item swapped: the item's columns (:func:`item_columns`)
    are those of :meth:`FeatureEncoder.encode_pairs_numpy`, every other column (user features, click
    history and its length, event-level features) is the positive's: "the same user at the same
    moment, another item", as in DIN-style negative sampling. (``encode_pairs`` alone would give
    every negative the user's whole training history while each positive has the history before
    it, a difference a history-aware model could learn as a label signal. For models without
    history or event features, e.g. MF/NCF, both give the same rows.)
    """
    P, k = items.shape
    X = np.repeat(X_pos, k, axis=0)
    cols = item_columns(encoder)
    if cols and X.shape[0]:
        uniq, inv = np.unique(items.ravel(), return_inverse=True)
        schema = encoder.schema
        filler = {f.name: 0.0 for f in schema.features if f.source == "event" and not isinstance(f, SequenceFeature)}
        rows = encoder.encode_pairs_numpy(np.zeros(1, dtype=np.int64), uniq, filler)  # one row per distinct item
        for a, b in cols:
            X[:, a:b] = rows[inv, a:b]
    return X


def _measure(repeats: int = 5) -> None:  # pragma: no cover - a timing script, not a test
    import time

    from rf2.data import load_dataset

    from .batch import RoundBatch

    ds = load_dataset("ml-100k", split="leave-one-out")
    enc = FeatureEncoder(ds)
    clients = np.arange(ds.n_users)
    print(f"ML-100K leave-one-out: {ds.n_users} clients, {int(ds.train_counts.sum())} training positives, k=4")
    for r in range(repeats):
        seeds = np.arange(ds.n_users) + 1000 * r
        t = time.perf_counter()
        neg = sample_training_negatives(ds, clients, seeds, 4)
        t1 = time.perf_counter()
        b = RoundBatch.gather(ds, enc, clients, negatives=4, seeds=seeds)
        t2 = time.perf_counter()
        b0 = RoundBatch.gather(ds, enc, clients)
        t3 = time.perf_counter()
        print(f"round {r}: draw {1e3 * (t1 - t):.1f} ms ({neg.shape[0]} x {neg.shape[1]}); gather with negatives "
              f"{1e3 * (t2 - t1):.1f} ms ({b.X.shape[0]} rows); gather without {1e3 * (t3 - t2):.1f} ms")


if __name__ == "__main__":  # pragma: no cover
    _measure()
