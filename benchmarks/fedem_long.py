"""FedEM against its personalised baselines over the authors' full schedule (100 rounds of all
943 MovieLens-100K clients), 3 seeds, random tiers: local-only training, a fixed merge weight
(rho = 0.5), static replacement (rho = 1) and FedAvg over the aggregated 10 %. Without the `none`
baseline of a sweep (FCF under FedAvg costs ~10x a FedEM round in rf2's global-model engine; its
20-round result is in benchmarks/fedem_ml100k). Resumable: finished runs are skipped. Results in
the sweep format (runs/*.json, *.csv, *.scores.npz), read by benchmarks/fedem_compare.py.

    RF2_DATA_DIR=/work/shared/data .venv/bin/python benchmarks/fedem_long.py [OUT] [ROUNDS] [OPTIMIZATION ...]
"""
from __future__ import annotations

import sys
import tomllib
from pathlib import Path

from rf2.config import RunConfig
from rf2.executors import LocalProcessExecutor
from rf2.store import ResultsStore
from rf2.sweep import run_id


OPTIMIZATIONS = ("fedem", "fedem:agg=none", "fedem:rho=0.5", "fedem:rho=1:merge_forward=off",
                 "fedem:agg=avg:rho=1:merge_forward=off")


def main(out: str = "benchmarks/fedem_ml100k_100r", rounds: int = 100, *optimizations: str) -> None:
    base = tomllib.loads((Path(__file__).parent / "fedem_ml100k.toml").read_text())["run"]
    base.update(epochs=int(rounds), valid_every=10)
    store = ResultsStore(out)
    done = store.finished_ids()
    configs = [RunConfig.from_dict({**base, "optimization": o, "seed": s, "mapping": "random"}).to_dict()
               for s in (0, 1, 2) for o in (optimizations or OPTIMIZATIONS)]
    todo = [c for c in configs if run_id(RunConfig.from_dict(c)) not in done]
    print(f"{len(todo)} of {len(configs)} runs to do in {out}", flush=True)
    ex = LocalProcessExecutor(workers=2, threads=1)
    with store.lock():
        try:
            for o in ex.map(todo):
                rid = run_id(RunConfig.from_dict(o.config))
                if o.ok:
                    store.commit_run(rid, o.rows_csv, o.info, o.scores)
                    print(f"done {rid}: {o.info['seconds']['train']:.0f} s training", flush=True)
                else:
                    store.record_failure(rid, o.config, o.error, o.traceback)
                    print(f"FAILED {rid}: {o.error}", flush=True)
        finally:
            ex.close()


if __name__ == "__main__":
    main(*sys.argv[1:])
