"""Training negatives re-drawn every round (FedEM §2.7, §7 item 7; rf2.clients.negatives): the pool
(universe minus everything the user rated, optionally minus its evaluation negatives), k distinct per
positive, uniformity (marginal and k-subset), determinism per client seed, the layout of
``RoundBatch.gather(..., negatives=k)`` and its rows, k=0 unchanged, and the errors."""
from __future__ import annotations

from itertools import combinations

import numpy as np
import pandas as pd
import pytest
import torch

from rf2.clients.batch import RoundBatch
from rf2.clients.negatives import (PURPOSE, encode_negatives, item_columns, item_universe,
                                   sample_training_negatives)
from rf2.data import FeatureEncoder, InteractionDataset, Schema, SparseFeature, load_dataset, make_synthetic
from rf2.data.split import leave_one_out


def make_log(per_user: list[list[int]], n_items: int) -> InteractionDataset:
    """A raw log (as tests/test_leave_one_out.py's ``tiny_log``): user u rated ``per_user[u]`` in that
    time order; labels mixed (the leave-one-out split binarises them)."""
    rows = [(u, i, t % 2, 10 * t) for u, items in enumerate(per_user) for t, i in enumerate(items)]
    ev = pd.DataFrame(rows, columns=["user", "item", "label", "timestamp"])
    ev = ev.sort_values(["user", "timestamp", "item"], kind="stable", ignore_index=True)
    ev = ev.astype({"user": np.int32, "item": np.int32, "label": np.int8, "timestamp": np.int64})
    ev["is_test"] = False
    n_users = len(per_user)
    users = pd.DataFrame({"g": (np.arange(n_users) % 2).astype(np.int32)}, index=pd.RangeIndex(n_users, name="user"))
    items = pd.DataFrame({"item_id": np.arange(1, n_items + 1, dtype=np.int32)}, index=pd.RangeIndex(n_items, name="item"))
    schema = Schema((SparseFeature("g", 2, "user"), SparseFeature("item_id", n_items + 1, "item")))
    return InteractionDataset("tiny", ev, users, items, schema)


def small_loo(n_negatives: int = 5, seed: int = 0) -> InteractionDataset:
    """40 items in the table; items 0..29 have events (the universe), 30..39 none.
    user 0: items 0..9 (20 allowed); user 1: 0..24 (5 allowed); user 2: 10..29 (10 allowed);
    user 3: 0..26 (3 allowed)."""
    log = make_log([list(range(10)), list(range(25))[::-1], list(range(10, 30)), list(range(27))], n_items=40)
    return leave_one_out(log, min_interactions=3, n_negatives=min(n_negatives, 3), seed=seed)


@pytest.fixture(scope="module")
def loo():
    return small_loo()


@pytest.fixture(scope="module")
def synth_loo():
    """Leave-one-out of a synthetic log: click-history, item-sequence and dense item features;
    19 of the 150 items in the table have no event left."""
    s = make_synthetic(n_users=60, n_items=150, events_per_user=20, history_maxlen=8, seed=3)
    return leave_one_out(s, min_interactions=10, n_negatives=20, seed=1)


def rated(ds: InteractionDataset, u: int) -> set[int]:
    return set(ds.item[ds.user == u].tolist())  # train + validation + test


def chi2(counts: np.ndarray) -> float:
    e = counts.sum() / counts.size
    return float(((counts - e) ** 2 / e).sum())


# -- the draws ------------------------------------------------------------------------------------------
def test_universe_is_the_eval_negatives_pool(loo, synth_loo):
    assert item_universe(loo).tolist() == list(range(30))
    assert item_universe(synth_loo).size == 131 and set(np.unique(synth_loo.eval_negatives)) <= set(item_universe(synth_loo))


def test_never_rated_in_universe_k_distinct(synth_loo):
    ds = synth_loo
    clients = np.arange(ds.n_users)[::-1].copy()  # any round order
    neg = sample_training_negatives(ds, clients, np.arange(ds.n_users) + 7, k=4)
    assert neg.shape == (int(ds.train_counts.sum()), 4) and neg.dtype == np.int64
    universe = set(item_universe(ds).tolist())
    owner = np.repeat(clients, ds.train_counts[clients])
    for u in clients:
        rows = neg[owner == u]
        assert rows.shape[0] == ds.train_counts[u]
        assert (np.sort(rows, axis=1)[:, 1:] != np.sort(rows, axis=1)[:, :-1]).all()  # k distinct per positive
        assert not set(rows.ravel().tolist()) & rated(ds, u)
        assert set(rows.ravel().tolist()) <= universe  # items without any event are never negatives
        assert len({tuple(r) for r in np.sort(rows, axis=1).tolist()}) > 1  # independent rows, not one set repeated


