"""Top-K ranking accuracy per tier: NDCG@K and Recall@K over the whole catalogue.

HeteFedRec (Yuan et al., 2024, §V-B) reports Recall@20 and NDCG@20 and cites LightGCN's protocol
for them: every user ranks *all* items, the items of its training interactions are removed from
the ranking, and the test items are the relevant ones. This module computes those metrics for
rf2's models and datasets, per device tier and overall, in the tidy format of
:mod:`rf2.evaluation.metrics`, so the relative change (RF² Eq. 1) and MDAC (Eq. 2) can be taken on
them exactly as on AUC.

Conventions
-----------
relevance
    binary. A user's relevant items are the items of its *test events with label 1* (clicks).
    Test non-clicks stay in the candidate pool as non-relevant items.
exclusion
    ``exclude="train"`` (default): every item the user has *any* training event with (clicks and
    non-clicks) is removed from its ranking. HeteFedRec removes the training interactions; in
    RF²-style explicit data a training non-click is still an interaction (the user has seen and
    rated the movie), and re-recommending it would only measure whether the model memorised the
    training set. ``"train_clicks"`` removes training clicks only; ``"none"`` removes nothing.
    A run's ``ranking_exclude`` defaults to ``"auto"``: ``"train_clicks"`` on implicit data, whose
    training non-clicks are sampled negatives (HeteFedRec's protocol), ``"train"`` elsewhere
    (:attr:`rf2.config.RunConfig.ranking_exclusion`).
    A relevant item that is also excluded (the same item in both splits) can never be
    recommended, so it is dropped from the relevant set rather than counted as a certain miss.
NDCG@K
    ``DCG = sum over hits at 0-based rank r < K of 1 / log2(r + 2)``; ``IDCG`` is the DCG of
    ``min(K, |relevant|)`` hits at the top; ``NDCG = DCG / IDCG``.
Recall@K
    ``hits in the top K / |relevant|`` — the fraction of the user's relevant items that are
    recommended, HeteFedRec's wording ("the average probability of relevant items being
    successfully recommended") and LightGCN's code. Some papers divide by ``min(K, |relevant|)``
    instead (so that 1 is reachable when ``|relevant| > K``); we do not: with the full denominator
    Recall@K is a true recall and comparable to HeteFedRec's tables.
K larger than the catalogue
    the list holds every non-excluded item; the formulas are unchanged (Recall is then 1).
ties
    equal scores are ordered by *lower item id first* (a stable sort on descending score), so the
    result is deterministic and independent of chunking. Scores must be finite (a NaN or inf
    logit is an error: it would make the order meaningless).
averaging
    per user, then the plain mean over users (each user counts once, as in HeteFedRec) — per tier
    and, for ``overall``, over all evaluated users (not the mean of the tier means). Users without
    any relevant test item have undefined NDCG and Recall and are left out of every average;
    ``n_users`` counts the users averaged and ``n_events`` their relevant items.
click history
    the model input for a (user, item) pair carries the user's training clicks as history
    (:meth:`rf2.data.FeatureEncoder.encode_pairs`).
"""
from __future__ import annotations

from typing import Iterator, Literal, Sequence

import numpy as np
import pandas as pd
import torch

from rf2.data import FeatureEncoder, InteractionDataset
from rf2.device import to_numpy

from .metrics import OVERALL

Exclude = Literal["train", "train_clicks", "none"]
EXCLUDE_CHOICES = ("train", "train_clicks", "none")
#: Default number of model-input rows per forward pass when scoring the catalogue (a chunk holds
#: ``max(1, ROWS_PER_CHUNK // n_items)`` users).
ROWS_PER_CHUNK = 32_768


# -- pure functions on score matrices ---------------------------------------------------------------
def _as_array(x) -> np.ndarray:
    return to_numpy(x) if isinstance(x, torch.Tensor) else np.asarray(x)


