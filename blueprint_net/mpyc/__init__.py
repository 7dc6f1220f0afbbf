"""MPyC over blueprint-net: ``python -m blueprint_net.mpyc PROGRAM.py -M N``.

An optional integration (``pip install 'blueprint-net[mpyc]'``): an unchanged
MPyC program runs with each party a node with its own Ed25519 identity, the
parties linked by blueprint-net's TLS links and speaking over its durable
streams.  :mod:`blueprint_net.mpyc.launch` is the command (its command
line read by :mod:`blueprint_net.mpyc.options`),
:mod:`blueprint_net.mpyc.exchanger` the transport; ``docs/mpyc.md`` says how
to run it on one machine or several.

Importing this package imports neither MPyC nor a reactor.
"""
