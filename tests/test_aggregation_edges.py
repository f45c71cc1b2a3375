"""rf2.aggregation on tiny hand-computed inputs: FedAvg of dense, masked and table updates, and the
exact / Gaussian background sums entry by entry (mutation tests; fast and exact)."""
from __future__ import annotations

import pytest
import torch

from rf2.aggregation import RowUpdate, background_sum, fedavg, weighted_row_sum
from rf2.clients.updates import Background, ClientUpdates, TableRows


def updates(weights, dense=None, tables=None, masks=None, summed=None):
    w = torch.tensor(weights)
    return ClientUpdates([None] * len(weights), w, dense or {}, tables or {}, masks=masks, summed=summed)


def table(bg=None):
    # client 0 touches rows 1, 3; client 1 touches row 3; 5 rows, D = 2
    return TableRows(torch.tensor([0, 2, 3]), torch.tensor([1, 3, 3]),
                     torch.tensor([[1.0, 2.0], [3.0, 4.0], [10.0, 20.0]]), 5, bg)


def test_weighted_row_sum_merges_rows():
    r = weighted_row_sum(torch.tensor([4, 1, 4]), torch.tensor([[1.0], [2.0], [3.0]]), torch.tensor([2.0, 3.0, 0.5]))
    assert r.rows.tolist() == [1, 4] and r.values.tolist() == [[6.0], [3.5]]
    assert r.values.dtype == torch.float32


def test_fedavg_dense_weighted_mean_and_shapes():
    d = torch.tensor([[[1.0, 2.0]], [[5.0, 10.0]]])  # [C=2, 1, 2]
    out = fedavg(updates([1, 3], dense={"w": d}))
    assert out["w"].shape == (1, 2)
    assert torch.allclose(out["w"], torch.tensor([[4.0, 8.0]]))
    out = fedavg(updates([2, 2], dense={"b": torch.tensor([1.0, 3.0])}))
    assert out["b"].item() == pytest.approx(2.0)


def test_fedavg_masked_entries_average_over_holders_only():
    d = torch.tensor([[1.0, 2.0, 3.0], [5.0, 6.0, 7.0]])
    m = torch.tensor([[True, True, False], [False, True, False]])
    out = fedavg(updates([1, 3], dense={"w": d, "v": d.clone()}, masks={"w": m}))
    assert out["w"].tolist() == pytest.approx([1.0, (2 + 18) / 4, 0.0])
    assert out["v"].tolist() == pytest.approx([4.0, 5.0, 6.0])  # not masked: plain mean
    # a holder with weight 0 does not count
    out = fedavg(updates([0, 3], dense={"w": d}, masks={"w": m}))
    assert out["w"].tolist() == pytest.approx([0.0, 6.0, 0.0])
    out = fedavg(updates([0.25, 0.5], dense={"w": d}, masks={"w": m}))  # holders' weight below 1
    assert out["w"].tolist() == pytest.approx([1.0, (0.5 + 3) / 0.75, 0.0])


def test_fedavg_zero_total_weight_and_summed():
    with pytest.raises(ValueError, match=r"^FedAvg: the clients' total weight is zero \(no training samples\)$"):
        fedavg(updates([0, 0], dense={"w": torch.zeros(2, 1)}))
    assert fedavg(updates([1, 0], dense={"w": torch.tensor([[2.0], [9.0]])}))["w"].tolist() == [2.0]  # total 1 is fine
    out = fedavg(updates([0.5, 0.5], dense={"w": torch.tensor([[2.0], [4.0]])}))
    assert out["w"].tolist() == [3.0] and out["w"].dtype == torch.float32
    w64 = ClientUpdates([None] * 2, torch.tensor([1.0, 3.0], dtype=torch.float64), {"w": torch.tensor([[2.0], [4.0]])}, {})
    assert fedavg(w64)["w"].dtype == torch.float32  # weights are cast to float32
    s = {"w": torch.ones(1)}
    assert fedavg(updates([0, 0], summed=s)) is s


def test_fedavg_table_rows_over_all_clients():
    out = fedavg(updates([1, 3], tables={"e": table()}))
    r = out["e"]
    assert isinstance(r, RowUpdate) and r.rows.tolist() == [1, 3]
    assert torch.allclose(r.values, torch.tensor([[0.25, 0.5], [(3 + 30) / 4, (4 + 60) / 4]]))


def bg(mode, low=(0.5, -1.0), step=(2.0, 4.0), p=(0.25, 0.5), seeds=(7, 8)):
    return Background(torch.tensor(low), torch.tensor(step), torch.tensor(p), list(seeds), mode=mode)


def exact_by_hand(t, w):
    b = t.background
    out = torch.zeros(5, 2)
    for c in range(2):
        g = torch.Generator().manual_seed(b.seeds[c])
        x = b.low[c] + b.step[c] * (torch.rand((5, 2), generator=g) < b.p_up[c]).float()
        touched = t.rows[t.ptr[c]:t.ptr[c + 1]]
        x[touched] = 0.0
        out += w[c] * x
    return out


def test_exact_background_by_hand_and_in_fedavg():
    w = torch.tensor([1.0, 3.0])
    t = table(bg("exact"))
    got = background_sum(t, w)
    assert torch.equal(got, exact_by_hand(t, w))
    assert got[0].abs().sum() > 0 and got[3].tolist() == [0.0, 0.0]  # row 3 touched by both
    auto = table(bg("auto"))
    assert torch.equal(background_sum(auto, w), got)  # small table: auto is exact
    assert torch.equal(background_sum(auto, w, "exact"), got)
    out = fedavg(updates([1, 3], tables={"e": t}))["e"]
    expect = got.clone()
    expect.index_add_(0, t.rows, t.values * torch.tensor([1.0, 1.0, 3.0])[:, None])
    assert torch.allclose(out, expect / 4)
    # a client whose background is exactly zero adds nothing (and needs no draws)
    z = table(bg("exact", low=(0.0, -1.0), step=(0.0, 4.0)))
    only1 = exact_by_hand(z, torch.tensor([0.0, 3.0]))
    assert torch.equal(background_sum(z, w), only1)


