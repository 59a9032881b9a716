"""ctypes binding to ``libnvxs``, the AnimeFace 2009 detector bundled in the ``animeface`` wheel.

The ``animeface`` package's own extension reads Pillow's private ``Imaging``
struct and silently finds nothing under Pillow >= 12.  The native library
next to it (``animeface.libs/libnvxs-*.so`` on Linux) has a plain C API that
needs no Pillow at all, so we call it directly and hand it numpy buffers:

* ``nv_matrix_t`` is a small header (``list, list_step, n, m, rows, cols,
  step, alias`` as ``int`` then ``float *v``); an image is ``n`` floats per
  pixel, row-major, ``step == n`` (no padding), colour channels in B, G, R
  order with values 0..255.  We build headers that point at float32 numpy
  arrays (``alias = 1``: the library never frees them).
* The pipeline is the one of the original bindings: ``nv_gray`` ->
  ``nv_gaussian5x5`` -> ``nv_laplacian1(4.0)`` -> ``nv_integral`` of grey and
  edge images -> ``nv_face_detect(step=4, scale_factor=1.095,
  min_window=42.592)`` with the MLP weights exported by the library ->
  ``nv_face_analyze`` for skin, hair and eye colours.

The struct layout is checked once against ``nv_matrix3d_alloc`` when the
library is loaded, so a differently built library fails loudly instead of
returning garbage.  One :class:`NativeDetector` per process (see
:func:`get_detector`); calls are serialised with a lock because the library
was never written with threads in mind.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import glob
import importlib.util
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from illust2vec.errors import Illust2VecError, MissingDependency

#: Environment variable that names the libnvxs shared library explicitly.
LIBRARY_ENV = "ILLUST2VEC_NVXS_LIBRARY"

#: Detector parameters used by the original Python/Ruby bindings.
SCAN_STEP = 4.0
SCALE_FACTOR = 1.095
MIN_WINDOW = 42.592
#: Scan presets: ``(step, scale_factor)``.  "fine" is the original bindings'
#: scan; "fast" grows the window by 1.2 per scale instead of 1.095, about twice
#: as fast (anime36: the same 33/36 pictures with a face, 35 of 37 faces).
SCANS = {"fine": (SCAN_STEP, SCALE_FACTOR), "fast": (SCAN_STEP, 1.2)}
MAX_FACES = 4096
#: Initial state of the library's random generator (``idums[0]`` in its data
#: section).  ``nv_face_analyze`` clusters colours with k-means seeded from that
#: generator, so we reset it before every face: colours then depend on the face
#: only, not on what the process analysed before.
RANDOM_SEED = 8273

_P = ctypes.POINTER


class FaceDetectorUnavailable(MissingDependency):
    """The AnimeFace native library could not be found or loaded (said once, not once per picture)."""


class _Matrix(ctypes.Structure):
    _fields_ = [
        ("list", ctypes.c_int),
        ("list_step", ctypes.c_int),
        ("n", ctypes.c_int),
        ("m", ctypes.c_int),
        ("rows", ctypes.c_int),
        ("cols", ctypes.c_int),
        ("step", ctypes.c_int),
        ("alias", ctypes.c_int),
        ("v", _P(ctypes.c_float)),
    ]


class _Rect(ctypes.Structure):
    _fields_ = [("x", ctypes.c_int), ("y", ctypes.c_int), ("width", ctypes.c_int), ("height", ctypes.c_int)]


class _Position(ctypes.Structure):
    _fields_ = [
        ("likelihood", ctypes.c_float),
        ("face", _Rect),
        ("left_eye", _Rect),
        ("right_eye", _Rect),
        ("nose", _Rect),
        ("mouth", _Rect),
        ("chin", _Rect),
    ]


class _Color(ctypes.Structure):
    _fields_ = [("v", ctypes.c_float * 4)]


class _Feature(ctypes.Structure):
    _fields_ = [
        ("eye_ratio", ctypes.c_float),
        ("face_ratio", ctypes.c_float),
        ("skin_bgr", _Color),
        ("skin_ec", _Color),
        ("hair_bgr", _Color),
        ("hair_ec", _Color),
        ("left_eye_bgr", _Color * 4),
        ("right_eye_bgr", _Color * 4),
        ("eye_bgr", _Color * 4),
        ("left_eye_ec", _Color * 4),
        ("right_eye_ec", _Color * 4),
        ("eye_ec", _Color * 4),
    ]


@dataclass(frozen=True)
class RawFace:
    """One detection in the coordinates of the image given to the library."""

    likelihood: float
    face: tuple[int, int, int, int]
    left_eye: tuple[int, int, int, int]
    right_eye: tuple[int, int, int, int]
    mouth: tuple[int, int, int, int]
    nose: tuple[int, int]
    chin: tuple[int, int]
    skin_color: tuple[int, int, int]
    hair_color: tuple[int, int, int]
    left_eye_color: tuple[int, int, int]
    right_eye_color: tuple[int, int, int]


def _candidate_paths() -> list[str]:
    """Where libnvxs may live, most specific first."""
    found: list[str] = []
    explicit = os.environ.get(LIBRARY_ENV)
    if explicit:
        found.append(explicit)
    spec = importlib.util.find_spec("animeface")
    if spec is not None and spec.submodule_search_locations:
        for pkg in spec.submodule_search_locations:
            pkg_dir = Path(pkg)
            patterns = [
                pkg_dir.parent / "animeface.libs" / "libnvxs*.so*",  # auditwheel (Linux)
                pkg_dir / ".dylibs" / "libnvxs*.dylib",  # delocate (macOS)
                pkg_dir.parent / "animeface.libs" / "*nvxs*.dll",  # delvewheel (Windows)
                pkg_dir / "prebuilts" / "*" / "libnvxs*",
            ]
            for pattern in patterns:
                found.extend(sorted(glob.glob(str(pattern))))
    system = ctypes.util.find_library("nvxs")
    if system:
        found.append(system)
    return found


def _aligned_zeros(shape: tuple[int, ...]) -> np.ndarray:
    """float32 zeros whose data starts on a 64-byte boundary (the library uses SSE loads)."""
    count = int(np.prod(shape))
    buf = np.zeros(count + 16, dtype=np.float32)
    offset = (-buf.ctypes.data % 64) // 4
    return buf[offset : offset + count].reshape(shape)


def _header(array: np.ndarray) -> _Matrix:
    """An ``nv_matrix_t`` that aliases a C-contiguous float32 (H, W[, C]) array."""
    if array.dtype != np.float32 or not array.flags.c_contiguous:
        raise ValueError("nvxs matrices must be C-contiguous float32 arrays")
    rows, cols = array.shape[:2]
    channels = array.shape[2] if array.ndim == 3 else 1
    m = rows * cols
    return _Matrix(1, channels * m, channels, m, rows, cols, channels, 1, array.ctypes.data_as(_P(ctypes.c_float)))


def _rect(r: _Rect) -> tuple[int, int, int, int]:
    return (int(r.x), int(r.y), int(r.width), int(r.height))


def _rgb(c: _Color) -> tuple[int, int, int]:
    # nv_color_t holds B, G, R; report R, G, B like the rest of illust2vec.
    return (int(c.v[2]), int(c.v[1]), int(c.v[0]))


class NativeDetector:
    """The AnimeFace 2009 detector called through ctypes.

    Parameters
    ----------
    library:
        Path of ``libnvxs``; by default the copy bundled in the ``animeface``
        wheel (or ``$ILLUST2VEC_NVXS_LIBRARY``, or a system ``libnvxs``).
    """

    def __init__(self, library: str | os.PathLike[str] | None = None) -> None:
        paths = [os.fspath(library)] if library is not None else _candidate_paths()
        if not paths:
            raise FaceDetectorUnavailable(
                "the AnimeFace detector library (libnvxs) was not found: install it with "
                "pip install 'illust2vec[faces]' (the animeface wheel), or set "
                f"{LIBRARY_ENV} to the path of libnvxs"
            )
        errors = []
        self._lib = None
        for path in paths:
            try:
                self._lib = ctypes.CDLL(path)
                self.path = path
                break
            except OSError as exc:
                errors.append(f"{path}: {exc}")
        if self._lib is None:
            raise FaceDetectorUnavailable(
                "could not load the AnimeFace detector library: " + "; ".join(errors)
                + f" (reinstall 'animeface' or set {LIBRARY_ENV})"
            )
        self._bind()
        self._check_layout()
        self._lock = threading.Lock()

    def _bind(self) -> None:
        lib = self._lib
        mat = _P(_Matrix)
        try:
            lib.nv_gray.argtypes = [mat, mat]
            lib.nv_gray.restype = None
            lib.nv_gaussian5x5.argtypes = [mat, ctypes.c_int, mat, ctypes.c_int]
            lib.nv_gaussian5x5.restype = None
            lib.nv_laplacian1.argtypes = [mat, mat, ctypes.c_float]
            lib.nv_laplacian1.restype = None
            lib.nv_integral.argtypes = [mat, mat, ctypes.c_int]
            lib.nv_integral.restype = None
            lib.nv_face_detect.argtypes = [
                _P(_Position), ctypes.c_int, mat, mat, _P(_Rect),
                ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p,
                ctypes.c_float, ctypes.c_float, ctypes.c_float,
            ]
            lib.nv_face_detect.restype = ctypes.c_int
            lib.nv_face_analyze.argtypes = [_P(_Feature), _P(_Position), mat]
            lib.nv_face_analyze.restype = None
            lib.nv_matrix3d_alloc.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
            lib.nv_matrix3d_alloc.restype = _P(_Matrix)
            lib.nv_matrix_free.argtypes = [_P(_P(_Matrix))]
            lib.nv_matrix_free.restype = None
            lib.nv_srand.argtypes = [ctypes.c_ulong]
            lib.nv_srand.restype = None

            def weights(name: str) -> int:
                return ctypes.addressof(ctypes.c_char.in_dll(lib, name))

            self._dir_mlp = weights("nv_face_mlp_dir")
            self._detector_mlp = weights("nv_face_mlp_face_00")
            self._parts_mlp = weights("nv_face_mlp_parts")
            self._bagging = (ctypes.c_void_p * 3)(weights("nv_face_mlp_face_01"), weights("nv_face_mlp_face_02"), None)
        except (AttributeError, ValueError) as exc:
            raise FaceDetectorUnavailable(
                f"{self.path} is not a usable AnimeFace library (missing symbol: {exc}); reinstall 'animeface'"
            ) from exc

    def _check_layout(self) -> None:
        ptr = self._lib.nv_matrix3d_alloc(3, 2, 5)
        if not ptr:
            raise FaceDetectorUnavailable(f"{self.path}: nv_matrix3d_alloc failed")
        try:
            m = ptr.contents
            ok = (m.list, m.n, m.m, m.rows, m.cols, m.step, m.list_step) == (1, 3, 10, 2, 5, 3, 30)
        finally:
            self._lib.nv_matrix_free(ctypes.byref(ptr))
        if not ok:
            raise FaceDetectorUnavailable(
                f"{self.path}: unexpected nv_matrix_t layout; this build of libnvxs is not supported "
                "(install the 'animeface' wheel from PyPI)"
            )

    def detect(self, rgb: np.ndarray, *, scan: str = "fine") -> list[RawFace]:
        """Detect faces in an (H, W, 3) uint8 RGB image (no resizing here); ``scan``: a key of :data:`SCANS`."""
        if scan not in SCANS:
            raise ValueError(f"scan must be one of {', '.join(SCANS)}, got {scan!r}")
        step, scale_factor = SCANS[scan]
        if rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"expected an (H, W, 3) RGB image, got shape {rgb.shape}")
        h, w = rgb.shape[:2]
        if h < 1 or w < 1:
            return []
        bgr = _aligned_zeros((h, w, 3))
        bgr[...] = rgb[:, :, ::-1]
        gray = _aligned_zeros((h, w))
        smooth = _aligned_zeros((h, w))
        edge = _aligned_zeros((h, w))
        gray_integral = _aligned_zeros((h + 1, w + 1))
        edge_integral = _aligned_zeros((h + 1, w + 1))
        m_bgr, m_gray, m_smooth, m_edge, m_gi, m_ei = (
            _header(a) for a in (bgr, gray, smooth, edge, gray_integral, edge_integral)
        )
        lib = self._lib
        size = _Rect(0, 0, w, h)
        with self._lock:
            lib.nv_gray(m_gray, m_bgr)
            lib.nv_gaussian5x5(m_smooth, 0, m_gray, 0)
            lib.nv_laplacian1(m_edge, m_smooth, 4.0)
            lib.nv_integral(m_gi, m_gray, 0)
            lib.nv_integral(m_ei, m_edge, 0)
            positions = (_Position * MAX_FACES)()
            count = lib.nv_face_detect(
                positions, MAX_FACES, m_gi, m_ei, ctypes.byref(size),
                self._dir_mlp, self._detector_mlp, self._bagging, 2, self._parts_mlp,
                step, scale_factor, MIN_WINDOW,
            )
            faces = []
            for i in range(max(0, min(count, MAX_FACES))):
                pos = positions[i]
                feature = _Feature()
                lib.nv_srand(RANDOM_SEED)
                lib.nv_face_analyze(ctypes.byref(feature), ctypes.byref(pos), m_bgr)
                faces.append(
                    RawFace(
                        likelihood=float(pos.likelihood),
                        face=_rect(pos.face),
                        left_eye=_rect(pos.left_eye),
                        right_eye=_rect(pos.right_eye),
                        mouth=_rect(pos.mouth),
                        nose=(int(pos.nose.x), int(pos.nose.y)),
                        chin=(int(pos.chin.x), int(pos.chin.y)),
                        skin_color=_rgb(feature.skin_bgr),
                        hair_color=_rgb(feature.hair_bgr),
                        left_eye_color=_rgb(feature.left_eye_bgr[0]),
                        right_eye_color=_rgb(feature.right_eye_bgr[0]),
                    )
                )
        return faces  # the numpy buffers the headers point to lived until here


_DETECTOR: NativeDetector | None = None
_DETECTOR_PID: int | None = None
_DETECTOR_LOCK = threading.Lock()


def _after_fork_in_child() -> None:
    global _DETECTOR, _DETECTOR_PID, _DETECTOR_LOCK
    _DETECTOR_LOCK = threading.Lock()
    if _DETECTOR is not None:
        _DETECTOR._lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def get_detector() -> NativeDetector:
    """The detector of this process (created on first use, re-created after a fork)."""
    global _DETECTOR, _DETECTOR_PID
    pid = os.getpid()
    with _DETECTOR_LOCK:
        if _DETECTOR is None or _DETECTOR_PID != pid:
            _DETECTOR = NativeDetector()
            _DETECTOR_PID = pid
        return _DETECTOR
