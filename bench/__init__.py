"""Benchmarks; ``python -m bench`` runs them all and prints one table."""

from blueprint_net import Settings

#: The benchmarks measure plain TCP against a raw-TCP reference on loopback
#: (``bench.tls`` measures TLS): their nodes opt in to plaintext explicitly.
PLAINTEXT = Settings(allow_plaintext=True)
