"""The client's local optimiser, written as elementwise functions so every engine shares it.

Each engine computes full-batch gradients its own way (one client at a time, vmapped over a
bucket of clients, or pooled) and then asks the optimiser for the *increment* of every
parameter. The functions act entry by entry, so the same code serves a ``[*shape]`` parameter
and a ``[clients, *shape]`` stack of them.

``sgd``  (RF² §4.1, the default)
    ``θ ← θ - lr g``.
``adam`` (Kingma & Ba, 2015, Algorithm 1; HeteFedRec §V-D: lr 0.001)
    ``m ← β1 m + (1-β1) g``, ``v ← β2 v + (1-β2) g²``, ``θ ← θ - lr m̂ / (√v̂ + ε)`` with
    ``m̂ = m / (1-β1^t)``, ``v̂ = v / (1-β2^t)``; β1 = 0.9, β2 = 0.999, ε = 1e-8 (torch's defaults).
    Computed by torch's fused CPU Adam kernel (one pass per tensor; the same kernel in every engine,
    so they agree), or op by op where it is missing or clients of a stack are at different steps.

The optimiser state lives for one round: every time a client is selected it starts again from
``m = v = 0, t = 0`` (the client's model is rebuilt from the broadcast one; only client-private
*parameters* persist, not optimiser moments). An entry with a zero gradient at every step (a
table row the client never reads, a masked-out unit) is not moved by either optimiser.
Note that Adam's first step is ``lr g / (|g| + ε)`` per entry, about ``lr`` times the sign of
``g``: with one local step, Adam clients send sign-like updates. It also means float rounding on a
gradient entry near ``ε`` (a sum that nearly cancels) can change that entry's step by up to ``lr``,
so the engines, which sum in different orders, agree with Adam only where gradients are well
above ``ε`` (the tests compare them with ``eps=1e-4``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

CLIENT_OPTIMIZERS = ("sgd", "adam")


def per_client(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``[C]`` per-client values shaped to broadcast over a ``[C, *shape]`` stack like ``like``."""
    return x.reshape(-1, *([1] * (like.dim() - 1)))


