"""A sweep's worker processes die with their driver: SIGKILL of `rf2 sweep --executor local`
leaves no orphan (worker or multiprocessing resource tracker), and SIGTERM stops it as cleanly as
Ctrl-C: finished runs kept, a message, a non-zero exit, the combined tables written."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rf2.store import ResultsStore
from rf2.sweep import SweepSpec

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")

BASE = {"dataset": "synthetic", "dataset_options": {"n_users": 150, "n_items": 60, "events_per_user": 12, "seed": 4},
        "clients_per_round": 30}


def _ppids() -> dict[int, int]:
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = Path(f"/proc/{d}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if fields[0] != "Z":  # a zombie is dead already (waiting for its reaper)
            out[int(d)] = int(fields[1])
    return out


def descendants(pid: int) -> set[int]:
    parents = _ppids()
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, pp in parents.items() if pp in frontier} - found
        found |= frontier
    return found


def alive(pids: set[int]) -> set[int]:
    return pids & set(_ppids())


def start_sweep(tmp_path: Path) -> tuple[subprocess.Popen, Path]:
    cfg = tmp_path / "sweep.toml"
    # long enough (36 runs on 2 workers) to be killed in the middle
    cfg.write_text(SweepSpec(base=dict(BASE), mappings=("random", "dirichlet:0.05"),
                             optimizations=("exclude-lo", "quants:1:2:8"), seeds=tuple(range(6)),
                             noise_floor=False).to_toml())
    out = tmp_path / "res"
    cmd = [sys.executable, "-m", "rf2.cli", "sweep", "--config", str(cfg), "--out", str(out), "--quiet",
           "--executor", "local", "--workers", "2", "--threads", "1"]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return proc, out


def wait_for_first_run(proc: subprocess.Popen, out: Path) -> set[int]:
    """Waits until a run is committed; returns the driver's descendants (workers, resource tracker)."""
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if ResultsStore(out).finished():
            break
        time.sleep(0.05)
    assert proc.poll() is None, f"the sweep ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
    kids = descendants(proc.pid)
    assert len(kids) >= 2, kids  # two workers at least
    return kids


def wait_gone(pids: set[int], seconds: float = 10.0) -> set[int]:
    deadline = time.time() + seconds
    while alive(pids) and time.time() < deadline:
        time.sleep(0.1)
    return alive(pids)


def test_sigkill_of_the_driver_takes_its_workers_with_it(tmp_path):
    proc, out = start_sweep(tmp_path)
    kids = wait_for_first_run(proc, out)
    try:
        os.kill(proc.pid, signal.SIGKILL)  # the driver only: no chance to clean up
        proc.wait()
        left = wait_gone(kids)
        assert not left, f"orphaned worker processes still alive: {sorted(left)}"
    finally:
        for p in alive(kids):
            os.kill(p, signal.SIGKILL)


def test_sigterm_stops_a_sweep_like_ctrl_c(tmp_path):
    proc, out = start_sweep(tmp_path)
    kids = wait_for_first_run(proc, out)
    try:
        os.kill(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        err = err.decode()
        assert proc.returncode not in (0, None), err
        assert "terminated" in err and "kept" in err and "Traceback" not in err, err
        assert not wait_gone(kids), "worker processes outlived a terminated sweep"
        kept = ResultsStore(out).finished()
        assert 1 <= len(kept) < 36
        assert (out / "results.csv").exists()  # the combined table of what finished
    finally:
        for p in alive(kids):
            os.kill(p, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
