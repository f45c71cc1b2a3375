"""Prune/Quant/QuantS behaviour pinned against mutants of optimizations/compression.py that survived
tests/test_compression.py and tests/test_compression_edges.py (mutmut run on 4f678cf, issue 17;
benchmarks/MUTATION.md). Every expected value here is written by hand from the module's docstring."""
from __future__ import annotations

import pytest
import torch

from optimizations import ClientContext, Prune, Quant
from optimizations.compression import QuantS, tensor_ranges
from rf2.clients.updates import TableRows
from test_compression_edges import updates  # the shared update builder


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


# -- Quant's and QuantS's constructor and usage text ---------------------------------------------------
QUANT_USE = ("use quant:1:2:4 | quant:1:2:8 | quant:1:4:16 (Table 1) or quant:bits:B_LOW:...:B_HIGH "
             "(1-32 bits, 32 = unquantised), optionally :noise=auto|exact|gaussian and :scope=tensor|update")
QUANTS_USE = ("use quants:1:2:4 | quants:1:2:8 | quants:1:4:16 (Table 1) or quants:bits:B_LOW:...:B_HIGH "
              "(1-32 magnitude bits; 2-32 with sign=budget, 32 = unquantised), optionally "
              ":noise=auto|exact|gaussian and :scope=tensor|update and :sign=separate|budget")


def test_usage_text_of_quant_and_quants():
    from optimizations.compression import quant_usage

    assert quant_usage() == QUANT_USE and quant_usage("quant") == QUANT_USE
    assert quant_usage("quants") == QUANTS_USE


def message(call) -> str:
    with pytest.raises(ValueError) as e:
        call()
    return str(e.value)


@pytest.mark.parametrize("bad,shown", [(0, "0"), (33, "33"), (2.5, "2.5"), (float("inf"), "inf"),
                                       (float("nan"), "nan"), ("8", "'8'"), (None, "None"), (True, "1")])
def test_bad_bit_widths_are_refused_by_value(bad, shown):
    for cls, use in ((Quant, QUANT_USE), (QuantS, QUANTS_USE)):
        assert message(lambda: cls("q:x", (8, bad))) == (
            f"optimization 'q:x': bit widths must be integers in [1, 32], got {shown}; {use}")


def test_bit_width_bounds_depend_on_the_sign_rule():
    assert Quant("q", (1, 32)).per_tier == (1, 32) and QuantS("s", (1, 32)).per_tier == (1, 32)
    assert QuantS("s", (2, 32), sign="budget").per_tier == (2, 32)
    assert message(lambda: QuantS("s", (1, 32), sign="budget")) == (
        f"optimization 's': bit widths must be integers in [2, 32], got 1; {QUANTS_USE}")
    assert message(lambda: QuantS("s", (8,), sign="both")) == (
        "optimization 's': option sign must be one of ['separate', 'budget'], got 'both'")
    q = Quant("q", (8.0, 16))
    assert q.per_tier == (8, 16) and all(type(b) is int for b in q.per_tier)


def test_noise_and_scope_options_are_checked_and_kept():
    assert message(lambda: Quant("q", (8,), noise="loud")) == (
        "optimization 'q': option noise must be one of ['auto', 'exact', 'gaussian'], got 'loud'")
    assert message(lambda: QuantS("q", (8,), scope="layer")) == (
        "optimization 'q': option scope must be one of ['tensor', 'update'], got 'layer'")
    q = Quant("q", (8,))
    assert (q.spec, q.noise, q.scope, q.sign) == ("q", "auto", "tensor", None)
    q = Quant("q", (8,), noise="gaussian", scope="update", sign="budget")  # sign means nothing to Quant
    assert (q.noise, q.scope, q.sign) == ("gaussian", "update", None)
    s = QuantS("s", (8,))
    assert (s.spec, s.noise, s.scope, s.sign) == ("s", "auto", "tensor", "separate")
    assert QuantS("s", (8,), sign="budget").sign == "budget"


def test_setting_names_the_spec_and_the_tier_count():
    contexts = [ClientContext(0, 1, "mid", 0, 0, 10, 1), ClientContext(1, 0, "low", 0, 0, 10, 2)]
    assert Prune("p", (0.5, 0.25)).setting(contexts) == [0.25, 0.5]
    contexts.append(ClientContext(2, 2, "high", 0, 0, 10, 3))
    assert message(lambda: Quant("q:2", (4, 8)).setting(contexts)) == (
        "optimization 'q:2' gives 2 tiers a bit width, but the run has more tiers; give one value per tier (low ... high)")


