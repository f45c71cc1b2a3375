"""FedEM's local training as one compiled loop per client (numba), clients in parallel threads.

The arithmetic of :func:`rf2.clients.fedem.train_reference`, client by client, with the work of the
rows a client never touches left out (their gradient is zero at every step and Adam, from zero
moments, never moves them: exact), in one pass over each batch instead of a dozen tensor
operations, and with each client's rows and moments in cache:

* a **plain** client (no personalised table ``G``, or no merge in the forward pass) is matrix
  factorisation: per batch ``∂L/∂q_i = Σ_cells (σ(pᵀq_i) - y) w p`` and ``∂L/∂p = Σ_cells
  (σ(pᵀq_i) - y) w q_i`` (``w`` = 1 / batch size: the batch's mean BCE), then one dense Adam step
  on ``p`` and on every row it touches this round;
* a **holder** takes FedEM's two steps per batch (``fedem-method.md`` §4.2): (1) the adapter, on
  the loss with ``q^m = q^l + ρ (g - q^l)``, ``ρ = σ(MLP([q^l ; g - q^l]))``; (2) ``p`` and
  ``Q^l`` on the loss recomputed with the updated adapter, the gradient reaching ``q^l`` through
  the merge (``(1 - ρ) ∂L/∂q^m``) and through ``ρ`` (back through the MLP). With a fixed ``ρ``
  only step (2), without the path through ``ρ``.

Adam is ``torch.optim.Adam``'s single-tensor update, in float32, in the same order of
operations; the early-stop rules (:func:`rf2.clients.local.should_stop`) run inside the loop.
Tested equal to the reference (``tests/test_fedem.py``). Without numba, :data:`AVAILABLE` is False
and :func:`rf2.clients.fedem.train_batched` takes its tensor path.
"""
from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np

try:  # an optional speed-up: everything works without it
    from numba import njit

    AVAILABLE = True
except ImportError:  # pragma: no cover - numba is a declared dependency
    AVAILABLE = False

#: early-stop rule codes of the kernel (``LocalTraining.early_stop``)
STOP_CODES = {"none": 0, "cumulative_mean": 1, "per_epoch": 2}


def _clients(which, P, Q, G, holder, A, widths, offs, rho_fixed, lr, lr_a, b1, b2, eps, rptr, cells, labels,
             cstart, n_samples, epochs, batch_size, steps, stop, threshold, losses, epochs_run):
    """Train the clients ``c`` in ``which``, one after another, in place: ``P[c]``, its rows ``Q[rptr[c]:rptr[c+1]]`` and, for a
    holder (``G``: its rows of its personalised table, same layout), its adapter ``A[c]`` (layer
    by layer a ``[out, in]`` weight then an ``[out]`` bias, from ``offs[layer]``; ``widths`` =
    [2d, ..., 1]). ``rho_fixed < 0``: ρ from the adapter (trained), else that fixed ρ.
    ``cells``/``labels``: each epoch's sample order as local rows (relative to ``rptr[c]``) and
    labels, client ``c``'s epoch ``e`` at ``cstart[c] + e * n_samples[c]``; its batch ``j`` is the
    next ``batch_size`` of them (the last one shorter). Writes each client's mean counted batch
    loss and epochs run. The adapter runs on a whole batch at once, feature-major (``[width,
    cells]``, the cells in the inner loop)."""
    for c in which:
        _client(c, P, Q, G, holder, A, widths, offs, rho_fixed, lr, lr_a, b1, b2, eps, rptr, cells, labels, cstart,
                n_samples, epochs, batch_size, steps, stop, threshold, losses, epochs_run)


