"""rf2.aggregation.personalised (FedEM's server step, fedem-method.md §4.4) against independent
oracles: the simplex projection against an exhaustive enumeration of supports (and SLSQP), the PCA
against numpy's SVD, and a 3-client example whose fingerprints, distances and weights are worked
out by hand below."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from rf2.aggregation.personalised import (
    fedem_aggregate,
    fedem_weights,
    matrix_shift,
    pca_fingerprints,
    personalised_tables,
    project_to_simplex,
    similarity,
)


# ---------------------------------------------------------------- simplex projection oracles
def simplex_by_enumeration(v: np.ndarray) -> np.ndarray:
    """min ||w - v||² over the simplex by trying every support set S: on S the KKT conditions give
    w_S = v_S - (Σ v_S - 1)/|S| (zero elsewhere); keep the feasible ones (w_S >= 0) and return the
    one nearest v. The optimum is among them, so this is exact for small a."""
    a = len(v)
    best, best_obj = None, math.inf
    for k in range(1, a + 1):
        for S in itertools.combinations(range(a), k):
            idx = list(S)
            w = np.zeros(a)
            w[idx] = v[idx] - (v[idx].sum() - 1.0) / k
            if (w[idx] < -1e-12).any():
                continue
            obj = float(((w - v) ** 2).sum())
            if obj < best_obj:
                best, best_obj = w, obj
    return best


def simplex_by_slsqp(v: np.ndarray) -> np.ndarray:
    a = len(v)
    res = minimize(lambda w: ((w - v) ** 2).sum(), np.full(a, 1.0 / a), jac=lambda w: 2 * (w - v),
                   method="SLSQP", bounds=[(0.0, None)] * a,
                   constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0, "jac": lambda w: np.ones(a)}],
                   options={"ftol": 1e-14, "maxiter": 500})
    assert res.success
    return res.x


def test_simplex_projection_matches_support_enumeration():
    rng = np.random.default_rng(0)
    for a in range(1, 7):
        for scale in (0.1, 1.0, 5.0):
            V = rng.normal(size=(40, a)) * scale + rng.normal(size=(40, 1))
            got = project_to_simplex(torch.tensor(V)).numpy()
            expect = np.stack([simplex_by_enumeration(v) for v in V])
            np.testing.assert_allclose(got, expect, atol=1e-12)
    # FedEM's shape of input: p + α S_k, with p on the simplex and S in [0, 1], diagonal 1
    p = rng.dirichlet(np.ones(5), size=30)
    S = rng.uniform(0, 0.3, size=(30, 5))
    S[:, 0] = 1.0
    V = p + 0.9 * S
    np.testing.assert_allclose(project_to_simplex(torch.tensor(V)).numpy(),
                               np.stack([simplex_by_enumeration(v) for v in V]), atol=1e-12)


def test_simplex_projection_matches_slsqp_and_batches_leading_dims():
    rng = np.random.default_rng(1)
    V = rng.normal(size=(2, 3, 12)) * 0.5
    got = project_to_simplex(torch.tensor(V, dtype=torch.float32))
    assert got.shape == (2, 3, 12) and got.dtype == torch.float32
    for i, j in itertools.product(range(2), range(3)):
        np.testing.assert_allclose(got[i, j].numpy(), simplex_by_slsqp(V[i, j]), atol=1e-5)


def test_simplex_projection_by_hand():
    def proj(v):
        return project_to_simplex(torch.tensor(v, dtype=torch.float64)).tolist()

    assert proj([0.5, 0.5, 0.5]) == pytest.approx([1 / 3] * 3)  # ties: τ = (1.5 - 1)/3
    assert proj([2.0, 0.0, 0.0]) == pytest.approx([1.0, 0.0, 0.0])  # τ = (2 - 1)/1
    # sorted 0.6, 0.5, -1: j=2 keeps (0.5 - 0.1/2 > 0), j=3 not (-1 - 0.1/3... < 0): τ = 0.05
    assert proj([-1.0, 0.6, 0.5]) == pytest.approx([0.0, 0.55, 0.45])
    assert proj([7.0]) == [1.0]
    assert proj([[0.2, 0.3], [3.0, 1.0]]) == [pytest.approx([0.45, 0.55]), pytest.approx([1.0, 0.0])]


def test_simplex_projection_properties():
    g = torch.Generator().manual_seed(2)
    V = torch.randn(200, 9, generator=g, dtype=torch.float64) * 3
    W = project_to_simplex(V)
    assert (W >= 0).all()
    assert torch.allclose(W.sum(-1), torch.ones(200, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(project_to_simplex(V + 4.25), W, atol=1e-12)  # shift invariance
    assert torch.allclose(project_to_simplex(V - 17.0), W, atol=1e-12)
    assert torch.allclose(project_to_simplex(W), W, atol=1e-12)  # idempotent
    on = torch.distributions.Dirichlet(torch.ones(9, dtype=torch.float64)).sample((50,))
    assert torch.allclose(project_to_simplex(on), on, atol=1e-12)  # already on the simplex
    vertex = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)
    assert torch.equal(project_to_simplex(vertex), vertex)


# ---------------------------------------------------------------- a 3-client example by hand
# n = 3 items, d = 2. Each table varies along one coordinate only, so the first principal axis is that
# coordinate (canonical sign: +1) and the fingerprint is the centred column:
#   A: column 0 = 1, 2, 3     -> z_A = [-1, 0, 1]
#   B: column 1 = 0, 2, 4     -> z_B = [-2, 0, 2]
#   C: column 0 = 3, 2, 1     -> z_C = [ 1, 0, -1]
# (the constant columns are arbitrary; they vanish on centring).
TABLES = torch.tensor([
    [[1.0, 7.0], [2.0, 7.0], [3.0, 7.0]],
    [[-4.0, 0.0], [-4.0, 2.0], [-4.0, 4.0]],
    [[3.0, 5.0], [2.0, 5.0], [1.0, 5.0]],
], dtype=torch.float64)
Z_HAND = [[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [1.0, 0.0, -1.0]]
# distances: A-B ||[1, 0, -1]|| = √2, A-C ||[-2, 0, 2]|| = 2√2, B-C ||[-3, 0, 3]|| = 3√2
S_AB, S_AC, S_BC = 1 / (1 + math.sqrt(2)), 1 / (1 + 2 * math.sqrt(2)), 1 / (1 + 3 * math.sqrt(2))
S_HAND = [[1.0, S_AB, S_AC], [S_AB, 1.0, S_BC], [S_AC, S_BC, 1.0]]  # ≈ 0.4142, 0.2612, 0.1907
SIZES = torch.tensor([10, 10, 20])  # p = [1/4, 1/4, 1/2]
P = [0.25, 0.25, 0.5]


def hand_weights():
    """W for α = 0.9, mode 'both': v = p + 0.9 S_k, then the simplex projection on the support read
    off by hand, τ = (Σ_support v - 1)/|support|."""
    W = []
    for k, support in enumerate([(0, 1, 2), (0, 1, 2), (0, 2)]):
        v = [P[l] + 0.9 * S_HAND[k][l] for l in range(3)]
        tau = (sum(v[l] for l in support) - 1) / len(support)
        w = [v[l] - tau if l in support else 0.0 for l in range(3)]
        assert all(w[l] > 0 for l in support)  # the support is consistent: kept entries positive,
        assert all(v[l] - tau <= 0 for l in range(3) if l not in support)  # dropped ones not
        W.append(w)
    # row A: v = [1.15, 0.6228, 0.7351], τ = 0.5026 -> [0.6474, 0.1202, 0.2325]
    # row C: v = [0.4851, 0.4217, 1.4]; with all three τ = 0.4356 > 0.4217, so B drops:
    #        τ = (0.4851 + 1.4 - 1)/2 = 0.4425 -> [0.0425, 0, 0.9575]
    assert W[0] == pytest.approx([0.647375, 0.120167, 0.232458], abs=1e-6)
    assert W[2] == pytest.approx([0.042542, 0.0, 0.957458], abs=1e-6)
    return torch.tensor(W, dtype=torch.float64)


def test_fingerprints_similarity_and_weights_by_hand():
    for method in ("svd", "eigh"):
        Z = pca_fingerprints(TABLES, sign="canonical", method=method)
        assert Z.dtype == torch.float64 and torch.allclose(Z, torch.tensor(Z_HAND, dtype=torch.float64), atol=1e-12)
    Z_ar = pca_fingerprints(TABLES)  # as returned: each row is ± the hand value
    for k in range(3):
        zk = torch.tensor(Z_HAND[k], dtype=torch.float64)
        assert torch.allclose(Z_ar[k], zk, atol=1e-12) or torch.allclose(Z_ar[k], -zk, atol=1e-12)
    S = similarity(torch.tensor(Z_HAND, dtype=torch.float64))
    assert torch.allclose(S, torch.tensor(S_HAND, dtype=torch.float64), atol=1e-12)
    W = fedem_weights(SIZES, S)
    assert torch.allclose(W, hand_weights(), atol=1e-12)
    assert W[2, 1] == 0.0
    # cosine: cos(A, B) = 1 -> 1; cos(A, C) = cos(B, C) = -1 -> 0
    Sc = similarity(torch.tensor(Z_HAND, dtype=torch.float64), mode="cos")
    assert torch.allclose(Sc, torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64))


def test_fedem_aggregate_by_hand():
    W_hand = hand_weights()
    G, W = fedem_aggregate(TABLES, SIZES, pca_sign="canonical")
    assert torch.allclose(W, W_hand, atol=1e-12)
    for k in range(3):
        expect = sum(W_hand[k, l] * TABLES[l] for l in range(3))
        assert torch.allclose(G[k], expect, atol=1e-12)
    # row C gives B nothing and A 0.0425: G_C = 0.0425 Q_A + 0.9575 Q_C
    assert G[2, 0, 0].item() == pytest.approx(0.042542 * 1 + 0.957458 * 3, abs=1e-5)
    G2, W2 = fedem_aggregate(TABLES, SIZES, pca_sign="canonical", pca_method="eigh")
    assert torch.allclose(W2, W_hand, atol=1e-12) and torch.allclose(G2, G, atol=1e-12)
    G3, W3 = fedem_aggregate(TABLES, SIZES, agg_mode="avg")
    assert torch.allclose(G3, (0.25 * TABLES[0] + 0.25 * TABLES[1] + 0.5 * TABLES[2]).expand(3, 3, 2))


def test_similarity_clip_is_strict_and_sets_near_clones_to_one():
    # a fourth client D close to A: z_D = [-1.05, 0, 1.05], ||z_D - z_A|| = 0.05√2 -> S = 0.9340 > 0.9 -> 1
    Z = torch.tensor(Z_HAND + [[-1.05, 0.0, 1.05]], dtype=torch.float64)
    S = similarity(Z)
    assert S[0, 3] == 1.0 and S[3, 0] == 1.0
    assert S[3, 1].item() == pytest.approx(1 / (1 + 0.95 * math.sqrt(2)), abs=1e-12)  # 0.4267, kept
    assert S[3, 2].item() == pytest.approx(1 / (1 + 2.05 * math.sqrt(2)), abs=1e-12)
    assert torch.equal(S.diagonal(), torch.ones(4, dtype=torch.float64))
    # 1/(1 + 1) = 0.5 exactly: not above clip=0.5, so kept; 1/(1 + 0.5) = 0.667 > 0.5 -> 1
    Z2 = torch.tensor([[0.0], [1.0], [1.5]], dtype=torch.float64)
    S2 = similarity(Z2, clip=0.5)
    assert S2.tolist() == [[1.0, 0.5, 0.4], [0.5, 1.0, 1.0], [0.4, 1.0, 1.0]]
    assert similarity(Z2, clip=0.0).tolist() == [[1.0] * 3] * 3
    # cosine 0.6 kept, 0.95 -> 1, negative -> 0; a zero fingerprint has cosine 0 everywhere
    Z3 = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.95, math.sqrt(1 - 0.95**2)], [-1.0, 0.1], [0.0, 0.0]],
                      dtype=torch.float64)
    S3 = similarity(Z3, mode="cos")
    assert S3[0, 1].item() == pytest.approx(0.6) and S3[0, 2] == 1.0 and S3[0, 3] == 0.0
    assert S3[4].tolist() == [0.0] * 5 and torch.equal(S3.diagonal()[:4], torch.ones(4, dtype=torch.float64))


def test_avg_and_sim_modes():
    S = torch.tensor(S_HAND, dtype=torch.float64)
    W = fedem_weights(SIZES, S, mode="avg")
    assert torch.allclose(W, torch.tensor([P] * 3, dtype=torch.float64), atol=1e-15)
    W = fedem_weights(SIZES, S, mode="sim")
    row_a = [1.0 / (1 + S_AB + S_AC), S_AB / (1 + S_AB + S_AC), S_AC / (1 + S_AB + S_AC)]
    assert W[0].tolist() == pytest.approx(row_a, abs=1e-12)
    assert torch.allclose(W.sum(1), torch.ones(3, dtype=torch.float64), atol=1e-12)
    g = torch.Generator().manual_seed(5)
    R = torch.rand(7, 7, generator=g)
    W = fedem_weights(torch.arange(1, 8), R, mode="sim")
    assert W.dtype == torch.float32 and torch.allclose(W.sum(1), torch.ones(7), atol=1e-6)
    # α = 0: 'both' is FedAvg (p is already on the simplex)
    assert torch.allclose(fedem_weights(SIZES, S, alpha=0.0), torch.tensor([P] * 3, dtype=torch.float64))


def test_zero_below_renormalisation():
    # 'sim' row 0 = [1, 3e-21]/(1 + 3e-21): the second entry is below 1e-20, zeroed; row -> [1, 0]
    S = torch.tensor([[1.0, 3e-21], [3e-21, 1.0]], dtype=torch.float64)
    assert fedem_weights(torch.tensor([1, 1]), S, mode="sim").tolist() == [[1.0, 0.0], [0.0, 1.0]]
    # the threshold applies after the row normalisation: 1.5e-20 / (2 + 1.5e-20) < 1e-20 is dropped
    S3 = torch.tensor([[1.0, 1.0, 1.5e-20], [1.0, 1.0, 0.0], [1.5e-20, 0.0, 1.0]], dtype=torch.float64)
    assert fedem_weights(torch.tensor([1, 1, 1]), S3, mode="sim")[0].tolist() == [0.5, 0.5, 0.0]
    kept = fedem_weights(torch.tensor([1, 1]), S, mode="sim", zero_below=0.0)
    assert kept[0, 1].item() == pytest.approx(3e-21, rel=1e-12)
    # on the hand example: row A [0.6474, 0.1202, 0.2325] with zero_below 0.15 drops B and
    # renormalises over 0.6474 + 0.2325; row C [0.0425, 0, 0.9575] with 0.05 becomes [0, 0, 1]
    Sh = torch.tensor(S_HAND, dtype=torch.float64)
    a0, a2 = hand_weights()[0, [0, 2]].tolist()
    W = fedem_weights(SIZES, Sh, zero_below=0.15)
    assert W[0].tolist() == pytest.approx([a0 / (a0 + a2), 0.0, a2 / (a0 + a2)], abs=1e-12)  # [0.7358, 0, 0.2642]
    _, b1, b2 = hand_weights()[1].tolist()  # row B [0.1413, 0.6685, 0.1902]: A drops too
    assert W[1].tolist() == pytest.approx([0.0, b1 / (b1 + b2), b2 / (b1 + b2)], abs=1e-12)
    assert fedem_weights(SIZES, Sh, zero_below=0.12)[1].tolist() == pytest.approx([0.141305, b1, b2], abs=1e-6)
    assert fedem_weights(SIZES, Sh, zero_below=0.05)[2].tolist() == [0.0, 0.0, 1.0]
    assert matrix_shift(torch.tensor([[2.0, 1.0, 1e-3]], dtype=torch.float64), 0.01).tolist() == [[2 / 3, 1 / 3, 0.0]]
    assert matrix_shift(torch.tensor([[0.5, 0.25, 0.25]], dtype=torch.float64), 0.25).tolist() == [[0.5, 0.25, 0.25]]  # strict <
    with pytest.raises(ValueError, match=r"^matrix_shift: a row has no entry >= zero_below=0.5 left$"):
        matrix_shift(torch.tensor([[0.2, 0.3]]), 0.5)


# ---------------------------------------------------------------- PCA against numpy
def random_tables(a=6, n=50, d=5, seed=3, dtype=torch.float64):
    """Anisotropic tables (distinct column scales, a random rotation each): a well-separated first axis."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(a, n, d, generator=g, dtype=torch.float64) * torch.linspace(3.0, 0.5, d, dtype=torch.float64)
    R, _ = torch.linalg.qr(torch.randn(a, d, d, generator=g, dtype=torch.float64))
    return (X @ R + torch.randn(a, 1, d, generator=g, dtype=torch.float64)).to(dtype)