# -- ranges of embedding tables -------------------------------------------------------------------------
def test_table_ranges_of_values_and_of_magnitudes():
    # a one-row table both clients hold in full (no untouched entries), and a 2-row one where each
    # holds one row (one untouched row, whose zeros belong to the range)
    full = TableRows(torch.tensor([0, 1, 2]), torch.tensor([0, 0]), torch.tensor([[-3.0, -1.0], [0.5, -2.0]]), 1)
    part = TableRows(torch.tensor([0, 1, 2]), torch.tensor([0, 1]), torch.tensor([[-3.0, -1.0], [0.5, 2.0]]), 2)
    u = updates({}, {"full": full, "part": part})
    r = tensor_ranges(u)
    assert [x.tolist() for x in r["full"]] == [[-3.0, -2.0], [-1.0, 0.5]]
    assert [x.tolist() for x in r["part"]] == [[-3.0, 0.0], [0.0, 2.0]]  # untouched zeros included
    r = tensor_ranges(u, magnitude=True)
    assert [x.tolist() for x in r["full"]] == [[1.0, 0.5], [3.0, 2.0]]
    assert [x.tolist() for x in r["part"]] == [[0.0, 0.0], [3.0, 2.0]]


def test_ranges_of_tables_with_nothing_stored_are_zero():
    # no client holds a row of a 5-row table: every entry is an untouched zero
    unheld = TableRows(torch.tensor([0, 0, 0]), torch.zeros(0, dtype=torch.long), torch.zeros(0, 4), 5)
    u = updates({}, {"unheld": unheld})
    for magnitude in (False, True):
        r = tensor_ranges(u, magnitude=magnitude)
        assert [x.tolist() for x in r["unheld"]] == [[0.0, 0.0], [0.0, 0.0]]


# -- stochastic_round and client_uniforms (mutmut run on becae75, issue 17) ---------------------------
def test_stochastic_round_keeps_a_flat_range_and_grid_points_exactly():
    """lo == hi (one client sent one value everywhere): x itself, not 0/0; a value on a grid
    point stays there even for u = 0 (rounding up needs u < distance, and the distance is 0),
    and between points it goes up exactly when u < the distance in steps."""
    from optimizations.compression import stochastic_round

    lo, hi, levels = torch.tensor([2.0]), torch.tensor([2.0]), torch.tensor([3.0])
    x = torch.tensor([2.0, 2.0])
    assert stochastic_round(x, lo, hi, levels, torch.tensor([0.0, 0.9])).tolist() == [2.0, 2.0]
    lo, hi = torch.tensor([0.0]), torch.tensor([3.0])  # points 0, 1, 2, 3
    x = torch.tensor([1.0, 1.0, 2.25, 2.25, 0.5])
    u = torch.tensor([0.0, 0.999, 0.25, 0.2499, 0.5])
    assert stochastic_round(x, lo, hi, levels, u).tolist() == [1.0, 1.0, 2.0, 3.0, 0.0]


def _three_tensor_update(tiers=(0, 0, 0, 0)):
    C = len(tiers)
    table = TableRows(ptr=torch.tensor([0, 2, 3, 3, 5]), rows=torch.tensor([1, 4, 2, 0, 3]),
                      values=torch.zeros(5, 2), n_rows=6)
    return updates({"a": torch.zeros(C, 3), "b": torch.zeros(C, 2, 2)}, {"t": table}, tiers)


def test_client_uniforms_are_each_clients_own_stream_in_tensor_order():
    """Client c's uniforms are one draw from its own stream, cut in the order dense tensors (a, b),
    then its table rows: written out here with torch.rand on a generator of the same seed."""
    from optimizations.compression import client_uniforms

    up = _three_tensor_update()
    dense, tables = client_uniforms(up, "quant")
    rows = [2, 1, 0, 2]
    for c in range(4):
        u = torch.rand(3 + 4 + 2 * rows[c], generator=up.contexts[c].torch_generator("quant"))
        assert dense["a"][c].tolist() == u[:3].tolist()
        assert dense["b"][c].reshape(-1).tolist() == u[3:7].tolist()
        ptr = up.tables["t"].ptr
        assert tables["t"][ptr[c]: ptr[c + 1]].reshape(-1).tolist() == u[7:].tolist()
    assert len(set(dense["a"][:, 0].tolist())) == 4  # four different streams


def test_client_uniforms_skip_only_the_skipped_clients():
    """A skipped client gets zeros and draws nothing; every later client still gets exactly the
    uniforms it gets without skipping (so skip=None is the same as skipping no one)."""
    import numpy as np

    from optimizations.compression import client_uniforms

    up = _three_tensor_update()
    full_d, full_t = client_uniforms(up, "quant")
    none_d, none_t = client_uniforms(up, "quant", skip=np.zeros(4, dtype=bool))
    assert all(torch.equal(full_d[k], none_d[k]) for k in full_d) and torch.equal(full_t["t"], none_t["t"])
    d, t = client_uniforms(up, "quant", skip=np.array([False, True, False, False]))
    for k in d:
        assert (d[k][1] == 0).all() and torch.equal(d[k][[0, 2, 3]], full_d[k][[0, 2, 3]])
    assert (t["t"][2:3] == 0).all() and torch.equal(t["t"][[0, 1, 3, 4]], full_t["t"][[0, 1, 3, 4]])