def _client(c, P, Q, G, holder, A, widths, offs, rho_fixed, lr, lr_a, b1, b2, eps, rptr, cells, labels, cstart,
            n_samples, epochs, batch_size, steps, stop, threshold, losses, epochs_run):
    """One client of :func:`_clients`."""
    d = P.shape[1]
    L = widths.size - 1  # adapter layers
    wmax = 0
    for i in range(widths.size):
        wmax = max(wmax, widths[i])
    nA = A.shape[1]
    bs = batch_size
    omb1, omb2 = np.float32(1) - b1, np.float32(1) - b2
    one, zero = np.float32(1), np.float32(0)
    if True:
        u0 = rptr[c]
        nu = rptr[c + 1] - u0
        hold = holder[c]
        adapt = hold and rho_fixed < 0
        mq = np.zeros((nu, d), dtype=np.float32)
        vq = np.zeros((nu, d), dtype=np.float32)
        gq = np.zeros((nu, d), dtype=np.float32)
        mp = np.zeros(d, dtype=np.float32)
        vp = np.zeros(d, dtype=np.float32)
        gp = np.zeros(d, dtype=np.float32)
        nh = nA if adapt else 0
        ma = np.zeros(nh, dtype=np.float32)
        va = np.zeros(nh, dtype=np.float32)
        ga = np.zeros(nh, dtype=np.float32)
        bh = bs if hold else 0
        act = np.zeros((L, wmax, bh), dtype=np.float32) if adapt else np.zeros((0, 0, 0), dtype=np.float32)
        pre = np.zeros((L, wmax, bh), dtype=np.float32) if adapt else np.zeros((0, 0, 0), dtype=np.float32)
        dz = np.zeros((wmax, bh), dtype=np.float32) if adapt else np.zeros((0, 0), dtype=np.float32)
        dx = np.zeros((wmax, bh), dtype=np.float32) if adapt else np.zeros((0, 0), dtype=np.float32)
        rho = np.full(bh, rho_fixed, dtype=np.float32)
        pd = np.zeros(bh, dtype=np.float32)  # pᵀ(g - q^l) per cell
        t = 0
        seen_sum, seen_n, prev, done = 0.0, 0, 0.0, 0
        nc = n_samples[c]
        for e in range(epochs):
            ep_sum, ep_n = 0.0, 0
            for a in range(cstart[c] + e * nc, cstart[c] + (e + 1) * nc, bs):
                n = min(bs, cstart[c] + (e + 1) * nc - a)
                w = one / np.float32(n)
                loss = 0.0
                for _ in range(steps):
                    t += 1
                    step_size = np.float32(lr / (1.0 - float(b1) ** t))
                    bc2 = np.float32(math.sqrt(1.0 - float(b2) ** t))
                    if hold:
                        for x in range(n):
                            r = u0 + cells[a + x]
                            s = zero
                            for k in range(d):
                                s += P[c, k] * (G[r, k] - Q[r, k])
                            pd[x] = s
                    if adapt:  # step 1: the adapter, on the merged loss
                        _inputs(Q, G, cells, a, n, u0, d, act)
                        _forward(A, c, widths, offs, n, act, pre, rho)
                        for x in range(n):
                            r = u0 + cells[a + x]
                            pq = zero
                            for k in range(d):
                                pq += P[c, k] * Q[r, k]
                            dl = (_sigmoid(pq + rho[x] * pd[x]) - labels[a + x]) * w
                            dz[0, x] = dl * pd[x] * rho[x] * (one - rho[x])
                        for k in range(nA):
                            ga[k] = 0
                        _backward(A, c, widths, offs, n, act, pre, dz, dx, ga, True)
                        sa = np.float32(lr_a / (1.0 - float(b1) ** t))
                        for k in range(nA):
                            g = ga[k]
                            ma[k] += (g - ma[k]) * omb1
                            va[k] = va[k] * b2 + omb2 * g * g
                            A[c, k] -= sa * ma[k] / (np.sqrt(va[k]) / bc2 + eps)
                        _forward(A, c, widths, offs, n, act, pre, rho)  # ρ with the updated adapter
                    # step 2 (the only one of a plain client): p and the table rows
                    loss = 0.0
                    for k in range(d):
                        gp[k] = 0
                    for x in range(n):
                        r = u0 + cells[a + x]
                        y = labels[a + x]
                        z = zero
                        if hold:
                            rx = rho[x]
                            for k in range(d):
                                z += P[c, k] * Q[r, k]
                            z += rx * pd[x]
                        else:
                            rx = zero
                            for k in range(d):
                                z += P[c, k] * Q[r, k]
                        ez = np.exp(-abs(z))  # one exp for the loss and the sigmoid, stable on both sides
                        loss += w * (max(z, zero) - z * y + np.log1p(ez))
                        sig = one / (one + ez) if z >= 0 else ez / (one + ez)
                        dl = (sig - y) * w
                        if hold:
                            for k in range(d):
                                gp[k] += dl * (Q[r, k] + rx * (G[r, k] - Q[r, k]))
                                gq[r - u0, k] += dl * (one - rx) * P[c, k]
                        else:
                            for k in range(d):
                                gp[k] += dl * Q[r, k]
                                gq[r - u0, k] += dl * P[c, k]
                        if adapt:
                            dz[0, x] = dl * pd[x] * rx * (one - rx)
                    if adapt:  # and through ρ
                        _backward(A, c, widths, offs, n, act, pre, dz, dx, ga, False)
                        for x in range(n):
                            r = cells[a + x]
                            for k in range(d):
                                gq[r, k] += dx[k, x] - dx[d + k, x]
                    for k in range(d):
                        g = gp[k]
                        mp[k] += (g - mp[k]) * omb1
                        vp[k] = vp[k] * b2 + omb2 * g * g
                        P[c, k] -= step_size * mp[k] / (np.sqrt(vp[k]) / bc2 + eps)
                    for i in range(nu):
                        for k in range(d):
                            g = gq[i, k]
                            mq[i, k] += (g - mq[i, k]) * omb1
                            vq[i, k] = vq[i, k] * b2 + omb2 * g * g
                            Q[u0 + i, k] -= step_size * mq[i, k] / (np.sqrt(vq[i, k]) / bc2 + eps)
                            gq[i, k] = 0
                ep_sum += loss  # a batch's loss: its last step's, before that step
                ep_n += 1
                seen_sum += loss
                seen_n += 1
            done += 1
            cur = seen_sum / seen_n if stop == 1 else ep_sum / max(ep_n, 1)
            if stop != 0 and e > 0 and abs(cur - prev) / abs(prev + 1e-5) < threshold:
                break
            prev = cur
        losses[c] = seen_sum / max(seen_n, 1)
        epochs_run[c] = done


