"""What does loading a full-size dataset cost? (Time and peak memory; behaviour is tested in tests/.)

    python benchmarks/bench_data_loading.py gen ml-1m   [--dir /tmp/rf2-bench-data]
    python benchmarks/bench_data_loading.py gen ml-20m  [--dir /tmp/rf2-bench-data]
    python benchmarks/bench_data_loading.py gen taobao  [--rows 26557961] [--dir ...]
    python benchmarks/bench_data_loading.py load ml-20m [--dir ...] [--history]
    RF2_DATA_DIR=../shared/data python benchmarks/bench_data_loading.py load ml-1m-implicit
    python benchmarks/bench_data_loading.py load synthetic --options '{"n_users": 138000, "n_items": 27000, "events_per_user": 230}' --cache /tmp/rf2-cache

``gen`` writes synthetic files of the real size in the exact original format (MovieLens-1M:
1,000,209 ratings, 6,040 users, 3,883 movies; MovieLens-20M:
20,000,263 ratings, 138,493 users, 27,278 movies; Taobao: 26,557,961 impressions, 1,141,729 users,
846,811 ads) into ``--dir`` (default ``/tmp/rf2-bench-data``, never the repository: the real data
may not be redistributed and these files are 0.5-1 GB). ``load`` runs ``load_dataset`` in a fresh
process (``--dir`` becomes ``$RF2_DATA_DIR`` unless it is already set) and reports the wall time
and the process's peak RSS (``ru_maxrss``); the time to import rf2 (torch) is reported apart.
``--history`` also builds the click history index and encodes one 4,096-event batch, the first
thing a simulation does. ``--cache DIR`` loads twice through the dataset cache in ``DIR`` (the first
load writes it, the second memory-maps it; only cacheable datasets, today ``synthetic``).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

DEFAULT_DIR = "/tmp/rf2-bench-data"


# -- generators -----------------------------------------------------------------------------------------------
def _counts(rng, n_users: int, total: int, minimum: int, cap: int, sigma: float) -> np.ndarray:
    w = rng.lognormal(0.0, sigma, n_users)
    extra = rng.multinomial(total - minimum * n_users, w / w.sum())
    counts = np.minimum(minimum + extra, cap)
    short = total - counts.sum()
    while short > 0:  # give what the cap removed to users below it
        room = np.flatnonzero(counts < cap)
        add = rng.choice(room, min(short, room.size), replace=False)
        counts[add] += 1
        short = total - counts.sum()
    return counts


def _distinct_items(rng, counts: np.ndarray, n_items: int, zipf: float) -> tuple[np.ndarray, np.ndarray]:
    """For each user u, counts[u] distinct items drawn with a power-law popularity: heavy users by
    weighted sampling without replacement (smallest ``Exp(1) / weight`` keys), the others by
    drawing with replacement and topping up until they have enough distinct items."""
    pop = (rng.permutation(n_items) + 1.0) ** -zipf
    cdf = np.cumsum(pop) / pop.sum()
    heavy = np.flatnonzero(counts > n_items // 20)
    parts_u, parts_i = [], []
    for s in range(0, heavy.size, 256):
        block = heavy[s:s + 256]
        keys = rng.exponential(size=(block.size, n_items)) / pop
        order = np.argsort(keys, axis=1)
        for row, u in enumerate(block):
            parts_u.append(np.full(counts[u], u, dtype=np.int64))
            parts_i.append(order[row, : counts[u]].astype(np.int64))
    light = counts.copy()
    light[heavy] = 0
    keys = np.zeros(0, dtype=np.int64)
    need = light.astype(np.int64)
    while need.sum() > 0:
        users = np.repeat(np.arange(counts.size, dtype=np.int64), np.where(need > 0, np.ceil(need * 1.3).astype(np.int64) + 2, 0))
        items = np.minimum(np.searchsorted(cdf, rng.random(users.size), side="right"), n_items - 1)
        keys = np.unique(np.concatenate([keys, users * n_items + items]))
        u = keys // n_items
        have = np.bincount(u, minlength=counts.size)
        if (have > light).any():  # keep a random light[u] of each user's items
            prio = rng.random(keys.size)
            order = np.lexsort((prio, u))
            start = np.concatenate([[0], np.cumsum(have)[:-1]])
            rank = np.arange(keys.size) - start[u[order]]
            keys = np.sort(keys[order][rank < light[u[order]]])
        need = np.maximum(light - np.bincount(keys // n_items, minlength=counts.size), 0)
    user = np.concatenate([keys // n_items] + parts_u)
    item = np.concatenate([keys % n_items] + parts_i)
    order = np.lexsort((item, user))
    return user[order], item[order]


def gen_ml20m(folder: Path, seed: int = 0) -> None:
    n_users, n_movies, n_ratings = 138_493, 27_278, 20_000_263
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    movie_ids = np.sort(rng.choice(np.arange(1, 131_263), n_movies, replace=False))
    movie_ids[-1] = 131_262
    genres = ["Action", "Adventure", "Animation", "Children", "Comedy", "Crime", "Documentary", "Drama", "Fantasy",
              "Film-Noir", "Horror", "IMAX", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western"]
    with open(folder / "movies.csv", "w", encoding="utf-8") as fh:
        fh.write("movieId,title,genres\n")
        for k, m in enumerate(movie_ids):
            n_g = int(rng.integers(0, 4))
            g = "|".join(sorted(rng.choice(genres, n_g, replace=False))) if n_g else "(no genres listed)"
            title = f'"Movie {m}, The ({1900 + k % 115})"' if k % 7 == 0 else f"Movie {m} ({1900 + k % 115})"
            fh.write(f"{m},{title},{g}\n")
    counts = _counts(rng, n_users, n_ratings, 20, n_movies, 1.0)
    user, item = _distinct_items(rng, counts, n_movies, 0.8)
    stars = np.arange(1, 11) / 2.0
    p = np.array([1.2, 3.4, 3.3, 7.2, 4.4, 13.6, 11.3, 27.7, 7.5, 20.4])
    rating = rng.choice(stars, user.size, p=p / p.sum())
    start = rng.integers(789_652_009, 1_427_784_002, n_users)
    ts = np.minimum(start[user] + rng.integers(0, 40_000_000, user.size), 1_427_784_002)
    df = pd.DataFrame({"userId": user + 1, "movieId": movie_ids[item], "rating": rating, "timestamp": ts})
    with open(folder / "ratings.csv", "w") as fh:
        fh.write("userId,movieId,rating,timestamp\n")
        for s in range(0, len(df), 2_000_000):
            df.iloc[s:s + 2_000_000].to_csv(fh, header=False, index=False, float_format="%.1f")
    print(f"wrote {len(df):,} ratings of {n_users:,} users on {n_movies:,} movies to {folder}")


def gen_ml1m(folder: Path, seed: int = 0) -> None:
    n_users, n_movies, n_ratings = 6_040, 3_883, 1_000_209
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    genres = ["Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama", "Fantasy",
              "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western"]
    movie_ids = np.sort(rng.choice(np.arange(1, 3953), n_movies, replace=False))
    with open(folder / "movies.dat", "w", encoding="latin-1") as fh:
        for m in movie_ids:
            fh.write(f"{m}::Movie {m}: the Sequel ({1919 + m % 81})::{'|'.join(rng.choice(genres, 2, replace=False))}\n")
    ages, occupations = (1, 18, 25, 35, 45, 50, 56), 21
    with open(folder / "users.dat", "w", encoding="latin-1") as fh:
        for u in range(1, n_users + 1):
            fh.write(f"{u}::{'MF'[u % 2]}::{ages[u % 7]}::{u % occupations}::{10000 + u}\n")
    counts = _counts(rng, n_users, n_ratings, 20, n_movies, 1.0)
    user, item = _distinct_items(rng, counts, n_movies, 0.8)
    rating = rng.integers(1, 6, user.size)
    ts = 956_703_932 + rng.integers(0, 90_000_000, user.size)
    lines = [f"{u}::{m}::{r}::{t}\n" for u, m, r, t in zip((user + 1).tolist(), movie_ids[item].tolist(), rating.tolist(), ts.tolist())]
    (folder / "ratings.dat").write_text("".join(lines), encoding="latin-1")
    print(f"wrote {user.size:,} ratings of {n_users:,} users on {n_movies:,} movies to {folder}")


def gen_taobao(folder: Path, rows: int = 26_557_961, seed: int = 0) -> None:
    n_users, n_ads, n_profiles = 1_141_729, 846_811, 1_061_768
    scale = rows / 26_557_961
    n_users = max(int(n_users * scale), 10)
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    ad_ids = rng.choice(np.arange(1, 846_812), n_ads, replace=False)
    ads = pd.DataFrame({
        "adgroup_id": ad_ids,
        "cate_id": rng.integers(1, 12_961, n_ads),
        "campaign_id": rng.integers(1, 423_437, n_ads),
        "customer": rng.integers(1, 255_876, n_ads),
        "brand": pd.array(np.where(rng.random(n_ads) < 0.29, -1, rng.integers(1, 461_498, n_ads))),
        "price": np.round(np.exp(rng.normal(4.5, 1.5, n_ads)), 2),
    })
    brand = ads["brand"].astype(str).where(ads["brand"] >= 0, "NULL")
    ads.assign(brand=brand).to_csv(folder / "ad_feature.csv", index=False)
    user_ids = rng.choice(np.arange(1, 1_141_730), n_users, replace=False)
    n_prof = min(int(n_profiles * scale) or 1, n_users)
    prof_users = rng.choice(user_ids, n_prof, replace=False)
    prof = pd.DataFrame({
        "userid": prof_users, "cms_segid": rng.integers(0, 97, n_prof), "cms_group_id": rng.integers(0, 13, n_prof),
        "final_gender_code": rng.integers(1, 3, n_prof), "age_level": rng.integers(0, 7, n_prof),
        "pvalue_level": rng.integers(1, 4, n_prof).astype(float), "shopping_level": rng.integers(1, 4, n_prof),
        "occupation": rng.integers(0, 2, n_prof), "new_user_class_level": rng.integers(1, 5, n_prof).astype(float),
    })
    prof.loc[rng.random(n_prof) < 0.54, "pvalue_level"] = np.nan
    prof.loc[rng.random(n_prof) < 0.33, "new_user_class_level"] = np.nan
    with open(folder / "user_profile.csv", "w") as fh:
        fh.write("userid,cms_segid,cms_group_id,final_gender_code,age_level,pvalue_level,shopping_level,occupation,"
                 "new_user_class_level \n")  # the original header ends with a space
        prof.to_csv(fh, header=False, index=False, float_format="%.0f")
    counts = _counts(rng, n_users, rows, 1, 10_000, 1.2)
    user = np.repeat(user_ids, counts)
    pop = (rng.permutation(n_ads) + 1.0) ** -0.9
    cdf = np.cumsum(pop) / pop.sum()
    ad = ad_ids[np.minimum(np.searchsorted(cdf, rng.random(rows), side="right"), n_ads - 1)]
    ts = 1_494_000_000 + rng.integers(0, 8 * 86400, rows)
    clk = (rng.random(rows) < 0.0514).astype(np.int8)
    pid = np.where(rng.random(rows) < 0.6, "430548_1007", "430539_1007")
    perm = rng.permutation(rows)  # the original file is not in time order
    df = pd.DataFrame({"user": user[perm], "time_stamp": ts[perm], "adgroup_id": ad[perm], "pid": pid[perm],
                       "nonclk": 1 - clk[perm], "clk": clk[perm]})
    with open(folder / "raw_sample.csv", "w") as fh:
        fh.write("user,time_stamp,adgroup_id,pid,nonclk,clk\n")
        for s in range(0, rows, 2_000_000):
            df.iloc[s:s + 2_000_000].to_csv(fh, header=False, index=False)
    print(f"wrote {rows:,} impressions of {n_users:,} users on {n_ads:,} ads to {folder}")


# -- measurement ----------------------------------------------------------------------------------------------
_CHILD = r"""
import json, resource, sys, time, warnings
warnings.simplefilter("ignore")
t0 = time.perf_counter()
from rf2.data import FeatureEncoder
from rf2.data.cache import load
import numpy as np
t1 = time.perf_counter()
rss_import = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
ds = load(sys.argv[1], json.loads(sys.argv[2]))  # through $RF2_DATASET_CACHE when set
t2 = time.perf_counter()
out = {"import_s": t1 - t0, "load_s": t2 - t1, "rss_after_import_mb": rss_import,
       "peak_rss_after_load_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
       "summary": ds.summary(), "events_mb": ds.events.memory_usage(deep=True).sum() / 2**20}
