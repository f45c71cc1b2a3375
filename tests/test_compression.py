"""Prune, Quant, QuantS: builds from spec / exact where it must be / statistically right / bytes right."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from optimizations import ClientContext, Prune, Quant, QuantS, expand_optimizations, parse_optimization
from optimizations.compression import client_range, stochastic_round, tensor_ranges
from rf2.aggregation import background_sum, fedavg
from rf2.clients.updates import ClientUpdates, TableRows


def ctx(cid: int, tier: int, seed: int = 0) -> ClientContext:
    return ClientContext(cid, tier, ("low", "mid", "high")[tier], 0, 0, 10, seed * 1000 + cid)


def toy_updates(tiers=(0, 1, 2), seed=0, n_rows=50, dim=4) -> ClientUpdates:
    """Clients with a dense [3, 5] parameter and an embedding table where each touches a few rows."""
    g = torch.Generator().manual_seed(seed)
    C = len(tiers)
    rows, ptr = [], [0]
    for c in range(C):
        r = torch.unique(torch.randint(0, n_rows, (6,), generator=g))
        rows.append(r)
        ptr.append(ptr[-1] + r.numel())
    rows = torch.cat(rows)
    table = TableRows(torch.tensor(ptr), rows, torch.randn(rows.numel(), dim, generator=g) * 0.1, n_rows)
    return ClientUpdates(
        contexts=[ctx(c, t, seed) for c, t in enumerate(tiers)],
        weights=torch.arange(1, C + 1, dtype=torch.float32) * 10,
        dense={"w": torch.randn(C, 3, 5, generator=g)},
        tables={"emb": table},
    )


# -- builds from spec ------------------------------------------------------------------------------
def test_table1_settings_parse_exactly():
    assert parse_optimization("prune:1:2:4").per_tier == (0.75, 0.5, 0.0)
    assert parse_optimization("prune:1:2:8").per_tier == (0.875, 0.75, 0.0)
    assert parse_optimization("prune:1:4:16").per_tier == (0.9375, 0.75, 0.0)
    assert parse_optimization("quant:1:2:4").per_tier == (8, 16, 32)
    assert parse_optimization("quant:1:2:8").per_tier == (4, 8, 32)
    assert parse_optimization("quant:1:4:16").per_tier == (2, 4, 32)
    assert parse_optimization("quants:1:4:16").per_tier == (2, 4, 32)
    assert isinstance(parse_optimization("quants:1:2:4"), QuantS)
    assert parse_optimization("quant:bits:3:5:32").per_tier == (3, 5, 32)
    assert parse_optimization("prune:frac:0.5:0.25:0").per_tier == (0.5, 0.25, 0.0)
    assert parse_optimization("quant:1:2:4:noise=exact").noise == "exact"


def test_paper_preset_is_table1():
    specs = expand_optimizations(["paper-table1"])
    assert len(specs) == 14
    assert specs[:2] == ["exclude-lo", "overselect:0.2"]
    assert sum(s.startswith("quant:") for s in specs) == 3 and sum(s.startswith("quants:") for s in specs) == 3


@pytest.mark.parametrize("spec,match", [
    ("prune:1", ">= 2 positive"), ("prune:0:2:4", "positive"), ("prune:frac:1.0:0:0", r"\[0, 1\)"),
    ("prune:frac:-0.1:0:0", r"\[0, 1\)"), ("quant:bits:0:8:32", r"\[1, 32\]"), ("quant:bits:8:16:33", r"\[1, 32\]"),
    ("quants:bits:1:8:32:sign=budget", r"\[2, 32\]"), ("quants:1:2:4:sign=both", "sign must be one of"),
    ("quant:1:2:4:sign=separate", "unknown option 'sign'"), ("quant:1:2:4:scope=layer", "scope"), ("quant:a:b:c", "numbers"), ("quant:1:2:4:noise=loud", "noise"),
    ("prune:1:2:4:speed=3", "unknown option"), ("overselect:-0.2", "fraction"), ("overselect:x", "numbers"),
    ("exclude-lo:3", "no arguments"), ("paper-table1", "preset"), ("squash:1:2:4", "unknown optimization"),
    ("quant:1:2:4.5.6", "numbers"), ("channel:frac:0:1:1", r"\(0, 1\]"),
])
def test_bad_specs_name_the_problem(spec, match):
    with pytest.raises(ValueError, match=match or "ratios"):
        parse_optimization(spec)


def test_tier_count_must_match_the_run():
    opt = parse_optimization("prune:1:2")  # fine for a 2-tier run
    opt.validate(("low", "high"))
    with pytest.raises(ValueError, match="2 values.*3 tiers"):
        opt.validate(("low", "mid", "high"))


def test_setting_for_a_tier_that_has_none_is_an_error():
    u = toy_updates(tiers=(0, 1, 2))
    u.contexts[2] = ClientContext(2, 3, "tier3", 0, 0, 10, 7)
    with pytest.raises(ValueError, match="one value per tier"):
        Quant("quant:1:2:4", (8, 16, 32)).encode(u)


# -- exact where it must be ------------------------------------------------------------------------
def test_32_bits_and_zero_pruning_are_identity():
    u = toy_updates()
    for opt in (Quant("q", (32, 32, 32)), QuantS("qs", (32, 32, 32)), Prune("p", (0.0, 0.0, 0.0))):
        out = opt.encode(u)
        assert torch.equal(out.dense["w"], u.dense["w"])
        assert torch.equal(out.tables["emb"].values, u.tables["emb"].values)
        assert out.tables["emb"].background is None or float(out.tables["emb"].background.step.abs().sum()) == 0


def test_high_tier_untouched_by_table1_configs():
    u = toy_updates(tiers=(0, 2))
    for spec in ("prune:1:4:16", "quant:1:4:16", "quants:1:4:16"):
        out = parse_optimization(spec).encode(u)
        assert torch.equal(out.dense["w"][1], u.dense["w"][1]), spec
        t, o = u.tables["emb"], out.tables["emb"]
        assert torch.equal(o.values[t.ptr[1]:], t.values[t.ptr[1]:]), spec
        assert not torch.equal(out.dense["w"][0], u.dense["w"][0]), spec


def test_quants_keeps_zeros_exactly():
    u = toy_updates()
    u.dense["w"][:, 0, :] = 0.0
    u.tables["emb"].values[::3] = 0.0
    out = QuantS("qs", (2, 2, 2)).encode(u)
    assert (out.dense["w"][:, 0, :] == 0).all()
    assert (out.tables["emb"].values[::3] == 0).all()
    assert out.tables["emb"].background is None  # untouched rows stay exactly zero


def on_grid(vals: torch.Tensor, lo, hi, points: int) -> bool:
    grid = lo + (hi - lo) / (points - 1) * torch.arange(points)
    return bool(torch.isclose(vals.reshape(-1)[:, None], grid[None, :], atol=1e-6).any(1).all())


def test_quantised_values_lie_on_the_grid():
    u = toy_updates(tiers=(0, 0, 0))
    u.dense["w"] = u.dense["w"] * 10  # the dense tensor's range differs from the table's
    bits = 3
    # default: one range per tensor (the authors' simulator)
    (lo, hi), (tlo, thi) = tensor_ranges(u)["w"], tensor_ranges(u)["emb"]
    out = Quant("q", (bits,) * 3).encode(u)
    t = out.tables["emb"]
    for c in range(3):
        assert on_grid(out.dense["w"][c], lo[c], hi[c], 2**bits)
        assert on_grid(t.values[t.ptr[c]:t.ptr[c + 1]], tlo[c], thi[c], 2**bits)
    # scope=update: one range over the whole update (rf2 0.1)
    lo, hi = client_range(u)
    out = Quant("q", (bits,) * 3, scope="update").encode(u)
    t = out.tables["emb"]
    for c in range(3):
        assert on_grid(out.dense["w"][c], lo[c], hi[c], 2**bits)
        assert on_grid(t.values[t.ptr[c]:t.ptr[c + 1]], lo[c], hi[c], 2**bits)
        assert not on_grid(t.values[t.ptr[c]:t.ptr[c + 1]], tlo[c], thi[c], 2**bits)
    # QuantS, sign=separate (default): magnitudes on 2^n points of [0, max|x|] per tensor
    mx = tensor_ranges(u, magnitude=True)["w"][1]
    out = QuantS("qs", (bits,) * 3).encode(u)
    assert on_grid(out.dense["w"][0].abs(), 0.0, mx[0], 2**bits)
    assert not on_grid(out.dense["w"][0].abs(), 0.0, mx[0], 2 ** (bits - 1))
    # sign=budget (the paper's text): the sign inside the n bits, 2^(n-1) magnitude points
    out = QuantS("qs", (bits,) * 3, sign="budget").encode(u)
    assert on_grid(out.dense["w"][0].abs(), 0.0, mx[0], 2 ** (bits - 1))
    _, mx = client_range(u, magnitude=True)
    out = QuantS("qs", (bits,) * 3, sign="budget", scope="update").encode(u)
    assert on_grid(out.dense["w"][0].abs(), 0.0, mx[0], 2 ** (bits - 1))


def test_quants_separate_sign_allows_one_magnitude_bit():
    opt = parse_optimization("quants:bits:1:2:32")
    assert opt.per_tier == (1, 2, 32) and opt.sign == "separate"
    u = toy_updates(tiers=(0, 0, 0))
    mx = tensor_ranges(u, magnitude=True)["w"][1]
    out = opt.encode(u)
    for c in range(3):  # 1 magnitude bit: 0 or max|x|, with the sign
        assert on_grid(out.dense["w"][c].abs(), 0.0, mx[c], 2)
        assert (torch.sign(out.dense["w"][c]) * torch.sign(u.dense["w"][c]) >= 0).all()


def test_range_includes_zero_of_untouched_rows():
    u = toy_updates()
    u.dense["w"] = u.dense["w"].abs() + 1.0  # all dense entries > 0
    u.tables["emb"].values.abs_().add_(1.0)
    lo, hi = client_range(u)
    assert (lo == 0).all()  # the untouched table entries are zeros of the whole update


# -- statistically right ---------------------------------------------------------------------------
@pytest.mark.parametrize("dtypes", [(torch.float32, torch.float32), (torch.float64, torch.float32), (torch.float32, torch.float64)])
def test_stochastic_round_equals_its_plain_formula_bit_for_bit(dtypes):
    """The in-place stochastic_round equals the plain formula exactly, over magnitudes from 1e-8
    to 1e2, 1 to 2^31 - 1 levels, a flat range, mixed dtypes of the values and their ranges."""
    from optimizations.compression import stochastic_round_reference

    x_dtype, range_dtype = dtypes
    g = torch.Generator().manual_seed(0)
    for trial in range(10):
        x = (torch.randn(7, 301, generator=g, dtype=torch.float64) * 10.0 ** (trial - 8)).to(x_dtype)
        lo, hi = x.amin(1, keepdim=True).to(range_dtype), x.amax(1, keepdim=True).to(range_dtype)
        lo[2] = hi[2]  # a flat range: values pass through unchanged
        levels = torch.tensor([1.0, 3, 15, 255, 2**31 - 1, 1, 7])[:, None]
        u = torch.rand(7, 301, generator=g)
        fast, plain = stochastic_round(x, lo, hi, levels, u), stochastic_round_reference(x, lo, hi, levels, u)
        assert fast.dtype == plain.dtype and torch.equal(fast, plain), (trial, (fast - plain).abs().max())


def test_stochastic_rounding_is_unbiased():
    g = torch.Generator().manual_seed(0)
    x = torch.tensor([-0.9, -0.31, 0.0, 0.123, 0.5, 0.77])
    lo, hi, levels = torch.tensor(-1.0), torch.tensor(1.0), torch.tensor(3.0)  # grid -1, -1/3, 1/3, 1
    n = 40000
    draws = stochastic_round(x.expand(n, -1), lo, hi, levels, torch.rand(n, x.numel(), generator=g))
    mean, se = draws.mean(0), draws.std(0) / math.sqrt(n)
    assert ((mean - x).abs() < 5 * se + 1e-6).all()
    # each value goes to one of its two neighbouring grid points only
    assert draws.unique().numel() <= 4


def test_quant_is_unbiased_on_a_whole_update():
    base = toy_updates(tiers=(0, 1, 0))
    runs = []
    for s in range(400):
        u = toy_updates(tiers=(0, 1, 0))
        u.contexts = [ClientContext(c.client_id, c.tier, c.tier_name, s, 0, 10, s * 10 + c.client_id) for c in u.contexts]
        runs.append(Quant("q", (3, 4, 32)).encode(u).dense["w"])
    est = torch.stack(runs).mean(0)
    err = (est - base.dense["w"]).abs().max()
    spread = torch.stack(runs).std(0).max()
    assert err < 5 * spread / math.sqrt(400)


@pytest.mark.parametrize("sign", ["separate", "budget"])
def test_quants_is_unbiased(sign):
    """E[q(x)] = x for QuantS: the mean of many independent encodings lies within 5 standard
    errors of x for every entry (the standard error of each entry's two-point rounding computed
    from its grid). Rounding magnitudes always down would fail the same check."""
    bits, n = 2, 600
    base = toy_updates(tiers=(0, 0, 0))
    runs = []
    for s in range(n):
        u = toy_updates(tiers=(0, 0, 0))
        u.contexts = [ClientContext(c.client_id, c.tier, c.tier_name, s, 0, 10, s * 10 + c.client_id) for c in u.contexts]
        out = QuantS("qs", (bits,) * 3, sign=sign).encode(u)
        runs.append(torch.cat([out.dense["w"].reshape(-1), out.tables["emb"].values.reshape(-1)]))
    mean = torch.stack(runs).double().mean(0)
    x = torch.cat([base.dense["w"].reshape(-1), base.tables["emb"].values.reshape(-1)]).double()
    # each entry's grid step: max|x| of its tensor (per client) / (points - 1)
    points = 2**bits if sign == "separate" else 2 ** (bits - 1)
    t = base.tables["emb"]
    mx_w = base.dense["w"].abs().reshape(3, -1).amax(1).double()
    mx_t = torch.stack([t.values[t.ptr[c]:t.ptr[c + 1]].abs().max() for c in range(3)]).double()
    step = torch.cat([mx_w.repeat_interleave(15), mx_t[t.client_of_row()].repeat_interleave(t.values.shape[1])])
    step = step / (points - 1)
    frac = x.abs() / step - torch.floor(x.abs() / step)  # chance of rounding up
    se = step * torch.sqrt(frac * (1 - frac) / n)
    assert ((mean - x).abs() <= 5 * se + 1e-5 * step).all()
    # the check has power: always rounding |x| down would be rejected on many entries
    down = torch.sign(x) * torch.floor(x.abs() / step) * step
    assert ((down - x).abs() > 5 * se + 1e-5 * step).sum() > x.numel() // 4


@pytest.mark.parametrize("f", [0.5, 0.75, 0.9375])
def test_prune_keeps_the_stated_fraction(f):
    u = toy_updates(tiers=(0, 0, 0), n_rows=200)
    u.dense["w"] = torch.ones(3, 60, 50)
    out = Prune("p", (f, 0, 0)).encode(u)
    kept = (out.dense["w"] != 0).sum().item()
    n = u.dense["w"].numel()
    lo_, hi_ = stats.binom.ppf([1e-6, 1 - 1e-6], n, 1 - f)
    assert lo_ <= kept <= hi_
    assert set(out.dense["w"].unique().tolist()) <= {0.0, 1.0}  # no rescaling by default
    resc = Prune("p", (f, 0, 0), rescale=True).encode(u)
    sd = math.sqrt((1 / (1 - f) ** 2 * (1 - f) - 1) / n)  # std of the mean of n rescaled Bernoullis
    assert resc.dense["w"].mean().item() == pytest.approx(1.0, abs=5 * sd)  # unbiased with rescale


def test_randomness_is_per_client_and_reproducible():
    a = Quant("q", (3, 3, 3)).encode(toy_updates(seed=1))
    b = Quant("q", (3, 3, 3)).encode(toy_updates(seed=1))
    assert torch.equal(a.dense["w"], b.dense["w"])
    # a client's draws do not depend on which other clients share its round
    u = toy_updates(seed=1)
    solo = Quant("q", (3, 3, 3)).encode(u.select(torch.tensor([False, True, False])))
    assert torch.equal(solo.dense["w"][0], a.dense["w"][1])


def dense_quantise_then_average(u: ClientUpdates, bits: int, rounds: int, seed: int, scope: str = "tensor") -> torch.Tensor:
    """Reference: quantise every client's *full, dense* table update (zeros of untouched rows
    included) with plain stochastic rounding, on the table's own range (``scope="tensor"``) or the
    whole update's, then FedAvg. Returns [rounds, n_rows, D]."""
    g = torch.Generator().manual_seed(seed)
    t = u.tables["emb"]
    lo, hi = tensor_ranges(u)["emb"] if scope == "tensor" else client_range(u)
    out = []
    for _ in range(rounds):
        acc = torch.zeros(t.n_rows, t.values.shape[1])
        for c in range(u.n_clients):
            full = t.to_dense(c)
            q = stochastic_round(full, lo[c], hi[c], torch.tensor(2.0**bits - 1), torch.rand(full.shape, generator=g))
            acc += u.weights[c] * q
        out.append(acc / u.weights.sum())
    return torch.stack(out)


