"""The ``rf2`` command line.

``rf2 run``        train one configuration, print the per-tier table
``rf2 sweep``      mappings x optimisations x seeds into a results directory (resumable)
``rf2 plot``       the paper's figures (MDAC, per-tier change, tier items) from a results directory
``rf2 report``     one self-contained HTML page (tables, figures, failed and missing runs) for a results directory
``rf2 tiers``      tier heterogeneity report (and Figure-4-style plot) for one or more mappings
``rf2 download``   fetch a dataset from its official source into the cache (sha256-checked)
``rf2 list``       datasets, models, tier mappings, optimisations

Run settings come from ``--config FILE.toml`` (top-level keys, or a ``[run]`` table) and are
overridden by flags; the flags are generated from :class:`rf2.config.RunConfig`.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tomllib
from pathlib import Path

from rf2.config import RunConfig, config_fields, load_toml


class CLIError(Exception):
    pass


#: `rf2 run`'s torch threads: a few, not every core (torch's default), which collapses under load
DEFAULT_RUN_THREADS = min(4, os.cpu_count() or 1)


def _parse_pairs(pairs: list[str], flag: str) -> dict:
    """``KEY=VALUE`` pairs (values in TOML syntax), or one inline TOML table ``'{k = v, ...}'``."""
    joined = " ".join(pairs).strip()
    if joined.startswith("{"):
        try:
            return tomllib.loads(f"v = {joined}")["v"]
        except tomllib.TOMLDecodeError as exc:
            raise CLIError(f"{flag}: {joined!r} is not an inline TOML table ({exc}); e.g. '{{click_threshold = 4}}' "
                           "or click_threshold=4") from None
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise CLIError(f"{flag}: expected KEY=VALUE, got {pair!r}")
        key, value = pair.split("=", 1)
        try:
            out[key.strip()] = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            out[key.strip()] = value
    return out


def _bool(text: str) -> bool:
    t = text.strip().lower()
    if t in ("true", "1", "yes", "on"):
        return True
    if t in ("false", "0", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def add_setting_flags(g, skip: tuple[str, ...] = ()) -> None:
    """One flag per RunConfig field (``--clients-per-round``; dict fields take KEY=VALUE pairs)."""
    for name, typ, default, help_ in config_fields():
        if name in skip:
            continue
        flag = "--" + name.replace("_", "-")
        if typ is dict:
            g.add_argument(flag, nargs="+", metavar="KEY=VALUE", default=None,
                           help=f"{help_}; KEY=VALUE pairs or one quoted inline table")
        elif typ is bool:
            g.add_argument(flag, type=_bool, default=None, metavar="true|false", help=f"{help_} (default: {str(default).lower()})")
        else:
            g.add_argument(flag, type=typ, default=None, metavar=typ.__name__.upper(), help=f"{help_} (default: {default})")


def add_config_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="TOML file with run settings (top level or a [run] table)")
    add_setting_flags(p.add_argument_group("run settings (override the config file)"))


def settings_from_args(args: argparse.Namespace, base: dict) -> dict:
    base = dict(base)
    for name, typ, _, _ in config_fields():
        v = getattr(args, name, None)
        if v is None:
            continue
        base[name] = _parse_pairs(v, "--" + name.replace("_", "-")) if typ is dict else v
    return base


def config_from_args(args: argparse.Namespace) -> RunConfig:
    base: dict = {}
    if getattr(args, "config", None):
        data = load_toml(args.config)
        option_tables = {name for name, typ, _, _ in config_fields() if typ is dict}
        unknown = sorted(k for k, v in data.items() if isinstance(v, dict) and k not in {"run", "sweep", *option_tables})
        if unknown:
            raise CLIError(f"{args.config}: unknown table(s) {['[' + k + ']' for k in unknown]}; a run file has "
                           f"[run] (or top-level settings), the option tables {sorted(option_tables)}, and [sweep] "
                           "(ignored by `rf2 run`)")
        base = dict(data["run"]) if isinstance(data.get("run"), dict) else {k: v for k, v in data.items() if not isinstance(v, dict) or k.endswith("_options")}
    return RunConfig.from_dict(settings_from_args(args, base))


# -- commands ------------------------------------------------------------------------------------
_CACHE_HELP = ("keep generated datasets (synthetic) here and memory-map them on later loads, in every process "
               "(default: $RF2_DATASET_CACHE, else no cache)")


def use_dataset_cache(folder: str | None) -> None:
    """``--dataset-cache``: the cache directory for this process and the runs it starts."""
    if folder is None:
        return
    path = Path(folder).expanduser().resolve()
    if path.exists() and not path.is_dir():
        raise SystemExit(f"rf2: --dataset-cache {folder}: not a directory; give a directory (it is created if missing)")
    os.environ["RF2_DATASET_CACHE"] = str(path)


def cmd_run(args: argparse.Namespace) -> int:
    from rf2.simulation import Simulation

    from rf2.executors import set_thread_budget

    cfg = config_from_args(args)
    out = check_out_file(args.out) if args.out else None
    use_dataset_cache(args.dataset_cache)
    set_thread_budget(args.threads)
    sim = Simulation(cfg, progress=not args.quiet)
    print(f"dataset   {sim.dataset.name}: {sim.dataset.summary()} [{sim.dataset.source}]")
    print(f"tiers     {cfg.mapping}: {dict(zip(sim.tiers.names, sim.tiers.sizes().tolist()))}")
    print(f"training  {cfg.model}, {cfg.optimization}, K={cfg.clients_per_round}, {cfg.epochs} epoch(s), "
          f"{len(sim.schedule())} rounds, engine={cfg.engine}")
    print(f"per tier  {sim.optimization.describe(sim.tiers.names)}")
    res = sim.run()
    print()
    print(_run_table(res.table()))
    print(f"\ntime: load {res.seconds['load']:.1f}s, train {res.seconds['train']:.1f}s, eval {res.seconds['eval']:.1f}s; "
          f"peak memory {res.peak_rss_mb:.0f} MB")
    if out is not None:
        from rf2.store import atomic_write

        atomic_write(out, res.rows().to_csv(index=False))
        print(f"results written to {out}")
    return 0


def _run_table(table) -> str:
    """The per-tier table as text: counts as integers, blanks where a metric has no per-tier value
    (``sim_wall_h`` is overall only)."""
    counts = {"participations", "dropped", "n_users", "n_events"}
    cols = {c: table[c].map(lambda v: "" if v != v else (f"{v:.0f}" if c in counts else f"{v:.4f}"))
            for c in table.columns}
    return table.assign(**cols).to_string()


def cmd_upgrade(args: argparse.Namespace) -> int:
    from rf2.store import upgrade_results

    from rf2.store import FORMAT, MARKER

    marker = Path(args.results) / MARKER
    try:
        before = json.loads(marker.read_text()).get("format") if marker.is_file() else 1
    except (ValueError, OSError, AttributeError):
        before = None
    kept = upgrade_results(args.results)
    if before == FORMAT:
        print(f"{args.results}: already in the current results format ({kept} finished run(s)); nothing changed")
    else:
        print(f"{args.results}: upgraded from format {before} to {FORMAT}: {kept} finished run(s) kept"
              + (", relabelled with the old defaults spelled out (rf2/upgrade.py)" if before in (1, 2) else ""))
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from rf2.results import summary_pivot
    from rf2.sweep import Sweep, SweepSpec

    use_dataset_cache(args.dataset_cache)
    existing = Path(args.out) / "sweep.toml"
    if args.config:
        spec = SweepSpec.from_toml(args.config)
    elif existing.is_file():  # continue the directory's own sweep (its settings), with any axes overridden
        spec = SweepSpec.from_toml(existing)
        print(f"sweep: no --config given; continuing the sweep in {existing}")
    else:
        spec = SweepSpec()
    axes = {k: tuple(v) for k, v in (("mappings", args.mappings), ("optimizations", args.optimizations),
                                     ("seeds", args.seeds)) if v}
    spec = SweepSpec(base=settings_from_args(args, spec.base),
                     noise_floor=spec.noise_floor if args.noise_floor is None else args.noise_floor,
                     **{"mappings": spec.mappings, "optimizations": spec.optimizations, "seeds": spec.seeds, **axes})
    sweep = Sweep(spec, args.out, progress=not args.quiet, executor=args.executor, workers=args.workers,
                  threads=args.threads, address=args.address)
    shown = sweep._directory_spec()  # refuses other settings before anything runs (a one-line error)
    configs = spec.configs()
    print(f"sweep: {len(spec.mappings)} mappings x {len(spec.optimization_list)} optimisations (incl. none) x "
          f"{len(spec.seeds)} seeds{' + noise-floor runs' if spec.noise_floor else ''} = {len(configs)} runs; {len(configs) - len(sweep.pending())} already finished in {args.out}")
    from optimizations import parse_optimization
    from tier_mapping import tier_names

    names = tier_names(configs[0].n_tiers)
    width = max(len(o) for o in spec.optimization_list)
    for o in spec.optimization_list:  # what every spec does per tier (a typo such as quant:1:2:9 shows here)
        print(f"  {o:{width}s}  {parse_optimization(o).describe(names)}")
    summary = sweep.run()
    print(f"finished {summary.finished} runs in {summary.seconds:.0f}s with the {summary.executor} executor "
          f"({summary.skipped} skipped as done; tables and bootstrap intervals {summary.tables_seconds:.0f}s); "
          f"results in {summary.out}")
    if summary.failed:
        print(f"{len(summary.failed)} run(s) failed (recorded in runs/*.failed.json; re-run the sweep to retry):")
        for rid, reason in summary.failed:
            print(f"  {rid}: {reason}")
    summary_path = Path(args.out) / "mdac_summary.csv"
    if summary_path.exists() and summary_path.stat().st_size > 1:
        import pandas as pd

        summary_table = pd.read_csv(summary_path)
        table = summary_pivot(summary_table, list(shown.mappings), shown.optimization_list, metric="auc")
        if not table.empty:
            n = int(summary_table["n_seeds"].max())
            print(f"\nMDAC of AUC (%) by optimisation and tier mapping: MDAC of the {n}-seed mean tier changes "
                  "[95% paired-bootstrap interval over users]; * = above the noise floor (last row: none retrained "
                  "with the same tiers), i.e. the MDAC exceeds the floor's in >= 97.5% of paired replicates. "
                  "Per run: mdac.csv; per cell: mdac_summary.csv (both as fractions, 0.012 = 1.2 %)")
            print(table.to_string())
    if args.plot:
        from rf2.plots import plot_results

        for f in plot_results(args.out):
            print(f"plot written to {f}")
    return 1 if summary.failed else 0


def cmd_plot(args: argparse.Namespace) -> int:
    from rf2.plots import plot_results
    from rf2.results import load_failures

    if not Path(args.results).is_dir():
        raise CLIError(f"{args.results} is not a results directory (the folder `rf2 sweep --out` wrote, holding runs/)")
    for f in plot_results(args.results, args.out, args.metric):
        print(f"plot written to {f}")
    missing = _missing_runs(Path(args.results))
    if missing and missing[1]:
        print(f"{len(missing[1])} of {missing[0]} planned run(s) missing (per sweep.toml; `rf2 sweep` again runs them):")
        for cfg in missing[1]:
            rep = f" (noise floor {cfg.replicate})" if cfg.replicate else ""
            print(f"  {cfg.mapping} | {cfg.optimization} | seed {cfg.seed}{rep}")
    failures = load_failures(args.results)
    if len(failures):
        print(f"{len(failures)} failed run(s) are shown as missing (x):")
        print(failures.to_string(index=False))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from rf2.report import write_report

    print(f"report written to {write_report(args.results, args.out, args.metric)}")
    return 0


def _missing_runs(results: Path):
    """(planned, [configs not finished]) of the sweep recorded in ``results/sweep.toml``, or None."""
    from rf2.store import ResultsStore
    from rf2.sweep import SweepSpec, run_id

    try:
        spec = SweepSpec.from_toml(results / "sweep.toml")
    except (ValueError, OSError):
        return None
    configs = spec.configs()
    done = ResultsStore(results).finished()
    return len(configs), [c for c in configs if run_id(c) not in done]


def cmd_tiers(args: argparse.Namespace) -> int:
    from tier_mapping import PAPER_MAPPINGS, map_tiers
    from tier_mapping.report import report_for

    from rf2.data import load_dataset

    import pandas as pd

    options = _parse_pairs(args.dataset_options or [], "--dataset-options")
    ds = load_dataset(args.dataset, **options)
    mappings = args.mapping or list(PAPER_MAPPINGS)
    reports = [report_for(ds, map_tiers(ds, m, args.n_tiers, seed=args.seed), top_n=args.top) for m in mappings]
    print(f"dataset {ds.name}: {ds.summary()} [{ds.source}]\n")
    if len(reports) == 1:
        print(reports[0].to_text())
    else:
        table = pd.DataFrame([r.summary() for r in reports]).set_index("mapping")
        volume_cols = [c for c in table.columns if c.startswith("train_")]
        print(table.drop(columns=volume_cols).to_string(float_format=lambda x: f"{x:.4g}"))
        volume = pd.concat({r.mapping: r.volume.assign(users=r.users_per_tier) for r in reports if r.volume is not None},
                           names=["mapping", "tier"])
        if len(volume):
            print("\ntraining data volume per tier (events per user: mean and quartiles):")
            volume = volume.rename(columns=lambda c: c.replace("train_events_per_user_", "ev/user ").replace("train_", ""))
            print(volume[["users", *[c for c in volume.columns if c != "users"]]].to_string(
                float_format=lambda x: f"{x:.3g}"))
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        n = len(reports)
        fig, axes = plt.subplots(n, 1, figsize=(8, 2.8 * n), squeeze=False)
        for r, ax in zip(reports, axes[:, 0]):
            r.plot(ax=ax)
        fig.tight_layout()
        Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.plot, dpi=110)
        print(f"\nplot written to {args.plot}")
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    from rf2.data.fetch import fetch
    from rf2.data.loading import download_release
    from rf2.data.movielens import ML100K
    from rf2.data.movielens_1m import ML1M_RELEASE
    from rf2.data.movielens_20m import RELEASES

    releases = {"ml-1m": ML1M_RELEASE, **RELEASES}
    downloadable = sorted(["ml-100k", *releases])
    if args.dataset == "ml-100k":
        path = fetch(ML100K, url=args.url)
        print(f"ml-100k: files verified (sha256) and cached in {path}")
    elif args.dataset in releases:
        path = download_release(releases[args.dataset], url=args.url)
        print(f"{args.dataset}: archive verified (md5 published by GroupLens) and cached in {path}")
    else:
        hint = " (Taobao needs a login: see the README's Data section)" if args.dataset == "taobao" else ""
        raise CLIError(f"no official download for {args.dataset!r}{hint}; downloadable: {downloadable}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from optimizations import PRESETS, USAGE, parse_optimization
    from tier_mapping import PAPER_LEVELS

    from rf2.data import DATASETS, dataset_options
    from rf2.models import MODELS, model_options

    width = max(len(n) for n in [*DATASETS, *MODELS])
    print("datasets:")
    for name in sorted(DATASETS):
        print(f"  {name:{width}s}  options: {json.dumps(dataset_options(name), default=str)}")
    print("models:")
    for name in sorted(MODELS):
        print(f"  {name:{width}s}  options: {json.dumps(model_options(name), default=str)}")
    print("tier mappings:\n"
          "  random                    users sorted by training events, dealt round-robin (the RF² authors')\n"
          "  random:shuffle            equal-size random groups (rf2 0.1)\n"
          "  dirichlet:ALPHA[:OPTS]    Algorithm 1; OPTS in any order: unbalanced, draw=split|bernoulli,\n"
          "                            tie=low|high|random, null=sorted|last\n"
          "  hetero-vlow..hetero-vhigh the paper's names: " + ", ".join(f"{k[7:]} = {v:g}" for k, v in PAPER_LEVELS.items())
          + " (same OPTS)\n"
          "  activity[:R_LOW:..:R_HIGH] by training events, lightest lowest (HeteFedRec's grouping)")
    print("optimizations:")
    for name in sorted(USAGE):
        print(f"  {USAGE[name]}")
    print("presets (what each run does per tier; a ratio outside Table 1 maps to round(32 x r / max) bits,\n"
          "  shown the same way at the start of `rf2 run`):")
    for preset, specs in PRESETS.items():
        print(f"  {preset}:")
        width = max(len(s) for s in specs)
        for spec in specs:
            print(f"    {spec:{width}s}  {parse_optimization(spec).describe()}")
    return 0


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {v}")
    return v


def build_parser() -> argparse.ArgumentParser:
    from rf2 import __version__

    p = argparse.ArgumentParser(prog="rf2", description="Fair federated recommendation simulator (RF²).")
    p.add_argument("--version", action="version", version=f"rf2 {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="train one configuration and print per-tier metrics")
    add_config_flags(r)
    r.add_argument("--out", metavar="CSV", help="write the tidy per-tier result rows here")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    r.add_argument("--threads", type=_positive_int, default=DEFAULT_RUN_THREADS,
                   help="torch threads (default: min(4, cores) = %(default)s; more threads than free cores slows a "
                        "run down many times on a busy machine)")
    r.add_argument("--dataset-cache", metavar="DIR", help=_CACHE_HELP)
    r.set_defaults(func=cmd_run)

    s = sub.add_parser("sweep", help="tier mappings x optimisations x seeds, resumable")
    s.add_argument("--config", metavar="FILE", help="sweep file: [sweep] mappings/optimizations/seeds and [run] settings")
    s.add_argument("--out", required=True, metavar="DIR", help="results directory (re-running skips finished runs)")
    s.add_argument("--mappings", nargs="+", help="override the sweep's tier mappings")
    s.add_argument("--optimizations", nargs="+", help="override the sweep's optimisations (presets: paper-table1)")
    s.add_argument("--seeds", nargs="+", type=int, help="override the sweep's seeds")
    s.add_argument("--noise-floor", dest="noise_floor", action=argparse.BooleanOptionalAction, default=None,
                   help="add `none` retrained with the same tiers per mapping and seed, the noise floor every MDAC is "
                        "judged against (default: the sweep file's noise_floor, true)")
    s.add_argument("--plot", action="store_true", help="draw the figures when done (as `rf2 plot DIR`)")
    s.add_argument("--executor", choices=("local", "inprocess", "ray"), default="local",
                   help="where runs execute: local worker processes (default), this process, or Ray")
    s.add_argument("--workers", type=int, help="parallel runs (default: one per core; ray: CPUs of a local instance)")
    s.add_argument("--threads", type=int, help="torch threads per run (default: cores // workers)")
    s.add_argument("--address", help="ray: cluster address (e.g. auto, ray://head:10001); none starts a local instance")
    s.add_argument("--quiet", action="store_true", help="no progress bars")
    s.add_argument("--dataset-cache", metavar="DIR", help=_CACHE_HELP)
    add_setting_flags(s.add_argument_group("base run settings (override the sweep file's [run])"),
                      skip=("mapping", "optimization", "seed"))
    s.set_defaults(func=cmd_sweep)

    pl = sub.add_parser("plot", help="figures from a results directory")
    pl.add_argument("results", help="results directory written by `rf2 sweep`")
    pl.add_argument("--out", help="where to write the PNGs (default: RESULTS/plots)")
    pl.add_argument("--metric", default="auc")
    pl.set_defaults(func=cmd_plot)

    rp = sub.add_parser("report", help="one self-contained HTML page for a results directory (to attach to a message)")
    rp.add_argument("results", help="results directory written by `rf2 sweep`")
    rp.add_argument("--out", metavar="FILE", help="where to write the page (default: RESULTS/report.html)")
    rp.add_argument("--metric", default="auc", help="the metric of the figures (the tables show every metric)")
    rp.set_defaults(func=cmd_report)

    t = sub.add_parser("tiers", help="how heterogeneous are the tiers of a mapping")
    t.add_argument("--dataset", default="ml-100k")
    t.add_argument("--dataset-options", nargs="+", metavar="KEY=VALUE")
    t.add_argument("--mapping", nargs="+", help="one or more mappings (default: the paper's six)")
    t.add_argument("--n-tiers", type=int, default=3)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--top", type=_positive_int, default=10, help="top-N items in the report and plot (>= 1)")
    t.add_argument("--plot", metavar="PNG", help="save the Figure-4-style plot here")
    t.set_defaults(func=cmd_tiers)

    d = sub.add_parser("download", help="download a dataset (official source, sha256-checked) into the cache")
    d.add_argument("dataset")
    d.add_argument("--url", help="a mirror of the official archive (same checksums)")
    d.set_defaults(func=cmd_download)

    up = sub.add_parser("upgrade-results", help="upgrade a results directory written by an older rf2")
    up.add_argument("results", help="a results directory (the folder `rf2 sweep --out` wrote); runs made under "
                                    "older defaults are relabelled with them spelled out, so they never mix with new runs")
    up.set_defaults(func=cmd_upgrade)

    ls = sub.add_parser("list", help="what can be named in a config")
    ls.set_defaults(func=cmd_list)
    return p


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is so that it stops like Ctrl-C (clean-ups run)."""


