# Copyright: pyweb.stack contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""plugins/module_utils/_unixhttp.py: GET over unix sockets and TCP, and the probe's one deadline rule.

Every server here is real: a unix (or loopback TCP) socket served by a thread of this test, which answers, answers
late, stalls, trickles bytes or closes early. The deadline checks allow a fixed slack for thread scheduling; they
assert that the probe stops at its deadline, not that anything is fast.
"""

from __future__ import annotations

import http.client
import http.server
import json
import os
import shutil
import socket
import socketserver
import tempfile
import threading
import time
from collections.abc import Iterator

import pytest
from ansible_collections.pyweb.stack.plugins.module_utils import _unixhttp as uh

SLACK = 0.5  # seconds a thread may need to notice its socket timed out and return


@pytest.fixture
def socket_path() -> Iterator[str]:
    """A unix socket path short enough for AF_UNIX (pytest's tmp_path can exceed its 107 bytes)."""
    directory = tempfile.mkdtemp(prefix="uh-", dir="/tmp")
    yield os.path.join(directory, "s.sock")
    shutil.rmtree(directory, ignore_errors=True)


class RawReplyServer:
    """Accepts on a unix socket (from `delay` seconds on), reads the request and answers with raw bytes.

    `replies` is used in turn (the last one repeats). A reply None holds the connection open, unanswered, until
    the client goes (a hung app); a reply b"" closes at once; `trickle` sends the reply one byte every 0.1 s.
    `accepted` counts connections.
    """

    def __init__(self, path: str, *replies: bytes | None, delay: float = 0.0, trickle: bool = False) -> None:
        self.path = path
        self.replies = list(replies) or [None]
        self.delay = delay
        self.trickle = trickle
        self.accepted = 0
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.listening = threading.Event()

    def serve(self) -> None:
        if self.stopped.wait(self.delay):
            return
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
            listener.bind(self.path)
            listener.listen(8)
            listener.settimeout(0.05)
            self.listening.set()
            while not self.stopped.is_set():
                try:
                    connection, _address = listener.accept()
                except socket.timeout:
                    continue
                reply = self.replies[min(self.accepted, len(self.replies) - 1)]
                self.accepted += 1
                threading.Thread(target=self.answer, args=(connection, reply), daemon=True).start()

    def answer(self, connection: socket.socket, reply: bytes | None) -> None:
        with connection:
            try:
                connection.settimeout(5)
                connection.recv(65536)  # the request
                connection.settimeout(0.05)
                if self.trickle:
                    for byte in reply or b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 100000:
                        if self.stopped.wait(0.1):
                            return
                        connection.sendall(bytes([byte]))
                elif reply is None:
                    self.hold(connection)
                else:
                    connection.sendall(reply)
            except OSError:
                return

    def hold(self, connection: socket.socket) -> None:
        """Keep the connection unanswered until the client hangs up or the test ends."""
        while not self.stopped.is_set():
            try:
                if connection.recv(1) == b"":
                    return
            except socket.timeout:
                continue

    def __enter__(self) -> RawReplyServer:
        self.thread.start()
        if not self.delay:
            self.listening.wait(5)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stopped.set()
        self.thread.join(5)


class Answers(http.server.BaseHTTPRequestHandler):
    """Answers GET with the server's next (status, body) in turn (the last one repeats), Content-Length set."""

    def do_GET(self) -> None:
        server = self.server
        status, body = server.answers[min(server.served, len(server.answers) - 1)]  # type: ignore[attr-defined]
        server.served += 1  # type: ignore[attr-defined]
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:  # unix peers have no address to log
        pass


class AnsweringServer:
    """A real HTTP server on a unix socket path, or on 127.0.0.1 with path None."""

    def __init__(self, path: str | None, *answers: tuple[int, bytes]) -> None:
        if path is None:
            self.server: socketserver.BaseServer = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Answers)
            self.target = uh.tcp_target("127.0.0.1", self.server.server_address[1])  # type: ignore[index]
        else:
            self.server = socketserver.ThreadingUnixStreamServer(path, Answers)
            self.target = path
        self.server.answers = list(answers) or [(200, b'{"ok": true}')]  # type: ignore[attr-defined]
        self.server.served = 0  # type: ignore[attr-defined]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def served(self) -> int:
        return self.server.served  # type: ignore[attr-defined]

    def __enter__(self) -> AnsweringServer:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def probe_in_thread(*args: object, limit: float = 15.0, **kwargs: object) -> tuple[uh.ProbeResult, float]:
    """Run probe in a thread, so that a probe that ignores its deadline fails the test instead of hanging it; the
    result and the monotonic time it returned."""
    outcome: list[tuple[uh.ProbeResult, float]] = []

    def target() -> None:
        outcome.append((uh.probe(*args, **kwargs), time.monotonic()))  # type: ignore[arg-type]

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(limit)
    assert outcome, f"the probe was still running after {limit}s"
    return outcome[0]