@pytest.mark.parametrize("mode,scope", [("exact", "tensor"), ("gaussian", "tensor"), ("exact", "update")])
def test_sparse_quant_matches_dense_reference_in_distribution(mode, scope):
    tiers = (0,) * 40
    u = toy_updates(tiers=tiers, n_rows=30, dim=2, seed=3)
    ref = dense_quantise_then_average(u, bits=2, rounds=300, seed=9, scope=scope)
    ours = []
    for r in range(300):
        v = toy_updates(tiers=tiers, n_rows=30, dim=2, seed=3)
        v.contexts = [ClientContext(c.client_id, c.tier, c.tier_name, r, 0, 10, 10_000 * r + c.client_id) for c in v.contexts]
        enc = Quant("q", (2,), noise=mode, scope=scope).encode(v)
        ours.append(fedavg(enc)["emb"])
    ours = torch.stack(ours)
    # per entry mean and variance agree (rows touched by some clients included)
    m_ref, m_our = ref.mean(0), ours.mean(0)
    s_ref = ref.std(0)
    assert ((m_ref - m_our).abs() <= 5 * s_ref / math.sqrt(300) * math.sqrt(2) + 1e-6).all()
    ratio = ours.var(0) / ref.var(0).clamp_min(1e-12)
    assert ratio.median() == pytest.approx(1.0, abs=0.15)
    # shape: KS on a row nobody touched
    t = u.tables["emb"]
    free = sorted(set(range(30)) - set(t.rows.tolist()))
    if free:
        p = stats.ks_2samp(ref[:, free[0], 0].numpy(), ours[:, free[0], 0].numpy()).pvalue
        assert p > 1e-3


