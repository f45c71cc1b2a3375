"""Prune/Quant/QuantS behaviour pinned against mutants of optimizations/compression.py that survived
tests/test_compression.py and tests/test_compression_edges.py (mutmut run on 4f678cf, issue 17;
benchmarks/MUTATION.md). Every expected value here is written by hand from the module's docstring."""
from __future__ import annotations

import pytest

from optimizations import Prune, Quant
from optimizations.compression import QuantS


# -- describe: how a run's optimisation is shown -------------------------------------------------------
def test_describe_names_each_tier_and_its_setting():
    assert Prune("p", (0.875, 0.75, 0.0)).describe() == "low/mid/high: 87.5/75/0% of the update pruned"
    assert Prune("p", (0.9375, 0.25), rescale=True).describe(("a", "b")) == "a/b: 93.75/25% of the update pruned, rest rescaled"
    assert Quant("q", (4, 8, 32)).describe() == "low/mid/high: 4/8/32 bits"
    assert (QuantS("s", (2, 4, 32), noise="exact", scope="update", sign="budget").describe()
            == "low/mid/high: 2/4/32 bits incl. sign (one range per update) (exact noise)")
    assert QuantS("s", (1, 2)).describe(("lo", "hi")) == "lo/hi: 1/2 magnitude bits + sign"


def test_describe_numbers_the_tiers_when_the_names_do_not_fit():
    assert Quant("q", (4, 8, 32)).describe(("low", "high")) == "tier 0/tier 1/tier 2: 4/8/32 bits"
    assert Prune("p", (0.5,)).describe() == "tier 0: 50% of the update pruned"
