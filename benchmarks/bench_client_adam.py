"""Client-side Adam in the batched engine: torch's fused kernel against the same formula op by op
(the code before 1 December; set ``rf2.clients.optim._FUSED = None``), in one run. Workloads:
``fcf``: FCF under FedAvg with FedEM's protocol on MovieLens-100K (`none` of
benchmarks/fedem_ml100k.toml: 943 clients, 10 local epochs of 256, Adam, the cumulative-mean early
stop); ``hetefedrec``: `hetefedrec:8,16,32` on MovieLens-1M with benchmarks/hetefedrec_ml1m_protocol.toml
(256 clients, 5 local epochs of 64, a 10 % validation hold-out, Adam 0.001). Seconds per round.

    RF2_DATA_DIR=/work/shared/data .venv/bin/python benchmarks/bench_client_adam.py [ROUNDS=2] [THREADS=1] [fcf|hetefedrec]
"""
from __future__ import annotations

import sys
import time

import torch

import rf2.clients.optim as optim
from rf2.config import RunConfig, load_toml
from rf2.simulation import Simulation


def main(rounds: int = 2, threads: int = 1, workload: str = "fcf") -> None:
    torch.set_num_threads(threads)
    if workload == "hetefedrec":
        run = load_toml("benchmarks/hetefedrec_ml1m_protocol.toml")["run"]
        cfg = RunConfig.from_dict({**run, "optimization": "hetefedrec:8,16,32", "mapping": "activity:5:3:2",
                                   "max_rounds": rounds})
    elif workload != "fcf":
        raise SystemExit(f"workload must be fcf or hetefedrec, got {workload!r}")
    else:
        cfg = RunConfig(dataset="ml-100k", dataset_options={"split": "leave-one-out"}, model="fcf", optimization="none",
                        clients_per_round=943, epochs=rounds, max_rounds=rounds, local_epochs=10, local_batch_size=256,
                        local_early_stop="cumulative_mean", train_negatives=4, client_optimizer="adam", client_lr=0.1,
                        sampled_k=10, valid_every=1000, select_by="last")
    fused = optim._FUSED
    out = {}
    for name, kernel in (("fused", fused), ("op by op", None)):
        optim._FUSED = kernel
        t = time.perf_counter()
        res = Simulation(cfg, progress=False).run()
        out[name] = res.rounds["seconds"].mean()
        print(f"{name:8s}: {', '.join(f'{s:.2f}' for s in res.rounds['seconds'])} s per round "
              f"(whole run {time.perf_counter() - t:.1f} s)")
    optim._FUSED = fused
    print(f"{threads} thread(s): op by op / fused = {out['op by op'] / out['fused']:.2f}x")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]), *sys.argv[3:4])
