"""A minimal protobuf wire-format reader (no generated code, no protobuf package).

Only what reading ``.caffemodel`` files needs: iterate the fields of a message
held in a ``memoryview``, decode varints, and view packed float arrays as numpy
arrays without copying.  Every length is checked against the buffer, so a
truncated or corrupted file raises :class:`WireError` instead of reading past
the end or allocating memory it does not have.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

VARINT, FIXED64, LENGTH_DELIMITED, START_GROUP, END_GROUP, FIXED32 = 0, 1, 2, 3, 4, 5


class WireError(ValueError):
    """The bytes are not a well-formed protobuf message."""


@dataclass(frozen=True)
class Field:
    """One field occurrence: its number, wire type and raw value.

    ``value`` is an ``int`` for varint/fixed fields and a ``memoryview`` slice for
    length-delimited ones (sub-messages, strings, packed arrays).
    """

    number: int
    wire_type: int
    value: int | memoryview
    offset: int


def read_varint(buf: memoryview, pos: int, end: int) -> tuple[int, int]:
    """Decode a base-128 varint at ``pos``; return ``(value, new_pos)``."""
    result = 0
    shift = 0
    while True:
        if pos >= end:
            raise WireError(f"truncated varint at byte {pos}")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise WireError(f"varint longer than 10 bytes at byte {pos}")


def iter_fields(buf: memoryview, base_offset: int = 0) -> Iterator[Field]:
    """Yield the fields of one message, in file order."""
    pos, end = 0, len(buf)
    while pos < end:
        start = pos
        key, pos = read_varint(buf, pos, end)
        number, wire_type = key >> 3, key & 7
        if number == 0:
            raise WireError(f"field number 0 at byte {base_offset + start}")
        if wire_type == VARINT:
            value, pos = read_varint(buf, pos, end)
        elif wire_type == FIXED32:
            if pos + 4 > end:
                raise WireError(f"truncated fixed32 at byte {base_offset + pos}")
            value = int.from_bytes(buf[pos : pos + 4], "little")
            pos += 4
        elif wire_type == FIXED64:
            if pos + 8 > end:
                raise WireError(f"truncated fixed64 at byte {base_offset + pos}")
            value = int.from_bytes(buf[pos : pos + 8], "little")
            pos += 8
        elif wire_type == LENGTH_DELIMITED:
            length, pos = read_varint(buf, pos, end)
            if pos + length > end:
                raise WireError(
                    f"field {number} at byte {base_offset + start} claims {length} bytes "
                    f"but only {end - pos} remain (file truncated?)"
                )
            value = buf[pos : pos + length]
            pos += length
        else:
            # Groups are deprecated and never used by caffe.proto.
            raise WireError(f"unsupported wire type {wire_type} at byte {base_offset + start}")
        yield Field(number, wire_type, value, base_offset + start)


def fixed32_to_float(value: int) -> float:
    return float(np.array([value], dtype="<u4").view("<f4")[0])


def as_str(field: Field) -> str:
    if not isinstance(field.value, memoryview):
        raise WireError(f"field {field.number} at byte {field.offset} is not a string")
    return bytes(field.value).decode("utf-8", errors="replace")


def packed_varints(field: Field) -> list[int]:
    """Values of a repeated integer field, packed or not (one occurrence)."""
    if isinstance(field.value, int):
        return [field.value]
    out = []
    pos, end = 0, len(field.value)
    while pos < end:
        v, pos = read_varint(field.value, pos, end)
        out.append(v)
    return out


def packed_array(field: Field, dtype: str) -> np.ndarray:
    """A packed float/double array as a zero-copy numpy view (little-endian)."""
    if not isinstance(field.value, memoryview):
        raise WireError(f"field {field.number} at byte {field.offset} is not a packed array")
    itemsize = np.dtype(dtype).itemsize
    if len(field.value) % itemsize:
        raise WireError(
            f"packed array at byte {field.offset} has {len(field.value)} bytes, "
            f"not a multiple of {itemsize}"
        )
    return np.frombuffer(field.value, dtype=dtype)


def to_signed32(value: int) -> int:
    """Interpret a varint as an int32 (negative numbers are sign-extended to 64 bits)."""
    value &= 0xFFFFFFFFFFFFFFFF
    if value >= 1 << 63:
        value -= 1 << 64
    return value
