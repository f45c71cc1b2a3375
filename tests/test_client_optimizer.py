"""The client optimiser (rf2.clients.optim): Adam against torch.optim.Adam, every engine path
against the per-client reference loop, and the summed shortcut refused for non-linear steps."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.func import functional_call

from rf2.clients.batched import BatchedEngine
from rf2.clients.optim import ClientOptimizer
from rf2.clients.reference import ReferenceEngine
from rf2.config import RunConfig
from rf2.models import build_model
from rf2.simulation import Simulation

from test_engine_equivalence import assert_same_updates, round_of


def test_functional_adam_equals_torch_adam_on_a_client(synth):
    """Oracle: one client's local training with torch.optim.Adam (dense tables, plain loop)."""
    batch = round_of(synth, 3, seed=7)
    model = build_model("dlrm", synth.schema, seed=4)
    params = {k: p.detach().clone() for k, p in model.named_parameters()}
    steps, lr = 4, 0.01
    ours = ReferenceEngine().client_updates(model, params, batch, [None] * 3, steps, lr, optimizer="adam")
    for c in range(batch.n_clients):
        X, y = batch.client(c)
        leaves = {k: v.clone().requires_grad_(True) for k, v in params.items()}
        torch_opt = torch.optim.Adam(list(leaves.values()), lr=lr)
        for _ in range(steps):
            torch_opt.zero_grad()
            F.binary_cross_entropy_with_logits(functional_call(model, leaves, (X,)), y).backward()
            torch_opt.step()
        want = {k: (leaves[k] - params[k]).detach() for k in params}
        got = ours.client_dense(c)
        for k in params:
            assert torch.allclose(got[k], want[k], atol=1e-6, rtol=1e-4), (c, k)
        assert any(float(v.abs().max()) > 0.5 * lr for v in got.values())


# Adam's step g / (|g| + ε) turns float noise on gradients near ε into steps of order lr, so
# engines that sum in different orders are compared with a larger ε (same code paths).
SMOOTH_ADAM = ClientOptimizer("adam", 0.01, eps=1e-4)


@pytest.mark.parametrize("local_steps", [1, 3])
@pytest.mark.parametrize("dataset", ["synth", "ml100k"])
def test_batched_adam_equals_reference(request, dataset, local_steps):
    """flat (one step) and vmap (several steps, and forced) paths == the loop."""
    ds = request.getfixturevalue(dataset)
    batch = round_of(ds, 20, seed=2)
    model = build_model("dlrm", ds.schema, seed=2)
    params = {k: p.detach().clone() for k, p in model.named_parameters()}
    ctx = [None] * batch.n_clients
    ref = ReferenceEngine().client_updates(model, params, batch, ctx, local_steps, 0.01, optimizer=SMOOTH_ADAM)
    for engine in (BatchedEngine(), BatchedEngine(flat=False)):
        fast = engine.client_updates(model, params, batch, ctx, local_steps, 0.01, optimizer=SMOOTH_ADAM)
        assert_same_updates(ref, fast)
    sgd = ReferenceEngine().client_updates(model, params, batch, ctx, local_steps, 0.01)
    k = "top.linears.0.weight"
    assert not torch.allclose(ref.dense[k], sgd.dense[k], atol=1e-6)  # the option did something


def test_adam_with_masks_keeps_masked_entries_still(synth):
    batch = round_of(synth, 8, seed=3)
    model = build_model("dlrm", synth.schema, seed=2)
    params = {k: p.detach().clone() for k, p in model.named_parameters()}
    name = "top.linears.0.weight"
    masks = {name: torch.rand((8, *params[name].shape), generator=torch.Generator().manual_seed(0)) > 0.5}
    ref = ReferenceEngine().client_updates(model, params, batch, [None] * 8, 2, 0.01, masks, optimizer=SMOOTH_ADAM)
    fast = BatchedEngine().client_updates(model, params, batch, [None] * 8, 2, 0.01, masks, optimizer=SMOOTH_ADAM)
    assert_same_updates(ref, fast)
    assert (ref.dense[name][~masks[name]] == 0).all()
    assert (ref.dense[name][masks[name]] != 0).float().mean() > 0.5


