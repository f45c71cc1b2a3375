"""HeteFedRec: heterogeneous item-embedding sizes (Yuan et al., 2024, §IV, Algorithm 1).

Every client gets one of ``n`` model sizes ``N_0 < ... < N_{n-1}`` (HeteFedRec: ``N_s, N_m, N_l``):
its item table ``V_x`` (``|V| x N_x``) and FFN ``Θ_x``, and trains with the model ``hetencf``
(:mod:`rf2.models.hetencf`), which stores one item table per size, one FFN per size and the
client-private user embedding at ``N_l``.

Spec (``:``-separated; the first argument is required)::

    hetefedrec:N_S,N_M,N_L[:group=count|tier][:ratio=5:3:2][:udl=on|off][:ddr=ALPHA][:kd=on|off]
              [:kd_items=K][:kd_lr=LR][:agg=pad|clustered][:exclusive=on|off][:standalone=on|off]

``group``
    ``count`` (default, the paper): users sorted by their number of training events (ties: lower
    user index first) are cut into consecutive groups in proportion ``ratio`` (default 5:3:2, the
    paper's; with other than 3 sizes, equal parts), fewest events -> smallest size. ``tier``: the
    device tier is the group, low -> smallest size (so MDAC between tiers measures the sizes'
    effect); one size per tier. ``ratio`` may also be written ``5,3,2`` or ``5/3/2``.
``udl`` (Eq. 11, default on)
    a size-``x`` client also trains every smaller sub-model: loss ``Σ_{h<=x} L(u[:N_h], V_x[:, :N_h], Θ_h)``;
    off: only ``L(u, V_x, Θ_x)``.
``ddr`` (Eq. 13-14, default 1.0 -- the paper's range is 0.5-2)
    ``α``: medium and larger clients add ``α · L_reg(V_x)``; ``0`` disables it.
``kd`` (Eq. 16-17, default on), ``kd_items`` (default 256), ``kd_lr`` (default 1e-4)
    after every server step, relation-based ensemble self-distillation: ``kd_items`` random items
    (without replacement, row 0 excluded), their cosine-similarity matrix in every table, the
    ensemble mean (Eq. 16, a fixed target), and one server-side gradient step on every table's
    ``||d(V_x) - d_ens||²`` (Eq. 17, summed over all item pairs) over those items' rows. The paper
    gives neither the subset size nor the step; ours is *scale-free*: row ``v`` moves by
    ``-kd_lr ||v||² ∇_v L_kd``, i.e. its direction ``v/||v||`` by ``-kd_lr`` times the tangential
    gradient with respect to the direction (a plain SGD step on cosines scales as ``1/||v||²``
    and, with the small initial embeddings, throws rows far away).
``agg`` (default ``pad``)
    ``pad`` (Eq. 7-10, 15): each client's own-table update zero-padded to ``N_l`` and summed; size ``x``
    takes the leading ``N_x`` columns of the sum. Normalisation: the paper sums with one learning
    rate for every table and every Θ; we divide the sum by the round's *total* sample weight (rf2's
    FedAvg convention, :func:`rf2.aggregation.fedavg`), the same constant for every entry, so the
    relative scale of Eq. 8 and 15 is kept (an entry fewer clients hold gets a smaller update;
    no per-entry HeteroFL re-normalisation). ``Θ_h`` (Eq. 15) is the same sum over the clients that
    trained it. ``clustered``: Clustered FedRec -- table ``x`` and ``Θ_x`` are the FedAvg of group ``x``
    alone.
``exclusive`` (default off)
    the smallest group's clients train (their private user embedding) but their public updates
    are neither uploaded nor aggregated ("All Large/Exclusive" with a single size).
``standalone`` (default off)
    no collaboration ("Standalone"): every client trains the model of its size alone, from the
    common initial one, and is scored with it (:mod:`rf2.standalone`); nothing is uploaded, so
    ``agg``, ``kd`` and ``exclusive`` do not apply.

Configurations of HeteFedRec's Tables II and IV (model ``hetencf`` with the same ``sizes``):
HeteFedRec ``hetefedrec:8,16,32``; -RESKD ``...:kd=off``; -RESKD-DDR ``...:kd=off:ddr=0``;
-RESKD-DDR-UDL = Directly Aggregate ``...:kd=off:ddr=0:udl=off``; All Small ``hetefedrec:8``;
All Large ``hetefedrec:32``; All Large/Exclusive ``hetefedrec:32:exclusive=on``; Clustered
``hetefedrec:8,16,32:agg=clustered:udl=off:ddr=0:kd=off``; Standalone
``hetefedrec:8,16,32:standalone=on:udl=off:ddr=0:kd=off``.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F

from rf2.aggregation import GlobalUpdate, RowUpdate, fedavg, weighted_row_sum
from rf2.seeding import numpy_rng
from tier_mapping import count_groups

from .base import ClientContext, Optimization

HETEFEDREC_USAGE = (
    "use hetefedrec:N_S,N_M,N_L[:group=count|tier][:ratio=5:3:2][:udl=on|off][:ddr=ALPHA][:kd=on|off]"
    "[:kd_items=K][:kd_lr=LR][:agg=pad|clustered][:exclusive=on|off][:standalone=on|off], e.g. hetefedrec:8,16,32 or "
    "hetefedrec:8,16,32:group=count:ratio=5:3:2 (model hetencf with the same sizes)"
)
_BOOL = {"on": True, "true": True, "1": True, "yes": True, "off": False, "false": False, "0": False, "no": False}
_OPTIONS = ("group", "ratio", "udl", "ddr", "kd", "kd_items", "kd_lr", "agg", "exclusive", "standalone")


def _err(spec: str, msg: str) -> ValueError:
    return ValueError(f"optimization {spec!r}: {msg}; {HETEFEDREC_USAGE}")


def _number(v: str, spec: str, what: str) -> float:
    try:
        x = float(v)
    except ValueError:
        raise _err(spec, f"{what} must be a number, got {v!r}") from None
    if not np.isfinite(x):
        raise _err(spec, f"{what} must be finite, got {v!r}")
    return x


def parse_hetefedrec(args: list[str], spec: str) -> "HeteFedRec":
    """``args``: the spec's parts after ``hetefedrec:`` (see the module docstring)."""
    if not args or not args[0].strip() or "=" in args[0]:
        raise _err(spec, "missing the model sizes (first argument, e.g. 8,16,32)")
    sizes = []
    for s in args[0].split(","):
        s = s.strip()
        if not s.isdigit() or int(s) < 1:
            raise _err(spec, f"sizes must be integers >= 1 separated by commas, got {args[0]!r}")
        sizes.append(int(s))
    if any(a >= b for a, b in zip(sizes, sizes[1:])):
        raise _err(spec, f"sizes must be strictly increasing (N_s < N_m < N_l), got {args[0]!r}")
    opts: dict[str, str] = {}
    ratio_parts: list[str] | None = None
    last = None
    for a in args[1:]:
        a = a.strip()
        if "=" in a:
            k, v = (t.strip().lower() for t in a.split("=", 1))
            if k not in _OPTIONS:
                raise _err(spec, f"unknown option {k!r}; options: {list(_OPTIONS)}")
            if k in opts:
                raise _err(spec, f"option {k!r} is given more than once")
            opts[k] = v
            if k == "ratio":
                ratio_parts = [v]
            last = k
        elif last == "ratio" and a:  # ratio=5:3:2 was split on ':'
            ratio_parts.append(a)
        else:
            raise _err(spec, f"unexpected argument {a!r} (options are key=value)")
    group = opts.get("group", "count")
    if group not in ("count", "tier"):
        raise _err(spec, f"group must be count or tier, got {group!r}")
    ratio = None
    if ratio_parts is not None:
        if group == "tier":
            raise _err(spec, "ratio applies to group=count only (with group=tier the tiers are the groups)")
        flat = [p for part in ratio_parts for p in part.replace("/", ",").split(",")]
        ratio = tuple(_number(p, spec, "ratio parts") for p in flat if p.strip() != "")
        if len(ratio) < 1 or any(r <= 0 for r in ratio):
            raise _err(spec, f"ratio must be positive numbers, one per group, got {':'.join(ratio_parts)!r}")
        if len(sizes) > 1 and len(ratio) != len(sizes):
            raise _err(spec, f"ratio has {len(ratio)} parts but there are {len(sizes)} sizes; give one part per size")
    flags = {}
    for k, default in (("udl", True), ("kd", True), ("exclusive", False), ("standalone", False)):
        v = opts.get(k)
        if v is not None and v not in _BOOL:
            raise _err(spec, f"{k} must be on or off, got {v!r}")
        flags[k] = default if v is None else _BOOL[v]
    alpha = _number(opts["ddr"], spec, "ddr (the factor α)") if "ddr" in opts else 1.0
    if alpha < 0:
        raise _err(spec, f"ddr (the factor α) must be >= 0, got {alpha}")
    kd_items = opts.get("kd_items", "256")
    if not kd_items.isdigit() or int(kd_items) < 2:
        raise _err(spec, f"kd_items must be an integer >= 2, got {kd_items!r}")
    kd_lr = _number(opts["kd_lr"], spec, "kd_lr") if "kd_lr" in opts else 1e-4
    if kd_lr <= 0:
        raise _err(spec, f"kd_lr must be > 0, got {kd_lr}")
    agg = opts.get("agg", "pad")
    if agg not in ("pad", "clustered"):
        raise _err(spec, f"agg must be pad or clustered, got {agg!r}")
    if flags["standalone"] and (flags["exclusive"] or "agg" in opts):
        raise _err(spec, "standalone=on trains every client alone: nothing is aggregated, so agg and exclusive "
                         "do not apply; drop them")
    return HeteFedRec(spec, tuple(sizes), group=group, ratio=ratio, udl=flags["udl"], alpha=alpha, kd=flags["kd"],
                      kd_items=int(kd_items), kd_lr=kd_lr, agg=agg, exclusive=flags["exclusive"],
                      standalone=flags["standalone"])


