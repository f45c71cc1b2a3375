"""Mini-batch local training over several epochs (issue 13 §1): the batched engine equals the
per-client reference (same batches, same order), the reference equals a plain torch.optim loop,
and the early-stopping rules do what FedEM's code does."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from optimizations import make_contexts
from rf2.clients.batch import RoundBatch
from rf2.clients.batched import BatchedEngine
from rf2.clients.optim import ClientOptimizer
from rf2.clients.local import LocalTraining, batch_orders, should_stop
from rf2.clients.reference import ReferenceEngine
from rf2.config import RunConfig
from rf2.data import FeatureEncoder
from rf2.models import build_model


def round_of(ds, n_clients, seed=0):
    rng = np.random.default_rng(seed)
    clients = rng.choice(np.flatnonzero(ds.train_counts > 0), n_clients, replace=False)
    batch = RoundBatch.gather(ds, FeatureEncoder(ds), clients)
    tiers = np.zeros(ds.n_users, dtype=np.int64)
    contexts = make_contexts(7, clients, tiers, ["t"], 3, 0, ds.train_counts[clients])
    return batch, contexts


def both(model, params, batch, contexts, local, lr=0.5, **kw):
    """Both engines' updates. Adam runs with eps = 1e-4: its step lr g / (|g| + eps) turns float
    rounding of a near-zero gradient into a step of up to lr (rf2.clients.optim), and the engines
    sum in different orders."""
    if kw.get("optimizer") == "adam":
        kw["optimizer"] = ClientOptimizer("adam", lr, eps=1e-4)
    ref = ReferenceEngine().client_updates(model, params, batch, contexts, local, lr, **kw)
    fast = BatchedEngine(slack=0.3).client_updates(model, params, batch, contexts, local, lr, **kw)
    return ref, fast


def assert_same(a, b, atol=2e-5):
    assert torch.allclose(a.loss, b.loss, atol=1e-5, rtol=1e-4)
    assert torch.equal(a.epochs_run, b.epochs_run)
    for k in a.dense:
        assert torch.allclose(a.dense[k], b.dense[k], atol=atol, rtol=1e-3), k
    for k in a.tables:
        assert torch.equal(a.tables[k].rows, b.tables[k].rows), k
        assert torch.allclose(a.tables[k].values, b.tables[k].values, atol=atol, rtol=1e-3), k


def test_batch_orders_cover_every_sample_once_per_epoch_and_reshuffle():
    plan = LocalTraining(epochs=3, batch_size=4)
    orders = batch_orders(plan, seed=11, n=10)
    assert len(orders) == 3
    for o in orders:
        assert sorted(o.tolist()) == list(range(10))
    assert not all(np.array_equal(orders[0], o) for o in orders[1:])  # shuffled afresh each epoch
    again = batch_orders(plan, seed=11, n=10)
    assert all(np.array_equal(a, b) for a, b in zip(orders, again))
    other = batch_orders(plan, seed=12, n=10)
    assert not all(np.array_equal(a, b) for a, b in zip(orders, other))
    # full batches keep the data order
    assert all(np.array_equal(o, np.arange(10)) for o in batch_orders(LocalTraining(epochs=2), 11, 10))
    assert plan.n_batches(np.array([1, 4, 5, 9])).tolist() == [1, 1, 2, 3]


def test_early_stop_rules_by_hand():
    cum = LocalTraining(epochs=5, early_stop="cumulative_mean", threshold=0.01)
    per = LocalTraining(epochs=5, early_stop="per_epoch", threshold=0.01)
    # epoch means 1.0 then 0.995: relative change 0.005/1.00001 < 0.01 -> per_epoch stops
    assert should_stop(per, [1.0, 0.995], [1.0, 0.9975])
    # cumulative means 1.0 then 0.9975: 0.0025/1.00001 < 0.01 -> stops too
    assert should_stop(cum, [1.0, 0.995], [1.0, 0.9975])
    # epoch means 1.0 -> 0.9 (10 %): per_epoch goes on; cumulative 1.0 -> 0.95 (5 %) goes on
    assert not should_stop(per, [1.0, 0.9], [1.0, 0.95])
    assert not should_stop(cum, [1.0, 0.9], [1.0, 0.95])
    # where the two disagree: the running mean barely moves though this epoch changed a lot
    assert should_stop(cum, [1.0] * 9 + [0.9], [1.0] * 9 + [0.991])  # 0.009 < 0.01
    assert not should_stop(per, [1.0] * 9 + [0.9], [1.0] * 9 + [0.991])
    # never after the first epoch, never with "none"
    assert not should_stop(cum, [1.0], [1.0])
    assert not should_stop(LocalTraining(epochs=5), [1.0, 1.0], [1.0, 1.0])
    # the authors' denominator is |L_(e-1) + 1e-5|, not |L_(e-1)| + 1e-5: a negative loss shows it
    prev = -1e-5 + 1e-7  # |prev + 1e-5| = 1e-7: a change of 1e-6 is relatively huge (10), not 0.05
    assert not should_stop(LocalTraining(epochs=2, early_stop="per_epoch", threshold=0.5), [prev, prev + 1e-6], [0, 0])


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("local", [
    LocalTraining(epochs=3, batch_size=4),
    LocalTraining(epochs=2, batch_size=7, steps=2),
    LocalTraining(epochs=2),  # full batch, two epochs
])
def test_batched_equals_reference_with_mini_batches(ml100k, local, optimizer):
    batch, contexts = round_of(ml100k, 12, seed=5)
    counts = batch.counts()
    assert int(counts.min()) < local.batch_size * 2 or local.full_batch or int(counts.max()) > 4 * local.batch_size
    model = build_model("dlrm", ml100k.schema, seed=2)
    params = {k: p.detach().clone() for k, p in model.named_parameters()}
    lr = 0.5 if optimizer == "sgd" else 0.01
    ref, fast = both(model, params, batch, contexts, local, lr=lr, optimizer=optimizer)
    assert_same(ref, fast)
    assert (ref.epochs_run == local.epochs).all()
    assert any(v.abs().max() > 0 for v in ref.dense.values())


def test_mini_batches_change_the_update(ml100k):
    """A test that can fail: mini-batches are not the full batch in disguise, and the shuffle matters."""
    batch, contexts = round_of(ml100k, 6, seed=1)
    model = build_model("dlrm", ml100k.schema, seed=2)
    params = {k: p.detach().clone() for k, p in model.named_parameters()}
    eng = BatchedEngine()
    full = eng.client_updates(model, params, batch, contexts, LocalTraining(epochs=1), 0.5)
    mini = eng.client_updates(model, params, batch, contexts, LocalTraining(epochs=1, batch_size=8), 0.5)
    k = "top.linears.0.weight"
    assert not torch.allclose(full.dense[k], mini.dense[k], atol=1e-5)
    reseeded = make_contexts(8, batch.clients, np.zeros(ml100k.n_users, dtype=np.int64), ["t"], 3, 0,
                             ml100k.train_counts[batch.clients])
    other = eng.client_updates(model, params, batch, reseeded, LocalTraining(epochs=1, batch_size=8), 0.5)
    assert not torch.allclose(other.dense[k], mini.dense[k], atol=1e-5)


def test_reference_equals_a_plain_torch_optim_loop(synth):
    """An oracle written differently: torch.optim.Adam on a copy of the model, batches cut by hand
    from the same per-epoch permutations, mean BCE per batch."""
    batch, contexts = round_of(synth, 3, seed=2)
    model = build_model("dlrm", synth.schema, seed=4)
    params = {k: p.detach().clone() for k, p in model.named_parameters()}
    local = LocalTraining(epochs=2, batch_size=6)
    ref = ReferenceEngine().client_updates(model, params, batch, contexts, local, 0.01, optimizer="adam")
    k = "top.linears.0.weight"
    model.eval()
    for c in range(batch.n_clients):
        X, y = batch.client(c)
        leaves = {n: v.clone().requires_grad_(True) for n, v in params.items()}
        opt = torch.optim.Adam(list(leaves.values()), lr=0.01)
        n = X.shape[0]
        rng = np.random.default_rng(np.random.SeedSequence(contexts[c].seed, spawn_key=(_crc("local_batches"),)))
        perms = [rng.permutation(n), rng.permutation(n)]
        for perm in perms:
            for a in range(0, n, 6):
                idx = torch.from_numpy(perm[a:a + 6])
                opt.zero_grad()
                loss = F.binary_cross_entropy_with_logits(functional_call(model, leaves, (X[idx],)), y[idx])
                loss.backward()
                opt.step()
        assert torch.allclose(leaves[k].detach() - params[k], ref.dense[k][c], atol=1e-6), c


def _crc(s):
    import zlib

    return zlib.crc32(s.encode())


@pytest.mark.parametrize("rule", ["cumulative_mean", "per_epoch"])
def test_early_stop_equal_in_both_engines_and_actually_stops(ml100k, rule):
    batch, contexts = round_of(ml100k, 10, seed=7)
    model = build_model("dlrm", ml100k.schema, seed=2)
    params = {k: p.detach().clone() for k, p in model.named_parameters()}
    never = LocalTraining(epochs=4, batch_size=16, early_stop=rule, threshold=0.0)
    ref, fast = both(model, params, batch, contexts, never, lr=0.01, optimizer="adam")
    assert (ref.epochs_run == 4).all()
    assert_same(ref, fast)
    always = LocalTraining(epochs=4, batch_size=16, early_stop=rule, threshold=1e9)
    ref, fast = both(model, params, batch, contexts, always, lr=0.01, optimizer="adam")
    assert (ref.epochs_run == 2).all()  # the rule is first checked after the second epoch
    assert_same(ref, fast)
    # a threshold in between: some clients stop early, others do not, and the engines agree on who
    mid = LocalTraining(epochs=4, batch_size=16, early_stop=rule, threshold=0.05)
    ref, fast = both(model, params, batch, contexts, mid, lr=0.01, optimizer="adam")
    assert_same(ref, fast)


def test_masks_private_parameters_and_custom_loss_with_mini_batches(ml100k):
    """Channel's masks hold across every step; dense private parameters start from each client's
    own value; hetencf's own loss with per-client arguments."""
    batch, contexts = round_of(ml100k, 8, seed=9)
    model = build_model("dlrm", ml100k.schema, seed=2)
    params = {k: p.detach().clone() for k, p in model.named_parameters()}
    name = "top.linears.0.weight"
    g = torch.Generator().manual_seed(0)
    masks = {name: torch.rand((8, *params[name].shape), generator=g) > 0.5}
    bias = "top.linears.0.bias"
    private = {bias: params[bias].expand(8, *params[bias].shape) + torch.randn(8, *params[bias].shape, generator=g)}
    local = LocalTraining(epochs=2, batch_size=9)
    ref, fast = both(model, params, batch, contexts, local, lr=0.01, masks=masks, private=private, optimizer="adam")
    assert_same(ref, fast)
    assert (ref.dense[name][~masks[name]] == 0).all()
    assert (ref.dense[name][masks[name]] != 0).any()


