"""The sans-IO protocol: identities, signatures, the wire format, the
handshake and request state machines, and the errors.  Bytes and events in,
bytes and events out; nothing here imports Twisted or touches a socket."""