def _on_sigterm(signum, frame):
    raise Terminated()


def _interrupted_message(args: argparse.Namespace, exc: KeyboardInterrupt) -> str:
    how = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
    if args.command == "sweep":
        try:
            from rf2.store import ResultsStore

            n = f"{len(ResultsStore(args.out).finished())} finished run(s)"
        except Exception:  # noqa: BLE001 -- the message must not fail
            n = "finished runs"
        return f"rf2 sweep: {how}; {n} kept in {args.out}; run the same command again to continue"
    if args.command == "run":
        return f"rf2 run: {how}; nothing was written" + (f" to {args.out}" if getattr(args, "out", None) else "")
    return f"rf2 {args.command}: {how}"


def _os_error(exc: OSError) -> str:
    if exc.filename is None:
        return str(exc)
    where = f"{exc.filename} -> {exc.filename2}" if exc.filename2 else f"{exc.filename}"
    return f"{where}: {exc.strerror or exc}"


def check_out_file(out: str, flag: str = "--out") -> Path:
    """Fail now, not after training, if ``out`` cannot be written as a file."""
    path = Path(out)
    if path.is_dir():
        raise CLIError(f"{flag} {path} is a directory; give a file name (e.g. {path / 'rows.csv'})")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CLIError(f"{flag} {path}: cannot create its folder ({_os_error(exc)})") from None
    if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise CLIError(f"{flag} {path}: not writable")
    return path


def main(argv: list[str] | None = None) -> int:
    import signal
    import threading

    parser = build_parser()
    args = parser.parse_args(argv)
    old_term = None
    if threading.current_thread() is threading.main_thread():
        old_term = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return args.func(args)
    except (CLIError, ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"rf2 {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # disk full, read-only or unwritable folder, ...: name the path, no traceback
        print(f"rf2 {args.command}: error: {_os_error(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        print(_interrupted_message(args, exc), file=sys.stderr)
        return 128 + (signal.SIGTERM if isinstance(exc, Terminated) else signal.SIGINT)
    except BrokenPipeError:  # output piped into `head` and closed early
        sys.stderr.close()
        return 0
    finally:
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)


if __name__ == "__main__":
    sys.exit(main())
