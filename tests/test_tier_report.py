"""The heterogeneity report against direct computations on a hand-sized example."""
from __future__ import annotations

import math

import numpy as np
import pytest

from tier_mapping import TierAssignment
from tier_mapping.report import heterogeneity_report


def example():
    # 4 users: users 0,1 in tier 0; users 2,3 in tier 1. Items 0..2.
    tiers = TierAssignment(np.array([0, 0, 1, 1], dtype=np.int8), 2, "hand", 0)
    user = np.array([0, 0, 1, 2, 2, 3, 3, 3])
    item = np.array([0, 1, 0, 1, 2, 2, 2, 0])
    label = np.array([1, 1, 1, 1, 1, 0, 1, 1])
    return tiers, user, item, label


def kl2(p, q):
    return sum(pi * math.log2(pi / qi) for pi, qi in zip(p, q) if pi > 0)


def test_jsd_share_and_mi_by_hand():
    tiers, user, item, label = example()
    rep = heterogeneity_report(tiers, user, item, label, n_items=3, top_n=3, min_item_clicks=1)
    # tier 0 clicks: items 0,1,0 -> (2/3, 1/3, 0); tier 1 clicks: 1,2,2,0 -> (1/4, 1/4, 2/4)
    p, q = [2 / 3, 1 / 3, 0], [1 / 4, 1 / 4, 1 / 2]
    m = [(a + b) / 2 for a, b in zip(p, q)]
    jsd = 0.5 * kl2(p, m) + 0.5 * kl2(q, m)
    assert rep.jsd.iloc[0, 1] == pytest.approx(jsd, abs=1e-12)
    assert rep.mean_jsd == pytest.approx(jsd, abs=1e-12)
    assert rep.clicks_per_tier.tolist() == [3, 4]
    share = rep.top_items.set_index(["item", "tier"])["share"]
    assert share[(0, "low")] == pytest.approx(2 / 3) and share[(2, "high")] == pytest.approx(1 / 2)
    # mutual information I(tier; item) with click-mass weights 3/7, 4/7
    w = [3 / 7, 4 / 7]
    mix = [w[0] * a + w[1] * b for a, b in zip(p, q)]
    mi = w[0] * kl2(p, mix) + w[1] * kl2(q, mix)
    assert rep.mutual_information == pytest.approx(mi, abs=1e-12)


def test_chi_square_matches_formula():
    tiers, user, item, label = example()
    rep = heterogeneity_report(tiers, user, item, label, n_items=3, min_item_clicks=1)
    table = np.array([[2, 1, 0], [1, 1, 2]], dtype=float)
    expected = table.sum(1, keepdims=True) * table.sum(0, keepdims=True) / table.sum()
    chi2 = ((table - expected) ** 2 / expected).sum()
    assert rep.chi2 == pytest.approx(chi2)
    assert rep.dof == 2
    assert rep.cramers_v == pytest.approx(math.sqrt(chi2 / (7 * 1)))


def test_identical_tiers_have_zero_divergence():
    tiers = TierAssignment(np.array([0, 1], dtype=np.int8), 2, "hand", 0)
    user = np.array([0, 0, 1, 1])
    item = np.array([0, 1, 0, 1])
    rep = heterogeneity_report(tiers, user, item, np.ones(4, int), n_items=2, min_item_clicks=1)
    assert rep.mean_jsd == pytest.approx(0.0, abs=1e-12) and rep.mutual_information == pytest.approx(0.0, abs=1e-12)


def test_text_and_plot(tmp_path, synth):
    from tier_mapping import map_tiers
    from tier_mapping.report import report_for

    rep = report_for(synth, map_tiers(synth, "dirichlet:0.05", seed=0))
    text = rep.to_text()
    assert "Jensen-Shannon" in text and "chi2=" in text and "low" in text
    out = tmp_path / "fig4.png"
    rep.plot(out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_data_volume_per_tier_by_hand():
    tiers, user, item, label = example()
    # training events: user 0: 2 (clicks 2), user 1: 0, user 2: 1 (clicks 1), user 3: 3 (clicks 2)
    is_train = np.array([1, 1, 0, 1, 0, 1, 1, 1], dtype=bool)
    rep = heterogeneity_report(tiers, user, item, label, n_items=3, min_item_clicks=1, is_train=is_train)
    v = rep.volume
    assert v["train_events"].tolist() == [2, 4] and v["train_clicks"].tolist() == [2, 3]
    assert v["train_events_per_user_mean"].tolist() == [1.0, 2.0]
    assert v["train_events_per_user_median"].tolist() == [1.0, 2.0]
    assert v["train_events_per_user_q25"].tolist() == [0.5, 1.5] and v["train_events_per_user_q75"].tolist() == [1.5, 2.5]
    assert v["train_event_share"].tolist() == pytest.approx([1 / 3, 2 / 3])
    s = rep.summary()
    assert (s["train_events_low"], s["train_events_high"], s["train_event_share_high"]) == (2, 4, pytest.approx(2 / 3))
    assert s["train_events_per_user_q75_low"] == 1.5 and s["users_low"] == 2
    assert "share of train events" in rep.to_text() and "66.7%" in rep.to_text()
    # without the split the report has no volume columns (as before)
    assert heterogeneity_report(tiers, user, item, label, n_items=3).volume is None


def test_report_for_uses_the_datasets_training_split(synth):
    from tier_mapping import map_tiers
    from tier_mapping.report import report_for

    t = map_tiers(synth, "random", seed=0)
    rep = report_for(synth, t)
    counts = synth.train_counts
    for k, name in enumerate(t.names):
        assert rep.summary()[f"train_events_{name}"] == counts[t.tier == k].sum()
    assert sum(rep.summary()[f"train_event_share_{n}"] for n in t.names) == pytest.approx(1.0)
