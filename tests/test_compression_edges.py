"""Prune/Quant/QuantS edge cases the statistical tests in test_compression.py do not pin down:
spec-helper messages, ranges of empty and magnitude updates, pruning of table rows. Each test
here was written against a mutant that survived the suite (benchmarks/MUTATION.md)."""
from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from optimizations import ClientContext, Prune, Quant
from optimizations.compression import client_range, parse_number, parse_numbers, parse_ratios, split_args
from rf2.clients.updates import ClientUpdates, TableRows


def ctx(cid: int, tier: int) -> ClientContext:
    return ClientContext(cid, tier, ("low", "mid", "high")[tier], 0, 0, 10, 7000 + cid)


def updates(dense: dict, tables: dict | None = None, tiers=(0, 0)) -> ClientUpdates:
    return ClientUpdates(contexts=[ctx(c, t) for c, t in enumerate(tiers)], weights=torch.ones(len(tiers)),
                         dense=dense, tables=tables or {})


# -- spec helpers --------------------------------------------------------------------------------------
def test_parse_number_accepts_padded_text_and_rejects_others_by_name():
    assert parse_number(" 0.25 ") == 0.25 and parse_number("-1e-3") == -0.001
    for bad in ("abc", "1_0", "inf", "", 5, None):
        with pytest.raises(ValueError, match=r"^not a number: " + repr(bad).replace("(", r"\(")):
            parse_number(bad)
    with pytest.raises(ValueError, match=r"^not a finite number: '1e999'$"):
        parse_number("1e999")


def test_split_args_splits_each_option_at_its_first_equals_sign():
    pos, opts = split_args([" 1", "Noise = Exact", "x=a=b", "2"], "s")
    assert pos == ["1", "2"] and opts == {"noise": "exact", "x": "a=b"}
    with pytest.raises(ValueError, match=r"optimization 's': option 'noise' is given more than once; give it once"):
        split_args(["noise=exact", "NOISE=auto"], "s")


def test_number_lists_name_the_spec_what_and_usage():
    with pytest.raises(ValueError, match=r"^optimization 'q:bits': missing bits; USE IT$"):
        parse_numbers([], "q:bits", "bits", "USE IT")
    with pytest.raises(ValueError, match=r"^optimization 'prune:a:2': overhead ratios must be finite decimal numbers .*; USE IT$"):
        parse_ratios(["a", "2"], "prune:a:2", "USE IT")
    with pytest.raises(ValueError, match=r"^optimization 'prune:0:2': ratios must be >= 2 positive numbers \(low:...:high\); USE IT$"):
        parse_ratios(["0", "2"], "prune:0:2", "USE IT")
    assert parse_ratios(["1", "4"], "prune:1:4", "") == (1.0, 4.0)


# -- ranges ---------------------------------------------------------------------------------------------
def test_client_range_of_values_and_of_magnitudes():
    w = torch.tensor([[[-3.0, 1.0], [0.5, 2.0]], [[0.25, -0.5], [1.5, 0.75]]])
    u = updates({"w": w})
    lo, hi = client_range(u)
    assert lo.tolist() == [-3.0, -0.5] and hi.tolist() == [2.0, 1.5]
    lo, hi = client_range(u, magnitude=True)
    assert lo.tolist() == [0.0, 0.0]  # magnitudes are quantised from 0, not from min |x|
    assert hi.tolist() == [3.0, 1.5]  # max |x|, here from a negative entry


def test_client_range_of_an_update_with_no_tensors_is_zero():
    u = updates({})
    for magnitude in (False, True):
        lo, hi = client_range(u, magnitude=magnitude)
        assert lo.tolist() == [0.0, 0.0] and hi.tolist() == [0.0, 0.0]


# -- pruning table rows ---------------------------------------------------------------------------------
def table_update(f_low: float, rescale: bool):
    n_rows, dim = 400, 8
    rows = torch.arange(n_rows)
    t = TableRows(torch.tensor([0, n_rows, 2 * n_rows]), torch.cat([rows, rows]), torch.ones(2 * n_rows, dim), n_rows)
    u = updates({}, {"emb": t}, tiers=(0, 2))
    return Prune("p", (f_low, 0.5, 0.0), rescale=rescale).encode(u).tables["emb"], n_rows * dim