def test_eval_negatives_kept_by_default_excluded_on_request(loo):
    ds = loo
    clients = np.zeros(300, dtype=np.int64)  # user 0 (8 positives) in 300 rounds: 2,400 rows of 4
    kept = sample_training_negatives(ds, clients, np.arange(300), k=4)
    ev_neg = set(ds.eval_negatives[0].tolist())
    assert ev_neg & set(kept.ravel().tolist()) == ev_neg  # as FedEM: the 3 evaluation negatives are drawn too
    dropped = sample_training_negatives(ds, clients, np.arange(300), k=4, exclude_eval_negatives=True)
    assert not ev_neg & set(dropped.ravel().tolist())
    assert set(dropped.ravel().tolist()) == set(range(10, 30)) - ev_neg  # the whole remaining pool is reached
    # user 1: 5 allowed, 3 of them its evaluation negatives -> 2 left, fewer than k=4
    with pytest.raises(ValueError, match=r"user 1 has only 2 items it never rated and that are not among its "
                                         r"evaluation negatives .*k=4"):
        sample_training_negatives(ds, np.array([1]), [0], k=4, exclude_eval_negatives=True)


def test_deterministic_per_client_seed(synth_loo):
    ds = synth_loo
    clients = np.array([3, 11, 5])
    a = sample_training_negatives(ds, clients, [100, 200, 300], k=4)
    assert (a == sample_training_negatives(ds, clients, [100, 200, 300], k=4)).all()
    n = ds.train_counts[clients]
    part = np.split(a, np.cumsum(n)[:-1])
    # a client's draws depend on its seed only: not on the other clients or their order
    alone = sample_training_negatives(ds, np.array([11]), [200], k=4)
    assert (alone == part[1]).all()
    swapped = sample_training_negatives(ds, clients[::-1].copy(), [300, 200, 100], k=4)
    assert (np.concatenate(part[::-1]) == swapped).all()
    # a new round (new seed) re-draws that client, and only it
    b = sample_training_negatives(ds, clients, [100, 201, 300], k=4)
    bpart = np.split(b, np.cumsum(n)[:-1])
    assert (bpart[0] == part[0]).all() and (bpart[2] == part[2]).all() and not (bpart[1] == part[1]).all()
    # the per-client stream is numpy_rng(seed, PURPOSE) = ClientContext(seed=...).rng(PURPOSE)
    assert PURPOSE == "training_negatives"


def test_uniform_over_the_pool(loo):
    """User 0: 20 allowed items (10..29), 8 positives x k=4 x 2,000 rounds = 64,000 draws, 3,200
    expected per item. chi2 with 19 degrees of freedom: 60 is exceeded with p ~ 4e-6. A sampler
    favouring some items (e.g. always the first k allowed, or a shifted/skewed index) scores
    thousands."""
    rounds = 2000
    neg = sample_training_negatives(loo, np.zeros(rounds, dtype=np.int64), np.arange(rounds) * 7 + 1, k=4)
    counts = np.bincount(neg.ravel(), minlength=30)
    assert counts[:10].sum() == 0 and counts[30:].sum() == 0
    assert chi2(counts[10:30]) < 60
    first_k = np.bincount(np.tile([10, 11, 12, 13], neg.shape[0]), minlength=30)[10:30]
    assert chi2(first_k) > 1000  # the check has teeth
    skew = np.bincount(np.minimum(neg.ravel(), 28), minlength=30)[10:30]  # one item never, one doubled
    assert chi2(skew) > 60


def test_uniform_k_subsets():
    """A pool of 6 and k=3: each of the C(6,3)=20 subsets equally likely (Floyd's guarantee, which
    uniform marginals alone would not show). 3 positives x 4,000 rounds = 12,000 rows, 600 per subset;
    chi2 with 19 degrees of freedom < 60."""
    ds = leave_one_out(make_log([list(range(5)), list(range(5, 11))], n_items=11), min_interactions=3, n_negatives=1)
    rounds = 4000
    neg = sample_training_negatives(ds, np.zeros(rounds, dtype=np.int64), np.arange(rounds), k=3)
    assert set(np.unique(neg).tolist()) == set(range(5, 11))
    subsets = {s: i for i, s in enumerate(combinations(range(5, 11), 3))}
    counts = np.bincount([subsets[tuple(r)] for r in np.sort(neg, axis=1).tolist()], minlength=20)
    assert counts.size == 20 and chi2(counts) < 60
    # (a row is a set: Floyd's insertion order is not a random permutation, column 0 is never one of
    # the k - 1 highest pool items, so only the row as a whole is uniform)
    assert (neg[:, 0] <= 5 + 6 - 3).all()


