"""``python -m blueprint_net``: the ``blueprint-net`` command."""

from blueprint_net._ops.cli import main

main()
