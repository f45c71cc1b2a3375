"""Step 5 of a round: combine the clients' updates (FedAvg, McMahan et al. 2017; RF² §2.2.1).

``Δ = Σ_i n_i Δ_i / Σ_i n_i`` with ``n_i`` the client's training-sample count. Two refinements:

* an entry a client does not *hold* (a sub-model, see ``ClientUpdates.masks``) is averaged only
  over the clients that hold it: ``Σ_i n_i m_i Δ_i / Σ_i n_i m_i`` (HeteroFL-style, RF² §2.2.3);
  entries no client holds get 0;
* embedding-table rows are averaged over *all* clients, a client that did not touch a row
  contributing an exact zero, so with one local step the average equals the gradient step of
  centralised full-batch training on the clients' pooled data (``tests/test_fedavg.py``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from rf2.clients.updates import ClientUpdates


@dataclass
class RowUpdate:
    """An update of some rows of an embedding table (the other rows: exactly zero)."""

    rows: torch.Tensor  # [R] unique, ascending
    values: torch.Tensor  # [R, D]


GlobalUpdate = dict[str, "torch.Tensor | RowUpdate"]


def weighted_row_sum(rows: torch.Tensor, values: torch.Tensor, weights: torch.Tensor) -> RowUpdate:
    uniq, inv = torch.unique(rows, return_inverse=True)
    out = torch.zeros((uniq.numel(), values.shape[1]), dtype=values.dtype)
    out.index_add_(0, inv, values * weights[:, None])
    return RowUpdate(uniq, out)


def fedavg(updates: ClientUpdates) -> GlobalUpdate:
    w = updates.weights.to(torch.float32)
    total = w.sum()
    if total <= 0:
        raise ValueError("FedAvg: the clients' total weight is zero (no training samples)")
    out: GlobalUpdate = {}
    for k, d in updates.dense.items():
        shape = (-1,) + (1,) * (d.dim() - 1)
        if updates.masks is not None and k in updates.masks:
            m = updates.masks[k].to(d.dtype)
            den = (w.view(shape) * m).sum(0)
            num = (w.view(shape) * m * d).sum(0)
            out[k] = torch.where(den > 0, num / den.clamp_min(1e-30), torch.zeros_like(num))
        else:
            out[k] = (w.view(shape) * d).sum(0) / total
    for k, t in updates.tables.items():
        agg = weighted_row_sum(t.rows, t.values, w[t.client_of_row()])
        out[k] = RowUpdate(agg.rows, agg.values / total)
    return out
