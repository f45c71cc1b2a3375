"""Leave-one-out split with sampled evaluation candidates (issue 13 §3): split by hand, evaluation
negatives, HR/NDCG by hand (ties against the positive), per-tier frame, and an end-to-end run."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rf2.data import InteractionDataset, Schema, SparseFeature, load_dataset
from rf2.data.split import TEST, TRAIN, VALID, leave_one_out, leave_one_out_split, sample_eval_negatives


def tiny_log(n_items: int = 250) -> InteractionDataset:
    """user 0: 4 events, the last two at the same second (items 7 and 3); user 1: 2 events (dropped
    at min_interactions=3); user 2: 3 events; users 3 and 4: items 10..109 and 110..209 (so that
    207 items have an interaction: the negatives' pool); labels mixed (binarised by the split)."""
    rows = [  # user, item, label, timestamp
        (0, 5, 1, 10), (0, 9, 0, 20), (0, 7, 0, 30), (0, 3, 1, 30),
        (1, 1, 1, 5), (1, 2, 1, 6),
        (2, 4, 0, 1), (2, 8, 1, 2), (2, 6, 0, 3),
        *[(3, i, i % 2, 100 + i) for i in range(10, 110)],
        *[(4, i, i % 2, 100 + i) for i in range(110, 210)],
    ]
    ev = pd.DataFrame(rows, columns=["user", "item", "label", "timestamp"])
    ev = ev.sort_values(["user", "timestamp", "item"], kind="stable", ignore_index=True)
    ev = ev.astype({"user": np.int32, "item": np.int32, "label": np.int8, "timestamp": np.int64})
    ev["is_test"] = False
    users = pd.DataFrame({"g": np.array([0, 1, 0, 1, 1], dtype=np.int32)}, index=pd.RangeIndex(5, name="user"))
    items = pd.DataFrame({"item_id": np.arange(1, n_items + 1, dtype=np.int32)}, index=pd.RangeIndex(n_items, name="item"))
    schema = Schema((SparseFeature("g", 2, "user"), SparseFeature("item_id", n_items + 1, "item")))
    return InteractionDataset("tiny", ev, users, items, schema)


def test_roles_by_hand():
    assert leave_one_out_split(np.array([0, 0, 0, 0, 2, 2, 2])).tolist() == [
        TRAIN, TRAIN, VALID, TEST, TRAIN, VALID, TEST]
    with pytest.raises(ValueError, match=">= 3 events"):
        leave_one_out_split(np.array([0, 0, 0, 1, 1]))


def test_split_by_hand_ties_and_drop():
    ds = leave_one_out(tiny_log(), min_interactions=3, n_negatives=5, seed=1)
    ev = ds.events
    assert ds.n_users == 4  # user 1 (2 events) dropped; user 2 becomes user 1
    assert ds.users["g"].tolist() == [0, 0, 1, 1]
    assert "1 of 5 users with < 3 interactions dropped" in ds.description
    assert (ev["label"] == 1).all()  # binarised
    # user 0: items 7 and 3 tie at t=30; the higher item index (7) counts as newer -> test
    u0 = ev[ev["user"] == 0]
    assert u0.loc[u0["is_test"], "item"].tolist() == [7]
    assert u0.loc[u0["is_valid"], "item"].tolist() == [3]
    assert sorted(ds.item[ds.train_index][ds.user[ds.train_index] == 0].tolist()) == [5, 9]
    u1 = ev[ev["user"] == 1]
    assert u1.loc[u1["is_test"], "item"].tolist() == [6]
    assert u1.loc[u1["is_valid"], "item"].tolist() == [8]
    assert ds.train_index.size == 3 + 2 * 98 and ds.valid_index.size == 4 and ds.test_index.size == 4
    assert ds.summary()["valid_events"] == 4


def test_min_interactions_checked():
    with pytest.raises(ValueError, match="min_interactions must be an integer >= 3"):
        leave_one_out(tiny_log(), min_interactions=2)
    with pytest.raises(ValueError, match="no user has >= 101"):
        leave_one_out(tiny_log(), min_interactions=101)
    kept = leave_one_out(tiny_log(), min_interactions=4, n_negatives=3)  # users 0, 3, 4 (4, 100, 100 events)
    assert kept.n_users == 3 and "2 of 5 users with < 4 interactions dropped" in kept.description


def test_negatives_unrated_distinct_seeded():
    ds = leave_one_out(tiny_log(), min_interactions=3, seed=3)
    neg = ds.eval_negatives
    assert neg.shape == (4, 99)
    pool = set(np.unique(ds.item).tolist())  # items with an interaction after filtering
    assert len(pool) == 207 and 1 not in pool and 2 not in pool  # items 1, 2: only the dropped user's
    for u in range(4):
        rated = set(ds.item[ds.user == u].tolist())
        assert not rated & set(neg[u].tolist())
        assert set(neg[u].tolist()) <= pool
        assert len(set(neg[u].tolist())) == 99
    again = leave_one_out(tiny_log(), min_interactions=3, seed=3).eval_negatives
    other = leave_one_out(tiny_log(), min_interactions=3, seed=4).eval_negatives
    assert (again == neg).all() and not (other == neg).all()


def test_negative_pool_and_shortage():
    user = np.array([0, 0, 1])
    item = np.array([0, 1, 2])
    neg = sample_eval_negatives(user, item, 2, pool=np.arange(5), n=3, seed=0)
    assert neg[0].tolist() == [2, 3, 4]  # the only three
    assert 2 not in neg[1] and len(set(neg[1].tolist())) == 3
    with pytest.raises(ValueError, match="only 3 items it never interacted with"):
        sample_eval_negatives(user, item, 2, pool=np.arange(5), n=4, seed=0)


def test_loader_options_ml100k(ml100k):
    ds = load_dataset("ml-100k", split="leave-one-out")
    # FedEM on ML-100K: nothing dropped at 10 ratings, 943 users, 1,682 items, 100,000 interactions
    assert (ds.n_users, ds.n_items, ds.n_events) == (943, 1682, 100_000)
    assert ds.test_index.size == ds.valid_index.size == 943 and (ds.label == 1).all()
    t = ds.events["timestamp"].to_numpy()
    last = np.r_[ds.user[1:] != ds.user[:-1], True]
    assert ds.is_test[last].all()  # each user's newest (by timestamp, item) event is its test event
    assert (t[ds.test_index] >= t[ds.valid_index]).all()
    # the default is untouched: temporal split, no validation events, no evaluation negatives
    assert "is_valid" not in ml100k.events.columns and ml100k.eval_negatives is None
    assert ml100k.valid_index.size == 0 and ml100k.train_index.size == (~ml100k.is_test).sum()
    with pytest.raises(ValueError, match="split must be one of"):
        load_dataset("ml-100k", split="loo")
    with pytest.raises(ValueError, match="min_interactions"):
        load_dataset("synthetic", split="leave-one-out", min_interactions=1)


def test_config_checks_split_option():
    from rf2.config import RunConfig

    with pytest.raises(ValueError, match="split must be one of"):
        RunConfig(dataset="ml-100k", dataset_options={"split": "newest"})


def test_ml1m_implicit_file_order():
    from conftest import grouplens_dir

    from rf2.data.movielens_1m import read_interactions

    folder = grouplens_dir("ml-1m-implicit")
    if folder is None:
        pytest.skip("needs the ml-1m-implicit copy: set RF2_DATA_DIR (CI: ../shared/data)")
    ds = load_dataset("ml-1m-implicit", path=str(folder), split="leave-one-out")
    assert "file order" in ds.description and ds.n_users == 6040 and (ds.label == 1).all()
    pairs = read_interactions(folder / "interactions.csv.gz")
    first_user = pairs["user_raw"][0]
    mine = pairs["item_raw"][pairs["user_raw"] == first_user]  # raw movie ids in file order
    movie = ds.items["movie_id"].to_numpy()  # item index + 1 = rank of the raw id among rated movies
    raw_ids = np.unique(pairs["item_raw"])
    u = 0  # GroupLens user 1 is user 0
    assert first_user == 1
    assert raw_ids[movie[ds.item[ds.test_index[u]]] - 1] == mine[-1]
    assert raw_ids[movie[ds.item[ds.valid_index[u]]] - 1] == mine[-2]
