"""FedEM's client side: elastic merge and local training of whole personal models
(``fedem-method.md`` §3, §4.1-4.2).

Each client keeps ``(p_u, Q^l_u, Θ_u)``: user embedding ``[d]``, a full local item table
``[n, d]`` and the adapter's weights. A client that holds a personalised global table ``G_u``:

* **round start** (§4.1, ``merge_start``): ``Q^l ← Q^l + ρ ⊙ (G - Q^l)`` with
  ``ρ = adapter_Θ([Q^l ; G - Q^l])`` row by row, no gradient;
* **every batch** (§4.2) takes two steps: (1) the adapter, on the loss with the merged table
  ``q^m = q^l + ρ (g - q^l)`` (``merge_forward``); (2) ``p`` and ``Q^l`` on the loss recomputed
  with the updated adapter (the gradient reaches ``q^l`` through the merge and through ``ρ``).

A client without ``G`` takes one plain step per batch on ``(p, Q^l)`` with ``q = q^l``. Two fresh
Adam optimisers per client per round (lr ``lr_embedding`` and ``lr_adapter``, betas
(0.9, 0.999)); the item table is dense, so Adam moves every row whose moments are non-zero
(§7 item 10). Batches and epochs follow :class:`~rf2.clients.local.LocalTraining` (FedEM: 10
epochs of 256, the cumulative-mean early stop). ``rho``: ``None`` = the adapter, or a fixed
number (the "no adapter" baseline; ``1`` with ``merge_forward = False`` is static replacement).

The loss is the mean binary cross-entropy of ``σ(pᵀq)`` per batch (computed from the logit; the
authors apply ``BCELoss`` to the sigmoid, which differs only where it saturates). A batch's loss
for the early stop and the log is the one of its last step (the backbone step).

Both engines update the clients' rows of the run's stacked models in place and are tested equal
(``tests/test_fedem.py``): :func:`train_reference` (one client at a time, ``torch.optim.Adam`` on
full tensors, as the authors' code) and :func:`train_batched`: each client trains only the rows
its samples touch, by a compiled loop per client (:mod:`rf2.clients.fedem_compiled`, numba), or
without numba by tensor operations over all clients in lock-step (:func:`_train_tensor`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from rf2.device import to_numpy
from rf2.models.fcf import adapter_rho

from . import fedem_compiled
from .local import EpochLosses, LocalTraining, batch_orders, should_stop
from .optim import _FUSED


@dataclass
class ClientModels:
    """The clients' personal models, stacked: ``P [C, d]``, ``Q [C, n, d]``, ``A``: the adapter's
    weights and biases, each ``[C, *shape]``."""

    P: torch.Tensor
    Q: torch.Tensor
    A: list[torch.Tensor]

    def select(self, idx) -> "ClientModels":
        return ClientModels(self.P[idx], self.Q[idx], [a[idx] for a in self.A])


@dataclass(frozen=True)
class FedEMTraining:
    local: LocalTraining
    lr_embedding: float = 0.1
    lr_adapter: float = 0.1
    rho: float | None = None  # None: the adapter; a number: fixed merge weight
    merge_forward: bool = True
    eps: float = 1e-8  # Adam's epsilon (tests use a larger one, see rf2.clients.optim)


def merge(Q: torch.Tensor, G: torch.Tensor, A: list[torch.Tensor], rho: float | None) -> torch.Tensor:
    """``Q + ρ ⊙ (G - Q)`` row by row (§3, elastic merge); ``[C, n, d]``."""
    r = adapter_rho(A, Q, G) if rho is None else torch.full(Q.shape[:2], float(rho))
    return Q + r[..., None] * (G - Q)


def _logits(P, Q, A, G, holder, items, cfg: FedEMTraining):
    """``[C, W]`` logits ``p_cᵀ q_{c,i}`` of each client's batch items (merged for holders)."""
    ar = torch.arange(Q.shape[0])[:, None]
    ql = Q[ar, items]
    if cfg.merge_forward and G is not None:
        g = G[ar, items]
        r = adapter_rho(A, ql, g) if cfg.rho is None else torch.full(ql.shape[:2], float(cfg.rho))
        q = torch.where(holder[:, None, None], ql + r[..., None] * (g - ql), ql)
    else:
        q = ql
    return (P[:, None, :] * q).sum(-1)