# ---------------------------------------------------------------------------------------------- targets and rules


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("unix:/run/app/health.sock", ("/run/app/health.sock", "localhost", None)),
        ("/run/app/health.sock", ("/run/app/health.sock", "localhost", None)),
        ("127.0.0.1:8000", (None, "127.0.0.1", 8000)),
        ("[::1]:8000", (None, "::1", 8000)),
        ("app.internal:80", (None, "app.internal", 80)),
    ],
)
def test_parse_target(target: str, expected: tuple[str | None, str, int | None]) -> None:
    assert uh.parse_target(target) == expected


@pytest.mark.parametrize("target", ["localhost", "127.0.0.1:", ":80", "host:http", "relative/path.sock"])
def test_parse_target_refuses_what_is_neither_a_path_nor_host_port(target: str) -> None:
    with pytest.raises(ValueError, match="not a unix socket path or host:port"):
        uh.parse_target(target)


def test_tcp_target_brackets_ipv6() -> None:
    assert uh.tcp_target("::1", 8001) == "[::1]:8001"
    assert uh.tcp_target("127.0.0.1", "8001") == "127.0.0.1:8001"


@pytest.mark.parametrize(
    ("per_try", "deadline", "now", "expected"),
    [(5.0, 100.0, 90.0, 5.0), (5.0, 100.0, 98.5, 1.5), (5.0, 100.0, 100.0, 0.0), (5.0, 100.0, 101.0, 0.0)],
)
def test_each_try_gets_per_try_but_never_more_than_is_left(
    per_try: float, deadline: float, now: float, expected: float
) -> None:
    assert uh.try_timeout(per_try, deadline, now) == expected


@pytest.mark.parametrize(
    ("status", "body", "expect_json", "expected"),
    [
        (200, b'{"ok": true}', True, None),
        (200, b"hello", False, None),
        (200, b"hello", True, "HTTP 200 but the body is not JSON"),
        (503, b'{"ok": false}', True, "HTTP 503"),
        (404, b"", False, "HTTP 404"),
    ],
)
def test_judge(status: int, body: bytes, expect_json: bool, expected: str | None) -> None:
    assert uh.judge(status, body, expect_json) == expected


# ---------------------------------------------------------------------------------------------- request


@pytest.mark.parametrize("prefix", ["", "unix:"])
def test_request_over_a_unix_socket(socket_path: str, prefix: str) -> None:
    with AnsweringServer(socket_path, (200, b'{"ok": true}')):
        status, headers, body = uh.request(prefix + socket_path, "/health", 5)
    assert status == 200
    assert headers["content-type"] == "application/json"
    assert json.loads(body) == {"ok": True}


def test_request_over_tcp() -> None:
    with AnsweringServer(None, (201, b"made")) as server:
        status, headers, body = uh.request(server.target, "/", 5)
    assert (status, headers["content-length"], body) == (201, "4", b"made")


def test_request_reads_no_more_than_the_body_limit(socket_path: str) -> None:
    with AnsweringServer(socket_path, (200, b"x" * 5000)):
        _status, _headers, body = uh.request(socket_path, "/", 5, body_limit=100)
    assert body == b"x" * 100


