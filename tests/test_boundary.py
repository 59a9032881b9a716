"""The collection boundary: outside ``src/illust2vec/collection/`` nothing touches a collection's insides.

Every module of the package outside ``collection/`` is parsed (AST) and checked for:

* a private attribute (``._name``) of a collection object: a ``Collection``, its
  ``view``/``store``, a write session, or anything bound to one (``Collection.open(...)``,
  ``with ... as col``, a parameter or attribute named ``col``/``view``/``store``/``collection``,
  or annotated with one of the collection classes);
* the SQLite connection (``.conn`` of anything) and ``sqlite3.connect``;
* SQL text: a string (or f-string part) that starts like a statement
  (``SELECT``, ``INSERT``, ``UPDATE``, ``DELETE``, ``CREATE``, ``PRAGMA``, ...);
* an import of ``illust2vec.collection.db`` (the schema module).

The checker is checked too, on a module made of violations.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "illust2vec"
INSIDE = PACKAGE / "collection"
#: Names and attributes that hold collection objects by convention.
COLLECTION_NAMES = {"col", "collection", "view", "store", "session"}
#: Classes whose instances are collection objects.
COLLECTION_CLASSES = {"Collection", "CollectionView", "CollectionStore", "WriteSession", "Snapshot"}
#: Calls that return a collection object.
COLLECTION_CALLS = {"Collection.open", "Collection", "CollectionView", "CollectionStore"}
SQL = re.compile(r"^\s*(SELECT|INSERT|UPDATE|DELETE|CREATE|DROP|ALTER|PRAGMA|BEGIN|COMMIT|ROLLBACK|REPLACE|WITH\s+\w+\s+AS)\b")


def _annotation_names(node: ast.AST | None) -> set[str]:
    if node is None:
        return set()
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)} | {
        n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute)} | {
        v for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)
        for v in re.findall(r"\w+", n.value)}


class _Checker(ast.NodeVisitor):
    def __init__(self, name: str) -> None:
        self.name = name
        self.bound: set[str] = set(COLLECTION_NAMES)
        self.problems: list[str] = []

    # -- which expressions are collection objects
    def is_collection(self, node: ast.AST) -> bool:
        if isinstance(node, ast.Name):
            return node.id in self.bound
        if isinstance(node, ast.Attribute):
            return node.attr in COLLECTION_NAMES or ast.unparse(node) in self.bound
        if isinstance(node, ast.Call):
            return ast.unparse(node.func) in COLLECTION_CALLS
        return False

    def bind(self, target: ast.AST, value: ast.AST | None) -> None:
        if value is None or not self.is_collection(value):
            return
        for t in target.elts if isinstance(target, (ast.Tuple, ast.List)) else [target]:
            if isinstance(t, (ast.Name, ast.Attribute)):
                self.bound.add(ast.unparse(t))  # ``col`` or ``self.collection_object``

    def collect_bindings(self, tree: ast.AST) -> None:
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign):
                for t in node.targets:
                    self.bind(t, node.value)
            elif isinstance(node, (ast.AnnAssign, ast.arg)):
                target = node.target if isinstance(node, ast.AnnAssign) else None
                if _annotation_names(node.annotation) & COLLECTION_CLASSES:
                    self.bound.add(node.arg if isinstance(node, ast.arg) else ast.unparse(target))
                elif isinstance(node, ast.AnnAssign):
                    self.bind(node.target, node.value)
            elif isinstance(node, ast.withitem) and node.optional_vars is not None:
                self.bind(node.optional_vars, node.context_expr)

    # -- the rules
    def flag(self, node: ast.AST, what: str) -> None:
        self.problems.append(f"{self.name}:{getattr(node, 'lineno', '?')}: {what}")

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if node.attr == "conn":
            self.flag(node, f"{ast.unparse(node)}: the SQLite connection of a collection")
        elif node.attr.startswith("_") and not node.attr.startswith("__") and self.is_collection(node.value):
            self.flag(node, f"{ast.unparse(node)}: a private attribute of a collection object")
        elif ast.unparse(node) == "sqlite3.connect":
            self.flag(node, "sqlite3.connect: a database connection outside collection/")
        self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        if isinstance(node.value, str) and SQL.match(node.value):
            self.flag(node, f"SQL text {node.value[:40]!r}")

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        mod = node.module or ""
        names = {f"{mod}.{a.name}" for a in node.names} | {mod}
        if "illust2vec.collection.db" in names:
            self.flag(node, "imports illust2vec.collection.db (the schema)")

    def visit_Import(self, node: ast.Import) -> None:
        if any(a.name == "illust2vec.collection.db" for a in node.names):
            self.flag(node, "imports illust2vec.collection.db (the schema)")


def problems_in(source: str, name: str) -> list[str]:
    tree = ast.parse(source)
    checker = _Checker(name)
    checker.collect_bindings(tree)
    checker.visit(tree)
    return checker.problems


def test_nothing_outside_collection_touches_its_insides():
    files = [f for f in sorted(PACKAGE.rglob("*.py")) if INSIDE not in f.parents]
    assert len(files) > 50  # the whole package outside collection/ is checked
    found = [p for f in files for p in problems_in(f.read_text(encoding="utf-8"), str(f.relative_to(PACKAGE)))]
    assert not found, "uses of a collection's insides outside collection/:\n" + "\n".join(found)


def test_the_checker_finds_each_kind_of_violation():
    source = '''
import sqlite3
from illust2vec.collection import Collection
from illust2vec.collection.db import get_meta

def f(db, col: "Collection"):
    with Collection.open(db) as c:
        c._cache.clear()
        c.view._memo.clear()
        rows = c.conn.execute("SELECT row FROM files").fetchall()
    col._snapshot()
    other = col.store
    other._lock_fh = None
    svc.col._vector_files()
    sqlite3.connect(db)
    q = f"DELETE FROM files WHERE path = {db}"

class S:
    def __init__(self, db):
        self.col = Collection.open(db)
        self.col._embedder = None
        self._own = 1            # the object's own private attribute: fine
        args._actions            # not a collection: fine
'''
    found = problems_in(source, "m.py")
    text = "\n".join(found)
    for expected in ("c._cache", "c.view._memo", "c.conn", "'SELECT row FROM files'", "col._snapshot",
                     "other._lock_fh", "svc.col._vector_files", "sqlite3.connect", "'DELETE FROM files WHERE path = '",
                     "self.col._embedder", "imports illust2vec.collection.db"):
        assert expected in text, (expected, text)
    assert "self._own" not in text and "args._actions" not in text
    assert len(found) == 11, text
