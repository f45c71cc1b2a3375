"""Leave-one-out split with sampled evaluation candidates (issue 13 §3): split by hand, evaluation
negatives, HR/NDCG by hand (ties against the positive), per-tier frame, and an end-to-end run."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

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


# -- sampled HR@K / NDCG@K ---------------------------------------------------------------------------------
from rf2.evaluation.sampled import (  # noqa: E402
    hit_and_ndcg, sampled_by_user, sampled_frame, sampled_from_scores, sampled_rank,
)


def test_rank_ties_count_against_the_positive():
    pos = np.array([0.5, 0.5, 2.0, -1.0])
    neg = np.array([[0.1, 0.2, 0.3],    # all below: rank 1
                    [0.5, 0.5, 0.9],    # two ties + one above: rank 4 (ties against), 2 (ties for)
                    [2.0, 2.0, 2.0],    # all tied: rank 4 (against), 1 (for)
                    [0.0, 1.0, -2.0]])  # two above: rank 3
    assert sampled_rank(pos, neg).tolist() == [1, 4, 4, 3]
    assert sampled_rank(pos, neg, ties="for").tolist() == [1, 2, 1, 3]
    with pytest.raises(ValueError, match="NaN or infinite"):
        sampled_rank([np.nan], [[0.0]])
    with pytest.raises(ValueError, match="ties must be one of"):
        sampled_rank(pos, neg, ties="average")


def test_hr_ndcg_by_hand():
    hr, ndcg = hit_and_ndcg(np.array([1, 2, 3, 4]), k=3)
    assert hr.tolist() == [1, 1, 1, 0]
    assert np.allclose(ndcg, [1.0, 1 / np.log2(3), 0.5, 0.0])
    # scores: column 0 is the positive
    s = np.array([[0.9, 0.1, 0.2, 0.3],   # rank 1
                  [0.2, 0.2, 0.1, 0.0],   # tie with one negative: rank 2
                  [0.0, 0.1, 0.2, 0.3]])  # rank 4
    f = sampled_from_scores([4, 7, 9], s, k=[1, 2])
    assert f.index.tolist() == [4, 7, 9] and (f["n_relevant"] == 1).all()
    assert f["loo_hr@1"].tolist() == [1, 0, 0] and f["loo_hr@2"].tolist() == [1, 1, 0]
    assert np.allclose(f["loo_ndcg@2"], [1.0, 1 / np.log2(3), 0.0])
    assert np.allclose(f["loo_ndcg@1"], [1.0, 0.0, 0.0])


def test_per_tier_frame_shape_and_means():
    per_user = pd.DataFrame({"n_relevant": [1, 1, 1, 1], "loo_hr@10": [1.0, 0.0, 1.0, 1.0],
                             "loo_ndcg@10": [1.0, 0.0, 0.5, 0.25]}, index=pd.Index([0, 1, 2, 3], name="user"))
    tier_of_user = np.array([0, 0, 1, 2, 2])  # user 4 (tier 2) not evaluated
    f = sampled_frame(per_user, tier_of_user, ("low", "mid", "high"))
    assert list(f.columns) == ["tier", "metric", "value", "n_events", "n_users"]
    assert len(f) == 4 * 2 and f["tier"].unique().tolist() == ["low", "mid", "high", "overall"]
    v = f.set_index(["tier", "metric"])["value"]
    assert v["low", "loo_hr@10"] == 0.5 and v["mid", "loo_ndcg@10"] == 0.5 and v["high", "loo_ndcg@10"] == 0.25
    assert v["overall", "loo_ndcg@10"] == pytest.approx(1.75 / 4)
    assert f.set_index(["tier", "metric"])["n_users"]["high", "loo_hr@10"] == 1
    from rf2.evaluation import TierMetrics, mdac, relative_change

    base = TierMetrics(f, ("low", "mid", "high"))
    better = f.copy()
    better.loc[(better["tier"] == "low") & (better["metric"] == "loo_hr@10"), "value"] = 0.75
    rc = relative_change(TierMetrics(better, base.tier_names), base, metric="loo_hr@10")
    assert rc["low"] == pytest.approx(0.5) and rc["mid"] == 0 and rc["high"] == 0
    assert mdac(TierMetrics(better, base.tier_names), base, metric="loo_hr@10") == pytest.approx(0.5)


class ItemIdModel(torch.nn.Module):
    """Scores a pair by its item_id feature: a known ranking for the oracle test."""

    def __init__(self, col: int):
        super().__init__()
        self.col = col

    def forward(self, x):
        return x[:, self.col].float()


def test_sampled_by_user_against_item_id_oracle():
    ds = leave_one_out(tiny_log(), min_interactions=3, seed=2)
    model = ItemIdModel(ds.schema.columns["item_id"][0])
    f = sampled_by_user(model, ds, k=[1, 10])
    for split, frame in (("test", f), ("valid", sampled_by_user(model, ds, k=[1, 10], split="valid"))):
        idx = ds.test_index if split == "test" else ds.valid_index
        for u, pos in zip(ds.user[idx], ds.item[idx]):
            rank = 1 + int((ds.eval_negatives[u] >= pos).sum())  # item_id = item + 1: same order
            assert frame.loc[u, "loo_hr@10"] == float(rank <= 10)
            assert frame.loc[u, "loo_ndcg@10"] == pytest.approx(1 / np.log2(1 + rank) if rank <= 10 else 0.0)


def test_sampled_needs_a_leave_one_out_dataset(synth):
    with pytest.raises(ValueError, match="no evaluation negatives"):
        sampled_by_user(ItemIdModel(0), synth)


# -- end to end ---------------------------------------------------------------------------------------------
LOO_DS = {"n_users": 120, "n_items": 250, "events_per_user": 25, "history_maxlen": 8, "split": "leave-one-out"}


def _run(**kw):
    from rf2.config import RunConfig
    from rf2.simulation import Simulation

    kw = {"max_rounds": 2, **kw}
    cfg = RunConfig(dataset="synthetic", dataset_options=LOO_DS, clients_per_round=20, **kw)
    with pytest.warns(UserWarning, match="no training negatives"):
        sim = Simulation(cfg, progress=False)
    return sim, sim.run()


def test_end_to_end_sampled_metrics_and_scores():
    from rf2.evaluation.scores import EvalScores
    from rf2.evaluation.uncertainty import resampler

    sim, res = _run(sampled_k=10, ranking_k=5)
    f = res.metrics.frame
    rows = f[f["metric"].isin(["loo_hr@10", "loo_ndcg@10"])]
    assert len(rows) == 2 * (3 + 1) and np.isfinite(rows["value"]).all()
    assert (rows["value"].between(0, 1)).all()
    n = sim.dataset.n_users
    assert rows.loc[rows["tier"] == "overall", "n_users"].tolist() == [n, n]
    # the run's tidy rows equal the per-user values re-averaged, and the scores carry them for intervals
    es = EvalScores.from_bytes(res.scores.to_bytes())
    assert {"loo_hr@10", "loo_ndcg@10", "ndcg@5", "recall@5"} <= set(es.metrics)
    assert es.ranking_user.size == n and np.isfinite(es.ranking["loo_hr@10"]).all()
    overall = rows.set_index(["tier", "metric"])["value"]
    assert es.ranking["loo_hr@10"].mean() == pytest.approx(overall["overall", "loo_hr@10"], rel=1e-6)
    r = resampler(es, "loo_ndcg@10")
    assert np.allclose(r.values()[-1], overall["overall", "loo_ndcg@10"], rtol=1e-6)
    counts = np.random.default_rng(0).multinomial(r.n_units, np.full(r.n_units, 1 / r.n_units), size=5)
    assert np.isfinite(r.values(counts)).all()


def test_sampled_k_needs_eval_negatives():
    from rf2.config import RunConfig
    from rf2.simulation import Simulation

    cfg = RunConfig(dataset="synthetic", dataset_options={"n_users": 40}, max_rounds=1, sampled_k=10)
    with pytest.raises(ValueError, match="sampled_k: dataset 'synthetic' has no evaluation negatives"):
        Simulation(cfg, progress=False)
    with pytest.raises(ValueError, match="sampled_k must be an integer >= 0"):
        RunConfig(sampled_k=-1)


def test_standalone_scores_candidates_with_each_clients_model():
    from rf2.config import RunConfig
    from rf2.evaluation.sampled import candidates, sampled_from_scores
    from rf2.simulation import Simulation

    cfg = RunConfig(dataset="synthetic", dataset_options=LOO_DS, optimization="standalone", clients_per_round=20,
                    sampled_k=10)
    with pytest.warns(UserWarning, match="no training negatives"):
        sim = Simulation(cfg, progress=False)
    res = sim.run()
    f = res.metrics.frame
    rows = f[f["metric"] == "loo_hr@10"]
    assert len(rows) == 4 and np.isfinite(rows["value"]).all()
    assert res.scores.ranking["loo_hr@10"].size == sim.dataset.n_users
    # the untrained global model gives other scores than the clients' own models
    users, items = candidates(sim.dataset)
    from rf2.evaluation.sampled import score_candidates

    theta0 = sampled_from_scores(users, score_candidates(sim.model, sim.dataset, sim.encoder, users, items), 10)
    assert not np.allclose(theta0["loo_ndcg@10"].to_numpy(), res.scores.ranking["loo_ndcg@10"])


# -- validation curve and model selection by validation ---------------------------------------------------
def test_validation_curve_every_n_rounds():
    sim, res = _run(sampled_k=10, valid_every=2, max_rounds=0)
    r = res.rounds
    n = len(r)
    has = r["valid_loo_hr@10"].notna().to_numpy()
    expected = [(i + 1) % 2 == 0 or i == n - 1 for i in range(n)]
    assert has.tolist() == expected and has.sum() >= 2
    assert r.loc[has, ["valid_loo_hr@10", "valid_loo_ndcg@10"]].apply(np.isfinite).all().all()
    assert (r.loc[has, "valid_loo_ndcg@10"] <= r.loc[has, "valid_loo_hr@10"]).all()
    assert "selected_round" not in set(res.metrics.frame["metric"])  # select_by = last


def test_select_by_valid_evaluates_the_best_validation_round():
    sim, res = _run(sampled_k=10, valid_every=1, select_by="valid", max_rounds=0, epochs=2)
    r = res.rounds
    f = res.metrics.frame.set_index(["tier", "metric"])["value"]
    chosen = int(f["overall", "selected_round"])
    hr = r["valid_loo_hr@10"].to_numpy()
    assert chosen == int(np.argmax(hr))  # the first round with the highest validation HR
    assert chosen < len(r) - 1  # (else this test could not tell selection from the last round)
    # the test metrics are those of a run stopped after the chosen round (same seeds, same rounds)
    _, short = _run(sampled_k=10, max_rounds=chosen + 1, epochs=2)
    g = short.metrics.frame.set_index(["tier", "metric"])["value"]
    for key in [("overall", "loo_hr@10"), ("overall", "loo_ndcg@10"), ("low", "loo_ndcg@10"), ("overall", "log_loss")]:
        assert f[key] == pytest.approx(g[key], rel=1e-5, abs=1e-9)


def test_validation_settings_checked():
    from rf2.config import RunConfig

    with pytest.raises(ValueError, match="valid_every needs sampled_k"):
        RunConfig(valid_every=2)
    with pytest.raises(ValueError, match="select_by = 'valid' needs valid_every"):
        RunConfig(sampled_k=10, select_by="valid")
    with pytest.raises(ValueError, match="select_by must be one of"):
        RunConfig(select_by="best_test_hr")


# -- MovieLens-1M loaders on small files in GroupLens' format ------------------------------------------------
def _write_ml1m(folder, implicit: bool):
    from test_data_ml1m import write_interactions, write_ml1m

    users = [(1, "F", 1, 10, "48067"), (2, "M", 56, 16, "70072"), (3, "M", 25, 15, "55117"), (4, "F", 18, 4, "02139")]
    movies = [(m, f"Movie {m} (2000)", "Drama") for m in range(1, 201)]
    # user 1: movies 1..40 in the file in *reverse* time order; movies 39 and 40 share the newest second
    r1 = [(1, m, 3, min(m, 39) * 10) for m in range(40, 0, -1)]
    r2 = [(2, m, 5, m) for m in range(41, 101)]  # users 2 and 4: so that every user has >= 99 unrated movies
    r3 = [(3, m, 4, m) for m in (1, 2, 3)]  # 3 ratings: dropped at min_interactions 10
    r4 = [(4, m, 1, m) for m in range(101, 201)]
    ratings = r1 + r2 + r3 + r4
    d = write_ml1m(folder, ratings=ratings, users=users, movies=movies, ratings_file=not implicit)
    if implicit:
        write_interactions(d, [(u, m) for u, m, _, _ in ratings])
    return d


def test_ml1m_leave_one_out_uses_time_then_item(tmp_path):
    ds = load_dataset("ml-1m", path=_write_ml1m(tmp_path / "ml-1m", False), verify=False, split="leave-one-out")
    assert ds.n_users == 3 and "1 of 4 users with < 10 interactions dropped" in ds.description
    movie = ds.items.index.to_numpy() + 1  # ml-1m: item i is the (i+1)-th movie id of movies.dat, here = id
    u0 = ds.user == 0
    assert movie[ds.item[ds.is_test & u0]].tolist() == [40]  # tie at t=390 with 39: higher item = newer
    assert movie[ds.item[ds.is_valid & u0]].tolist() == [39]
    assert ds.eval_negatives.shape == (3, 99) and not set(movie[ds.eval_negatives[0]]) & set(range(1, 41))


def test_ml1m_implicit_leave_one_out_uses_file_order(tmp_path):
    ds = load_dataset("ml-1m-implicit", path=_write_ml1m(tmp_path / "ml-1m-implicit", True), verify=False,
                      split="leave-one-out")
    assert "file order" in ds.description and ds.n_users == 3 and (ds.label == 1).all()
    movie = ds.items["movie_id"].to_numpy()  # index + 1 = rank of the movie among rated movies = id here
    u0 = ds.user == 0
    # user 1's pairs come in the file as 40, 39, ..., 1: the last in the file (movie 1) is the test item
    assert movie[ds.item[ds.is_test & u0]].tolist() == [1]
    assert movie[ds.item[ds.is_valid & u0]].tolist() == [2]
    assert sorted(movie[ds.item[ds.train_index[ds.user[ds.train_index] == 0]]].tolist()) == list(range(3, 41))
    with pytest.raises(ValueError, match="split must be one of \\('random', 'leave-one-out'\\)"):
        load_dataset("ml-1m-implicit", path=tmp_path / "ml-1m-implicit", verify=False, split="temporal")


def test_tier_report_does_not_count_validation_as_training():
    from tier_mapping import map_tiers
    from tier_mapping.report import report_for

    ds = load_dataset("synthetic", **LOO_DS)
    tiers = map_tiers(ds, "random", 3, seed=0)
    volume = report_for(ds, tiers).volume
    assert ds.train_index.size == ds.n_events - 2 * ds.n_users  # one test and one validation event per user
    assert volume["train_events"].tolist() == [int(ds.train_counts[tiers.tier == t].sum()) for t in range(3)]
