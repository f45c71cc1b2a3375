"""Paired bootstrap over users (rf2.evaluation.uncertainty): oracle, coverage, noise floor."""
from __future__ import annotations

import numpy as np
import pytest

from rf2.evaluation import auc
from rf2.evaluation import uncertainty as U
from rf2.evaluation.scores import EvalScores

NAMES = ("low", "mid", "high")


def population(n_users, rng, events=(5, 25)):
    """Users with 3 tiers (equal thirds), each with a few labelled events and a user-level offset."""
    user_tier = np.arange(n_users) % 3
    n_ev = rng.integers(*events, size=n_users)
    user = np.repeat(np.arange(n_users), n_ev)
    label = (rng.random(user.size) < 0.3).astype(np.int8)
    offset = rng.normal(0, 0.5, n_users)
    return user_tier, user, label, offset


def scores_for(user_tier, user, label, score):
    return EvalScores(user.astype(np.int32), user_tier[user].astype(np.int8), label, score.astype(np.float32), NAMES,
                      user_tier.astype(np.int8))


def test_weighted_auc_equals_auc_of_repeated_events():
    rng = np.random.default_rng(0)
    s = np.round(rng.normal(size=60), 1)  # many ties
    y = rng.random(60) < 0.4
    w = rng.integers(0, 4, size=(5, 60))
    got = U.weighted_auc(s, y, w)
    for b in range(5):
        rep = np.repeat(np.arange(60), w[b])
        assert got[b] == pytest.approx(auc(y[rep], s[rep]), abs=1e-12)
    assert U.weighted_auc(s, y, np.ones((1, 60)))[0] == pytest.approx(auc(y, s), abs=1e-12)


def test_stratified_draws_stay_within_their_tier_and_keep_sizes():
    rng = np.random.default_rng(1)
    strata = rng.integers(0, 3, size=40)
    d = U.stratified_draws(strata, 50, rng)
    assert d.shape == (50, 40)
    assert (strata[d] == strata[None, :]).all()  # every position draws from its own tier
    counts = U.draw_counts(d, 40)
    for t in range(3):
        assert (counts[:, strata == t].sum(axis=1) == (strata == t).sum()).all()
    assert len({tuple(r) for r in d}) > 40  # replicates differ


def slow_pair_bootstrap(opt, base, draws):
    """The obvious way: for each replicate, concatenate the drawn users' events and recompute."""
    units = np.unique(base.user)
    by_unit = {u: np.flatnonzero(base.user == u) for u in units}
    out = []
    for row in draws:
        rc = []
        for t in range(3):
            chosen = [units[i] for i in row if base.user_tier[units[i]] == t]
            ev = np.concatenate([by_unit[u] for u in chosen])
            a_o, a_b = auc(opt.label[ev], opt.score[ev]), auc(base.label[ev], base.score[ev])
            rc.append((a_o - a_b) / a_b)
        out.append(max(rc) - min(rc))
    return np.array(out), rc


def test_pair_bootstrap_matches_the_obvious_implementation():
    rng = np.random.default_rng(2)
    user_tier, user, label, offset = population(30, rng)
    sb = label * 1.0 + offset[user] + rng.normal(size=user.size)
    so = label * (1.0 - 0.5 * (user_tier[user] == 0)) + offset[user] + rng.normal(size=user.size)
    base, opt = scores_for(user_tier, user, label, sb), scores_for(user_tier, user, label, so)
    point, reps = U.pair_replicates(opt, base, "auc", 40, np.random.default_rng(7))
    # the same draws, taken the slow way
    units = np.unique(base.user)
    draws = U.stratified_draws(base.user_tier[units].astype(np.int64), 40, np.random.default_rng(7))
    slow_mdac, _ = slow_pair_bootstrap(opt, base, draws)
    np.testing.assert_allclose(U._mdac(reps["rc"]), slow_mdac, rtol=1e-5, atol=1e-6)
    # point values: plain per-tier AUCs
    for t in range(3):
        m = base.tier == t
        assert point["base"][t] == pytest.approx(auc(label[m], sb[m]))
        assert point["opt"][t] == pytest.approx(auc(label[m], so[m]))


