"""Framing: a message as it travels, and a byte stream split back into frames.

Layer: core (sans-IO; imports nothing from Twisted).

A frame is a u32 big-endian length, then that many body bytes
(``docs/protocol.md``, section 1).  In, sending: a message (``wire``'s, or a
family's body from ``gossip_wire``/``stream_wire``); out: the frame's bytes
(:func:`frame`, :func:`frame_body`), or the same bytes as chunks for
``writeSequence`` (:func:`frame_chunks`).  In, receiving: the bytes of each
read; out: every frame body now complete (:class:`FrameDecoder`, whose only
state is the partial frame it holds).  A length over the limit is a
``FRAME_TOO_LARGE`` :class:`~blueprint_net.errors.WireError`, after which the
stream is unusable.
"""

from __future__ import annotations

import struct
from typing import Optional, Union

from blueprint_net._core.errors import ErrorCode, WireError
from blueprint_net._core.fields import U32, optional, protocol_name
from blueprint_net._core.wire import (
    HANDSHAKE_MAX_FRAME,
    T_PROTOCOL,
    T_REQUEST,
    ErrorResponse,
    Message,
    ProtocolResponse,
    Request,
    Response,
    body_parts,
)

_HEADER = U32
# A frame's length prefix with the fixed fields of a small request or
# Protocol response, in one call (see frame_chunks).
_HEAD_REQUEST = struct.Struct("!IBIB")
_HEAD_PROTOCOL = struct.Struct("!IBII")
#: See :meth:`FrameDecoder.feed`: reads under this size are merged into the
#: previous piece of a pending frame while that piece is under _MERGE_BELOW.
_SMALL_READ = 1024
_MERGE_BELOW = 16 * 1024
#: See :func:`frame_chunks`.
LARGE_PART = 16 * 1024


def frame_body(body: bytes) -> bytes:
    """A frame of ``body``: a u32 big-endian length, then the body."""
    return _HEADER.pack(len(body)) + body


def frame(message: Message) -> bytes:
    """The message as it travels: a u32 big-endian length, then the body."""
    parts = body_parts(message)
    parts.insert(0, _HEADER.pack(sum(map(len, parts))))
    return b"".join(parts)


def oversized(response: Response, max_frame: int) -> ErrorResponse:
    """What answers in place of a response past the frame limit: the handler
    worked, but its answer cannot travel in one frame (section 6)."""
    return ErrorResponse(
        response.request_id,
        ErrorCode.PAYLOAD_TOO_LARGE,
        f"the response exceeds the frame limit of {max_frame} bytes",
    )


def frame_chunks(message: Message, max_body: Optional[int] = None) -> list[bytes]:
    """The same bytes as :func:`frame`, as a list for ``writeSequence``;
    ``ValueError`` for a body over ``max_body``.

    A payload of :data:`LARGE_PART` bytes or more stays a chunk of its own:
    the transport copies it once, into its send buffer, instead of once more
    into the frame first.  Smaller frames are one chunk.
    """
    # The two messages of every request, when small, packed in one call and
    # joined once (the general path below gives the same bytes; tested).
    if type(message) is ProtocolResponse:
        data = message.data
        size = 9 + len(data)
        if size < LARGE_PART and (max_body is None or size <= max_body):
            request_id = message.request_id
            return [_HEAD_PROTOCOL.pack(size, T_PROTOCOL, request_id, len(data)) + data]
    elif type(message) is Request:
        whole = _small_request(
            message.request_id,
            message.protocol,
            message.payload,
            message.metadata,
            max_body,
        )
        if whole is not None:
            return [whole]
    parts = body_parts(message)
    size = sum(map(len, parts))
    if max_body is not None and size > max_body:
        kind = type(message).__name__.lower()
        raise ValueError(
            f"a {kind} of {size} bytes exceeds the frame limit of {max_body}"
        )
    header = _HEADER.pack(size)
    if size < LARGE_PART:
        parts.insert(0, header)
        return [b"".join(parts)]
    chunks: list[bytes] = []
    small = [header]
    for part in parts:
        if len(part) >= LARGE_PART:
            chunks.append(b"".join(small))
            chunks.append(part)
            small = []
        else:
            small.append(part)
    if small:
        chunks.append(b"".join(small))
    return chunks


def request_chunks(
    request_id: int,
    protocol: str,
    payload: bytes,
    metadata: Optional[bytes],
    max_body: Optional[int] = None,
) -> list[bytes]:
    """``frame_chunks`` of the :class:`Request` with these fields, without
    making one when it is small (a request sent is framed at once)."""
    whole = _small_request(request_id, protocol, payload, metadata, max_body)
    if whole is not None:
        return [whole]
    return frame_chunks(Request(request_id, protocol, payload, metadata), max_body)


def _small_request(
    request_id: int,
    protocol: str,
    payload: bytes,
    metadata: Optional[bytes],
    max_body: Optional[int],
) -> Optional[bytes]:
    """A request's whole frame in one join, when it is under
    :data:`LARGE_PART` and the limit; None: the general path decides."""
    if len(payload) >= LARGE_PART:
        return None
    name = protocol_name(protocol)
    size = 10 + len(name) + len(payload)
    size += 1 if metadata is None else 5 + len(metadata)
    if size >= LARGE_PART or (max_body is not None and size > max_body):
        return None
    head = _HEAD_REQUEST.pack(size, T_REQUEST, request_id, len(name))
    return b"".join((head, name, U32.pack(len(payload)), payload, *optional(metadata)))


