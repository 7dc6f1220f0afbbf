"""``python -m blueprint_net.mpyc``: see :mod:`blueprint_net.mpyc.launch`."""

from blueprint_net.mpyc.launch import main

raise SystemExit(main())