def test_pca_fingerprint_is_projection_on_the_maximising_axis():
    T = random_tables()
    Z = pca_fingerprints(T, sign="as_returned")
    Zc = pca_fingerprints(T, sign="canonical")
    rng = np.random.default_rng(4)
    for k in range(T.shape[0]):
        X = T[k].numpy() - T[k].numpy().mean(axis=0)
        _, sv, vt = np.linalg.svd(X, full_matrices=False)
        v = vt[0]
        # v maximises ||X u|| over unit u: no random unit vector, nor any other singular vector, does better
        U = rng.normal(size=(2000, X.shape[1]))
        U /= np.linalg.norm(U, axis=1, keepdims=True)
        assert np.linalg.norm(X @ U.T, axis=0).max() <= np.linalg.norm(X @ v) + 1e-9
        assert np.linalg.norm(X @ v) == pytest.approx(sv[0])
        z = X @ v
        zk = Z[k].numpy()
        assert np.allclose(zk, z, atol=1e-10) or np.allclose(zk, -z, atol=1e-10)
        assert np.linalg.norm(zk) == pytest.approx(sv[0])
        # canonical: the sign making v's largest-magnitude component positive
        s = np.sign(v[np.argmax(np.abs(v))])
        np.testing.assert_allclose(Zc[k].numpy(), s * z, atol=1e-10)


