"""How nginx serves the Flask + SPA stack, checked with real HTTPS clients from the controller: HSTS on every HTTPS
answer of every kind of location (and on no plain-HTTP one), uploads served from shared/uploads, caching that lets a
new SPA build reach browsers at once, JSON errors under the API, and a relative root refused before any change.

Some checks need a location type the example lacks (websocket, uwsgi, a fingerprinted alias) or a plain-HTTP site:
the `wider_site` fixture applies the example's site with those added (--tags nginx), and puts the example's
settings back afterwards. The same-length index change rides on side_effect's second deploy, which records what a
browser holding the old page got.
"""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import pyweb_molecule

EXAMPLE = pyweb_molecule.PROJECT / "examples" / "flask_spa"
SETTINGS = pyweb_molecule.example_settings("flask_spa")
APP = SETTINGS["app_name"]
SITE = SETTINGS["nginx_sites"][0]
HOST_NAME = SITE["server_name"][0]
# One request to the example's site (another host_name= for another site): (status, lower-cased headers, body).
request = functools.partial(pyweb_molecule.request, host_name=HOST_NAME)
HSTS = "max-age=63072000"
FINGERPRINTED = next((EXAMPLE / "spa" / "dist" / "assets").glob("theme.*.css"))
PLAIN_PORT = 8080


def playbook(*args: str) -> subprocess.CompletedProcess[str]:
    """A real run of the scenario's converge.yml (the site playbook with the example's settings)."""
    scenario = Path(os.environ["MOLECULE_SCENARIO_DIRECTORY"])
    return subprocess.run(
        [
            "ansible-playbook",
            "--inventory",
            os.environ["MOLECULE_INVENTORY_FILE"],
            *args,
            str(scenario / "converge.yml"),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        env={**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0"},
    )


def recap_changed(output: str) -> int:
    return int(re.search(r"\bchanged=(\d+)", output.rsplit("PLAY RECAP", 1)[-1]).group(1))


@pytest.fixture(scope="module")
def uploaded(address) -> str:
    name = f"serving-{uuid.uuid4().hex[:8]}.txt"
    assert pyweb_molecule.upload(address, name, b"served by nginx\n", host_name=HOST_NAME)[0] in (200, 201)
    return name


@pytest.fixture(scope="module")
def wider_site(host) -> Iterator[None]:
    """The example's site plus a websocket, a uwsgi and a fingerprinted alias location, and a plain-HTTP site.

    Nothing listens behind the websocket and uwsgi upstreams: nginx answers those with its own 502.
    """
    wider = {
        **SITE,
        "upstreams": [
            *SITE["upstreams"],
            {"name": "nobody_ws", "servers": ["127.0.0.1:9"]},
            {"name": "nobody_uwsgi", "servers": ["unix:/run/pyweb-serving-test-nothing.sock"]},
        ],
        "locations": [
            *SITE["locations"],
            {"path": "/ws/", "type": "websocket", "upstream": "nobody_ws"},
            {"path": "/legacy/", "type": "uwsgi", "upstream": "nobody_uwsgi"},
            {"path": "/built/", "type": "alias", "alias": f"{SITE['root']}/assets/", "fingerprinted": True},
        ],
    }
    plain = {
        "name": "plain",
        "server_name": ["plain.test"],
        "tls": "none",
        "http_port": PLAIN_PORT,
        "root": SITE["root"],
    }
    applied = playbook("--tags", "nginx", "--extra-vars", json.dumps({"nginx_sites": [wider, plain]}))
    assert applied.returncode == 0, applied.stdout[-3000:]
    try:
        yield
    finally:
        restored = playbook("--tags", "nginx")
        assert restored.returncode == 0, restored.stdout[-3000:]
        assert "plain" not in host.check_output("ls /etc/nginx/sites-enabled")


# --- HSTS


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/index.html",
        "/dashboard/42",
        "/static/app.js",
        f"/assets/{FINGERPRINTED.name}",
        "/assets/missing.js",
        "/api/health",
        "/api/no-such-route",
    ],
)
def test_hsts_on_https_answers_of_the_example(address, path: str) -> None:
    status, headers, _ = request(address, path)
    assert status < 500, status
    assert headers.get("strict-transport-security") == HSTS, (path, status, headers)


