"""Tier-aware optimisations: a name -> factory registry parsed from short specs.

====================  ================================================================================
spec                  meaning (RF² Table 1 unless noted)
====================  ================================================================================
``none``              plain FedAvg: the baseline of every comparison
``exclude-lo``        low-end devices never train
``overselect:0.2``    select ⌊1.2K⌋ clients, drop ⌊0.2K⌋ from the lowest tier up (``:drop=time``: the slowest)
``prune:1:2:4``       random pruning of 75/50/0% of the update (also 1:2:8, 1:4:16; ``prune:frac:...``)
``quant:1:2:4``       stochastic rounding to 8/16/32 bits per tensor (1:2:8 -> 4/8/32, 1:4:16 -> 2/4/32;
                      ``quant:bits:...``; ``:scope=update``: one range per update)
``quants:1:2:4``      as quant on |x| over [0, max|x|], plus a sign bit (zero stays exact; ``:sign=budget``:
                      the sign bit inside the n bits, n-1 magnitude bits)
``channel:1:2:4``     25/50/100% of the hidden units (1:2:8 -> 12.5/25/100%, 1:4:16 -> 6.25/25/100%)
``hetefedrec:...``    HeteFedRec (Yuan et al. 2024): per-client item-embedding sizes 8,16,32 (model hetencf)
``standalone``        no collaboration: every client trains and is scored with its own model (HeteFedRec §V-A)
``paper-table1``      a *preset*: the 14 configurations of Table 1 (for sweeps)
====================  ================================================================================

New optimisations register with :func:`register` and need no change to the simulator; see
:mod:`optimizations.base` for the hooks.
"""
from __future__ import annotations

from typing import Callable

from .fedem import FEDEM_USAGE, FedEM, parse_fedem
from .base import ClientContext, Optimization, dense_entry_count, make_contexts
from .channel import CHANNEL_USAGE, Channel
from .compression import (
    PAPER_BITS, PAPER_RATIOS, PRUNE_USAGE, QUANT_NOISE, QUANT_SCOPE, QUANT_SIGN, QUANT_USAGE, Prune, Quant, QuantS,
    check_options, parse_numbers, parse_ratios, quant_usage, split_args,
)
from .selection import OVERSELECT_DROP, ExcludeLo, Overselect
from .hetefedrec import HETEFEDREC_USAGE, HeteFedRec, parse_hetefedrec
from .standalone import Standalone

#: name -> factory taking the spec's arguments (the parts after the first ':') and the full spec
REGISTRY: dict[str, Callable[[list[str], str], Optimization]] = {}
#: name -> one-line usage, for error messages and `rf2 list`
USAGE: dict[str, str] = {}
#: preset name -> the specs it expands to
PRESETS: dict[str, tuple[str, ...]] = {
    "paper-table1": (
        "exclude-lo", "overselect:0.2",
        *(f"prune:{r}" for r in PAPER_RATIOS),
        *(f"quant:{r}" for r in PAPER_RATIOS),
        *(f"quants:{r}" for r in PAPER_RATIOS),
        *(f"channel:{r}" for r in PAPER_RATIOS),
    ),
}


def register(name: str, usage: str):
    """Decorator: ``@register("myopt", "myopt:ARG  (what it does)")`` on a ``factory(args, spec)``."""

    def deco(factory):
        REGISTRY[name] = factory
        USAGE[name] = usage
        return factory

    return deco


def _no_args(args: list[str], spec: str, name: str) -> None:
    if args:
        raise ValueError(f"optimization {spec!r}: '{name}' takes no arguments")


@register("none", "none  (plain FedAvg: the baseline every optimisation is compared with)")
def _none(args, spec):
    _no_args(args, spec, "none")
    return Optimization("none")


@register("standalone", "standalone  (no collaboration: every client trains alone and is scored with its own model)")
def _standalone(args, spec):
    _no_args(args, spec, "standalone")
    return Standalone(spec)


@register("exclude-lo", "exclude-lo  (low-end devices never train)")
def _exclude(args, spec):
    _no_args(args, spec, "exclude-lo")
    return ExcludeLo(spec)


@register("overselect", "overselect:F[:drop=tier|time]  (select floor(K(1+F)) clients, e.g. F = 0.2, drop floor(KF) "
                        "from the lowest tier up, or with drop=time the slowest)")
def _overselect(args, spec):
    pos, opts = split_args(args, spec)
    check_options(opts, {"drop": OVERSELECT_DROP}, spec)
    if len(pos) > 1:
        raise ValueError(f"optimization {spec!r}: use overselect:0.2 (one fraction)")
    f = parse_numbers(pos, spec, "fraction", "use overselect:0.2")[0] if pos else 0.2
    return Overselect(spec, f, drop=opts.get("drop", OVERSELECT_DROP[0]))


