"""Coverage-guided fuzzing of the wire decoder and the framer (atheris).

    pip install '.[fuzz]'
    python fuzz/decode.py -atheris_runs=2000000        # or -max_total_time=600

Any input may only give messages or raise ``WireError``; anything else --
another exception, a message that does not survive re-encoding -- is a
crash, which atheris reports with the input that caused it.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from blueprint_net._core import framing, wire
    from blueprint_net._core.errors import WireError


def one_input(data: bytes) -> None:
    try:
        message = wire.decode(data)
    except WireError:
        pass
    else:
        # What decodes re-encodes to the same bytes: the codec is exact.
        assert wire.encode(message) == data, (message, data)
    framer = framing.FrameDecoder(max_length=1 << 16)
    half = len(data) // 2
    try:
        bodies = framer.feed(data[:half]) + framer.feed(data[half:])
    except WireError:
        return
    whole = framing.FrameDecoder(max_length=1 << 16).feed(data)
    assert bodies == whole, "a split changed the frames"


if __name__ == "__main__":
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
