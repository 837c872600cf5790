"""The scenario's bounded load generator, run on the test host: requests through gunicorn's unix socket until the
stop file appears, at most 100000 requests or 1200 s (a converge on a busy CI machine takes minutes), at most
about 100 a second. Counts every answer that is not a 200 as failed and writes the counts as JSON.

  pyweb-socket-load SOCKET OUT_JSON STOP_FILE
"""

import json
import os
import socket
import sys
import time

path, out, stop = sys.argv[1], sys.argv[2], sys.argv[3]
result = {"ok": 0, "failed": 0, "errors": [], "versions": []}
deadline = time.monotonic() + 1200
while result["ok"] + result["failed"] < 100000 and time.monotonic() < deadline and not os.path.exists(stop):
    try:
        with socket.socket(socket.AF_UNIX) as conn:
            conn.settimeout(30)
            conn.connect(path)
            conn.sendall(b"GET /api/version HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := conn.recv(65536):
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(head.split(b"\r\n", 1)[0].decode(errors="replace") or "empty answer")
        version = json.loads(body)["version"]
        if version not in result["versions"]:
            result["versions"].append(version)
        result["ok"] += 1
    except Exception as exc:
        result["failed"] += 1
        if len(result["errors"]) < 10:
            result["errors"].append(f"{time.monotonic():.3f} {exc!r}")
    time.sleep(0.01)
with open(out, "w") as handle:
    json.dump(result, handle)
