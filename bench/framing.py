"""A 16 MiB frame delivered in 1,460-byte pieces against 64 KiB pieces.

The reference is Twisted's ``Int32StringReceiver`` (quadratic, twisted#6358),
fed the same pieces in the same run.
"""

from __future__ import annotations

import statistics
import time

from twisted.protocols.basic import Int32StringReceiver

from blueprint_net._core.framing import FrameDecoder

from . import report
from .report import Row

FRAME = 16 * 1024 * 1024


def _pieces(size: int, piece: int) -> list[bytes]:
    data = size.to_bytes(4, "big") + bytes(size)
    return [data[i : i + piece] for i in range(0, len(data), piece)]


def _time_framer(pieces: list[bytes]) -> float:
    framer = FrameDecoder(max_length=FRAME)
    start = time.perf_counter()
    got = [body for piece in pieces for body in framer.feed(piece)]
    elapsed = time.perf_counter() - start
    assert [len(body) for body in got] == [sum(map(len, pieces)) - 4]
    return elapsed


class _Sink(Int32StringReceiver):
    MAX_LENGTH = FRAME

    def __init__(self) -> None:
        self.count = 0

    def stringReceived(self, string: bytes) -> None:
        self.count += 1


def _time_int32(pieces: list[bytes]) -> float:
    sink = _Sink()
    start = time.perf_counter()
    for piece in pieces:
        sink.dataReceived(piece)
    elapsed = time.perf_counter() - start
    assert sink.count == 1
    return elapsed


def run(quick: bool = False) -> list[Row]:
    size = FRAME  # in quick mode too: the row is defined by the 16 MiB frame
    if report.SMOKE:
        size = 1024 * 1024  # the rows are named for it
    repeats = 1 if quick else 5
    small, large = _pieces(size, 1460), _pieces(size, 65536)
    quarter = _pieces(size // 4, 1460)
    ours_small = statistics.median(_time_framer(small) for _ in range(repeats))
    ours_large = statistics.median(_time_framer(large) for _ in range(repeats))
    ours_quarter = statistics.median(_time_framer(quarter) for _ in range(repeats))
    ref_small = statistics.median(_time_int32(small) for _ in range(min(repeats, 3)))
    ref_large = statistics.median(_time_int32(large) for _ in range(repeats))
    ref_quarter = statistics.median(_time_int32(quarter) for _ in range(repeats))
    mib = size // (1024 * 1024)
    label = f"{mib} MiB frame" if mib else f"{size // 1024} KiB frame"
    return [
        Row(
            f"framer {label}, 1460 B pieces (ms)",
            ours_small * 1e3,
            ref_small * 1e3,
            "ref: Int32StringReceiver",
        ),
        Row(
            f"framer {label}, 64 KiB pieces (ms)",
            ours_large * 1e3,
            ref_large * 1e3,
            "ref: Int32StringReceiver",
        ),
        Row(
            f"framer {label}, 1460 B / 64 KiB cost",
            ours_small / ours_large,
            ref_small / ref_large,
            "target <= 1.5 (floor: per-read call cost)",
        ),
        Row(
            "framer 1460 B pieces, cost/byte: frame x4",
            (ours_small / size) / (ours_quarter / (size // 4)),
            (ref_small / size) / (ref_quarter / (size // 4)),
            "1.0 = linear; ref: Int32StringReceiver",
        ),
    ]