def item_mask(sets, n_users: int, n_items: int) -> np.ndarray:
    """A ``[n_users, n_items]`` boolean matrix from a boolean matrix (a bool array or tensor), a
    scipy sparse matrix, or one sequence of item ids per user (anything else iterable)."""
    if hasattr(sets, "toarray"):  # scipy.sparse
        sets = sets.toarray()
    if isinstance(sets, (np.ndarray, torch.Tensor)) and _as_array(sets).dtype == bool:
        m = _as_array(sets)
        if m.shape != (n_users, n_items):
            raise ValueError(f"item mask has shape {m.shape}, expected {(n_users, n_items)}")
        return m.astype(bool)
    sets = list(sets)
    if len(sets) != n_users:
        raise ValueError(f"got item sets for {len(sets)} users, expected {n_users}")
    out = np.zeros((n_users, n_items), dtype=bool)
    for u, items in enumerate(sets):
        items = np.asarray(items, dtype=np.int64).ravel()
        if items.size and (items.min() < 0 or items.max() >= n_items):
            raise ValueError(f"item ids of user row {u} must lie in [0, {n_items})")
        out[u, items] = True
    return out


def top_k_items(scores, k: int, exclude=None) -> np.ndarray:
    """Each row's ``min(k, n_items)`` best items, best first: descending score, ties broken by lower
    item id; excluded items are never listed (their slots, when fewer than ``k`` items remain, hold
    ``-1``). ``scores`` is ``[n_users, n_items]`` (array or tensor) and must be finite."""
    s = _as_array(scores)
    if s.ndim != 2:
        raise ValueError(f"scores must be [n_users, n_items], got shape {s.shape}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or infinite values; the ranking would be meaningless")
    n, n_items = s.shape
    key = -s.astype(np.float64)  # ascending key = descending score; float64 keeps -x exact
    if exclude is not None:
        excl = item_mask(exclude, n, n_items)
        key[excl] = np.inf  # after every finite key, and among themselves by item id
        n_valid = n_items - excl.sum(axis=1)
    else:
        n_valid = np.full(n, n_items)
    m = min(k, n_items)
    if 4 * m >= n_items:
        order = np.argsort(key, axis=1, kind="stable")[:, :m]
    else:
        order = _smallest_keys(key, m)
    order[np.arange(m)[None, :] >= n_valid[:, None]] = -1
    return order


def _smallest_keys(key: np.ndarray, m: int) -> np.ndarray:
    """Each row's ``m`` smallest keys' column indices, ascending by key and, among equal keys, by
    index: ``np.argsort(key, axis=1, kind="stable")[:, :m]`` in O(n_items) per row instead of a
    full sort. Every key below the row's m-th smallest is taken, then the lowest-index ties of the
    m-th smallest itself fill the remaining slots; only those ``m`` are sorted."""
    n = key.shape[0]
    kth = np.partition(key, m - 1, axis=1)[:, m - 1 : m]
    below = key < kth
    tie = key == kth
    need = m - below.sum(axis=1, keepdims=True)  # >= 1: the m-th smallest itself is a tie
    take = below | (tie & (np.cumsum(tie, axis=1) <= need))
    cand = np.nonzero(take)[1].reshape(n, m)  # ascending column index within each row
    within = np.argsort(np.take_along_axis(key, cand, axis=1), axis=1, kind="stable")
    return np.take_along_axis(cand, within, axis=1)


