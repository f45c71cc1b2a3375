"""Seconds per HeteFedRec round on MovieLens-1M: computing only the sub-models each client's
coefficients switch on (what rf2 does) vs all of them (what a vmapped loss must do when the
coefficients differ per client), alternating on the same rounds, in one process.

    RF2_DATA_DIR=../shared/data python benchmarks/bench_hetefedrec_round.py [--rounds 4] [--threads 1]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import rf2.models.hetencf as hetencf
from optimizations import make_contexts
from rf2.clients.batch import RoundBatch
from rf2.clients.batched import BatchedEngine
from rf2.config import RunConfig, load_toml
from rf2.simulation import Simulation

TOML = Path(__file__).resolve().parent / "hetefedrec_ml1m.toml"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    run = load_toml(TOML, "run")
    skip = hetencf._nonzero
    print("| configuration | all sub-models s/round | only the active ones s/round | speed-up |")
    print("|---|---|---|---|")
    for label, spec in (("HeteFedRec", "hetefedrec:8,16,32"), ("Directly Aggregate", "hetefedrec:8,16,32:kd=off:ddr=0:udl=off")):
        sim = Simulation(RunConfig.from_dict({**run, "optimization": spec, "ranking_k": 0}), progress=False)
        plan = sim.schedule()
        t = {"all": 0.0, "active": 0.0}
        for r in range(a.rounds + 1):  # round 0 warms up
            e, chosen = plan[r]
            ctx = make_contexts(0, chosen, sim.tiers.tier, sim.tiers.names, r, e, sim.dataset.train_counts[chosen])
            batch = RoundBatch.gather(sim.dataset, sim.encoder, chosen)
            la = sim.optimization.client_loss_args(ctx, sim.model)
            for mode in ("all", "active"):
                hetencf._nonzero = (lambda t: None) if mode == "all" else skip
                t0 = time.perf_counter()
                BatchedEngine().client_updates(sim.model, sim.params, batch, ctx, sim.config.local_steps,
                                               sim.config.client_lr, loss_args=la, optimizer=sim.config.client_optimizer)
                if r:
                    t[mode] += time.perf_counter() - t0
        hetencf._nonzero = skip
        n = a.rounds
        print(f"| {label} | {t['all'] / n:.2f} | {t['active'] / n:.2f} | {t['all'] / t['active']:.2f}x |")


if __name__ == "__main__":
    main()
