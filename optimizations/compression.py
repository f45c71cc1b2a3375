"""Tier-aware update compression: Prune, Quant and QuantS (RF² §2.2.3, §4.3, Table 1).

Compression is *simulated*: ``encode`` returns what the server reconstructs (the pruned or
quantised-then-dequantised update), and ``upload_bits`` counts what the encoding would send.
Randomness is per client: every client draws from its own seed (``ClientContext.seed``).

**Prune** (random pruning, Konečný et al. 2016, RF² [21]): each entry of a client's *whole*
update is dropped independently with its tier's probability ``f`` (Table 1: 75/50/0% for 1:2:4,
87.5/75/0% for 1:2:8, 93.75/75/0% for 1:4:16). Dropped entries become 0; kept entries are not
rescaled (``rescale=true`` divides them by ``1 - f``, which makes the update unbiased). The mask
comes from a seed the server can regenerate, so only kept values are sent: ``(1-f)·N·32`` bits
(the expected count). Entries of untouched table rows are already zero, so pruning them is a no-op
and the sparse simulation is exact. Top-K pruning is deliberately absent: it reveals which
embedding rows a client used (RF² §2.2.3).

**Quant** (stochastic rounding, RF² §4.3): with ``n`` bits, ``2^n`` points ``p_0..p_{2^n-1}`` split
``[min, max]`` of each *tensor* of the client's update uniformly (one range per parameter tensor
or embedding table, as the RF² authors' simulator does; ``scope=update``, rf2 0.1's default, takes
one range over the whole update); ``p_k <= x < p_{k+1}`` rounds up to
``p_{k+1}`` with probability ``(x - p_k)/(p_{k+1} - p_k)``, else down to ``p_k``, so ``E[q(x)] = x``.
(The paper's text states the two probabilities the other way round, which would be biased; we
take that as a typo and implement the standard unbiased rule, QSGD-style.) ``n = 32`` leaves the
update untouched. Because ``min < 0 < max``, a zero — every entry of an embedding row the client
never touched — usually lies between two points and becomes ``p_k`` or ``p_{k+1}`` at random:
the noise that, summed over clients, corrupts other tiers' rows (Takeaways 5-6). This is simulated
faithfully through :class:`~rf2.clients.updates.Background`: each client's untouched entries are
i.i.d. two-point variables, and the aggregator adds their weighted sum exactly, or for very large
tables with a normal draw of the same mean and variance (``noise=auto|exact|gaussian``; see
:func:`rf2.aggregation.background_sum`). Bits: ``n·N + 64·T`` (``N`` entries, ``T`` tensors each
sending its min and max as float32); with ``scope=update`` ``n·N + 64``.

**QuantS** (sign and magnitude): ``|x|`` is stochastically rounded onto points spread uniformly
over ``[0, max|x|]`` (per tensor, or per update with ``scope=update``) and the sign is kept. Zero
is a grid point, so untouched rows stay exactly zero, and ``E[q(x)] = x`` as for Quant.

* ``sign=separate`` (default, the RF² authors' simulator): the sign is sent on its own bit and
  the magnitude uses all ``n`` bits, ``2^n`` points. Bits: ``(n+1)·N + 32·T`` (``max|x|`` per tensor).
* ``sign=budget`` (the paper's text, rf2 0.1's only reading): the sign bit is one of the ``n``
  bits, leaving ``n - 1`` for the magnitude, ``2^(n-1)`` points; ``n >= 2``. Bits: ``n·N + 32·T``.

``n = 32`` is the identity for both (no quantisation, ``32·N`` bits, no header).

Per-tensor headers: ``T`` counts every tensor the update holds (dense parameters and embedding
tables; client-private parameters are removed before encoding, so they are neither quantised nor
counted).
"""
from __future__ import annotations

import math
import numbers
import re

import numpy as np
import torch

from rf2.clients.updates import Background, ClientUpdates, TableRows
from rf2.device import cpu_draw, to_numpy

from .base import ClientContext, Optimization, dense_entry_count


