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

from rf2.clients.updates import Background, ClientUpdates, TableRows
from rf2.device import cpu_draw


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
    if updates.summed is not None:  # the engine computed the aggregate directly (same formula)
        return updates.summed
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
        if t.background is None:
            agg = weighted_row_sum(t.rows, t.values, w[t.client_of_row()])
            out[k] = RowUpdate(agg.rows, agg.values / total)
        else:
            dense = background_sum(t, w)
            dense.index_add_(0, t.rows, t.values * w[t.client_of_row()][:, None])
            out[k] = dense / total
    return out


def background_sum(t: TableRows, w: torch.Tensor, mode: str | None = None) -> torch.Tensor:
    """``[n_rows, D]``: ``Σ_c w_c X_c(e)`` over the entries ``e`` client ``c`` did not touch, where
    ``X_c(e) = low_c + step_c * Bernoulli(p_c)`` i.i.d. (:class:`~rf2.clients.updates.Background`).

    * ``exact``: every client draws its Bernoulli variables for every untouched entry from its
      own seed (cost: clients x table entries);
    * ``gaussian``: per entry, a normal draw with the exact mean ``Σ_c w_c (low_c + step_c p_c)``
      and variance ``Σ_c w_c² step_c² p_c (1 - p_c)`` of that sum, both taken over exactly the
      clients that did not touch the entry's row (totals over all clients minus the touching
      clients' terms, per row). Cost: one table's worth of draws. By the central limit theorem the
      sum of many independent two-point variables is close to normal; with few clients per round
      use ``exact`` (``tests/test_compression.py`` compares the two);
    * ``auto`` (default): ``exact`` when ``clients x entries <= budget``, else ``gaussian``.
    """
    bg: Background = t.background
    mode = mode or bg.mode
    C, D, V = t.n_clients, t.values.shape[1], t.n_rows
    if mode == "auto":
        mode = "exact" if C * V * D <= bg.budget else "gaussian"
    client = t.client_of_row()
    if mode == "exact":
        out = torch.zeros((V, D), dtype=t.values.dtype)
        for c in range(C):
            if bg.step[c] == 0 and bg.low[c] == 0:
                continue
            g = torch.Generator().manual_seed(bg.seeds[c])
            x = bg.low[c] + bg.step[c] * (cpu_draw(torch.rand, (V, D), generator=g, device=out.device) < bg.p_up[c]).to(out.dtype)
            x[t.rows[t.ptr[c] : t.ptr[c + 1]]] = 0.0  # touched rows carry their own values
            out.add_(w[c] * x)
        return out
    if mode != "gaussian":
        raise ValueError(f"background mode must be exact, gaussian or auto, got {mode!r}")
    mean_c = (w * (bg.low + bg.step * bg.p_up)).to(torch.float64)
    var_c = (w**2 * bg.step**2 * bg.p_up * (1 - bg.p_up)).to(torch.float64)
    mean = torch.full((V,), float(mean_c.sum()), dtype=torch.float64)
    var = torch.full((V,), float(var_c.sum()), dtype=torch.float64)
    mean.index_add_(0, t.rows, -mean_c[client])
    var.index_add_(0, t.rows, -var_c[client])
    g = torch.Generator().manual_seed(bg.seeds[0] if bg.seeds else 0)
    z = cpu_draw(torch.randn, (V, D), generator=g, dtype=torch.float64)
    return (mean[:, None] + var.clamp_min(0).sqrt()[:, None] * z).to(t.values.dtype)
