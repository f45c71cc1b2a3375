"""Steps 2-3 of a round, all selected clients at once.

Every client trains its own copy of the model with ``local_steps`` full-batch SGD steps, exactly
as in :mod:`rf2.clients.reference`, but the clients are stacked and trained together with
``torch.func.vmap(grad_and_value(loss))`` (the step and the loss from one forward pass):

* **local embedding tables.** A client only ever reads the table rows its data indexes. Each
  client gets a small table holding just those rows (row 0, the padding row, first), and its
  input indices are rewritten to point into it. Per-client table gradients therefore cost
  ``[clients, touched rows, dim]``, never ``[clients, vocabulary, dim]``;
* **dense parameters** (MLPs, attention) are expanded to ``[clients, *shape]`` (a view, no copy);
* **buckets.** vmap needs equal shapes, so clients are sorted by sample count and grouped into
  buckets whose padding wastes at most ``slack`` of the bucket's compute; padded samples have
  zero loss weight and padded table rows are never indexed;
* **lock-step local epochs.** A bucket's clients step together; per-client masks (``active``:
  still has steps, ``stopped``: an early stop fired) freeze a client that is done. With a
  validation hold-out (``LocalTraining.valid_fraction``, HeteFedRec §V-A) each client's held-out
  samples are a padded ``[clients, held out]`` block outside every batch; at the step that ends a
  client's epoch the bucket's validation losses come from one vmapped forward pass, and per-client
  masks keep the best epoch's parameters and stop a client whose loss did not improve, exactly
  the reference's rule (:mod:`rf2.clients.local`).

The result is the same :class:`~rf2.clients.updates.ClientUpdates` the reference produces (equal
to float tolerance; ``tests/test_engine_equivalence.py``).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call, grad_and_value, vmap

from rf2.device import to_numpy
from rf2.models import RecModel

from .batch import RoundBatch
from .local import EpochLosses, LocalTraining, batch_orders, valid_split
from .optim import as_client_optimizer, per_client
from .reference import has_client_loss, table_index_columns
from .updates import ClientUpdates, TableRows


def plan_buckets(counts: np.ndarray, slack: float = 0.25, max_cells: int = 4_000_000) -> list[np.ndarray]:
    """Group client positions (sorted by ``counts``) so that ``len(bucket) * max(counts)`` exceeds
    ``sum(counts)`` by at most ``slack``, and a bucket pads to at most ``max_cells`` samples."""
    order = np.argsort(counts, kind="stable")
    buckets, cur, total = [], [], 0
    for pos in order:
        n = int(counts[pos])
        if cur and ((len(cur) + 1) * n > (1 + slack) * (total + n) or (len(cur) + 1) * n > max_cells):
            buckets.append(np.array(cur))
            cur, total = [], 0
        cur.append(pos)
        total += n
    if cur:
        buckets.append(np.array(cur))
    return buckets


class _LocalTable:
    """One embedding table's per-client local rows for a round."""

    def __init__(self, X: torch.Tensor, seg: torch.Tensor, n_clients: int, columns, n_rows: int):
        self.columns = columns
        idx = torch.cat([X[:, a:b] for a, b in columns], dim=1).long()  # [S, k]
        keys = seg[:, None] * n_rows + idx
        pad_keys = torch.arange(n_clients) * n_rows  # row 0 for every client
        uniq, inv = unique_keys(torch.cat([pad_keys, keys.reshape(-1)]), n_clients * n_rows)
        self.client = torch.div(uniq, n_rows, rounding_mode="floor")
        self.rows = uniq - self.client * n_rows  # [R] global rows, per client ascending, row 0 first
        counts = torch.bincount(self.client, minlength=n_clients)
        self.ptr = torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)])
        #: [S, k] each index's position among all clients' local rows stacked in client order
        #: (``ptr[client] + local_index``): the flat path's table row, minus its padding row
        self.flat_index = inv[n_clients:].reshape(idx.shape)
        self.seg = seg
        self.counts = counts

    @property
    def local_index(self) -> torch.Tensor:
        """``[S, k]`` each index's row in its own client's local table."""
        return self.flat_index - self.ptr[self.seg][:, None]

    def rewrite(self, X: torch.Tensor) -> None:
        """Point ``X``'s index columns into the local tables (in place)."""
        start, local = 0, self.local_index
        for a, b in self.columns:
            X[:, a:b] = local[:, start : start + (b - a)].to(X.dtype)
            start += b - a


