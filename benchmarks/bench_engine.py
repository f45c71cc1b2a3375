"""Engine speed: per-client reference loop vs batched engine vs one centralised pass.

    python benchmarks/bench_engine.py                      # ML-100K and a 100k-client synthetic population
    python benchmarks/bench_engine.py --datasets ml-100k --ks 64 256 --rounds 5

For every dataset and clients-per-round K, on the same model and the same rounds (same clients,
same samples), it times one round of client training:

(a) ``reference`` — the per-client loop (rf2/clients/reference.py), every client's update;
(b) ``batched``   — the vmap engine computing every client's update (what Prune/Quant need);
(b') ``summed``   — the batched engine's direct FedAvg aggregate (linear optimisations: none,
                    Exclude Lo, Overselect, Channel);
(c) ``central``   — one forward/backward of the mean loss over the round's pooled samples with
                    the same batch composition: the practical lower bound.

Each (dataset, K, method) runs in its own subprocess so its peak memory is its own; times are the
median over ``--rounds`` rounds after one warm-up round. Ratios are taken within this one run
(the machines are shared and noisy: compare ratios, not absolute times).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

METHODS = ("reference", "batched", "summed", "central")


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def load(name: str):
    from rf2.data import load_dataset

    if name == "ml-100k":
        return load_dataset("ml-100k")
    if name.startswith("synthetic"):
        return load_dataset("synthetic", n_users=100_000, n_items=5_000, events_per_user=20, seed=0)
    raise SystemExit(f"unknown dataset {name}")


def worker(dataset: str, k: int, method: str, rounds: int, seed: int) -> dict:
    import numpy as np
    import torch
    import torch.nn.functional as F

    from rf2.clients.batch import RoundBatch
    from rf2.clients.batched import BatchedEngine
    from rf2.clients.reference import ReferenceEngine
    from rf2.data import FeatureEncoder
    from rf2.models import build_model
    from rf2.selection import NoRepeatSelector

    ds = load(dataset)
    enc = FeatureEncoder(ds)
    model = build_model("dlrm", ds.schema, seed=0)
    params = {n: p.detach() for n, p in model.named_parameters()}
    clients = np.flatnonzero(ds.train_counts > 0)
    k = min(k, len(clients))  # K beyond the population: every client, every round (e.g. ML-100K, 943)
    selector = NoRepeatSelector(clients, k, seed)
    plan = [c for e in range(rounds + 1) for c in selector.epoch(e)][: rounds + 1]
    batches = [RoundBatch.gather(ds, enc, c) for c in plan]
    ref, bat = ReferenceEngine(), BatchedEngine()
    base = rss_mb()

    def step(b):
        if method == "reference":
            return ref.client_updates(model, params, b, [None] * b.n_clients, 1, 1.0)
        if method == "batched":
            return bat.client_updates(model, params, b, [None] * b.n_clients, 1, 1.0)
        if method == "summed":
            return bat.client_updates(model, params, b, [None] * b.n_clients, 1, 1.0, summed=True)
        leaves = {n: v.detach().requires_grad_(True) for n, v in params.items()}
        loss = F.binary_cross_entropy_with_logits(torch.func.functional_call(model, leaves, (b.X,)), b.y)
        return torch.autograd.grad(loss, list(leaves.values()))

    times = []
    for i, b in enumerate(batches):
        t = time.perf_counter()
        step(b)
        if i:  # the first round warms up
            times.append(time.perf_counter() - t)
    samples = statistics.mean(int(b.counts().sum()) for b in batches[1:])
    sec = statistics.median(times)
    return {"dataset": dataset, "K": k, "method": method, "round_s": sec, "samples": samples,
            "samples_per_s": samples / sec, "epoch_s": sec * len(clients) / k, "clients": int(len(clients)),
            "rss_base_mb": base, "rss_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "threads": torch.get_num_threads()}


def main() -> None:
    p = argparse.ArgumentParser(description="rf2 engine benchmark")
    p.add_argument("--datasets", nargs="+", default=["ml-100k", "synthetic-100k"])
    p.add_argument("--ks", nargs="+", type=int, default=[64, 256, 1024])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="also write the rows here")
    p.add_argument("--worker", nargs=3, metavar=("DATASET", "K", "METHOD"), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        print(json.dumps(worker(a.worker[0], int(a.worker[1]), a.worker[2], a.rounds, a.seed)))
        return
    rows = []
    for ds in a.datasets:
        for k in a.ks:
            for m in a.methods:
                cmd = [sys.executable, __file__, "--worker", ds, str(k), m, "--rounds", str(a.rounds), "--seed", str(a.seed)]
                out = subprocess.run(cmd, capture_output=True, text=True)
                if out.returncode:
                    last = out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "failed"
                    print(f"{ds} K={k} {m}: {last}", file=sys.stderr)
                    continue
                row = json.loads(out.stdout.strip().splitlines()[-1])
                rows.append(row)
                print(f"{ds:15s} K={k:5d} {m:9s} {row['round_s'] * 1000:9.1f} ms/round {row['samples_per_s']:10.0f} samples/s "
                      f"epoch {row['epoch_s']:7.1f}s  peak RSS {row['rss_peak_mb']:6.0f} MB (+{row['rss_peak_mb'] - row['rss_base_mb']:.0f})",
                      flush=True)
    import pandas as pd

    df = pd.DataFrame(rows)
    if df.empty:
        return
    t = df.pivot_table(index=["dataset", "K"], columns="method", values="round_s")
    mem = df.pivot_table(index=["dataset", "K"], columns="method", values="rss_peak_mb")
    summary = pd.DataFrame(index=t.index)
    for m in METHODS:
        if m in t:
            summary[f"{m} ms"] = (t[m] * 1000).round(1)
    if {"reference", "batched"} <= set(t):
        summary["reference/batched"] = (t["reference"] / t["batched"]).round(1)
    if {"reference", "summed"} <= set(t):
        summary["reference/summed"] = (t["reference"] / t["summed"]).round(1)
    if {"batched", "central"} <= set(t):
        summary["batched/central"] = (t["batched"] / t["central"]).round(2)
    if {"summed", "central"} <= set(t):
        summary["summed/central"] = (t["summed"] / t["central"]).round(2)
    for m in METHODS:
        if m in mem:
            summary[f"{m} peak MB"] = mem[m].round(0)
    print()
    print(summary.to_string())
    if a.json:
        df.to_json(a.json, orient="records", indent=1)


if __name__ == "__main__":
    main()
