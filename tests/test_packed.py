"""The compact file table of the web app: same answers as a list and dicts, a fraction of the memory."""
from __future__ import annotations

import gc
import tracemalloc

import numpy as np

from illust2vec.collection.packed import IntPositions, PackedStrings, StringPositions
from illust2vec.collection.view import FileTable

NAMES = ["", "a.jpg", "/pics/日本語/絵 01.png", "/pics/emoji 🎨.webp", "/pics/tab\tand\nnewline.jpg",
         "/pics/" + "long" * 500 + ".jpg", "/pics/<script>alert(1)</script>.png"]


def test_packed_strings_equal_the_list_they_pack() -> None:
    packed = PackedStrings(NAMES)
    assert len(packed) == len(NAMES) and list(packed) == NAMES
    assert [packed[k] for k in range(len(NAMES))] == NAMES
    assert packed[-1] == NAMES[-1] and packed[1:3] == NAMES[1:3]
    assert packed.index("a.jpg") == 1 and "/pics/emoji 🎨.webp" in packed
    try:
        packed[len(NAMES)]
    except IndexError:
        pass
    else:
        raise AssertionError("an index past the end must raise IndexError")


def test_positions_find_every_key_and_nothing_else() -> None:
    rng = np.random.default_rng(0)
    ids = rng.permutation(10_000)[:5_000].astype(np.int64) * 3 + 7
    pos = IntPositions(ids)
    assert all(pos.get(int(i)) == k for k, i in enumerate(ids))
    assert pos.get(8) is None and pos.get(-1) is None and 10**12 not in pos and int(ids[5]) in pos
    paths = PackedStrings(NAMES)
    by_path = StringPositions(paths)
    assert all(by_path[p] == k for k, p in enumerate(NAMES))
    assert by_path.get("missing.jpg") is None and "A.JPG" not in by_path and 3 not in by_path


def _traced(build):
    """What ``build()`` keeps allocated (bytes), measured by tracemalloc; and its value."""
    gc.collect()
    tracemalloc.start()
    try:
        value = build()
        gc.collect()
        return tracemalloc.get_traced_memory()[0], value
    finally:
        tracemalloc.stop()


def test_file_table_packs_paths_and_digests() -> None:
    n = 200_000
    make_paths = lambda: [f"/home/fan/Pictures/artist_{i % 5000:04d}/illust_{i:07d}_p0.jpg" for i in range(n)]
    make_shas = lambda: [f"{i:064x}" for i in range(n)]
    ids, rows = np.arange(1, n + 1, dtype=np.int64), np.arange(n, dtype=np.int64)

    def as_lists():  # what the table held before: two lists of str and two dicts
        paths, shas = make_paths(), make_shas()
        return paths, shas, {int(i): k for k, i in enumerate(ids)}, {p: k for k, p in enumerate(paths)}

    lists_bytes, _ = _traced(as_lists)
    table_bytes, table = _traced(lambda: FileTable((n,), ids, rows, PackedStrings(make_paths()),
                                                   PackedStrings(make_shas())))
    print(f"{n} files: lists and dicts {lists_bytes / 2**20:.1f} MiB, FileTable {table_bytes / 2**20:.1f} MiB")
    assert table_bytes < lists_bytes / 2
    paths, shas = make_paths(), make_shas()
    assert table.by_path.get(paths[12345]) == 12345 and table.pos.get(777) == 776 and table.shas[9] == shas[9]
    less = table.without({paths[0], paths[5]}, (n - 2,))
    assert len(less) == n - 2 and less.by_path.get(paths[5]) is None and less.by_path.get(paths[6]) == 4
    assert less.paths[4] == paths[6] and less.shas[4] == shas[6] and less.pos.get(7) == 4
