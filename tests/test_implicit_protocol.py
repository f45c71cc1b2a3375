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