class FrameTooLarge(WireError):
    """A length prefix over the limit (``FRAME_TOO_LARGE``), with what the
    read held before it: ``frames``, the bodies complete before it, and
    ``rest``, the bytes from its length prefix on (the decoder holds nothing
    then).  A frame behind a proof is read under the ``Verified`` limit
    (``docs/protocol.md``, section 1), so the connection may take ``rest``
    again once the proof is accepted."""

    def __init__(self, message: str, frames: list[bytes], rest: bytes) -> None:
        super().__init__(ErrorCode.FRAME_TOO_LARGE, message)
        self.frames, self.rest = frames, rest


class FrameDecoder:
    """Splits a byte stream into frame bodies in time linear in its length.

    Unlike ``IntNStringReceiver`` (twisted#6358), which re-copies its whole
    buffer on every read, a frame that arrives in many reads is kept as a list
    of those reads -- O(1) per read -- and joined once, when complete, into
    the body: each byte is copied once.  Each length prefix is checked against
    ``max_length`` as soon as its four bytes are in, before the body is kept;
    a frame longer than ``capped_length`` whose type byte (the body's first)
    is in ``capped_types`` is refused as soon as that byte is in, so a type
    with a smaller limit than requests (gossip's) is never buffered whole.
    Until that byte is in, the frame's prefix is held unparsed, so that the
    reads of its body are not checked one by one; the read that brings the
    byte is then copied once more, with the prefix, as the read after a
    split prefix is.
    """

    __slots__ = (
        "_needed",
        "_partial",
        "buffered",
        "capped_length",
        "capped_types",
        "max_length",
    )

    def __init__(self, max_length: int = HANDSHAKE_MAX_FRAME) -> None:
        #: Reads held back: a partial length prefix, or the start of a body
        #: (the prefix already parsed and dropped).
        self._partial: list[Union[bytes, memoryview]] = []
        #: Bytes held waiting for the rest of a frame.
        self.buffered = 0
        #: Body bytes the current frame needs; 0 while the prefix is partial.
        self._needed = 0
        self.max_length = max_length
        #: Types whose frames may be at most ``capped_length`` bytes (none
        #: by default): see :meth:`cap`.
        self.capped_types = range(0)
        self.capped_length = max_length

    def cap(self, types: range, length: int) -> None:
        """Frames whose type byte is in ``types`` may be at most ``length``
        bytes (less than ``max_length``): those whose prefix is parsed from
        now on (a node caps before the first read)."""
        self.capped_types, self.capped_length = types, length

    def _check_type(self, first: int, length: int) -> None:
        """The first body byte of a frame of ``length`` bytes is ``first``."""
        if first in self.capped_types:
            raise WireError(
                ErrorCode.FRAME_TOO_LARGE,
                f"frame of type 0x{first:02x} and {length} bytes exceeds"
                f" its type's limit of {self.capped_length}",
            )

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return every frame body now complete.

        Raises :class:`FrameTooLarge` for a length over the limit (and
        :class:`WireError` for a capped type's); the stream is then unusable
        under this limit, since its framing is lost.
        """
        frames: list[bytes] = []
        if self._needed:
            partial = self._partial
            if len(data) < _SMALL_READ and len(partial[-1]) < _MERGE_BELOW:
                # Bound the per-piece overhead a peer dribbling tiny reads
                # could cost: every piece kept is >= 1 KiB or precedes one.
                partial[-1] = b"".join((partial[-1], data))
            else:
                partial.append(data)
            self.buffered += len(data)
            over = self.buffered - self._needed
            if over < 0:
                return frames  # a large frame still arriving: O(1) per read
            data = b""
            if over:  # the last piece runs into the next frame: split it
                last = memoryview(partial[-1])
                partial[-1], data = last[: len(last) - over], bytes(last[-over:])
            frames.append(b"".join(partial))
            self._partial, self.buffered, self._needed = [], 0, 0
        elif self._partial:
            data = b"".join(self._partial) + data
            self._partial, self.buffered = [], 0
        pos = 0
        size = len(data)
        unpack = _HEADER.unpack_from
        limit, capped = self.max_length, self.capped_length
        while size - pos >= 4:
            (length,) = unpack(data, pos)
            if length > limit:
                raise FrameTooLarge(
                    f"frame of {length} bytes exceeds the limit of {limit}",
                    frames,
                    bytes(data[pos:]),
                )
            start = pos + 4
            end = start + length
            if length > capped:
                if start == size:
                    # Its type byte is not in yet: keep the prefix, to read
                    # again with the next read (no check per piece after).
                    break
                self._check_type(data[start], length)
            if end > size:
                # A view, not a copy: the body is copied once, by the join.
                # It keeps this whole read alive: at most one read (64 KiB
                # from Twisted's TCP transport) beyond ``buffered``.
                self._partial = [memoryview(data)[start:]]
                self.buffered = size - start
                self._needed = length
                return frames
            frames.append(data[start:end])
            pos = end
        if pos < size:
            self._partial = [data[pos:] if pos else data]
            self.buffered = size - pos
        return frames
