"""The package's import structure: imports only go downward, and no module imports itself back.

Every ``import``/``from ... import`` of an ``illust2vec`` module counts, including
imports inside functions (hiding a cycle in a function is still a cycle).  The
layers follow the data flow; see docs/architecture.md.
"""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "illust2vec"

#: Top-level package or module -> layer.  A module may import from its own
#: package or from a lower layer; the same layer in another package is not allowed.
LAYERS = {
    "errors": 0, "version": 0, "lazy": 0,
    "io": 1,
    "prep": 2,
    "runtime": 3,
    "models": 4,
    "faces": 5,
    "collection": 6,
    "maps": 7, "video": 7, "semantic": 7, "distributed": 7, "datasets": 7,
    "pipeline": 8,
    "serve": 9,
    "cli": 10,
}
#: The lazy facade (``illust2vec/__init__.py``) and ``__main__`` sit above everything.
FACADES = {"illust2vec", "illust2vec.__main__"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, modules: set[str]) -> set[str]:
    """illust2vec modules imported anywhere in a file (``from x import sub`` counts sub if it is a module)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            subs = [f"{base}.{a.name}" for a in node.names]
            # ``from pkg import sub`` depends on the submodule; ``from pkg import name`` on pkg itself
            targets = [t for t in subs if t in modules] + ([base] if any(t not in modules for t in subs) else [])
        else:
            continue
        for t in targets:
            while t and t not in modules:
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def import_graph() -> dict[str, set[str]]:
    files = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(f) for f in files}
    return {module_name(f): imported_modules(f, modules) for f in files}


def layer(module: str) -> tuple[str, int]:
    top = module.split(".")[1] if "." in module else module
    return top, LAYERS[top]


def test_every_package_has_a_layer():
    tops = {m.split(".")[1] for m in import_graph() if "." in m and m not in FACADES}
    assert tops <= set(LAYERS), f"packages without a layer: {sorted(tops - set(LAYERS))}"


def test_imports_only_go_downward():
    graph = import_graph()
    upward = []
    for module, deps in graph.items():
        if module in FACADES:
            continue
        top, level = layer(module)
        for dep in deps:
            if dep == "illust2vec":
                upward.append(f"{module} imports the facade illust2vec")
                continue
            dep_top, dep_level = layer(dep)
            if dep_top != top and dep_level >= level:
                upward.append(f"{module} -> {dep}")
    assert not upward, "imports that do not go downward:\n" + "\n".join(sorted(upward))


def test_no_import_cycles():
    graph = import_graph()
    # packages import their own submodules in __init__ (re-exports); a submodule importing
    # its package's __init__ back is what makes a cycle, so keep both edges and search.
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if dep in FACADES:
                continue
            if state.get(dep) == 1:
                cycles.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, stack)
        stack.pop()
        state[node] = 2

    for module in sorted(graph):
        if module not in state and module not in FACADES:
            visit(module, [])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_checker_sees_a_cycle_inside_a_function(tmp_path):
    # The checker itself must catch an import hidden inside a function.
    src = tmp_path / "illust2vec"
    (src / "io").mkdir(parents=True)
    (src / "__init__.py").write_text("")
    (src / "io" / "__init__.py").write_text("")
    (src / "io" / "a.py").write_text("def f():\n    from illust2vec.io import b\n")
    (src / "io" / "b.py").write_text("from illust2vec.io.a import f\n")
    modules = {"illust2vec", "illust2vec.io", "illust2vec.io.a", "illust2vec.io.b"}
    global PACKAGE
    saved, PACKAGE = PACKAGE, src
    try:
        assert imported_modules(src / "io" / "a.py", modules) == {"illust2vec.io.b"}
        assert imported_modules(src / "io" / "b.py", modules) == {"illust2vec.io.a"}
    finally:
        PACKAGE = saved


#: Inside ``collection/``: the same rule, one level down.  Storage first, then the view (every read),
#: the store (the one writer), the queries built on the view, the producers that feed the store, and
#: ``core.Collection`` on top; nothing imports ``core`` back (search, dupes and export take a view).
COLLECTION_LAYERS = {
    "errors": 0, "paths": 0, "prune": 0, "mih": 0, "infer": 0, "packed": 0, "dupe_actions": 1, "index": 1,
    "vectors": 1, "db": 1,
    "taggers": 2, "query": 2, "compact": 2, "user_tags": 3, "pair_cache": 3,
    "view": 4,
    "faces": 5,
    "store": 6, "search": 6, "export": 6, "repair": 6,
    "dupes": 7,
    "indexer": 8,
    "core": 9,
    "__init__": 10,
}


def check_inner_layers(package: str, layers: dict[str, int]) -> None:
    """Modules of ``illust2vec.<package>`` import only lower entries of ``layers`` (each module has one)."""
    graph = import_graph()
    prefix = f"illust2vec.{package}"
    inside = {m: d for m, d in graph.items() if m.startswith(prefix)}

    def short(m: str) -> str:
        return "__init__" if m == prefix else m.rsplit(".", 1)[-1]

    missing = sorted(short(m) for m in inside if short(m) not in layers)
    assert not missing, f"{package} modules without a layer: {missing}"
    upward = [f"{short(m)} -> {short(d)}" for m, deps in inside.items() for d in deps
              if d.startswith(prefix) and layers[short(d)] >= layers[short(m)]]
    assert not upward, f"{package} modules importing their own layer or above:\n" + "\n".join(sorted(upward))


def test_collection_modules_import_downward():
    check_inner_layers("collection", COLLECTION_LAYERS)


#: Most parameters a public function or method may take (``self`` not counted).
MAX_PARAMETERS = 12
#: Functions allowed more (none: a new one takes an options record instead).
PARAMETER_SKIP: set[str] = set()


def public_signatures(root: Path):
    """``(qualified name, parameter count)`` of every public function and method under ``root``."""
    files = [root] if root.suffix == ".py" else sorted(root.rglob("*.py"))
    for path in files:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        module = module_name(path) if PACKAGE in path.parents else path.stem

        def walk(node, owner: str | None = None):
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.ClassDef) and not child.name.startswith("_"):
                    yield from walk(child, child.name)
                elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    if child.name.startswith("_") and child.name != "__init__":
                        continue
                    a = child.args
                    n = len(a.posonlyargs) + len(a.args) + len(a.kwonlyargs) + bool(a.vararg) + bool(a.kwarg)
                    first = (a.posonlyargs + a.args)[:1]
                    if owner and first and first[0].arg in ("self", "cls"):
                        n -= 1
                    yield f"{module}.{owner + '.' if owner else ''}{child.name}", n

        yield from walk(tree)


def test_no_public_function_takes_more_than_12_parameters():
    too_many = {name: n for name, n in public_signatures(PACKAGE) if n > MAX_PARAMETERS and name not in PARAMETER_SKIP}
    assert too_many == {}, f"more than {MAX_PARAMETERS} parameters (take an options record): {too_many}"


def test_the_parameter_check_counts_every_kind(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("class A:\n    def m(self, a, /, b, *c, d, **e): ...\ndef f(a, b=1): ...\ndef _g(*a): ...\n")
    assert dict(public_signatures(f)) == {"m.A.m": 5, "m.f": 2}


#: Inside ``pipeline/``: the data-flow order.  Readers, then the runner, the distributor that runs it
#: here or on Ray, the writers, and the tasks (the commands as calls) on top.
PIPELINE_LAYERS = {"readers": 0, "runner": 1, "distribute": 2, "writers": 2, "tasks": 3, "__init__": 4}


def test_pipeline_modules_follow_the_data_flow():
    check_inner_layers("pipeline", PIPELINE_LAYERS)


#: What starts a worker pool or a thread.
POOL_CALLS = {"ProcessPoolExecutor", "ThreadPoolExecutor", "Pool", "Process", "Thread"}
#: Threads outside ``runtime/`` that decode nothing, each with what it does.
NOT_DECODING = {
    ("cli/serve.py", "Thread"): "watches the collection for changes",
    ("collection/index.py", "ThreadPoolExecutor"): "searches the index shards in parallel",
    ("collection/index.py", "Thread"): "asks the kernel for huge pages of the index",
    ("collection/mih.py", "ThreadPoolExecutor"): "multi-index hashing search",
    ("maps/viewer.py", "ThreadPoolExecutor"): "encodes atlas pages (WebP) while the next ones are drawn",
    ("serve/service.py", "Thread"): "computes near-duplicates in the background",
    ("io/atomic.py", "ThreadPoolExecutor"): "fsyncs a batch of written files in parallel (DurableBatch)",
}


def pool_calls(path: Path) -> list[tuple[str, int]]:
    """``(what, line)`` for every call that starts a pool or a thread in a file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call):
            fn = node.func
            name = fn.attr if isinstance(fn, ast.Attribute) else getattr(fn, "id", None)
            if name in POOL_CALLS:
                found.append((name, node.lineno))
    return found


def test_only_runtime_starts_decode_pools():
    """One decode pool: no module outside ``runtime/`` starts processes or threads of its own to decode."""
    stray, seen = [], set()
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel.startswith("runtime/"):
            continue
        for name, line in pool_calls(path):
            seen.add((rel, name))
            if (rel, name) not in NOT_DECODING:
                stray.append(f"{rel}:{line}: {name}")
    assert not stray, "pools outside runtime/ (decode through illust2vec.runtime.pool):\n" + "\n".join(stray)
    assert set(NOT_DECODING) <= seen, f"stale NOT_DECODING entries: {sorted(set(NOT_DECODING) - seen)}"


def test_the_pool_checker_sees_a_pool(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("import concurrent.futures as cf\nimport threading\n"
                 "def f():\n    with cf.ProcessPoolExecutor(2) as p:\n        threading.Thread(target=f).start()\n")
    assert pool_calls(f) == [("ProcessPoolExecutor", 4), ("Thread", 5)]
