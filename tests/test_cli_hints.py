"""The flags people already type and the mistakes they make: kohya-ss spellings, "did you mean",
short missing-model messages, ``models import --as`` all or nothing (issues 25 and 26)."""
from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import pytest

from conftest import SHARED
from kohya_support import ANIME36, REPO, TAGS, write_parity_model

I2V_FIXTURES = SHARED / "fixtures" / "i2v"


def run_cli(*args) -> tuple[int, str, str]:
    from illust2vec.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:  # argparse's usage errors
            code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()


# --------------------------------------------------------------------------- did you mean


def test_unknown_option_gets_the_subcommand_usage_and_a_suggestion() -> None:
    code, _, err = run_cli("tag", "x.png", "--caption-extension", ".txt")
    assert code == 2
    assert err.startswith("usage: illust2vec tag ") and "illust2vec tag: error: unrecognized arguments" in err
    assert "Did you mean --caption_extension, --caption-ext" in err  # one per option, not two spellings
    code, _, err = run_cli("models", "list", "--formt", "json")
    assert code == 2 and "usage: illust2vec models list" in err and "Did you mean --format?" in err


def test_unknown_command_and_choice_get_suggestions() -> None:
    code, _, err = run_cli("tagg", "x.png")
    assert code == 2 and "invalid choice: 'tagg'. Did you mean tag?" in err
    code, _, err = run_cli("models", "lst")
    assert code == 2 and "Did you mean list?" in err
    code, _, err = run_cli("tag", "x.png", "--sort", "confidance")
    assert code == 2 and "Did you mean confidence?" in err


