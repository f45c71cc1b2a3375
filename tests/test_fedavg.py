"""FedAvg with one local step and every client selected == one centralised full-batch step."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rf2.aggregation import RowUpdate, fedavg
from rf2.clients.batch import RoundBatch
from rf2.clients.batched import BatchedEngine
from rf2.clients.reference import ReferenceEngine
from rf2.data import FeatureEncoder
from rf2.models import build_model
from rf2.servers import ServerSGD


@pytest.mark.parametrize("engine", [ReferenceEngine(), BatchedEngine()], ids=["reference", "batched"])
@pytest.mark.parametrize("client_lr", [1.0, 0.3])
def test_one_round_equals_centralised_gradient_step(synth, engine, client_lr):
    ds = synth
    enc = FeatureEncoder(ds)
    clients = np.flatnonzero(ds.train_counts > 0)[:60]
    batch = RoundBatch.gather(ds, enc, clients)
    model = build_model("dlrm", ds.schema, seed=1)
    params = {k: p.detach().clone() for k, p in model.named_parameters()}

    # federated: every client one full-batch step, FedAvg, server SGD with lr 1
    updates = engine.client_updates(model, params, batch, [None] * len(clients), 1, client_lr)
    fed = {k: v.clone() for k, v in params.items()}
    ServerSGD(1.0).step(fed, fedavg(updates))

    # centralised: one gradient step of the mean loss over the union of the clients' samples
    central = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    loss = F.binary_cross_entropy_with_logits(torch.func.functional_call(model, central, (batch.X,)), batch.y)
    grads = torch.autograd.grad(loss, list(central.values()))
    expected = {k: (v - client_lr * g).detach() for (k, v), g in zip(central.items(), grads)}

    for k in params:
        assert torch.allclose(fed[k], expected[k], atol=2e-7, rtol=1e-5), k
    assert all(not torch.equal(fed[k], params[k]) for k in params)  # every tensor moved


def test_masked_entries_are_averaged_over_holders():
    from rf2.clients.updates import ClientUpdates, TableRows

    d = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    m = torch.tensor([[True, True], [True, False], [False, False]])
    w = torch.tensor([1.0, 3.0, 4.0])
    t = TableRows(ptr=torch.tensor([0, 1, 3, 3]), rows=torch.tensor([2, 0, 2]),
                  values=torch.tensor([[1.0], [2.0], [3.0]]), n_rows=4)
    u = ClientUpdates(contexts=[None] * 3, weights=w, dense={"w": d}, tables={"t": t}, masks={"w": m})
    agg = fedavg(u)
    # entry 0: held by clients 0,1 -> (1*1 + 3*3) / 4; entry 1: held by client 0 only -> 2
    assert torch.allclose(agg["w"], torch.tensor([10 / 4, 2.0]))
    # table rows average over all clients' weight (untouched rows count as zero updates)
    assert isinstance(agg["t"], RowUpdate)
    assert agg["t"].rows.tolist() == [0, 2]
    assert torch.allclose(agg["t"].values, torch.tensor([[3 * 2.0 / 8], [(1 * 1.0 + 3 * 3.0) / 8]]))