class HeteFedRec(Optimization):
    name = "hetefedrec"

    def __init__(self, spec: str, sizes: tuple[int, ...], group: str = "count", ratio: tuple[float, ...] | None = None,
                 udl: bool = True, alpha: float = 1.0, kd: bool = True, kd_items: int = 256, kd_lr: float = 1e-4,
                 agg: str = "pad", exclusive: bool = False, standalone: bool = False):
        super().__init__(spec)
        self.collaborative = not standalone
        self.sizes, self.group_by, self.udl, self.alpha = sizes, group, udl, alpha
        self.kd, self.kd_items, self.kd_lr, self.agg, self.exclusive = kd, kd_items, kd_lr, agg, exclusive
        if ratio is None:
            ratio = (5.0, 3.0, 2.0) if len(sizes) in (1, 3) else (1.0,) * len(sizes)
        self.ratio = ratio
        self.model = None
        self._entries: dict[int, int] = {}
        self.group: np.ndarray | None = None  # [n_users] group of every user
        self.seed = 0
        self.last_kd: tuple[float, float] | None = None  # (before, after) of the last distillation

    def describe(self, tier_names=("low", "mid", "high")) -> str:
        by = "device tier" if self.group_by == "tier" else "interaction count"
        return f"item-embedding sizes {'/'.join(str(s) for s in self.sizes)} by {by}" + (
            "" if self.collaborative else ", each client alone")

    # -- setup -----------------------------------------------------------------------------------
    def validate(self, tier_names) -> None:
        if self.group_by == "tier" and len(self.sizes) > 1 and len(self.sizes) != len(tier_names):
            raise ValueError(f"optimization {self.spec!r} (group=tier) has {len(self.sizes)} sizes but the run has "
                             f"{len(tier_names)} tiers {list(tier_names)}; give one size per tier, low to high")

    def setup(self, model, dataset, tiers, seed: int) -> None:
        from rf2.models.hetencf import HeteNCF

        if not isinstance(model, HeteNCF) or tuple(model.sizes) != self.sizes:
            got = getattr(model, "sizes", None)
            raise ValueError(f"optimization {self.spec!r} needs model = \"hetencf\" with model_options sizes = "
                             f"{list(self.sizes)}; got model {type(model).__name__}" + (f" with sizes {list(got)}" if got else ""))
        self.model, self.seed = model, int(seed)
        self._entries: dict[int, int] = {}
        if self.group_by == "tier":
            self.group = np.asarray(tiers.tier, dtype=np.int64)
        else:
            self.group = count_groups(np.asarray(dataset.train_counts), self.ratio)
        col = model.user_feature.name
        if col not in dataset.users.columns:
            raise ValueError(f"optimization {self.spec!r}: the dataset's users have no {col!r} column")
        model.assign_sizes(dataset.users[col].to_numpy(), self.size_of_group(self.group))

    def size_of_group(self, group: np.ndarray) -> np.ndarray:
        return np.zeros_like(group) if len(self.sizes) == 1 else group

    def client_sizes(self, contexts: list[ClientContext]) -> np.ndarray:
        if self.group is None:
            raise RuntimeError(f"optimization {self.spec!r}: setup() was not called")
        return self.size_of_group(self.group[[c.client_id for c in contexts]])

    def excluded(self, contexts: list[ClientContext]) -> np.ndarray:
        g = self.group[[c.client_id for c in contexts]]
        return (g == 0) if self.exclusive else np.zeros(len(contexts), dtype=bool)

    def trained_heads(self, x: int) -> list[int]:
        return list(range(x + 1)) if self.udl else [x]

    # -- local training --------------------------------------------------------------------------
    def client_loss_args(self, contexts: list[ClientContext], model) -> dict[str, torch.Tensor]:
        x = torch.as_tensor(self.client_sizes(contexts))
        pair_x = torch.tensor([p[0] for p in model.pairs])
        pair_h = torch.tensor([p[1] for p in model.pairs])
        own = pair_x[None, :] == x[:, None]
        heads = (pair_h[None, :] == x[:, None]) | torch.tensor(self.udl)
        ddr = torch.zeros((len(contexts), len(self.sizes)))
        ddr[torch.arange(len(contexts)), x] = self.alpha
        ddr[:, 0] = 0.0  # Eq. 14: medium and large clients only
        return {"pair_coef": (own & heads).to(torch.float32), "ddr_coef": ddr}

    def is_linear(self) -> bool:
        return False

    def _public_entries(self, x: int) -> int:
        """Entries a size-``x`` client uploads: its item table and the Θ it trained (cached: the
        shapes never change after ``setup``)."""
        if x not in self._entries:
            m = self.model
            params = dict(m.named_parameters())
            n = params[m.item_param(x)].numel()
            self._entries[x] = n + sum(params[k].numel() for h in self.trained_heads(x) for k in m.head_params(h))
        return self._entries[x]

    def upload_bits(self, updates) -> torch.Tensor:
        """32 bits per entry of the client's own item table ``V_x`` and the Θ it trained (Table III);
        0 for an excluded client."""
        x = self.client_sizes(updates.contexts)
        per = {s: self._public_entries(s) for s in set(x.tolist())}
        bits = torch.tensor([32.0 * per[s] for s in x.tolist()], dtype=torch.float64)
        bits[torch.as_tensor(self.excluded(updates.contexts))] = 0.0
        return bits

    def compute_fraction(self, contexts, model) -> np.ndarray:
        full = self._public_entries(len(self.sizes) - 1)
        frac = np.array([self._public_entries(s) / full for s in range(len(self.sizes))])
        return frac[self.client_sizes(contexts)]

    # -- server ----------------------------------------------------------------------------------
    def aggregate(self, updates) -> GlobalUpdate:
        m = self.model
        x = torch.as_tensor(self.client_sizes(updates.contexts))
        drop = torch.as_tensor(self.excluded(updates.contexts))
        if drop.any():
            if drop.all():
                return {}
            updates, x = updates.select(~drop), x[~drop]
        if self.agg == "clustered":
            out: GlobalUpdate = {}
            for s in torch.unique(x).tolist():
                avg = fedavg(updates.select(x == s))
                for k in [m.item_param(s), *m.head_params(s)]:
                    out[k] = avg[k]
            return out
        return padding_aggregate(updates, x, [m.item_param(s) for s in range(len(self.sizes))], self.sizes)

    def after_step(self, params: dict[str, torch.Tensor], round_: int) -> None:
        if self.kd and len(self.sizes) > 1:
            self.last_kd = self.distill(params, round_)

    def distill(self, params: dict[str, torch.Tensor], round_: int) -> tuple[float, float]:
        """Eq. 16-17 on ``kd_items`` random items; returns the summed Eq. 17 loss before and after."""
        keys = [self.model.item_param(s) for s in range(len(self.sizes))]
        n_rows = params[keys[0]].shape[0]
        pool = np.arange(1, n_rows) if n_rows > 2 else np.arange(n_rows)
        rng = numpy_rng(self.seed, "hetefedrec-kd", round_)
        idx = torch.as_tensor(np.sort(rng.choice(pool, size=min(self.kd_items, pool.size), replace=False)))
        leaves = [params[k][idx].detach().clone().requires_grad_(True) for k in keys]
        loss = relation_kd_loss(leaves)
        grads = torch.autograd.grad(loss, leaves)
        with torch.no_grad():
            for k, v, g in zip(keys, leaves, grads):
                # scale-free step on the rows' directions (cosines depend on nothing else)
                params[k].index_add_(0, idx, -self.kd_lr * (v * v).sum(1, keepdim=True) * g)
            after = relation_kd_loss([params[k][idx] for k in keys])
        return float(loss.detach()), float(after)


