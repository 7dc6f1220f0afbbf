"""An unchanged MPyC program over blueprint-net gives MPyC's own output.

Each run is a process group of its own (MPyC's ``-M 3`` leaves its parties
running after party 0 exits; ours waits for them), bounded by a timeout
and killed by its group id when the test ends.  Only loopback is used.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, closing, suppress
from pathlib import Path
from typing import Callable

import pytest

from tests.helpers import ROOT, tree_env

pytest.importorskip("mpyc", reason="MPyC is in the test extras (Python 3.10+)")

HELLO = ROOT / "examples" / "mpyc" / "helloworld.py"
#: Bound of one run of three parties (they take about 2 s on a quiet machine).
RUN_TIMEOUT = 90.0
#: MPyC's log line prefix (a time stamp) and the figures that vary per run.
STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ", re.MULTILINE)
FIGURES = re.compile(r"elapsed time: \S+\|bytes sent: \d+")
PEER_ID = r"12D3KooW[1-9A-HJ-NP-Za-km-z]+"

Run = Callable[..., "subprocess.CompletedProcess[str]"]


def written(directory: Path, name: str, text: str) -> Path:
    """An MPyC program ``text`` saved as ``directory/name``."""
    program = directory / name
    program.write_text(text)
    return program


def normalized(output: str) -> str:
    """Stdout without time stamps, elapsed time and byte count."""
    return FIGURES.sub("elapsed time: T|bytes sent: N", STAMP.sub("", output))


@pytest.fixture
def run() -> Iterator[Run]:
    """``run(*argv, cwd=...)``: one bounded run in a process group of its
    own; every group started is killed when the test ends."""
    groups: list[int] = []

    def start(
        *argv: str, cwd: Path = ROOT, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        process = subprocess.Popen(
            [sys.executable, *argv],
            cwd=cwd,
            env=env if env is not None else tree_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        groups.append(process.pid)
        try:
            out, err = process.communicate(timeout=RUN_TIMEOUT)
        except subprocess.TimeoutExpired:
            _kill(process.pid)
            out, err = process.communicate()
            pytest.fail(f"{argv} did not end in {RUN_TIMEOUT:g} s:\n{out}\n{err}")
        return subprocess.CompletedProcess(argv, process.returncode, out, err)

    yield start
    for group in groups:
        _kill(group)


def _kill(group: int) -> None:
    with suppress(ProcessLookupError):
        os.killpg(group, signal.SIGKILL)


def free_base_port(count: int) -> int:
    """A port b with b..b+count-1 free on 127.0.0.1 just now (MPyC's own
    transport listens on b+i for party i)."""
    for _ in range(50):
        with closing(socket.socket()) as probe:
            probe.bind(("127.0.0.1", 0))
            base: int = probe.getsockname()[1]
        if base + count > 65535:
            continue
        with ExitStack() as stack:
            try:
                for port in range(base, base + count):
                    sock = stack.enter_context(closing(socket.socket()))
                    sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return base
    raise AssertionError("no free port range on 127.0.0.1")


@pytest.mark.timeout(4 * RUN_TIMEOUT)
def test_helloworld_over_blueprint_net_prints_what_mpyc_prints(
    run: Run, tmp_path: Path
) -> None:
    base = str(free_base_port(3))
    # MPyC's parties listen on localhost (loopback) from port -B onwards.
    own = run(str(HELLO), "-M3", "-B", base, cwd=tmp_path)
    ours = run("-m", "blueprint_net.mpyc", str(HELLO), "-M3")

    assert own.returncode == 0, own.stderr
    assert ours.returncode == 0, ours.stderr
    assert "Hello world!Hello world!Hello world!\n" in own.stdout
    assert normalized(ours.stdout) == normalized(own.stdout)
    # ...and it went over blueprint-net: party 0's identity and TLS address.
    assert re.search(
        rf"party 0 of 3 is {PEER_ID}@127\.0\.0\.1:\d+ \(TLS\)", ours.stderr
    )


def _members(tmp_path: Path, count: int) -> tuple[list[Path], list[str]]:
    from blueprint_net._ops.keyfiles import load_or_create_identity

    keys = [tmp_path / f"party{i}.key" for i in range(count)]
    ids = [str(load_or_create_identity(key).peer_id) for key in keys]
    return keys, ids


@pytest.mark.timeout(2 * RUN_TIMEOUT)
def test_parties_named_by_peer_id_and_address_run_the_program(
    tmp_path: Path,
) -> None:
    """The form for several machines, here all on 127.0.0.1: the same
    --party list everywhere, each party its own key file."""
    keys, ids = _members(tmp_path, 3)
    base = free_base_port(3)
    listed: Sequence[str] = [
        arg
        for i, peer in enumerate(ids)
        for arg in ("--party", f"{peer}@127.0.0.1:{base + i}")
    ]
    processes = []
    try:
        for key in keys:
            processes.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        *("-m", "blueprint_net.mpyc", "--key", str(key)),
                        *listed,
                        str(HELLO),
                    ],
                    cwd=ROOT,
                    env=tree_env(),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    start_new_session=True,
                )
            )
        outputs = [p.communicate(timeout=RUN_TIMEOUT) for p in processes]
    finally:
        for process in processes:
            _kill(process.pid)
    for i, (process, (out, err)) in enumerate(zip(processes, outputs)):
        assert process.returncode == 0, err
        assert "Hello world!Hello world!Hello world!\n" in out
        assert f"party {i} of 3 is {ids[i]}@" in err


def test_a_party_list_without_this_party_is_one_line(run: Run, tmp_path: Path) -> None:
    keys, ids = _members(tmp_path, 3)
    result = run(
        "-m",
        "blueprint_net.mpyc",
        *("--key", str(keys[0])),
        *("--party", f"{ids[1]}@127.0.0.1:1", "--party", f"{ids[2]}@127.0.0.1:2"),
        str(HELLO),
    )
    assert result.returncode == 2
    assert result.stderr == (
        f"blueprint_net.mpyc: this party's peer id {ids[0]} is not in --party\n"
    )


#: An MPyC program whose messages are larger than one stream message
#: (exchanger.PART_SIZE) and than the default stream window (1 MiB): each
#: party sends every party 1,500,000 bytes.
LARGE = """\
from mpyc.runtime import mpc


