"""Where a sweep's runs execute: in this process, in local worker processes, or on Ray.

Every run of a sweep is independent. An executor takes run configs and yields
:class:`RunOutcome` objects as runs finish, in any order; only the sweep's driver process writes
the results directory (:mod:`rf2.sweep`), so workers never touch it. That keeps writes atomic and
single-writer on every backend, and lets Ray workers run on machines that do not share the
results folder.

* ``inprocess``  runs one after another here (debugging, profilers, pdb);
* ``local``      (default) a :class:`concurrent.futures.ProcessPoolExecutor` with ``spawn``ed workers,
  one per core by default;
* ``ray``        ``ray.remote`` tasks on a Ray cluster (``address``), or a local Ray instance when no
  address is given. Ray is an optional extra: ``pip install 'rf2[ray]'``. A run whose worker
  process or node is lost is retried elsewhere (:data:`RAY_MAX_RETRIES`).

**Thread budget.** Each run is pinned to ``threads`` intra-op threads (``torch.set_num_threads``
plus the OpenMP/MKL environment variables for the worker), ``cores // workers`` by default, so
parallel runs do not oversubscribe the machine. Results do not depend on the thread count beyond
float reduction order.
"""
from __future__ import annotations

import json
import os
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Iterable, Iterator

EXECUTORS = ("inprocess", "local", "ray")
#: How often Ray re-runs a run whose worker process or node died (a system failure: the node was
#: lost, the process was killed or ran out of memory). An error inside a run is not a system
#: failure: :func:`execute_run` returns it as an outcome, so it is recorded, never retried here
#: (``retry_exceptions`` stays off). Every run has one result reference, so a retried run is
#: still committed once, by the driver.
RAY_MAX_RETRIES = 3
_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


@dataclass
class RunOutcome:
    """What one run produced. ``rows_csv``/``info`` on success; ``error``/``traceback`` on failure."""

    config: dict
    ok: bool
    rows_csv: str = ""
    info: dict = field(default_factory=dict)
    error: str = ""
    traceback: str = ""
    scores: bytes = b""  # the run's EvalScores (rf2.evaluation.scores), for bootstrap intervals


# -- the work of one run (executed wherever the executor puts it) ---------------------------------
_CACHE: dict = {}  # per process: datasets and tier assignments, reused across runs


def _dataset(cfg):
    """The run's dataset and whether this process had it already (loaded for an earlier run)."""
    from rf2.data.cache import load

    key = ("ds", cfg.dataset, json.dumps(cfg.dataset_options, sort_keys=True))
    reused = key in _CACHE
    if not reused:  # from the on-disk cache ($RF2_DATASET_CACHE) where there is one
        _CACHE[key] = load(cfg.dataset, cfg.dataset_options)
    return _CACHE[key], reused


def _tiers(cfg, ds):
    from tier_mapping import map_tiers

    key = ("tiers", cfg.dataset, json.dumps(cfg.dataset_options, sort_keys=True), cfg.mapping, cfg.n_tiers, cfg.seed)
    if key not in _CACHE:
        _CACHE[key] = map_tiers(ds, cfg.mapping, cfg.n_tiers, seed=cfg.seed)
    return _CACHE[key]


def set_thread_budget(threads: int | None) -> None:
    if not threads:
        return
    import torch

    for var in _THREAD_VARS:
        os.environ[var] = str(threads)
    torch.set_num_threads(int(threads))


