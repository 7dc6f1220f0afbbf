"""Benchmarks; ``python -m bench`` runs them all and prints one table."""

from blueprint_net import Settings

#: The benchmarks measure plain TCP against a raw-TCP reference on loopback
#: (``bench.tls`` measures TLS): their nodes opt in to plaintext explicitly.
PLAINTEXT = Settings(allow_plaintext=True)


def child_env() -> dict[str, str]:
    """The environment of a benchmark's child processes: this tree first on
    ``PYTHONPATH`` (its code is what is measured), and bytecode caching on
    even where ``PYTHONDONTWRITEBYTECODE`` is set (an installed package has
    its ``.pyc`` files; without them every process would compile
    blueprint-net's sources, which an installed MPyC never does)."""
    import os
    from pathlib import Path

    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env
