"""Server optimisers against torch.optim; client selection without repetition."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from rf2.aggregation import RowUpdate
from rf2.selection import NoRepeatSelector
from rf2.servers import ServerAdagrad, ServerSGD, make_server_optimizer


def test_adagrad_matches_torch_optim():
    g = torch.Generator().manual_seed(0)
    p0 = torch.randn(5, 3, generator=g)
    ours = {"w": p0.clone()}
    ref = torch.nn.Parameter(p0.clone())
    opt = torch.optim.Adagrad([ref], lr=0.1)
    server = ServerAdagrad(0.1)
    for _ in range(4):
        delta = torch.randn(5, 3, generator=g)
        server.step(ours, {"w": delta})
        ref.grad = -delta  # pseudo-gradient
        opt.step()
    assert torch.allclose(ours["w"], ref.detach(), atol=1e-6)


def test_sparse_row_update_equals_dense_rule():
    g = torch.Generator().manual_seed(1)
    p0 = torch.randn(6, 2, generator=g)
    dense, sparse = {"t": p0.clone()}, {"t": p0.clone()}
    a, b = ServerAdagrad(0.1), ServerAdagrad(0.1)
    for rows in ([0, 3], [3, 5], [1]):
        rows = torch.tensor(rows)
        vals = torch.randn(len(rows), 2, generator=g)
        full = torch.zeros(6, 2)
        full[rows] = vals
        a.step(dense, {"t": full})
        b.step(sparse, {"t": RowUpdate(rows, vals)})
    assert torch.allclose(dense["t"], sparse["t"], atol=1e-6)
    assert torch.equal(sparse["t"][2], p0[2])  # never-touched row unchanged


def test_sgd_adds_the_update():
    p = {"w": torch.zeros(3)}
    ServerSGD(0.5).step(p, {"w": torch.tensor([1.0, 2.0, -2.0])})
    assert p["w"].tolist() == [0.5, 1.0, -1.0]


def test_unknown_server_optimizer_and_bad_lr():
    with pytest.raises(ValueError, match="adagrad"):
        make_server_optimizer("adamw", 0.1)
    with pytest.raises(ValueError, match="learning rate"):
        ServerAdagrad(0.0)


def test_each_client_once_per_epoch():
    clients = np.arange(10, 110)
    sel = NoRepeatSelector(clients, per_round=32, seed=0)
    rounds = sel.epoch(0)
    assert [len(r) for r in rounds] == [32, 32, 32, 4]
    flat = np.concatenate(rounds)
    assert sorted(flat.tolist()) == clients.tolist()
    assert sel.rounds_per_epoch() == 4
    again = NoRepeatSelector(clients, 32, seed=0).epoch(0)
    assert all(np.array_equal(a, b) for a, b in zip(rounds, again))
    assert not np.array_equal(np.concatenate(sel.epoch(1)), flat)  # a fresh order next epoch


def test_k_larger_than_population_is_a_clear_error():
    with pytest.raises(ValueError, match="clients_per_round=50 but only 10 clients"):
        NoRepeatSelector(np.arange(10), per_round=50, seed=0)
    with pytest.raises(ValueError, match="no clients"):
        NoRepeatSelector(np.arange(0), per_round=1, seed=0)
