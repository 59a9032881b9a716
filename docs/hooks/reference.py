"""MkDocs hook: the generated reference pages, and the list of external links.

* ``reference/cli.md``: every command, sub-command, option group, option and example, walked from
  the parser ``illust2vec.cli.main.build_parser()`` builds (the ``--help-all`` content, as Markdown).
* ``reference/api/*.md``: one page per public package of ``src/illust2vec`` (found on disk, so a
  new or renamed module needs no edit here), each module rendered by mkdocstrings from its
  docstrings; ``reference/api/index.md`` documents the top-level names (``illust2vec._LAZY``).
* External links cannot be fetched here (no network): they are collected from every page and
  written to ``site/external-links.txt``; internal links and anchors are checked by MkDocs itself
  (``validation`` in ``mkdocs.yml``, errors under ``--strict``).

Registered in ``mkdocs.yml`` under ``hooks:``.
"""
from __future__ import annotations

import argparse
import logging
import os
import re
from pathlib import Path

log = logging.getLogger("mkdocs.hooks.reference")
ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "illust2vec"

#: Packages shown in the API reference, in this order (others found on disk follow, except these).
API_ORDER = ["errors", "io", "prep", "runtime", "pipeline", "models", "faces", "collection", "maps", "video",
             "demo", "datasets", "semantic", "distributed", "serve"]
API_SKIP = {"cli", "data"}  # the CLI has its own reference page; data/ holds no code

_external: set[tuple[str, str]] = set()


# -- CLI reference ------------------------------------------------------------------------------------

def _md(text: str | None) -> str:
    """argparse help text as Markdown-safe text (``%(default)s`` expanded by the caller)."""
    if not text:
        return ""
    text = " ".join(text.split())
    return text.replace("|", "\\|").replace("<", "&lt;").replace("*", "\\*").replace("_", "\\_")


def _invocation(action: argparse.Action, parser: argparse.ArgumentParser) -> str:
    formatter = parser._get_formatter()
    return formatter._format_action_invocation(action)


def _help(action: argparse.Action, parser: argparse.ArgumentParser) -> str:
    if not action.help:
        return ""
    formatter = parser._get_formatter()
    text = formatter._expand_help(action)
    if action.choices is not None and not isinstance(action, argparse._SubParsersAction):
        choices = ", ".join(f"`{c}`" for c in action.choices)
        if "{" not in _invocation(action, parser):
            return f"{_md(text)} (one of {choices})"
    return _md(text)


def cli_reference() -> str:
    from illust2vec.cli.helptext import HELP_ALL, sub_command_help, walk_parsers
    from illust2vec.cli.main import build_parser

    os.environ.setdefault("COLUMNS", "100")
    root = build_parser()
    out = ["# Command-line reference", "",
           "Generated from the parsers of `illust2vec` when the site is built (`docs/hooks/reference.py`): "
           f"every option `{HELP_ALL}` shows. `COMMAND --help` shows the common ones and the examples on one screen.",
           ""]
    commands = sub_command_help(root)
    out += ["| command | what it does |", "| --- | --- |"]
    out += [f"| [`{name}`](#{_anchor(name)}) | {_md(text)} |" for name, text in commands.items()]
    out.append("")
    for path, parser in walk_parsers(root):
        if path:
            out += [f"{'#' * min(len(path) + 1, 4)} illust2vec {' '.join(path)} {{#{_anchor(' '.join(path))}}}", ""]
        else:
            out += ["## illust2vec (global options)", ""]
        out += ["```text", parser.format_usage().strip(), "```", ""]
        if parser.description and path:
            out += [_md(parser.description), ""]
        subs = sub_command_help(parser)
        if subs and path:
            out += ["| action | what it does |", "| --- | --- |"]
            out += [f"| [`{name}`](#{_anchor(' '.join(path + (name,)))}) | {_md(text)} |" for name, text in subs.items()]
            out.append("")
        for group in parser._action_groups:
            actions = [a for a in group._group_actions if a.help != argparse.SUPPRESS
                       and not isinstance(a, argparse._SubParsersAction)]
            if not actions:
                continue
            out += [f"**{_md(group.title)}**" + (f": {_md(group.description)}" if group.description else ""), ""]
            out += ["| option | description |", "| --- | --- |"]
            for action in actions:
                out.append(f"| `{_invocation(action, parser)}` | {_help(action, parser)} |")
            out.append("")
        if parser.epilog and path:
            out += ["```text", parser.epilog.strip("\n"), "```", ""]
    return "\n".join(out)


def _anchor(name: str) -> str:
    return "cli-" + re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


# -- API reference ------------------------------------------------------------------------------------