def test_gaussian_background_moments_match_exact_sums():
    u = toy_updates(tiers=(0,) * 12, n_rows=40, dim=3, seed=5)
    enc = Quant("q", (2,)).encode(u)
    t = enc.tables["emb"]
    w = enc.weights
    exact = torch.stack([background_sum(_reseed(t, r), w, "exact") for r in range(400)])
    gauss = torch.stack([background_sum(_reseed(t, r), w, "gaussian") for r in range(400)])
    assert torch.allclose(exact.mean(0), gauss.mean(0), atol=float(5 * exact.std(0).max() / 20))
    assert (gauss.var(0) / exact.var(0).clamp_min(1e-12)).median() == pytest.approx(1.0, abs=0.2)


def _reseed(t: TableRows, r: int) -> TableRows:
    from dataclasses import replace

    return replace(t, background=replace(t.background, seeds=[s + 7919 * r for s in t.background.seeds]))


# -- bytes right -----------------------------------------------------------------------------------
def test_upload_bits():
    u = toy_updates(tiers=(0, 1, 2), n_rows=50, dim=4)
    n = 3 * 5 + 50 * 4  # every entry of the whole update, untouched rows included
    T = 2  # tensors: the dense "w" and the table "emb", each with its own header
    # Quant per tensor (default): n bits per entry + min and max (2 x float32) per tensor
    assert Quant("q", (8, 16, 32)).upload_bits(u).tolist() == [8 * n + 64 * T, 16 * n + 64 * T, 32 * n]
    assert Quant("q", (8, 16, 32), scope="update").upload_bits(u).tolist() == [8 * n + 64, 16 * n + 64, 32 * n]
    # QuantS, sign=separate (default): 1 sign bit + n magnitude bits per entry + max|x| per tensor
    assert QuantS("q", (8, 16, 32)).upload_bits(u).tolist() == [9 * n + 32 * T, 17 * n + 32 * T, 32 * n]
    assert QuantS("q", (8, 16, 32), sign="budget").upload_bits(u).tolist() == [8 * n + 32 * T, 16 * n + 32 * T, 32 * n]
    assert (QuantS("q", (8, 16, 32), sign="budget", scope="update").upload_bits(u).tolist()
            == [8 * n + 32, 16 * n + 32, 32 * n])
    assert Prune("p", (0.75, 0.5, 0.0)).upload_bits(u).tolist() == [0.25 * n * 32, 0.5 * n * 32, n * 32]
    assert parse_optimization("none").upload_bits(u).tolist() == [32 * n] * 3


