"""Sampled-candidate ranking: HR@K and NDCG@K of each user's held-out item among 1 + k candidates.

The leave-one-out protocol of NCF and FedEM (fedem-method.md §5), for datasets made by
:func:`rf2.data.split.leave_one_out`: every user has exactly one test item (its newest
interaction) and one validation item (the second newest), and ``dataset.eval_negatives[u]``
holds its k (99) fixed evaluation negatives, shared by validation and test. The user's candidates
are the held-out item plus those negatives; the model scores all of them.

Conventions
-----------
rank
    ``r_u = 1 + #{negatives scoring above the positive} + #{negatives scoring equal to it}``
    (1-based). **Ties count against the positive** (``ties="against"``, the default): FedEM sorts
    negatives before the positive and breaks ties by row order, which matters when scores saturate
    (e.g. sigmoid outputs equal to 1.0 in float32). ``ties="for"`` counts only strictly higher
    negatives (the optimistic bound).
HR@K
    ``1[r_u <= K]``.
NDCG@K
    ``1[r_u <= K] / log2(1 + r_u)`` (one relevant item, so IDCG = 1).
names
    ``loo_hr@K`` and ``loo_ndcg@K``: the prefix keeps them apart from the full-catalogue
    ``ndcg@K`` of :mod:`rf2.evaluation.ranking` (a different number for the same K), so both can be
    in one run's frame; like those, any column with ``@`` is resampled by
    :mod:`rf2.evaluation.uncertainty` from :class:`rf2.evaluation.scores.EvalScores`.
averaging
    per user, then the plain mean over users, per tier and overall
    (:func:`rf2.evaluation.ranking.ranking_frame`: ``n_users`` = ``n_events`` = users averaged).
"""
from __future__ import annotations

from typing import Literal, Sequence

import numpy as np
import pandas as pd
import torch

from rf2.data import FeatureEncoder, InteractionDataset
from rf2.device import to_numpy

from .ranking import _as_array, _ks, ranking_frame

Ties = Literal["against", "for"]
TIES = ("against", "for")
PREFIX = "loo_"
#: users scored per forward pass (x (1 + k) candidate rows each)
USERS_PER_CHUNK = 2048


def sampled_rank(pos_score, neg_scores, ties: Ties = "against") -> np.ndarray:
    """1-based rank of each row's positive among itself and its negatives (module conventions).
    ``pos_score`` is ``[n]``, ``neg_scores`` ``[n, k]``; scores must be finite."""
    pos = _as_array(pos_score).astype(np.float64).ravel()
    neg = _as_array(neg_scores).astype(np.float64)
    if neg.ndim != 2 or neg.shape[0] != pos.size:
        raise ValueError(f"neg_scores must be [n={pos.size}, k], got shape {neg.shape}")
    if ties not in TIES:
        raise ValueError(f"ties must be one of {TIES}, got {ties!r}")
    if not (np.isfinite(pos).all() and np.isfinite(neg).all()):
        raise ValueError("scores contain NaN or infinite values; the ranking would be meaningless")
    above = (neg > pos[:, None]).sum(axis=1)
    if ties == "against":
        above += (neg == pos[:, None]).sum(axis=1)
    return (above + 1).astype(np.int64)