def execute_run(config: dict, threads: int | None = None, progress: bool = False) -> RunOutcome:
    """Train and evaluate one configuration; never raises (a failure is an outcome)."""
    from rf2.config import RunConfig
    from rf2.simulation import Simulation

    set_thread_budget(threads)
    try:
        cfg = RunConfig.from_dict(config)
        ds, reused = _dataset(cfg)
        res = Simulation(cfg, dataset=ds, tiers=_tiers(cfg, ds), progress=progress).run()
        info = {"config": cfg.to_dict(), "seconds": res.seconds, "peak_rss_mb": res.peak_rss_mb,
                "rounds": len(res.rounds), "final_train_loss": float(res.rounds["train_loss"].iloc[-1]),
                "pid": os.getpid(), "threads": threads, "dataset_reused": reused}
        scores = res.scores.to_bytes() if res.scores is not None else b""
        return RunOutcome(config, True, rows_csv=res.rows().to_csv(index=False), info=info, scores=scores)
    except Exception as exc:  # recorded by the driver; the sweep goes on
        return RunOutcome(config, False, error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())


# -- executors -----------------------------------------------------------------------------------
class InProcessExecutor:
    name = "inprocess"

    def __init__(self, threads: int | None = None):
        self.threads = threads
        self.workers = 1

    def map(self, configs: Iterable[dict], progress: bool = False) -> Iterator[RunOutcome]:
        for cfg in configs:
            yield execute_run(cfg, self.threads, progress=progress)

    def close(self) -> None:
        pass


def die_with_parent(parent_pid: int, poll_s: float = 1.0) -> None:
    """Make this worker exit when ``parent_pid`` (its driver) dies, however it dies.

    On Linux the kernel sends SIGKILL on the parent's death (``prctl(PR_SET_PDEATHSIG)``);
    everywhere a daemon thread also polls ``os.getppid()`` (re-parenting means the driver is gone),
    which covers other systems and a driver that died before the ``prctl``."""
    import signal
    import sys
    import threading

    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(poll_s)
        os._exit(1)

    if os.getppid() != parent_pid:
        os._exit(1)
    threading.Thread(target=watch, name="rf2-die-with-parent", daemon=True).start()


def _init_worker(threads: int, parent_pid: int | None = None) -> None:
    if parent_pid is not None:
        die_with_parent(parent_pid)
    set_thread_budget(threads)


