"""Sweeps that scale out and survive failures: executors agree, SIGKILL loses nothing finished,
one writer per directory, old results directories are refused, divergence is recorded."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rf2.results import load_failures, load_results
from rf2.store import FORMAT, MARKER, ResultsFormatError, ResultsStore, SweepLockedError, upgrade_results
from rf2.sweep import Sweep, SweepSpec

BASE = {"dataset": "synthetic", "dataset_options": {"n_users": 150, "n_items": 60, "events_per_user": 12, "seed": 4},
        "clients_per_round": 30}
KEY = ["mapping", "optimization", "seed", "tier", "metric"]


def spec(**kw) -> SweepSpec:
    return SweepSpec(base=dict(BASE), **{"mappings": ("random", "dirichlet:0.05"),
                                         "optimizations": ("exclude-lo", "quants:1:2:8"), "seeds": (0,),
                                         "noise_floor": False, **kw})


def sorted_rows(path) -> pd.DataFrame:
    rows = load_results(path)
    rows = rows[~rows["metric"].isin(["sim_wall_h"])]  # all fields are deterministic; keep the check simple
    return rows.sort_values(KEY).reset_index(drop=True)


def assert_same_results(a: pd.DataFrame, b: pd.DataFrame) -> None:
    assert len(a) == len(b) and len(a) > 0
    assert (a[KEY].astype(str).to_numpy() == b[KEY].astype(str).to_numpy()).all()
    assert np.allclose(a["value"], b["value"], rtol=1e-5, atol=1e-7, equal_nan=True)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> pd.DataFrame:
    """The uninterrupted sweep, in this process."""
    out = tmp_path_factory.mktemp("ref")
    s = Sweep(spec(), out, progress=False, executor="inprocess").run()
    assert s.finished == 6 and not s.failed
    return sorted_rows(out)


def test_local_processes_equal_inprocess(reference, tmp_path):
    s = Sweep(spec(), tmp_path, progress=False, executor="local", workers=2).run()
    assert s.finished == 6 and not s.failed and s.executor == "local"
    assert_same_results(reference, sorted_rows(tmp_path))
    pids = {json.loads(p.read_text())["pid"] for p in (tmp_path / "runs").glob("*.json")}
    assert os.getpid() not in pids  # really ran elsewhere
    budget = max(1, (os.cpu_count() or 1) // 2)  # cores // workers: no oversubscription
    assert all(json.loads(p.read_text())["threads"] == budget for p in (tmp_path / "runs").glob("*.json"))


def _sweep_cmd(cfg: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "rf2.cli", "sweep", "--config", str(cfg), "--out", str(out), "--quiet",
            "--executor", "local", "--workers", "2", "--threads", "1"]


def test_sigkill_mid_sweep_then_resume_equals_uninterrupted(reference, tmp_path):
    cfg = tmp_path / "sweep.toml"
    cfg.write_text(spec().to_toml())
    out = tmp_path / "res"
    proc = subprocess.Popen(_sweep_cmd(cfg, out), start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.time() + 240
    committed = []
    while time.time() < deadline and proc.poll() is None:
        committed = [p for p in (out / "runs").glob("*.json") if not p.name.endswith(".failed.json")] if (out / "runs").is_dir() else []
        if committed:
            break
        time.sleep(0.05)
    assert proc.poll() is None, f"the sweep ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
    assert committed, "no run finished within the time limit"
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and its workers, with no chance to clean up
    proc.wait()
    before = ResultsStore(out).finished()
    assert 1 <= len(before) < 6
    # whatever was in flight is not accepted as a result
    assert len(load_results(out)["run_id"].unique()) == len(before)
    # the killed sweep's lock died with it: the resume is not refused
    resumed = subprocess.run(_sweep_cmd(cfg, out), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"{len(before)} already finished" in resumed.stdout
    after = ResultsStore(out).finished()
    assert len(after) == 6
    for rid, path in before.items():  # finished runs were kept, not recomputed
        assert after[rid] == path
    assert_same_results(reference, sorted_rows(out))


def test_a_csv_without_its_record_is_not_a_result_and_is_rerun(reference, tmp_path):
    Sweep(spec(), tmp_path, progress=False, executor="inprocess").run()
    records = sorted(p for p in (tmp_path / "runs").glob("*.json") if not p.name.endswith(".failed.json"))
    records[0].unlink()  # killed between writing the CSV and its record
    csv = records[1].with_suffix(".csv")
    csv.write_bytes(csv.read_bytes()[: len(csv.read_bytes()) // 2])  # a torn CSV (e.g. copied by hand)
    assert len(ResultsStore(tmp_path).finished()) == 4
    assert load_results(tmp_path)["run_id"].nunique() == 4
    again = Sweep(spec(), tmp_path, progress=False, executor="inprocess").run()
    assert (again.skipped, again.finished) == (4, 2)
    assert_same_results(reference, sorted_rows(tmp_path))


def test_two_sweeps_on_one_directory_refused(tmp_path):
    store = ResultsStore(tmp_path)
    with store.lock():
        with pytest.raises(SweepLockedError, match=f"pid {os.getpid()}"):
            Sweep(spec(), tmp_path, progress=False, executor="inprocess").run()
    # released: now it runs
    assert Sweep(spec(mappings=("random",), optimizations=("exclude-lo",)), tmp_path, progress=False,
                 executor="inprocess").run().finished == 2


def test_lock_held_by_another_process_is_refused(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c",
                               "import sys, time; from rf2.store import ResultsStore\n"
                               "with ResultsStore(sys.argv[1]).lock():\n print('locked', flush=True); time.sleep(60)",
                               str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(SweepLockedError, match="another sweep is writing"):
            Sweep(spec(), tmp_path, progress=False, executor="inprocess").run()
    finally:
        holder.kill()
        holder.wait()
    with ResultsStore(tmp_path).lock():  # a killed holder leaves no stale lock
        pass


def test_old_results_directories_are_detected_not_misread(tmp_path):
    Sweep(spec(mappings=("random",), optimizations=("exclude-lo",)), tmp_path, progress=False, executor="inprocess").run()
    # make it look like an rf2 0.1 directory: no marker, records without checksums
    (tmp_path / MARKER).unlink()
    for rec in (tmp_path / "runs").glob("*.json"):
        info = json.loads(rec.read_text())
        for k in ("csv_sha256", "n_rows", "format"):
            info.pop(k, None)
        rec.write_text(json.dumps(info))
    with pytest.raises(ResultsFormatError, match="older rf2.*upgrade-results"):
        load_results(tmp_path)
    with pytest.raises(ResultsFormatError, match="older rf2"):
        Sweep(spec(mappings=("random",), optimizations=("exclude-lo",)), tmp_path, progress=False, executor="inprocess").run()
    assert upgrade_results(tmp_path) == 2
    assert load_results(tmp_path)["run_id"].nunique() == 2
    (tmp_path / MARKER).write_text(json.dumps({"format": FORMAT + 1}))
    with pytest.raises(ResultsFormatError, match=f"format {FORMAT + 1}.*version that wrote it"):
        load_results(tmp_path)


def test_divergence_is_recorded_as_a_failure_and_plotted_as_missing(tmp_path, capsys):
    from rf2.cli import main

    s = SweepSpec(base={**BASE, "client_lr": 1e30, "server_optimizer": "sgd", "server_lr": 1.0}, mappings=("random",), optimizations=("exclude-lo",), seeds=(0,), noise_floor=False)
    summary = Sweep(s, tmp_path, progress=False, executor="inprocess").run()
    assert summary.finished == 0 and len(summary.failed) == 2
    assert all("DivergenceError" in reason for _, reason in summary.failed)
    fails = load_failures(tmp_path)
    assert set(fails["optimization"]) == {"none", "exclude-lo"}
    assert len(load_results(tmp_path)) == 0
    assert main(["plot", str(tmp_path)]) == 2  # nothing to draw is a clear message, not a crash or empty axes
    assert "no finished runs" in capsys.readouterr().err


def test_ray_executor_equals_local(reference, tmp_path, capsys):
    ray = pytest.importorskip("ray", reason="the Ray test needs the test extra (pip install -e '.[test]')")
    t0 = time.perf_counter()
    # "local": a new instance, not another test's cluster that happens to run on this machine
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    start = time.perf_counter() - t0
    try:
        sweep = Sweep(spec(), tmp_path, progress=False, executor="ray", threads=1)
        s = sweep.run()
    finally:
        ray.shutdown()
    assert s.finished == 6 and not s.failed and s.executor == "ray"
    assert_same_results(reference, sorted_rows(tmp_path))
    with capsys.disabled():
        print(f"\n[ray] local instance start {start:.1f}s, 6-run sweep {s.seconds:.1f}s")




@pytest.mark.parametrize("bad", [-1, 1.5, True, "3"])
def test_ray_retry_count_must_be_a_whole_number(bad):
    from rf2.executors import RayExecutor

    with pytest.raises(ValueError, match="max_retries must be a whole number >= 0"):
        RayExecutor(max_retries=bad)  # refused before Ray is imported or started


def test_ray_executor_starts_its_own_instance_beside_another(tmp_path, monkeypatch):
    """With no address it starts a new local instance, even while another Ray instance runs on
    the machine (a bare ray.init() joins that one, and refuses num_cpus: a ValueError)."""
    pytest.importorskip("ray", reason="the Ray test needs the test extra (pip install -e '.[test]')")
    from ray.cluster_utils import Cluster

    from rf2.executors import RayExecutor

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    other = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        executor = RayExecutor(workers=1)
        try:
            assert executor._started
            assert executor.ray.get_runtime_context().gcs_address != other.address
        finally:
            executor.close()
    finally:
        other.shutdown()

def _node_workers(node) -> dict[int, bytes]:
    """The worker processes of a Ray node (its raylet's children) and their titles: Ray titles a
    worker running a run ``ray::_ray_run`` and an idle one ``ray::IDLE``."""
    from ray._private import ray_constants

    raylet = node.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process.pid
    workers = {}
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1]) == raylet:
                workers[int(proc.name)] = (proc / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):  # the process ended meanwhile
            pass
    return workers


def _lose_node(cluster, node) -> None:
    """The node vanishes as a machine would: its workers and then its Ray processes SIGKILLed (a
    worker outliving its raylet could still deliver the run it is computing)."""
    for pid in _node_workers(node):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    cluster.remove_node(node, allow_graceful=False)


def test_ray_cluster_losing_a_node_mid_sweep_retries_its_run_and_equals_inprocess(tmp_path, capsys, monkeypatch):
    """A head (no CPUs, so no runs) and two one-CPU worker nodes on this machine; the node that
    delivers the first result is killed (SIGKILL, all its processes) once its next run has started.
    That run is retried on the other node; every run is committed once, by the driver, and the
    results equal the in-process sweep's. A Ray worker keeps its dataset between runs."""
    ray = pytest.importorskip("ray", reason="the Ray test needs the test extra (pip install -e '.[test]')")
    if not Path("/proc/self/stat").exists():
        pytest.skip("watches Ray's worker processes through /proc")
    from ray.cluster_utils import Cluster

    # runs of ~1 s, far longer than killing a node takes
    slow = SweepSpec(base={**BASE, "epochs": 20}, mappings=("random", "dirichlet:0.05"), optimizations=("exclude-lo",),
                     seeds=(0,), noise_floor=False)
    assert Sweep(slow, tmp_path / "ref", progress=False, executor="inprocess", threads=1).run().finished == 4
    t0 = time.perf_counter()
    # a lost node is declared dead after ~1 s of missed health checks (Ray's default is ~15 s)
    fast = {"health_check_period_ms": 300, "health_check_timeout_ms": 300, "health_check_failure_threshold": 3}
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False,
                                                            "_system_config": fast})
    try:
        nodes = {n.node_id: n for n in (cluster.add_node(num_cpus=1) for _ in range(2))}
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, logging_level="WARNING", log_to_driver=False)
        start = time.perf_counter() - t0
        sweep = Sweep(slow, tmp_path / "ray", progress=False, executor="ray", threads=1)
        commits: dict[str, int] = {}
        killed: list[str] = []
        commit = sweep.store.commit_run

        def commit_then_kill(rid, rows_csv, info, scores=b""):
            commits[rid] = commits.get(rid, 0) + 1
            commit(rid, rows_csv, info, scores)
            if not killed:  # the first result: lose the node that ran it, once its next run has started
                node = nodes[info["ray_node"]]
                deadline = time.time() + 60
                while not any(t.startswith(b"ray::_ray_run") for t in _node_workers(node).values()):
                    assert time.time() < deadline, "the node never started a second run"
                    time.sleep(0.01)
                killed.append(info["ray_node"])
                _lose_node(cluster, node)

        monkeypatch.setattr(sweep.store, "commit_run", commit_then_kill)
        s = sweep.run()
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert killed and s.executor == "ray"
    assert s.finished == 4 and not s.failed, s.failed
    assert sorted(commits.values()) == [1] * 4  # a retried run is written once
    assert_same_results(sorted_rows(tmp_path / "ref"), sorted_rows(tmp_path / "ray"))
    records = [json.loads(p.read_text()) for p in (tmp_path / "ray" / "runs").glob("*.json")
               if not p.name.endswith(".failed.json")]
    on = {n: [r for r in records if r["ray_node"] == n] for n in nodes}
    assert len(on[killed[0]]) == 1, "a run finished on the lost node after it was killed: runs too short?"
    survivor = next(r for n, r in on.items() if n != killed[0])
    assert len(survivor) == 3 and os.getpid() not in {r["pid"] for r in survivor}
    # each worker process loaded the dataset once and reused it for its later runs
    pids = {r["pid"] for r in survivor}
    assert sum(not r["dataset_reused"] for r in survivor) == len(pids) < len(survivor)
    with capsys.disabled():
        print(f"\n[ray cluster] head + 2 nodes start {start:.1f}s, 4-run sweep losing a node {s.seconds:.1f}s, "
              f"survivor ran {len(survivor)} runs in {len(pids)} worker process(es)")