async def main():
    await mpc.start()
    got = await mpc.transfer(bytes([mpc.pid]) * 1_500_000)
    print([(len(x), x[0], x == bytes([x[0]]) * 1_500_000) for x in got])
    await mpc.shutdown()

mpc.run(main())
"""

#: Party 1 dies after the parties are connected, without a word to the
#: others (its streams are not reset); party 0 then waits for its message.
FAILING = """\
import os
from mpyc.runtime import mpc


async def main():
    await mpc.start()
    if mpc.pid == 1:
        os._exit(3)
    print(await mpc.transfer(mpc.pid))
    await mpc.shutdown()

mpc.run(main())
"""


@pytest.mark.timeout(2 * RUN_TIMEOUT)
def test_a_message_larger_than_a_stream_message_arrives_whole(
    run: Run, tmp_path: Path
) -> None:
    program = written(tmp_path, "large.py", LARGE)
    result = run("-m", "blueprint_net.mpyc", str(program), "-M2", "--no-log")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "[(1500000, 0, True), (1500000, 1, True)]\n"


@pytest.mark.timeout(2 * RUN_TIMEOUT)
def test_a_party_that_fails_ends_the_run_naming_it(run: Run, tmp_path: Path) -> None:
    program = written(tmp_path, "failing.py", FAILING)
    result = run("-m", "blueprint_net.mpyc", str(program), "-M3", "--no-log")
    assert result.returncode == 1
    assert "blueprint_net.mpyc: party 1 failed (status 3); stopping\n" in result.stderr


#: Each party leaves a file open, reachable from a module (MPyC's runtime):
#: Python flushes it as it tears the modules down at exit; a stream whose
#: flush fails (detached) must not stop that; and a non-daemon thread's
#: work finishes before the process ends, as Python waits for it.
UNCLOSED = """\
import io
import threading
import time
from mpyc.runtime import mpc

mpc.run(mpc.start())
detached = io.TextIOWrapper(io.BytesIO())
detached.detach()
mpc.left_open = open(f"party{mpc.pid}.txt", "w")
mpc.left_open.write(f"party {mpc.pid} wrote this")


def later():
    time.sleep(0.3)
    with open(f"thread{mpc.pid}.txt", "w") as done:
        done.write("a thread's work")


threading.Thread(target=later).start()
mpc.run(mpc.shutdown())
"""


@pytest.mark.timeout(2 * RUN_TIMEOUT)
def test_what_a_party_left_unclosed_is_written_when_it_ends(
    run: Run, tmp_path: Path
) -> None:
    program = written(tmp_path, "unclosed.py", UNCLOSED)
    result = run(
        "-m", "blueprint_net.mpyc", str(program), "-M3", "--no-log", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    for i in range(3):
        assert (tmp_path / f"party{i}.txt").read_text() == f"party {i} wrote this"
        assert (tmp_path / f"thread{i}.txt").read_text() == "a thread's work"


#: Party 0 is killed once the parties are connected; the others wait for
#: it in ``shutdown``.
ORPHANING = """\
import os
import signal
from mpyc.runtime import mpc