def test_gaussian_background_mean_variance_and_touching_clients():
    w = torch.tensor([1.0, 3.0])
    t = table(bg("gaussian"))
    got = background_sum(t, w)
    low, step, p = torch.tensor([0.5, -1.0]), torch.tensor([2.0, 4.0]), torch.tensor([0.25, 0.5])
    mean_c = (w * (low + step * p)).double()
    var_c = (w**2 * step**2 * p * (1 - p)).double()
    mean = torch.tensor([mean_c.sum(), mean_c[1], mean_c.sum(), 0.0, mean_c.sum()], dtype=torch.float64)
    var = torch.tensor([var_c.sum(), var_c[1], var_c.sum(), 0.0, var_c.sum()], dtype=torch.float64)
    z = torch.randn((5, 2), generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    expect = (mean[:, None] + var.sqrt()[:, None] * z).float()
    assert got.dtype == torch.float32 and torch.allclose(got, expect, atol=1e-6)
    tiny = table(bg("auto"))
    tiny.background.budget = 19  # 2 clients x 5 rows x 2 > 19: gaussian
    assert torch.allclose(background_sum(tiny, w), expect, atol=1e-6)
    tiny.background.budget = 20  # == budget: exact
    assert torch.equal(background_sum(tiny, w), exact_by_hand(tiny, w))
    assert torch.allclose(background_sum(table(bg("exact")), w, "gaussian"), expect, atol=1e-6)
    with pytest.raises(ValueError, match="exact, gaussian or auto, got 'nope'"):
        background_sum(table(bg("nope")), w)


def test_gaussian_background_without_seeds_uses_seed_zero():
    w = torch.tensor([1.0, 3.0])
    t = table(bg("gaussian", seeds=()))
    a = background_sum(t, w)
    t0 = table(bg("gaussian", seeds=(0, 5)))
    assert torch.equal(a, background_sum(t0, w))


@pytest.mark.parametrize("low,step", [((0.0, -1.0), (2.0, 0.0)), ((0.0, 1.0), (1.0, 0.0))])
def test_exact_background_skips_only_clients_with_no_background(low, step):
    w = torch.tensor([1.0, 3.0])
    t = table(bg("exact", low=low, step=step, p=(0.5, 0.5)))
    assert torch.equal(background_sum(t, w), exact_by_hand(t, w))


def test_double_precision_tables_stay_double():
    r = weighted_row_sum(torch.tensor([2, 2]), torch.tensor([[0.1], [0.2]], dtype=torch.float64),
                         torch.tensor([1.0, 1.0], dtype=torch.float64))
    assert r.values.dtype == torch.float64 and r.values.item() == 0.1 + 0.2
    t = table(bg("exact", low=(0.1, -0.7), step=(0.3, 1.1)))
    t.values = t.values.double()
    w = torch.tensor([1.0, 3.0], dtype=torch.float64)
    got = background_sum(t, w)
    b = t.background
    expect = torch.zeros(5, 2, dtype=torch.float64)
    for c in range(2):
        g = torch.Generator().manual_seed(b.seeds[c])
        x = b.low[c] + b.step[c] * (torch.rand((5, 2), generator=g) < b.p_up[c]).double()
        x[t.rows[t.ptr[c]:t.ptr[c + 1]]] = 0.0
        expect += w[c] * x
    assert got.dtype == torch.float64 and torch.equal(got, expect)


def test_gaussian_background_draws_in_double_precision():
    """A larger table (torch draws float32 and float64 normals differently from 16 entries on)."""
    w = torch.tensor([1.0, 3.0])
    t = TableRows(torch.tensor([0, 1, 1]), torch.tensor([2]), torch.tensor([[1.0, 1.0]]), 40,
                  bg("gaussian", low=(0.0, 0.0), step=(1.0, 1.0), p=(0.5, 0.5), seeds=(11, 12)))
    mean_c = torch.tensor([0.5, 1.5], dtype=torch.float64)
    var_c = torch.tensor([0.25, 9 * 0.25], dtype=torch.float64)
    mean = torch.full((40,), float(mean_c.sum()), dtype=torch.float64)
    var = torch.full((40,), float(var_c.sum()), dtype=torch.float64)
    mean[2] -= mean_c[0]
    var[2] -= var_c[0]
    z = torch.randn((40, 2), generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    expect = (mean[:, None] + var.sqrt()[:, None] * z).float()
    assert torch.allclose(background_sum(t, w), expect, atol=1e-5)


@pytest.mark.parametrize("seed", range(3))
def test_exact_background_equals_the_entrywise_formula_bit_for_bit(seed):
    """The exact background picks one of each client's two precomputed addends per entry; with
    values whose float products round (not the tidy ones above), the sum is still exactly the
    entry-by-entry ``out += w_c * (low_c + step_c * b)`` of :func:`exact_by_hand`."""
    g = torch.Generator().manual_seed(seed)
    low, step = -torch.rand(2, generator=g) / 3, torch.rand(2, generator=g) / 7
    b = Background(low, step, torch.rand(2, generator=g), [11 + seed, 29 + seed], mode="exact")
    t = table(b)
    w = torch.rand(2, generator=g) * 10 / 3
    got = background_sum(t, w)
    assert torch.equal(got, exact_by_hand(t, w))
    assert len(set(got[0].tolist() + got[1].tolist())) > 1  # not constant: the draws matter