def _sigmoid(z):
    one = np.float32(1)
    if z >= 0:
        return one / (one + np.exp(-z))
    ez = np.exp(z)
    return ez / (one + ez)


def _inputs(Q, G, cells, a, n, u0, d, act):
    """The adapter's input ``[q^l ; g - q^l]`` of the batch's cells, feature-major, in ``act[0]``."""
    for x in range(n):
        r = u0 + cells[a + x]
        for k in range(d):
            act[0, k, x] = Q[r, k]
            act[0, d + k, x] = G[r, k] - Q[r, k]


def _forward(A, c, widths, offs, n, act, pre, rho):
    """ρ of the batch's ``n`` cells (``act[0]`` their inputs) with client ``c``'s adapter, into
    ``rho``; keeps each layer's input (``act``) and pre-activation (``pre``)."""
    L = widths.size - 1
    for layer in range(L):
        n_in, n_out = widths[layer], widths[layer + 1]
        off = offs[layer]
        bias = off + n_out * n_in
        for o in range(n_out):
            b = A[c, bias + o]
            for x in range(n):
                pre[layer, o, x] = b
            for i in range(n_in):
                wt = A[c, off + o * n_in + i]
                for x in range(n):
                    pre[layer, o, x] += wt * act[layer, i, x]
            if layer < L - 1:
                for x in range(n):
                    act[layer + 1, o, x] = max(pre[layer, o, x], np.float32(0))
    for x in range(n):
        rho[x] = _sigmoid(pre[L - 1, 0, x])


