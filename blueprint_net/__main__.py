"""``python -m blueprint_net``: the ``blueprint-net`` command."""

from .cli import main

main()