def test_unknown_model_names_the_close_ones(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("ILLUST2VEC_HOME", str(tmp_path / "store"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    picture = ANIME36 / "00.jpg"
    code, _, err = run_cli("tag", picture, "-m", "wd-vit-v4", "-q")
    assert code == 1 and "Did you mean wd-vit-v3" in err and "Traceback" not in err
    code, _, err = run_cli("tag", picture, "-m", "SmilingWolf/wd-vit-tagger-v4", "-q")
    assert code == 1 and "SmilingWolf/wd-vit-tagger-v3 (wd-vit-v3)" in err


# --------------------------------------------------------------------------- missing models


def test_missing_model_message_is_short_with_one_command(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("ILLUST2VEC_HOME", str(tmp_path / "store"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("ILLUST2VEC_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    for name in ("wd-vit-v3", "i2v-tag"):
        code, _, err = run_cli("tag", ANIME36 / "00.jpg", "-m", name, "-q")
        lines = err.strip().splitlines()
        assert code == 1 and len(lines) <= 3, err
        assert f"illust2vec models download {name}" in err and "--download" in err
        assert str(tmp_path) not in err  # file locations only with --debug or models info
        code, _, err = run_cli("--debug", "tag", ANIME36 / "00.jpg", "-m", name, "-q")
        assert str(tmp_path / "store" / "files") in err
    monkeypatch.setenv("ILLUST2VEC_OFFLINE", "1")
    code, _, err = run_cli("tag", ANIME36 / "00.jpg", "-m", "wd-vit-v3", "-q")
    assert code == 1 and len(err.strip().splitlines()) <= 3
    assert "models import model.onnx selected_tags.csv --as wd-vit-v3" in err


# --------------------------------------------------------------------------- kohya-ss spellings


@pytest.fixture(scope="module")
def parity_model(tmp_path_factory) -> Path:
    return write_parity_model(tmp_path_factory.mktemp("models") / "tiny")


def _dataset(tmp_path: Path, name: str) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    for picture in ("00.jpg", "10.jpg", "20.jpg"):
        shutil.copy(ANIME36 / picture, folder / picture)
    return folder


def test_kohya_spellings_run_with_kohya_meaning(parity_model, tmp_path, monkeypatch) -> None:
    """`tag DIR --caption_extension .txt --general_threshold 0.35 --remove_underscore ...` (acceptance, issue 25)."""
    monkeypatch.setenv("ILLUST2VEC_HOME", str(tmp_path / "store"))
    model = ["--weights", parity_model / "model.onnx", "--tag-list", parity_model / "selected_tags.csv", "-q"]
    kohya = _dataset(tmp_path, "kohya")
    code, out, err = run_cli("tag", kohya, *model, "--caption_extension", ".caption", "--general_threshold", "0.35",
                             "--character_threshold", "2", "--remove_underscore", "--batch_size", "2",
                             "--undesired_tags", "open mouth,blush", "--thresh", "0.5")
    assert code == 0, err
    assert out == ""  # captions were implied, as kohya-ss always writes them
    ours = _dataset(tmp_path, "ours")
    code, _, err = run_cli("tag", ours, *model, "--captions", "--caption-ext", ".caption", "--threshold", "0.5",
                           "--general", "0.35", "--threshold-compare", "ge", "--character", "1",
                           "--exclude", "open mouth,blush", "--underscores")
    assert code == 0, err
    characters = {n for n, c in TAGS if c == 4}
    for picture in ("00", "10", "20"):
        got = (kohya / f"{picture}.caption").read_text().strip().split(", ")
        plain = [t.replace("_", " ") if len(t) > 3 else t for t in (ours / f"{picture}.caption").read_text().strip().split(", ")]
        assert got == [t for t in plain if t.replace(" ", "_") not in characters]  # characters off (> 1)
        assert not any("_" in t for t in got if len(t) > 3) and "open mouth" not in got


def test_thresh_is_no_longer_ambiguous_and_model_dir_is_kohyas_layout(parity_model, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("ILLUST2VEC_HOME", str(tmp_path / "store"))
    kohya_dir = tmp_path / "wd14_tagger_model"
    shutil.copytree(parity_model, kohya_dir / REPO.replace("/", "_"))
    folder = _dataset(tmp_path, "d")
    code, out, err = run_cli("tag", folder, "--thresh", "0.3", "--repo_id", REPO, "--model_dir", kohya_dir, "-q",
                             "--format", "json")
    assert code == 0, err
    assert {r["model"] for r in json.loads(out)} == {REPO.replace("/", "_")}
    code, _, err = run_cli("tag", folder, "--repo_id", "someone/else", "--model_dir", kohya_dir, "-q")
    assert code == 1 and "someone_else" in err


# --------------------------------------------------------------------------- models import


def test_import_as_takes_every_file_of_the_model_all_or_nothing(tmp_path) -> None:
    store = tmp_path / "store"
    caffemodel = tmp_path / "weights.caffemodel"
    shutil.copy(I2V_FIXTURES / "tag_w8_v1.caffemodel", caffemodel)
    plain = tmp_path / "tag_list.json"
    shutil.copy(I2V_FIXTURES / "tag_list.json", plain)
    broken = tmp_path / "tag_list.json.gz"
    broken.write_bytes(b"\x1f\x8bnot gzip")
    code, _, err = run_cli("models", "--model-dir", store, "import", caffemodel, broken, "--as", "i2v-tag")
    assert code == 1 and "nothing was imported" in err
    assert not (store / "files").exists() or not any((store / "files").iterdir())
    code, out, err = run_cli("models", "--model-dir", store, "import", caffemodel, plain, "--as", "i2v-tag")
    assert code == 0, err
    assert (store / "files" / "tag_list.json").is_file() and (store / "files" / "illust2vec_tag_ver200.caffemodel").is_file()
    code, out, _ = run_cli("models", "--model-dir", store, "list", "i2v-tag", "--format", "json")
    assert json.loads(out)[0]["present"] is True
    import gzip

    packed = tmp_path / "packed" / "tag_list.json.gz"
    packed.parent.mkdir()
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    code, _, err = run_cli("models", "--model-dir", tmp_path / "store2", "import", packed, caffemodel, "--as", "i2v-tag")
    assert code == 0, err
    assert (tmp_path / "store2" / "files" / "tag_list.json.gz").is_file()


# --------------------------------------------------------------------------- missing inputs


def test_a_missing_input_is_an_error_line_not_an_image(tmp_path, monkeypatch) -> None:
    """`tag nonexist/`: one line, exit 1, no `[]`, no progress bar, no output file or collection (issue 26)."""
    monkeypatch.chdir(tmp_path)
    tagger = ["--weights", I2V_FIXTURES / "tag_w8_v1.caffemodel", "--tag-list", I2V_FIXTURES / "tag_list.json"]
    cases = [
        ["tag", "nonexist/", *tagger],
        ["tag", "nonexist/", "nothing-*.png", *tagger, "-o", "tags.csv"],
        ["embed", "nonexist/", "-m", "generic-effnet-lite0", "-o", "f.npy"],
        ["index", "nonexist/", "--db", "new.i2v", "-m", "generic-effnet-lite0"],
        ["faces", "nonexist/"],
        ["explain", "nonexist.jpg", *tagger, "-o", "maps.png"],
        ["map", "nonexist/", "-m", "generic-effnet-lite0", "-o", "m.png"],
    ]
    for argv in cases:
        code, out, err = run_cli(*argv)
        names = ", ".join(a for a in argv[1:3] if str(a).startswith("no"))
        assert code == 1 and out == "", (argv, out, err)
        assert err.splitlines() == [f"error: {names}: no such file or directory"], (argv, err)
    assert list(tmp_path.iterdir()) == []
    # beside a picture that exists, the missing path gets its line and the exit code says so
    code, out, err = run_cli("tag", "nonexist/", ANIME36 / "00.jpg", *tagger, "-q", "--format", "json")
    assert code == 1 and [r["path"] for r in json.loads(out)] == [str(ANIME36 / "00.jpg")]
    assert "error: nonexist: no such file" in err


def test_like_with_a_picture_says_it_takes_tags_and_how_to_search_by_picture(tmp_path) -> None:
    pictures = _dataset(tmp_path, "pics")
    db = tmp_path / "pics.i2v"
    code, _, err = run_cli("index", pictures, "--db", db, "-m", "generic-effnet-lite0", "-q")
    assert code == 0, err
    picture = pictures / "10.jpg"
    code, out, err = run_cli("search", "--like", picture, "--db", db)
    lines = err.strip().splitlines()
    assert code == 1 and out == "" and len(lines) == 1, err
    assert "--like takes tag names" in lines[0] and "'illust2vec models tags generic-effnet-lite0'" in lines[0]
    assert f"illust2vec search {picture} --db {db}" in lines[0]
    # a Danbooru tag asked of a collection tagged by the ImageNet classifier: whose tags these are
    code, out, err = run_cli("search", "--tags", "blue hair", "--db", db)
    assert code == 1 and "did you mean" in err and "'illust2vec models tags generic-effnet-lite0'" in err, err
