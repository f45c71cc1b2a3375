"""Tier mapping: which device tier each user (client) is on.

Specs (strings, as used in configs and on the command line):

================================  ===============================================================
``random``                        users sorted by training events (ties in a seeded random
                                  order), ``tier = position mod n_tiers``: tiers balanced in
                                  number and data volume (the RF² authors' simulator)
``random:shuffle``                a seeded random permutation cut into equal groups (rf2 0.1)
``dirichlet:ALPHA``               Algorithm 1 of RF² with concentration ``ALPHA`` (> 0, <= 1e9)
``dirichlet:ALPHA:OPTION...``     options in any order, each at most once:
                                  ``unbalanced`` (drop lines 4-5; ``balanced`` is the default),
                                  ``draw=split|bernoulli`` (split each item's new users by its
                                  proportions, default; or per-user draws, the paper's text),
                                  ``tie=low|high|random`` (which equally small tier gets the
                                  larger share; default low), ``null=sorted|last`` (where the
                                  click-less users' pseudo-item is visited; default sorted)
``hetero-vlow`` ...               the paper's names (§5.3): vlow = 5000, low = 5, mid = 0.5,
                                  high = 0.05, vhigh = 0.005; the same options may follow
                                  (``hetero-high:tie=high``)
``activity[:R1:R2:...]``          not RF²'s: tiers by number of training events, lightest users
                                  lowest, in proportions R (default equal); HeteFedRec's grouping
================================  ===============================================================

rf2 0.1's mappings in these terms: ``random`` -> ``random:shuffle``; ``dirichlet:ALPHA`` ->
``dirichlet:ALPHA:draw=bernoulli:null=last`` (identical tiers when no user clicks an item twice).
"""
from __future__ import annotations

import numbers
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .activity import activity_mapping, count_groups
from .base import TierAssignment, tier_names
from .dirichlet import DRAWS, NULLS, TIES, assign_tiers, dirichlet_mapping, first_items
from .random import random_mapping, shuffle_mapping

if TYPE_CHECKING:
    from rf2.data import InteractionDataset

#: RF² §5.3 names for the Dirichlet concentrations.
PAPER_LEVELS = {
    "hetero-vlow": 5000.0,
    "hetero-low": 5.0,
    "hetero-mid": 0.5,
    "hetero-high": 0.05,
    "hetero-vhigh": 0.005,
}
#: The six mappings of the paper's evaluation, least to most heterogeneous.
PAPER_MAPPINGS = ("random", "dirichlet:5000", "dirichlet:5", "dirichlet:0.5", "dirichlet:0.05", "dirichlet:0.005")

#: Largest Dirichlet concentration accepted. Far beyond it the mapping is random in all but name
#: (the paper's "vlow" is 5000), and near float64's limit the gamma draws overflow and every
#: probability becomes 0, which would put every user in one tier.
MAX_ALPHA = 1e9
#: Tier indices are stored as int8.
MAX_TIERS = 127

_HELP = (
    f"use 'random' or 'random:shuffle', 'dirichlet:ALPHA' (ALPHA a decimal number in (0, {MAX_ALPHA:g}], e.g. "
    f"dirichlet:0.05) optionally followed, in any order, by ':unbalanced', ':draw=split|bernoulli', "
    f"':tie=low|high|random', ':null=sorted|last' (e.g. dirichlet:0.05:tie=high:unbalanced), 'activity' or "
    f"'activity:5:3:2' (tiers by training events, one ratio part per tier), or one of {sorted(PAPER_LEVELS)} "
    f"(with the same options)"
)
#: A plain ASCII decimal number (no ``1_0``, no non-ASCII digits, no ``inf``/``nan``).
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


@dataclass(frozen=True)
class MappingSpec:
    """A parsed tier-mapping spec (see the module docstring)."""

    kind: str  # "random", "dirichlet" or "activity"
    param: float | tuple[float, ...] | None = None  # alpha (dirichlet), ratio (activity)
    balance: bool = True  # dirichlet: Algorithm 1 lines 4-5
    draw: str = DRAWS[0]  # dirichlet: "split" or "bernoulli"
    tie: str = TIES[0]  # dirichlet: "low", "high" or "random"
    null: str = NULLS[0]  # dirichlet: "sorted" or "last"
    shuffle: bool = False  # random: rf2 0.1's equal-size permutation


def _dirichlet_options(spec: str, alpha: float, parts: list[str]) -> MappingSpec:
    allowed = {"draw": DRAWS, "tie": TIES, "null": NULLS}
    seen: dict[str, str] = {}
    for part in parts:
        if part in ("unbalanced", "balanced"):
            key, value = "balance", part
        elif "=" in part:
            key, value = (x.strip() for x in part.split("=", 1))
            if key not in allowed or value not in allowed[key]:
                choices = allowed.get(key)
                what = (f"option {key!r} must be one of {list(choices)}, got {value!r}" if choices
                        else f"unknown option {part!r}")
                raise ValueError(f"tier mapping {spec!r}: {what}; {_HELP}")
        else:
            raise ValueError(f"tier mapping {spec!r}: unknown option {part!r} (expected 'unbalanced' or KEY=VALUE); {_HELP}")
        if key in seen:
            raise ValueError(f"tier mapping {spec!r}: {key} is given more than once; give each option once; {_HELP}")
        seen[key] = value
    return MappingSpec("dirichlet", alpha, balance=seen.get("balance") != "unbalanced", draw=seen.get("draw", DRAWS[0]),
                       tie=seen.get("tie", TIES[0]), null=seen.get("null", NULLS[0]))