def test_runs_from_before_a_new_setting_still_pair_with_their_baselines(tmp_path):
    Sweep(spec(mappings=("random",), optimizations=("exclude-lo",)), tmp_path, progress=False, executor="inprocess").run()
    from rf2.results import mdac_table
    from rf2.store import _sha256

    # an older rf2 wrote the baseline without the `ranking_k` column
    rec = next(p for p in (tmp_path / "runs").glob("random__none*.json"))
    csv = rec.with_suffix(".csv")
    old = pd.read_csv(csv).drop(columns=["ranking_k"])
    csv.write_text(old.to_csv(index=False))
    info = json.loads(rec.read_text())
    info["csv_sha256"] = _sha256(csv.read_bytes())
    rec.write_text(json.dumps(info))
    table = mdac_table(load_results(tmp_path))
    assert len(table) == 1 and np.isfinite(table["mdac"]).all()


def test_format2_runs_are_relabelled_with_the_old_defaults_and_never_mix_with_new_ones(tmp_path):
    """Format 3 changed defaults (rf2.upgrade): an old run of `random` / `quant:1:2:8` on ml-100k-like
    data is relabelled `random:shuffle` / `quant:1:2:8:scope=update` with the old split and
    history spelled out, renamed to its new id, and a new sweep reruns it under the new defaults."""
    from rf2.upgrade import relabel_config, relabel_optimization

    assert relabel_optimization("quant:1:2:8") == "quant:1:2:8:scope=update"
    assert relabel_optimization("quants:bits:3:6:32") == "quants:bits:3:6:32:scope=update:sign=budget"
    assert relabel_optimization("quant:1:2:8:scope=tensor") == "quant:1:2:8:scope=tensor"  # explicit: kept
    assert relabel_optimization("overselect:0.2") == "overselect:0.2:drop=time"
    assert relabel_optimization("channel:1:2:4") == "channel:1:2:4"
    old = relabel_config({"dataset": "ml-100k", "dataset_options": {"history_maxlen": 20}, "mapping": "random",
                          "optimization": "none", "system_options": {}})
    assert old["dataset_options"] == {"history_maxlen": 20, "test_fraction": 0.2}
    assert old["mapping"] == "random:shuffle" and old["system_options"] == {"preset": "rf2-0.1"}
    from rf2.upgrade import relabel_mapping

    assert relabel_mapping("dirichlet:0.05") == "dirichlet:0.05:draw=bernoulli:null=last"
    assert relabel_mapping("hetero-high:unbalanced") == "hetero-high:unbalanced:draw=bernoulli:null=last"
    assert relabel_mapping("activity:5:3:2") == "activity:5:3:2"

    s = spec(mappings=("random",), optimizations=("quant:1:2:8",))
    Sweep(s, tmp_path, progress=False, executor="inprocess").run()
    before = sorted(p.name for p in (tmp_path / "runs").glob("*.json"))
    (tmp_path / MARKER).write_text(json.dumps({"format": 2}))
    with pytest.raises(ResultsFormatError, match="upgrade-results"):
        load_results(tmp_path)
    assert upgrade_results(tmp_path) == 2
    rows = load_results(tmp_path)
    assert set(rows["mapping"]) == {"random:shuffle"}
    assert set(rows["optimization"]) == {"none", "quant:1:2:8:scope=update"}
    after = sorted(p.name for p in (tmp_path / "runs").glob("*.json"))
    assert not set(before) & set(after)  # renamed to the relabelled runs' ids
    assert all(ResultsStore(tmp_path).scores(p[:-5]) is not None for p in after)  # scores follow their run
    assert len(Sweep(s, tmp_path, progress=False, executor="inprocess").pending()) == 2  # new defaults: rerun
    assert "random:shuffle" in (tmp_path / "sweep.toml").read_text()
    assert len(pd.read_csv(tmp_path / "mdac.csv")) == 1
