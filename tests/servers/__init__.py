"""Test servers: real nginx and nghttpd processes, and a scripted h2 peer.

Everything here runs in the test process (the peer) or as a child process
(nginx, nghttpd) bound to 127.0.0.1 only. Fixtures in ``tests/conftest.py``
start them once per session; the peer is started per test.
"""