def parse_mapping_spec(spec: str) -> MappingSpec:
    """``spec`` -> :class:`MappingSpec`. Raises ``ValueError`` naming the spec and the allowed forms."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"tier mapping must be a non-empty string, got {spec!r}; {_HELP}")
    parts = [p.strip() for p in spec.strip().lower().split(":")]
    if parts[0] in PAPER_LEVELS:
        return _dirichlet_options(spec, PAPER_LEVELS[parts[0]], parts[1:])
    if parts[0] == "random":
        if len(parts) == 1:
            return MappingSpec("random")
        if parts[1:] == ["shuffle"]:
            return MappingSpec("random", shuffle=True)
        raise ValueError(f"tier mapping {spec!r}: 'random' takes no option but 'shuffle'; {_HELP}")
    if parts[0] == "activity":
        if len(parts) == 1:
            return MappingSpec("activity")
        if any(not _NUMBER.fullmatch(p) for p in parts[1:]):
            raise ValueError(f"tier mapping {spec!r}: ratio parts must be decimal numbers; {_HELP}")
        ratio = tuple(float(p) for p in parts[1:])
        if not all(0 < r <= MAX_ALPHA for r in ratio):
            raise ValueError(f"tier mapping {spec!r}: ratio parts must be > 0 and <= {MAX_ALPHA:g}; {_HELP}")
        return MappingSpec("activity", ratio)
    if parts[0] == "dirichlet" and len(parts) >= 2:
        if not _NUMBER.fullmatch(parts[1]):
            raise ValueError(f"tier mapping {spec!r}: alpha {parts[1]!r} is not a decimal number; {_HELP}")
        alpha = float(parts[1])
        if not 0 < alpha <= MAX_ALPHA:
            raise ValueError(
                f"tier mapping {spec!r}: Dirichlet alpha must be > 0 and <= {MAX_ALPHA:g}, got {parts[1]}; {_HELP}"
            )
        return _dirichlet_options(spec, alpha, parts[2:])
    import difflib

    head = spec.strip().lower().split(":", 1)
    close = difflib.get_close_matches(head[0], ["random", "dirichlet", "activity", *PAPER_LEVELS], n=1)
    hint = f"did you mean {':'.join([close[0], *head[1:]])!r}? " if close else ""
    raise ValueError(f"unknown tier mapping {spec!r}; {hint}{_HELP}")


def parse_mapping(spec: str) -> tuple[str, float | tuple[float, ...] | None, bool]:
    """``spec`` -> ``(kind, parameter, balance)``: ``alpha`` for ``dirichlet``, the ratio (or
    ``None``: equal parts) for ``activity``; every option in :func:`parse_mapping_spec`. Raises
    ``ValueError`` naming the spec and the allowed forms."""
    m = parse_mapping_spec(spec)
    return m.kind, m.param, m.balance


def check_n_tiers(n_tiers) -> int:
    """``n_tiers`` if it is an integer in ``[2, MAX_TIERS]``, else ``ValueError``."""
    if not isinstance(n_tiers, numbers.Integral) or isinstance(n_tiers, bool) or not 2 <= n_tiers <= MAX_TIERS:
        raise ValueError(f"n_tiers must be an integer in [2, {MAX_TIERS}] (RF²: 3, low/mid/high), got {n_tiers!r}")
    return int(n_tiers)


def map_tiers(dataset: "InteractionDataset", spec: str, n_tiers: int = 3, seed: int = 0) -> TierAssignment:
    """Assign every user of ``dataset`` a tier. Clicks of all events (train and test) drive the
    Dirichlet mapping: the tier is a property of the device, not of the training split; the
    ``random`` mapping deals users out by their training-event counts (``dataset.train_counts``)."""
    m = parse_mapping_spec(spec)
    n_tiers = check_n_tiers(n_tiers)
    if not isinstance(seed, numbers.Integral) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"tier mapping seed must be an integer >= 0, got {seed!r}")
    if m.kind == "random":
        if m.shuffle:
            return shuffle_mapping(dataset.n_users, n_tiers, seed, spec=spec)
        return random_mapping(dataset.train_counts, n_tiers, seed, spec=spec)
    if m.kind == "activity":
        return activity_mapping(dataset.train_counts, n_tiers, m.param, spec=spec, seed=seed)
    return dirichlet_mapping(
        dataset.user, dataset.item, dataset.label, dataset.n_users, dataset.n_items,
        alpha=m.param, n_tiers=n_tiers, balance=m.balance, seed=seed, spec=spec, draw=m.draw, tie=m.tie, null=m.null,
    )


__all__ = [
    "DRAWS", "MAX_ALPHA", "MAX_TIERS", "NULLS", "PAPER_LEVELS", "PAPER_MAPPINGS", "TIES", "MappingSpec", "TierAssignment",
    "activity_mapping", "assign_tiers", "count_groups", "check_n_tiers", "dirichlet_mapping", "first_items",
    "map_tiers", "parse_mapping", "parse_mapping_spec", "random_mapping", "shuffle_mapping", "tier_names",
]