def test_request_closed_before_content_length_is_an_incomplete_read(socket_path: str) -> None:
    with (
        RawReplyServer(socket_path, b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort"),
        pytest.raises(http.client.IncompleteRead),
    ):
        uh.request(socket_path, "/", 5)


def test_request_to_nothing_listening_is_an_os_error(socket_path: str) -> None:
    with pytest.raises(OSError):  # noqa: PT011 - FileNotFoundError or ConnectionRefusedError, both mean "nobody"
        uh.request(socket_path, "/", 1)


# ---------------------------------------------------------------------------------------------- probe: answers


def test_probe_healthy_json(socket_path: str) -> None:
    with AnsweringServer(socket_path, (200, b'{"ok": true, "db": "up"}')):
        result = uh.probe(socket_path, "/health", time.monotonic() + 5)
    assert (result.ok, result.status, result.reason, result.attempts) == (True, 200, None, 1)
    assert json.loads(result.text()) == {"ok": True, "db": "up"}


def test_probe_non_json_answer_fails_only_when_json_is_expected(socket_path: str) -> None:
    with AnsweringServer(socket_path, (200, b"<html>hello</html>")):
        strict = uh.probe(socket_path, "/", time.monotonic() + 5)
        lenient = uh.probe(socket_path, "/", time.monotonic() + 5, expect_json=False)
    assert (strict.ok, strict.status, strict.reason) == (False, 200, "HTTP 200 but the body is not JSON")
    assert strict.text() == "<html>hello</html>"
    assert (lenient.ok, lenient.reason) == (True, None)


def test_probe_first_answer_decides(socket_path: str) -> None:
    with AnsweringServer(socket_path, (503, b'{"ok": false}'), (200, b"{}")) as server:
        result = uh.probe(socket_path, "/", time.monotonic() + 5, interval=0.05)
    assert (result.ok, result.status, result.reason, result.attempts) == (False, 503, "HTTP 503", 1)
    assert server.served == 1


def test_probe_until_healthy_retries_unhealthy_answers(socket_path: str) -> None:
    with AnsweringServer(socket_path, (503, b"{}"), (502, b"{}"), (200, b"{}")) as server:
        result = uh.probe(socket_path, "/", time.monotonic() + 10, interval=0.05, until_healthy=True)
    assert (result.ok, result.status, result.attempts) == (True, 200, 3)
    assert server.served == 3


def test_probe_until_healthy_reports_the_last_answer_at_the_deadline(socket_path: str) -> None:
    with AnsweringServer(socket_path, (503, b"{}")):
        result, returned = probe_in_thread(socket_path, "/", deadline := time.monotonic() + 1, until_healthy=True)
    assert (result.ok, result.status) == (False, 503)
    assert result.reason == "no answer within 1s (HTTP 503)"
    assert returned <= deadline + SLACK


def test_probe_waits_for_a_server_that_starts_listening_late(socket_path: str) -> None:
    # Nothing listens for 0.6 s (a canary still importing its app): connection errors are retried.
    with RawReplyServer(socket_path, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}", delay=0.6):
        result = uh.probe(socket_path, "/", time.monotonic() + 10, interval=0.1)
    assert (result.ok, result.status) == (True, 200)
    assert result.attempts > 1


def test_probe_retries_a_server_that_closes_before_any_reply(socket_path: str) -> None:
    with RawReplyServer(socket_path, b"", b"", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}") as server:
        result = uh.probe(socket_path, "/", time.monotonic() + 10, interval=0.05)
    assert (result.ok, result.attempts, server.accepted) == (True, 3, 3)


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        pytest.param(b"garbage\r\n\r\n", "BadStatusLine", id="bad-status-line"),
        pytest.param(b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * 70000 + b"\r\n\r\n", "LineTooLong", id="header-too-long"),
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort", "IncompleteRead", id="closed-early"),
    ],
)
def test_probe_malformed_reply_is_a_clean_failure(socket_path: str, reply: bytes, error: str) -> None:
    with RawReplyServer(socket_path, reply):
        result = uh.probe(socket_path, "/", time.monotonic() + 5)
    assert (result.ok, result.malformed, result.attempts) == (False, True, 1)
    assert result.reason.startswith(f"malformed HTTP reply from {socket_path}: ")
    assert error in result.reason


