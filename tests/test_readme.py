"""The README (and the documentation pages) say only what works: every ``illust2vec ...`` command in
their code blocks parses with the real parser, the cheap ones run, every relative link and anchor
exists.  The site itself is built with warnings as errors by ``.ci/run`` (``mkdocs build --strict``).
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from illust2vec.cli.main import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = sorted(p for p in (ROOT / "docs").rglob("*.md") if "incoming" not in p.relative_to(ROOT / "docs").parts)
OPERATORS = {"&&", "||", "|", ";"}
REDIRECTS = {">", ">>", "<", "2>", "2>&1"}


def code_blocks(text: str) -> list[str]:
    """The contents of the fenced shell code blocks (```bash, ```sh, ```text-less ```)."""
    blocks = re.finditer(r"^```(\w*)[^\n]*\n(.*?)^```", text, re.M | re.S)
    return [m.group(2) for m in blocks if m.group(1) in ("bash", "sh", "shell", "console", "")]


def commands(text: str) -> list[list[str]]:
    """Each ``illust2vec ...`` invocation in the code blocks, as argv after the program name."""
    found = []
    for block in code_blocks(text):
        for line in block.replace("\\\n", " ").splitlines():
            if "illust2vec" not in line:
                continue
            tokens = shlex.split(line, comments=True)
            current: list[str] | None = None
            skip_next = False
            for token in tokens + [";"]:
                if skip_next:
                    skip_next = False
                    continue
                if token in OPERATORS:
                    if current is not None:
                        found.append(current)
                    current = None
                elif token in REDIRECTS:
                    skip_next = token != "2>&1"
                elif current is not None:
                    current.append(token)
                elif token == "illust2vec" or token.endswith("/bin/illust2vec"):
                    current = []
    return found


def slug(heading: str) -> str:
    """The anchor MkDocs (toc) and GitHub give a heading (lower case, punctuation dropped, spaces -> -)."""
    text = re.sub(r"`|\*\*|\[|\]\([^)]*\)", "", heading).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return re.sub(r"[\s]+", "-", text)


def anchors(path: Path) -> set[str]:
    text = path.read_text(encoding="utf-8")
    text = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    found = {slug(m.group(1)) for m in re.finditer(r"^#{1,6} (.+?)\s*$", text, re.M)}
    found |= set(re.findall(r"\{#([\w-]+)\}", text))
    return found


def test_readme_is_short_and_points_to_the_site():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 300
    assert "(docs/index.md)" in text and "mkdocs serve" in text and "pip install -e '.[docs]'" in text
    for image in ("docs/images/demo-map.jpg", "docs/images/demo-viewer.jpg"):
        assert f"]({image})" in text


@pytest.mark.parametrize("page", [README, *PAGES], ids=lambda p: str(p.relative_to(ROOT)))
def test_every_command_parses_with_the_real_parser(page):
    found = commands(page.read_text(encoding="utf-8"))
    if page == README:
        assert len(found) >= 20
    parser = build_parser()
    bad = []
    for argv in found:
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                args = parser.parse_args(argv)
        except SystemExit as exc:
            bad.append(f"illust2vec {shlex.join(argv)}: exit {exc.code}: {err.getvalue().strip()[-300:]}")
            continue
        if not argv[0].startswith("-"):
            assert getattr(args, "func", None) is not None, argv
    assert not bad, "\n".join(bad)


def test_the_cheap_readme_commands_run_as_written(tmp_path):
    found = commands(README.read_text(encoding="utf-8"))
    env = {**os.environ, "ILLUST2VEC_HOME": str(tmp_path / "store"), "HF_HUB_CACHE": str(tmp_path / "hub"),
           "ILLUST2VEC_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT / "src")}
    run = [argv for argv in found if argv[:2] == ["models", "list"]]
    run += [[name, "--help"] for name in dict.fromkeys(a[0] for a in found if not a[0].startswith("-"))]
    assert ["models", "list"] in run and ["demo", "--help"] in run
    for argv in run:
        r = subprocess.run([sys.executable, "-m", "illust2vec", *argv], capture_output=True, text=True, env=env,
                           timeout=60, cwd=tmp_path)
        assert r.returncode == 0, (argv, r.stderr)
    listing = subprocess.run([sys.executable, "-m", "illust2vec", "models", "list"], capture_output=True, text=True,
                             env=env, timeout=60, cwd=tmp_path).stdout
    assert "i2v-tag" in listing and "generic-effnet-lite0" in listing


@pytest.mark.skipif(not (ROOT / ".git").exists(), reason="not a git checkout")
def test_the_readme_demo_leaves_the_checkout_clean():
    """`illust2vec demo` run in a fresh clone writes ./illust2vec-demo/, which git ignores (issue 26)."""
    out = build_parser().parse_args(["demo"]).out
    r = subprocess.run(["git", "check-ignore", "-q", str(out / "map.html")], cwd=ROOT, timeout=30)
    assert r.returncode == 0, f"{out}/ is not in .gitignore"


@pytest.mark.parametrize("page", [README, *PAGES], ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_and_anchors_exist(page):
    text = re.sub(r"^```.*?^```", "", page.read_text(encoding="utf-8"), flags=re.M | re.S)
    text = re.sub(r"`[^`\n]*`", "", text)
    bad = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+://|mailto:", target):
            continue
        file, _, anchor = target.partition("#")
        dest = (page.parent / file).resolve() if file else page
        if file.startswith("reference/") or "/reference/" in file:
            continue  # generated when the site is built; mkdocs --strict checks those links
        if not dest.exists():
            bad.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            bad.append(f"{target}: no heading #{anchor} in {dest.relative_to(ROOT)}")
    assert not bad, "\n".join(bad)