mpc.run(mpc.start())
if mpc.pid == 0:
    os.kill(os.getpid(), signal.SIGKILL)
mpc.run(mpc.shutdown())
"""


@pytest.mark.timeout(2 * RUN_TIMEOUT)
def test_the_parties_stop_when_party_0_is_killed(tmp_path: Path) -> None:
    """Each forked party holds only its own end of its own pipe, so each
    sees party 0 go away and nothing is left running."""
    program = written(tmp_path, "orphaning.py", ORPHANING)
    process = subprocess.Popen(
        [sys.executable, "-m", "blueprint_net.mpyc", str(program), "-M4", "--no-log"],
        cwd=ROOT,
        env=tree_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        assert process.wait(timeout=RUN_TIMEOUT) == -signal.SIGKILL
        deadline = time.monotonic() + RUN_TIMEOUT
        while _group_alive(process.pid):
            assert time.monotonic() < deadline, "a party outlived party 0"
            time.sleep(0.05)
    finally:
        _kill(process.pid)


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


#: Two start/shutdown rounds (each start has its own streams), and party 1
#: late to the first: what the others send it meanwhile waits for it.
TWICE = """\
import time
from mpyc.runtime import mpc

if mpc.pid == 1:
    time.sleep(1)
for round in range(2):
    mpc.run(mpc.start())
    print(round, mpc.run(mpc.transfer(mpc.pid * 10 + round)))
    mpc.run(mpc.shutdown())
"""


@pytest.mark.timeout(3 * RUN_TIMEOUT)
def test_a_program_that_starts_twice_prints_what_mpyc_prints(
    run: Run, tmp_path: Path
) -> None:
    program = written(tmp_path, "twice.py", TWICE)
    base = str(free_base_port(3))
    own = run(str(program), "-M3", "-B", base, "--no-log", cwd=tmp_path)
    ours = run("-m", "blueprint_net.mpyc", str(program), "-M3", "--no-log")
    assert own.returncode == 0, own.stderr
    assert ours.returncode == 0, ours.stderr
    assert own.stdout == "0 [0, 10, 20]\n1 [1, 11, 21]\n"
    assert ours.stdout == own.stdout


def test_without_mpyc_it_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A plain install has no MPyC (it is the ``mpyc`` extra): one line
    saying so, not a traceback from deep in the launcher."""
    import importlib.util

    from blueprint_net.mpyc import launch

    real = importlib.util.find_spec

    def find_spec(name: str, *rest: object) -> object:
        return None if name == "mpyc" else real(name, *rest)  # type: ignore[arg-type]

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    assert launch.main([str(HELLO), "-M3"]) == 2
    assert capsys.readouterr().err == (
        "blueprint_net.mpyc: MPyC is not installed:"
        " pip install 'blueprint-net[mpyc]' (Python 3.10 or later)\n"
    )


def test_without_fork_m_n_says_to_use_party(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Where there is no ``fork`` (Windows), ``-M N`` cannot start the
    parties: one line naming the form that works there."""
    from blueprint_net.mpyc import launch

    monkeypatch.delattr(os, "fork")
    assert launch.main([str(HELLO), "-M3"]) == 2
    assert capsys.readouterr().err == (
        "blueprint_net.mpyc: -M N forks the parties, which this system cannot;"
        " start each party with --party (docs/mpyc.md)\n"
    )


#: A program that embeds the launcher, with an exit handler of its own.
EMBEDDING = """\
import atexit
import os
import sys

from blueprint_net.mpyc.launch import exit_now, main

atexit.register(lambda: open(f"handler-ran-in-{os.getpid()}", "w").close())
exit_now(main([sys.argv[1], "-M3", "--no-log"]))
"""


@pytest.mark.timeout(2 * RUN_TIMEOUT)
def test_a_forked_party_runs_none_of_party_0s_exit_handlers(
    run: Run, tmp_path: Path
) -> None:
    embedding = written(tmp_path, "embedding.py", EMBEDDING)
    result = run(str(embedding), str(HELLO), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert len(list(tmp_path.glob("handler-ran-in-*"))) == 1  # party 0's only