def _backward(A, c, widths, offs, n, act, pre, dz, dx, ga, weights):
    """Back through the adapter from ``dz[0]`` = ∂L/∂(output pre-activation) per cell: with
    ``weights``, adds the weights' gradients (summed over cells) to ``ga``; without, leaves
    ``∂L/∂act[0]`` (the input's gradient, per cell) in ``dx``."""
    L = widths.size - 1
    for layer in range(L - 1, -1, -1):
        n_in, n_out = widths[layer], widths[layer + 1]
        off = offs[layer]
        bias = off + n_out * n_in
        if weights:
            for o in range(n_out):
                sb = np.float32(0)
                for x in range(n):
                    sb += dz[o, x]
                ga[bias + o] += sb
                for i in range(n_in):
                    s = np.float32(0)
                    for x in range(n):
                        s += dz[o, x] * act[layer, i, x]
                    ga[off + o * n_in + i] += s
            if layer == 0:
                break
        for i in range(n_in):
            for x in range(n):
                dx[i, x] = 0
        for o in range(n_out):
            for i in range(n_in):
                wt = A[c, off + o * n_in + i]
                for x in range(n):
                    dx[i, x] += wt * dz[o, x]
        if layer > 0:
            for i in range(n_in):
                for x in range(n):
                    dz[i, x] = dx[i, x] if pre[layer - 1, i, x] > 0 else np.float32(0)


if AVAILABLE:
    # numpy error model: no division-by-zero checks (which stop the loops vectorising); fastmath without
    # nnan/ninf: NaN and inf stay what they are
    _fast = dict(nogil=True, cache=False, error_model="numpy", fastmath={"reassoc", "contract", "arcp", "afn"})
    _sigmoid = njit(**_fast)(_sigmoid)
    _inputs = njit(**_fast)(_inputs)
    _forward = njit(**_fast)(_forward)
    _backward = njit(**_fast)(_backward)
    _client = njit(**_fast)(_client)
    _kernel = njit(**_fast)(_clients)


def train(P: np.ndarray, Q: np.ndarray, G: np.ndarray, holder: np.ndarray, A: np.ndarray, widths: np.ndarray,
          rho: float | None, lr: float, lr_adapter: float, eps: float, rptr: np.ndarray, cells: np.ndarray,
          labels: np.ndarray, cstart: np.ndarray, n_samples: np.ndarray, epochs: int, batch_size: int, steps: int,
          stop: str, threshold: float, threads: int) -> tuple[np.ndarray, np.ndarray]:
    """Run the compiled loop (arguments as :func:`_clients`; float32 ``P``, ``Q``, ``A`` updated
    in place); returns ``(losses, epochs_run)``. With ``threads > 1`` the clients are dealt
    round-robin (they come longest first) to that many threads, each running the compiled loop
    without the GIL (numba's own ``parallel=True`` took twice as long to compile)."""
    C = P.shape[0]
    sizes = widths[1:] * widths[:-1] + widths[1:]
    offs = (np.cumsum(sizes) - sizes).astype(np.int64)
    losses = np.zeros(C, dtype=np.float64)
    epochs_run = np.zeros(C, dtype=np.int64)
    f = np.float32
    args = (P, Q, G, holder, A, widths, offs, f(-1.0 if rho is None else rho), f(lr), f(lr_adapter), f(0.9),
            f(0.999), f(eps), rptr, cells, labels, cstart, n_samples, epochs, batch_size, steps, STOP_CODES[stop],
            threshold, losses, epochs_run)
    n_threads = max(1, min(threads, C))
    if n_threads == 1:
        _kernel(np.arange(C), *args)
    else:
        with ThreadPoolExecutor(n_threads) as pool:
            for f_ in [pool.submit(_kernel, np.arange(j, C, n_threads), *args) for j in range(n_threads)]:
                f_.result()
    return losses, epochs_run