def test_hsts_on_uploads_and_on_a_json_413(address, uploaded) -> None:
    _, headers, _ = request(address, f"/media/{uploaded}")
    assert headers.get("strict-transport-security") == HSTS
    status, headers, _ = request(address, "/api/upload", method="POST", body=b"x" * (1024 * 1024 + 1))
    assert status == 413
    assert headers.get("strict-transport-security") == HSTS


def test_no_hsts_on_the_port_80_redirect(address) -> None:
    status, headers, _ = request(address, "/dashboard/42", tls=False)
    assert status == 301
    assert "strict-transport-security" not in headers


# --- Uploads under /media/


def test_an_upload_is_served_under_media(address, uploaded) -> None:
    status, headers, body = request(address, f"/media/{uploaded}")
    assert status == 200, "nginx could not reach shared/uploads"
    assert body == b"served by nginx\n"
    assert headers["cache-control"] == "public, max-age=300"


def test_nginx_enters_shared_by_an_acl_entry_only(host) -> None:
    for directory in (f"/srv/{APP}/shared", f"/srv/{APP}/shared/uploads"):
        assert host.file(directory).mode == 0o750, "the mode stays closed to others"
        acl = host.check_output(f"getfacl --omit-header --absolute-names {directory}")
        assert re.search(r"^user:www-data:--x$", acl, re.MULTILINE), acl
    # shared/.env, next to uploads, stays unreadable for nginx.
    assert host.run(f"runuser -u www-data -- cat /srv/{APP}/shared/.env").rc != 0
    assert host.run(f"runuser -u www-data -- ls /srv/{APP}/shared").rc != 0


# --- SPA caching


@pytest.mark.parametrize("path", ["/", "/index.html", "/dashboard/42"])
def test_the_index_is_revalidated_on_every_visit(address, path: str) -> None:
    status, headers, body = request(address, path)
    assert status == 200
    assert headers["cache-control"] == "no-cache"
    assert body == (EXAMPLE / "spa" / "dist" / "index.html").read_bytes()


def test_served_files_carry_their_real_mtime(address) -> None:
    _, headers, _ = request(address, "/index.html")
    assert not headers["etag"].startswith('"0-'), headers["etag"]
    assert "1970" not in headers["last-modified"]


def test_fingerprinted_assets_are_cached_for_good(address) -> None:
    status, headers, body = request(address, f"/assets/{FINGERPRINTED.name}")
    assert status == 200
    assert body == FINGERPRINTED.read_bytes()
    assert headers["cache-control"] == "public, max-age=31536000, immutable"
    assert "expires" not in headers


@pytest.mark.parametrize("path", ["/assets/missing.js", "/assets/app.0123abcd.js", "/dashboard/logo.png"])
def test_a_missing_file_is_a_404_not_the_index(address, path: str) -> None:
    status, headers, body = request(address, path)
    assert status == 404
    assert b"pyweb.stack example" not in body
    assert "immutable" not in headers.get("cache-control", ""), "a 404 must not be cached for good"


def test_a_same_length_change_of_the_index_reaches_browsers_that_hold_the_old_one(host) -> None:
    """side_effect's second deploy changed index.html but kept its length: a browser revalidating with the old
    page's validators gets the new page, not a 304; the rollback brings the old page back."""
    record = json.loads(host.file("/root/pyweb-app-side-effect.json").content_string)
    before, revalidated = record["index_before"]["first"], record["index_before"]["revalidated"]
    after, back = record["index_after_v2"], record["index_after_rollback"]
    assert before["status"] == 200
    assert not before["changed_marker"]
    assert revalidated["status"] == 304, "the old page did not revalidate before the deploy: the check proves nothing"
    assert after["status"] == 200, f"revalidated as {after['status']}: ETag {before['etag']} -> {after['etag']}"
    assert after["changed_marker"]
    assert after["length"] == before["length"]
    assert after["etag"] != before["etag"]
    assert back["sha256"] == before["sha256"]


