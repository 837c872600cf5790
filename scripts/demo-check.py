"""Print the demo host's URL and check each endpoint of the example stack through nginx, as a browser would.

Usage: python scripts/demo-check.py CONTAINER [HOSTNAME]. Exits non-zero when an endpoint does not answer as it should.
"""

from __future__ import annotations

import http.client
import json
import ssl
import subprocess
import sys
from collections.abc import Callable


def container_address(container: str) -> str:
    template = "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}"
    output = subprocess.run(
        ["docker", "inspect", "--format", template, container], capture_output=True, text=True, check=True
    ).stdout
    return output.split()[0]


def fetch(address: str, server_name: str, method: str, path: str, *, tls: bool = True, body: bytes | None = None):
    if tls:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # the demo's certificate is self-signed
        connection: http.client.HTTPConnection = http.client.HTTPSConnection(address, timeout=30, context=context)
    else:
        connection = http.client.HTTPConnection(address, timeout=30)
    headers = {"Host": server_name}
    if body is not None:
        headers["Content-Type"] = "application/json"
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


class Unexpected(Exception):
    """An endpoint answered, but not as the stack should."""


def expect(condition: bool, detail: object) -> None:
    if not condition:
        raise Unexpected(detail)


def checks(server_name: str) -> list[tuple[str, str, str, bytes | None, bool, Callable]]:
    """(label, method, path, body, tls, judge(status, headers, body) -> detail or raise)."""

    def json_field(field: str) -> Callable:
        def judge(status, _headers, body):
            expect(status == 200, status)
            value = json.loads(body)[field]
            return f"{field}: {len(value)}" if isinstance(value, list) else f"{field}={value}"

        return judge

    def html(status, headers, _body):
        expect(status == 200, status)
        expect(headers.get("Content-Type", "").startswith("text/html"), headers.get("Content-Type"))
        return "SPA index (history-mode fallback)"

    def static(status, headers, _body):
        expect(status == 200, status)
        return f"Cache-Control: {headers.get('Cache-Control')}"

    def redirect(status, headers, _body):
        expect(status == 301, status)
        return f"-> {headers.get('Location')}"

    return [
        ("SPA client route", "GET", "/dashboard/42", None, True, html),
        ("API health", "GET", "/api/health", None, True, json_field("status")),
        ("API version", "GET", "/api/version", None, True, json_field("version")),
        ("API items", "GET", "/api/items", None, True, json_field("items")),
        ("celery task via redis", "POST", "/api/tasks/add", b'{"x": 2, "y": 3}', True, json_field("result")),
        ("static file", "GET", "/static/app.js", None, True, static),
        ("HTTP to HTTPS", "GET", "/dashboard/42", None, False, redirect),
    ]


def main() -> int:
    container = sys.argv[1]
    server_name = sys.argv[2] if len(sys.argv) > 2 else "flaskapp.test"
    address = container_address(container)
    print(f"\nThe example stack answers at https://{address}/ (Host: {server_name}; the certificate is self-signed)")
    print(f"  try: curl -k https://{address}/api/health\n")
    failures = 0
    for label, method, path, body, tls, judge in checks(server_name):
        scheme = "https" if tls else "http"
        try:
            detail = judge(*fetch(address, server_name, method, path, tls=tls, body=body))
            mark = "ok  "
        except (Unexpected, OSError, ValueError, KeyError) as error:
            detail, mark = f"FAILED: {error!r}", "FAIL"
            failures += 1
        print(f"  {mark} {method:4} {scheme}://{address}{path:16} {label:24} {detail}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