if sys.argv[3] == "1":
    FeatureEncoder(ds).encode_numpy(np.arange(min(4096, ds.n_events)))
    out["history_and_batch_s"] = time.perf_counter() - t2
out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(out))
"""


def measure(name: str, folder: Path, history: bool, options: dict, cache: str | None = None) -> dict:
    env = dict(os.environ)
    env.setdefault("RF2_DATA_DIR", str(folder))
    if cache:
        env["RF2_DATASET_CACHE"] = cache
    t = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", _CHILD, name, json.dumps(options), "1" if history else "0"],
                         env=env, capture_output=True, text=True)
    if res.returncode:
        raise SystemExit(res.stderr)
    out = json.loads(res.stdout.strip().splitlines()[-1])
    out["wall_s"] = time.perf_counter() - t
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("action", choices=["gen", "load"])
    p.add_argument("dataset")
    p.add_argument("--dir", default=DEFAULT_DIR)
    p.add_argument("--rows", type=int, default=26_557_961, help="taobao: impressions to generate")
    p.add_argument("--history", action="store_true", help="load: also build the click history and encode a batch")
    p.add_argument("--options", default="{}", help="load: dataset options as JSON (e.g. '{\"verify\": false}')")
    p.add_argument("--cache", metavar="DIR", help="load: through the dataset cache in DIR (rf2/data/cache.py), twice: "
                   "the first load generates and writes it, the second maps it")
    a = p.parse_args()
    root = Path(a.dir)
    if a.action == "gen":
        if a.dataset == "ml-1m":
            gen_ml1m(root / "ml-1m")
        elif a.dataset in ("ml-20m", "ml-25m"):
            gen_ml20m(root / a.dataset)
        elif a.dataset == "taobao":
            gen_taobao(root / "taobao", rows=a.rows)
        else:
            raise SystemExit(f"no generator for {a.dataset!r}")
        return
    for which in (("first (writes the cache)", "second (maps the cache)") if a.cache else ("",)):
        out = measure(a.dataset, root, a.history, json.loads(a.options), a.cache)
        s = out["summary"]
        print(f"{a.dataset} {which}: {s['users']:,} users, {s['items']:,} items, {s['events']:,} events")
        print(f"  import rf2 {out['import_s']:.1f}s ({out['rss_after_import_mb']:.0f} MB); load {out['load_s']:.1f}s; "
              f"peak RSS after load {out['peak_rss_after_load_mb']:.0f} MB; event table {out['events_mb']:.0f} MB")
        if "history_and_batch_s" in out:
            print(f"  click history + first batch {out['history_and_batch_s']:.1f}s; peak RSS {out['peak_rss_mb']:.0f} MB")


if __name__ == "__main__":
    main()