def test_eigh_fast_path_equals_svd_up_to_sign_and_exactly_when_canonical():
    for dtype, tol in ((torch.float64, 1e-9), (torch.float32, 2e-4)):
        T = random_tables(a=8, n=300, d=16, seed=6, dtype=dtype)
        Zs = pca_fingerprints(T, sign="as_returned")
        Zc = pca_fingerprints(T, sign="canonical")
        Ze = pca_fingerprints(T, sign="canonical", method="eigh")
        assert Ze.dtype == dtype and Ze.shape == (8, 300)
        scale = Zc.abs().max()
        assert torch.allclose(Ze, Zc, atol=tol * scale)
        flips = (Zs * Ze).sum(1).sign()
        assert torch.allclose(Zs, flips[:, None] * Ze, atol=tol * scale)


def test_pca_sign_flip_changes_distances_and_canonical_removes_it(monkeypatch):
    """Another SVD routine may return (−u, −v) instead of (u, v) (equally valid). Emulate one that
    negates the first singular pair of clients 0 and 2: 'as_returned' fingerprints and similarities
    change (fedem-method.md §7 item 4), 'canonical' ones do not."""
    T = random_tables(a=4, n=20, d=3, seed=8)
    Z0 = pca_fingerprints(T)
    S0 = similarity(Z0, clip=0.999)
    Zc0 = pca_fingerprints(T, sign="canonical")
    real_svd = torch.linalg.svd

    def flipped_svd(X, full_matrices=True):
        U, s, Vh = real_svd(X, full_matrices=full_matrices)
        f = torch.ones(X.shape[0], 1, dtype=X.dtype)
        f[[0, 2]] = -1.0
        U, Vh = U.clone(), Vh.clone()
        U[:, :, 0] *= f
        Vh[:, 0, :] *= f
        assert torch.allclose(U @ torch.diag_embed(s) @ Vh, X, atol=1e-10)  # still an SVD of X
        return U, s, Vh

    monkeypatch.setattr(torch.linalg, "svd", flipped_svd)
    Z1 = pca_fingerprints(T)
    assert torch.allclose(Z1[[0, 2]], -Z0[[0, 2]]) and torch.allclose(Z1[[1, 3]], Z0[[1, 3]])
    S1 = similarity(Z1, clip=0.999)
    # ||z_0 - z_1|| became ||-z_0 - z_1||: a different number (unless z_0 ⟂ z_1)
    assert (S1[0, 1] - S0[0, 1]).abs() > 1e-3
    assert (S1[0, 2] - S0[0, 2]).abs() < 1e-12  # both flipped: unchanged
    assert torch.allclose(pca_fingerprints(T, sign="canonical"), Zc0, atol=1e-12)


