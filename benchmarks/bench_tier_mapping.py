"""How fast is Algorithm 1 at MovieLens-20M scale? (Speed only; behaviour is tested in tests/.)

    python benchmarks/bench_tier_mapping.py [--users 138000] [--items 27000] [--events-per-user 220]

Generates a synthetic log of about MovieLens-20M's size (138k users, 27k items, ~20M events), then
times the random mapping and the Dirichlet mapping at the paper's α values, and reports peak memory.
"""
from __future__ import annotations

import argparse
import resource
import time

from rf2.data import make_synthetic
from tier_mapping import PAPER_MAPPINGS, map_tiers


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--users", type=int, default=138_000)
    p.add_argument("--items", type=int, default=27_000)
    p.add_argument("--events-per-user", type=float, default=220.0, help="before repeated pairs are dropped")
    p.add_argument("--zipf", type=float, default=0.8)
    a = p.parse_args()
    t = time.perf_counter()
    ds = make_synthetic(n_users=a.users, n_items=a.items, events_per_user=a.events_per_user, zipf=a.zipf, seed=0)
    gen = time.perf_counter() - t
    print(f"log: {ds.n_users:,} users, {ds.n_items:,} items, {ds.n_events:,} events ({gen:.1f}s to generate)")
    print(f"{'mapping':18s} {'seconds':>8s}  tier sizes")
    for spec in PAPER_MAPPINGS:
        t = time.perf_counter()
        tiers = map_tiers(ds, spec, seed=0)
        print(f"{spec:18s} {time.perf_counter() - t:8.3f}  {tiers.sizes().tolist()}")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