def test_hetencf_custom_loss_with_mini_batches():
    from optimizations import parse_optimization
    from rf2.data import load_dataset
    from tier_mapping import map_tiers

    ml100k = load_dataset("synthetic", n_users=120, n_items=50, events_per_user=14, seed=5, user_id=True)
    opt = parse_optimization("hetefedrec:4,8,16:group=tier")
    model = build_model("hetencf", ml100k.schema, seed=1, sizes=[4, 8, 16])
    tiers = map_tiers(ml100k, "random", 3, seed=0)
    opt.setup(model, ml100k, tiers, 0)
    rng = np.random.default_rng(3)
    clients = rng.choice(np.flatnonzero(ml100k.train_counts > 0), 9, replace=False)
    batch = RoundBatch.gather(ml100k, FeatureEncoder(ml100k), clients)
    contexts = make_contexts(7, clients, tiers.tier, tiers.names, 0, 0, ml100k.train_counts[clients])
    params = {k: p.detach().clone() for k, p in model.named_parameters()}
    la = opt.client_loss_args(contexts, model)
    ref, fast = both(model, params, batch, contexts, LocalTraining(epochs=2, batch_size=10), lr=0.01,
                     loss_args=la, optimizer="adam")
    assert_same(ref, fast)


def test_config_checks_local_training_settings():
    with pytest.raises(ValueError, match="local_batch_size must be an integer >= 0"):
        RunConfig(local_batch_size=-1)
    with pytest.raises(ValueError, match="local_epochs must be an integer >= 1"):
        RunConfig(local_epochs=0)
    with pytest.raises(ValueError, match="local_early_stop must be one of"):
        RunConfig(local_early_stop="sometimes")
    with pytest.raises(ValueError, match="set local_epochs > 1"):
        RunConfig(local_early_stop="per_epoch")
    with pytest.raises(ValueError, match="local_early_stop_threshold must be a finite number >= 0"):
        RunConfig(local_epochs=2, local_early_stop="per_epoch", local_early_stop_threshold=-1.0)
    cfg = RunConfig(local_epochs=10, local_batch_size=256, local_early_stop="cumulative_mean")
    assert cfg.local_training == LocalTraining(epochs=10, batch_size=256, early_stop="cumulative_mean")


