"""The synthetic dataset: schema, power-law popularity, taste clusters, determinism, bad input."""
from __future__ import annotations

import numpy as np
import pytest

from rf2.data import FeatureEncoder, load_dataset, make_synthetic


def test_schema_mirrors_movielens(synth, ml100k):
    kinds = lambda ds: sorted((type(f).__name__, f.source) for f in ds.schema.features if f.source != "user")
    assert ("SequenceFeature", "history") in kinds(synth) and ("SparseFeature", "item") in kinds(synth)
    assert {"user", "item", "label", "timestamp", "is_test"} <= set(synth.events.columns)
    assert synth.schema.feature("hist_item_id").table == "item_id"
    X = FeatureEncoder(synth).encode(np.arange(10))
    assert X.shape == (10, synth.schema.n_columns)


def test_power_law_popularity():
    ds = make_synthetic(n_users=4000, n_items=2000, zipf=1.0, affinity=0.0, seed=0)
    counts = np.sort(np.bincount(ds.item, minlength=ds.n_items))[::-1]
    # log-log slope of rank vs count over the head, before dedup saturates the top items
    ranks = np.arange(20, 400)
    slope = np.polyfit(np.log(ranks), np.log(counts[ranks] + 1), 1)[0]
    assert -1.3 < slope < -0.6
    flat = make_synthetic(n_users=4000, n_items=2000, zipf=0.0, affinity=0.0, seed=0)
    assert np.bincount(flat.item).max() < counts[0] / 3


def test_users_prefer_their_cluster():
    ds = make_synthetic(n_users=2000, n_items=500, affinity=0.8, region_signal=1.0, seed=1)
    # with region_signal=1 the region feature is the user's cluster; the item's first category is its cluster + 1
    region = ds.users["region"].to_numpy()[ds.user]
    cat = ds.item_sequences["categories"][ds.item, 0] - 1
    share_same = (region == cat).mean()
    assert share_same > 0.6  # affinity + (1 - affinity) / n_clusters before repeats are dropped
    ds0 = make_synthetic(n_users=2000, n_items=500, affinity=0.0, region_signal=1.0, seed=1)
    cat0 = ds0.item_sequences["categories"][ds0.item, 0] - 1
    assert abs((ds0.users["region"].to_numpy()[ds0.user] == cat0).mean() - 1 / 8) < 0.05  # chance level


def test_click_rate_and_determinism():
    a = make_synthetic(n_users=1000, click_rate=0.3, seed=9)
    b = make_synthetic(n_users=1000, click_rate=0.3, seed=9)
    c = make_synthetic(n_users=1000, click_rate=0.3, seed=10)
    assert abs(a.events["label"].mean() - 0.3) < 0.03
    assert a.events.equals(b.events) and not a.events.equals(c.events)


def test_loaded_only_by_name_and_validated():
    assert load_dataset("synthetic", n_users=50).name == "synthetic"
    with pytest.raises(ValueError, match="n_users must be >= 1"):
        make_synthetic(n_users=0)
    with pytest.raises(ValueError, match="affinity must be in"):
        make_synthetic(affinity=1.5)