def _epoch_orders(plan: LocalTraining, ptr: torch.Tensor, clients: torch.Tensor, counts: torch.Tensor,
                  contexts: Sequence) -> np.ndarray:
    """Every epoch's sample order of each client in ``clients``, client after client, epoch after
    epoch (``epochs × counts[c]`` positions into the round's samples per client): the orders of
    :func:`~rf2.clients.local.batch_orders`, so the same batches in the same order as the
    reference (batch ``j`` of an epoch = its positions ``j * batch_size ...``)."""
    n = to_numpy(counts[clients])
    out = np.empty(int(n.sum()) * plan.epochs, dtype=np.int64)
    a = 0
    for i, c in enumerate(clients.tolist()):
        nc, s0 = int(n[i]), int(ptr[c])
        for order in batch_orders(plan, contexts[c].seed if not plan.full_batch else 0, nc):
            out[a : a + nc] = order + s0
            a += nc
    return out


class _Adam:
    """In-place Adam (torch's defaults, the formula of :mod:`rf2.clients.optim`) on tensors whose
    leading axis is the client or a client's row. A step updates a prefix of each tensor (the
    clients still training, and their rows: clients are sorted by their number of steps) or the
    rows ``idx``; every client stepping at a given time has taken the same number of steps, so
    ``t`` is one number."""

    def __init__(self, lr: float, eps: float, params: list[torch.Tensor]):
        self.lr, self.eps, self.b1, self.b2 = lr, eps, 0.9, 0.999
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]

    def step(self, params: list[torch.Tensor], grads: list[torch.Tensor], t: int, prefix: Sequence[int] | None = None,
             idx: torch.Tensor | None = None) -> None:
        if idx is not None:
            ps, ms, vs = ([x.index_select(0, idx) for x in xs] for xs in (params, self.m, self.v))
        else:
            ps, ms, vs = ([x[:k] for x, k in zip(xs, prefix)] for xs in (params, self.m, self.v))
        grads = [g.contiguous() for g in grads]
        if _FUSED is not None:  # one pass per tensor (torch's fused CPU Adam; same formula)
            _FUSED(ps, grads, ms, vs, [], [torch.tensor(float(t)) for _ in ps], lr=self.lr, beta1=self.b1,
                   beta2=self.b2, weight_decay=0.0, eps=self.eps, amsgrad=False, maximize=False)
        else:
            c1, c2 = 1 - self.b1 ** t, 1 - self.b2 ** t
            for p, g, m, v in zip(ps, grads, ms, vs):
                m.mul_(self.b1).add_(g, alpha=1 - self.b1)
                v.mul_(self.b2).addcmul_(g, g, value=1 - self.b2)
                p.sub_(self.lr * (m / c1) / ((v / c2).sqrt() + self.eps))
        if idx is not None:  # gathered copies: write back
            for x, xi in zip(params + self.m + self.v, ps + ms + vs):
                x.index_copy_(0, idx, xi)


class _Adapter:
    """The adapter MLP on ``[H, W, d]`` rows of ``H`` clients with its backward pass written out
    (the same numbers as autograd through :func:`adapter_rho`, without its per-op overhead).
    ``weights``: ``[H, out, in]`` weights and ``[H, out]`` biases, alternating."""

    def __init__(self, weights: list[torch.Tensor], ql: torch.Tensor, g: torch.Tensor):
        self.W = weights
        self.x = [torch.cat([ql, g - ql], dim=-1)]  # layer inputs
        self.z = []  # pre-activations
        n = len(weights) // 2
        for i in range(n):
            z = torch.baddbmm(weights[2 * i + 1][:, None, :], self.x[-1], weights[2 * i].transpose(1, 2))
            self.z.append(z)
            if i < n - 1:
                self.x.append(torch.relu(z))
        self.rho = torch.sigmoid(self.z[-1].squeeze(-1))  # [H, W]

    def backward(self, d_rho: torch.Tensor, weights: bool, inputs: bool) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """For ``∂L/∂ρ = d_rho``: with ``weights``, the gradients of the weights; with ``inputs``,
        ``∂L/∂q^l`` through ``ρ`` (the input is ``[q^l ; g - q^l]``)."""
        dz = (d_rho * self.rho * (1 - self.rho))[..., None]
        grads: list[torch.Tensor] = []
        dx = None
        for i in range(len(self.z) - 1, -1, -1):
            if weights:
                grads[:0] = [torch.bmm(dz.transpose(1, 2), self.x[i]), dz.sum(1)]
            if i or inputs:
                dx = torch.bmm(dz, self.W[2 * i])
            if i:
                dz = dx * (self.z[i - 1] > 0)
        if not inputs:
            return grads, None
        d = dx.shape[-1] // 2
        return grads, dx[..., :d] - dx[..., d:]