def _modules(package: Path, dotted: str) -> list[str]:
    """Public modules of a package folder, depth first (``__init__`` first)."""
    found = [dotted]
    for child in sorted(package.iterdir()):
        if child.name.startswith("_") or child.name == "__pycache__":
            continue
        if child.is_dir() and (child / "__init__.py").exists():
            found += _modules(child, f"{dotted}.{child.name}")
        elif child.suffix == ".py":
            found.append(f"{dotted}.{child.stem}")
    return found


def api_packages() -> list[str]:
    on_disk = sorted(p.stem if p.is_file() else p.name for p in SRC.iterdir()
                     if not p.name.startswith("_") and p.name not in API_SKIP
                     and ((p.is_dir() and (p / "__init__.py").exists()) or (p.suffix == ".py" and p.stem != "version")))
    return [name for name in API_ORDER if name in on_disk] + [name for name in on_disk if name not in API_ORDER]


def api_page(name: str) -> str:
    path = SRC / name
    modules = _modules(path, f"illust2vec.{name}") if path.is_dir() else [f"illust2vec.{name}"]
    lines = [f"# `illust2vec.{name}`", "",
             "Generated from the docstrings when the site is built (mkdocstrings).", ""]
    for module in modules:
        lines += [f"::: {module}", "    options:", "      show_root_heading: true", "      heading_level: 2", ""]
    return "\n".join(lines)


def api_index() -> str:
    import illust2vec

    lines = ["# Python API", "",
             "`import illust2vec` is fast: the names below are imported on first use. Each lives in the "
             "package its page documents.", "",
             "| name | defined in |", "| --- | --- |"]
    names = [n for n in illust2vec.__all__ if not n.startswith("_")]
    where = {}
    for name in names:  # where each lazily imported name is defined
        obj = getattr(illust2vec, name)
        where[name] = f"{obj.__module__}.{obj.__qualname__}"
    for name in names:  # links to where the package pages document them (autorefs)
        lines.append(f"| [`illust2vec.{name}`][{where[name]}] | `{where[name]}` |")
    lines += ["", "## Packages", "", "| package | what it holds |", "| --- | --- |"]
    for package in api_packages():
        lines.append(f"| [`illust2vec.{package}`]({package}.md) | {_md(_summary(package))} |")
    lines.append("")
    return "\n".join(lines)


def _summary(package: str) -> str:
    """The first line of a package's docstring (read without importing it)."""
    import ast

    path = SRC / package
    source = (path / "__init__.py") if path.is_dir() else path.with_suffix(".py")
    doc = ast.get_docstring(ast.parse(source.read_text(encoding="utf-8"))) or ""
    return doc.strip().split("\n")[0]


def generated_pages() -> dict[str, str]:
    pages = {"reference/cli.md": cli_reference(), "reference/api/index.md": api_index()}
    for name in api_packages():
        pages[f"reference/api/{name}.md"] = api_page(name)
    return pages


# -- MkDocs events ------------------------------------------------------------------------------------

def on_files(files, config):
    from mkdocs.structure.files import File  # (imported here: the tests read this module without MkDocs)

    for uri, content in generated_pages().items():
        files.append(File.generated(config, uri, content=content))
    return files


def on_config(config):
    # the API pages of every package found on disk, after the hand-written ones
    for entry in config.nav or []:
        if isinstance(entry, dict) and "Reference" in entry:
            section = entry["Reference"]
            if not any(isinstance(e, dict) and "Packages" in e for e in section):
                section.append({"Packages": [{f"illust2vec.{p}": f"reference/api/{p}.md"} for p in api_packages()]})
    return config


_HREF = re.compile(r'href="(https?://[^"]+)"')
#: Sphinx roles in docstrings (``:class:`~a.b.C```), which Markdown shows as text: rendered as code.
_ROLE = re.compile(r":(?:class|func|meth|data|attr|mod|exc|obj|const):<code>(~?)([^<]+)</code>")


def _role(match: re.Match) -> str:
    name = match.group(2)
    return f"<code>{name.rsplit('.', 1)[-1] if match.group(1) else name}</code>"


def on_page_content(html, page, config, files):
    for url in _HREF.findall(html):
        _external.add((url, page.file.src_uri))
    return _ROLE.sub(_role, html)


def on_post_build(config):
    site = Path(config.site_dir)
    by_url: dict[str, list[str]] = {}
    for url, page in sorted(_external):
        by_url.setdefault(url, []).append(page)
    text = "".join(f"{url}\t{', '.join(pages)}\n" for url, pages in sorted(by_url.items()))
    (site / "external-links.txt").write_text(
        "# external links (not fetched: the build is offline); URL <tab> pages\n" + text, encoding="utf-8")
    log.info("%d external links (not checked offline) listed in %s", len(by_url), site / "external-links.txt")