def test_tensor_scope_uses_each_tensors_own_range():
    u = toy_updates(tiers=(0, 0, 0))
    u.dense["w"] = u.dense["w"] * 100  # a dense tensor with a much wider range than the table
    whole = Quant("q", (4,) * 3, scope="update").encode(u)
    per = Quant("q", (4,) * 3).encode(u)  # default: per tensor
    t = u.tables["emb"]
    err_whole = (whole.tables["emb"].values - t.values).abs().mean()
    err_per = (per.tables["emb"].values - t.values).abs().mean()
    assert err_per < err_whole / 5  # the table is quantised on its own, finer grid
    assert per.tables["emb"].background.step.max() < whole.tables["emb"].background.step.min()
    assert parse_optimization("quant:1:2:4:scope=tensor").scope == "tensor"
    assert parse_optimization("quant:1:2:4").scope == "tensor"
    assert parse_optimization("quant:1:2:4:scope=update").scope == "update"
    assert parse_optimization("quants:1:2:4").sign == "separate"
    assert parse_optimization("quants:1:2:4:sign=budget:scope=update").sign == "budget"
    n_tensors = 2
    n = 3 * 5 + 50 * 4
    assert Quant("q", (8, 8, 8), scope="tensor").upload_bits(u).tolist() == [8 * n + 64 * n_tensors] * 3


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_client_uniforms_equal_the_plain_per_client_loop(seed):
    """The fast draw (each client's stream drawn piece by piece into its places) equals the
    plain loop (one vector per client, then cut) exactly: several dense tensors, three tables of
    different widths, a client with no rows in one table, a client with no rows at all, and
    skipped clients anywhere."""
    from optimizations.compression import client_uniforms, client_uniforms_reference

    g = torch.Generator().manual_seed(seed)
    C = 6
    tables = {}
    for name, width, n_rows in (("users", 3, 40), ("items", 5, 30), ("cats", 1, 7)):
        rows, ptr = [], [0]
        for c in range(C):
            n = 0 if c == 4 or (name == "cats" and c == 1) else int(torch.randint(1, 6, (1,), generator=g))
            r = torch.unique(torch.randint(0, n_rows, (n,), generator=g)) if n else torch.zeros(0, dtype=torch.long)
            rows.append(r)
            ptr.append(ptr[-1] + r.numel())
        rows = torch.cat(rows)
        tables[name] = TableRows(torch.tensor(ptr), rows, torch.randn(rows.numel(), width, generator=g), n_rows)
    up = ClientUpdates(contexts=[ctx(c, c % 3, seed) for c in range(C)], weights=torch.ones(C),
                       dense={"w": torch.randn(C, 3, 5, generator=g), "b": torch.randn(C, 2, generator=g),
                              "s": torch.randn(C, 1, generator=g)},
                       tables=tables)
    skips = [None, np.zeros(C, dtype=bool), np.array([True, False, False, True, False, False]), np.ones(C, dtype=bool)]
    for skip in skips:
        fast_d, fast_t = client_uniforms(up, "prune", skip=skip)
        ref_d, ref_t = client_uniforms_reference(up, "prune", skip=skip)
        assert fast_d.keys() == ref_d.keys() and fast_t.keys() == ref_t.keys()
        for k in ref_d:
            assert torch.equal(fast_d[k], ref_d[k]), k
        for k in ref_t:
            assert torch.equal(fast_t[k], ref_t[k]), k
    assert (client_uniforms(up, "prune")[1]["items"] > 0).all()  # every stored entry drew (none left at zero)


