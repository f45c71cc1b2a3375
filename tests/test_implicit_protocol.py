"""HeteFedRec's evaluation protocol on implicit data (issue 14, "Protocol"; Yuan et al. 2024, §V-A, §V-B):
``ml-1m-implicit`` with positives only and negatives re-drawn every round (``negatives = 0`` +
``train_negatives``), and the full ranking over all items except the user's training positives
(``ranking_exclude = "auto"``) without changing the run ids of existing results directories."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from rf2.config import RunConfig
from rf2.data import load_dataset
from rf2.simulation import Simulation
from test_data_ml1m import implicit_dir_or_none, write_interactions, write_ml1m

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture(scope="module")
def implicit_copy(tmp_path_factory) -> Path:
    """A small ml-1m-implicit copy: 40 users with 10-30 distinct movies each out of 80."""
    rng = np.random.default_rng(0)
    users = [(u, "F" if u % 2 else "M", 25, 4, "12345") for u in range(1, 41)]
    movies = [(m, f"Movie {m} (1999)", "Drama|Comedy" if m % 3 else "Horror") for m in range(1, 81)]
    pairs = [(u, int(m)) for u, *_ in users for m in rng.choice(np.arange(1, 81), rng.integers(10, 31), replace=False)]
    d = write_ml1m(tmp_path_factory.mktemp("copy") / "ml-1m-implicit", users=users, movies=movies, ratings_file=False)
    write_interactions(d, pairs)
    return d


def positives(ds) -> set[tuple[int, int, bool]]:
    ev = ds.events[ds.events["label"] == 1]
    return set(zip(ev["user"].tolist(), ev["item"].tolist(), ev["is_test"].tolist()))


# -- 1. positives only, negatives re-drawn every round ---------------------------------------------------------
def test_positives_only_copy_keeps_the_80_20_split(implicit_copy):
    baked = load_dataset("ml-1m-implicit", path=implicit_copy, verify=False)
    bare = load_dataset("ml-1m-implicit", path=implicit_copy, verify=False, negatives=0)
    assert (bare.label == 1).all() and bare.n_events == int((baked.label == 1).sum())
    assert positives(bare) == positives(baked)  # the same per-user split, only the baked negatives are gone
    assert "positives only" in bare.description and "4 sampled negatives" in baked.description
    with pytest.raises(ValueError, match="negatives must be an integer >= 0"):
        load_dataset("ml-1m-implicit", path=implicit_copy, verify=False, negatives=1.5)


def test_positives_only_run_draws_fresh_negatives_and_ranks_test_positives(implicit_copy):
    ds = load_dataset("ml-1m-implicit", path=implicit_copy, verify=False, negatives=0)
    cfg = RunConfig(dataset="ml-1m-implicit", dataset_options={"negatives": 0}, model="ncf",
                    model_options={"embedding_dim": 8}, clients_per_round=8, max_rounds=3, train_negatives=4,
                    ranking_k=5, local_epochs=2, local_batch_size=16, client_optimizer="adam", client_lr=0.01)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "positives only" warning with train_negatives
        sim = Simulation(cfg, dataset=ds, progress=False)
        res = sim.run()
    for r, (_, chosen) in enumerate(sim.schedule()):
        assert res.rounds["samples"][r] == 5 * int(ds.train_counts[chosen].sum())  # 1 positive + 4 drawn negatives
    f = res.metrics.frame.set_index(["tier", "metric"])
    test_users = np.unique(ds.user[ds.test_index])  # every user has test positives (floor(0.2 n) >= 1)
    assert f.loc[("overall", "ndcg@5"), "n_users"] == test_users.size
    assert f.loc[("overall", "ndcg@5"), "n_events"] == ds.test_index.size  # every test event is relevant
    assert 0 <= f.loc[("overall", "ndcg@5"), "value"] <= 1
    assert np.isnan(f.loc[("overall", "auc"), "value"])  # a positives-only test set has no AUC
    with pytest.warns(UserWarning, match="set train_negatives"):
        Simulation(cfg.replace(train_negatives=0), dataset=ds, progress=False)
    baked = load_dataset("ml-1m-implicit", path=implicit_copy, verify=False)
    with pytest.raises(ValueError, match="has its own training negatives.*negatives = 0"):
        Simulation(cfg.replace(dataset_options={}), dataset=baked, progress=False)


def test_real_positives_only_copy_keeps_the_split():
    if implicit_dir_or_none() is None:
        pytest.skip("needs the ml-1m-implicit copy: set RF2_DATA_DIR (CI: ../shared/data)")
    bare = load_dataset("ml-1m-implicit", negatives=0)
    assert bare.n_events == 1_000_209 and (bare.label == 1).all()
    baked = load_dataset("ml-1m-implicit")
    assert positives(bare) == positives(baked)


# -- 2. ranking over all items but the training positives on implicit data -----------------------------------
#: run ids computed by rf2 before ranking_exclude = "auto" existed (commit 771c5c1)
IDS_BEFORE_AUTO = {
    "ml-100k": ({}, "random__none__seed0__e0e95d923e"),
    "ml-100k ranking": ({"ranking_k": 20}, "random__none__seed0__b3737946d9"),
    "ml-100k train_clicks": ({"ranking_k": 20, "ranking_exclude": "train_clicks"}, "random__none__seed0__f62a925c5a"),
    "ml-100k none": ({"ranking_k": 20, "ranking_exclude": "none"}, "random__none__seed0__413e064d3b"),
    "loo": ({"dataset": "synthetic", "dataset_options": {"split": "leave-one-out", "user_id": True}, "model": "ncf",
             "ranking_k": 10}, "random__none__seed0__ef84ae6998"),
    "ml-1m-implicit without ranking": ({"dataset": "ml-1m-implicit", "model": "ncf"}, "random__none__seed0__83d0f73b45"),
}
ML1MI_TRAIN = "random__none__seed0__386070c665"  # ml-1m-implicit, ranking_k = 20, exclude train (the old default)
ML1MI_TRAIN_CLICKS = "random__none__seed0__5f7c73e774"  # ... spelled train_clicks


def test_explicit_runs_keep_their_ids():
    from rf2.sweep import run_id

    for name, (settings, rid) in IDS_BEFORE_AUTO.items():
        cfg = RunConfig(**settings)
        assert run_id(cfg) == rid, name
        if "ranking_exclude" not in settings:
            assert cfg.ranking_exclude == "auto" and cfg.ranking_exclusion == "train", name
        assert run_id(RunConfig.from_dict(cfg.to_dict())) == rid, name  # what a worker gets back


@pytest.mark.parametrize("directory", ["paper_table1_ml100k", "tie_rule_ml100k", "synthetic_decisive"])
def test_committed_results_directories_have_nothing_to_rerun(directory):
    """The committed sweeps (ml-100k and synthetic, explicit) find every run of their sweep.toml
    finished under the new default: ``rf2 sweep`` again would rerun nothing."""
    from rf2.store import ResultsStore
    from rf2.sweep import SweepSpec, run_id

    d = BENCHMARKS / directory
    spec = SweepSpec.from_toml(d / "sweep.toml")
    done = ResultsStore(d).finished_ids()
    ids = [run_id(c) for c in spec.configs()]
    assert ids and set(ids) <= set(done)


def test_auto_is_train_clicks_on_ml1m_implicit_only():
    from rf2.sweep import SweepSpec, run_id

    cfg = RunConfig(dataset="ml-1m-implicit", model="ncf", ranking_k=20)
    assert cfg.ranking_exclude == "auto" and cfg.ranking_exclusion == "train_clicks"
    assert cfg.to_dict()["ranking_exclude"] == "train_clicks"
    assert run_id(cfg) == run_id(cfg.replace(ranking_exclude="train_clicks")) == ML1MI_TRAIN_CLICKS
    assert run_id(cfg.replace(ranking_exclude="train")) == ML1MI_TRAIN  # old runs of the old default keep their id
    assert cfg.replace(dataset="ml-100k", model="dlrm").ranking_exclusion == "train"  # auto follows the dataset
    # a results directory made with the old default spelled out accepts a sweep under auto
    one = dict(mappings=("random",), optimizations=("none",), noise_floor=False)
    assert SweepSpec(base={"ranking_k": 20, "ranking_exclude": "train"}, **one).run_settings() == \
        SweepSpec(base={"ranking_k": 20}, **one).run_settings()
    assert SweepSpec(base={**dict(dataset="ml-1m-implicit", model="ncf", ranking_k=20)}, **one).run_settings() != \
        SweepSpec(base={**dict(dataset="ml-1m-implicit", model="ncf", ranking_k=20, ranking_exclude="train")},
                  **one).run_settings()
    with pytest.raises(ValueError, match=r"ranking_exclude must be one of \('auto', 'train', 'train_clicks', 'none'\)"):
        RunConfig(ranking_exclude="clicks")


def test_ml1m_implicit_ranking_excludes_only_training_positives(implicit_copy):
    """With the baked 1:4 negatives, a run's NDCG/Recall rank every item except the user's
    training positives: its sampled training negatives stay candidates."""
    from rf2.evaluation.ranking import ranking_by_user, relevant_and_excluded

    ds = load_dataset("ml-1m-implicit", path=implicit_copy, verify=False)
    (_, _), (eptr, eitems) = relevant_and_excluded(ds, "train_clicks")
    tr = ds.train_index
    for u in range(ds.n_users):
        mine = tr[ds.user[tr] == u]
        assert set(eitems[eptr[u]:eptr[u + 1]].tolist()) == set(ds.item[mine[ds.label[mine] == 1]].tolist())
        negatives = set(ds.item[mine[ds.label[mine] == 0]].tolist())
        assert negatives and not negatives & set(eitems[eptr[u]:eptr[u + 1]].tolist())  # negatives stay candidates
    cfg = RunConfig(dataset="ml-1m-implicit", model="ncf", model_options={"embedding_dim": 8}, clients_per_round=10,
                    max_rounds=2, ranking_k=5, client_optimizer="adam", client_lr=0.01)
    sim = Simulation(cfg, dataset=ds, progress=False)
    res = sim.run()
    want = {e: ranking_by_user(sim.model, ds, sim.encoder, k=5, exclude=e) for e in ("train_clicks", "train")}
    f = res.metrics.frame.set_index(["tier", "metric"])
    assert f.loc[("overall", "ndcg@5"), "value"] == pytest.approx(want["train_clicks"]["ndcg@5"].mean(), abs=1e-12)
    assert abs(want["train_clicks"]["ndcg@5"].mean() - want["train"]["ndcg@5"].mean()) > 1e-4  # a test that can fail
    assert (res.rows()["ranking_exclude"] == "train_clicks").all()  # the rows name what was done
