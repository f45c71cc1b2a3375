"""Steps 2-3 of a round, the plain way: broadcast, then each client trains alone.

For every selected client, one after another: copy the global parameters, train it as
:class:`~rf2.clients.local.LocalTraining` says (RF² §4.1: ``local_steps`` full-batch steps; or
epochs of shuffled mini-batches with an optional early stop, FedEM; or with a validation hold-out
that picks the epoch returned, HeteFedRec §V-A) with the client optimiser
(SGD or Adam; :mod:`rf2.clients.optim`) on the mean binary cross-entropy of each batch,
and report ``Δ = θ_client - θ_global``. Embedding-table updates are then cut down to the rows
the client's data indexes (every other row of ``Δ`` is exactly zero).

This is the reference the batched engine (:mod:`rf2.clients.batched`) is tested against: no
tricks, one client at a time, dense full-size tables.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call

from rf2.models import RecModel

from .batch import RoundBatch
from .local import LocalTraining, batch_orders, should_stop, valid_split
from .optim import as_client_optimizer
from .updates import ClientUpdates, TableRows


def table_index_columns(model: RecModel) -> dict[str, list[tuple[int, int]]]:
    """Embedding parameter name -> input column ranges holding its indices."""
    by_table = model.schema.table_columns()
    return {param: by_table[table] for param, table in model.embedding_tables().items()}


def touched_rows(X: torch.Tensor, columns: list[tuple[int, int]]) -> torch.Tensor:
    """Sorted unique table rows indexed by ``X`` in ``columns``, always including row 0
    (the padding row of sequence features), so every engine reports the same row sets."""
    idx = torch.cat([X[:, a:b].reshape(-1) for a, b in columns]).long()
    return torch.unique(torch.cat([idx, torch.zeros(1, dtype=torch.long)]))


def client_loss(model: RecModel, params: dict[str, torch.Tensor], X: torch.Tensor, y: torch.Tensor,
                loss_args: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """Mean BCE of the client's samples; a model with its own ``client_loss(params, X, y, weights,
    **loss_args)`` (e.g. ``hetencf``) computes it instead, with weights ``1/n`` per sample."""
    if has_client_loss(model, loss_args):
        w = torch.full_like(y, 1.0 / y.numel())
        return model.client_loss(params, X, y, w, **(loss_args or {}))
    return F.binary_cross_entropy_with_logits(functional_call(model, params, (X,)), y)


def masked(params: dict[str, torch.Tensor], masks: dict[str, torch.Tensor] | None, c: int) -> dict[str, torch.Tensor]:
    """Client ``c``'s effective parameters: each masked tensor times its ``[C, *shape]`` mask's row ``c``."""
    return params if masks is None else {k: v * masks[k][c] if k in masks else v for k, v in params.items()}


def has_client_loss(model: RecModel, loss_args: dict | None = None) -> bool:
    """Whether the model defines its own per-client training loss (see :func:`client_loss`);
    per-client ``loss_args`` for a model without one are an error."""
    custom = callable(getattr(model, "client_loss", None))
    if loss_args and not custom:
        raise ValueError(f"per-client loss arguments {sorted(loss_args)} given, but model {type(model).__name__} "
                         "has no client_loss(params, X, y, weights, ...) to take them")
    return custom


class ReferenceEngine:
    name = "reference"

    def client_updates(
        self,
        model: RecModel,
        params: dict[str, torch.Tensor],
        batch: RoundBatch,
        contexts: Sequence,
        local_steps: "int | LocalTraining",  # full-batch steps, or the whole local schedule
        lr: float,
        masks: dict[str, torch.Tensor] | None = None,
        summed: bool = False,  # ignored: the reference always computes every client's update
        private: dict[str, torch.Tensor] | None = None,  # [C, *shape] each client's own private values
        loss_args: dict[str, torch.Tensor] | None = None,  # [C, ...] per-client args of model.client_loss
        optimizer: str = "sgd",  # the client optimiser (rf2.clients.optim), with learning rate lr
        private_rows: dict[str, torch.Tensor] | None = None,  # per table: each client's own touched rows
    ) -> ClientUpdates:
        opt = as_client_optimizer(optimizer, lr)
        plan = LocalTraining.of(local_steps)
        private_rows = private_rows or {}
        was_training = model.training
        model.eval()  # no dropout; batch norm (deepctr's Dice) uses fixed statistics
        tables = table_index_columns(model)
        dense: dict[str, list[torch.Tensor]] = {k: [] for k in params if k not in tables}
        rows: dict[str, list[torch.Tensor]] = {k: [] for k in tables}
        vals: dict[str, list[torch.Tensor]] = {k: [] for k in tables}
        losses, epochs_run, epochs_kept, valid_losses = [], [], [], []
        touched = [{k: touched_rows(batch.client(c)[0], cols) for k, cols in tables.items()} for c in range(batch.n_clients)]
        offset = {k: 0 for k in tables}
        if private_rows:
            from .batched import check_private_rows

            check_private_rows(private_rows, {k: (torch.cat([t[k] for t in touched]), params[k]) for k in tables})
        for c in range(batch.n_clients):
            X, y = batch.client(c)
            start = {k: private[k][c] if private and k in private else v for k, v in params.items()}
            for k in private_rows:  # the client's own values of the rows it touches
                r = touched[c][k]
                start[k] = start[k].clone()
                start[k][r] = private_rows[k][offset[k] : offset[k] + r.numel()]
                offset[k] += r.numel()
            local = {k: v.detach().clone().requires_grad_(True) for k, v in start.items()}
            state = opt.init(local)  # fresh every round, kept through all the client's epochs
            la = loss_args and {k: v[c] for k, v in loss_args.items()}
            valid_pos = np.zeros(0, dtype=np.int64)
            if plan.valid_fraction:
                train_pos, valid_pos = valid_split(plan, contexts[c].seed, X.shape[0])
            if valid_pos.size:  # held out this round: never in a batch (rf2.clients.local)
                Xv, yv = X[torch.as_tensor(valid_pos)], y[torch.as_tensor(valid_pos)]
                X, y = X[torch.as_tensor(train_pos)], y[torch.as_tensor(train_pos)]
            best = None  # (validation loss, parameters, epoch) of the best epoch so far
            n = X.shape[0]
            size = n if plan.full_batch else plan.batch_size
            seen, epoch_means, cumulative = [], [], []  # each batch's loss at its first step
            for order in batch_orders(plan, contexts[c].seed if not plan.full_batch else 0, n):
                this_epoch = []
                for a in range(0, n, size):
                    if plan.full_batch:
                        Xb, yb = X, y
                    else:
                        idx = torch.as_tensor(order[a : a + size])
                        Xb, yb = X[idx], y[idx]
                    for step in range(plan.steps):
                        loss = client_loss(model, masked(local, masks, c), Xb, yb, la)
                        if step == 0:
                            this_epoch.append(float(loss.detach()))
                        # a model may leave parameters out of a client's loss (hetencf: unused sub-models): zero gradient
                        grads = torch.autograd.grad(loss, list(local.values()), allow_unused=True, materialize_grads=True)
                        with torch.no_grad():
                            inc, state = opt.increments(dict(zip(local, grads)), state)
                            local = {k: (v + inc[k]).requires_grad_(True) for k, v in local.items()}
                seen += this_epoch
                epoch_means.append(sum(this_epoch) / len(this_epoch))
                cumulative.append(sum(seen) / len(seen))
                if valid_pos.size:
                    with torch.no_grad():
                        v = float(client_loss(model, masked(local, masks, c), Xv, yv, la))
                    if best is not None and not v < best[0]:  # no better than the epoch before: stop, return that one
                        local = best[1]
                        break
                    best = (v, {k: t.detach().clone() for k, t in local.items()}, len(epoch_means))
                if should_stop(plan, epoch_means, cumulative):
                    break
            losses.append(torch.tensor(sum(seen) / len(seen), dtype=torch.float32))
            epochs_run.append(len(epoch_means))
            epochs_kept.append(best[2] if best is not None else len(epoch_means))
            valid_losses.append(best[0] if best is not None else float("nan"))
            for k, v in local.items():
                delta = (v - start[k]).detach()
                if k in tables:
                    r = touched[c][k]
                    rows[k].append(r)
                    vals[k].append(delta[r])
                else:
                    dense[k].append(delta)
        if was_training:
            model.train()
        out_tables = {}
        for k in tables:
            counts = torch.tensor([r.numel() for r in rows[k]], dtype=torch.long)
            out_tables[k] = TableRows(
                ptr=torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)]),
                rows=torch.cat(rows[k]), values=torch.cat(vals[k]), n_rows=params[k].shape[0],
            )
        return ClientUpdates(
            contexts=list(contexts),
            weights=batch.counts().to(torch.float32),
            dense={k: torch.stack(v) for k, v in dense.items()},
            tables=out_tables,
            masks=masks,
            loss=torch.stack(losses),
            epochs_run=torch.tensor(epochs_run, dtype=torch.long),
            epochs_kept=torch.tensor(epochs_kept, dtype=torch.long) if plan.valid_fraction else None,
            valid_loss=torch.tensor(valid_losses, dtype=torch.float32) if plan.valid_fraction else None,
        )