def test_pool_of_exactly_k_and_too_few(loo):
    # user 3 rated 27 of the 30 items: its 3 allowed items are every row, k=3
    neg = sample_training_negatives(loo, np.array([3]), [5], k=3)
    assert (np.sort(neg, axis=1) == [27, 28, 29]).all() and neg.shape == (25, 3)
    with pytest.raises(ValueError, match=r"user 3 has only 3 items it never rated \(of 30 with an interaction\), "
                                         r"fewer than the k=4"):
        sample_training_negatives(loo, np.array([0, 3]), [5, 6], k=4)


def test_argument_errors(loo):
    with pytest.raises(ValueError, match="one seed per client: 2 clients, 1 seeds"):
        sample_training_negatives(loo, np.array([0, 1]), [1], k=4)
    with pytest.raises(ValueError, match="one seed per client: 1 clients, no seeds"):
        sample_training_negatives(loo, np.array([0]), None, k=4)
    with pytest.raises(ValueError, match="integer >= 0"):
        sample_training_negatives(loo, np.array([0]), [1], k=-1)
    with pytest.raises(ValueError, match="client ids must lie in"):
        sample_training_negatives(loo, np.array([4]), [1], k=1)
    assert sample_training_negatives(loo, np.array([0, 1]), [1, 2], k=0).shape == (8 + 23, 0)


# -- RoundBatch.gather ------------------------------------------------------------------------------------
def test_gather_k0_unchanged(synth_loo):
    ds, enc = synth_loo, FeatureEncoder(synth_loo)
    clients = np.array([7, 2, 19])
    old = RoundBatch.gather(ds, enc, clients)
    new = RoundBatch.gather(ds, enc, clients, negatives=0, seeds=[1, 2, 3], exclude_eval_negatives=True)
    idx = np.concatenate([ds.train_index[ds.train_ptr[c]:ds.train_ptr[c + 1]] for c in clients])
    for b in (old, new):
        assert torch.equal(b.X, enc.encode(idx)) and torch.equal(b.y, enc.labels(idx))
        assert b.counts().tolist() == ds.train_counts[clients].tolist()


def test_gather_layout_labels_counts(synth_loo):
    ds, enc = synth_loo, FeatureEncoder(synth_loo)
    clients, seeds, k = np.array([7, 2, 19]), [11, 12, 13], 4
    b = RoundBatch.gather(ds, enc, clients, negatives=k, seeds=seeds)
    n = ds.train_counts[clients]
    assert b.counts().tolist() == (5 * n).tolist()  # FedEM: m_u = 5 (|I_u| - 2)
    assert b.X.shape == (5 * n.sum(), ds.schema.n_columns) and b.y.dtype == torch.float32
    neg = np.split(sample_training_negatives(ds, clients, seeds, k), np.cumsum(n)[:-1])
    item_col = ds.schema.columns["item_id"][0]
    for c, u in enumerate(clients):
        X, y = b.client(c)
        idx = ds.train_index[ds.train_ptr[u]:ds.train_ptr[u + 1]]
        assert torch.equal(X[:n[c]], enc.encode(idx)) and (y[:n[c]] == 1).all() and (y[n[c]:] == 0).all()
        # negative j of positive p is sample n + p * k + j; its item column holds that item's id
        ids = ds.items["item_id"].to_numpy()[neg[c]].ravel()
        assert (X[n[c]:, item_col].numpy() == ids).all()
    assert torch.equal(b.segment(), torch.repeat_interleave(torch.arange(3), torch.from_numpy(5 * n)))


def test_negative_rows_swap_the_item_only(synth_loo):
    """User columns and the click history (with its length) are the positive's; item columns are
    encode_pairs' for the negative item."""
    ds, enc = synth_loo, FeatureEncoder(synth_loo)
    u = 4
    idx = ds.train_index[ds.train_ptr[u]:ds.train_ptr[u + 1]]
    X_pos = enc.encode_numpy(idx)
    items = sample_training_negatives(ds, np.array([u]), [9], k=3)
    X = encode_negatives(enc, X_pos, items)
    pairs = enc.encode_pairs_numpy(np.full(items.size, u), items.ravel())
    icols = np.zeros(ds.schema.n_columns, dtype=bool)
    for a, b in item_columns(enc):
        icols[a:b] = True
    names = {f for f, (a, b) in ds.schema.columns.items() if icols[a:b].all()}
    assert names == {"item_id", "categories", "log_price"}
    assert (X[:, icols] == pairs[:, icols]).all()
    assert (X[:, ~icols] == np.repeat(X_pos, 3, axis=0)[:, ~icols]).all()
    hist = slice(*ds.schema.columns["hist_item_id"])
    assert (X[:, hist] != pairs[:, hist]).any()  # encode_pairs alone would have given the whole training history