# --- JSON errors under the API


def test_an_unknown_api_route_is_a_json_404(address) -> None:
    status, headers, body = request(address, "/api/no-such-route")
    assert status == 404
    assert headers["content-type"].startswith("application/json")
    assert json.loads(body) == {"error": "not found"}


def test_a_json_413_keeps_its_body_under_the_api(address) -> None:
    status, headers, body = request(address, "/api/upload", method="POST", body=b"x" * (1024 * 1024 + 1))
    assert status == 413
    assert headers["content-type"].startswith("application/json")
    assert json.loads(body) == {"error": "request body too large", "limit": "1m"}


def test_a_stopped_app_is_a_json_502(host, address) -> None:
    program = f"{APP}-web"
    host.check_output(f"supervisorctl stop {program}")
    try:
        status, headers, body = request(address, "/api/health")
    finally:
        host.check_output(f"supervisorctl start {program}")
        # gunicorn binds its socket a moment after supervisor reports it started.
        host.check_output(
            f"for i in $(seq 60); do curl -sf -o /dev/null --unix-socket /run/{APP}/gunicorn.sock "
            "http://localhost/api/health && exit 0; sleep 1; done; exit 1"
        )
    assert status == 502
    assert headers["content-type"].startswith("application/json")
    assert json.loads(body) == {"error": "bad gateway"}
    assert headers.get("strict-transport-security") == HSTS
    assert request(address, "/api/health")[0] == 200


# --- A relative root


def test_a_relative_root_is_refused_before_any_change(host, address) -> None:
    before = host.check_output("sha256sum /etc/nginx/sites-available/*.conf")
    broken = [{**SITE, "root": "spa/dist"}]
    result = playbook("--tags", "nginx", "--extra-vars", json.dumps({"nginx_sites": broken}))
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "nginx_sites[0].root is 'spa/dist'" in output, output[-3000:]
    assert "Give the absolute path" in output
    assert recap_changed(output) == 0
    assert host.check_output("sha256sum /etc/nginx/sites-available/*.conf") == before
    assert request(address, "/dashboard/42")[0] == 200


# --- Location types and a site the example lacks (the wider_site fixture; a deploy would undo it, so last)


@pytest.mark.parametrize("path", ["/ws/chat", "/legacy/app", "/built/" + FINGERPRINTED.name])
def test_hsts_on_websocket_uwsgi_and_fingerprinted_alias_locations(address, wider_site, path: str) -> None:
    _, headers, _ = request(address, path)
    assert headers.get("strict-transport-security") == HSTS, (path, headers)


def test_no_hsts_on_a_plain_http_site(address, wider_site) -> None:
    status, headers, _ = request(address, "/", tls=False, port=PLAIN_PORT, host_name="plain.test")
    assert status == 200
    assert "strict-transport-security" not in headers


def test_fingerprinted_assets_of_an_alias_location_are_cached_for_good(address, wider_site) -> None:
    status, headers, body = request(address, f"/built/{FINGERPRINTED.name}")
    assert status == 200
    assert body == FINGERPRINTED.read_bytes()
    assert headers["cache-control"] == "public, max-age=31536000, immutable"


@pytest.mark.parametrize("path", ["/ws/chat", "/legacy/app"])
def test_websocket_and_uwsgi_locations_answer_a_json_502(address, wider_site, path: str) -> None:
    status, headers, body = request(address, path)
    assert status == 502
    assert headers["content-type"].startswith("application/json")
    assert json.loads(body)["error"] == "bad gateway"