# -- primitives ------------------------------------------------------------------------------------
def stochastic_round(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, levels: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Round ``x`` onto ``levels + 1`` evenly spaced points of ``[lo, hi]``, up with probability
    equal to the distance from the lower point (in steps), using the uniforms ``u``."""
    step = (hi - lo) / levels
    flat = step <= 0
    safe = torch.where(flat, torch.ones_like(step), step)
    # stochastic_round_reference's formula, with the full-size temporaries reused in place (the
    # same operations in the same order, so the same bits; a third fewer passes over memory)
    t = (x - lo) / safe
    k = torch.floor(t)
    up = u < t.sub_(k)  # t - k: the distance above the lower grid point, in steps
    q = k.add_(up).mul_(safe).add_(lo)
    q = q.clamp_(min=lo, max=hi)
    return torch.where(flat, x, q)


def stochastic_round_reference(x, lo, hi, levels, u) -> torch.Tensor:
    """:func:`stochastic_round` written plainly (the reference of its equivalence test)."""
    step = (hi - lo) / levels
    flat = step <= 0
    safe = torch.where(flat, torch.ones_like(step), step)
    t = (x - lo) / safe
    k = torch.floor(t)
    q = lo + (k + (u < (t - k)).to(x.dtype)) * safe
    q = torch.minimum(torch.maximum(q, lo), hi)
    return torch.where(flat, x, q)


def client_uniforms(updates: ClientUpdates, purpose: str, skip: np.ndarray | None = None):
    """A ``U[0,1)`` draw for every stored entry, each client from its own stream. Returns
    ``(dense: name -> [C, *shape], tables: name -> [R, D])``.

    Client ``c`` draws ONE vector from its own generator, cut in this order: every dense tensor
    (in ``updates.dense`` order, each flattened), then its rows of every table (in
    ``updates.tables`` order, row-major). A skipped client draws nothing and gets zeros. Torch's
    CPU generator fills a tensor element by element, so drawing the vector piece by piece,
    straight into each piece's place (client ``c``'s dense block, then its contiguous rows of
    each table), consumes the stream exactly as one draw does: no concatenation, no index
    arithmetic (a per-client loop of slice copies took 27 ms of a 100-client round at
    MovieLens-20M size, a gather by computed indices 25-31 ms, this 9-15 ms).
    :func:`client_uniforms_reference` is the plain one-draw-per-client loop, and
    ``tests/test_compression.py`` holds the two equal."""
    C = updates.n_clients
    dense_sizes = [v[0].numel() for v in updates.dense.values()]
    dense_buf = torch.zeros(C, sum(dense_sizes), device="cpu")  # client c's dense block: one row
    table_bufs = [torch.zeros(t.values.shape, device="cpu") for t in updates.tables.values()]
    ptrs = [t.ptr.tolist() for t in updates.tables.values()]
    skipped = np.zeros(C, dtype=bool) if skip is None else np.asarray(skip, dtype=bool)
    for c in np.flatnonzero(~skipped).tolist():
        g = updates.contexts[c].torch_generator(purpose)
        if dense_buf.shape[1]:
            dense_buf[c].uniform_(0, 1, generator=g)
        for buf, ptr in zip(table_bufs, ptrs):
            if ptr[c + 1] > ptr[c]:
                buf[ptr[c] : ptr[c + 1]].uniform_(0, 1, generator=g)
    dense, off = {}, 0
    for (k, v), n in zip(updates.dense.items(), dense_sizes):
        dense[k] = dense_buf[:, off : off + n].reshape(v.shape).to(v.device, v.dtype)
        off += n
    tables = {k: buf.to(t.values.device, t.values.dtype) for (k, t), buf in zip(updates.tables.items(), table_bufs)}
    return dense, tables


def client_uniforms_reference(updates: ClientUpdates, purpose: str, skip: np.ndarray | None = None):
    """:func:`client_uniforms` as a plain per-client loop (the reference of its test)."""
    C = updates.n_clients
    dense = {k: torch.zeros_like(v) for k, v in updates.dense.items()}
    tables = {k: torch.zeros_like(t.values) for k, t in updates.tables.items()}
    per_dense = {k: v[0].numel() for k, v in updates.dense.items()}
    for c in range(C):
        if skip is not None and skip[c]:
            continue
        sizes = dict(per_dense)
        for k, t in updates.tables.items():
            sizes["#" + k] = int(t.ptr[c + 1] - t.ptr[c]) * t.values.shape[1]
        u = cpu_draw(torch.rand, sum(sizes.values()), generator=updates.contexts[c].torch_generator(purpose))
        off = 0
        for k, n in sizes.items():
            piece = u[off : off + n]
            off += n
            if k.startswith("#"):
                t = updates.tables[k[1:]]
                tables[k[1:]][t.ptr[c] : t.ptr[c + 1]] = piece.view(int(t.ptr[c + 1] - t.ptr[c]), t.values.shape[1])
            else:
                dense[k][c] = piece.view(dense[k].shape[1:])
    return dense, tables


def tensor_ranges(updates: ClientUpdates, magnitude: bool = False) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per tensor and client ``(min, max)`` of the update, untouched (zero) table entries
    included; with ``magnitude``, of ``|x|``."""
    C = updates.n_clients
    out = {}
    for k, d in updates.dense.items():
        flat = d.reshape(C, -1)
        if magnitude:
            flat = flat.abs()
        out[k] = (flat.amin(1), flat.amax(1)) if flat.shape[1] else (torch.zeros(C), torch.zeros(C))
    for k, t in updates.tables.items():
        vals = t.values.abs() if magnitude else t.values
        client = t.client_of_row()
        lo, hi = torch.full((C,), math.inf), torch.full((C,), -math.inf)
        if vals.numel():  # else no entries: no rows, or rows of width 0
            lo = lo.scatter_reduce(0, client, vals.amin(1), "amin")
            hi = hi.scatter_reduce(0, client, vals.amax(1), "amax")
        has_untouched = t.untouched() > 0
        lo = torch.where(has_untouched, torch.minimum(lo, torch.zeros(C)), lo)
        hi = torch.where(has_untouched, torch.maximum(hi, torch.zeros(C)), hi)
        out[k] = (torch.where(torch.isfinite(lo), lo, torch.zeros(C)), torch.where(torch.isfinite(hi), hi, torch.zeros(C)))
    return out


