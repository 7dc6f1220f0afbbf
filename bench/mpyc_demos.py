"""MPyC over blueprint-net: the wall time of MPyC's demos, unchanged, with 3
and 5 parties, against MPyC's own TCP and MPyC's own TLS (``--ssl``).

Each run is one command, timed from its start to its exit (party 0 exits
after the others, in both launchers), so it counts everything a user
waits for: starting N Python processes, importing, linking the parties
(TLS handshakes included), the computation and the goodbyes:

- ours: ``python -m blueprint_net.mpyc PROG -M N [args]``;
- MPyC's own TCP: ``python PROG -M N -B PORT [args]``;
- MPyC's own TLS: the same with ``--ssl``, which reads a CA certificate and
  one certificate and key per party from ``.config/`` in the current
  directory (``mpyc_ca.crt``, ``party_I.crt``, ``party_I.key``; MPyC's
  ``demos/.config/generate-certificates.py`` makes them): made here, as
  that script does (RSA 2048, CN ``MPyC party I``), in a temporary
  directory that every run uses as its working directory.

The three are interleaved, run after run, so drift in the machine's load
hits them alike; the figure is the median.  The programs are the unchanged
copies in ``examples/mpyc/``.  Every run has a timeout (its process group
is killed past it); a run that fails or times out is reported, not timed.
MPyC's own ``-B`` base port is drawn at random per run (its default,
11365, may be in use by another run on a shared machine).
"""

from __future__ import annotations

import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

from . import child_env, report
from .report import Row

ROOT = Path(__file__).resolve().parents[1]
DEMOS_DIR = ROOT / "examples" / "mpyc"
#: (program, its arguments): short-running demos.  secretsanta's argument
#: is the largest derangement (its default 8 takes several seconds).
DEMOS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("helloworld.py", ()),
    ("oneliners.py", ()),
    ("unanimous.py", ()),
    ("secretsanta.py", ("4",)),
)
PARTIES = (3, 5)
#: Runs of each (demo, parties, transport): full, quick; smoke: 1.
REPEATS = (5, 2)
#: Seconds one run may take before its processes are killed.
RUN_TIMEOUT = 120.0
#: The goal: blueprint-net at most this many times MPyC's own TLS.
GOAL = 1.25
TRANSPORTS = ("blueprint-net", "MPyC TCP", "MPyC TLS")


def write_certificates(directory: Path, parties: int) -> None:
    """MPyC's ``--ssl`` files for ``parties`` parties in ``directory``, made
    as its ``demos/.config/generate-certificates.py`` makes them."""
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.hashes import SHA256
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
    )

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, common)])

    def certificate(
        subject: str, key: rsa.RSAPrivateKey, ca_key: rsa.RSAPrivateKey, serial: int
    ) -> x509.Certificate:
        ca = subject == "MPyC Certification Authority"
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(subject))
            .issuer_name(name("MPyC Certification Authority"))
            .public_key(key.public_key())
            .serial_number(serial)
            .not_valid_before(datetime(2018, 9, 13, tzinfo=timezone.utc))
            .not_valid_after(datetime(2048, 3, 11, tzinfo=timezone.utc))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                False,
            )
        )
        if ca:
            builder = builder.add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False
            ).add_extension(
                x509.KeyUsage(
                    True, False, False, False, False, True, False, False, False
                ),
                False,
            )
        return builder.sign(ca_key, SHA256())

    def save(path: Path, key: rsa.RSAPrivateKey, crt: x509.Certificate) -> None:
        path.with_suffix(".key").write_bytes(
            key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
        )
        path.with_suffix(".crt").write_bytes(crt.public_bytes(Encoding.PEM))

    directory.mkdir(parents=True, exist_ok=True)
    ca_key = rsa.generate_private_key(65537, 2048)
    save(
        directory / "mpyc_ca",
        ca_key,
        certificate("MPyC Certification Authority", ca_key, ca_key, 1),
    )
    for i in range(parties):
        key = rsa.generate_private_key(65537, 2048)
        crt = certificate(f"MPyC party {i}", key, ca_key, 2**16 * 5**5 + i)
        save(directory / f"party_{i}", key, crt)


def command(transport: str, program: str, args: tuple[str, ...], n: int) -> list[str]:
    path = str(DEMOS_DIR / program)
    if transport == "blueprint-net":
        return [sys.executable, "-m", "blueprint_net.mpyc", path, f"-M{n}", *args]
    port = ["-B", str(random.randrange(20_000, 30_000, 10))]
    ssl = ["--ssl"] if transport == "MPyC TLS" else []
    return [sys.executable, path, f"-M{n}", *port, *ssl, *args]


def timed(argv: list[str], cwd: Path) -> tuple[Optional[float], str]:
    """Wall seconds of one run (None if it failed or timed out), and why."""
    env = child_env()
    start = time.perf_counter()
    process = subprocess.Popen(
        argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own group: a timeout kills the parties too
    )
    try:
        _, err = process.communicate(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        return None, f"timed out after {RUN_TIMEOUT:g} s"
    elapsed = time.perf_counter() - start
    if process.returncode != 0:
        tail = err.decode(errors="replace").strip().splitlines()[-1:]
        return None, f"status {process.returncode}: {' '.join(tail)}"
    return elapsed, ""


def measure(
    demos: tuple[tuple[str, tuple[str, ...]], ...],
    parties: tuple[int, ...],
    repeats: int,
) -> tuple[dict[tuple[str, int, str], list[float]], list[str]]:
    """Wall times by (program, parties, transport), interleaved; and the
    failures."""
    times: dict[tuple[str, int, str], list[float]] = {}
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-mpyc-") as work:
        cwd = Path(work)
        write_certificates(cwd / ".config", max(parties))
        for _ in range(repeats):
            for program, args in demos:
                for n in parties:
                    for transport in TRANSPORTS:
                        key = (program, n, transport)
                        seconds, why = timed(command(transport, program, args, n), cwd)
                        if seconds is None:
                            failures.append(f"{program} -M{n} over {transport}: {why}")
                        else:
                            times.setdefault(key, []).append(seconds)
    return times, failures


async def run(reactor: Any, quick: bool = False) -> list[Row]:
    demos = DEMOS[:1] if report.SMOKE else DEMOS
    parties = PARTIES[:1] if report.SMOKE else PARTIES
    repeats = 1 if report.SMOKE else REPEATS[1 if quick else 0]
    before = report.load_now()
    times, failures = measure(demos, parties, repeats)
    load = f"; load {before} before, {report.load_now()} after"
    for failure in failures:
        print(f"mpyc bench: {failure}", file=sys.stderr)

    def median(key: tuple[str, int, str]) -> Optional[float]:
        values = times.get(key)
        return statistics.median(values) if values else None

    rows = []
    for program, args in demos:
        shown = " ".join((program, *args))
        for n in parties:
            tls = median((program, n, "MPyC TLS"))
            note = f"ref: MPyC's own --ssl; median of {repeats}"
            for transport, extra in (
                ("blueprint-net", f"; goal <= {GOAL:g}"),
                ("MPyC TCP", ""),
            ):
                ours = median((program, n, transport))
                done = len(times.get((program, n, transport), []))
                failed = f"; {repeats - done} runs FAILED" if done < repeats else ""
                rows.append(
                    Row(
                        f"mpyc {shown} -M{n} over {transport} (s)",
                        0.0 if ours is None else ours,
                        tls,
                        note + extra + failed + load,
                    )
                )
    return rows