@dataclass(frozen=True)
class ClientOptimizer:
    name: str = "sgd"
    lr: float = 1.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8

    def __post_init__(self) -> None:
        if self.name not in CLIENT_OPTIMIZERS:
            raise ValueError(f"client optimiser must be one of {CLIENT_OPTIMIZERS}, got {self.name!r}")

    @property
    def is_linear(self) -> bool:
        """Whether one step's increment is linear in the gradient (so client updates may be
        summed before they are computed; see ``BatchedEngine.summed_update``)."""
        return self.name == "sgd"

    def init(self, params: dict[str, torch.Tensor], clients: int | None = None) -> dict:
        """A fresh state. ``clients``: the parameters are ``[clients, *shape]`` stacks whose clients
        may step at different times (:meth:`increments` with ``active``), so each keeps its own
        step count ``t``."""
        if self.name == "sgd":
            return {}
        t = 0 if clients is None else torch.zeros(clients, dtype=torch.float64)
        return {"t": t, "m": {k: torch.zeros(v.shape, dtype=v.dtype) for k, v in params.items()},
                "v": {k: torch.zeros(v.shape, dtype=v.dtype) for k, v in params.items()}}

    def increments(self, grads: dict[str, torch.Tensor], state: dict,
                   active: torch.Tensor | None = None) -> tuple[dict[str, torch.Tensor], dict]:
        """The step's increment of every parameter in ``grads`` and the new state (Adam's moments
        are updated in place: the old state is not to be used again). ``active``:
        ``[C]`` bools over the leading (client) axis of stacked parameters (state from
        ``init(..., clients=C)``): an inactive client's increment is 0 and its state is unchanged
        (a client that has finished its local epochs while others of its bucket go on)."""
        if active is None:
            if self.name == "sgd":
                return {k: -self.lr * g for k, g in grads.items()}, state
            b1, b2 = self.betas
            t = state["t"] + 1
            if _FUSED is not None:  # the same kernel as the stacked path below, so the engines agree
                inc = self._fused(grads, state, None, None, float(t))
                return inc, {"t": t, "m": state["m"], "v": state["v"]}
            m = {k: b1 * state["m"][k] + (1 - b1) * g for k, g in grads.items()}
            v = {k: b2 * state["v"][k] + (1 - b2) * g * g for k, g in grads.items()}
            c1, c2 = 1 - b1 ** t, 1 - b2 ** t
            inc = {k: -self.lr * (m[k] / c1) / ((v[k] / c2).sqrt() + self.eps) for k in grads}
            return inc, {"t": t, "m": m, "v": v}

        if self.name == "sgd":
            return {k: torch.where(per_client(active, g), -self.lr * g, 0.0) for k, g in grads.items()}, state
        b1, b2 = self.betas
        t = state["t"] + active.to(torch.float64)
        if _FUSED is not None:
            on_t = t[active]
            if on_t.numel() and bool((on_t == on_t[0]).all()):  # the clients stepping share t (the engines' case)
                return self._fused(grads, state, active, t, float(on_t[0])), {"t": t, "m": state["m"], "v": state["v"]}
        # bias corrections in double, then float32 as a Python-scalar t gives (inactive: t may be 0)
        c1, c2 = (1 - b1 ** t).to(torch.float32), (1 - b2 ** t).to(torch.float32)
        m, v, inc = {}, {}, {}
        for k, g in grads.items():
            on = per_client(active, g)
            m[k] = torch.where(on, b1 * state["m"][k] + (1 - b1) * g, state["m"][k])
            v[k] = torch.where(on, b2 * state["v"][k] + (1 - b2) * g * g, state["v"][k])
            step = -self.lr * (m[k] / per_client(c1, g).clamp_min(1e-30)) / (
                (v[k] / per_client(c2, g).clamp_min(1e-30)).sqrt() + self.eps)
            inc[k] = torch.where(on, step, 0.0)
        return inc, {"t": t, "m": m, "v": v}

    def _fused(self, grads: dict[str, torch.Tensor], state: dict, active: torch.Tensor, t: torch.Tensor,
               step: float) -> dict[str, torch.Tensor]:
        """The masked Adam step of :meth:`increments` by torch's fused CPU kernel (one pass per
        tensor instead of a dozen), when every stepping client is at the same step ``step``: the
        kernel steps a zero "parameter" of the stepping clients (gathered unless all step), which
        then holds their increment; the moments are updated in place."""
        idx = None if active is None or bool(active.all()) else torch.nonzero(active).flatten()
        keys = list(grads)
        take = (lambda x: x) if idx is None else (lambda x: x.index_select(0, idx))  # noqa: E731
        inc = {k: torch.zeros(take(grads[k]).shape, dtype=grads[k].dtype) for k in keys}
        ms, vs = [take(state["m"][k]).contiguous() for k in keys], [take(state["v"][k]).contiguous() for k in keys]
        _FUSED([inc[k] for k in keys], [take(grads[k]).contiguous() for k in keys], ms, vs, [],
               [torch.tensor(step) for _ in keys], lr=self.lr, beta1=self.betas[0], beta2=self.betas[1],
               weight_decay=0.0, eps=self.eps, amsgrad=False, maximize=False)
        if idx is None:
            for k, m, v in zip(keys, ms, vs):
                if m is not state["m"][k]:  # a non-contiguous state was copied: keep the stepped copy
                    state["m"][k], state["v"][k] = m, v
            return inc
        out = {}
        for k, m, v in zip(keys, ms, vs):
            state["m"][k].index_copy_(0, idx, m)
            state["v"][k].index_copy_(0, idx, v)
            out[k] = torch.zeros_like(grads[k]).index_copy_(0, idx, inc[k])
        return out

    def first_increment(self, g: torch.Tensor) -> torch.Tensor:
        """The increment of one step from a fresh state (the flat one-step path)."""
        inc, _ = self.increments({"g": g}, self.init({"g": g}))
        return inc["g"]


#: torch's fused CPU Adam kernel (torch >= 2.4), or None: then the formula op by op
_FUSED = getattr(torch, "_fused_adam_", None)


def as_client_optimizer(opt: "ClientOptimizer | str | None", lr: float) -> ClientOptimizer:
    """``opt`` as a :class:`ClientOptimizer` with learning rate ``lr`` (a name or ``None`` = sgd)."""
    if isinstance(opt, ClientOptimizer):
        if opt.lr != lr:
            raise ValueError(f"client optimiser {opt.name} has lr={opt.lr} but the engine was given lr={lr}; make them agree")
        return opt
    return ClientOptimizer(opt or "sgd", lr)
