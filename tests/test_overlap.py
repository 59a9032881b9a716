"""drop_overlap: the same tags dropped as dghs-imgutils' drop_overlap_tags (recorded cases), library and CLI."""
from __future__ import annotations

import json

import pytest

from illust2vec.models.overlap import (
    OVERLAP_DATASET, OVERLAP_FILE, drop_overlap, drop_overlap_result, find_overlap_table, overlap_table,
    read_overlap_table,
)
from test_pixai import ORACLE, ODD, pixai_cache, pixai_files  # noqa: F401 (fixtures)
from test_hub import hub_env, prefill  # noqa: F401 (fixture)
from conftest import ANIME36

TABLE = ORACLE["overlap_table"]


@pytest.mark.parametrize("case", ORACLE["overlap_cases"], ids=lambda c: ",".join(c["tags"])[:40] or "empty")
def test_equal_to_imgutils(case) -> None:
    assert drop_overlap(list(case["tags"]), TABLE) == case["list"]
    scored = {t: round(0.9 - 0.05 * i, 2) for i, t in enumerate(case["tags"])}
    assert [list(kv) for kv in drop_overlap(scored, TABLE).items()] == case["mapping"]


def test_substring_rule_alone_and_result_form() -> None:
    assert drop_overlap(["hair", "chair", "sky", "blue sky", "1girl"]) == ["chair", "blue sky", "1girl"]
    result = {"general": [("long hair", 0.9), ("very long hair", 0.6)], "character": [("rin", 0.9), ("kagamine rin", 0.8)],
              "rating": [("general", 0.7)]}
    out = drop_overlap_result(result)
    assert out["general"] == [("very long hair", 0.6)]
    assert out["character"] == result["character"] and out["rating"] == result["rating"]  # general only, as imgutils


def test_table_files_and_the_hub_cache(hub_env, tmp_path) -> None:  # noqa: F811
    from illust2vec.errors import ModelFormatError

    assert find_overlap_table() is None and overlap_table(True) is None and overlap_table(False) is None
    bad = tmp_path / "bad.json"
    bad.write_text('["not", "a", "table"]')
    with pytest.raises(ModelFormatError, match="bad.json"):
        read_overlap_table(bad)
    root = hub_env["cache"] / ("datasets--" + OVERLAP_DATASET.replace("/", "--"))
    snap = root / "snapshots" / ("a" * 40)
    snap.mkdir(parents=True)
    (snap / OVERLAP_FILE).write_text(json.dumps(TABLE))
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text("a" * 40)
    assert find_overlap_table() == snap / OVERLAP_FILE
    assert overlap_table("auto") == {k: tuple(v) for k, v in TABLE.items()}


def test_library_keyword_and_cli_option(pixai_cache, tmp_path, capsys) -> None:  # noqa: F811
    from illust2vec.cli.main import main
    from illust2vec.models.loading import load_model

    table_file = tmp_path / "overlap.json"
    table_file.write_text(json.dumps(TABLE))
    pics = [ANIME36 / "03.jpg", ODD / "odd_grey.png"]
    keys = ["anime36/03.jpg", "odd/odd_grey.png"]
    model = load_model("pixai-v0.9", task="tag")
    got = model.estimate_plausible_tags(pics, threshold=None, drop_overlap=TABLE)
    for result, key in zip(got, keys):
        general = [t for t in ORACLE["pictures"][key]["tags_default"] if model.tags.categories[model.tags.index(t)]
                   == "general"]
        assert sorted(t for t, _ in result["general"]) == sorted(drop_overlap(general, TABLE))
        assert "long_hair" not in dict(result["general"]) or "very_long_hair" not in dict(result["general"])
    out = tmp_path / "tags.jsonl"
    assert main(["tag", *map(str, pics), "-m", "pixai-v0.9", "--drop-overlap", str(table_file), "-o", str(out),
                 "-q"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [sorted(r["tags"]["general"]) for r in rows] == [sorted(t for t, _ in g["general"]) for g in got]
    capsys.readouterr()
    assert main(["tag", *map(str, pics), "-m", "pixai-v0.9", "--drop-overlap", "-o", str(out), "-q"]) == 0
    assert "overlap table is not in the Hugging Face cache" in capsys.readouterr().err
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    plain = model.estimate_plausible_tags(pics, threshold=None, drop_overlap=True)
    assert [sorted(r["tags"]["general"]) for r in rows] == [sorted(t for t, _ in g["general"]) for g in plain]
