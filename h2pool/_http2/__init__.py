"""HTTP/2 connections: everything in this package runs on the I/O thread.

``connection.H2Conn`` is the connection the pool talks to (through
`h2pool._connection.Connection`); it owns one h2 state machine, a
``health.Health`` (timeouts, PING, write stalls) and a ``send.BodyScheduler``
(request bodies). ``protocol`` is h2 as h2pool configures it, ``fastpath`` the
measured shortcuts through it, ``hpack`` the memoised header compression.

House rule: h2's private state (attributes and methods with a leading underscore on
``H2Connection``, its streams, frame buffer and HPACK tables) is read or written only
in ``protocol.py``, ``fastpath.py`` and ``hpack.py``. Every such use names the h2
behaviour it changes and why, and ``tests/test_fastpath.py`` checks the fast paths
against h2's own code. ``connection.py``, ``health.py`` and ``send.py`` use h2's public
API and the small methods ``protocol._H2`` adds (``take_output``, ``ack_stream``, ...).
``h2<5`` is pinned in pyproject.toml for this reason.
"""
