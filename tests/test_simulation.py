"""End-to-end runs: learning happens, same seed -> same result, bad settings -> clear errors."""
from __future__ import annotations

import numpy as np
import pytest

from rf2.config import RunConfig
from rf2.simulation import Simulation

SMALL = dict(dataset="synthetic", dataset_options={"n_users": 400, "n_items": 150, "events_per_user": 25, "seed": 1},
             clients_per_round=20)


def run(**kw):
    return Simulation(RunConfig(**{**SMALL, **kw}), progress=False).run()


def test_training_improves_auc_over_the_initial_model():
    cfg = RunConfig(**SMALL, epochs=3)
    sim = Simulation(cfg, progress=False)
    before = sim.evaluate().overall["auc"]
    after = sim.run().metrics.overall["auc"]
    assert after > before + 0.05
    assert after > 0.62


def test_same_seed_same_results_other_seed_differs():
    a = run(seed=5, mapping="dirichlet:0.1")
    b = run(seed=5, mapping="dirichlet:0.1")
    c = run(seed=6, mapping="dirichlet:0.1")
    assert a.metrics.frame.equals(b.metrics.frame)
    assert a.rounds["train_loss"].tolist() == b.rounds["train_loss"].tolist()
    assert not np.allclose(a.rounds["train_loss"], c.rounds["train_loss"])


def test_engines_give_the_same_run():
    a = run(engine="reference", max_rounds=6, local_steps=2)
    b = run(engine="batched", max_rounds=6, local_steps=2)
    assert np.allclose(a.metrics.by_tier["auc"], b.metrics.by_tier["auc"], atol=1e-5)
    assert np.allclose(a.rounds["train_loss"], b.rounds["train_loss"], atol=1e-6)


def test_one_epoch_selects_every_client_once():
    res = run()
    assert res.rounds["participants"].sum() == 400
    assert res.rounds["round"].tolist() == list(range(20))


def test_result_rows_carry_the_config():
    res = run(max_rounds=2)
    rows = res.rows()
    assert {"tier", "metric", "value", "mapping", "optimization", "seed", "clients_per_round"} <= set(rows.columns)
    assert (rows["clients_per_round"] == 20).all()
    assert set(rows["tier"]) == {"low", "mid", "high", "overall"}


def test_population_smaller_than_k():
    with pytest.raises(ValueError, match="clients_per_round=1000 .* only 400 clients can train"):
        run(clients_per_round=1000)


@pytest.mark.parametrize("bad,match", [
    ({"dataset": "nope"}, "unknown dataset 'nope'"),
    ({"mapping": "dirichlet:0"}, "alpha must be > 0"),
    ({"mapping": "dirichlet:-3"}, "alpha must be > 0"),
    ({"clients_per_round": 0}, "clients_per_round must be an integer >= 1"),
    ({"server_lr": -1.0}, "server_lr must be a positive"),
    ({"engine": "gpu"}, "engine must be one of"),
    ({"optimization": "magic"}, "unknown optimization 'magic'"),
    ({"model": "transformer"}, "unknown model"),
    ({"server_optimizer": "lamb"}, "server_optimizer must be one of"),
    ({"dataset_options": {"n_userz": 3}}, "no option"),
])
def test_bad_config_is_a_clear_error(bad, match):
    with pytest.raises(ValueError, match=match):
        RunConfig(**{**SMALL, **bad})


def test_unknown_setting_in_config_dict():
    with pytest.raises(ValueError, match="unknown setting.*clients_per_rnd"):
        RunConfig.from_dict({"clients_per_rnd": 3})


@pytest.mark.parametrize("model", ["dlrm", "din"])
def test_eval_batch_size_changes_neither_the_scores_nor_the_run_id(model):
    """``eval_batch_size`` is a speed/memory setting: scoring the test events 7 at a time (batches
    that split users and histories) gives the scores of one pass over all of them, and the run id
    does not change (it was left out of the identity when its default went from 65,536 to 8,192)."""
    from rf2.sweep import run_id

    cfg = RunConfig(**SMALL, model=model, max_rounds=3)
    sim = Simulation(cfg, progress=False)
    for e, chosen in list(sim.schedule())[:3]:
        sim.train_round(0, e, chosen)
    idx = sim.dataset.test_index
    assert idx.size > 100
    sim.model.eval()
    one_pass = sim.model(sim.encoder.encode(idx)).detach().numpy()
    for bs in (7, idx.size + 1):
        sim.config = cfg.replace(eval_batch_size=bs)
        np.testing.assert_allclose(sim.predict(idx), one_pass, rtol=0, atol=1e-6)
    assert run_id(cfg.replace(eval_batch_size=7)) == run_id(cfg) == run_id(cfg.replace(eval_batch_size=65536))
    assert run_id(cfg.replace(seed=1)) != run_id(cfg)  # the id still depends on what does change a score