def ranking_at_k(scores, relevant, k: int, exclude=None) -> dict[str, np.ndarray]:
    """Per-user NDCG@k and Recall@k (see the module conventions).

    ``relevant`` and ``exclude`` are boolean ``[n_users, n_items]`` matrices, scipy sparse matrices
    or one item-id sequence per user. Returns arrays of length ``n_users``: ``ndcg``, ``recall``
    (``nan`` for users without relevant items), ``hits`` and ``n_relevant`` (after dropping
    excluded items from the relevant set)."""
    s = _as_array(scores)
    top = top_k_items(s, k, exclude)
    n, n_items = s.shape
    rel = item_mask(relevant, n, n_items)
    if exclude is not None:
        rel = rel & ~item_mask(exclude, n, n_items)
    n_rel = rel.sum(axis=1)
    valid = top >= 0
    hit = np.take_along_axis(rel, np.where(valid, top, 0), axis=1) & valid
    discount = 1.0 / np.log2(np.arange(top.shape[1]) + 2.0)
    dcg = (hit * discount).sum(axis=1)
    ideal_hits = np.minimum(k, n_rel)  # <= top.shape[1]: n_rel never exceeds the non-excluded items
    idcg = np.concatenate([[0.0], np.cumsum(discount)])[ideal_hits]
    hits = hit.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        ndcg = np.where(n_rel > 0, dcg / idcg, np.nan)
        recall = np.where(n_rel > 0, hits / n_rel, np.nan)
    return {"ndcg": ndcg, "recall": recall, "hits": hits.astype(np.int64), "n_relevant": n_rel.astype(np.int64)}


