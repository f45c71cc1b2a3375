"""Step 3 of a round reaches training: what a compressing optimisation does to an upload is what
the server aggregates, and so what the model and its per-tier metrics become.

Cost tests (bits, upload MB) pass even if ``encode`` is never called; these compare the update
the server receives, and the trained model, with the same round under ``none``.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from rf2.aggregation import RowUpdate
from rf2.config import RunConfig
from rf2.data import load_dataset
from rf2.simulation import Simulation
from tier_mapping import map_tiers

SMALL = dict(dataset="synthetic", dataset_options={"n_users": 200, "n_items": 80, "events_per_user": 15, "seed": 4},
             clients_per_round=10, mapping="random:shuffle", seed=3)


@pytest.fixture(scope="module")
def data():
    ds = load_dataset("synthetic", **SMALL["dataset_options"])
    return ds, map_tiers(ds, SMALL["mapping"], 3, seed=SMALL["seed"])


def received(data, optimization: str, chosen: np.ndarray) -> dict[str, torch.Tensor]:
    """The global update the server steps with in round 0 when ``chosen`` train, as dense tensors."""
    ds, tiers = data
    sim = Simulation(RunConfig(**SMALL, optimization=optimization), dataset=ds, tiers=tiers, progress=False)
    seen = {}
    step = sim.server.step

    def spy(params, update):
        for k, u in update.items():
            if isinstance(u, RowUpdate):
                full = torch.zeros_like(params[k])
                full[u.rows] = u.values
                u = full
            seen[k] = u.detach().clone()
        step(params, update)

    sim.server.step = spy
    sim.train_round(0, 0, chosen)
    return seen


def clients_of_tier(data, tier: int, n: int) -> np.ndarray:
    ds, tiers = data
    return np.flatnonzero((tiers.tier == tier) & (ds.train_counts > 0))[:n]


def test_pruning_a_single_clients_upload_drops_entries_of_what_the_server_receives(data):
    one = clients_of_tier(data, 0, 1)
    plain = received(data, "none", one)
    pruned = received(data, "prune:frac:0.5:0.5:0.5", one)
    assert plain.keys() == pruned.keys()
    nonzero = kept = 0
    for k in plain:
        moved = plain[k] != 0
        nonzero += int(moved.sum())
        kept += int((pruned[k] != 0).sum())
        # a kept entry arrives unchanged (no rescaling by default, up to float rounding of the
        # weighted average); nothing appears where none was
        same = torch.isclose(pruned[k], plain[k], rtol=1e-5, atol=0)
        assert (same | (pruned[k] == 0)).all(), k
    assert nonzero > 200
    # each entry survives with probability 1/2: far from 0 (encode skipped) and from 1 (everything kept)
    assert 0.35 < kept / nonzero < 0.65


def test_only_the_tiers_the_setting_touches_are_changed(data):
    # prune only the low tier: a round of high-tier clients is exactly the uncompressed round
    high, low = clients_of_tier(data, 2, 4), clients_of_tier(data, 0, 4)
    spec = "prune:frac:0.75:0:0"
    a, b = received(data, "none", high), received(data, spec, high)
    assert all(torch.allclose(a[k], b[k], rtol=1e-5, atol=1e-9) for k in a)
    a, b = received(data, "none", low), received(data, spec, low)
    # about 3/4 of every low-tier client's entries dropped: far more than rounding apart
    assert all((a[k] - b[k]).abs().max() > 1e-4 for k in a)


@pytest.mark.parametrize("optimization", ["quant:bits:2:2:2", "quants:bits:1:1:1"])
def test_quantised_uploads_reach_the_server(data, optimization):
    clients = clients_of_tier(data, 1, 5)
    plain = received(data, "none", clients)
    quant = received(data, optimization, clients)
    # few levels per client: the received average differs from the exact one on most of the
    # entries the round moved (if encode were skipped it would equal it up to float rounding)
    moved = differ = 0
    for k in plain:
        m = plain[k] != 0
        moved += int(m.sum())
        differ += int(((quant[k] - plain[k]).abs() > 1e-4 * plain[k].abs().max())[m].sum())
    assert moved > 500
    assert differ / moved > 0.5

def test_compression_changes_the_trained_model_and_its_per_tier_metrics(data):
    ds, tiers = data

    def run(opt):
        sim = Simulation(RunConfig(**SMALL, optimization=opt, max_rounds=6), dataset=ds, tiers=tiers, progress=False)
        res = sim.run()
        return sim, res

    base_sim, base = run("none")
    sims = {opt: run(opt) for opt in ("quants:bits:1:1:1", "prune:frac:0.9:0.9:0.9")}
    for opt, (sim, res) in sims.items():
        assert any(not torch.equal(sim.params[k], base_sim.params[k]) for k in sim.params), opt
        a, b = res.metrics.by_tier["auc"], base.metrics.by_tier["auc"]
        assert (a - b).abs().min() > 0, opt  # every tier's AUC moved
        assert res.rounds["train_loss"].tolist()[1:] != base.rounds["train_loss"].tolist()[1:], opt
    # an identity setting (32 bits, no pruning) reproduces the uncompressed run (up to the float
    # rounding of averaging the updates rather than summing them in the engine)
    for opt in ("quants:bits:32:32:32", "prune:frac:0:0:0"):
        sim, res = run(opt)
        assert all(torch.allclose(sim.params[k], base_sim.params[k], rtol=1e-4, atol=1e-6) for k in sim.params), opt
        assert np.allclose(res.metrics.by_tier["auc"], base.metrics.by_tier["auc"], atol=1e-4), opt