@dataclass
class _Layout:
    """A round's clients in training order (longest first), their batches and their touched rows.

    ``cl[i]``: the client (``0..C-1``) at position ``i``; ``T``: its steps; ``n``: its samples;
    ``nb``: its batches per epoch; ``cstart[i]``: its first cell. The cells are every epoch's
    sample order (:func:`_epoch_orders`), position after position; ``cell_row``/``cell_y``: each
    cell's row among its position's rows of the ragged table of touched rows (``0..``) and its
    label. That table holds the
    positions' touched rows one position after another (``rptr``), row ``j`` being item
    ``rows[j]`` of position ``row_client[j]``."""

    plan: LocalTraining
    cl: torch.Tensor
    T: torch.Tensor
    n: torch.Tensor
    nb: torch.Tensor
    cstart: torch.Tensor
    rptr: torch.Tensor
    row_client: torch.Tensor
    rows: torch.Tensor
    cell_row: torch.Tensor
    cell_y: torch.Tensor

    @classmethod
    def of(cls, plan: LocalTraining, items: torch.Tensor, labels: torch.Tensor, ptr: torch.Tensor,
           contexts: Sequence, n_items: int) -> "_Layout":
        counts = ptr[1:] - ptr[:-1]
        C = counts.numel()
        total = torch.as_tensor(plan.total_steps(to_numpy(counts)))
        cl = torch.argsort(total, descending=True, stable=True)
        cnt = counts[cl]
        pos_all = torch.arange(int(cnt.sum())) + torch.repeat_interleave(ptr[cl] - (cnt.cumsum(0) - cnt), cnt)
        owner = torch.repeat_interleave(torch.arange(C), cnt)
        uniq, inv = torch.unique(owner * n_items + items[pos_all], return_inverse=True)
        row_client = torch.div(uniq, n_items, rounding_mode="floor")
        rows = uniq - row_client * n_items
        rptr = torch.cat([torch.zeros(1, dtype=torch.long), torch.bincount(row_client, minlength=C).cumsum(0)])
        local_row = torch.empty(labels.numel(), dtype=torch.long)  # sample -> its row among its client's
        local_row[pos_all] = inv - rptr[owner]
        cells = torch.as_tensor(_epoch_orders(plan, ptr, cl, counts, contexts))
        per = cnt * plan.epochs
        return cls(plan=plan, cl=cl, T=total[cl], n=cnt, nb=torch.as_tensor(plan.n_batches(to_numpy(cnt))),
                   cstart=per.cumsum(0) - per, rptr=rptr, row_client=row_client, rows=rows,
                   cell_row=local_row[cells], cell_y=labels[cells].to(torch.float32))

    def padded(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(bstart [C], b_row, b_y, b_w [B, W])``: the batches as rows of a padded table (position
        ``i``'s ``epochs × nb`` batches from row ``bstart[i]``, in training order), each cell's
        table row, label and loss weight (1 / the batch's size; row 0, label 0, weight 0 on
        padding)."""
        plan, n, nb = self.plan, self.n, self.nb
        W = max(1, int(n.max()) if plan.full_batch else min(plan.batch_size, int(n.max())))
        per_b = nb * plan.epochs
        bstart = per_b.cumsum(0) - per_b
        B = int(per_b.sum())
        owner = torch.repeat_interleave(torch.arange(n.numel()), n * plan.epochs)
        o = torch.arange(self.cell_row.numel()) - self.cstart[owner]  # offset among the position's cells
        e, k = torch.div(o, n[owner], rounding_mode="floor"), o % n[owner]
        flat = (bstart[owner] + e * nb[owner] + torch.div(k, W, rounding_mode="floor")) * W + k % W
        b_row = torch.zeros(B * W, dtype=torch.long)
        b_y = torch.zeros(B * W)
        b_w = torch.zeros(B * W)
        b_row[flat], b_y[flat], b_w[flat] = self.cell_row + self.rptr[owner], self.cell_y, 1.0
        b_w = b_w.view(B, W)
        return bstart, b_row.view(B, W), b_y.view(B, W), b_w / b_w.sum(1, keepdim=True).clamp_min(1)


def train_batched(models: ClientModels, clients: torch.Tensor, G: torch.Tensor | None, holder: torch.Tensor,
                  items: torch.Tensor, labels: torch.Tensor, ptr: torch.Tensor, contexts: Sequence,
                  cfg: FedEMTraining, compiled: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """All of a round's clients at once, **in place**: client ``c`` (``0..C-1``) owns the models'
    row ``clients[c]``, whose ``P``, touched ``Q`` rows and adapter are overwritten with the
    trained ones. ``items``/``labels``: ``[S]`` the round's samples grouped by client (``ptr``);
    ``holder``: ``[C]``; ``G``: ``[H, n, d]`` the personalised tables of the holders, in client
    order, or ``None``. Returns each client's mean batch loss and its local epochs run.

    Equal to :func:`train_reference` (same batches, same order), by the compiled per-client loop
    of :mod:`rf2.clients.fedem_compiled` (``compiled``: ``None`` = when numba is installed) or
    else by tensor operations over all clients in lock-step (:func:`_train_tensor`)."""
    if not (models.P.is_contiguous() and models.Q.is_contiguous()):
        raise ValueError("FedEM training updates the clients' models in place: P and Q must be contiguous tensors")
    if compiled is None:  # numba runs on CPU arrays only
        compiled = fedem_compiled.AVAILABLE and models.P.device.type == "cpu"
    return (_train_compiled if compiled else _train_tensor)(models, clients, G, holder, items, labels, ptr,
                                                            contexts, cfg)


def _train_compiled(models: ClientModels, clients: torch.Tensor, G: torch.Tensor | None, holder: torch.Tensor,
                    items: torch.Tensor, labels: torch.Tensor, ptr: torch.Tensor, contexts: Sequence,
                    cfg: FedEMTraining) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`train_batched` by :func:`rf2.clients.fedem_compiled.train` (numba, clients in parallel)."""
    plan = cfg.local
    C, d = holder.numel(), models.Q.shape[2]
    lay = _Layout.of(plan, items, labels, ptr, contexts, models.Q.shape[1])
    own = clients[lay.cl]
    n_items = models.Q.shape[1]
    P = models.P.index_select(0, own)
    flat_rows = own[lay.row_client] * n_items + lay.rows  # the touched rows in the models' [N * n, d] view
    Q = models.Q.view(-1, d).index_select(0, flat_rows)
    use_merge = cfg.merge_forward and G is not None
    hb = holder[lay.cl] & use_merge
    Gl = torch.zeros(1, d)
    if use_merge:  # the holders' G rows (zero for the others, never read)
        Gl = torch.zeros_like(Q)
        hrow = torch.nonzero(hb[lay.row_client]).flatten()
        hpos = torch.cumsum(holder.long(), 0) - 1  # a holder's row of G
        g_rows = hpos[lay.cl[lay.row_client[hrow]]] * n_items + lay.rows[hrow]
        Gl.index_copy_(0, hrow, G.reshape(-1, d).index_select(0, g_rows))
    shapes = [a.shape[1:] for a in models.A]
    A = torch.cat([a[own].reshape(C, -1) for a in models.A], 1).contiguous()
    widths = np.array([shapes[0][1]] + [sh[0] for sh in shapes[0::2]], dtype=np.int64)  # [2d, ..., 1]
    loss, ep = fedem_compiled.train(
        P.numpy(), Q.numpy(), Gl.numpy(), hb.numpy(), A.numpy(), widths, cfg.rho, cfg.lr_embedding, cfg.lr_adapter,
        cfg.eps, lay.rptr.numpy(), lay.cell_row.numpy(), lay.cell_y.numpy(), lay.cstart.numpy(),
        lay.n.numpy(), plan.epochs, plan.batch_size or int(lay.n.max()), plan.steps, plan.early_stop, plan.threshold,
        torch.get_num_threads())
    models.P.index_copy_(0, own, P)
    models.Q.view(-1, d).index_copy_(0, flat_rows, Q)
    sizes = [int(np.prod(sh, dtype=np.int64)) for sh in shapes]
    for i, x in enumerate(A.split(sizes, 1)):
        models.A[i][own] = x.reshape(C, *shapes[i])
    losses, epochs_run = torch.zeros(C), torch.zeros(C, dtype=torch.long)
    losses[lay.cl] = torch.as_tensor(loss).to(torch.float32)
    epochs_run[lay.cl] = torch.as_tensor(ep)
    return losses, epochs_run


def _train_tensor(models: ClientModels, clients: torch.Tensor, G: torch.Tensor | None, holder: torch.Tensor,
                  items: torch.Tensor, labels: torch.Tensor, ptr: torch.Tensor, contexts: Sequence,
                  cfg: FedEMTraining) -> tuple[torch.Tensor, torch.Tensor]:
    """All clients in lock-step with tensor operations (any device; the holders' path):

    * **touched rows only**: each client trains a local copy of the rows its samples of the round
      index (row ``r`` of client ``c``'s table is read by no other sample, so its gradient is zero
      at every step and Adam, starting from zero moments, never moves it: exact). The clients'
      local rows are one ragged ``[R, d]`` table, client after client (no padding);
    * **one lock-step pass**: clients are sorted by their number of steps, longest first, so the
      clients still training at step ``s`` are a prefix of them and their rows a prefix of the
      ragged table: a step's Adam runs on two contiguous slices. A client that stops early keeps
      the state it had when it stopped;
    * **gradients by hand**, for the plain clients (``∂L/∂q = (σ(pᵀq) - y) w p``,
      ``∂L/∂p = Σ (σ(pᵀq) - y) w q``) and through the holders' merge and adapter (:class:`_Adapter`).
    """
    plan = cfg.local
    C = holder.numel()
    out = models
    train_adapter = cfg.rho is None and cfg.merge_forward and G is not None
    use_merge = cfg.merge_forward and G is not None
    d = out.Q.shape[2]
    lay = _Layout.of(plan, items, labels, ptr, contexts, out.Q.shape[1])
    cl, T, rptr, row_client, rows = lay.cl, lay.T, lay.rptr, lay.row_client, lay.rows
    bstart, b_row, b_y, b_w = lay.padded()
    Wd = b_row.shape[1]
    own = clients[cl]  # the models' row of each position
    Q = out.Q[own[row_client], rows]  # [R, d]
    hb = holder[cl]
    Gl = None
    if use_merge:  # the holders' G rows (zero for the others, never read)
        Gl = torch.zeros_like(Q)
        hrow = hb[row_client]
        hpos = torch.cumsum(holder.long(), 0) - 1  # a holder's row of G
        Gl[hrow] = G[hpos[cl[row_client[hrow]]], rows[hrow]]
    gQ = torch.zeros_like(Q)  # a step's table gradient (zero outside its rows: cleared after use)
    P = out.P[own]
    # the adapters as one [C, n_weights] tensor (one gather, one Adam step, one write-back per step)
    shapes = [a.shape[1:] for a in out.A]
    sizes = [int(np.prod(sh, dtype=np.int64)) for sh in shapes]
    A = torch.cat([a[own].reshape(C, -1) for a in out.A], 1) if out.A else torch.zeros(C, 0)

    def layers(flat: torch.Tensor) -> list[torch.Tensor]:
        return [x.reshape(flat.shape[0], *sh) for x, sh in zip(flat.split(sizes, 1), shapes)]

    emb = _Adam(cfg.lr_embedding, cfg.eps, [P, Q])
    ada = _Adam(cfg.lr_adapter, cfg.eps, [A])
    nb_steps = lay.nb * plan.steps  # steps per epoch
    stopped = torch.zeros(C, dtype=torch.bool)
    frozen: dict[int, tuple] = {}  # position -> (P, Q rows) when it stopped early (Adam's moments would
    # move them further; its adapter is only stepped while it trains)
    track = EpochLosses(C, plan)
    n_active = [int((T > s).sum()) for s in range(int(T.max()))] if C else []
    for s, k in enumerate(n_active):
        active = ~stopped[:k]
        if not bool(active.any()):
            break
        bi = bstart[:k] + s // plan.steps  # each client's batch of this step
        flat = b_row.index_select(0, bi).view(-1)  # [k W] rows of the ragged table
        y = b_y.index_select(0, bi)
        w = b_w.index_select(0, bi)
        if bool(stopped[:k].any()):  # stopped clients idle (their state is restored at the end)
            w = w * active[:, None]
        ql = Q.index_select(0, flat).view(k, Wd, d)
        p = P[:k]
        h = torch.nonzero(hb[:k] & active).flatten() if use_merge else None
        only_holders = h is not None and h.numel() == k  # (all training): no plain step to take
        if not only_holders:  # the plain step for all (holders' rows replaced below; stopped clients: w = 0)
            logit = torch.bmm(ql, p[:, :, None]).squeeze(-1)  # [k, W]
            value = (F.binary_cross_entropy_with_logits(logit, y, reduction="none") * w).sum(1)
            dlogit = (torch.sigmoid(logit) - y) * w
            gql = dlogit[..., None] * p[:, None, :]
            gp = torch.bmm(dlogit[:, None, :], ql).squeeze(1)
        if h is not None and h.numel():
            ql_h, y_h, w_h, p_h = ql.index_select(0, h), y.index_select(0, h), w.index_select(0, h), p.index_select(0, h)
            g_h = Gl.index_select(0, flat.view(k, Wd).index_select(0, h).reshape(-1)).view(h.numel(), Wd, d)
            diff = g_h - ql_h
            pd = torch.bmm(diff, p_h[:, :, None]).squeeze(-1)  # pᵀ(g - q^l), [H, W]
            if train_adapter:  # step 1: the holders' adapters, on the merged loss
                net = _Adapter(layers(A.index_select(0, h)), ql_h, g_h)
                lg = torch.bmm(ql_h, p_h[:, :, None]).squeeze(-1) + net.rho * pd
                grads, _ = net.backward((torch.sigmoid(lg) - y_h) * w_h * pd, weights=True, inputs=False)
                ada.step([A], [torch.cat([x.reshape(h.numel(), -1) for x in grads], 1)], t=s + 1, idx=h)
                net = _Adapter(layers(A.index_select(0, h)), ql_h, g_h)  # step 2 with the updated adapter
                r = net.rho
            else:
                r = torch.full(ql_h.shape[:2], float(cfg.rho))
            q_h = ql_h + r[..., None] * diff
            lg = torch.bmm(q_h, p_h[:, :, None]).squeeze(-1)
            value_h = (F.binary_cross_entropy_with_logits(lg, y_h, reduction="none") * w_h).sum(1)
            dl = (torch.sigmoid(lg) - y_h) * w_h
            gp_h = torch.bmm(dl[:, None, :], q_h).squeeze(1)
            g_ql = (dl * (1 - r))[..., None] * p_h[:, None, :]
            if train_adapter:  # and through ρ
                g_ql = g_ql + net.backward(dl * pd, weights=False, inputs=True)[1]
            if only_holders:  # h = 0..k-1
                value, gp, gql = value_h, gp_h, g_ql
            else:
                value.index_copy_(0, h, value_h)
                gp.index_copy_(0, h, gp_h)
                gql.index_copy_(0, h, g_ql)
        gQ.index_add_(0, flat, gql.reshape(-1, d))
        emb.step([P, Q], [gp, gQ[: int(rptr[k])]], t=s + 1, prefix=(k, int(rptr[k])))
        gQ.index_fill_(0, flat, 0.0)
        if s % plan.steps == plan.steps - 1:  # a batch's last step: its loss counts
            track.add(value, active)
        ends = torch.zeros(C, dtype=torch.bool)
        ends[:k] = active & ((s + 1) % nb_steps[:k] == 0)
        if bool(ends.any()):
            stop = track.early_stops(ends)
            for c in torch.nonzero(stop).flatten().tolist():
                frozen[c] = (P[c].clone(), Q[rptr[c] : rptr[c + 1]].clone())
            stopped |= stop
            track.close_epochs(ends)
    for c, (pc_, qc) in frozen.items():
        P[c], Q[rptr[c] : rptr[c + 1]] = pc_, qc
    out.P[own] = P
    out.Q[own[row_client], rows] = Q
    for i, a in enumerate(layers(A)):
        out.A[i][own] = a
    losses = torch.zeros(C)
    epochs_run = torch.zeros(C, dtype=torch.long)
    losses[cl] = track.mean().to(torch.float32)
    epochs_run[cl] = track.done
    return losses, epochs_run


def train_reference(models: ClientModels, clients: torch.Tensor, G: torch.Tensor | None, holder: torch.Tensor,
                    items: torch.Tensor, labels: torch.Tensor, ptr: torch.Tensor, contexts: Sequence,
                    cfg: FedEMTraining) -> tuple[torch.Tensor, torch.Tensor]:
    """One client at a time, as the authors' code: full tensors, two ``torch.optim.Adam``. Same
    arguments and in-place update as :func:`train_batched`."""
    plan = cfg.local
    C = holder.numel()
    out = models
    losses, epochs_run = torch.zeros(C), torch.zeros(C, dtype=torch.long)
    train_adapter = cfg.rho is None and cfg.merge_forward and G is not None
    hpos = torch.cumsum(holder.long(), 0) - 1
    for c in range(C):
        a0, a1 = int(ptr[c]), int(ptr[c + 1])
        it_c, y_c = items[a0:a1], labels[a0:a1]
        n = a1 - a0
        u = int(clients[c])
        p = out.P[u : u + 1].clone().requires_grad_(True)
        q = out.Q[u : u + 1].clone().requires_grad_(True)
        ad = [a[u : u + 1].clone().requires_grad_(True) for a in out.A]
        h = holder[c : c + 1]
        g = G[hpos[c] : hpos[c] + 1] if G is not None and bool(h[0]) else None
        emb = torch.optim.Adam([p, q], lr=cfg.lr_embedding, eps=cfg.eps)
        ada = torch.optim.Adam(ad, lr=cfg.lr_adapter, eps=cfg.eps)
        size = n if plan.full_batch else plan.batch_size
        seen, ep_means, cum = [], [], []
        for order in batch_orders(plan, contexts[c].seed if not plan.full_batch else 0, n):
            this = []
            for a in range(0, n, size):
                idx = torch.as_tensor(order[a : a + size])
                it, y = it_c[idx][None], y_c[idx][None]
                for _ in range(plan.steps):
                    if train_adapter and g is not None:
                        ada.zero_grad()
                        F.binary_cross_entropy_with_logits(_logits(p.detach(), q.detach(), ad, g, h, it, cfg), y).backward()
                        ada.step()
                    emb.zero_grad()
                    loss = F.binary_cross_entropy_with_logits(_logits(p, q, [x.detach() for x in ad], g, h, it, cfg), y)
                    loss.backward()
                    emb.step()
                this.append(float(loss.detach()))
            seen += this
            ep_means.append(sum(this) / len(this))
            cum.append(sum(seen) / len(seen))
            if should_stop(plan, ep_means, cum):
                break
        out.P[u], out.Q[u] = p.detach()[0], q.detach()[0]
        for i, x in enumerate(ad):
            out.A[i][u] = x.detach()[0]
        losses[c] = sum(seen) / len(seen)
        epochs_run[c] = len(ep_means)
    return losses, epochs_run


def scores(models: ClientModels, G: torch.Tensor | None, holder: torch.Tensor, items: np.ndarray,
           rho: float | None, merge_eval: bool = True, rows: torch.Tensor | None = None) -> np.ndarray:
    """``[C, k]`` logits of each client's candidate ``items`` with its own model (client ``c``'s
    is the models' row ``rows[c]``; default ``c``); holders score with their table merged once with
    their ``G`` (``[H, n, d]``, holders in client order; §5)."""
    it = torch.as_tensor(np.asarray(items, dtype=np.int64))
    own = torch.arange(it.shape[0]) if rows is None else rows
    with torch.no_grad():
        ql = models.Q[own[:, None], it]  # only the candidates' rows are read, never a whole table
        if G is not None and merge_eval:
            h = torch.nonzero(holder).flatten()
            qh, g = ql[h], G[torch.arange(h.numel())[:, None], it[h]]
            A = [a[own[h]] for a in models.A]
            r = adapter_rho(A, qh, g) if rho is None else torch.full(qh.shape[:2], float(rho))
            ql[h] = qh + r[..., None] * (g - qh)
        return to_numpy((models.P[own][:, None, :] * ql).sum(-1))