@pytest.mark.parametrize("f", [0.25, 0.75])
def test_prune_drops_the_stated_fraction_of_a_clients_table_rows(f):
    out, n = table_update(f, rescale=False)
    low, high = out.values[: n // 8], out.values[n // 8:]
    kept = int((low != 0).sum())
    lo_, hi_ = stats.binom.ppf([1e-6, 1 - 1e-6], n, 1 - f)
    assert lo_ <= kept <= hi_
    assert set(low.unique().tolist()) == {0.0, 1.0}  # dropped entries are exactly 0, kept ones unchanged
    assert (high == 1).all()  # the high tier (fraction 0) keeps every entry


def test_prune_rescales_kept_table_entries():
    out, n = table_update(0.75, rescale=True)
    low, high = out.values[: n // 8], out.values[n // 8:]
    assert set(low.unique().tolist()) == {0.0, 4.0}
    assert (high == 1).all()
    sd = math.sqrt(3.0 / n)  # the mean of n variables 4·Bernoulli(1/4): variance (16/4 - 1) / n
    assert low.mean().item() == pytest.approx(1.0, abs=5 * sd)


def test_prune_with_no_pruning_hands_back_the_update_itself():
    u = updates({"w": torch.randn(2, 3)})
    assert Prune("p", (0.0, 0.0, 0.0)).encode(u) is u  # nothing drawn, nothing copied


# -- bit counts at scale --------------------------------------------------------------------------------
def huge_table_update(tiers=(0,)) -> ClientUpdates:
    """One client holding one row of a table of 10^8 + 1 rows (all counted: untouched rows are sent too)."""
    t = TableRows(torch.tensor([0, 1]), torch.tensor([0]), torch.ones(1, 1), 10**8 + 1)
    return updates({}, {"emb": t}, tiers=tiers)


def test_pruned_bits_are_counted_in_double_precision():
    # (10^8 + 1) entries, 10% pruned, 32 bits each: 0.9 * 32 * 100000001 = 2880000028.8 bits
    bits = Prune("p", (0.1, 0.0, 0.0)).upload_bits(huge_table_update())
    assert bits.dtype == torch.float64 and bits.tolist() == pytest.approx([2880000028.8], abs=1e-3)


# -- Quant's background (what stochastic rounding does to untouched zeros) ---------------------------------
def test_background_of_unquantised_and_flat_clients_is_exactly_zero():
    from optimizations import Quant

    n_rows = 30
    # client 0 (2 bits) and client 1 (32 bits: unquantised) touch a few rows with negative values;
    # client 2's update is all zero (a flat range)
    rows = torch.tensor([1, 4, 2, 5])
    vals = torch.tensor([[-1.0, 0.5], [0.25, 1.0], [-2.0, 1.0], [0.5, -0.5]])
    t = TableRows(torch.tensor([0, 2, 4, 4]), rows, vals, n_rows)
    u = updates({}, {"emb": t}, tiers=(0, 2, 0))
    for noise in ("exact", "gaussian", "auto"):
        bg = Quant("q", (2, 8, 32), noise=noise).encode(u).tables["emb"].background
        assert bg.mode == noise
        assert bg.low[1:].tolist() == [0.0, 0.0] and bg.step[1:].tolist() == [0.0, 0.0]
        # client 0: range [-1, 1] on 4 points -1, -1/3, 1/3, 1: a zero rounds to -1/3 or 1/3, each half the time
        assert bg.step[0].item() == pytest.approx(2 / 3) and bg.low[0].item() == pytest.approx(-1 / 3)
        assert bg.p_up[0].item() == pytest.approx(0.5)


def test_range_of_an_empty_parameter_is_zero():
    from optimizations.compression import tensor_ranges

    u = updates({"empty": torch.zeros(2, 0), "w": torch.tensor([[-1.0], [2.0]])})
    r = tensor_ranges(u)
    assert [t.tolist() for t in r["empty"]] == [[0.0, 0.0], [0.0, 0.0]]
    assert [t.tolist() for t in r["w"]] == [[-1.0, 2.0], [-1.0, 2.0]]


def test_range_of_a_width_zero_table_is_zero_and_quantising_it_works():
    """A table with rows but no columns (an embedding of width 0) has no entries: its range is 0
    and it does not change the other tensors' ranges (it used to crash scatter_reduce)."""
    from optimizations.compression import tensor_ranges

    t = TableRows(torch.tensor([0, 2, 3]), torch.tensor([1, 4, 0]), torch.zeros(3, 0), 6)
    u = updates({"w": torch.tensor([[-1.0], [2.0]])}, {"empty": t})
    r = tensor_ranges(u)
    assert [x.tolist() for x in r["empty"]] == [[0.0, 0.0], [0.0, 0.0]]
    assert [x.tolist() for x in r["w"]] == [[-1.0, 2.0], [-1.0, 2.0]]
    out = Quant("q", (2, 8), noise="exact").encode(u)
    assert out.tables["empty"].values.shape == (3, 0)
