"""Pure decisions: addresses and subnets, bans, misbehaviour scores,
connection and request limits, and the settings that tune them.  No Twisted,
no I/O; storage sits behind an interface that the adapters implement."""
