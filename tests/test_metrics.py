"""AUC against independent implementations; MDAC and relative change against hand computation."""
from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from rf2.evaluation import OVERALL, TierMetrics, auc, mdac, relative_change, tier_metrics


def pairwise_auc(y, s):
    pos = [b for a, b in zip(y, s) if a == 1]
    neg = [b for a, b in zip(y, s) if a == 0]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


@pytest.mark.parametrize("seed", range(5))
def test_auc_matches_sklearn_and_pair_counting(seed):
    rng = np.random.default_rng(seed)
    n = 200
    y = rng.integers(0, 2, n)
    s = np.round(rng.normal(y * 0.7, 1.0), 1)  # rounding creates ties
    assert auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert auc(y, s) == pytest.approx(pairwise_auc(y, s), abs=1e-12)


def test_auc_edge_cases():
    assert np.isnan(auc([1, 1], [0.2, 0.3]))
    assert auc([0, 1], [0.5, 0.5]) == 0.5
    assert auc([0, 0, 1], [0.1, 0.2, 0.3]) == 1.0
    with pytest.raises(ValueError, match="labels"):
        auc([0, 1], [0.1])


def frame(values: dict[str, float], overall: float) -> TierMetrics:
    rows = [(t, "auc", v, 10, 2) for t, v in values.items()] + [(OVERALL, "auc", overall, 30, 6)]
    return TierMetrics(pd.DataFrame(rows, columns=["tier", "metric", "value", "n_events", "n_users"]), tuple(values))


def test_relative_change_and_mdac_by_hand():
    base = frame({"low": 0.80, "mid": 0.75, "high": 0.70}, 0.75)
    opt = frame({"low": 0.72, "mid": 0.75, "high": 0.77}, 0.748)
    rc = relative_change(opt, base)
    assert rc["low"] == pytest.approx(-0.10)
    assert rc["mid"] == pytest.approx(0.0)
    assert rc["high"] == pytest.approx(0.10)
    assert rc[OVERALL] == pytest.approx(-0.002 / 0.75)
    # Eq. 2: max over pairs |rc_i - rc_j| = |(-0.1) - 0.1|
    assert mdac(opt, base) == pytest.approx(0.20)
    assert mdac(rc) == pytest.approx(0.20)
    assert mdac(base, base) == 0.0


def test_mdac_is_zero_for_uniform_change():
    base = frame({"low": 0.8, "mid": 0.6, "high": 0.5}, 0.6)
    opt = frame({"low": 0.8 * 0.9, "mid": 0.6 * 0.9, "high": 0.5 * 0.9}, 0.54)
    assert mdac(opt, base) == pytest.approx(0.0, abs=1e-12)


def test_tier_metrics_pools_events_per_tier():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 300)
    s = rng.normal(y, 1.0)
    tier = rng.integers(0, 3, 300)
    user = rng.integers(0, 40, 300)
    m = tier_metrics(y, s, tier, user, ("low", "mid", "high"))
    for t, name in enumerate(("low", "mid", "high")):
        assert m.by_tier.loc[name, "auc"] == pytest.approx(roc_auc_score(y[tier == t], s[tier == t]))
    assert m.overall["auc"] == pytest.approx(roc_auc_score(y, s))
    assert m.difference() == pytest.approx(m.by_tier["auc"].max() - m.by_tier["auc"].min())
    assert set(m.frame.columns) == {"tier", "metric", "value", "n_events", "n_users"}
    assert m.table().loc["low", "n_events"] == (tier == 0).sum()
