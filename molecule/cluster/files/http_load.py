"""The cluster scenario's bounded load generator, run on the web host: CONNECTIONS threads, each on a keep-alive
HTTPS connection to the local nginx, ask PATH until the stop file appears and at least MIN_SECONDS have passed; at
most 600 s and 200000 requests in all, about 20 a second per connection. Every answer that is not a 200 with JSON,
and every connection error, counts as failed. Writes the counts as JSON, with which app host answered which version.

Like a browser (RFC 9112 9.3.1, 9.8), a connection the server closed while it was idle is not reused: nginx's
reload closes its idle keep-alive connections, so before each request on a kept connection the client looks whether
the server has closed it (as urllib3 does), and a GET sent on a kept connection that the server closed before
answering is sent once more on a new one (as browsers do); such retries are counted apart ("retried"). A failure on
a new connection is never retried.

  pyweb-http-load OUT_JSON STOP_FILE HOST_HEADER [CONNECTIONS [MIN_SECONDS [PATH]]]
"""

import http.client
import json
import os
import select
import ssl
import sys
import threading
import time

out, stop, host_header = sys.argv[1], sys.argv[2], sys.argv[3]
connections = int(sys.argv[4]) if len(sys.argv) > 4 else 10
min_seconds = float(sys.argv[5]) if len(sys.argv) > 5 else 30
path = sys.argv[6] if len(sys.argv) > 6 else "/api/version"
started = time.monotonic()
result = {"ok": 0, "failed": 0, "retried": 0, "errors": [], "answers": {}, "connections": connections}
lock = threading.Lock()
context = ssl.create_default_context()
context.check_hostname = False
context.verify_mode = ssl.CERT_NONE


def running() -> bool:
    elapsed = time.monotonic() - started
    if elapsed > 600 or result["ok"] + result["failed"] >= 200000:
        return False
    return elapsed < min_seconds or not os.path.exists(stop)


def closed_by_server(connection: http.client.HTTPSConnection) -> bool:
    """A kept connection the server has closed (or sent something unasked on) is readable while idle."""
    return connection.sock is None or bool(select.select([connection.sock], [], [], 0)[0])


def ask(connection: http.client.HTTPSConnection) -> dict:
    connection.request("GET", path, headers={"Host": host_header})
    answer = connection.getresponse()
    body = answer.read()
    if answer.status != 200:
        raise RuntimeError(f"HTTP {answer.status}: {body[:200]!r}")
    return json.loads(body)


def connect() -> http.client.HTTPSConnection:
    return http.client.HTTPSConnection("127.0.0.1", 443, context=context, timeout=30)


def client() -> None:
    connection = None
    while running():
        try:
            if connection is not None and closed_by_server(connection):
                connection.close()
                connection = None
            if connection is None:
                connection = connect()
                data = ask(connection)
            else:
                try:
                    data = ask(connection)
                except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                    # Closed by the server after the check above and before it answered: once more, anew.
                    connection.close()
                    connection = connect()
                    with lock:
                        result["retried"] += 1
                    data = ask(connection)
            key = f"{data.get('host', '?')} {data.get('version', '?')}"
            with lock:
                result["ok"] += 1
                result["answers"][key] = result["answers"].get(key, 0) + 1
        except Exception as exc:  # every failure is counted, whatever it is
            if connection is not None:
                connection.close()
            connection = None
            with lock:
                result["failed"] += 1
                if len(result["errors"]) < 10:
                    result["errors"].append(f"{time.monotonic() - started:.3f} {exc!r}")
        time.sleep(0.05)


threads = [threading.Thread(target=client) for _ in range(connections)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
result["seconds"] = round(time.monotonic() - started, 1)
with open(out, "w") as handle:
    json.dump(result, handle)