def test_client_uniforms_equal_the_plain_loop_at_sizes_torch_may_vectorise():
    """Pieces of thousands of entries (where a generator could switch to a vectorised fill) are
    drawn piece by piece in the fast path and in one vector in the plain loop: still equal."""
    from optimizations.compression import client_uniforms, client_uniforms_reference

    g = torch.Generator().manual_seed(3)
    C, n_rows, width = 3, 5000, 16
    rows = [torch.randperm(n_rows, generator=g)[:n].sort().values for n in (1200, 37, 2501)]
    ptr = torch.tensor([0, *torch.cumsum(torch.tensor([r.numel() for r in rows]), 0).tolist()])
    rows = torch.cat(rows)
    up = ClientUpdates(contexts=[ctx(c, c % 3, 11) for c in range(C)], weights=torch.ones(C),
                       dense={"w": torch.randn(C, 64, 65, generator=g), "b": torch.randn(C, 4099, generator=g)},
                       tables={"items": TableRows(ptr, rows, torch.randn(rows.numel(), width, generator=g), n_rows)})
    fast_d, fast_t = client_uniforms(up, "quant")
    ref_d, ref_t = client_uniforms_reference(up, "quant")
    for k in ref_d:
        assert torch.equal(fast_d[k], ref_d[k]), k
    assert torch.equal(fast_t["items"], ref_t["items"])


def test_quant_background_seeds_are_pinned_per_client_and_shared_by_tables():
    """Exact Quant's background noise is drawn from each client's "quant-background" seed. The
    values are pinned (a change would silently change every exact Quant run's noise), each client
    has its own, and every table of an update carries the same per-client seeds."""
    up = toy_updates((0, 1, 2, 0))
    t = up.tables["emb"]
    up.tables["second"] = TableRows(t.ptr, t.rows, t.values * 2, t.n_rows)
    enc = parse_optimization("quant:1:2:4").encode(up)
    pinned = [4076469062620281522, 8850785984361058721, 8104002416551758187, 4724216511621262005]
    assert enc.tables["emb"].background.seeds == pinned
    assert enc.tables["second"].background.seeds == pinned
    assert parse_optimization("quants:1:2:4").encode(up).tables["emb"].background is None  # zero is a grid point