def client_range(updates: ClientUpdates, magnitude: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Per client ``(min, max)`` over its whole update, untouched (zero) table entries included;
    with ``magnitude``, ``(0, max |x|)``."""
    ranges = tensor_ranges(updates, magnitude)
    C = updates.n_clients
    lo = torch.stack([r[0] for r in ranges.values()]).amin(0) if ranges else torch.zeros(C)
    hi = torch.stack([r[1] for r in ranges.values()]).amax(0) if ranges else torch.zeros(C)
    return (torch.zeros(C) if magnitude else lo), hi


# -- spec helpers ----------------------------------------------------------------------------------
#: Table 1's named configurations (overhead ratios low:mid:high).
PAPER_RATIOS = ("1:2:4", "1:2:8", "1:4:16")
#: Table 1: bits per tier of Quant/QuantS. 1:4:16 is 2/4/32 bits in the table (not 2/8/32).
PAPER_BITS = {"1:2:4": (8, 16, 32), "1:2:8": (4, 8, 32), "1:4:16": (2, 4, 32)}


#: A number in a spec: plain ASCII decimal, optional sign, fraction and exponent (``0.2``, ``1e-3``).
#: Stricter than ``float()``: no ``1_0``, no non-ASCII digits, no ``inf``/``nan``, so every spec
#: has one meaning and one spelling.
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def parse_number(text: str) -> float:
    """``text`` as a finite float; ``ValueError`` unless it is a plain decimal number."""
    t = text.strip() if isinstance(text, str) else text
    if not isinstance(t, str) or not _NUMBER.fullmatch(t):
        raise ValueError(f"not a number: {text!r}")
    v = float(t)
    if not math.isfinite(v):
        raise ValueError(f"not a finite number: {text!r}")
    return v


def split_args(args: list[str], spec: str) -> tuple[list[str], dict[str, str]]:
    pos, opts = [], {}
    for a in args:
        if "=" in a:
            k, v = a.split("=", 1)
            k = k.strip().lower()
            if k in opts:
                raise ValueError(f"optimization {spec!r}: option {k!r} is given more than once; give it once")
            opts[k] = v.strip().lower()
        else:
            pos.append(a.strip())
    return pos, opts


def parse_numbers(values: list[str], spec: str, what: str, usage: str) -> tuple[float, ...]:
    if not values:
        raise ValueError(f"optimization {spec!r}: missing {what}; {usage}")
    out = []
    for v in values:
        try:
            out.append(parse_number(v))
        except ValueError:
            raise ValueError(
                f"optimization {spec!r}: {what} must be finite decimal numbers (e.g. 0.2, 4, 1e-3), got {values}; {usage}"
            ) from None
    return tuple(out)


def parse_ratios(values: list[str], spec: str, usage: str) -> tuple[float, ...]:
    r = parse_numbers(values, spec, "overhead ratios", usage)
    if len(r) < 2 or any(v <= 0 for v in r):
        raise ValueError(f"optimization {spec!r}: ratios must be >= 2 positive numbers (low:...:high); {usage}")
    return r


def check_options(opts: dict, allowed: dict[str, tuple[str, ...]], spec: str) -> None:
    for k, v in opts.items():
        if k not in allowed:
            raise ValueError(f"optimization {spec!r}: unknown option {k!r}; options: {sorted(allowed)}")
        if allowed[k] and v not in allowed[k]:
            raise ValueError(f"optimization {spec!r}: option {k} must be one of {list(allowed[k])}, got {v!r}")


class PerTier(Optimization):
    """An optimisation with one setting per tier (low ... high)."""

    what = "setting"

    def __init__(self, spec: str, per_tier: tuple):
        super().__init__(spec)
        self.per_tier = tuple(per_tier)

    #: how one per-tier value is written in :meth:`describe`, and the unit after the values
    unit = ""

    def format_value(self, v) -> str:
        return f"{v:g}"

    def describe(self, tier_names=("low", "mid", "high")) -> str:
        names = list(tier_names) if len(tier_names) == len(self.per_tier) else [f"tier {i}" for i in range(len(self.per_tier))]
        return f"{'/'.join(names)}: {'/'.join(self.format_value(v) for v in self.per_tier)}{self.unit}"

    def validate(self, tier_names) -> None:
        if len(self.per_tier) != len(tier_names):
            raise ValueError(
                f"optimization {self.spec!r} has {len(self.per_tier)} values (one {self.what} per tier) but the run "
                f"has {len(tier_names)} tiers {list(tier_names)}; give one value per tier, low to high"
            )

    def setting(self, contexts: list[ClientContext]) -> list:
        out = []
        for ctx in contexts:
            if ctx.tier >= len(self.per_tier):
                raise ValueError(
                    f"optimization {self.spec!r} gives {len(self.per_tier)} tiers a {self.what}, but the run "
                    f"has more tiers; give one value per tier (low ... high)"
                )
            out.append(self.per_tier[ctx.tier])
        return out


# -- Prune -----------------------------------------------------------------------------------------
PRUNE_USAGE = "use prune:1:2:4 | prune:1:2:8 | prune:1:4:16 (Table 1 ratios) or prune:frac:F_LOW:...:F_HIGH with fractions in [0, 1), optionally :rescale=true"


class Prune(PerTier):
    name = "prune"
    what = "pruning fraction"

    def __init__(self, spec: str, fractions: tuple[float, ...], rescale: bool = False):
        for f in fractions:
            if not 0 <= f < 1:
                raise ValueError(f"optimization {spec!r}: pruning fractions must be in [0, 1), got {f}; {PRUNE_USAGE}")
        super().__init__(spec, fractions)
        self.rescale = rescale
        self.unit = "% of the update pruned" + (", rest rescaled" if rescale else "")

    def format_value(self, v) -> str:
        return f"{100 * v:.4g}"

    def encode(self, updates: ClientUpdates) -> ClientUpdates:
        f = torch.tensor(self.setting(updates.contexts), dtype=torch.float32)
        if not (f > 0).any():
            return updates
        # An entry survives when its uniform is >= f: always at f = 0 (a skipped client's uniforms
        # are zeros), with probability 1 - f otherwise.
        u_dense, u_tab = client_uniforms(updates, "prune", skip=to_numpy(f == 0))
        scale = 1.0 / (1.0 - f)
        dense = {}
        for k, d in updates.dense.items():
            shape = (-1,) + (1,) * (d.dim() - 1)
            kept = torch.where(u_dense[k] >= f.view(shape), d, 0.0)
            dense[k] = kept * scale.view(shape) if self.rescale else kept
        tables = {}
        for k, t in updates.tables.items():
            client = t.client_of_row()
            kept = torch.where(u_tab[k] >= f[client][:, None], t.values, 0.0)
            tables[k] = t.with_values(kept * scale[client][:, None] if self.rescale else kept)
        return _replace(updates, dense, tables)

    def upload_bits(self, updates: ClientUpdates) -> torch.Tensor:
        f = torch.tensor(self.setting(updates.contexts), dtype=torch.float64)
        return dense_entry_count(updates) * (1 - f) * 32.0


def _replace(updates: ClientUpdates, dense, tables) -> ClientUpdates:
    from dataclasses import replace

    return replace(updates, dense=dense, tables=tables)


# -- Quant / QuantS --------------------------------------------------------------------------------
QUANT_USAGE = ("use quant:1:2:4 | quant:1:2:8 | quant:1:4:16 (Table 1) or quant:bits:B_LOW:...:B_HIGH "
               "(1-32 bits, 32 = unquantised), optionally :noise=auto|exact|gaussian and :scope=tensor|update")
QUANT_NOISE = ("auto", "exact", "gaussian")
#: "tensor" (default): one range per tensor (the RF² authors' simulator); "update": one per update (rf2 0.1)
QUANT_SCOPE = ("tensor", "update")
#: QuantS: "separate" (default): sign bit + n magnitude bits (the authors' simulator); "budget": sign
#: bit inside the n bits, n - 1 magnitude bits (the paper's text; rf2 0.1)
QUANT_SIGN = ("separate", "budget")


def quant_usage(name: str = "quant") -> str:
    """:data:`QUANT_USAGE` for ``quant`` or ``quants`` (which also takes ``:sign=separate|budget``;
    with ``sign=budget`` bit widths start at 2: a sign bit and at least one magnitude bit)."""
    if name == "quants":
        return (QUANT_USAGE.replace("quant:", "quants:").replace("(1-32 bits", "(1-32 magnitude bits; 2-32 with sign=budget")
                + " and :sign=separate|budget")
    return QUANT_USAGE


class Quant(PerTier):
    name = "quant"
    what = "bit width"
    signed = False  # QuantS: sign bit + magnitude

    def __init__(self, spec: str, bits: tuple[int, ...], noise: str = "auto", scope: str = "tensor",
                 sign: str = "separate"):
        if self.signed and sign not in QUANT_SIGN:
            raise ValueError(f"optimization {spec!r}: option sign must be one of {list(QUANT_SIGN)}, got {sign!r}")
        low = 2 if self.signed and sign == "budget" else 1
        usage = quant_usage(self.name)
        for b in bits:
            if (not isinstance(b, numbers.Real) or isinstance(b, bool) or not math.isfinite(b) or b != int(b)
                    or not low <= b <= 32):
                shown = f"{b:g}" if isinstance(b, numbers.Real) else repr(b)
                raise ValueError(f"optimization {spec!r}: bit widths must be integers in [{low}, 32], got {shown}; {usage}")
        for option, value, allowed in (("noise", noise, QUANT_NOISE), ("scope", scope, QUANT_SCOPE)):
            if value not in allowed:
                raise ValueError(f"optimization {spec!r}: option {option} must be one of {list(allowed)}, got {value!r}")
        super().__init__(spec, tuple(int(b) for b in bits))
        self.noise = noise
        self.scope = scope  # "tensor": one range per tensor (authors' simulator); "update": one for the whole update
        #: QuantS only: "separate" sign bit + n magnitude bits, or "budget": sign inside the n bits
        self.sign = sign if self.signed else None
        unit = {None: " bits", "separate": " magnitude bits + sign", "budget": " bits incl. sign"}[self.sign]
        self.unit = unit + (" (one range per update)" if scope == "update" else "") + (
            f" ({noise} noise)" if noise != "auto" else "")

    def encode(self, updates: ClientUpdates) -> ClientUpdates:
        bits = torch.tensor(self.setting(updates.contexts), dtype=torch.float64)
        active = bits < 32
        if not active.any():
            return updates
        if self.scope == "tensor":
            ranges = tensor_ranges(updates, magnitude=self.signed)
            if self.signed:
                ranges = {k: (torch.zeros_like(lo), hi) for k, (lo, hi) in ranges.items()}
        else:
            whole = client_range(updates, magnitude=self.signed)
            ranges = {k: whole for k in [*updates.dense, *updates.tables]}
        mag_bits = bits - 1 if self.sign == "budget" else bits
        levels = (2.0**mag_bits - 1).to(torch.float32)
        u_dense, u_tab = client_uniforms(updates, "quant", skip=to_numpy(~active))
        dense = {}
        for k, d in updates.dense.items():
            lo, hi = ranges[k]
            shape = (-1,) + (1,) * (d.dim() - 1)
            q = self._round(d, lo.view(shape), hi.view(shape), levels.view(shape), u_dense[k])
            dense[k] = torch.where(active.view(shape), q, d)
        tables = {}
        # every table's background draws from the client's one "quant-background" seed (computed once
        # per round, not per table: 100 seed derivations per table were 24 ms of a round at ML-20M size)
        seeds = None if self.signed else [int(ctx.torch_generator("quant-background").initial_seed()) for ctx in updates.contexts]
        for k, t in updates.tables.items():
            lo, hi = ranges[k]
            c = t.client_of_row()
            q = self._round(t.values, lo[c][:, None], hi[c][:, None], levels[c][:, None], u_tab[k])
            values = torch.where(active[c][:, None], q, t.values)
            tables[k] = TableRows(t.ptr, t.rows, values, t.n_rows, self._background(seeds, lo, hi, levels, active))
        return _replace(updates, dense, tables)

    def _round(self, x, lo, hi, levels, u):
        if self.signed:
            return torch.sign(x) * stochastic_round(x.abs(), lo, hi, levels, u)
        return stochastic_round(x, lo, hi, levels, u)

    def _background(self, seeds, lo, hi, levels, active) -> Background | None:
        if self.signed:
            return None  # zero is a grid point: untouched entries stay exactly zero
        step = torch.where(active, (hi - lo) / levels, torch.zeros_like(lo))
        safe = torch.where(step > 0, step, torch.ones_like(step))
        t0 = (0.0 - lo) / safe
        k0 = torch.floor(t0)
        p_up = torch.where(step > 0, t0 - k0, torch.zeros_like(t0))
        low = torch.where(step > 0, lo + k0 * step, torch.zeros_like(lo))
        return Background(low=low, step=step, p_up=p_up, seeds=seeds, mode=self.noise)

    def upload_bits(self, updates: ClientUpdates) -> torch.Tensor:
        bits = torch.tensor(self.setting(updates.contexts), dtype=torch.float64)
        header = 32.0 if self.signed else 64.0  # max |x|, or min and max, as float32
        if self.scope == "tensor":
            header *= len(updates.dense) + len(updates.tables)
        active = bits < 32
        per_entry = bits + 1 if self.sign == "separate" else bits  # separate: the sign bit on top
        per_entry = torch.where(active, per_entry, torch.full_like(bits, 32.0))  # 32: raw float32, identity
        return dense_entry_count(updates) * per_entry + torch.where(active, header, 0.0)


class QuantS(Quant):
    name = "quants"
    signed = True
