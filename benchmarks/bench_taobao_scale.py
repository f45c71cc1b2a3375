"""Taobao size, SYNTHETIC: does a population of the Taobao dataset's size (RF² §5.1: 1.14M users,
847k ads, 26M impressions) fit in 8 GB for one epoch, and how long does it take on one core?

The data is `synthetic` (rf2/data/synthetic.py), labelled SYNTHETIC everywhere: 1,141,729 users,
846,811 items, ~23.3 distinct items per user after the generator drops repeated (user, item)
pairs (``events_per_user = 27.5`` before dropping), at least 1 event per user (Taobao: every user
has at least one impression), click rate 5% (about the share of ``clk = 1`` in Taobao's log),
click histories of the last 50 clicked items. Not Taobao's feature set: 3 user features instead
of 8, item id + 2 categories + log price instead of ad id, category, campaign, customer, brand +
log price, history of items only (not categories and brands), no event features (scenario, day
of week); repeated impressions are dropped. DLRM (RF² §5.1: embeddings 16, bottom MLP 16, top MLP 256), clients full-batch SGD
lr 1.0, server AdaGrad lr 0.01 (the paper's Taobao setting), K = 100 clients per round (the paper
states no K; rf2's default is 32).

Every stage is a fresh process under ``/usr/bin/time -v`` (wall time, peak RSS), one after another:

* ``gen``: the first load through the dataset cache (generates, builds the click history index,
  writes the entry; the entry is deleted first if present, so this is always a first load);
* ``load``: a second load (memory-maps the entry) that also pads the click histories of 4,096 events;
* ``none``: ``rf2 run`` with ``none`` reading the cache (one epoch = 11,418 rounds at K = 100, or
  ``--max-rounds``);
* ``quant``: the same with ``quant:1:2:4`` (the per-client path).

``load``, ``none`` and ``quant`` read the entry ``gen`` wrote (without it, the first of them
generates it, and its numbers include generating). Measured numbers: benchmarks/README.md,
"Taobao size (SYNTHETIC)".

Wall times on a shared machine depend on the load; the CPU time (user + system) is printed too.

    nice -n 10 .venv/bin/python benchmarks/bench_taobao_scale.py gen load none quant [--max-rounds R] \
        [--cache /tmp/rf2-cache-taobao] [--out /tmp/rf2-taobao] [--threads 1]

prints one line per stage (wall, peak RSS, and for runs rf2's train/eval seconds and overall AUC);
the ``rf2 run`` outputs (stdout, /usr/bin/time report, result CSV) stay in ``--out``.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

TAOBAO_SIZE = {"n_users": 1141729, "n_items": 846811, "events_per_user": 27.5, "min_events": 1,
               "click_rate": 0.05}
SPECS = {"none": "none", "quant": "quant:1:2:4"}

_LOAD = """
import json, sys, time
t = time.perf_counter()
from rf2.data.cache import load
import numpy as np
t_import = time.perf_counter() - t
t = time.perf_counter()
ds = load("synthetic", json.loads(sys.argv[1]), sys.argv[2])
h = ds.history
idx = np.arange(0, ds.n_events, max(1, ds.n_events // 4096))[:4096]
batch = h.padded(idx, 50, np.arange(ds.n_items + 1, dtype=np.int32))
print(json.dumps({"import_s": t_import, "load_s": time.perf_counter() - t, "users": ds.n_users,
                  "items": ds.n_items, "events": ds.n_events, "clicks": int(h.clicked.size),
                  "test_events": int(np.asarray(ds.events["is_test"]).sum())}))
"""


def timed(cmd: list[str], log: Path) -> tuple[str, float, float, float]:
    """Run ``cmd`` under ``/usr/bin/time -v``: (stdout, wall seconds, peak RSS in MB, CPU seconds
    = user + system; on a shared machine the CPU time is the steadier number)."""
    res = subprocess.run(["/usr/bin/time", "-v", "-o", str(log), *cmd], capture_output=True, text=True)
    report = log.read_text()
    if res.returncode != 0:
        raise SystemExit(f"failed ({res.returncode}): {' '.join(cmd)}\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}\n{report}")
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", report).group(1)
    seconds = sum(float(p) * 60 ** i for i, p in enumerate(reversed(wall.split(":"))))
    rss_mb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", report).group(1)) / 1024
    cpu = sum(float(re.search(rf"{k} time \(seconds\): ([\d.]+)", report).group(1)) for k in ("User", "System"))
    return res.stdout, seconds, rss_mb, cpu


def run_command(spec: str, a: argparse.Namespace, csv: Path) -> list[str]:
    return [sys.executable, "-m", "rf2.cli", "run", "--dataset", "synthetic", "--dataset-options",
            *(f"{k}={v}" for k, v in TAOBAO_SIZE.items()),
            "--model", "dlrm", "--optimization", spec, "--clients-per-round", str(a.clients_per_round),
            "--server-optimizer", "adagrad", "--server-lr", "0.01", "--client-optimizer", "sgd", "--client-lr", "1.0",
            "--max-rounds", str(a.max_rounds), "--threads", str(a.threads), "--dataset-cache", a.cache,
            "--out", str(csv), "--quiet"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("stages", nargs="+", choices=("gen", "load", "none", "quant"))
    p.add_argument("--cache", default="/tmp/rf2-cache-taobao")
    p.add_argument("--out", default="/tmp/rf2-taobao")
    p.add_argument("--max-rounds", type=int, default=0, help="0: one whole epoch")
    p.add_argument("--clients-per-round", type=int, default=100)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"SYNTHETIC population of Taobao's size: {TAOBAO_SIZE}", flush=True)
    for stage in a.stages:
        if stage in ("gen", "load"):
            if stage == "gen":
                from rf2.data.cache import cache_key

                entry = Path(a.cache) / f"synthetic-{cache_key('synthetic', TAOBAO_SIZE)}"
                shutil.rmtree(entry, ignore_errors=True)
            stdout, wall, rss, cpu = timed([sys.executable, "-c", _LOAD, json.dumps(TAOBAO_SIZE), a.cache],
                                      out / f"{stage}.time")
            info = json.loads(stdout.strip().splitlines()[-1])
            print(f"{stage:5s} wall {wall:7.1f} s (CPU {cpu:.1f} s), peak RSS {rss:6.0f} MB; load {info['load_s']:.1f} s "
                  f"(+ import {info['import_s']:.1f} s); {info['users']:,} users, {info['items']:,} items, "
                  f"{info['events']:,} events ({info['test_events']:,} test), {info['clicks']:,} clicks", flush=True)
        else:
            tag = SPECS[stage].replace(":", "_") + (f"_r{a.max_rounds}" if a.max_rounds else "_epoch")
            csv = out / f"{tag}.csv"
            stdout, wall, rss, cpu = timed(run_command(SPECS[stage], a, csv), out / f"{tag}.time")
            (out / f"{tag}.stdout").write_text(stdout)
            m = re.search(r"time: load ([\d.]+)s, train ([\d.]+)s, eval ([\d.]+)s", stdout)
            rounds = re.search(r"K=\d+, \d+ epoch\(s\), (\d+) rounds", stdout).group(1)
            auc = _overall_auc(csv)
            print(f"{SPECS[stage]:11s} wall {wall:7.1f} s (CPU {cpu:.1f} s), peak RSS {rss:6.0f} MB; {rounds} rounds "
                  f"(max_rounds {a.max_rounds or 'none: one epoch'}); load {m.group(1)} s, train {m.group(2)} s, "
                  f"eval {m.group(3)} s; overall AUC {auc}", flush=True)


def _overall_auc(csv: Path) -> str:
    import pandas as pd

    rows = pd.read_csv(csv)
    sel = rows[(rows["metric"] == "auc") & (rows["tier"] == "overall")] if {"metric", "tier"} <= set(rows) else rows.iloc[:0]
    return f"{float(sel['value'].iloc[0]):.4f}" if len(sel) else "(see the csv)"


if __name__ == "__main__":
    main()
