"""Check each endpoint of the demo stack through the ports docker publishes on this machine's loopback, as a browser
here would reach them, then print where the demo answers and how to end it.

Usage: python scripts/demo-check.py CONTAINER [SETTINGS_FILE]. SETTINGS_FILE is the example stack's
group_vars/all.yml (default examples/flask_spa/inventory/group_vars/all.yml), where the demo passwords are.
Exits non-zero when a port is not published on loopback or an endpoint does not answer as it should.
"""

from __future__ import annotations

import base64
import http.client
import ipaddress
import json
import ssl
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import yaml

DEFAULT_SETTINGS = Path(__file__).resolve().parent.parent / "examples/flask_spa/inventory/group_vars/all.yml"
# Container ports the demo publishes (molecule/demo/molecule.yml): the site over HTTPS and HTTP, the admin server.
HTTPS, HTTP, ADMIN = "443/tcp", "80/tcp", "9443/tcp"


class Unexpected(Exception):
    """An endpoint answered, but not as the stack should, or a port is not where it should be."""


def published(inspect: dict, container_port: str) -> tuple[str, int]:
    """The loopback address and port docker publishes `container_port` on, from `docker inspect` output.

    A binding beyond loopback (0.0.0.0, a LAN address) is refused: the demo's passwords are public.
    """
    bindings = (inspect.get("NetworkSettings", {}).get("Ports") or {}).get(container_port) or []
    if not bindings:
        raise Unexpected(f"{container_port} of the container is not published (see molecule/demo/molecule.yml)")
    exposed = [b for b in bindings if not ipaddress.ip_address(b.get("HostIp") or "0.0.0.0").is_loopback]
    if exposed:
        raise Unexpected(f"{container_port} is published beyond loopback: {exposed}")
    return bindings[0]["HostIp"], int(bindings[0]["HostPort"])


def inspect_container(container: str) -> dict:
    output = subprocess.run(["docker", "inspect", container], capture_output=True, text=True, check=True).stdout
    return json.loads(output)[0]


def fetch(
    address: tuple[str, int],
    method: str,
    path: str,
    *,
    tls: bool = True,
    body: bytes | None = None,
    auth: tuple[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    host, port = address
    if tls:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # the demo's certificates are self-signed
        connection: http.client.HTTPConnection = http.client.HTTPSConnection(host, port, timeout=30, context=context)
    else:
        connection = http.client.HTTPConnection(host, port, timeout=30)
    headers = {}
    if body is not None:
        headers["Content-Type"] = "application/json"
    if auth is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(":".join(auth).encode()).decode()
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def expect(condition: bool, detail: object) -> None:
    if not condition:
        raise Unexpected(detail)


Check = tuple[str, str, str, str, bytes | None, tuple[str, str] | None, Callable]


def checks(admin: tuple[str, str]) -> list[Check]:
    """(label, port, method, path, body, auth, judge(status, headers, body) -> detail or raise)."""

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
        expect(headers.get("Location", "").startswith("https://"), headers.get("Location"))
        return f"-> {headers.get('Location')}"

    def refused(status, _headers, _body):
        expect(status == 401, status)
        return "401 without the password"

    def supervisor(status, _headers, body):
        expect(status == 200, status)
        expect(b"Supervisor" in body, body[:200])
        return "supervisor's status page"

    return [
        ("SPA client route", HTTPS, "GET", "/dashboard/42", None, None, html),
        ("API health", HTTPS, "GET", "/api/health", None, None, json_field("status")),
        ("API version", HTTPS, "GET", "/api/version", None, None, json_field("version")),
        ("API items", HTTPS, "GET", "/api/items", None, None, json_field("items")),
        ("celery task via redis", HTTPS, "POST", "/api/tasks/add", b'{"x": 2, "y": 3}', None, json_field("result")),
        ("static file", HTTPS, "GET", "/static/app.js", None, None, static),
        ("HTTP to HTTPS", HTTP, "GET", "/dashboard/42", None, None, redirect),
        ("admin, no password", ADMIN, "GET", "/", None, None, refused),
        ("admin, with password", ADMIN, "GET", "/", None, admin, supervisor),
    ]


def url(address: tuple[str, int], tls: bool = True) -> str:
    return f"{'https' if tls else 'http'}://{address[0]}:{address[1]}/"


def main() -> int:
    container = sys.argv[1]
    settings_file = Path(sys.argv[2]) if len(sys.argv) > 2 else DEFAULT_SETTINGS
    settings = yaml.safe_load(settings_file.read_text(encoding="utf-8"))
    admin = (settings["nginx_admin_user"], settings["nginx_admin_password"])
    inspect = inspect_container(container)
    try:
        ports = {port: published(inspect, port) for port in (HTTPS, HTTP, ADMIN)}
    except Unexpected as error:
        print(f"demo-check: {error}", file=sys.stderr)
        return 1
    failures = 0
    print()
    # As on a real deploy, the ports above get through firewalld: it must be the one letting them in.
    state = subprocess.run(
        ["docker", "exec", container, "firewall-cmd", "--state"], capture_output=True, text=True, check=False
    )
    firewalld = state.stdout.strip() or state.stderr.strip()
    if firewalld != "running":
        failures += 1
    print(f"  {'ok  ' if firewalld == 'running' else 'FAIL'} firewalld on the demo host: {firewalld}")
    for label, port, method, path, body, auth, judge in checks(admin):
        address, tls = ports[port], port != HTTP
        try:
            detail = judge(*fetch(address, method, path, tls=tls, body=body, auth=auth))
            mark = "ok  "
        except (Unexpected, OSError, ValueError, KeyError) as error:
            detail, mark = f"FAILED: {error!r}", "FAIL"
            failures += 1
        print(f"  {mark} {method:4} {url(address, tls).rstrip('/')}{path:16} {label:24} {detail}")
    shown = settings_file.relative_to(Path.cwd()) if settings_file.is_relative_to(Path.cwd()) else settings_file
    print(
        f"""
The demo stack answers on this machine only (the certificates are self-signed: accept them, or curl -k):
  site   {url(ports[HTTPS])}          e.g. curl -k {url(ports[HTTPS])}api/health
  admin  {url(ports[ADMIN])}          supervisor's web UI, user {admin[0]}
  passwords: nginx_admin_password (and the other demo-only-* values) in {shown}
  end it: make demo-destroy"""
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
