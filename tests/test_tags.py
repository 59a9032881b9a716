"""plausible_tags: strict thresholds per tag, rating kept whole, order by probability with ties by column."""
from __future__ import annotations

import numpy as np

from illust2vec.models.tags import TagTable, plausible_tags


def _expected(row, names, cats, thr):
    """A plain-Python statement of the rule, independent of the numpy implementation."""
    out = {}
    for cat in dict.fromkeys(cats):
        cols = [c for c in range(len(names)) if cats[c] == cat and (cat == "rating" or row[c] > thr[c])]
        cols.sort(key=lambda c: -float(row[c]))  # sort is stable: ties keep column order
        out[cat] = [(names[c], float(row[c])) for c in cols]
    return out


def test_plausible_tags_match_the_rule_on_random_rows_with_ties():
    rng = np.random.default_rng(3)
    cats = ["general"] * 40 + ["character"] * 25 + ["copyright"] * 20 + ["rating"] * 3
    names = [f"t{i}" for i in range(len(cats))]
    table = TagTable(tuple(names), tuple(cats))
    prob = rng.random((50, len(cats))).astype(np.float32)
    prob[rng.random(prob.shape) < 0.2] = np.float32(0.625)  # many ties, some exactly at a threshold
    thr = rng.choice([0.25, 0.5, 0.625], size=len(cats))
    got = plausible_tags(prob, table, thr)
    assert got == [_expected(prob[i], names, cats, thr) for i in range(len(prob))]
    assert got[:7] == [plausible_tags(prob[i : i + 1], table, thr)[0] for i in range(7)]  # batch = row by row
    assert all(p > thr[names.index(n)] for r in got for n, p in r["general"])  # strictly above
    assert all(len(r["rating"]) == 3 for r in got)
