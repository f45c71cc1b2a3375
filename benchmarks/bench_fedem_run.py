"""Whole FedEM rounds on MovieLens-100K (the issue-13 protocol of benchmarks/fedem_ml100k.toml: all 943
clients, 10 local epochs of 256, 4 fresh negatives, 10 % aggregated) with the batched engine and with
the per-client reference engine, in one run: seconds per round (round 0 has no personalised tables
yet, so rounds 1.. are the steady state), their ratio, and peak RSS. The batched engine's first
round also compiles its per-client loop (numba); that is reported apart.

    RF2_DATA_DIR=/work/shared/data .venv/bin/python benchmarks/bench_fedem_run.py [ROUNDS=3] [THREADS=1]
"""
from __future__ import annotations

import resource
import sys
import time

import torch

from rf2.config import RunConfig
from rf2.simulation import Simulation


def main(rounds: int = 3, threads: int = 1) -> None:
    torch.set_num_threads(threads)
    base = dict(dataset="ml-100k", dataset_options={"split": "leave-one-out"}, model="fcf", optimization="fedem",
                clients_per_round=943, epochs=rounds, max_rounds=rounds, local_epochs=10, local_batch_size=256,
                local_early_stop="cumulative_mean", train_negatives=4, client_optimizer="adam", client_lr=0.1,
                sampled_k=10, valid_every=1000, select_by="last")
    per_round = {}
    for engine in ("batched", "reference"):
        t = time.perf_counter()
        res = Simulation(RunConfig(**base, engine=engine), progress=False).run()
        s = res.rounds["seconds"].to_numpy()
        per_round[engine] = s
        print(f"{engine:9s}: rounds {', '.join(f'{x:.2f}' for x in s)} s; whole run {time.perf_counter() - t:.1f} s")
    b, r = per_round["batched"][1:].mean(), per_round["reference"][1:].mean()
    print(f"{threads} thread(s), rounds 1..{rounds - 1}: batched {b:.2f} s/round, reference {r:.2f} s/round, "
          f"reference/batched = {r / b:.1f}x; round 0 of batched (with compiling) {per_round['batched'][0]:.1f} s; "
          f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
