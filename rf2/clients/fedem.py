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

Two engines, tested equal (``tests/test_fedem.py``): :func:`train_reference` (one client at a
time, ``torch.optim.Adam`` on full tensors, as the authors' code) and :func:`train_batched`
(all clients stacked, grouped into buckets by number of steps, lock-step with per-client masks,
the elementwise Adam of :mod:`rf2.clients.optim`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from rf2.models.fcf import adapter_rho

from .batched import BatchedEngine, plan_buckets
from .local import EpochLosses, LocalTraining, batch_orders, should_stop


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


class _Adam:
    """In-place Adam (torch's defaults, the formula of :mod:`rf2.clients.optim`) on tensors whose
    leading axis is the client; one step for the first ``k`` clients (those still training, a
    prefix: clients are sorted by their number of steps) or for the clients ``idx``; every client
    stepping at a given time has taken the same number of steps, so ``t`` is one number."""

    def __init__(self, lr: float, eps: float, params: list[torch.Tensor]):
        self.lr, self.eps, self.b1, self.b2 = lr, eps, 0.9, 0.999
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]

    def step(self, params: list[torch.Tensor], grads: list[torch.Tensor], t: int, k: int | None = None,
             idx: torch.Tensor | None = None) -> None:
        if idx is not None:
            ps, ms, vs = [p[idx] for p in params], [m[idx] for m in self.m], [v[idx] for v in self.v]
        else:
            ps, ms, vs = [p[:k] for p in params], [m[:k] for m in self.m], [v[:k] for v in self.v]
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
            for p, m, v, pi, mi, vi in zip(params, self.m, self.v, ps, ms, vs):
                p[idx], m[idx], v[idx] = pi, mi, vi


#: torch's fused CPU Adam kernel (torch >= 2.4), or None: then the same formula op by op
_FUSED = getattr(torch, "_fused_adam_", None)


def train_batched(models: ClientModels, G: torch.Tensor | None, holder: torch.Tensor, items: torch.Tensor,
                  labels: torch.Tensor, ptr: torch.Tensor, contexts: Sequence, cfg: FedEMTraining,
                  slack: float = 0.25) -> tuple[ClientModels, torch.Tensor, torch.Tensor]:
    """All clients at once. ``items``/``labels``: ``[S]`` the round's samples grouped by client
    (``ptr``); ``G``: ``[C, n, d]`` (rows of non-holders unused) or ``None``; ``holder``: ``[C]``.
    Returns the trained models, each client's mean batch loss and its local epochs run.

    Equal to :func:`train_reference` (same batches, same order) but:

    * **touched rows only**: each client trains a local copy of the rows its samples of the round
      index (row ``r`` of client ``c``'s table is read by no other sample, so its gradient is zero
      at every step and Adam, starting from zero moments, never moves it: exact);
    * **buckets in lock-step**: clients with similar numbers of steps train together, sorted by
      steps so the clients still training are always a prefix of the bucket (no masks); a client
      that stops early keeps the state it had when it stopped;
    * **gradients by hand** for the plain clients (``∂L/∂q = (σ(pᵀq) - y) w p``,
      ``∂L/∂p = Σ (σ(pᵀq) - y) w q``), autograd only for the holders' merge and adapter.
    """
    plan = cfg.local
    C = holder.numel()
    counts = ptr[1:] - ptr[:-1]
    n_batches = torch.from_numpy(plan.n_batches(counts.numpy()))
    total = n_batches * plan.epochs * plan.steps
    out = ClientModels(models.P.clone(), models.Q.clone(), [a.clone() for a in models.A])
    losses = torch.zeros(C)
    epochs_run = torch.zeros(C, dtype=torch.long)
    train_adapter = cfg.rho is None and cfg.merge_forward and G is not None
    use_merge = cfg.merge_forward and G is not None
    n_items = out.Q.shape[1]
    for b in (torch.from_numpy(x) for x in plan_buckets(total.numpy(), slack)):
        b = b[torch.argsort(total[b], descending=True, stable=True)]  # still-training clients = a prefix
        Cb = b.numel()
        order = BatchedEngine.batch_positions(plan, ptr, b, counts, n_batches, contexts)  # [Cb, E, nb, W]
        nb_max, n_slots = order.shape[2], order.shape[1] * order.shape[2]
        order_flat = order.reshape(-1, order.shape[3])
        # the rows each client touches this round, as a local table per client
        pos_all = torch.cat([torch.arange(int(ptr[c]), int(ptr[c + 1])) for c in b.tolist()])
        owner = torch.repeat_interleave(torch.arange(Cb), counts[b])
        uniq, inv = torch.unique(owner * n_items + items[pos_all], return_inverse=True)
        row_client = torch.div(uniq, n_items, rounding_mode="floor")
        rows = uniq - row_client * n_items
        n_rows = torch.bincount(row_client, minlength=Cb)
        rptr = torch.cat([torch.zeros(1, dtype=torch.long), n_rows.cumsum(0)])
        slot = torch.arange(uniq.numel()) - rptr[row_client]
        local_item = torch.zeros(labels.numel(), dtype=torch.long)
        local_item[pos_all] = slot[inv]
        u_max = int(n_rows.max())
        gbuf = torch.zeros(Cb * u_max, out.Q.shape[2])  # the table gradient of a step
        Q = torch.zeros(Cb, u_max, out.Q.shape[2])
        Q[row_client, slot] = out.Q[b[row_client], rows]
        Gl = None
        if use_merge:
            Gl = torch.zeros_like(Q)
            Gl[row_client, slot] = G[b[row_client], rows]
        P = out.P[b].clone()
        A = [a[b].clone() for a in out.A]
        hb = holder[b]
        emb = _Adam(cfg.lr_embedding, cfg.eps, [P, Q])
        ada = _Adam(cfg.lr_adapter, cfg.eps, A)
        nb, T = n_batches[b], total[b]
        stopped = torch.zeros(Cb, dtype=torch.bool)
        frozen: dict[int, tuple] = {}  # client -> (P, Q, A) when it stopped early
        track = EpochLosses(Cb, plan)
        for s in range(int(T.max())):
            k = int((T > s).sum())
            active = ~stopped[:k]
            if not bool(active.any()):
                break
            ar = torch.arange(k)
            bstep = s // plan.steps
            e = torch.div(bstep, nb[:k], rounding_mode="floor").clamp_max(plan.epochs - 1)
            # flat index_select everywhere: far cheaper than advanced indexing on CPU
            Wd = order.shape[-1]
            pos = order_flat.index_select(0, ar * n_slots + e * nb_max + bstep % nb[:k])  # [k, W]
            valid = (pos >= 0) & active[:, None]
            pc = pos.clamp_min(0).reshape(-1)
            it = torch.where(valid, local_item.index_select(0, pc).view(k, Wd), 0)
            y = torch.where(valid, labels.index_select(0, pc).view(k, Wd), 0.0)
            flat = (ar[:, None] * u_max + it).reshape(-1)  # [k * W] rows of the flattened local tables
            d = Q.shape[2]
            ql = Q[:k].reshape(-1, d).index_select(0, flat).view(k, Wd, d)  # [k, W, d]
            w = valid.to(torch.float32) / valid.sum(1, keepdim=True).clamp_min(1).to(torch.float32)
            h = torch.nonzero(hb[:k] & active).flatten() if use_merge else torch.zeros(0, dtype=torch.long)
            if train_adapter and h.numel():  # step 1: the holders' adapters
                ql_h = ql.index_select(0, h)
                flat_h = (h[:, None] * u_max + it.index_select(0, h)).reshape(-1)
                g_h = Gl.reshape(-1, d).index_select(0, flat_h).view(h.numel(), Wd, d)
                leaves = [a[h].requires_grad_(True) for a in A]
                q_h = ql_h + adapter_rho(leaves, ql_h, g_h)[..., None] * (g_h - ql_h)
                logit = (P[h][:, None, :] * q_h).sum(-1)
                loss = (F.binary_cross_entropy_with_logits(logit, y[h], reduction="none") * w[h]).sum()
                grads = torch.autograd.grad(loss, leaves)
                ada.step(A, list(grads), t=s + 1, idx=h)
            # step 2: p and the table rows, with the updated adapter
            p = P[:k]
            if h.numel():
                ql_h = ql[h].requires_grad_(True)
                p_h = p[h].requires_grad_(True)
                if not train_adapter:
                    flat_h = (h[:, None] * u_max + it.index_select(0, h)).reshape(-1)
                    g_h = Gl.reshape(-1, d).index_select(0, flat_h).view(h.numel(), Wd, d)
                if cfg.rho is None:
                    r = adapter_rho([a[h] for a in A], ql_h, g_h)
                else:
                    r = torch.full(ql_h.shape[:2], float(cfg.rho))
                q_h = ql_h + r[..., None] * (g_h - ql_h)
                logit_h = (p_h[:, None, :] * q_h).sum(-1)
                per_h = F.binary_cross_entropy_with_logits(logit_h, y[h], reduction="none") * w[h]
                gql_h, gp_h = torch.autograd.grad(per_h.sum(), [ql_h, p_h])
            logit = torch.bmm(ql, p[:, :, None]).squeeze(-1)  # [k, W]
            value = (F.binary_cross_entropy_with_logits(logit, y, reduction="none") * w).sum(1)
            dlogit = (torch.sigmoid(logit) - y) * w
            gql = dlogit[..., None] * p[:, None, :]
            gp = torch.bmm(dlogit[:, None, :], ql).squeeze(1)
            if h.numel():
                gql[h], gp[h] = gql_h, gp_h
                value[h] = per_h.detach().sum(1)
            gQ = gbuf[: k * u_max]  # zero outside this step's rows (cleared after use, not refilled)
            gQ.index_add_(0, flat, gql.reshape(-1, d))
            emb.step([P, Q], [gp, gQ.view(k, u_max, d)], t=s + 1, k=k)
            gQ.index_fill_(0, flat, 0.0)
            if s % plan.steps == plan.steps - 1:  # a batch's last step: its loss counts
                track.add(value, active)
            ends = torch.zeros(Cb, dtype=torch.bool)
            ends[:k] = active & ((s + 1) % (nb[:k] * plan.steps) == 0)
            if bool(ends.any()):
                stop = track.early_stops(ends)
                for c in torch.nonzero(stop).flatten().tolist():
                    frozen[c] = (P[c].clone(), Q[c].clone(), [a[c].clone() for a in A])
                stopped |= stop
                track.close_epochs(ends)
        for c, (pc_, qc, ac) in frozen.items():
            P[c], Q[c] = pc_, qc
            for i, a in enumerate(ac):
                A[i][c] = a
        out.P[b] = P
        out.Q[b[row_client], rows] = Q[row_client, slot]
        for i, a in enumerate(A):
            out.A[i][b] = a.detach()
        losses[b] = track.mean().to(torch.float32)
        epochs_run[b] = track.done
    return out, losses, epochs_run


def train_reference(models: ClientModels, G: torch.Tensor | None, holder: torch.Tensor, items: torch.Tensor,
                    labels: torch.Tensor, ptr: torch.Tensor, contexts: Sequence,
                    cfg: FedEMTraining) -> tuple[ClientModels, torch.Tensor, torch.Tensor]:
    """One client at a time, as the authors' code: full tensors, two ``torch.optim.Adam``."""
    plan = cfg.local
    C = holder.numel()
    out = ClientModels(models.P.clone(), models.Q.clone(), [a.clone() for a in models.A])
    losses, epochs_run = torch.zeros(C), torch.zeros(C, dtype=torch.long)
    train_adapter = cfg.rho is None and cfg.merge_forward and G is not None
    for c in range(C):
        a0, a1 = int(ptr[c]), int(ptr[c + 1])
        it_c, y_c = items[a0:a1], labels[a0:a1]
        n = a1 - a0
        p = out.P[c : c + 1].clone().requires_grad_(True)
        q = out.Q[c : c + 1].clone().requires_grad_(True)
        ad = [a[c : c + 1].clone().requires_grad_(True) for a in out.A]
        g = None if G is None else G[c : c + 1]
        h = holder[c : c + 1]
        emb = torch.optim.Adam([p, q], lr=cfg.lr_embedding, eps=cfg.eps)
        ada = torch.optim.Adam(ad, lr=cfg.lr_adapter, eps=cfg.eps)
        size = n if plan.full_batch else plan.batch_size
        seen, ep_means, cum = [], [], []
        for order in batch_orders(plan, contexts[c].seed if not plan.full_batch else 0, n):
            this = []
            for a in range(0, n, size):
                idx = torch.from_numpy(order[a : a + size])
                it, y = it_c[idx][None], y_c[idx][None]
                for _ in range(plan.steps):
                    if train_adapter and bool(h[0]):
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
        out.P[c], out.Q[c] = p.detach()[0], q.detach()[0]
        for i, x in enumerate(ad):
            out.A[i][c] = x.detach()[0]
        losses[c] = sum(seen) / len(seen)
        epochs_run[c] = len(ep_means)
    return out, losses, epochs_run


def sample_layout(X: torch.Tensor, y: torch.Tensor, item_col: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The round's ``(items [S], labels [S])`` from a gathered batch's encoded rows."""
    return X[:, item_col].long(), y.to(torch.float32)


def scores(models: ClientModels, G: torch.Tensor | None, holder: torch.Tensor, items: np.ndarray,
           rho: float | None, merge_eval: bool = True) -> np.ndarray:
    """``[C, k]`` logits of each client's candidate ``items`` with its own model; holders score
    with their table merged once with their ``G`` (§5)."""
    it = torch.from_numpy(np.asarray(items, dtype=np.int64))
    ar = torch.arange(it.shape[0])[:, None]
    with torch.no_grad():
        ql = models.Q[ar, it]
        if G is not None and merge_eval:
            g = G[ar, it]
            r = adapter_rho(models.A, ql, g) if rho is None else torch.full(ql.shape[:2], float(rho))
            ql = torch.where(holder[:, None, None], ql + r[..., None] * (g - ql), ql)
        return (models.P[:, None, :] * ql).sum(-1).numpy()