def _per_tier(pos: list[str], spec: str, keyword: str, usage: str, from_ratio) -> tuple[tuple[float, ...], str]:
    """The per-tier values of a spec, given directly (``KEYWORD:v1:...``) or as overhead ratios.
    Returns ``(values, note)``; ``note`` says how ratios became values, for error messages."""
    if pos and pos[0].lower() == keyword:
        return parse_numbers(pos[1:], spec, f"{keyword} values", usage), ""
    r = parse_ratios(pos, spec, usage)
    values = from_ratio(r)
    return values, f" (overhead ratios {':'.join(pos)} give {tuple(values)})"


def _build(spec: str, note: str, make):
    """``make()``, with ``note`` (how ratios became per-tier values) added to its error."""
    try:
        return make()
    except ValueError as exc:
        if not note:
            raise
        raise ValueError(f"{exc}{note}") from None


@register("prune", PRUNE_USAGE.replace("use ", "", 1))
def _prune(args, spec):
    pos, opts = split_args(args, spec)
    check_options(opts, {"rescale": ("true", "false")}, spec)
    fracs, note = _per_tier(pos, spec, "frac", PRUNE_USAGE, lambda r: tuple(1 - v / max(r) for v in r))
    return _build(spec, note, lambda: Prune(spec, fracs, rescale=opts.get("rescale") == "true"))


def _bits_from_ratio(r: tuple[float, ...]) -> tuple[float, ...]:
    key = ":".join(f"{v:g}" for v in r)
    if key in PAPER_BITS:
        return PAPER_BITS[key]
    top = max(r)
    return tuple(max(1, round(32 * (v / top))) for v in r)  # v / top first: 32 * 1e308 overflows


def _quant_factory(cls):
    def factory(args, spec):
        pos, opts = split_args(args, spec)
        allowed = {"noise": QUANT_NOISE, "scope": QUANT_SCOPE, **({"sign": QUANT_SIGN} if cls.signed else {})}
        check_options(opts, allowed, spec)
        bits, note = _per_tier(pos, spec, "bits", quant_usage(cls.name), _bits_from_ratio)
        extra = {"sign": opts.get("sign", QUANT_SIGN[0])} if cls.signed else {}
        return _build(spec, note, lambda: cls(spec, bits, noise=opts.get("noise", "auto"),
                                              scope=opts.get("scope", QUANT_SCOPE[0]), **extra))

    return factory


register("quant", QUANT_USAGE.replace("use ", "", 1))(_quant_factory(Quant))
register("quants", quant_usage("quants").replace("use ", "", 1) + "  (sign + magnitude)")(_quant_factory(QuantS))


@register("channel", CHANNEL_USAGE.replace("use ", "", 1))
def _channel(args, spec):
    pos, opts = split_args(args, spec)
    check_options(opts, {}, spec)
    widths, note = _per_tier(pos, spec, "frac", CHANNEL_USAGE, lambda r: tuple(v / max(r) for v in r))
    return _build(spec, note, lambda: Channel(spec, widths))


register("hetefedrec", HETEFEDREC_USAGE.replace("use ", "", 1))(parse_hetefedrec)
register("fedem", FEDEM_USAGE.replace("use ", "", 1) + "  (model fcf; personalised merging)")(parse_fedem)


def expand_optimizations(specs) -> list[str]:
    """Expand presets (``paper-table1``) in a spec or a list of specs; validate every spec.
    Returns the specs without surrounding whitespace, each once, in order."""
    if isinstance(specs, str):
        specs = [specs]
    elif not isinstance(specs, (list, tuple)):
        raise ValueError(
            f"optimizations must be a spec or a list of specs (e.g. ['none', 'prune:1:2:4'] or 'paper-table1'), "
            f"got {specs!r}"
        )
    out: list[str] = []
    for s in specs:
        key = s.strip().lower() if isinstance(s, str) else None
        for item in PRESETS.get(key, (s,)):
            canonical = parse_optimization(item).spec
            if canonical not in out:
                out.append(canonical)
    return out


def parse_optimization(spec: str) -> Optimization:
    """``spec`` -> an :class:`Optimization` whose ``spec`` is ``spec`` without surrounding whitespace.
    Raises ``ValueError`` naming the spec and the allowed forms."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"optimization spec must be a non-empty string, got {spec!r}; known: {sorted(REGISTRY)} "
                         f"or the preset paper-table1")
    parts = spec.strip().split(":")
    name = parts[0].strip().lower()
    if name in PRESETS:
        raise ValueError(f"{spec!r} is a preset of {len(PRESETS[name])} optimisations ({', '.join(PRESETS[name])}); "
                         f"use it in a sweep's optimizations list, or pick one of them for a single run")
    if name not in REGISTRY:
        usage = "; ".join(USAGE[k] for k in sorted(USAGE))
        raise ValueError(f"unknown optimization {spec!r}; use one of: {usage}; or the preset paper-table1")
    return REGISTRY[name](parts[1:], spec.strip())


__all__ = ["PRESETS", "REGISTRY", "USAGE", "Channel", "ClientContext", "ExcludeLo", "FedEM", "Optimization", "Overselect",
           "Prune", "Quant", "QuantS", "Standalone", "dense_entry_count", "expand_optimizations", "make_contexts",
           "parse_optimization", "register"]
