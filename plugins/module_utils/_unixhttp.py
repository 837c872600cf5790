# Copyright: pyweb.stack contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""HTTP GET over a unix socket or TCP, and the health probe every pyweb.stack tool uses (private).

One deadline rule for every caller (bin/app-release probe and canary, daphne-roll, the push hook): the caller
gives an absolute deadline (a time.monotonic() value); each try gets min(per_try, time left), and every blocking
socket call inside a try (connect, send, each read) gets only the time left of that try, so a server that accepts
and stalls, or trickles bytes, can never hold the probe past the deadline.

Standard library only: the same file runs inside a module and, installed by pyweb.stack.common (host_library.yml),
as plain Python on the host.
"""

from __future__ import annotations

import http.client
import json
import math
import socket
import time
from dataclasses import dataclass
from typing import Callable

BODY_LIMIT = 2000
# A health answer is judged (parsed as JSON) on up to this much; the report keeps BODY_LIMIT of it.
JUDGE_LIMIT = 4 * BODY_LIMIT
USER_AGENT = "pyweb-stack-probe"


class _DeadlineSocket(socket.socket):
    """A socket whose every blocking call may only use the time left before `deadline` (monotonic)."""

    deadline: float = math.inf

    def _arm(self) -> None:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("timed out")
        self.settimeout(left)

    def connect(self, address: object) -> None:  # type: ignore[override]
        self._arm()
        super().connect(address)  # type: ignore[arg-type]

    def sendall(self, data: bytes, flags: int = 0) -> None:  # type: ignore[override]
        self._arm()
        super().sendall(data, flags)

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        self._arm()
        return super().recv(bufsize, flags)

    def recv_into(self, buffer: object, nbytes: int = 0, flags: int = 0) -> int:  # type: ignore[override]
        self._arm()
        return super().recv_into(buffer, nbytes, flags)  # type: ignore[arg-type]


class _DeadlineConnection(http.client.HTTPConnection):
    """HTTPConnection on a unix socket path or host:port whose socket calls all end by `deadline`."""

    def __init__(self, target: str, deadline: float) -> None:
        self.unix_path, host, port = parse_target(target)
        super().__init__(host, port, timeout=max(0.0, deadline - time.monotonic()))
        self.deadline = deadline

    def _socket(self, family: int, kind: int = socket.SOCK_STREAM, proto: int = 0) -> _DeadlineSocket:
        sock = _DeadlineSocket(family, kind, proto)
        sock.deadline = self.deadline
        return sock

    def connect(self) -> None:
        if self.unix_path is not None:
            sock = self._socket(socket.AF_UNIX)
            try:
                sock.connect(self.unix_path)
            except OSError:
                sock.close()
                raise
            self.sock = sock
            return
        error: OSError = OSError(f"cannot resolve {self.host}")
        for family, kind, proto, _canonical, address in socket.getaddrinfo(self.host, self.port, 0, socket.SOCK_STREAM):
            sock = self._socket(family, kind, proto)
            try:
                sock.connect(address)
            except OSError as exc:
                sock.close()
                error = exc
                continue
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.sock = sock
            return
        raise error


def parse_target(target: str) -> tuple[str | None, str, int | None]:
    """(unix socket path or None, host, port) for `unix:/path`, `/path`, `host:port` or `[v6]:port`."""
    if target.startswith("unix:"):
        return target[len("unix:") :], "localhost", None
    if target.startswith("/"):
        return target, "localhost", None
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"not a unix socket path or host:port: {target!r}")
    return None, host.strip("[]"), int(port)


def tcp_target(address: str, port: int | str) -> str:
    """host:port, with an IPv6 address in brackets."""
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def request(
    target: str, path: str, timeout: float, *, host: str = "localhost", body_limit: int = BODY_LIMIT
) -> tuple[int, dict[str, str], bytes]:
    """GET path from target within timeout seconds overall: (status, headers with lower-case names, body).

    Reads at most body_limit bytes of the body. Raises OSError (connect, timeout, reset), http.client
    HTTPException for a reply that is not HTTP, and http.client.IncompleteRead when the server closes before the
    Content-Length it announced (or before body_limit bytes of it).
    """
    connection = _DeadlineConnection(target, time.monotonic() + timeout)
    try:
        connection.request("GET", path, headers={"Host": host, "User-Agent": USER_AGENT})
        response = connection.getresponse()
        headers = {name.lower(): value for name, value in response.getheaders()}
        want = body_limit if response.length is None else min(response.length, body_limit)
        data = response.read(want) if want > 0 else b""
        if response.length is not None and len(data) < want:
            raise http.client.IncompleteRead(data, want - len(data))
        return response.status, headers, data
    finally:
        connection.close()


def judge(status: int, body: bytes, expect_json: bool) -> str | None:
    """None when the answer is healthy, else the reason."""
    if status != 200:
        return f"HTTP {status}"
    if expect_json:
        try:
            json.loads(body.decode("utf-8", errors="replace"))
        except ValueError:
            return "HTTP 200 but the body is not JSON"
    return None


def try_timeout(per_try: float, deadline: float, now: float) -> float:
    """The one deadline rule: a try may take per_try seconds, never more than what is left before the deadline."""
    return max(0.0, min(per_try, deadline - now))


@dataclass
class ProbeResult:
    """How a probe ended. reason is None when ok; status is the last HTTP status seen (None when none answered)."""

    ok: bool
    status: int | None
    reason: str | None
    attempts: int
    elapsed: float
    body: bytes = b""
    died: bool = False  # alive() said the process behind the target is gone
    malformed: bool = False  # the last reply was not valid HTTP (or was cut short)

    def text(self, limit: int = BODY_LIMIT) -> str:
        return self.body[:limit].decode("utf-8", errors="replace")


def _try_once(
    target: str, path: str, timeout: float, host: str, expect_json: bool
) -> tuple[str, str | None, int | None, bytes]:
    """One GET: (kind, reason, status, body); kind is answer (reason from judge), malformed, timeout or error."""
    try:
        status, _headers, body = request(target, path, timeout, host=host, body_limit=JUDGE_LIMIT)
    except socket.timeout as exc:
        return "timeout", f"{target}: {exc}", None, b""
    except http.client.HTTPException as exc:
        if isinstance(exc, OSError):  # RemoteDisconnected: closed before any reply, like a refused connect
            return "error", f"{target}: {exc}", None, b""
        return "malformed", f"malformed HTTP reply from {target}: {repr(exc)[:200]}", None, b""
    except OSError as exc:
        return "error", f"{target}: {exc.strerror or exc}", None, b""
    return "answer", judge(status, body, expect_json), status, body


def probe(
    target: str,
    path: str,
    deadline: float,
    *,
    per_try: float = 5.0,
    expect_json: bool = True,
    alive: Callable[[], bool] | None = None,
    ready: Callable[[], str | None] | None = None,
    interval: float = 0.5,
    until_healthy: bool = False,
    host: str = "localhost",
) -> ProbeResult:
    """GET path on target until an answer decides or the deadline (time.monotonic()) passes.

    Connection errors (nothing listening yet, reset, a server closing before any reply) are retried every
    `interval` seconds. The first HTTP answer decides, unless until_healthy: then an unhealthy answer (or a
    malformed reply) is retried too, until a healthy one or the deadline. alive(), asked before each try, ends the
    probe at once when it returns False (the canary died); ready() returns a reason to skip this try and wait
    (the unit is not active yet), or None.
    """
    started = time.monotonic()
    budget = deadline - started
    attempts = 0
    last = "no answer"
    last_status: int | None = None
    last_body = b""
    malformed = False

    def elapsed() -> float:
        return time.monotonic() - started

    while True:
        now = time.monotonic()
        if now >= deadline:
            break
        if alive is not None and not alive():
            return ProbeResult(
                False, last_status, "the process exited before answering", attempts, elapsed(), died=True
            )
        waiting = ready() if ready is not None else None
        if waiting is not None:
            last = waiting
        else:
            attempts += 1
            timeout = try_timeout(per_try, deadline, time.monotonic())
            kind, reason, status, body = _try_once(target, path, timeout, host, expect_json)
            if kind == "answer" and (reason is None or not until_healthy):
                return ProbeResult(reason is None, status, reason, attempts, elapsed(), body=body)
            if kind == "malformed" and not until_healthy:
                return ProbeResult(False, None, reason, attempts, elapsed(), malformed=True)
            if kind == "answer":
                last_status, last_body = status, body
            # A try the deadline cut short says less than the answer before it: that one stays the reason.
            if not (kind == "timeout" and timeout < per_try and last_status is not None):
                last, malformed = reason or last, kind == "malformed"
        time.sleep(max(0.0, min(interval, deadline - time.monotonic())))
    return ProbeResult(
        False,
        last_status,
        f"no answer within {round(max(budget, 0.0), 1):g}s ({last})",
        attempts,
        elapsed(),
        body=last_body,
        malformed=malformed,
    )
