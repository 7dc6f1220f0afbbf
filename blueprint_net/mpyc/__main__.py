"""``python -m blueprint_net.mpyc``: see :mod:`blueprint_net.mpyc.launch`."""

from blueprint_net.mpyc.launch import exit_now, main

exit_now(main())
