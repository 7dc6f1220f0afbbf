"""The Twisted adapters: the ``Protocol`` around a sans-IO connection, the
node facade with its peer table and request dispatch, the connection
limiter, TLS endpoints and the ban store."""