def hit_and_ndcg(rank: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-user HR@k and NDCG@k from 1-based ranks."""
    rank = np.asarray(rank)
    hit = rank <= k
    return hit.astype(np.float64), np.where(hit, 1.0 / np.log2(1.0 + rank), 0.0)


def held_out_items(dataset: InteractionDataset, split: Literal["test", "valid"] = "test") -> tuple[np.ndarray, np.ndarray]:
    """``(users, items)``: each user's single held-out item of ``split`` (users without one are
    left out). More than one per user is an error: this protocol is for leave-one-out datasets."""
    ds = dataset
    if split not in ("test", "valid"):
        raise ValueError(f"split must be 'test' or 'valid', got {split!r}")
    idx = ds.test_index if split == "test" else ds.valid_index
    users = ds.user[idx].astype(np.int64)
    if np.unique(users).size != users.size:
        raise ValueError(f"{ds.name}: sampled evaluation needs one {split} event per user (a leave-one-out dataset, "
                         "dataset option split = 'leave-one-out'); some users have several")
    return users, ds.item[idx].astype(np.int64)


def candidates(dataset: InteractionDataset, split: Literal["test", "valid"] = "test") -> tuple[np.ndarray, np.ndarray]:
    """``(users, items)`` with ``items[j] = [positive, *eval_negatives[users[j]]]`` (``[n, 1 + k]``)."""
    if dataset.eval_negatives is None:
        raise ValueError(f"{dataset.name}: no evaluation negatives; sampled HR/NDCG needs a leave-one-out dataset "
                         "(dataset option split = 'leave-one-out')")
    users, pos = held_out_items(dataset, split)
    neg = np.asarray(dataset.eval_negatives, dtype=np.int64)[users]
    return users, np.concatenate([pos[:, None], neg], axis=1)


@torch.no_grad()
def score_candidates(model: torch.nn.Module, dataset: InteractionDataset, encoder: FeatureEncoder | None,
                     users: np.ndarray, items: np.ndarray, chunk: int = USERS_PER_CHUNK) -> np.ndarray:
    """``[n, 1 + k]`` logits of ``(users[j], items[j, c])`` (history = the user's training clicks,
    :meth:`rf2.data.FeatureEncoder.encode_pairs`); the model is in eval mode while scoring."""
    encoder = encoder if encoder is not None else FeatureEncoder(dataset)
    n, c = items.shape
    out = np.zeros((n, c), dtype=np.float32)
    was = model.training
    model.eval()
    try:
        for a in range(0, n, chunk):
            us, its = users[a:a + chunk], items[a:a + chunk]
            out[a:a + chunk] = to_numpy(model(encoder.encode_pairs(np.repeat(us, c), its.ravel())).reshape(us.size, c))
    finally:
        model.train(was)
    return out


def sampled_from_scores(users, scores, k: int | Sequence[int] = 10, ties: Ties = "against",
                        prefix: str = PREFIX) -> pd.DataFrame:
    """Per-user frame (index ``user``; ``n_relevant`` = 1, ``{prefix}hr@K``, ``{prefix}ndcg@K``) from
    ``[n, 1 + k]`` candidate scores whose column 0 is the positive."""
    s = _as_array(scores)
    rank = sampled_rank(s[:, 0], s[:, 1:], ties)
    cols: dict[str, np.ndarray] = {"user": np.asarray(users, dtype=np.int64), "n_relevant": np.ones(rank.size, np.int64)}
    for kk in _ks(k):
        cols[f"{prefix}hr@{kk}"], cols[f"{prefix}ndcg@{kk}"] = hit_and_ndcg(rank, kk)
    return pd.DataFrame(cols).set_index("user")


def sampled_by_user(model: torch.nn.Module, dataset: InteractionDataset, encoder: FeatureEncoder | None = None,
                    k: int | Sequence[int] = 10, split: Literal["test", "valid"] = "test", ties: Ties = "against",
                    prefix: str = PREFIX) -> pd.DataFrame:
    """Per-user sampled HR@K / NDCG@K on ``split`` (the frame of :func:`sampled_from_scores`), for
    :class:`rf2.evaluation.scores.EvalScores` (``per_user=``) and :func:`sampled_frame`."""
    users, items = candidates(dataset, split)
    return sampled_from_scores(users, score_candidates(model, dataset, encoder, users, items), k, ties, prefix)


def sampled_frame(per_user: pd.DataFrame, tier_of_user, tier_names: Sequence[str]) -> pd.DataFrame:
    """Per-tier and overall means, tidy :class:`rf2.evaluation.TierMetrics` rows (tier, metric,
    value, n_events, n_users), so relative change and MDAC apply unchanged."""
    return ranking_frame(per_user, tier_of_user, tuple(tier_names))