def test_gather_errors(loo, synth_loo):
    enc = FeatureEncoder(loo)
    with pytest.raises(ValueError, match="negatives=4 needs seeds"):
        RoundBatch.gather(loo, enc, np.array([0]), negatives=4)
    with pytest.raises(ValueError, match="integer >= 0"):
        RoundBatch.gather(loo, enc, np.array([0]), negatives=1.5, seeds=[1])
    with pytest.raises(ValueError, match="user 3 has only 3 items .*k=4"):
        RoundBatch.gather(loo, enc, np.array([3]), negatives=4, seeds=[1])
    explicit = make_synthetic(n_users=30, n_items=80, events_per_user=15, history_maxlen=4, seed=1)  # labels 0/1
    with pytest.raises(ValueError, match="implicit feedback.*label 0"):
        RoundBatch.gather(explicit, FeatureEncoder(explicit), np.arange(30), negatives=4, seeds=np.arange(30))
    with pytest.raises(ValueError, match="no evaluation negatives"):
        sample_training_negatives(explicit, np.array([0]), [1], k=1, exclude_eval_negatives=True)


def test_ml100k_full_round(ml100k_files):
    ds = load_dataset("ml-100k", split="leave-one-out")
    clients = np.arange(ds.n_users)
    b = RoundBatch.gather(ds, FeatureEncoder(ds), clients, negatives=4, seeds=clients + 1)
    per_user = np.bincount(ds.user, minlength=ds.n_users)
    assert (b.counts().numpy() == 5 * (per_user - 2)).all() and int(b.counts().sum()) == 5 * (100_000 - 2 * 943)
    neg = sample_training_negatives(ds, clients, clients + 1, k=4)
    owner = np.repeat(clients, ds.train_counts)
    key = set((ds.user.astype(np.int64) * ds.n_items + ds.item).tolist())
    assert not key & set((owner[:, None] * ds.n_items + neg).ravel().tolist())
    s = np.sort(neg, axis=1)
    assert (s[:, 1:] != s[:, :-1]).all()


def test_untrained_pool_draws_the_users_test_items_but_never_its_training_items(loo):
    """pool="untrained": the pool is the universe minus the user's *training* items only, so its
    held-out (validation and test) items are drawn like any other; the default "unrated" never
    draws them. User 0 rated items 0..9; 300 rounds of its positives reach the whole pool."""
    ds = loo
    clients = np.zeros(300, dtype=np.int64)
    train_items = set(ds.item[ds.train_index[ds.train_ptr[0]:ds.train_ptr[1]]].tolist())
    held_out = rated(ds, 0) - train_items
    assert held_out and train_items  # the split held something out
    drawn = set(sample_training_negatives(ds, clients, np.arange(300), k=4, pool="untrained").ravel().tolist())
    assert drawn == set(range(30)) - train_items  # held-out items included, nothing else rated
    assert held_out <= drawn
    default = set(sample_training_negatives(ds, clients, np.arange(300), k=4).ravel().tolist())
    assert default == set(range(30)) - rated(ds, 0)
    with pytest.raises(ValueError, match="pool must be 'unrated' or 'untrained'"):
        sample_training_negatives(ds, clients[:1], [0], k=4, pool="unseen")


def test_negative_pool_setting_is_checked_and_reaches_the_round(loo):
    from rf2.config import RunConfig

    with pytest.raises(ValueError, match=r"train_negatives_pool must be one of \['unrated', 'untrained'\]"):
        RunConfig(train_negatives_pool="test", train_negatives=4)
    with pytest.raises(ValueError, match="only matters with drawn training negatives; set train_negatives"):
        RunConfig(train_negatives_pool="untrained")  # no negatives drawn: the setting would do nothing
    assert RunConfig(train_negatives_pool="untrained", train_negatives=4).train_negatives_pool == "untrained"
    enc = FeatureEncoder(loo)
    a = RoundBatch.gather(loo, enc, np.array([0, 2]), negatives=4, seeds=[5, 6], pool="untrained")
    b = RoundBatch.gather(loo, enc, np.array([0, 2]), negatives=4, seeds=[5, 6])
    assert a.X.shape == b.X.shape and not torch.equal(a.X, b.X)  # same layout, other draws