#: :func:`unique_keys` marks keys in an array of their whole range when the range is at most this
#: many entries, or at most 16 x the number of keys (1 + 4 bytes per entry of the range)
MARK_RANGE = 4_000_000


def unique_keys(keys: torch.Tensor, key_range: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.unique(keys, return_inverse=True)`` for integer ``keys`` in ``[0, key_range)``.

    When the range is small against the keys (a round's (client, item) pairs at MovieLens-20M size:
    100 x 27,001 against ~690,000 history entries), by marking: a flag per value of the range, the
    flagged values in order, and each value's rank looked up; O(range + keys) instead of a sort
    of the keys (6 ms instead of 40 ms per round there, the same result: ``tests/test_engine_equivalence.py``).
    Otherwise, and off the CPU, ``torch.unique``."""
    if keys.device.type != "cpu" or key_range > max(MARK_RANGE, 16 * keys.numel()) or key_range >= 2**31:
        return torch.unique(keys, return_inverse=True)
    k = keys.numpy()
    if k.size and (k.min() < 0 or k.max() >= key_range):
        raise ValueError(f"unique_keys: keys must lie in [0, {key_range}), got [{k.min()}, {k.max()}]")
    mark = np.zeros(key_range, dtype=bool)
    mark[k] = True
    uniq = np.flatnonzero(mark)
    rank = np.empty(key_range, dtype=np.int32)
    rank[uniq] = np.arange(uniq.size, dtype=np.int32)
    return torch.from_numpy(uniq.astype(np.int64)), torch.from_numpy(rank[k].astype(np.int64))


def check_private_rows(private_rows: dict[str, torch.Tensor], layout: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
    """``private_rows[k]`` must have one row per entry of table ``k``'s round layout
    (``layout[k] = (rows, param)``) and the table's width."""
    for k, v in private_rows.items():
        if k not in layout:
            raise ValueError(f"private_rows: {k!r} is not an embedding table of the model ({sorted(layout)})")
        rows, param = layout[k]
        if tuple(v.shape) != (rows.numel(), *param.shape[1:]):
            raise ValueError(f"private_rows[{k!r}] has shape {tuple(v.shape)}, but this round's clients touch "
                             f"{rows.numel()} rows of width {tuple(param.shape[1:])}; pass the values of the "
                             "TableRows the engine returned for the same batch")


def linear_owners(model: RecModel, names) -> dict[str, str] | None:
    """Parameter name -> owning ``nn.Linear`` module name, if every one of ``names`` is the weight
    or bias of an ``nn.Linear`` (the flat path's requirement); else ``None``."""
    mods = dict(model.named_modules())
    out = {}
    for k in names:
        mod, _, leaf = k.rpartition(".")
        if not isinstance(mods.get(mod), torch.nn.Linear) or leaf not in ("weight", "bias"):
            return None
        out[k] = mod
    return out


class BatchedEngine:
    """``flat``: one local step on a model whose dense parameters all belong to ``nn.Linear``
    layers (DLRM, NCF) takes the *flat* path (:meth:`flat_updates`); otherwise ``vmap``."""

    name = "batched"

    def __init__(self, slack: float = 0.25, max_cells: int = 4_000_000, flat: bool = True, loop_min_mean: float = 32.0):
        self.slack = slack
        self.max_cells = max_cells
        self.flat = flat
        #: flat path: per-client weight gradients by one matrix product per client (on its contiguous
        #: samples, no padding) when clients hold this many samples on average; else padded buckets
        self.loop_min_mean = loop_min_mean

    def client_updates(
        self,
        model: RecModel,
        params: dict[str, torch.Tensor],
        batch: RoundBatch,
        contexts: Sequence,
        local_steps: "int | LocalTraining",
        lr: float,
        masks: dict[str, torch.Tensor] | None = None,
        summed: bool = False,
        private: dict[str, torch.Tensor] | None = None,
        loss_args: dict[str, torch.Tensor] | None = None,
        optimizer: str = "sgd",
        private_rows: dict[str, torch.Tensor] | None = None,
    ) -> ClientUpdates:
        """Per-client updates; with ``summed`` (the optimisation is linear, see
        ``Optimization.is_linear``) and one local step, only their FedAvg aggregate. ``private``:
        ``[C, *shape]`` each client's own value of its dense private parameters. ``loss_args``:
        ``[C, ...]`` per-client arguments of the model's own ``client_loss`` (see
        :func:`rf2.clients.reference.client_loss`); such models never take the summed shortcut.
        ``optimizer``: the client optimiser (:mod:`rf2.clients.optim`) with learning rate ``lr``;
        the summed shortcut needs one whose step is linear in the gradient (SGD).
        ``private_rows``: per table, each client's own starting values of the rows it touches,
        laid out exactly as the ``TableRows`` this engine returns for the same batch (Standalone
        training, :mod:`rf2.standalone`); other rows start from ``params``."""
        opt = as_client_optimizer(optimizer, lr)
        plan = LocalTraining.of(local_steps)
        custom = has_client_loss(model, loss_args)
        loss_args = loss_args or {}
        private = private or {}
        private_rows = private_rows or {}
        if summed and (private or private_rows):
            raise ValueError("summed updates cannot carry per-client private parameters")
        if summed and plan.single_step and not custom and opt.is_linear:
            return self.summed_update(model, params, batch, contexts, lr, masks)
        if self.flat and plan.single_step and masks is None and not private and not private_rows and not custom:
            owners = linear_owners(model, [k for k in params if k not in table_index_columns(model)])
            if owners is not None:
                return self.flat_updates(model, params, batch, contexts, opt, owners)
        was_training = model.training
        model.eval()
        C = batch.n_clients
        counts = batch.counts()
        seg = batch.segment()
        table_cols = table_index_columns(model)
        local = {k: _LocalTable(batch.X, seg, C, cols, params[k].shape[0]) for k, cols in table_cols.items()}
        check_private_rows(private_rows, {k: (lt.rows, params[k]) for k, lt in local.items()})
        X = batch.X.clone()
        for lt in local.values():
            lt.rewrite(X)
        dense_names = [k for k in params if k not in table_cols]
        out_dense = {k: torch.empty((C, *params[k].shape), dtype=params[k].dtype) for k in dense_names}
        out_tables = {k: torch.empty((int(lt.ptr[-1]), params[k].shape[1]), dtype=params[k].dtype) for k, lt in local.items()}
        losses = torch.empty(C)
        epochs_run = torch.empty(C, dtype=torch.long)
        epochs_kept = torch.empty(C, dtype=torch.long)
        valid_losses = torch.full((C,), float("nan"))
        # the validation hold-out: each client's trained and held-out positions (rf2.clients.local.valid_split)
        splits = [valid_split(plan, contexts[c].seed, int(counts[c])) for c in range(C)] if plan.valid_fraction else None
        train_counts = counts - torch.as_tensor(plan.n_valid(to_numpy(counts)))

        def loss_fn(p, Xc, yc, wc, la):
            if custom:
                return model.client_loss(p, Xc, yc, wc, **la)
            logits = functional_call(model, p, (Xc,))
            return (F.binary_cross_entropy_with_logits(logits, yc, reduction="none") * wc).sum()

        def masked(p, m):
            return {k: v * m[k] if k in m else v for k, v in p.items()}

        # one forward pass gives the step and the loss; the loss arguments are the same for every
        # client of a bucket (clients are grouped by them), so the model sees them as plain tensors
        # and may skip work they switch off (hetencf: sub-models with coefficient 0)
        step_fn = vmap(grad_and_value(loss_fn), in_dims=(0, 0, 0, 0, None))
        value_fn = vmap(loss_fn, in_dims=(0, 0, 0, 0, None))
        n_batches = torch.as_tensor(plan.n_batches(to_numpy(train_counts)))
        total_steps = n_batches * plan.epochs * plan.steps
        for b, la in self.loss_groups(train_counts, loss_args, None if plan.full_batch else total_steps):
            Cb = b.numel()
            trained = None if splits is None else [splits[c][0] for c in b.tolist()]
            order = self.batch_positions(plan, batch.ptr, b, counts, n_batches, contexts, trained)  # [Cb, E, nb, W]
            p = {k: private[k][b].detach() if k in private else params[k].detach().expand(Cb, *params[k].shape)
                 for k in dense_names}
            table_slots = {}
            for k, lt in local.items():
                u_max = int(lt.counts[b].max())
                slot = self.ptr_positions(lt.ptr, b, u_max)  # [Cb, u_max] flat local-row ids, -1 pad
                table_slots[k] = slot
                if k in private_rows:  # padded slots are never indexed: any row will do
                    p[k] = private_rows[k].detach()[slot.clamp_min(0)]
                else:
                    rows = torch.where(slot >= 0, lt.rows[slot.clamp_min(0)], 0)
                    p[k] = params[k].detach()[rows]  # [Cb, u_max, D]
            m = {} if masks is None else {k: v[b] for k, v in masks.items()}
            p0 = {k: v.clone() for k, v in p.items()}
            # fresh every round, kept through the client's epochs; per-client step counts when
            # clients of the bucket stop at different steps
            uniform = plan.full_batch and plan.early_stop == "none" and not plan.valid_fraction  # all step every time
            state = opt.init(p) if uniform else opt.init(p, clients=Cb)
            nb, T = n_batches[b], total_steps[b]
            ar = torch.arange(Cb)
            stopped = torch.zeros(Cb, dtype=torch.bool)
            track = EpochLosses(Cb, plan)  # batch losses (first step of each batch), epochs done
            holdout = splits is not None and bool((train_counts[b] < counts[b]).any())
            if holdout:  # [Cb, V] held-out samples, -1 padding; the best epoch's parameters so far
                vpos = self.list_positions(batch.ptr, b, [splits[c][1] for c in b.tolist()])
                vok = vpos >= 0
                Xv = torch.where(vok[..., None], X[vpos.clamp_min(0)], 0)
                yv = torch.where(vok, batch.y[vpos.clamp_min(0)], 0.0)
                wv = vok.to(torch.float32) / vok.sum(1, keepdim=True).clamp_min(1).to(torch.float32)
                has_valid = vok.any(1)
                best_v = torch.full((Cb,), float("inf"), dtype=torch.float64)
                best_p = {k: v.clone() for k, v in p.items()}
                kept = torch.zeros(Cb, dtype=torch.long)
            for s in range(int(T.max())):
                active = (s < T) & ~stopped
                if not bool(active.any()):
                    break
                bstep = s // plan.steps  # the batch each client is on, counted over its epochs
                e = torch.div(bstep, nb, rounding_mode="floor").clamp_max(plan.epochs - 1)
                pos = order[ar, e, bstep % nb]  # [Cb, W] sample positions, -1 padding
                valid = (pos >= 0) & active[:, None]
                Xb = torch.where(valid[..., None], X[pos.clamp_min(0)], 0)  # padding: index 0, in every local table
                yb = torch.where(valid, batch.y[pos.clamp_min(0)], 0.0)
                wb = valid.to(torch.float32) / valid.sum(1, keepdim=True).clamp_min(1).to(torch.float32)
                g, value = step_fn(masked(p, m), Xb, yb, wb, la)
                g = {k: g[k] * m[k] if k in m else g[k] for k in p}
                if uniform:
                    inc, state = opt.increments(g, state)
                else:
                    inc, state = opt.increments(g, state, active=active)
                p = {k: v + inc[k] for k, v in p.items()}
                if s % plan.steps == 0:  # a batch's first step: its loss counts
                    track.add(value, active)
                ends = active & ((s + 1) % (nb * plan.steps) == 0)  # clients finishing an epoch
                if bool(ends.any()):
                    stopped |= track.early_stops(ends)
                    check = ends & has_valid if holdout else ends[:0]
                    if bool(check.any()):  # validation after the epoch: keep it if better, else stop
                        v = value_fn(masked(p, m), Xv, yv, wv, la).detach().to(torch.float64)
                        better = check & ((track.done == 0) | (v < best_v))
                        stopped |= check & ~better
                        best_v = torch.where(better, v, best_v)
                        kept = torch.where(better, track.done + 1, kept)
                        best_p = {k: torch.where(per_client(better, x), p[k], x) for k, x in best_p.items()}
                    track.close_epochs(ends)
            epochs_done = track.done
            losses[b] = track.mean().to(torch.float32)
            epochs_run[b] = epochs_done
            epochs_kept[b] = epochs_done
            if holdout:  # clients with a hold-out return their best epoch
                p = {k: torch.where(per_client(has_valid, v), best_p[k], v) for k, v in p.items()}
                epochs_kept[b] = torch.where(has_valid, kept, epochs_done)
                valid_losses[b] = torch.where(has_valid, best_v, float("nan")).to(torch.float32)
            for k in dense_names:
                out_dense[k][b] = p[k] - p0[k]
            for k, slot in table_slots.items():
                ok = slot >= 0
                out_tables[k][slot[ok]] = (p[k] - p0[k])[ok]
        if was_training:
            model.train()
        return ClientUpdates(
            contexts=list(contexts),
            weights=counts.to(torch.float32),
            dense=out_dense,
            tables={k: TableRows(ptr=lt.ptr, rows=lt.rows, values=out_tables[k], n_rows=params[k].shape[0])
                    for k, lt in local.items()},
            masks=masks,
            loss=losses,
            epochs_run=epochs_run,
            epochs_kept=epochs_kept if plan.valid_fraction else None,
            valid_loss=valid_losses if plan.valid_fraction else None,
        )

    @staticmethod
    def batch_positions(plan: LocalTraining, ptr: torch.Tensor, clients: torch.Tensor, counts: torch.Tensor,
                        n_batches: torch.Tensor, contexts: Sequence, trained: Sequence | None = None) -> torch.Tensor:
        """``[len(clients), epochs, max batches, width]`` positions (into the round's samples) of
        every batch of every epoch of each client, -1 padding; the same batches, in the same
        order, as the reference (:func:`rf2.clients.local.batch_orders`). ``trained``: per client
        of ``clients``, the positions (among its own samples) it trains on when some are held out
        for validation (:func:`rf2.clients.local.valid_split`); batches then run over those only."""
        n = counts[clients] if trained is None else torch.tensor([t.size for t in trained], dtype=torch.long)
        nb_max = int(n_batches[clients].max())
        width = int(n.max()) if plan.full_batch else min(plan.batch_size, int(n.max()))
        out = torch.full((clients.numel(), plan.epochs, nb_max * width), -1, dtype=torch.long)
        if plan.full_batch and trained is None:
            j = torch.arange(width)
            pos = torch.where(j[None, :] < n[:, None], ptr[clients][:, None] + j[None, :], -1)
            out[:] = pos[:, None, :]
        else:
            for i, c in enumerate(clients.tolist()):
                nc, start = int(n[i]), int(ptr[c])
                own = torch.arange(nc) if trained is None else torch.as_tensor(trained[i])
                for e, order in enumerate(batch_orders(plan, contexts[c].seed, nc)):
                    out[i, e, :nc] = own[torch.as_tensor(order)] + start
        return out.reshape(clients.numel(), plan.epochs, nb_max, width)

    @staticmethod
    def list_positions(ptr: torch.Tensor, clients: torch.Tensor, own: Sequence) -> torch.Tensor:
        """``[len(clients), max len]`` round positions ``ptr[c] + own[i]`` of each client's listed
        samples (``own[i]``: positions among client ``clients[i]``'s samples), -1 padding."""
        sizes = torch.tensor([o.size for o in own], dtype=torch.long)
        width = max(1, int(sizes.max()) if sizes.numel() else 1)
        flat = torch.as_tensor(np.concatenate(own).astype(np.int64)) if sizes.sum() else torch.zeros(0, dtype=torch.long)
        row = torch.repeat_interleave(torch.arange(clients.numel()), sizes)
        col = torch.arange(flat.numel()) - torch.repeat_interleave(sizes.cumsum(0) - sizes, sizes)
        out = torch.full((clients.numel(), width), -1, dtype=torch.long)
        out[row, col] = flat + ptr[clients][row]
        return out

    def loss_groups(self, counts: torch.Tensor, loss_args: dict[str, torch.Tensor], steps: torch.Tensor | None = None):
        """Yield ``(clients, args)``: buckets (:func:`plan_buckets`) of clients whose per-client loss
        arguments are identical, with those arguments (one client's row). Buckets are planned by
        sample count (full batches: a step's work), or with ``steps`` by each client's number of
        mini-batch steps (the bucket runs as many steps as its longest client)."""
        C = counts.numel()
        if loss_args:
            key = torch.cat([v.reshape(C, -1).to(torch.float64) for v in loss_args.values()], dim=1)
            _, group = torch.unique(key, dim=0, return_inverse=True)
        else:
            group = torch.zeros(C, dtype=torch.long)
        for g in torch.unique(group).tolist():
            members = torch.nonzero(group == g).flatten()
            args = {k: v[members[0]] for k, v in loss_args.items()}
            key = counts if steps is None else steps
            for bucket in plan_buckets(to_numpy(key[members]), self.slack, self.max_cells):
                yield members[torch.as_tensor(bucket)], args

    def flat_updates(self, model, params, batch: RoundBatch, contexts, opt, owners: dict[str, str]) -> ClientUpdates:
        """Every client's one-step update from ONE forward/backward pass over the pooled samples.

        With one step, ``Δ_c = step(∇ L_c(θ))`` (SGD: ``-lr ∇ L_c(θ)``; Adam from a fresh state
        acts entry by entry too, :class:`~rf2.clients.optim.ClientOptimizer`) where ``L_c`` is client ``c``'s mean loss; all clients
        start from the same ``θ``, so a single pass over ``Σ_c L_c`` computes every per-sample
        quantity. What must stay per client:

        * **embedding tables**: all clients' local tables (:class:`_LocalTable`) are stacked into
          one *flat* table whose rows each belong to one client; the gradient of the pooled loss
          with respect to it *is* every client's table gradient. Sequence padding (index 0) points
          at a constant row of its own, so padding masks still see index 0;
        * **linear layers**: a weight's gradient is ``Σ_s g_s a_sᵀ`` (output gradient times input,
          per sample); the per-client sums are batched matrix products over each client's samples
          (bucketed by size like the vmap path); a bias's is the per-client sum of ``g_s``.

        Equal to the reference to float tolerance (``tests/test_engine_equivalence.py``).
        """
        was_training = model.training
        model.eval()
        C = batch.n_clients
        counts = batch.counts()
        seg = batch.segment()
        S = seg.numel()
        schema = model.schema
        seq_cols = set()
        for f in schema.sequences:
            a, b = schema.columns[f.name]
            seq_cols.update(range(a, b))
        X = batch.X.clone()
        # linear weights require grad only so their outputs join the graph (their own, pooled,
        # gradients are never asked for, so autograd does not compute them)
        p = {k: v.detach().requires_grad_(k in owners) for k, v in params.items()}
        leaves, local = {}, {}
        for k, cols in table_index_columns(model).items():
            lt = _LocalTable(batch.X, seg, C, cols, params[k].shape[0])
            if int(lt.ptr[-1]) + 1 >= 2**24:
                raise ValueError("flat path: too many touched rows for float32 indices; use fewer clients per round")
            flat_idx = 1 + lt.flat_index
            start = 0
            for a, b in cols:
                part = flat_idx[:, start : start + (b - a)]
                if a in seq_cols:
                    part = torch.where(batch.X[:, a:b] == 0, 0, part)
                X[:, a:b] = part.to(X.dtype)
                start += b - a
            leaves[k] = params[k].detach()[lt.rows].clone().requires_grad_(True)
            p[k] = torch.cat([params[k].detach()[:1], leaves[k]])
            local[k] = lt
        modules = dict(model.named_modules())
        calls: dict[str, list] = {m: [] for m in set(owners.values())}

        def capture(m):
            def hook(mod, inp, out):
                calls[m].append((inp[0], out))
                return out.clone()  # what follows may act in place (ReLU(inplace)); keep `out` intact
            return hook

        hooks = [modules[m].register_forward_hook(capture(m)) for m in calls]
        try:
            logits = functional_call(model, p, (X,))
        finally:
            for h in hooks:
                h.remove()
        w = (1.0 / counts.to(torch.float32))[seg]
        per_sample = F.binary_cross_entropy_with_logits(logits, batch.y, reduction="none")
        outs = [out for m in calls for _, out in calls[m]]
        grads = torch.autograd.grad((per_sample * w).sum(), list(leaves.values()) + outs)
        g_tables = dict(zip(leaves, grads[: len(leaves)]))
        g_out = iter(grads[len(leaves):])
        dense = {k: torch.zeros((C, *params[k].shape), dtype=params[k].dtype) for k in owners}
        # per-client weight sums: a client's samples are contiguous (batch.ptr), so with enough of them
        # one matrix product per client on its slice beats gathering padded buckets (3-4x at MovieLens-20M
        # size: 100 clients x ~135 samples); many tiny clients go in buckets
        loop = C > 0 and float(counts.to(torch.float64).mean()) >= self.loop_min_mean
        ptr_list = batch.ptr.tolist()
        buckets = [] if loop else [torch.as_tensor(b) for b in plan_buckets(to_numpy(counts), self.slack, self.max_cells)]
        for m in calls:
            wname, bname = f"{m}.weight", f"{m}.bias"
            for inp, _ in calls[m]:
                g = next(g_out)
                a2 = inp.detach().reshape(-1, inp.shape[-1])
                g2 = g.reshape(-1, g.shape[-1])
                r = a2.shape[0] // S  # rows per sample (1 unless the layer sees [B, T, in])
                if bname in dense:
                    dense[bname].index_add_(0, seg.repeat_interleave(r) if r > 1 else seg, g2)
                if wname in dense and loop:
                    W = dense[wname]
                    for c in range(C):
                        a, b = ptr_list[c] * r, ptr_list[c + 1] * r
                        if b > a:
                            W[c].addmm_(g2[a:b].T, a2[a:b])
                elif wname in dense:
                    ptr = batch.ptr * r
                    for b in buckets:
                        n_max = int(counts[b].max()) * r
                        pos = self.ptr_positions(ptr, b, n_max)
                        ok = (pos >= 0).unsqueeze(-1)
                        A = torch.where(ok, a2[pos.clamp_min(0)], 0.0)
                        G = torch.where(ok, g2[pos.clamp_min(0)], 0.0)
                        dense[wname][b] += torch.bmm(G.transpose(1, 2), A)
        if was_training:
            model.train()
        losses = torch.zeros(C).index_add_(0, seg, per_sample.detach()) / counts.to(torch.float32)
        return ClientUpdates(
            contexts=list(contexts),
            weights=counts.to(torch.float32),
            dense={k: opt.first_increment(dense[k]) for k in params if k in dense},
            tables={k: TableRows(ptr=lt.ptr, rows=lt.rows, values=opt.first_increment(g_tables[k]), n_rows=params[k].shape[0])
                    for k, lt in local.items()},
            loss=losses,
        )

    def summed_update(self, model, params, batch: RoundBatch, contexts, lr: float, masks=None) -> ClientUpdates:
        """FedAvg of one-step client updates, computed directly.

        With one local step ``Δ_c = -lr ∇ mean_{s∈c} ℓ_s``, so ``Σ_c n_c Δ_c = -lr ∇ Σ_s ℓ_s``: the
        weighted sum of the clients' updates is one gradient of the summed loss over their pooled
        samples. Clients that train the same sub-model (same masks) form one group; an entry's
        average divides by the sample count of the groups that hold it; table rows divide by all
        clients' samples (:func:`rf2.aggregation.fedavg`).

        Only the table rows the round's samples index (and row 0) can change, so for models that
        read their tables only there (``tables_read_by_index_only``: DLRM, DIN) the gradient is
        taken with respect to those rows alone, the inputs' indices renumbered into them: no
        table-sized gradient, zeros or copies per round (at Taobao's 847k items that was most of
        a round's time, in page faults).
        """
        from rf2.aggregation import RowUpdate

        was_training = model.training
        model.eval()
        C = batch.n_clients
        counts = batch.counts()
        seg = batch.segment()
        table_cols = table_index_columns(model)
        if masks is None:
            group_of = torch.zeros(C, dtype=torch.long)
        else:
            flat = torch.cat([m.reshape(C, -1) for m in masks.values()], dim=1).to(torch.uint8)
            _, group_of = torch.unique(flat, dim=0, return_inverse=True)
        shapes = {k: tuple(v.shape) for k, v in params.items()}
        X = batch.X
        rows_of: dict[str, torch.Tensor] = {}
        if getattr(model, "tables_read_by_index_only", False) and not (masks and set(masks) & set(table_cols)):
            X = X.clone()
            for k, cols in table_cols.items():
                rows_of[k] = _touched_rows(batch.X, cols, params[k].shape[0])
                new_index = torch.full((params[k].shape[0],), -1, dtype=torch.long)
                new_index[rows_of[k]] = torch.arange(rows_of[k].numel())
                for a, b in cols:
                    X[:, a:b] = new_index[batch.X[:, a:b].long()].to(X.dtype)
            params = {k: v[rows_of[k]] if k in rows_of else v for k, v in params.items()}
        num = {k: torch.zeros_like(v) for k, v in params.items()}
        den = {k: torch.zeros_like(v) for k, v in params.items() if k not in table_cols}
        losses = torch.zeros(C)
        for g in torch.unique(group_of).tolist():
            members = torch.nonzero(group_of == g).flatten()
            sel = (group_of[seg] == g)
            Xg, yg, sg = X[sel], batch.y[sel], seg[sel]
            leaves = {k: v.detach().requires_grad_(True) for k, v in params.items()}
            m = {} if masks is None else {k: masks[k][members[0]] for k in masks}
            eff = {k: v * m[k] if k in m else v for k, v in leaves.items()}
            per_sample = F.binary_cross_entropy_with_logits(functional_call(model, eff, (Xg,)), yg, reduction="none")
            grads = torch.autograd.grad(per_sample.sum(), list(leaves.values()))
            losses.index_add_(0, sg, per_sample.detach())
            n_g = counts[members].sum().to(torch.float32)
            for (k, _), gk in zip(leaves.items(), grads):
                num[k].add_(gk, alpha=-lr)
                if k in den:
                    den[k].add_(n_g * m[k] if k in m else n_g)
        if was_training:
            model.train()
        total = counts.sum().to(torch.float32)
        out = {}
        for k in params:
            if k in rows_of:  # trained on its touched rows alone
                out[k] = RowUpdate(rows_of[k], num[k] / total)
            elif k in table_cols:
                rows = _touched_rows(batch.X, table_cols[k], params[k].shape[0])
                out[k] = RowUpdate(rows, num[k][rows] / total)
            else:
                out[k] = torch.where(den[k] > 0, num[k] / den[k].clamp_min(1e-30), torch.zeros_like(num[k]))
        return ClientUpdates(
            contexts=list(contexts), weights=counts.to(torch.float32), dense={}, tables={}, masks=masks,
            loss=losses / counts.to(torch.float32), shapes=shapes, summed=out,
        )

    @staticmethod
    def ptr_positions(ptr: torch.Tensor, clients: torch.Tensor, width: int) -> torch.Tensor:
        """``[len(clients), width]`` flat positions ``ptr[c] + j`` for ``j < count_c``, else -1."""
        start = ptr[clients]
        n = ptr[clients + 1] - start
        j = torch.arange(width)
        return torch.where(j[None, :] < n[:, None], start[:, None] + j[None, :], -1)


def _touched_rows(X: torch.Tensor, columns: list[tuple[int, int]], n_rows: int) -> torch.Tensor:
    """Sorted unique rows of a table that ``X`` indexes in ``columns``, and row 0 (as every engine
    reports it: :func:`rf2.clients.reference.touched_rows`), by marking: O(rows + entries), not a
    sort of the ~10^6 history entries of a round."""
    touched = torch.zeros(n_rows, dtype=torch.bool)
    touched[0] = True
    for a, b in columns:
        touched[X[:, a:b].reshape(-1).long()] = True
    return touched.nonzero().squeeze(1)