# -- scoring the catalogue --------------------------------------------------------------------------
def default_chunk(n_items: int, rows: int = ROWS_PER_CHUNK) -> int:
    """Users per forward pass so that a chunk has about ``rows`` model-input rows."""
    return max(1, rows // max(1, n_items))


@torch.no_grad()
def iter_item_scores(
    model: torch.nn.Module,
    dataset: InteractionDataset,
    encoder: FeatureEncoder | None,
    users,
    chunk: int | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(users_chunk, scores)`` with ``scores[j, i]`` the model's logit for
    ``(users_chunk[j], item i)``, over the whole catalogue, ``chunk`` users at a time (default
    :func:`default_chunk`): only ``chunk * n_items`` input rows exist at once. The model is put in
    eval mode while scoring and restored afterwards. A model with a ``score_grid(X_users,
    X_items) -> [U, I]`` method (NCF, HeteNCF: their first layer splits into a user and an item
    part, :func:`rf2.models.ncf.mlp_grid`) is given one input row per user and one per item
    instead of one per pair; it must equal ``forward`` on the pairs (tested)."""
    encoder = encoder if encoder is not None else FeatureEncoder(dataset)
    users = np.asarray(users, dtype=np.int64).ravel()
    n_items = dataset.n_items
    chunk = chunk or default_chunk(n_items)
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1 user, got {chunk}")
    all_items = np.arange(n_items, dtype=np.int64)
    grid = getattr(model, "score_grid", None)  # models that score a user x item grid without its U*I inputs
    if grid is not None:
        X_items = encoder.encode_pairs(np.zeros(n_items, dtype=np.int64), all_items)
    was = model.training
    model.eval()
    try:
        for a in range(0, users.size, chunk):
            us = users[a : a + chunk]
            if grid is not None:
                yield us, to_numpy(grid(encoder.encode_pairs(us, np.zeros(us.size, dtype=np.int64)), X_items))
                continue
            X = encoder.encode_pairs(np.repeat(us, n_items), np.tile(all_items, us.size))
            yield us, to_numpy(model(X).reshape(us.size, n_items))
    finally:
        model.train(was)


def score_all_items(
    model: torch.nn.Module,
    dataset: InteractionDataset,
    encoder: FeatureEncoder | None,
    users,
    chunk: int | None = None,
) -> np.ndarray:
    """``[len(users), n_items]`` logits for every (user, item) pair, computed ``chunk`` users at a
    time. The result itself is dense: for large catalogues use :func:`iter_item_scores`."""
    parts = [s for _, s in iter_item_scores(model, dataset, encoder, users, chunk)]
    return np.concatenate(parts) if parts else np.zeros((0, dataset.n_items), dtype=np.float32)


# -- per-user and per-tier metrics ------------------------------------------------------------------
def _csr(user: np.ndarray, item: np.ndarray, n_users: int) -> tuple[np.ndarray, np.ndarray]:
    """(ptr, items) grouping ``item`` by ``user`` (``user`` need not be sorted)."""
    order = np.argsort(user, kind="stable")
    counts = np.bincount(user, minlength=n_users)
    return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64), item[order].astype(np.int64)


def _rows(ptr: np.ndarray, items: np.ndarray, users: np.ndarray, n_items: int) -> np.ndarray:
    """Dense ``[len(users), n_items]`` mask of each listed user's items."""
    counts = ptr[users + 1] - ptr[users]
    starts = np.repeat(ptr[users], counts)
    offs = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    out = np.zeros((users.size, n_items), dtype=bool)
    out[np.repeat(np.arange(users.size), counts), items[starts + offs]] = True
    return out


def relevant_and_excluded(dataset: InteractionDataset, exclude: Exclude = "train"):
    """Per-user CSR ``(ptr, items)`` of relevant items (test clicks) and of excluded items."""
    if exclude not in EXCLUDE_CHOICES:
        raise ValueError(f"exclude must be one of {EXCLUDE_CHOICES}, got {exclude!r}")
    ds = dataset
    test_clicks = ds.test_index[ds.label[ds.test_index] == 1]
    relevant = _csr(ds.user[test_clicks], ds.item[test_clicks], ds.n_users)
    train = ds.train_index
    if exclude == "train_clicks":
        train = train[ds.label[train] == 1]
    elif exclude == "none":
        train = train[:0]
    excluded = _csr(ds.user[train], ds.item[train], ds.n_users)
    return relevant, excluded


def _ks(k) -> tuple[int, ...]:
    ks = (k,) if np.isscalar(k) else tuple(k)
    if not ks or any(int(x) != x or x < 1 for x in ks):
        raise ValueError(f"k must be a positive integer or a sequence of them, got {k!r}")
    return tuple(int(x) for x in ks)


def ranking_by_user(
    model: torch.nn.Module,
    dataset: InteractionDataset,
    encoder: FeatureEncoder | None = None,
    k: int | Sequence[int] = 20,
    users=None,
    chunk: int | None = None,
    exclude: Exclude = "train",
    sets=None,
    progress: bool = False,
) -> pd.DataFrame:
    """Per-user ranking metrics, one row per evaluated user (index ``user``): ``n_relevant`` and
    ``ndcg@K``, ``recall@K`` for each ``K`` in ``k``. ``users`` (default: all) is narrowed to the
    users with at least one relevant item; only they are scored. ``sets``: the result of
    :func:`relevant_and_excluded` for ``exclude``, when calling this many times (e.g. per user).
    ``progress``: a progress bar over the users (ranking a large catalogue takes a while)."""
    ks = _ks(k)
    ds = dataset
    (rptr, ritems), (eptr, eitems) = sets if sets is not None else relevant_and_excluded(ds, exclude)
    if users is None:
        users = np.arange(ds.n_users, dtype=np.int64)
    else:
        users = np.unique(np.asarray(users, dtype=np.int64).ravel())
        if users.size and (users[0] < 0 or users[-1] >= ds.n_users):
            raise ValueError(f"users must lie in [0, {ds.n_users})")
    users = users[np.diff(rptr)[users] > 0]
    sets = ((rptr, ritems), (eptr, eitems))
    from tqdm.auto import tqdm

    parts = [_ranking_columns(users[:0], np.zeros((0, ds.n_items)), ds.n_items, ks, sets)]
    with tqdm(total=int(users.size), desc=f"ranking {ds.n_items} items", unit="user", disable=not progress,
              leave=False, dynamic_ncols=True) as bar:
        for us, scores in iter_item_scores(model, ds, encoder, users, chunk):
            parts.append(_ranking_columns(us, scores, ds.n_items, ks, sets))
            bar.update(int(us.size))
    return _per_user_frame({c: np.concatenate([p[c] for p in parts]) for c in parts[0]})


def ranking_from_scores(users: np.ndarray, scores, n_items: int, k, sets) -> pd.DataFrame:
    """Per-user metrics (as :func:`ranking_by_user`) of ``users`` from their ``[len(users),
    n_items]`` scores, given ``sets`` from :func:`relevant_and_excluded` (for callers that score
    users their own way, e.g. each with its own model in :mod:`rf2.standalone`)."""
    return _per_user_frame(_ranking_columns(users, scores, n_items, _ks(k), sets))


def _ranking_columns(users: np.ndarray, scores, n_items: int, ks: tuple[int, ...], sets) -> dict[str, np.ndarray]:
    (rptr, ritems), (eptr, eitems) = sets
    users = np.asarray(users, dtype=np.int64)
    rel = _rows(rptr, ritems, users, n_items)
    excl = _rows(eptr, eitems, users, n_items)
    cols: dict[str, np.ndarray] = {"user": users, "n_relevant": (rel & ~excl).sum(axis=1).astype(np.int64)}
    for kk in ks:
        r = ranking_at_k(scores, rel, kk, excl)
        cols[f"ndcg@{kk}"], cols[f"recall@{kk}"] = r["ndcg"], r["recall"]
    return cols


def _per_user_frame(cols: dict[str, np.ndarray]) -> pd.DataFrame:
    frame = pd.DataFrame(cols).astype({"user": np.int64, "n_relevant": np.int64})
    # a user whose relevant items are all excluded has no relevant item left
    return frame[frame["n_relevant"] > 0].set_index("user")


def ranking_frame(per_user: pd.DataFrame, tier_of_user, tier_names: Sequence[str]) -> pd.DataFrame:
    """Average per-user metrics (:func:`ranking_by_user`) per tier and overall, in the tidy format
    of :class:`rf2.evaluation.TierMetrics` (columns tier, metric, value, n_events, n_users; tiers in
    order, then ``overall``). ``n_users`` = users averaged, ``n_events`` = their relevant items; a
    tier without evaluated users gets ``nan``."""
    tier_of_user = np.asarray(tier_of_user)
    metrics = [c for c in per_user.columns if c != "n_relevant"]
    user_tier = tier_of_user[per_user.index.to_numpy()]
    groups = [(name, user_tier == t) for t, name in enumerate(tier_names)]
    groups.append((OVERALL, np.ones(len(per_user), dtype=bool)))
    rows = []
    for name, m in groups:
        sub = per_user[m]
        n_events = int(sub["n_relevant"].sum())
        for metric in metrics:
            value = float(sub[metric].mean()) if len(sub) else float("nan")
            rows.append((name, metric, value, n_events, int(len(sub))))
    return pd.DataFrame(rows, columns=["tier", "metric", "value", "n_events", "n_users"])


def ranking_metrics(
    model: torch.nn.Module,
    dataset: InteractionDataset,
    encoder: FeatureEncoder | None,
    tier_of_user,
    tier_names: Sequence[str],
    k: int | Sequence[int] = 20,
    users=None,
    chunk: int | None = None,
    exclude: Exclude = "train",
) -> pd.DataFrame:
    """NDCG@K and Recall@K per tier and overall over the full catalogue (module conventions).

    Mirrors :func:`rf2.evaluation.tier_metrics`' inputs: ``tier_of_user[u]`` is user ``u``'s tier
    index into ``tier_names`` (``TierAssignment.tier`` and ``.names``). Returns the tidy frame of
    :class:`rf2.evaluation.TierMetrics` with metrics ``ndcg@K`` and ``recall@K``; wrap it as
    ``TierMetrics(frame, tuple(tier_names))`` (or concatenate it to an AUC frame) for
    :func:`relative_change` and :func:`mdac`. ``users`` restricts the evaluation to a subset (for
    speed); ``chunk`` is the number of users scored per forward pass."""
    tier_of_user = np.asarray(tier_of_user)
    if tier_of_user.shape != (dataset.n_users,):
        raise ValueError(f"tier_of_user must give one tier per user ({dataset.n_users}), got shape {tier_of_user.shape}")
    if tier_of_user.size and (tier_of_user.min() < 0 or tier_of_user.max() >= len(tier_names)):
        raise ValueError(f"tier_of_user values must index tier_names (0..{len(tier_names) - 1})")
    per_user = ranking_by_user(model, dataset, encoder, k, users, chunk, exclude)
    return ranking_frame(per_user, tier_of_user, tuple(tier_names))