# ---------------------------------------------------------------- aggregation
def test_personalised_tables_matches_double_loop():
    g = torch.Generator().manual_seed(9)
    Q = torch.randn(4, 5, 3, generator=g)
    W = torch.rand(4, 4, generator=g, dtype=torch.float64)
    G = personalised_tables(W, Q)
    assert G.shape == (4, 5, 3) and G.dtype == torch.float32
    expect = torch.zeros(4, 5, 3)
    for k in range(4):
        for l in range(4):
            for i in range(5):
                for j in range(3):
                    expect[k, i, j] += float(W[k, l]) * float(Q[l, i, j])
    assert torch.allclose(G, expect, atol=1e-5)
    G2 = personalised_tables(W[1:3], Q)  # some receivers only
    assert G2.shape == (2, 5, 3) and torch.allclose(G2, expect[1:3], atol=1e-5)
    assert torch.equal(personalised_tables(torch.eye(4), Q), Q)


def test_fedem_aggregate_rows_are_convex_combinations_on_random_tables():
    T = random_tables(a=10, n=40, d=4, seed=11, dtype=torch.float32)
    sizes = torch.arange(10, 110, 10)
    for sim_mode, agg_mode, sign in itertools.product(("l2", "cos"), ("both", "avg", "sim"), ("as_returned", "canonical")):
        G, W = fedem_aggregate(T, sizes, sim_mode=sim_mode, agg_mode=agg_mode, pca_sign=sign)
        assert G.shape == T.shape and W.shape == (10, 10) and W.dtype == torch.float32
        assert (W >= 0).all() and torch.allclose(W.sum(1), torch.ones(10), atol=1e-6)
        assert torch.allclose(G[3], (W[3][:, None, None] * T).sum(0), atol=1e-4)
    # 'both' favours the client itself: S_kk = 1 is the largest entry of p + α S_k whenever p is flat
    _, W = fedem_aggregate(T, torch.full((10,), 50))
    assert (W.argmax(1) == torch.arange(10)).all()