class LocalProcessExecutor:
    """Runs in ``workers`` spawned processes (fresh interpreters: no inherited locks, file
    descriptors or torch thread pools). Each worker keeps its datasets cached between runs and dies
    with the driver (:func:`die_with_parent`), so a killed sweep leaves no orphan; closing the
    executor before its runs are done (an interrupt) terminates the workers instead of waiting."""

    name = "local"

    def __init__(self, workers: int | None = None, threads: int | None = None):
        cores = os.cpu_count() or 1
        self.workers = max(1, int(workers or cores))
        self.threads = max(1, int(threads or cores // self.workers))
        self._pool: ProcessPoolExecutor | None = None

    def map(self, configs: Iterable[dict], progress: bool = False) -> Iterator[RunOutcome]:
        import multiprocessing as mp

        configs = list(configs)
        if not configs:
            return
        n = min(self.workers, len(configs))
        self._pool = ProcessPoolExecutor(n, mp_context=mp.get_context("spawn"), initializer=_init_worker,
                                         initargs=(self.threads, os.getpid()))
        completed = False
        try:
            pending = {self._pool.submit(execute_run, c, self.threads): c for c in configs}
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    cfg = pending.pop(fut)
                    try:
                        yield fut.result()
                    except Exception as exc:  # the worker process died (e.g. out of memory, killed)
                        yield RunOutcome(cfg, False, error=f"worker process failed: {type(exc).__name__}: {exc}",
                                         traceback=traceback.format_exc())
            completed = True
        finally:
            self.close(graceful=completed)

    def close(self, graceful: bool = False) -> None:
        """Shut the workers down: wait for them when every run is done (``graceful``), else (an
        interrupt or an error in the driver) cancel what is queued and terminate the workers."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        if graceful:
            pool.shutdown(wait=True, cancel_futures=True)
            return
        procs = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for p in procs:
            if p.is_alive():
                p.terminate()
        for p in procs:
            p.join(5)
            if p.is_alive():
                p.kill()


def _ray_run(config: dict, threads: int | None = None) -> RunOutcome:
    """One run as a Ray task: :func:`execute_run`, plus the id of the node that ran it."""
    import ray

    outcome = execute_run(config, threads)
    outcome.info["ray_node"] = ray.get_runtime_context().get_node_id()
    return outcome


class RayExecutor:
    """Runs each config as a Ray task with ``num_cpus=threads``. Connects to ``address`` (a
    cluster, e.g. ``ray://head:10001`` or ``auto``), else to ``$RAY_ADDRESS``, else starts a new
    local instance with ``workers`` CPUs. Datasets must be reachable from every node (same path or ``RF2_DATA_DIR``).

    Ray reuses a worker process for the tasks it runs, so each worker loads (or memory-maps, with
    ``RF2_DATASET_CACHE``) a dataset once and keeps it for its later runs. A run whose worker or
    node dies is retried up to ``max_retries`` times (:data:`RAY_MAX_RETRIES`) on what is left of
    the cluster. Runs whose results reached the driver are not rerun (one whose result was still
    only on the lost node may be, by Ray's lineage reconstruction); each run is yielded, so written,
    once."""

    name = "ray"

    def __init__(self, address: str | None = None, workers: int | None = None, threads: int | None = None,
                 max_retries: int | None = None):
        max_retries = RAY_MAX_RETRIES if max_retries is None else max_retries
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ValueError(f"ray executor: max_retries must be a whole number >= 0, not {max_retries!r}")
        try:
            import ray
        except ImportError as exc:
            raise RuntimeError("the ray executor needs Ray: pip install 'rf2[ray]' (or pip install ray)") from exc
        self.ray = ray
        self.max_retries = max_retries
        self.threads = max(1, int(threads or 1))
        self.workers = workers
        self._started = False
        self.start_seconds = 0.0
        if not ray.is_initialized():
            t0 = time.perf_counter()
            env = {"env_vars": {v: str(self.threads) for v in _THREAD_VARS}}
            for var in ("RF2_DATA_DIR", "RF2_DATASET_CACHE"):  # where data is found / generated data is kept
                if var in os.environ:
                    env["env_vars"][var] = os.environ[var]
            if address:
                kw = {"address": address}
            elif os.environ.get("RAY_ADDRESS"):  # Ray's own way of naming a cluster
                kw = {}
            else:  # a new instance, even if another Ray instance runs on this machine (which a bare
                # ray.init() would join, refusing num_cpus)
                kw = {"address": "local", "num_cpus": workers or os.cpu_count() or 1}
            ray.init(runtime_env=env, include_dashboard=False, logging_level="WARNING", **kw)
            self._started = True
            self.start_seconds = time.perf_counter() - t0
        # retries are for lost workers/nodes only: no retry_exceptions (a run's error is an outcome)
        self._task = ray.remote(num_cpus=self.threads, max_retries=self.max_retries)(_ray_run)

    def map(self, configs: Iterable[dict], progress: bool = False) -> Iterator[RunOutcome]:
        ray = self.ray
        refs = {self._task.remote(c, self.threads): c for c in configs}
        while refs:
            done, _ = ray.wait(list(refs), num_returns=1)
            for ref in done:
                cfg = refs.pop(ref)  # one result per run, however often Ray had to run it
                try:
                    yield ray.get(ref)
                except Exception as exc:  # its worker died more than max_retries times
                    yield RunOutcome(cfg, False, error=f"ray task failed: {type(exc).__name__}: {exc}",
                                     traceback=traceback.format_exc())

    def close(self) -> None:
        if self._started:
            self.ray.shutdown()
            self._started = False


def make_executor(name: str = "local", workers: int | None = None, threads: int | None = None,
                  address: str | None = None):
    if name == "inprocess":
        return InProcessExecutor(threads)
    if name == "local":
        return LocalProcessExecutor(workers, threads)
    if name == "ray":
        return RayExecutor(address, workers, threads)
    raise ValueError(f"unknown executor {name!r}; choose one of {list(EXECUTORS)}")
