"""The Flask + SPA stack on one host, checked the way its users reach it: HTTPS from outside the host (this
controller, Python's own http and ssl clients) and, for what listens on loopback only, curl on the host."""

from __future__ import annotations

import functools
import json
import os
import re
import ssl
import subprocess
import uuid
from pathlib import Path

import pytest
import pyweb_molecule

EXAMPLE = pyweb_molecule.PROJECT / "examples" / "flask_spa"
SETTINGS = pyweb_molecule.example_settings("flask_spa")
APP = SETTINGS["app_name"]
SITE = SETTINGS["nginx_sites"][0]
HOST_NAME = SITE["server_name"][0]
# One request to the example's site: (status, lower-cased headers, body).
request = functools.partial(pyweb_molecule.request, host_name=HOST_NAME)
BODY_LIMIT = 1024 * 1024  # the site's client_max_body_size: 1m


def test_client_route_of_the_spa_gets_its_index(address) -> None:
    status, headers, body = request(address, "/dashboard/42")
    assert status == 200
    assert headers["content-type"].startswith("text/html")
    assert body == (EXAMPLE / "spa" / "dist" / "index.html").read_bytes()


def test_api_health_is_json_from_gunicorn(host, address) -> None:
    status, headers, body = request(address, "/api/health")
    assert status == 200
    assert headers["content-type"].startswith("application/json")
    health = json.loads(body)
    assert health["status"] == "ok"
    gunicorn_pids = {int(pid) for pid in host.check_output("pgrep -f 'gunicorn.*api.wsgi'").split()}
    assert health["pid"] in gunicorn_pids


def test_static_files_are_served_by_nginx_with_cache_headers(address) -> None:
    status, headers, body = request(address, "/static/app.js")
    assert status == 200
    assert body == (EXAMPLE / "spa" / "dist" / "static" / "app.js").read_bytes()
    assert "max-age=604800" in headers["cache-control"]
    assert re.fullmatch(r"nginx", headers["server"]), "server_tokens off: no version in the Server header"


def test_upload_over_the_limit_gets_a_json_413(address) -> None:
    status, headers, answer = pyweb_molecule.upload(address, "big.bin", b"x" * (BODY_LIMIT + 1), host_name=HOST_NAME)
    assert status == 413
    assert headers["content-type"].startswith("application/json")
    assert json.loads(answer)["error"] == "request body too large"


def test_upload_within_the_limit_lands_in_shared_uploads(host, address) -> None:
    name = f"verify-{uuid.uuid4().hex[:8]}.txt"
    status, _, _ = pyweb_molecule.upload(address, name, b"hello", host_name=HOST_NAME)
    assert status in (200, 201)
    uploaded = host.file(f"/srv/{APP}/shared/uploads/{name}")
    assert uploaded.content_string == "hello"
    assert uploaded.user == APP


def test_http_redirects_to_https(address) -> None:
    status, headers, _ = request(address, "/dashboard/42?tab=1", tls=False)
    assert status == 301
    assert headers["location"] == f"https://{SITE['server_name'][0]}/dashboard/42?tab=1"


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1])
def test_old_tls_handshakes_fail(address, version: ssl.TLSVersion) -> None:
    with pytest.raises(ssl.SSLError) as refused:
        request_with(address, version)
    # The server's alert, not this client's own refusal to speak the version.
    assert "PROTOCOL_VERSION" in str(refused.value) or "UNSUPPORTED_PROTOCOL" in str(refused.value), refused.value


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_current_tls_handshakes_succeed(address, version: ssl.TLSVersion) -> None:
    assert request_with(address, version) == 200


def request_with(address: str, version: ssl.TLSVersion) -> int:
    return request(address, "/api/health", tls_version=version)[0]


def admin_status(host, *curl_args: str) -> tuple[int, str]:
    result = host.run(
        "curl -sk -o /tmp/admin-body -w '%{http_code}' " + " ".join(curl_args) + " https://127.0.0.1:9443/"
    )
    return int(result.stdout), host.file("/tmp/admin-body").content_string


def test_admin_port_needs_credentials(host) -> None:
    status, _ = admin_status(host)
    assert status == 401
    status, _ = admin_status(host, "-u", "admin:wrong-password")
    assert status == 401


def test_admin_port_shows_supervisor_with_credentials(host) -> None:
    status, body = admin_status(host, "-u", f"admin:{SETTINGS['nginx_admin_password']}")
    assert status == 200
    assert "Supervisor" in body
    assert f"{APP}-web" in body


def test_admin_port_listens_on_loopback_only(host) -> None:
    listeners = host.check_output("ss -Hltn 'sport = :9443'")
    assert re.search(r"127\.0\.0\.1:9443", listeners)
    assert "0.0.0.0:9443" not in listeners
    assert "*:9443" not in listeners


def test_supervisor_programs_are_running(host) -> None:
    status = host.check_output("supervisorctl status")
    programs = dict(line.split(None, 2)[:2] for line in status.splitlines())
    assert programs, status
    assert set(programs.values()) == {"RUNNING"}, status
    assert any(name.startswith(f"{APP}-web") for name in programs)
    assert any("celery" in name or "worker" in name for name in programs), status


def test_celery_task_round_trips_through_redis(address) -> None:
    status, _, body = request(
        address,
        "/api/tasks/add",
        method="POST",
        body=json.dumps({"x": 2, "y": 3}).encode(),
        headers={"Content-Type": "application/json"},
    )
    assert status == 200, body
    assert json.loads(body)["result"] == 5


def test_an_invalid_nginx_setting_never_goes_live(host, address) -> None:
    """A deploy with a directive nginx rejects fails with nginx's own message; the running config keeps serving."""
    before = host.check_output("sha256sum /etc/nginx/sites-available/*.conf")
    broken_sites = [{**SITE, "extra_directives": ["nonsense_directive on;"]}]
    scenario = Path(os.environ["MOLECULE_SCENARIO_DIRECTORY"])
    result = subprocess.run(
        [
            "ansible-playbook",
            "--inventory",
            os.environ["MOLECULE_INVENTORY_FILE"],
            "--tags",
            "nginx",
            "--extra-vars",
            json.dumps({"nginx_sites": broken_sites}),
            str(scenario / "converge.yml"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode != 0, result.stdout
    assert 'unknown directive "nonsense_directive"' in result.stdout + result.stderr
    assert host.check_output("sha256sum /etc/nginx/sites-available/*.conf") == before
    assert "nonsense_directive" not in host.check_output("nginx -T 2>/dev/null")
    status, _, _ = request(address, "/api/health")
    assert status == 200


def test_check_mode_after_converge_changes_nothing(host) -> None:
    # side_effect.yml ran `ansible-playbook --check --diff converge.yml` right after idempotence.
    pyweb_molecule.assert_recorded_check_diff_changed_nothing(host)
