"""A floor every recommender on HeteFedRec's MovieLens-1M protocol should clear: rank the catalogue
by training-click counts (the same list for every user), score it with rf2's own NDCG@20 /
Recall@20 (:func:`rf2.evaluation.ranking.ranking_at_k`) on the protocol's split
(``ml-1m-implicit`` with ``negatives = 0``: every rating a positive, 80/20 per user), overall and per
size group (``activity:5:3:2``: low = the 50 % of users with the fewest interactions).

    RF2_DATA_DIR=../shared/data python benchmarks/popularity_ml1m.py

Two candidate sets: ``train_clicks`` (rf2's default on implicit data and the paper's §V-B: every
item except the user's training positives) and ``none`` (training positives stay candidates).
"""
from __future__ import annotations

import numpy as np

from rf2.data import load_dataset
from rf2.evaluation.ranking import ranking_at_k, relevant_and_excluded
from tier_mapping import map_tiers


def main() -> None:
    ds = load_dataset("ml-1m-implicit", negatives=0)
    clicks = ds.train_index[ds.label[ds.train_index] == 1]
    popularity = np.bincount(ds.item[clicks], minlength=ds.n_items).astype(np.float64)
    tier = map_tiers(ds, "activity:5:3:2", 3, seed=0).tier
    scores = np.broadcast_to(popularity, (ds.n_users, ds.n_items))
    print("| candidates | NDCG@20 | Recall@20 | NDCG@20 low | mid | high |\n|---|---|---|---|---|---|")
    for exclude in ("train_clicks", "none"):
        (rp, ri), (ep, ei) = relevant_and_excluded(ds, exclude)
        relevant = [ri[rp[u]:rp[u + 1]] for u in range(ds.n_users)]
        excluded = [ei[ep[u]:ep[u + 1]] for u in range(ds.n_users)]
        m = ranking_at_k(scores, relevant, 20, excluded)
        groups = [np.nanmean(m["ndcg"][tier == t]) for t in range(3)]
        print(f"| {exclude} | {np.nanmean(m['ndcg']):.4f} | {np.nanmean(m['recall']):.4f} | "
              + " | ".join(f"{g:.4f}" for g in groups) + " |")


if __name__ == "__main__":
    main()
