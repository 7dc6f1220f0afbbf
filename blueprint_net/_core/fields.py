"""Fields: the integer shapes, the field encoders and the strict field reader.

Layer: core (sans-IO; imports nothing from Twisted).

Every message family (``wire``, ``gossip_wire``, ``stream_wire``) is made of
the same few fields (``docs/protocol.md``, "Field types").  In: a field's
value (encoders) or a frame body (:class:`FieldReader`).  Out: the field's
bytes, or its value with the reader's position past it.  A reader has no
states beyond its position; any shortfall, bad UTF-8, bad option flag or
trailing byte is a :class:`~blueprint_net.errors.WireError` with a ``1xx``
code, and nothing else escapes.
"""

from __future__ import annotations

import struct
from typing import Callable, Optional, TypeVar

from blueprint_net._core.errors import ErrorCode, WireError

U16 = struct.Struct("!H")
U32 = struct.Struct("!I")
U64 = struct.Struct("!Q")
_FLAG_LENGTH = struct.Struct("!BI")


# -- encoding ---------------------------------------------------------------


def protocol_name(text: str) -> bytes:
    data = text.encode("utf-8")
    if not 1 <= len(data) <= 255:
        raise ValueError("a protocol name is 1 to 255 bytes of UTF-8")
    return data


def str16(text: str, limit: int = 65535) -> bytes:
    data = text.encode("utf-8")
    if len(data) > limit:
        # Cut at a character boundary: a UTF-8 continuation byte is 10xxxxxx.
        end = limit
        while data[end] & 0xC0 == 0x80:
            end -= 1
        data = data[:end]
    return U16.pack(len(data)) + data


def optional(data: Optional[bytes]) -> list[bytes]:
    return [b"\x00"] if data is None else [_FLAG_LENGTH.pack(1, len(data)), data]


# -- decoding ---------------------------------------------------------------


class FieldReader:
    """Reads fields off a frame body, turning every shortfall into a WireError."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 1  # past the type byte

    def take(self, size: int) -> bytes:
        end = self.pos + size
        if end > len(self.data):
            raise WireError(ErrorCode.TRUNCATED, "message ends inside a field")
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        value: int = U16.unpack(self.take(2))[0]
        return value

    def u32(self) -> int:
        value: int = U32.unpack(self.take(4))[0]
        return value

    def u64(self) -> int:
        value: int = U64.unpack(self.take(8))[0]
        return value

    def text(self, size: int) -> str:
        try:
            return self.take(size).decode("utf-8")
        except UnicodeDecodeError:
            raise WireError(ErrorCode.INVALID_UTF8, "text is not UTF-8") from None

    def bytes32(self) -> bytes:
        return self.take(self.u32())

    def optional(self) -> Optional[bytes]:
        flag = self.u8()
        if flag == 0:
            return None
        if flag == 1:
            return self.bytes32()
        raise WireError(ErrorCode.OUT_OF_RANGE, f"option flag {flag} is not 0 or 1")

    def protocol_name(self) -> str:
        size = self.u8()
        if size == 0:
            raise WireError(ErrorCode.OUT_OF_RANGE, "empty protocol name")
        return self.text(size)

    def end(self) -> None:
        if self.pos != len(self.data):
            raise WireError(
                ErrorCode.TRAILING_BYTES,
                f"{len(self.data) - self.pos} bytes after the message",
            )


_T = TypeVar("_T")


def read_whole(body: bytes, decoder: Callable[[FieldReader], _T]) -> _T:
    """``decoder``'s message from ``body``, which it must read to the end
    (``TRAILING_BYTES`` if not): the strict path of every message family."""
    reader = FieldReader(body)
    message = decoder(reader)
    reader.end()
    return message
