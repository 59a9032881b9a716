"""Caption files: the kohya-style options, and captions that never overwrite or merge what they should not."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import ANIME36, I2V_FIXTURES
from illust2vec.datasets.captions import (
    CaptionError, CaptionOptions, caption_batch, make_caption, parse_replacements, plan_captions, write_caption,
)
from illust2vec.errors import Illust2VecError

TAG = ["--weights", str(I2V_FIXTURES / "tag_w8_v1.caffemodel"), "--tag-list", str(I2V_FIXTURES / "tag_list.json")]

RESULT = {
    "general": [("long_hair", 0.95), ("white_background", 0.9), ("smile", 0.6), ("^_^", 0.55), ("1girl", 0.5)],
    "character": [("hatsune_miku_(vocaloid)", 0.92)],
    "copyright": [("vocaloid", 0.7)],
    "rating": [("questionable", 0.1), ("safe", 0.8), ("explicit", 0.1)],
}


def test_rules_one_by_one():
    assert make_caption(RESULT) == "hatsune miku (vocaloid), vocaloid, long hair, white background, smile, ^_^, 1girl"
    opts = CaptionOptions(underscores=True, rating="first", separator=",")
    assert make_caption(RESULT, opts).split(",")[:3] == ["safe", "hatsune_miku_(vocaloid)", "vocaloid"]
    # character expansion, then the repeat of "vocaloid" from the copyright category drops out
    words = make_caption(RESULT, CaptionOptions(expand_characters=True)).split(", ")
    assert words[:3] == ["hatsune miku", "vocaloid", "long hair"] and words.count("vocaloid") == 1
    # wildcards, compared with underscores and spaces alike
    assert "white background" not in make_caption(RESULT, CaptionOptions(exclude=("*_background",)))
    assert "long hair" not in make_caption(RESULT, CaptionOptions(exclude=("LONG HAIR",)))
    # always-first: present tags in the given order; absent ones are not added
    words = make_caption(RESULT, CaptionOptions(always_first=("1girl", "smile", "1boy"))).split(", ")
    assert words[:2] == ["1girl", "smile"] and "1boy" not in words
    # rating last beats nothing; always-first and rating first: the rating leads
    words = make_caption(RESULT, CaptionOptions(always_first=("1girl",), rating="first")).split(", ")
    assert words[:2] == ["safe", "1girl"]
    assert make_caption(RESULT, CaptionOptions(rating="last")).endswith(", safe")
    # replacement (an empty new name drops the tag), applied before exclusion
    words = make_caption(RESULT, CaptionOptions(replace=parse_replacements(["smile=grin", "1girl="]))).split(", ")
    assert "grin" in words and "smile" not in words and "1girl" not in words
    assert "grin" not in make_caption(RESULT, CaptionOptions(replace=(("smile", "grin"),), exclude=("gr*",)))
    # orders
    assert make_caption(RESULT, CaptionOptions(order="confidence")).split(", ")[:2] == ["long hair", "hatsune miku (vocaloid)"]
    alpha = make_caption(RESULT, CaptionOptions(order="alphabetical")).split(", ")
    assert alpha == sorted(alpha, key=str.lower)
    # weights and escapes
    text = make_caption({"general": [("smile", 0.914)]}, CaptionOptions(weights=True))
    assert text == "(smile:0.91)"
    text = make_caption(RESULT, CaptionOptions(escape_parentheses=True, categories=("character",)))
    assert text.startswith(r"hatsune miku \(vocaloid\)")
    # the emoticon keeps its underscore in both forms
    assert "^_^" in make_caption(RESULT).split(", ") and "^_^" in make_caption(RESULT, CaptionOptions(underscores=True))


def test_a_json_record_is_a_result():
    record = {"path": "x.jpg", "tags": {c: {t: p for t, p in pairs} for c, pairs in RESULT.items()}}
    assert make_caption(record, CaptionOptions(rating="last")) == make_caption(RESULT, CaptionOptions(rating="last"))


def test_bad_options_are_refused():
    with pytest.raises(Illust2VecError):
        CaptionOptions(rating="middle")  # type: ignore[arg-type]
    with pytest.raises(Illust2VecError):
        CaptionOptions(separator="\n")
    with pytest.raises(Illust2VecError, match="OLD=NEW"):
        parse_replacements(["smile"])


@pytest.mark.parametrize("ext", ["jpg", ".PNG", "webp", ".json", ".npy"])
def test_extensions_that_name_images_or_data_are_refused(tmp_path, ext):
    with pytest.raises(Illust2VecError, match="refused"):
        plan_captions([tmp_path / "a.jpg"], CaptionOptions(extension=ext if ext.startswith(".") else "." + ext))


def test_plan_reports_every_shared_caption(tmp_path):
    images = [tmp_path / "x.jpg", tmp_path / "x.png", tmp_path / "y.jpg", tmp_path / "z.gif", tmp_path / "z.webp",
              tmp_path / "sub" / "x.jpg"]
    plan = plan_captions(images, CaptionOptions())
    assert {c.target.name: sorted(p.name for p in c.images) for c in plan.clashes} == {
        "x.txt": ["x.jpg", "x.png"], "z.txt": ["z.gif", "z.webp"]}
    assert sorted(plan.targets) == [tmp_path / "sub" / "x.jpg", tmp_path / "y.jpg"]
    distinct = plan_captions(images, CaptionOptions(naming="name"))
    assert not distinct.clashes and distinct.targets[tmp_path / "x.png"] == tmp_path / "x.png.txt"
    # an input that is itself the caption path (the user named a .txt file as input)
    plan = plan_captions([tmp_path / "a.jpg", tmp_path / "a.txt", tmp_path / "b.jpg"], CaptionOptions())
    assert [(c.is_input, c.target.name) for c in plan.clashes] == [(True, "a.txt")]
    assert list(plan.targets) == [tmp_path / "b.jpg"]


def test_write_caption_modes_and_faults(tmp_path):
    target = tmp_path / "a.txt"
    assert write_caption(target, "smile, hat") == "written"
    assert write_caption(target, "hat, cat", CaptionOptions(mode="append")) == "appended"
    assert target.read_text() == "smile, hat, cat\n"
    write_caption(target, "Cat, blue eyes", CaptionOptions(mode="append"))
    write_caption(target, "blue_eyes", CaptionOptions(mode="append"))
    assert target.read_text() == "smile, hat, cat, blue eyes\n"
    assert write_caption(target, "x", CaptionOptions(mode="skip")) == "skipped"
    # custom separator: the old tags are split on it
    target.write_text("smile | hat\n")
    write_caption(target, "hat | cat", CaptionOptions(mode="append", separator=" | "))
    assert target.read_text() == "smile | hat | cat\n"
    # Latin-1 caption + append: one clear error, the file byte-identical
    latin = tmp_path / "latin.txt"
    latin.write_bytes("café, smile".encode("latin-1"))
    with pytest.raises(CaptionError, match="not UTF-8") as info:
        write_caption(latin, "hat", CaptionOptions(mode="append"))
    assert "\n" not in str(info.value) and str(info.value).startswith(str(latin))
    assert latin.read_bytes() == "café, smile".encode("latin-1")
    # overwrite still replaces it (the user asked for it)
    write_caption(latin, "hat")
    assert latin.read_text() == "hat\n"
    # a directory where the caption goes
    (tmp_path / "d.txt").mkdir()
    with pytest.raises(CaptionError, match="is a directory"):
        write_caption(tmp_path / "d.txt", "hat")
    # a binary file is not a caption: never overwritten
    blob = tmp_path / "b.txt"
    blob.write_bytes(b"\x89PNG\r\n\x1a\n\0\0\0")
    with pytest.raises(CaptionError, match="not a text file"):
        write_caption(blob, "hat")
    assert blob.read_bytes() == b"\x89PNG\r\n\x1a\n\0\0\0"


def test_captions_in_one_batch_appear_at_commit_with_the_same_rules(tmp_path):
    old = tmp_path / "old.txt"
    old.write_text("smile, hat\n")
    errors: list[CaptionError] = []
    with caption_batch(errors.append) as batch:
        assert write_caption(tmp_path / "new.txt", "smile", batch=batch) == "written"
        assert write_caption(old, "hat, cat", CaptionOptions(mode="append"), batch=batch) == "appended"
        (tmp_path / "late.txt").mkdir()  # turns into a directory after the check: fails at commit
        batch.write(tmp_path / "late.txt", "hat\n")
        assert not (tmp_path / "new.txt").exists() and old.read_text() == "smile, hat\n"  # nothing visible yet
    assert (tmp_path / "new.txt").read_text() == "smile\n" and old.read_text() == "smile, hat, cat\n"
    assert [str(e) for e in errors] == [f"{tmp_path / 'late.txt'}: cannot write the caption (Is a directory)"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["late.txt", "new.txt", "old.txt"]


# --------------------------------------------------------------------------- the CLI, in process


@pytest.fixture()
def run_cli(model_store, monkeypatch, capsys):
    from illust2vec.cli.main import main

    monkeypatch.setenv("ILLUST2VEC_HOME", str(model_store))
    monkeypatch.setenv("ILLUST2VEC_OFFLINE", "1")

    def run(*args):
        capsys.readouterr()
        rc = main([*map(str, args), *TAG, "-q"])
        out = capsys.readouterr()
        return rc, out.out, out.err
    return run


@pytest.fixture()
def pictures(tmp_path):
    if not ANIME36.is_dir():
        pytest.skip(f"shared data not found: {ANIME36}")
    root = tmp_path / "pics"
    root.mkdir()
    for i in range(6):
        shutil.copy(ANIME36 / f"{i:02d}.jpg", root / f"{i:02d}.jpg")
    return root


def _expected(record, always_first, replace, separator):
    """The acceptance rule, written out independently: categories, replace, always-first, rating last."""
    tags = record["tags"]
    words = []
    for cat in ("character", "copyright", "general"):
        for tag in tags.get(cat, {}):  # the JSON keeps each category most probable first
            new = replace.get(tag, tag)
            if new not in words:
                words.append(new)
    first = [t for t in always_first if t in words]
    words = first + [w for w in words if w not in first]
    words.append(max(tags["rating"].items(), key=lambda kv: kv[1])[0])
    return separator.join(words)


def test_cli_captions_match_the_json_by_the_rules(run_cli, pictures, tmp_path):
    rc, out, err = run_cli("tag", pictures, "--threshold", "0.3", "--format", "json")
    assert rc == 0, err
    records = json.loads(out)
    general = [t for r in records for t in r["tags"]["general"]]
    common = max(set(general), key=general.count)
    last_of_first = list(records[0]["tags"]["general"])[-1]
    always_first = [last_of_first, common]
    replace = {common: "REPLACED tag"}
    always_first = [replace.get(t, t) for t in always_first]
    rc, _, err = run_cli("tag", pictures, "--threshold", "0.3", "--captions", "--caption-dir", tmp_path / "caps",
                         "--always-first", ", ".join(always_first), "--replace", f"{common}=REPLACED tag",
                         "--separator", " | ", "--rating", "last", "-o", tmp_path / "same.json")
    assert rc == 0, err
    for record in records:
        caption = (tmp_path / "caps" / (Path(record["path"]).stem + ".txt")).read_text()
        assert caption == _expected(record, always_first, replace, " | ") + "\n"
    assert any(c.read_text().startswith("REPLACED tag") for c in (tmp_path / "caps").iterdir())


def test_cli_refuses_image_extension_before_any_change(run_cli, pictures):
    before = {p.name: p.read_bytes() for p in pictures.iterdir()}
    rc, _, err = run_cli("tag", pictures, "--captions", "--caption-ext", "jpg")
    assert rc == 1 and "refused" in err and "Traceback" not in err
    assert {p.name: p.read_bytes() for p in pictures.iterdir()} == before


def test_cli_same_stem_gets_no_shared_caption(run_cli, pictures):
    from PIL import Image

    Image.open(pictures / "00.jpg").save(pictures / "00.png")
    (pictures / "01.txt").write_text("hand-written, keep")
    rc, _, err = run_cli("tag", pictures, "--captions", "--if-exists", "append")
    assert rc == 1
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 2 and all("00.txt" in line and "--caption-name name" in line for line in lines)
    assert not (pictures / "00.txt").exists()  # neither image wrote it, nothing merged
    assert (pictures / "01.txt").read_text().startswith("hand-written, keep, ")
    rc, _, err = run_cli("tag", pictures, "--captions", "--caption-name", "name")
    assert rc == 0, err
    assert (pictures / "00.jpg.txt").is_file() and (pictures / "00.png.txt").is_file()


def test_cli_caption_faults_are_one_line_each_and_the_run_goes_on(run_cli, pictures):
    (pictures / "00.txt").mkdir()
    (pictures / "01.txt").write_bytes("café".encode("latin-1"))
    rc, _, err = run_cli("tag", pictures, "--captions", "--if-exists", "append")
    assert rc == 1 and "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 2
    assert "00.txt: is a directory" in lines[0] and "01.txt: the existing caption is not UTF-8" in lines[1]
    assert (pictures / "01.txt").read_bytes() == "café".encode("latin-1")
    assert all((pictures / f"{i:02d}.txt").is_file() for i in range(2, 6))


def test_cli_no_recursive(run_cli, pictures):
    (pictures / "sub").mkdir()
    shutil.copy(pictures / "00.jpg", pictures / "sub" / "deep.jpg")
    rc, _, err = run_cli("tag", pictures, "--captions", "--no-recursive")
    assert rc == 0, err
    assert not (pictures / "sub" / "deep.txt").exists() and (pictures / "00.txt").exists()


# -- rule sets of other tools (tests/test_kohya_parity.py compares whole runs byte for byte) -------------


def test_kohya_rules_edge_cases() -> None:
    from illust2vec.datasets.caption_kohya import expand_character, parse_kohya_replacements
    from illust2vec.datasets.captions import CaptionOptions, make_caption
    from illust2vec.models.tags import TagTable

    table = TagTable(("general", "sensitive", "1girl", "(o)_(o)", "^_^", "1boy", "name (costume) (series)"),
                     ("rating", "rating", "general", "general", "general", "general", "character"))
    result = {"rating": [("sensitive", 0.6), ("general", 0.4)], "general": [("^_^", 0.9), ("1boy", 0.8),
              ("1girl", 0.7), ("(o)_(o)", 0.5)], "character": [("name (costume) (series)", 0.9)]}
    kohya = CaptionOptions.defaults_for
    assert make_caption(result, kohya("kohya"), table) == "1girl, (o)_(o), ^_^, 1boy, name_(costume)_(series)"
    # --remove_underscore: by length only; expansion keeps NAME<sep>SERIES as one tag
    assert make_caption(result, kohya("kohya", underscores=False, expand_characters=True, separator=" | "),
                        table) == "1girl | (o) (o) | ^_^ | 1boy | name (costume) | series"
    # always-first: the last listed ends up first, before the rating; entries are stripped (documented form)
    assert make_caption(result, kohya("kohya", always_first=("1girl", " 1boy"), rating="first"),
                        table).startswith("1boy, 1girl, sensitive, ")
    assert expand_character("a_(b)_(c)", ", ") == "a_(b), c"
    assert parse_kohya_replacements("a,b;c\\,d,e\\;f;") == (("a", "b"), ("c,d", "e;f"))
    with pytest.raises(Illust2VecError, match="source,target"):
        parse_kohya_replacements("a,b,c")
    assert CaptionOptions.defaults_for("kohya", separator="  ").list_separator == "  "
    with pytest.raises(Illust2VecError, match="table=model.tags"):
        make_caption(result, kohya("kohya"))


def test_webui_rules() -> None:
    from illust2vec.datasets.captions import CaptionOptions, appended_caption, make_caption
    from illust2vec.models.tags import TagTable

    table = TagTable(("general", "a_b", "^_^", "c (d)", "x"), ("rating", "general", "general", "character", "general"))
    result = {"rating": [("general", 0.9)], "general": [("a b", 0.5), ("^_^", 0.5), ("x", 0.75)],
              "character": [("c (d)", 0.8999999761581421)]}
    webui = CaptionOptions.defaults_for
    assert make_caption(result, webui("wd14-webui"), table) == "c (d), x, a b, ^_^"  # ties in file order, no rating
    assert make_caption(result, webui("wd14-webui", escape_parentheses=True, weights=True, underscores=True,
                                      exclude=("a_b",)), table) == "(c_\\(d\\):0.8999999761581421), (x:0.75), (^_^:0.5)"
    opts = webui("wd14-webui")
    assert opts.mode == "skip" and not opts.final_newline
    assert appended_caption(" old, tags ", "new", webui("wd14-webui")) == "old, tags, new"