# ---------------------------------------------------------------- errors
def test_errors_name_the_bad_argument():
    T, S = TABLES, torch.tensor(S_HAND, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"^pca_fingerprints: sign must be 'as_returned' or 'canonical', got 'up'$"):
        pca_fingerprints(T, sign="up")
    with pytest.raises(ValueError, match=r"^pca_fingerprints: method must be 'svd' or 'eigh', got 'qr'$"):
        pca_fingerprints(T, method="qr")
    with pytest.raises(ValueError, match=r"^pca_fingerprints: method='eigh' needs sign='canonical'"):
        pca_fingerprints(T, method="eigh")
    with pytest.raises(ValueError, match=r"^pca_fingerprints: tables must have shape \[a, n, d\] .*got \(3, 2\)$"):
        pca_fingerprints(T[0])
    with pytest.raises(ValueError, match=r"^pca_fingerprints: tables must be floating point"):
        pca_fingerprints(torch.ones(2, 3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"^similarity: mode must be 'l2' or 'cos', got 'l1'$"):
        similarity(torch.zeros(2, 3), mode="l1")
    for clip in (1.0, -0.1):
        with pytest.raises(ValueError, match=r"^similarity: clip must be in \[0, 1\)"):
            similarity(torch.zeros(2, 3), clip=clip)
    with pytest.raises(ValueError, match=r"^similarity: Z must have shape \[a, n\]"):
        similarity(torch.zeros(2, 3, 1))
    with pytest.raises(ValueError, match=r"^similarity: Z has non-finite entries$"):
        similarity(torch.tensor([[0.0, float("nan")], [1.0, 2.0]]))
    with pytest.raises(ValueError, match=r"^project_to_simplex: V must have shape \[\.\.\., a\] with a >= 1"):
        project_to_simplex(torch.zeros(3, 0))
    with pytest.raises(ValueError, match=r"^project_to_simplex: V has non-finite entries$"):
        project_to_simplex(torch.tensor([1.0, float("inf")]))
    with pytest.raises(ValueError, match=r"^project_to_simplex: V must be floating point"):
        project_to_simplex(torch.tensor([1, 2]))
    with pytest.raises(ValueError, match=r"^fedem_weights: mode must be 'both', 'avg' or 'sim', got 'fedavg'$"):
        fedem_weights(SIZES, S, mode="fedavg")
    for alpha in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match=r"^fedem_weights: alpha must be a finite number >= 0"):
            fedem_weights(SIZES, S, alpha=alpha)
    with pytest.raises(ValueError, match=r"^fedem_weights: sizes must be finite and > 0$"):
        fedem_weights(torch.tensor([10, 0, 20]), S)
    with pytest.raises(ValueError, match=r"^fedem_weights: sizes must have shape \[a\]"):
        fedem_weights(SIZES[None], S)
    with pytest.raises(ValueError, match=r"^fedem_weights: S must have shape \[a, a\] = \(3, 3\) to match sizes, got \(2, 2\)$"):
        fedem_weights(SIZES, S[:2, :2])
    with pytest.raises(ValueError, match=r"^fedem_weights: S must be finite and >= 0$"):
        fedem_weights(SIZES, -S)
    with pytest.raises(ValueError, match=r"^fedem_weights: zero_below must be >= 0"):
        fedem_weights(SIZES, S, zero_below=-1.0)
    with pytest.raises(ValueError, match=r"^fedem_weights: mode='sim' needs every row of S"):
        fedem_weights(SIZES, torch.zeros(3, 3, dtype=torch.float64), mode="sim")
    with pytest.raises(ValueError, match=r"^personalised_tables: W must have shape \[r, a\] with a = 3"):
        personalised_tables(torch.eye(2), T)
    with pytest.raises(ValueError, match=r"^personalised_tables: tables must have shape \[a, n, d\]"):
        personalised_tables(torch.eye(3), T[0])
    with pytest.raises(ValueError, match=r"^fedem_aggregate: agg_mode must be 'both', 'avg' or 'sim', got 'x'$"):
        fedem_aggregate(T, SIZES, agg_mode="x")
    with pytest.raises(ValueError, match=r"^similarity: mode must be 'l2' or 'cos', got 'x'$"):
        fedem_aggregate(T, SIZES, agg_mode="avg", sim_mode="x")