def cosine_matrix(V: torch.Tensor) -> torch.Tensor:
    """``d(V, V_kd)``: pairwise cosine similarities of ``V``'s rows."""
    Z = F.normalize(V, dim=1, eps=1e-12)
    return Z @ Z.T


def relation_kd_loss(tables: list[torch.Tensor]) -> torch.Tensor:
    """``Σ_x ||d(V_x) - d_ens||²`` (Eq. 17 summed over the tables) with ``d_ens`` the mean of the
    tables' cosine matrices (Eq. 16), held fixed as the target (no gradient through it)."""
    sims = [cosine_matrix(t) for t in tables]
    ens = torch.stack(sims).mean(0).detach()
    return sum(((s - ens) ** 2).sum() for s in sims)


def padding_aggregate(updates, size_of_client: torch.Tensor, item_keys: list[str], sizes) -> GlobalUpdate:
    """Eq. 7-8 and 15 with rf2's FedAvg scale: ``S = Σ_i n_i pad(ΔV_{x_i,i}) / Σ_i n_i`` over the
    round's clients (each contributes its *own* size's table only), ``ΔV_x = S[:, :N_x]``; every
    other (dense) public parameter ``Σ_i n_i Δ_i / Σ_i n_i`` (a client that did not train ``Θ_h``
    contributes its exact-zero update)."""
    w = updates.weights.to(torch.float32)
    total = w.sum()
    if total <= 0:
        raise ValueError("hetefedrec: the clients' total weight is zero (no training samples)")
    rest = replace(updates, tables={k: t for k, t in updates.tables.items() if k not in item_keys},
                   masks=None, shapes={k: v for k, v in updates.shapes.items() if k not in item_keys})
    out = fedavg(rest)
    n_l = sizes[-1]
    rows, vals, wts = [], [], []
    for s, k in enumerate(item_keys):
        t = updates.tables[k]
        client = t.client_of_row()
        own = size_of_client[client] == s
        rows.append(t.rows[own])
        vals.append(F.pad(t.values[own], (0, n_l - sizes[s])))
        wts.append(w[client[own]])
    agg = weighted_row_sum(torch.cat(rows), torch.cat(vals), torch.cat(wts))
    for s, k in enumerate(item_keys):
        out[k] = RowUpdate(agg.rows, agg.values[:, : sizes[s]].contiguous() / total)
    return out
