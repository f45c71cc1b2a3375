"""Executor speed: the same sweep in-process vs local worker processes (and optionally Ray).

    python benchmarks/bench_executors.py [--runs-per-mapping N] [--ray]

Runs a small RF² sweep on MovieLens-100K (DLRM, K=16, one epoch) into fresh temporary
directories with each executor and prints wall times and the speed-up ratio, measured in one
process back to back (the machine is shared: compare ratios, not absolute times).
"""
from __future__ import annotations

import argparse
import tempfile
import time

from rf2.sweep import Sweep, SweepSpec


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="ml-100k")
    ap.add_argument("--mappings", nargs="+", default=["random", "dirichlet:0.05"])
    ap.add_argument("--optimizations", nargs="+", default=["exclude-lo", "quants:1:2:8", "channel:1:2:4", "prune:1:2:4", "quant:1:2:4"])
    ap.add_argument("--ray", action="store_true", help="also time the Ray executor on a local instance")
    args = ap.parse_args()
    spec = SweepSpec(base={"dataset": args.dataset, "clients_per_round": 16}, mappings=tuple(args.mappings),
                     optimizations=tuple(args.optimizations), seeds=(0,))
    n = len(spec.configs())
    times = {}
    for name in ["inprocess", "local"] + (["ray"] if args.ray else []):
        with tempfile.TemporaryDirectory() as out:
            t0 = time.perf_counter()
            sweep = Sweep(spec, out, progress=False, executor=name)
            s = sweep.run()
            times[name] = time.perf_counter() - t0
            extra = f", of which Ray start {sweep.executor_start_seconds:.1f}s" if name == "ray" else ""
            print(f"{name:9s} {n} runs: {times[name]:6.1f}s ({times[name] / n:.2f}s/run{extra}); failed {len(s.failed)}")
    for name in times:
        if name != "inprocess":
            print(f"speed-up {name} / inprocess: {times['inprocess'] / times[name]:.2f}x")


if __name__ == "__main__":
    main()
