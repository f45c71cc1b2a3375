"""Hand-computed cases for rf2/evaluation/metrics.py that test_metrics.py's oracles left open (log
loss, per-tier sizes, MDAC's inputs); written against surviving mutants (benchmarks/MUTATION.md)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from rf2.evaluation import OVERALL, TierMetrics, auc, mdac, relative_change, tier_metrics
from rf2.evaluation.metrics import log_loss


def test_log_loss_by_hand():
    # y=1, z=0: log 2; y=0, z=ln 3: log(1 + 3) = 2 log 2; mean = 1.5 log 2
    assert log_loss([1, 0], [0.0, math.log(3)]) == pytest.approx(1.5 * math.log(2), rel=1e-12)
    # y=1, z=2: log(1 + e^2) - 2 = log(1 + e^-2)
    assert log_loss(np.array([True]), np.array([2.0], dtype=np.float32)) == pytest.approx(math.log1p(math.exp(-2)), rel=1e-7)
    assert math.isnan(log_loss([], []))


def test_auc_of_a_single_class_is_nan():
    assert math.isnan(auc([1, 1, 1], [0.1, 0.2, 0.3])) and math.isnan(auc([0, 0], [0.1, 0.2]))
    assert auc([0, 1], [0.1, 0.2]) == 1.0


def test_tier_metrics_sizes_and_log_loss_per_tier():
    y = np.array([1, 0, 1, 0, 1, 1])
    z = np.array([0.0, 0.0, 2.0, -2.0, 0.0, 0.0])
    tier = np.array([0, 0, 1, 1, 1, 1])
    user = np.array([10, 10, 11, 12, 12, 12])
    tm = tier_metrics(y, z, tier, user, ("low", "high"))
    f = tm.frame.set_index(["tier", "metric"])
    assert f.loc[("low", "log_loss"), "value"] == pytest.approx(math.log(2))
    assert f.loc[("high", "log_loss"), "value"] == pytest.approx((2 * math.log1p(math.exp(-2)) + 2 * math.log(2)) / 4)
    assert f.loc[("low", "auc"), "n_users"] == 1 and f.loc[("high", "auc"), "n_users"] == 2
    assert f.loc[(OVERALL, "log_loss"), "n_users"] == 3 and f.loc[(OVERALL, "log_loss"), "n_events"] == 6
    assert list(tm.table().index) == ["low", "high", OVERALL]


def metrics(values: dict[str, tuple[float, float]]) -> TierMetrics:
    rows = [(t, m, v, 1, 1) for t, (a, l) in values.items() for m, v in (("auc", a), ("log_loss", l))]
    return TierMetrics(pd.DataFrame(rows, columns=["tier", "metric", "value", "n_events", "n_users"]), ("low", "high"))


def test_mdac_inputs():
    base = metrics({"low": (0.8, 0.5), "high": (0.8, 0.5), OVERALL: (0.8, 0.5)})
    opt = metrics({"low": (0.6, 0.5), "high": (0.8, 1.0), OVERALL: (0.7, 0.75)})
    assert mdac(opt, base) == pytest.approx(0.25)  # auc: -25% vs 0%
    assert mdac(opt, base, metric="log_loss") == pytest.approx(1.0)  # log loss: 0% vs +100%
    assert mdac(pd.Series({"low": -0.1, "high": 0.2})) == pytest.approx(0.3)  # no overall entry: fine
    assert math.isnan(mdac(pd.Series({"low": float("nan"), "high": 0.2, OVERALL: 0.0})))
    other = TierMetrics(base.frame, ("a", "b"))
    with pytest.raises(ValueError, match=r"^tiers differ: \('a', 'b'\) vs \('low', 'high'\)$"):
        relative_change(other, base)


def test_log_loss_of_no_events_is_nan_without_a_warning():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's "Mean of empty slice" would be an error here
        assert math.isnan(log_loss(np.zeros(0), np.zeros(0)))


def test_difference_and_ratio_by_hand():
    tm = metrics({"low": (0.6, 0.9), "high": (0.8, 0.3), OVERALL: (0.7, 0.6)})
    assert tm.ratio() == pytest.approx(0.75)  # default metric auc: 0.6 / 0.8
    assert tm.ratio("log_loss") == pytest.approx(1 / 3)  # 0.3 / 0.9
    assert tm.difference() == pytest.approx(0.2) and tm.difference("log_loss") == pytest.approx(0.6)
