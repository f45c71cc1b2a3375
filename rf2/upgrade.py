"""Defaults that changed, and how runs made under the old ones are relabelled.

rf2 0.2 (results format 3) follows the RF² authors' released simulator where the paper is silent
(README, "Defaults and where they come from"). A run made before that used other defaults, but
its stored config shows them only as "the default" (``dataset_options = {}``, ``mapping =
"random"``, ``quant:1:2:8``): read naively, it would sit in one table with new runs of a
different protocol. ``rf2 upgrade-results DIR`` therefore rewrites every old run's config with
the old defaults spelled out as the options that reproduce them, e.g. ``random`` →
``random:shuffle``, ``quant:1:2:8`` → ``quant:1:2:8:scope=update``; its file names get the run id
of the relabelled config, so a new sweep never mistakes an old run for a new one.

One relabelling is approximate: rf2 0.1's Overselect drew ``K + ⌈Kr⌉`` candidates, the current
rule (either drop rule) draws ``⌊K(1+r)⌋``; they agree when ``Kr`` is whole (K = 16, r = 0.2: 20 vs
19). Such runs are marked ``"relabel_approximate"`` in their record.
"""
from __future__ import annotations

import re

#: MovieLens loaders whose split and history defaults changed (RF² preprocessing).
RF2_MOVIELENS = ("ml-100k", "ml-1m", "ml-20m", "ml-25m")
#: What those loaders did by default before format 3.
OLD_DATASET_DEFAULTS = {"test_fraction": 0.2, "history_maxlen": 50}
#: The system model's profiles before format 3 (8/4/2 ms per sample, 1/10/100 Mbit/s).
OLD_SYSTEM_PRESET = "rf2-0.1"


def _with_option(spec: str, key: str, value: str) -> str:
    """``spec`` with ``:key=value`` appended unless it already sets ``key``."""
    if re.search(rf"(^|:){re.escape(key)}=", spec):
        return spec
    return f"{spec}:{key}={value}"


def relabel_optimization(spec: str) -> str:
    """The spec that reproduces what ``spec`` meant before format 3."""
    name = spec.split(":", 1)[0].strip().lower()
    if name == "quant":
        return _with_option(spec, "scope", "update")
    if name == "quants":
        return _with_option(_with_option(spec, "scope", "update"), "sign", "budget")
    if name == "overselect":
        if spec.strip().lower() == "overselect":
            spec = "overselect:0.2"
        return _with_option(spec, "drop", "time")
    return spec


def relabel_mapping(spec: str) -> str:
    """``random`` -> ``random:shuffle``; Algorithm 1 as rf2 0.1 ran it -> per-user draws with the
    no-click users visited last (``:draw=bernoulli:null=last``); other mappings are unchanged."""
    s = spec.strip()
    low = s.lower()
    if low == "random":
        return "random:shuffle"
    if low.startswith("dirichlet:") or low.startswith("hetero-"):
        return _with_option(_with_option(s, "draw", "bernoulli"), "null", "last")
    return spec


def relabel_config(config: dict) -> dict:
    """A format-2 run's config with the old defaults made explicit (format 3 meaning)."""
    c = dict(config)
    if c.get("dataset", "ml-100k") in RF2_MOVIELENS:
        opts = dict(c.get("dataset_options") or {})
        for k, v in OLD_DATASET_DEFAULTS.items():
            opts.setdefault(k, v)
        c["dataset_options"] = opts
    if "optimization" in c:
        c["optimization"] = relabel_optimization(c["optimization"])
    if "mapping" in c:
        c["mapping"] = relabel_mapping(c["mapping"])
    sysopts = dict(c.get("system_options") or {})
    sysopts.setdefault("preset", OLD_SYSTEM_PRESET)
    c["system_options"] = sysopts
    return c