def test_user_pair_form_equals_weighted_pass(monkeypatch):
    rng = np.random.default_rng(3)
    user_tier, user, label, offset = population(45, rng)
    s = np.round(label + offset[user] + rng.normal(size=user.size), 1)
    es = scores_for(user_tier, user, label, s)
    counts = U.draw_counts(U.stratified_draws(user_tier.astype(np.int64), 30, rng), 45)
    fast = U.TierResampler(es, "auc").values(counts)
    monkeypatch.setattr(U, "PAIR_ENTRIES", 0)  # forces the event-weight path
    slow = U.TierResampler(es, "auc").values(counts)
    np.testing.assert_allclose(fast, slow, rtol=1e-6)


def test_ranking_metric_replicates_are_weighted_user_means():
    rng = np.random.default_rng(4)
    user_tier, user, label, _ = population(24, rng)
    es = scores_for(user_tier, user, label, rng.normal(size=user.size))
    es.ranking_user = np.arange(0, 24, 2).astype(np.int32)
    es.ranking = {"ndcg@5": rng.random(12).astype(np.float32)}
    r = U.TierResampler(es, "ndcg@5")
    counts = rng.integers(0, 3, size=(4, 12)).astype(float)
    got = r.values(counts)
    for b in range(4):
        for t in range(3):
            m = user_tier[es.ranking_user] == t
            want = (counts[b, m] * es.ranking["ndcg@5"][m]).sum() / counts[b, m].sum()
            assert got[b, t] == pytest.approx(want, rel=1e-6)


def true_tier_auc(drop, n_users=60000, seed=99):
    rng = np.random.default_rng(seed)
    user_tier, user, label, offset = population(n_users, rng)
    noise = rng.normal(size=user.size)
    sb = label + offset[user] + noise
    so = label * (1.0 - drop * (user_tier[user] == 0)) + offset[user] + noise
    m = user_tier[user] == 0
    return (auc(label[m], so[m]) - auc(label[m], sb[m])) / auc(label[m], sb[m])


def test_intervals_cover_a_planted_effect():
    """95 % intervals of the low tier's relative change contain the population value in >= 90 %
    of repeated draws of 150 users (the value itself from 60,000 users)."""
    truth = true_tier_auc(0.4)
    assert truth < -0.02  # the planted effect is real
    rng = np.random.default_rng(5)
    hits, reps = 0, 120
    for _ in range(reps):
        user_tier, user, label, offset = population(150, rng)
        noise = rng.normal(size=user.size)
        sb = label + offset[user] + noise
        so = label * (1.0 - 0.4 * (user_tier[user] == 0)) + offset[user] + noise
        est = U.cell_estimate([(scores_for(user_tier, user, label, so), scores_for(user_tier, user, label, sb))],
                              "auc", n_boot=300, seed=int(rng.integers(1 << 30)))
        hits += est.rc_lo[0] <= truth <= est.rc_hi[0]
    assert hits / reps >= 0.90, hits / reps


def test_noise_floor_pairs_are_zero_centred_and_judged_within_noise():
    """Two runs that differ only by independent noise (none vs none retrained): per-tier changes
    centre on 0, and a cell compared with such a floor is almost never called above it."""
    rng = np.random.default_rng(6)
    rcs, above = [], 0
    for _ in range(40):
        user_tier, user, label, offset = population(90, rng)
        s1 = label + offset[user] + rng.normal(size=user.size)
        s2 = label + offset[user] + rng.normal(size=user.size)
        s3 = label + offset[user] + rng.normal(size=user.size)
        a, b, c = (scores_for(user_tier, user, label, s) for s in (s1, s2, s3))
        floor = U.cell_estimate([(b, a)], "auc", n_boot=200, seed=1)
        cell = U.cell_estimate([(c, a)], "auc", n_boot=200, seed=2)
        rcs.append(floor.rc[:3])
        above += U.verdict(cell.mdac_lo, floor.mdac) == U.ABOVE
    rcs = np.array(rcs)
    se = rcs.std(axis=0) / np.sqrt(len(rcs))
    assert (np.abs(rcs.mean(axis=0)) < 4 * se + 1e-3).all()
    assert above <= 4  # ~0 expected; a biased rule would call many


def test_seed_combination_mdac_of_mean_never_exceeds_mean_mdac():
    rng = np.random.default_rng(8)
    pairs = []
    for _ in range(4):
        user_tier, user, label, offset = population(60, rng)
        sb = label + offset[user] + rng.normal(size=user.size)
        so = label * (1 - 0.3 * (user_tier[user] == 0)) + offset[user] + rng.normal(size=user.size)
        pairs.append((scores_for(user_tier, user, label, so), scores_for(user_tier, user, label, sb)))
    est = U.cell_estimate(pairs, "auc", n_boot=200)
    assert est.n_seeds == 4 and est.resampled_seeds
    assert est.mdac <= est.mean_mdac + 1e-12
    assert est.mean_mdac == pytest.approx(est.seed_mdac.mean())
    assert est.mdac_lo <= est.mdac_hi and est.mean_mdac_lo <= est.mean_mdac_hi