def test_summed_shortcut_is_not_taken_for_adam(synth, monkeypatch):
    """Adam's step is not linear in the gradient: even with summed=True every client's update is
    computed, and the simulation's aggregate equals the reference engine's."""
    batch = round_of(synth, 6)
    model = build_model("dlrm", synth.schema, seed=1)
    params = {k: p.detach().clone() for k, p in model.named_parameters()}
    u = BatchedEngine().client_updates(model, params, batch, [None] * 6, 1, 0.01, summed=True, optimizer="adam")
    assert u.summed is None and u.dense
    base = dict(dataset="synthetic", dataset_options={"n_users": 120, "n_items": 80}, clients_per_round=10,
                client_optimizer="adam", client_lr=0.01, max_rounds=3)
    a = Simulation(RunConfig(**base), progress=False).run()
    b = Simulation(RunConfig(**base, engine="reference"), progress=False).run()
    auc = lambda r: r.metrics.frame.query("metric == 'auc'").sort_values("tier")["value"].to_numpy()
    np.testing.assert_allclose(auc(a), auc(b), atol=1e-5)
    c = Simulation(RunConfig(**{**base, "client_optimizer": "sgd"}), progress=False).run()
    assert not np.allclose(auc(a), auc(c), atol=1e-5)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6, allow_subnormal=False), min_size=1, max_size=20),
       st.floats(1e-5, 1.0), st.integers(1, 5))
def test_adam_steps_are_bounded_and_zero_gradients_stay(values, lr, steps):
    """Property: with a constant gradient, Adam's increment is at most lr per step in every entry
    (bias-corrected m̂ = v̂^½ sign g), about lr·sign(g) for gradients far above ε, and 0 where g = 0."""
    g = torch.tensor(values, dtype=torch.float64)
    opt = ClientOptimizer("adam", lr)
    state = opt.init({"w": g})
    for _ in range(steps):
        inc, state = opt.increments({"w": g}, state)
        inc = inc["w"]
        assert (inc.abs() <= lr * (1 + 1e-9)).all()
        assert (inc[g == 0] == 0).all()
        big = g.abs() > 1e-3
        assert torch.allclose(inc[big], -lr * torch.sign(g[big]), rtol=1e-4)


def test_config_rejects_an_unknown_client_optimizer():
    with pytest.raises(ValueError, match=r"client_optimizer must be one of \('sgd', 'adam'\), got 'adamw'"):
        RunConfig(client_optimizer="adamw")


@pytest.mark.parametrize("with_active", [False, True])
def test_fused_adam_equals_the_formula_written_out(monkeypatch, with_active):
    """The fused-kernel path of ClientOptimizer.increments against its op-by-op formula (the
    kernel absent), over several steps, with some clients stopping part-way (their increments 0,
    their moments frozen); and clients at different step counts take the op-by-op path."""
    import rf2.clients.optim as optim

    g = torch.Generator().manual_seed(0)
    grads = [{"w": torch.randn(5, 3, 4, generator=g), "b": torch.randn(5, 4, generator=g)} for _ in range(4)]
    opt = ClientOptimizer("adam", 0.05)
    runs = []
    for fused in (True, False):
        if not fused:
            monkeypatch.setattr(optim, "_FUSED", None)
        state = opt.init({k: v for k, v in grads[0].items()}, clients=5 if with_active else None)
        incs = []
        for s, gr in enumerate(grads):
            active = torch.tensor([True, True, s < 2, True, s < 1]) if with_active else None
            inc, state = opt.increments({k: v.clone() for k, v in gr.items()}, state, active=active)
            incs.append(inc)
        runs.append((incs, state))
    for a, b in zip(runs[0][0], runs[1][0]):
        for k in a:
            assert torch.allclose(a[k], b[k], atol=1e-6, rtol=1e-5)
    if with_active:  # a stopped client's later increments are exactly 0 in both paths
        assert torch.equal(runs[0][0][3]["w"][4], torch.zeros(3, 4)) and torch.equal(runs[0][0][3]["w"][2], torch.zeros(3, 4))
        assert torch.equal(runs[0][1]["t"], torch.tensor([4.0, 4.0, 2.0, 4.0, 1.0], dtype=torch.float64))
    # first step of Adam from zero moments: lr * g / (|g| + eps), by hand
    first = runs[0][0][0]["b"]
    assert torch.allclose(first, -0.05 * grads[0]["b"] / (grads[0]["b"].abs() + 1e-8), atol=1e-6)


def test_clients_at_different_steps_take_the_written_out_path(monkeypatch):
    opt = ClientOptimizer("adam", 0.1)
    state = opt.init({"w": torch.zeros(3, 2)}, clients=3)
    state["t"] = torch.tensor([0.0, 5.0, 0.0], dtype=torch.float64)  # client 1 has stepped before
    called = []
    monkeypatch.setattr(ClientOptimizer, "_fused", lambda *a, **k: called.append(1))
    inc, new = opt.increments({"w": torch.ones(3, 2)}, state, active=torch.tensor([True, True, False]))
    assert not called and torch.equal(new["t"], torch.tensor([1.0, 6.0, 0.0], dtype=torch.float64))
    assert torch.equal(inc["w"][2], torch.zeros(2)) and bool((inc["w"][:2] < 0).all())
