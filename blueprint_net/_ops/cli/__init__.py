"""``blueprint-net``: keys, requests, a node's status, and its ban database.

Layer: ops (the operator surface).

Exit status: 0 success; 1 the operation failed (the peer answered with an
Error, a request timed out, nothing to unban); 2 bad usage; 3 the node could
not be reached or the handshake failed; 4 a local file (key, ban database)
could not be used.  ``--json`` prints one JSON document instead of text.
"""

from blueprint_net._ops.cli.common import BAD_FILE, FAILED, OK, UNREACHABLE, USAGE
from blueprint_net._ops.cli.main import main

__all__ = ["BAD_FILE", "FAILED", "OK", "UNREACHABLE", "USAGE", "main"]