def test_mismatched_pairs_are_refused():
    rng = np.random.default_rng(9)
    user_tier, user, label, offset = population(12, rng)
    a = scores_for(user_tier, user, label, rng.normal(size=user.size))
    other = user_tier.copy()
    other[0] = (other[0] + 1) % 3
    b = scores_for(other, user, label, rng.normal(size=user.size))
    with pytest.raises(ValueError, match="share test events"):
        U.pair_replicates(a, b, "auc", 10, rng)


def test_scores_round_trip_through_bytes():
    rng = np.random.default_rng(10)
    user_tier, user, label, _ = population(10, rng)
    es = scores_for(user_tier, user, label, rng.normal(size=user.size))
    es.ranking_user = np.array([1, 3], dtype=np.int32)
    es.ranking = {"ndcg@20": np.array([0.5, 0.25], dtype=np.float32)}
    back = EvalScores.from_bytes(es.to_bytes())
    assert back.tier_names == NAMES
    for k in ("user", "tier", "label", "score", "user_tier", "ranking_user"):
        np.testing.assert_array_equal(getattr(back, k), getattr(es, k))
    np.testing.assert_array_equal(back.ranking["ndcg@20"], es.ranking["ndcg@20"])


def test_linearised_auc_replicates_match_exact_ones_on_many_users():
    """The linear (influence) form used for large tiers: exact at the point, and replicate AUCs
    within a small fraction of their spread of the exact ones on 3,000 users (~1,000 per tier;
    measured: RMS difference ~4 % of the replicates' sd, ~2 % at 4,000 per tier)."""
    rng = np.random.default_rng(11)
    user_tier, user, label, offset = population(3000, rng, events=(3, 12))
    s = np.round(label * 0.8 + offset[user] + rng.normal(size=user.size), 2)
    es = scores_for(user_tier, user, label, s)
    exact, linear = U.TierResampler(es, "auc", method="exact"), U.TierResampler(es, "auc", method="linear")
    np.testing.assert_allclose(linear.values(), exact.values(), rtol=1e-12)
    counts = U.draw_counts(U.stratified_draws(exact.unit_tier, 80, rng), exact.n_units)
    a, b = exact.values(counts), linear.values(counts)
    spread = a.std(axis=0)
    rms = np.sqrt(((a - b) ** 2).mean(axis=0))
    assert (rms < 0.1 * spread).all(), (rms, spread)
    for q in (2.5, 97.5):
        assert (np.abs(np.percentile(a, q, axis=0) - np.percentile(b, q, axis=0)) < 0.25 * spread).all()
    assert (np.corrcoef(a[:, 0], b[:, 0])[0, 1]) > 0.99
    with pytest.raises(ValueError, match="method"):
        U.TierResampler(es, "auc", method="fast")


def test_paired_floor_test_is_rarely_fooled_by_noise_and_sees_a_planted_effect():
    """floor_test compares a cell's MDAC with the floor's replicate by replicate (same baseline,
    hence the same user draws): under pure noise it says 'above floor' in few of 30 populations,
    with a planted low-tier loss it says so in almost all (600 users)."""
    rng = np.random.default_rng(12)
    fooled = seen = 0
    for _ in range(30):
        user_tier, user, label, offset = population(600, rng)
        noisy = lambda: label + offset[user] + rng.normal(size=user.size)  # noqa: E731
        base, rep, null = (scores_for(user_tier, user, label, noisy()) for _ in range(3))
        hit = scores_for(user_tier, user, label, label * (1 - 0.5 * (user_tier[user] == 0)) + offset[user]
                         + rng.normal(size=user.size))
        kw = dict(metric="auc", n_boot=200, seed=3, keys=["base"])
        floor = U.cell_estimate([(rep, base)], **kw)
        fooled += U.floor_test(U.cell_estimate([(null, base)], **kw).mdac_reps, floor.mdac_reps)[0] == U.ABOVE
        seen += U.floor_test(U.cell_estimate([(hit, base)], **kw).mdac_reps, floor.mdac_reps)[0] == U.ABOVE
    assert fooled <= 3, fooled
    assert seen >= 27, seen
    assert U.floor_test(np.ones(5), None)[0] == U.NO_FLOOR
