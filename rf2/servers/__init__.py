"""Step 6 of a round: the server applies the aggregated update with its own optimiser.

The averaged client update ``Δ`` is used as a *pseudo-gradient* ``g = -Δ`` (Reddi et al., 2021;
Wang et al., "A field guide to federated optimization", RF² ref. [33]):

* ``sgd``: ``θ ← θ - lr·g`` (``lr = 1`` is plain FedAvg);
* ``adagrad`` (RF² §5.1: lr 0.1 for MovieLens, 0.01 for Taobao): ``G ← G + g²``,
  ``θ ← θ - lr·g / (√G + eps)``, the same rule as ``torch.optim.Adagrad`` (no lr decay, zero
  initial accumulator, ``eps = 1e-10``); rows of an embedding table that no client touched have
  ``g = 0`` and are left exactly as they are, so sparse row updates equal the dense rule.
"""
from __future__ import annotations

import torch

from rf2.aggregation import GlobalUpdate, RowUpdate


class ServerOptimizer:
    name = "base"

    def __init__(self, lr: float):
        if not lr > 0:
            raise ValueError(f"server learning rate must be > 0, got {lr}")
        self.lr = lr

    @torch.no_grad()
    def step(self, params: dict[str, torch.Tensor], update: GlobalUpdate) -> None:
        for k, u in update.items():
            if isinstance(u, RowUpdate):
                self._apply(k, params[k], -u.values, u.rows)
            else:
                self._apply(k, params[k], -u, None)

    def _apply(self, name: str, p: torch.Tensor, g: torch.Tensor, rows: torch.Tensor | None) -> None:
        raise NotImplementedError

    def state_dict(self) -> dict:
        return {}


class ServerSGD(ServerOptimizer):
    name = "sgd"

    def _apply(self, name, p, g, rows):
        if rows is None:
            p.sub_(self.lr * g)
        else:
            p.index_add_(0, rows, -self.lr * g)


class ServerAdagrad(ServerOptimizer):
    name = "adagrad"

    def __init__(self, lr: float, eps: float = 1e-10, initial_accumulator: float = 0.0):
        super().__init__(lr)
        self.eps = eps
        self.initial_accumulator = initial_accumulator
        self.sum: dict[str, torch.Tensor] = {}

    def _apply(self, name, p, g, rows):
        acc = self.sum.get(name)
        if acc is None:
            acc = self.sum[name] = torch.full_like(p, self.initial_accumulator)
        if rows is None:
            acc.add_(g * g)
            p.sub_(self.lr * g / (acc.sqrt() + self.eps))
        else:
            acc.index_add_(0, rows, g * g)
            p.index_add_(0, rows, -self.lr * g / (acc[rows].sqrt() + self.eps))

    def state_dict(self) -> dict:
        return {"sum": self.sum}


SERVER_OPTIMIZERS = {"sgd": ServerSGD, "adagrad": ServerAdagrad}


def make_server_optimizer(name: str, lr: float) -> ServerOptimizer:
    if name not in SERVER_OPTIMIZERS:
        raise ValueError(f"unknown server optimizer {name!r}; available: {sorted(SERVER_OPTIMIZERS)}")
    return SERVER_OPTIMIZERS[name](lr)
