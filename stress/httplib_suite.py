"""CPython's own ``Lib/test/test_httplib.py`` run against h2pool's http.client classes.

    python3 stress/httplib_suite.py            # h2pool's HTTPConnection/HTTPSConnection
    python3 stress/httplib_suite.py --stock    # the stdlib's, for the reference figure

``http.client.HTTPConnection`` and ``HTTPSConnection`` are replaced before the test
module is imported, so its own subclasses (``FakeSocketHTTPConnection``...) derive from
h2pool's. Offline: the ``network`` resource is off, so the networked tests skip. Prints
one line per test that did not pass, then ``passed N failed M skipped K`` (a test with
subtests counts once: it passed only if all of them did). Needs the interpreter's
``test`` package (``python3 -m test.test_httplib`` must import).
"""

from __future__ import annotations

import argparse
import http.client
import os
import sys
import unittest


class _Tally(unittest.TextTestResult):
    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.bad: dict[str, str] = {}

    def _note(self, test: unittest.TestCase, err: object, kind: str) -> None:
        name = test.id()
        if hasattr(test, "test_case"):  # a subtest: blame its test
            name = test.test_case.id()  # type: ignore[attr-defined]
        exc = err[1] if isinstance(err, tuple) else err
        self.bad.setdefault(name, f"{kind}: {type(exc).__name__}: {str(exc)[:100]!r}")

    def addError(self, test: unittest.TestCase, err: object) -> None:
        super().addError(test, err)  # type: ignore[arg-type]
        self._note(test, err, "error")

    def addFailure(self, test: unittest.TestCase, err: object) -> None:
        super().addFailure(test, err)  # type: ignore[arg-type]
        self._note(test, err, "fail")

    def addSubTest(self, test: unittest.TestCase, subtest: object, err: object) -> None:
        super().addSubTest(test, subtest, err)  # type: ignore[arg-type]
        if isinstance(err, tuple):
            kind = "fail" if issubclass(err[0], test.failureException) else "error"
            self._note(test, err, kind)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stock", action="store_true", help="run against the stdlib")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args()
    try:
        from test import support
    except ImportError:
        print("the interpreter's test package is not installed", file=sys.stderr)
        return 2
    support.use_resources = []  # offline: no 'network', no 'walltime'
    if not args.stock:
        import h2pool

        http.client.HTTPConnection = h2pool.HTTPConnection  # type: ignore[misc]
        http.client.HTTPSConnection = h2pool.HTTPSConnection  # type: ignore[misc]
    from test import test_httplib

    suite = unittest.defaultTestLoader.loadTestsFromModule(test_httplib)
    runner = unittest.TextTestRunner(
        verbosity=2 if args.verbose else 0, resultclass=_Tally, stream=sys.stderr
    )
    result = runner.run(suite)
    assert isinstance(result, _Tally)
    for name, why in sorted(result.bad.items()):
        print(f"{name.removeprefix('test.test_httplib.')}  {why}")
    skipped = len(result.skipped)
    failed = len(result.bad)
    passed = result.testsRun - skipped - failed
    print(f"passed {passed} failed {failed} skipped {skipped}")
    if not args.stock:
        from h2pool import compat

        compat.close_engines()
    return 0


if __name__ == "__main__":
    code = main()
    # A test that failed can leave its own server thread (not a daemon) waiting in
    # accept() for a connection that never came: test_response_fileno's, when the
    # CONNECT it sends is refused. The interpreter would wait for it forever at exit.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