@pytest.mark.parametrize("optimization", ["none", "quant:1:2:8", "prune:1:2:4", "channel:1:2:4"])
def test_simulation_with_mini_batches_same_in_both_engines(ml100k, optimization):
    """Every optimisation keeps working with mini-batch local training, and the two engines give
    the same run (compression acts on the round's total update)."""
    from rf2.simulation import Simulation

    base = dict(dataset="ml-100k", model="dlrm", optimization=optimization, clients_per_round=16, max_rounds=2,
                local_epochs=2, local_batch_size=32, client_lr=0.5, server_optimizer="sgd", server_lr=1.0)
    runs = {}
    for engine in ("batched", "reference"):
        sim = Simulation(RunConfig(engine=engine, **base), dataset=ml100k, progress=False)
        res = sim.run()
        runs[engine] = (res.rounds, {k: v.clone() for k, v in sim.params.items()})
    (ra, pa), (rb, pb) = runs["batched"], runs["reference"]
    assert np.allclose(ra["train_loss"], rb["train_loss"], atol=1e-5)
    for k in pa:
        assert torch.allclose(pa[k], pb[k], atol=1e-4), k


def test_leave_one_out_run_trains_on_fresh_negatives(recwarn):
    """train_negatives: every round's samples are (1 + k) x the participants' positives, no
    'positives only' warning; without it the warning names the fix."""
    import warnings

    from rf2.data import load_dataset
    from rf2.simulation import Simulation

    ds = load_dataset("synthetic", n_users=60, n_items=400, events_per_user=15, seed=2, split="leave-one-out", user_id=True,
                      min_interactions=10)
    cfg = RunConfig(dataset="synthetic", model="ncf", clients_per_round=8, max_rounds=3, train_negatives=4,
                    local_epochs=2, local_batch_size=16, sampled_k=10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning with negatives
        sim = Simulation(cfg, dataset=ds, progress=False)
    res = sim.run()
    plan = sim.schedule()
    for r, (_, chosen) in enumerate(plan):
        assert res.rounds["samples"][r] == 5 * int(ds.train_counts[chosen].sum())
    with pytest.warns(UserWarning, match="set train_negatives"):
        Simulation(cfg.replace(train_negatives=0), dataset=ds, progress=False)
    with pytest.raises(ValueError, match="has its own training negatives.*set train_negatives = 0"):
        Simulation(cfg.replace(sampled_k=0), dataset=load_dataset("synthetic", n_users=60, n_items=80, user_id=True), progress=False)
