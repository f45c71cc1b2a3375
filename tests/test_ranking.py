"""Full-catalogue NDCG@K / Recall@K: hand-computed oracles, properties, a plain-loop reference,
the chunked scorer, per-tier frames, and encode_pairs against encode for events."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rf2.data import DenseFeature, FeatureEncoder, InteractionDataset, Schema, load_dataset, make_synthetic
from rf2.evaluation import (
    OVERALL, TierMetrics, mdac, ranking_at_k, ranking_by_user, ranking_frame, ranking_metrics, relative_change,
    score_all_items, tier_metrics, top_k_items,
)
from rf2.models import build_model

LOG2_3 = math.log2(3)


# -- oracles computed on paper ----------------------------------------------------------------------
def test_hand_computed_ndcg_and_recall():
    # ranking by score: item 1 (.9), 3 (.8), 5 (.7), 2 (.3), 4 (.2), 0 (.1); relevant {2, 3}; K = 3
    s = np.array([[0.1, 0.9, 0.3, 0.8, 0.2, 0.7]])
    r = ranking_at_k(s, [[3, 2]], k=3)
    assert top_k_items(s, 3).tolist() == [[1, 3, 5]]
    # one hit at rank 1 (0-based): DCG = 1/log2(3); ideal: two hits at ranks 0, 1
    assert r["ndcg"][0] == pytest.approx((1 / LOG2_3) / (1 + 1 / LOG2_3))
    assert r["ndcg"][0] == pytest.approx(0.3868528072, abs=1e-9)
    assert r["recall"][0] == 0.5
    assert (r["hits"][0], r["n_relevant"][0]) == (1, 2)


def test_excluding_a_training_item_changes_the_ranking():
    s = np.array([[0.1, 0.9, 0.3, 0.8, 0.2, 0.7]])
    excl = np.zeros_like(s, dtype=bool)
    excl[0, 1] = True  # item 1 was a training item
    assert top_k_items(s, 3, excl).tolist() == [[3, 5, 2]]
    r = ranking_at_k(s, [[3, 2]], k=3, exclude=excl)
    # hits at ranks 0 and 2: DCG = 1 + 1/log2(4) = 1.5, IDCG = 1 + 1/log2(3)
    assert r["ndcg"][0] == pytest.approx(1.5 / (1 + 1 / LOG2_3))
    assert r["ndcg"][0] == pytest.approx(0.9197207891, abs=1e-9)
    assert r["recall"][0] == 1.0
    # list form of the exclusion gives the same
    r2 = ranking_at_k(s, [[3, 2]], k=3, exclude=[[1]])
    assert r2["ndcg"][0] == r["ndcg"][0]


def test_excluded_relevant_item_is_dropped_from_the_relevant_set():
    s = np.array([[0.9, 0.8, 0.1, 0.0]])
    r = ranking_at_k(s, [[0, 2]], k=1, exclude=[[0]])  # item 0 both in train and test
    assert r["n_relevant"][0] == 1  # only item 2 is left
    assert r["recall"][0] == 0.0  # top-1 is item 1
    r = ranking_at_k(s, [[0]], k=1, exclude=[[0]])
    assert r["n_relevant"][0] == 0 and np.isnan(r["ndcg"][0]) and np.isnan(r["recall"][0])


def test_ties_go_to_the_lower_item_id():
    s = np.array([[2.0, 2.0, 1.0, 2.0], [0.5, 0.5, 0.5, 0.5], [1.0, 3.0, 3.0, 3.0]])
    assert top_k_items(s, 4).tolist() == [[0, 1, 3, 2], [0, 1, 2, 3], [1, 2, 3, 0]]
    # all-equal scores: relevant item 0 is first (hit), relevant item 3 is last (miss at K = 3)
    r = ranking_at_k(s[[1, 1]], [[0], [3]], k=3)
    assert r["ndcg"].tolist() == [1.0, 0.0] and r["recall"].tolist() == [1.0, 0.0]
    # torch input, -0.0 vs 0.0 are equal scores too
    assert top_k_items(torch.tensor([[-0.0, 0.0, -1.0]]), 2).tolist() == [[0, 1]]


def test_user_without_relevant_items_is_nan_and_left_out_of_averages():
    s = np.array([[0.3, 0.2, 0.1], [0.3, 0.2, 0.1], [0.3, 0.2, 0.1]])
    r = ranking_at_k(s, [[0], [], [2]], k=1)
    assert r["ndcg"][0] == 1.0 and np.isnan(r["ndcg"][1]) and r["ndcg"][2] == 0.0
    assert np.isnan(r["recall"][1])
    # per-tier averaging by hand: tier 0 = users 0, 1; tier 1 = user 2; user 1 has no relevant items
    per_user = pd.DataFrame({"n_relevant": [1, 2], "ndcg@1": [1.0, 0.0], "recall@1": [1.0, 0.5]},
                            index=pd.Index([0, 2], name="user"))
    f = ranking_frame(per_user, np.array([0, 0, 1, 1]), ("low", "high"))
    assert list(f.columns) == ["tier", "metric", "value", "n_events", "n_users"]
    got = {(t, m): (v, e, n) for t, m, v, e, n in f.itertuples(index=False)}
    assert got[("low", "ndcg@1")] == (1.0, 1, 1)
    assert got[("high", "recall@1")] == (0.5, 2, 1)
    assert got[(OVERALL, "ndcg@1")] == (0.5, 3, 2)
    assert got[(OVERALL, "recall@1")] == (0.75, 3, 2)
    # a tier with no evaluated user: nan, zero sizes
    f = ranking_frame(per_user, np.array([0, 0, 0, 0]), ("low", "high"))
    high = f[f["tier"] == "high"]
    assert high["value"].isna().all() and (high["n_users"] == 0).all() and (high["n_events"] == 0).all()


def test_k_larger_than_the_catalogue():
    s = np.array([[0.1, 0.9, 0.4, 0.3]])
    top = top_k_items(s, 10, [[1]])
    assert top.tolist() == [[2, 3, 0, -1]]  # 3 items left, padded with -1
    r = ranking_at_k(s, [[0, 3]], k=10, exclude=[[1]])
    # hits at ranks 1 and 2: DCG = 1/log2(3) + 1/log2(4); IDCG = 1 + 1/log2(3)
    assert r["ndcg"][0] == pytest.approx((1 / LOG2_3 + 0.5) / (1 + 1 / LOG2_3))
    assert r["recall"][0] == 1.0


def test_bad_inputs():
    with pytest.raises(ValueError, match="NaN"):
        top_k_items(np.array([[0.1, np.nan]]), 1)
    with pytest.raises(ValueError, match="k must"):
        top_k_items(np.zeros((1, 3)), 0)
    with pytest.raises(ValueError, match="shape"):
        ranking_at_k(np.zeros((2, 3)), np.zeros((2, 4), dtype=bool), 1)
    with pytest.raises(ValueError, match="item ids"):
        ranking_at_k(np.zeros((1, 3)), [[3]], 1)


# -- properties and a plain-loop reference ---------------------------------------------------------
def loop_reference(scores, relevant, exclude, k):
    """Textbook NDCG@k / Recall@k, one user at a time, in plain Python."""
    ndcg, recall = [], []
    for s, rel_row, ex_row in zip(scores.tolist(), relevant.tolist(), exclude.tolist()):
        candidates = [i for i in range(len(s)) if not ex_row[i]]
        ranked = sorted(candidates, key=lambda i: (-s[i], i))[:k]
        rel = {i for i in candidates if rel_row[i]}
        if not rel:
            ndcg.append(float("nan"))
            recall.append(float("nan"))
            continue
        dcg = sum(1 / math.log2(pos + 2) for pos, i in enumerate(ranked) if i in rel)
        idcg = sum(1 / math.log2(pos + 2) for pos in range(min(k, len(rel))))
        ndcg.append(dcg / idcg)
        recall.append(sum(i in rel for i in ranked) / len(rel))
    return np.array(ndcg), np.array(recall)


@pytest.mark.parametrize("seed", range(6))
def test_vectorised_equals_plain_loop(seed):
    rng = np.random.default_rng(seed)
    n, n_items = 40, int(rng.integers(3, 30))
    scores = np.round(rng.normal(size=(n, n_items)), 1).astype(np.float32)  # many ties
    relevant = rng.random((n, n_items)) < 0.2
    exclude = rng.random((n, n_items)) < 0.3
    for k in (1, 3, 10, n_items, n_items + 5):
        want_ndcg, want_recall = loop_reference(scores, relevant, exclude, k)
        r = ranking_at_k(scores, relevant, k, exclude)
        np.testing.assert_allclose(r["ndcg"], want_ndcg, rtol=1e-12, equal_nan=True)
        np.testing.assert_allclose(r["recall"], want_recall, rtol=1e-12, equal_nan=True)
        # chunking users does not change anything (ties are broken by item id, not position)
        half = ranking_at_k(scores[: n // 2], relevant[: n // 2], k, exclude[: n // 2])
        np.testing.assert_array_equal(half["ndcg"], r["ndcg"][: n // 2])


@st.composite
def ranking_case(draw):
    n_items = draw(st.integers(2, 40))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    n_rel = draw(st.integers(1, n_items - 1))
    rel_items = rng.choice(n_items, n_rel, replace=False)
    relevant = np.zeros((1, n_items), dtype=bool)
    relevant[0, rel_items] = True
    exclude = (rng.random((1, n_items)) < draw(st.floats(0, 0.5))) & ~relevant
    k = draw(st.integers(1, n_items + 3))
    noise = np.round(rng.random((1, n_items)), 1)  # ties inside each group
    return relevant, exclude, noise, k


@settings(max_examples=150, deadline=None)
@given(ranking_case())
def test_perfect_and_reversed_scorers(case):
    relevant, exclude, noise, k = case
    n_rel = int(relevant.sum())
    perfect = noise + 2.0 * relevant  # every relevant item above every other item
    r = ranking_at_k(perfect, relevant, k, exclude)
    assert r["ndcg"][0] == pytest.approx(1.0)
    assert r["recall"][0] == pytest.approx(min(k, n_rel) / n_rel)  # = 1 when |relevant| <= K
    reversed_ = noise - 2.0 * relevant  # every relevant item below every other item
    r = ranking_at_k(reversed_, relevant, k, exclude)
    others = int((~relevant & ~exclude).sum())  # non-relevant items still in the ranking
    if k <= others:
        assert r["ndcg"][0] == 0.0 and r["recall"][0] == 0.0
    else:
        assert r["recall"][0] > 0.0


# -- the chunked scorer -----------------------------------------------------------------------------
class ItemScorer(torch.nn.Module):
    """A model whose logit is a known function of the input row: item id column x (1 + gender)
    minus the history length column, so users, items and history all matter."""

    def __init__(self, schema, item_feature: str):
        super().__init__()
        self.item_col = schema.columns[item_feature][0]
        self.gender_col = schema.columns["gender"][0]
        self.len_col = schema.columns["hist_length"][0]
        self.rows_seen: list[int] = []
        self.training_seen: list[bool] = []

    def forward(self, X):
        self.rows_seen.append(X.shape[0])
        self.training_seen.append(self.training)
        return X[:, self.item_col] * (1 + X[:, self.gender_col]) - X[:, self.len_col]


def expected_item_scores(ds, users, item_values, maxlen):
    out = np.zeros((len(users), ds.n_items))
    ev = ds.events
    for j, u in enumerate(users):
        n_clicks = int(((ev["user"] == u) & ~ev["is_test"] & (ev["label"] == 1)).sum())
        out[j] = item_values * (1 + ds.users.loc[u, "gender"]) - min(n_clicks, maxlen)
    return out


def test_score_all_items_in_chunks(synth):
    ds = synth
    model = ItemScorer(ds.schema, "item_id")
    model.train()
    users = np.array([5, 0, 17, 3, 299, 42, 7])
    want = expected_item_scores(ds, users, ds.items["item_id"].to_numpy(), 8)
    for chunk in (1, 3, 100, None):
        model.rows_seen.clear()
        got = score_all_items(model, ds, FeatureEncoder(ds), users, chunk=chunk)
        np.testing.assert_array_equal(got, want)
        assert max(model.rows_seen) <= (chunk or len(users)) * ds.n_items
        assert not any(model.training_seen[-len(model.rows_seen):])
    assert model.training  # restored
    assert score_all_items(model, ds, None, np.array([], dtype=int)).shape == (0, ds.n_items)


def dlrm_rows_equal_direct_scoring(ds):
    model = build_model("dlrm", ds.schema, seed=1)
    enc = FeatureEncoder(ds)
    users = np.array([0, 1, 2, 10, 11])
    got = score_all_items(model, ds, enc, users, chunk=2)
    with torch.no_grad():
        model.eval()
        for j, u in enumerate(users):
            want = model(enc.encode_pairs(u, np.arange(ds.n_items))).numpy()
            np.testing.assert_allclose(got[j], want, rtol=1e-5, atol=1e-6)


def test_dlrm_scores_match_direct_scoring(synth):
    dlrm_rows_equal_direct_scoring(synth)


# -- per-tier frames ------------------------------------------------------------------------------
def loop_user_metrics(ds, score_of_item, k, exclude):
    """Per-user NDCG/Recall from the raw event table, for a model whose score depends on the item only."""
    ev = ds.events
    out = {}
    for u, g in ev.groupby("user"):
        rel = set(g.loc[g["is_test"] & (g["label"] == 1), "item"])
        train = g[~g["is_test"]]
        if exclude == "train":
            excl = set(train["item"])
        elif exclude == "train_clicks":
            excl = set(train.loc[train["label"] == 1, "item"])
        else:
            excl = set()
        rel -= excl
        if not rel:
            continue
        ranked = sorted((i for i in range(ds.n_items) if i not in excl), key=lambda i: (-score_of_item[i], i))[:k]
        dcg = sum(1 / math.log2(p + 2) for p, i in enumerate(ranked) if i in rel)
        idcg = sum(1 / math.log2(p + 2) for p in range(min(k, len(rel))))
        out[u] = (dcg / idcg, sum(i in rel for i in ranked) / len(rel), len(rel))
    return out


class ItemOnly(torch.nn.Module):
    def __init__(self, schema, item_feature, item_scores):
        super().__init__()
        self.col = schema.columns[item_feature][0]
        self.table = torch.as_tensor(np.r_[0.0, item_scores], dtype=torch.float32)  # indexed by item id (1-based)

    def forward(self, X):
        return self.table[X[:, self.col].long()]


@pytest.mark.parametrize("exclude", ["train", "train_clicks", "none"])
def test_ranking_metrics_against_a_loop_over_events(exclude):
    ds = make_synthetic(n_users=60, n_items=40, events_per_user=12, history_maxlen=4, seed=5)
    rng = np.random.default_rng(0)
    item_scores = np.round(rng.random(ds.n_items), 1)  # ties between items
    model = ItemOnly(ds.schema, "item_id", item_scores)
    tier = rng.integers(0, 3, ds.n_users)
    names = ("low", "mid", "high")
    k = 5
    want = loop_user_metrics(ds, item_scores, k, exclude)
    frame = ranking_metrics(model, ds, FeatureEncoder(ds), tier, names, k=k, chunk=7, exclude=exclude)
    assert list(frame.columns) == ["tier", "metric", "value", "n_events", "n_users"]
    assert frame["tier"].tolist() == [t for t in [*names, OVERALL] for _ in range(2)]
    assert frame["metric"].tolist() == ["ndcg@5", "recall@5"] * 4
    for t, name in [*enumerate(names), (None, OVERALL)]:
        us = [u for u in want if t is None or tier[u] == t]
        rows = frame[frame["tier"] == name].set_index("metric")
        assert rows.loc["ndcg@5", "value"] == pytest.approx(np.mean([want[u][0] for u in us]), abs=1e-12)
        assert rows.loc["recall@5", "value"] == pytest.approx(np.mean([want[u][1] for u in us]), abs=1e-12)
        assert (rows["n_users"] == len(us)).all()
        assert (rows["n_events"] == sum(want[u][2] for u in us)).all()
    per_user = ranking_by_user(model, ds, None, k=[k, 1], exclude=exclude)
    assert sorted(per_user.index) == sorted(want)
    np.testing.assert_allclose(per_user.loc[sorted(want), f"ndcg@{k}"], [want[u][0] for u in sorted(want)], atol=1e-12)
    assert set(per_user.columns) == {"n_relevant", "ndcg@5", "recall@5", "ndcg@1", "recall@1"}


def test_exclusion_choices_differ_and_users_subset(synth):
    ds = synth
    popularity = np.bincount(ds.item[ds.train_index], minlength=ds.n_items).astype(float)
    model = ItemOnly(ds.schema, "item_id", popularity)  # popular items first: often training items
    tier = np.arange(ds.n_users) % 3
    names = ("low", "mid", "high")
    a = ranking_metrics(model, ds, None, tier, names, k=10, exclude="train")
    b = ranking_metrics(model, ds, None, tier, names, k=10, exclude="none")
    c = ranking_metrics(model, ds, None, tier, names, k=10, exclude="train_clicks")
    assert (np.abs(a["value"] - b["value"]) > 1e-3).all()
    assert (np.abs(a["value"] - c["value"]) > 1e-3).any()
    sub = np.array([4, 2, 2, 8, 9, 10, 11, 12])
    d = ranking_metrics(model, ds, None, tier, names, k=10, users=sub)
    per_user = ranking_by_user(model, ds, None, k=10)
    evaluated = [u for u in np.unique(sub) if u in per_user.index]
    overall = d[(d["tier"] == OVERALL) & (d["metric"] == "ndcg@10")].iloc[0]
    assert overall["n_users"] == len(evaluated)
    assert overall["value"] == pytest.approx(per_user.loc[evaluated, "ndcg@10"].mean())
    with pytest.raises(ValueError, match="one tier per user"):
        ranking_metrics(model, ds, None, tier[:-1], names)
    with pytest.raises(ValueError, match="index tier_names"):
        ranking_metrics(model, ds, None, tier + 1, names)
    with pytest.raises(ValueError, match="exclude"):
        ranking_metrics(model, ds, None, tier, names, exclude="test")


def test_frame_works_with_tier_metrics_relative_change_and_mdac(synth):
    ds = synth
    names = ("low", "mid", "high")
    tier = np.arange(ds.n_users) % 3
    good = ranking_metrics(ItemOnly(ds.schema, "item_id", -np.arange(ds.n_items, dtype=float)), ds, None, tier, names)
    bad = ranking_metrics(ItemOnly(ds.schema, "item_id", np.arange(ds.n_items, dtype=float)), ds, None, tier, names)
    tm_good, tm_bad = TierMetrics(good, names), TierMetrics(bad, names)
    rc = relative_change(tm_good, tm_bad, "ndcg@20")
    by_hand = (good.set_index(["tier", "metric"])["value"] / bad.set_index(["tier", "metric"])["value"] - 1)
    assert rc["mid"] == pytest.approx(by_hand[("mid", "ndcg@20")])
    assert mdac(tm_good, tm_bad, "recall@20") == pytest.approx(
        max(relative_change(tm_good, tm_bad, "recall@20")[list(names)])
        - min(relative_change(tm_good, tm_bad, "recall@20")[list(names)])
    )
    # concatenated with the AUC frame, both metric families live in one TierMetrics
    idx = ds.test_index
    auc_frame = tier_metrics(ds.label[idx], np.zeros(idx.size), tier[ds.user[idx]], ds.user[idx], names).frame
    both = TierMetrics(pd.concat([auc_frame, good], ignore_index=True), names)
    assert {"auc", "ndcg@20", "recall@20"} <= set(both.by_tier.columns)
    assert list(both.table().index) == [*names, OVERALL]


# -- encode_pairs -----------------------------------------------------------------------------------
def train_click_history(ds, u, maxlen, values):
    ev = ds.events
    mine = ev[(ev["user"] == u) & ~ev["is_test"] & (ev["label"] == 1)].sort_values(["timestamp", "item"])
    recent = [int(values[i]) for i in mine["item"]][-maxlen:]
    return recent + [0] * (maxlen - len(recent))


def check_pairs_match_events(ds, idx):
    enc = FeatureEncoder(ds)
    by_event = enc.encode(idx).numpy()
    by_pair = enc.encode_pairs(ds.user[idx], ds.item[idx]).numpy()
    assert by_pair.shape == by_event.shape and by_pair.dtype == np.float32
    hist_cols = set()
    for f in ds.schema.histories:
        a, b = ds.schema.columns[f.name]
        hist_cols |= set(range(a, b))
        values = ds.items[f.name.removeprefix("hist_")].to_numpy()
        la = ds.schema.columns[f.length_name][0] if f.length_name else None
        if la is not None:
            hist_cols.add(la)
        for row, u in zip(by_pair, ds.user[idx]):
            want = train_click_history(ds, u, f.maxlen, values)
            assert row[a:b].tolist() == want
            if la is not None:
                assert row[la] == sum(v != 0 for v in want)
    others = [c for c in range(ds.schema.n_columns) if c not in hist_cols]
    assert others, "the schema should have non-history columns"
    np.testing.assert_array_equal(by_pair[:, others], by_event[:, others])
    return by_pair, by_event, sorted(hist_cols)


def test_encode_pairs_matches_encode_except_history_synthetic(synth):
    ds = synth
    train_idx = ds.train_index
    by_pair, by_event, hist = check_pairs_match_events(ds, train_idx)
    # the histories do differ by design: an event only sees clicks strictly before it
    assert not np.array_equal(by_pair[:, hist], by_event[:, hist])
    check_pairs_match_events(ds, ds.test_index[:50])  # test events: same features, train-click history


def test_encode_pairs_broadcasts_and_validates(synth):
    ds = synth
    enc = FeatureEncoder(ds)
    X = enc.encode_pairs(7, np.arange(ds.n_items)).numpy()
    assert X.shape == (ds.n_items, ds.schema.n_columns)
    a, _ = ds.schema.columns["item_id"]
    assert X[:, a].tolist() == ds.items["item_id"].tolist()
    assert (X[:, ds.schema.columns["region"][0]] == ds.users.loc[7, "region"]).all()
    with pytest.raises(ValueError, match="user ids"):
        enc.encode_pairs([ds.n_users], [0])
    with pytest.raises(ValueError, match="item ids"):
        enc.encode_pairs([0], [-1])


def with_event_feature(ds):
    events = ds.events.copy()
    events["hour"] = (events["timestamp"] // 3600 % 24).astype(np.float32)
    schema = Schema(ds.schema.features + (DenseFeature("hour", "event"),))
    return InteractionDataset(ds.name, events, ds.users, ds.items, schema, ds.item_sequences)


def test_event_level_features_need_values(synth):
    ds = with_event_feature(synth)
    enc = FeatureEncoder(ds)
    with pytest.raises(ValueError, match="event-level features \\['hour'\\]"):
        enc.encode_pairs([0, 1], [2, 3])
    col = ds.schema.columns["hour"][0]
    assert (enc.encode_pairs([0, 1], [2, 3], event_features={"hour": 5})[:, col] == 5).all()
    assert enc.encode_pairs([0, 1], [2, 3], event_features={"hour": [1, 2]})[:, col].tolist() == [1, 2]
    with pytest.raises(ValueError, match="shape"):
        enc.encode_pairs([0, 1], [2, 3], event_features={"hour": [1, 2, 3]})
    with pytest.raises(ValueError, match="not event-level"):
        enc.encode_pairs([0], [2], event_features={"hour": 1, "gender": 0})
    # and the real event rows still carry their values
    idx = ds.train_index[:5]
    assert enc.encode(idx)[:, col].tolist() == ds.events["hour"].to_numpy()[idx].tolist()


# -- MovieLens-100K ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ml100k_ds(ml100k_files):
    return load_dataset("ml-100k", path=ml100k_files)


def test_encode_pairs_matches_encode_except_history_ml100k(ml100k_ds):
    ds = ml100k_ds
    rng = np.random.default_rng(0)
    idx = np.sort(rng.choice(ds.train_index, 400, replace=False))
    by_pair, by_event, hist = check_pairs_match_events(ds, idx)
    assert not np.array_equal(by_pair[:, hist], by_event[:, hist])


def test_ml100k_dlrm_ranking(ml100k_ds):
    ds = ml100k_ds
    dlrm_rows_equal_direct_scoring(ds)
    model = build_model("dlrm", ds.schema, seed=0)
    tier = np.arange(ds.n_users) % 3
    users = np.arange(60)
    a = ranking_metrics(model, ds, None, tier, ("low", "mid", "high"), k=20, users=users, chunk=7)
    assert a["value"].between(0, 1).all()
    assert a["metric"].unique().tolist() == ["ndcg@20", "recall@20"]
    n_with_test_clicks = sum(
        bool(((ds.user == u) & ds.is_test & (ds.label == 1)).any()) for u in users
    )
    assert (a.loc[a["tier"] == OVERALL, "n_users"] == n_with_test_clicks).all()


@pytest.mark.parametrize("optimization", ["none", "standalone"])
def test_run_config_ranking_exclude_reaches_the_metrics(optimization):
    """``ranking_exclude`` reaches a run's metrics: federated, they equal ranking the final global
    model directly with that exclusion; in both kinds of run the two exclusions differ."""
    from rf2.config import RunConfig
    from rf2.simulation import Simulation

    base = RunConfig(dataset="synthetic", dataset_options={"n_users": 60, "n_items": 30, "user_id": True}, model="ncf",
                     optimization=optimization, clients_per_round=20, ranking_k=5)
    runs = {}
    for exclude in ("train", "train_clicks"):
        sim = Simulation(base.replace(ranking_exclude=exclude), progress=False)
        got = sim.run().metrics.frame.query("metric == 'ndcg@5'").set_index("tier")["value"]
        runs[exclude] = got
        if optimization == "none":
            want = ranking_metrics(sim.model, sim.dataset, sim.encoder, sim.tiers.tier, sim.tiers.names, k=5,
                                   exclude=exclude).query("metric == 'ndcg@5'").set_index("tier")["value"]
            pd.testing.assert_series_equal(got, want, check_names=False)
    assert (runs["train"] - runs["train_clicks"]).abs().max() > 1e-3
    with pytest.raises(ValueError, match=r"ranking_exclude must be one of \('auto', 'train', 'train_clicks', 'none'\)"):
        base.replace(ranking_exclude="test")


@pytest.mark.parametrize("seed", range(6))
def test_top_k_by_partition_equals_a_full_stable_sort(seed):
    """The partition path (k well below the catalogue) lists exactly what a full stable sort on
    descending score lists: heavy ties (scores from 4 values, or all equal), -0.0 next to 0.0,
    excluded items, and rows with fewer allowed items than k."""
    rng = np.random.default_rng(seed)
    n, n_items = 40, 300
    s = rng.integers(0, 4, size=(n, n_items)).astype(np.float32) * [1, 0.5, 1e-3][seed % 3]
    s[0] = 0.0
    s[1, ::2] = -0.0
    excl = rng.random((n, n_items)) < [0.0, 0.3, 0.9][seed % 3]
    excl[2, :-3] = True  # three items left
    for k in (1, 2, 5, 20, 74):
        got = top_k_items(s, k, excl)
        for u in range(n):
            allowed = np.flatnonzero(~excl[u])
            ref = sorted(allowed, key=lambda i: (-float(s[u, i]), i))[:k]  # descending score, lower id first
            assert got[u, : len(ref)].tolist() == ref, (k, u)
            assert (got[u, len(ref):] == -1).all()
        assert top_k_items(s, k).tolist() == [sorted(range(n_items), key=lambda i: (-float(s[u, i]), i))[:k]
                                              for u in range(n)]


@pytest.mark.parametrize("name, options", [("ncf", {}), ("ncf", {"hidden": [5]}), ("hetencf", {"sizes": [2, 4, 8]}),
                                           ("hetelightgcn", {"sizes": [2, 4, 8]})])
def test_grid_scoring_equals_scoring_every_pair(name, options):
    """NCF/HeteNCF score the catalogue on a user x item grid (the first layer split into a user and
    an item part); the logits equal ``forward`` on every concatenated (user, item) row, with random
    weights far from the initial ones and, for HeteNCF, users of every size. HeteLightGCN, whose
    forward propagates over the user's graph, must not take that path (it has no grid scorer)."""
    ds = make_synthetic(n_users=30, n_items=23, events_per_user=6, user_id=True, seed=3)
    model = build_model(name, ds.schema, seed=1, **options)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.7) if p.is_floating_point() else None
    if name != "ncf":
        model.assign_sizes(np.arange(ds.n_users), np.arange(ds.n_users) % 3)
    if name == "hetelightgcn":
        model.bind_dataset(ds)
    enc = FeatureEncoder(ds)
    users = np.array([0, 1, 2, 5, 10, 11, 29])
    got = score_all_items(model, ds, enc, users, chunk=3)
    with torch.no_grad():
        model.eval()
        want = model(enc.encode_pairs(np.repeat(users, ds.n_items), np.tile(np.arange(ds.n_items), users.size)))
    np.testing.assert_allclose(got, want.reshape(users.size, ds.n_items).numpy(), rtol=1e-5, atol=1e-5)
    assert np.ptp(got) > 0.1  # the comparison is not between constants
    assert callable(getattr(model, "score_grid", None)) == (name != "hetelightgcn")
