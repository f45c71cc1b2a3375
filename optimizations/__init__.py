"""Tier-aware optimisations: a name -> class registry parsed from short specs.

``parse_optimization("none")`` is plain FedAvg. New optimisations register with
:func:`register` and need no change to the simulator; see :mod:`optimizations.base` for the hooks.
"""
from __future__ import annotations

from typing import Callable

from .base import ClientContext, Optimization, dense_entry_count, make_contexts

#: name -> factory taking the spec's arguments (the parts after the first ':') and the full spec
REGISTRY: dict[str, Callable[[list[str], str], Optimization]] = {}
#: name -> one-line usage, for error messages and `rf2 list`
USAGE: dict[str, str] = {}


def register(name: str, usage: str):
    def deco(factory):
        REGISTRY[name] = factory
        USAGE[name] = usage
        return factory

    return deco


@register("none", "none  (plain FedAvg: the baseline every optimisation is compared with)")
def _none(args: list[str], spec: str) -> Optimization:
    if args:
        raise ValueError(f"optimization {spec!r}: 'none' takes no arguments")
    return Optimization("none")


def parse_optimization(spec: str) -> Optimization:
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"optimization spec must be a non-empty string; known: {sorted(REGISTRY)}")
    parts = spec.strip().split(":")
    name = parts[0].lower()
    if name not in REGISTRY:
        usage = "; ".join(USAGE[k] for k in sorted(USAGE))
        raise ValueError(f"unknown optimization {spec!r}; use one of: {usage}")
    return REGISTRY[name](parts[1:], spec.strip())


__all__ = ["REGISTRY", "USAGE", "ClientContext", "Optimization", "dense_entry_count", "make_contexts",
           "parse_optimization", "register"]