# ---------------------------------------------------------------------------------------------- probe: the deadline


def test_probe_against_a_stalled_server_stops_at_the_deadline(socket_path: str) -> None:
    # The server accepts and never answers; one try may take 30 s, the deadline is 1.5 s away.
    with RawReplyServer(socket_path, None) as server:
        result, returned = probe_in_thread(socket_path, "/", deadline := time.monotonic() + 1.5, per_try=30)
    assert result.ok is False
    assert result.reason.startswith("no answer within 1.5s (")
    assert result.attempts == 1
    assert server.accepted == 1
    assert returned <= deadline + SLACK, f"returned {returned - deadline:.2f}s after the deadline"


def test_probe_against_a_stalled_server_tries_again_after_per_try(socket_path: str) -> None:
    # per_try 0.3 s within a 2 s deadline: several tries, each cut at per_try, then the last one at the deadline.
    with RawReplyServer(socket_path, None) as server:
        result, returned = probe_in_thread(
            socket_path, "/", deadline := time.monotonic() + 2, per_try=0.3, interval=0.05
        )
    assert result.ok is False
    assert result.attempts >= 3
    assert server.accepted == result.attempts
    assert returned <= deadline + SLACK


def test_probe_against_a_trickling_server_stops_at_the_deadline(socket_path: str) -> None:
    # One byte every 0.1 s: no single read ever waits long, so only a deadline on every read can stop it.
    with RawReplyServer(socket_path, None, trickle=True):
        result, returned = probe_in_thread(socket_path, "/", deadline := time.monotonic() + 1.5, per_try=30)
    assert result.ok is False
    assert returned <= deadline + SLACK, f"returned {returned - deadline:.2f}s after the deadline"


def test_probe_with_a_deadline_already_past_makes_no_try(socket_path: str) -> None:
    with AnsweringServer(socket_path) as server:
        result = uh.probe(socket_path, "/", time.monotonic() - 1)
    assert (result.ok, result.attempts, server.served) == (False, 0, 0)
    assert result.reason == "no answer within 0s (no answer)"


def test_probe_stops_at_once_when_the_process_died(socket_path: str) -> None:
    with AnsweringServer(socket_path) as server:
        result = uh.probe(socket_path, "/", time.monotonic() + 30, alive=lambda: False)
    assert (result.ok, result.died, result.attempts, server.served) == (False, True, 0, 0)
    assert result.reason == "the process exited before answering"


def test_probe_waits_while_not_ready(socket_path: str) -> None:
    calls = []

    def ready() -> str | None:
        calls.append(1)
        return "daphne-chat@1.service is not active" if len(calls) < 3 else None

    with AnsweringServer(socket_path) as server:
        result = uh.probe(socket_path, "/", time.monotonic() + 10, ready=ready, interval=0.05)
    assert (result.ok, result.attempts, server.served, len(calls)) == (True, 1, 1, 3)


def test_probe_never_ready_names_why_at_the_deadline(socket_path: str) -> None:
    result, returned = probe_in_thread(
        socket_path, "/", deadline := time.monotonic() + 1, ready=lambda: "unit is not active", interval=0.1
    )
    assert (result.ok, result.attempts) == (False, 0)
    assert result.reason == "no answer within 1s (unit is not active)"
    assert returned <= deadline + SLACK


def test_probe_cut_short_by_the_deadline_keeps_the_answer_before_as_the_reason(socket_path: str) -> None:
    # 503 first, then the server stalls: the last try only times out because the deadline came, which says less.
    starting = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 2\r\n\r\n{}"
    with RawReplyServer(socket_path, starting, None):
        result, returned = probe_in_thread(
            socket_path, "/", deadline := time.monotonic() + 1.5, per_try=30, until_healthy=True, interval=0.05
        )
    assert (result.ok, result.status, result.attempts) == (False, 503, 2)
    assert result.reason == "no answer within 1.5s (HTTP 503)"
    assert returned <= deadline + SLACK
