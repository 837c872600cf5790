"""pyweb.stack.nginx on a real host: real clients (curl, openssl s_client) run inside the container."""

import json
import re
import shlex

import pytest

APP = "app.pyweb.test"
DOCS = "docs.pyweb.test"
ADMIN_PASSWORD = "molecule-admin-secret"  # the scenario throwaway password, as in converge.yml


def curl(host, url, *args, site=APP, text=True):
    """Run curl against the local nginx for `site`; return (status, headers dict, body text or None)."""
    cmd = [
        "curl",
        "-sk",
        "-o",
        "/tmp/curl-body",
        "-D",
        "/tmp/curl-headers",
        "-w",
        "%{http_code}",
        "--resolve",
        f"{site}:443:127.0.0.1",
        "--resolve",
        f"{site}:80:127.0.0.1",
        *args,
        url,
    ]
    status = host.check_output(shlex.join(cmd))
    raw_headers = host.file("/tmp/curl-headers").content_string
    headers = {}
    for line in raw_headers.splitlines()[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers.setdefault(name.strip().lower(), []).append(value.strip())
    return int(status), headers, host.file("/tmp/curl-body").content_string if text else None


def header(headers, name):
    return ", ".join(headers.get(name.lower(), []))


def test_spa_route_gets_the_index(host):
    status, headers, body = curl(host, f"https://{APP}/dashboard/42")
    assert status == 200
    assert "pyweb-spa-index" in body
    assert header(headers, "content-type").startswith("text/html")
    assert header(headers, "cache-control") == "no-cache"


def test_api_reaches_the_upstream_socket(host):
    status, headers, body = curl(host, f"https://{APP}/api/health")
    assert status == 200
    assert header(headers, "content-type") == "application/json"
    assert json.loads(body) == {"status": "ok", "listener": "unix:/run/flaskapp/gunicorn.sock"}


def test_api_gets_proxy_headers(host):
    status, _, body = curl(host, f"https://{APP}/api/headers")
    assert status == 200
    seen = {k.lower(): v for k, v in json.loads(body)["headers"].items()}
    assert seen["host"] == APP
    assert seen["x-forwarded-proto"] == "https"
    assert seen["x-real-ip"] == "127.0.0.1"
    assert seen["x-forwarded-for"] == "127.0.0.1"
    assert "connection" not in seen  # keepalive to the upstream: nginx drops the client's Connection header


def test_websocket_location_passes_the_upgrade(host):
    status, _, body = curl(
        host, f"https://{APP}/ws/echo", "--http1.1", "-H", "Upgrade: websocket", "-H", "Connection: Upgrade"
    )
    assert status == 200
    payload = json.loads(body)
    seen = {k.lower(): v for k, v in payload["headers"].items()}
    assert payload["listener"] in ("tcp:127.0.0.1:8001", "tcp:127.0.0.1:8002")
    assert seen["upgrade"] == "websocket"
    assert seen["connection"] == "upgrade"


def test_uwsgi_location_is_routed_to_its_upstream(host):
    # Nothing listens on the uwsgi socket in this scenario: nginx answers 502 and logs the uwsgi connect error.
    status, _, _ = curl(host, f"https://{APP}/uwsgi/")
    assert status == 502
    assert "/run/flaskapp/uwsgi.sock" in host.file("/var/log/nginx/flaskapp.error.log").content_string


def test_static_files_are_served_by_nginx_with_cache_headers(host):
    status, headers, body = curl(host, f"https://{APP}/static/app.js")
    assert status == 200
    assert body == host.file("/srv/flaskapp/static/app.js").content_string
    assert header(headers, "cache-control") == "max-age=2592000"
    assert header(headers, "expires")
    assert header(headers, "server") == "nginx"


def test_media_is_not_cached_long_and_keeps_site_headers(host):
    status, headers, _ = curl(host, f"https://{APP}/media/avatar.txt")
    assert status == 200
    assert header(headers, "cache-control") == "public, max-age=300"
    assert header(headers, "strict-transport-security").startswith("max-age=")
    assert header(headers, "x-content-type-options") == "nosniff"


@pytest.mark.parametrize("path", ["/static/app.css", "/static/app.js", "/api/big"])
def test_gzip_when_asked(host, path):
    status, headers, _ = curl(host, f"https://{APP}{path}", "-H", "Accept-Encoding: gzip", text=False)
    assert status == 200
    assert header(headers, "content-encoding") == "gzip"
    assert "Accept-Encoding" in header(headers, "vary")
    _, plain_headers, _ = curl(host, f"https://{APP}{path}")
    assert "content-encoding" not in plain_headers


def test_body_over_the_limit_gets_a_json_413(host):
    host.check_output("head -c 2097152 /dev/zero > /tmp/upload.bin")
    status, headers, body = curl(host, f"https://{APP}/api/upload", "--data-binary", "@/tmp/upload.bin")
    assert status == 413
    assert header(headers, "content-type") == "application/json"
    assert json.loads(body) == {"error": "request body too large", "limit": "1m"}
    small_status, _, small_body = curl(host, f"https://{APP}/api/upload", "--data-binary", "small")
    assert small_status == 200
    assert json.loads(small_body) == {"received": 5}


def test_http_redirects_to_https(host):
    status, headers, _ = curl(host, f"http://{APP}/dashboard/42?tab=1")
    assert status == 301
    assert header(headers, "location") == f"https://{APP}/dashboard/42?tab=1"


@pytest.mark.parametrize(
    ("flag", "accepted"), [("-tls1", False), ("-tls1_1", False), ("-tls1_2", True), ("-tls1_3", True)]
)
def test_tls_versions(host, flag, accepted):
    # SECLEVEL=0 lets the client offer the old versions, so a refusal can only come from nginx.
    result = host.run(
        f"openssl s_client -connect 127.0.0.1:443 -servername {APP} {flag} -cipher DEFAULT@SECLEVEL=0 </dev/null"
    )
    output = result.stdout + result.stderr
    if accepted:
        assert result.rc == 0, output
        assert "Cipher is (NONE)" not in output
    else:
        assert result.rc != 0
        assert "alert protocol version" in output or "unsupported protocol" in output, output


def test_provided_certificate_is_served(host):
    result = host.run(f"openssl s_client -connect 127.0.0.1:443 -servername {DOCS} </dev/null 2>/dev/null")
    # OpenSSL 3.0 prints "subject=CN = name", 3.5 "subject=CN=name".
    assert re.search(r"^subject=\s*CN\s*=\s*docs\.pyweb\.test$", result.stdout, re.MULTILINE), result.stdout
    status, _, body = curl(host, f"https://{DOCS}/", site=DOCS)
    assert status == 200
    assert "pyweb-spa-index" in body
    key = host.file("/etc/nginx/tls/docs.key")
    assert (key.user, key.group, key.mode) == ("root", "root", 0o600)


def test_server_tokens_off(host):
    _, headers, _ = curl(host, f"https://{APP}/no-such-file.png")
    assert header(headers, "server") == "nginx"


def test_admin_needs_credentials(host):
    status, _, _ = curl(host, "https://127.0.0.1:9443/")
    assert status == 401
    status, _, body = curl(host, "https://127.0.0.1:9443/", "-u", f"admin:{ADMIN_PASSWORD}")
    assert status == 200
    assert "Supervisor Status" in body
    status, _, _ = curl(host, "https://127.0.0.1:9443/", "-u", "admin:wrong")
    assert status == 401


def test_admin_listens_on_loopback_only(host):
    listeners = host.check_output("ss -Hltn 'sport = :9443'").split()
    assert "127.0.0.1:9443" in listeners
    assert not [word for word in listeners if word.endswith(":9443") and word != "127.0.0.1:9443"]
    htpasswd = host.file("/etc/nginx/pyweb-admin.htpasswd")
    assert (htpasswd.user, htpasswd.group, htpasswd.mode) == ("root", "www-data", 0o640)
    assert htpasswd.content_string.startswith("admin:$2")


def test_undeclared_site_was_removed(host):
    assert not host.file("/etc/nginx/sites-available/legacy.conf").exists
    assert not host.file("/etc/nginx/sites-enabled/legacy.conf").exists
    assert host.run("curl -s http://127.0.0.1:8080/").rc == 7  # connection refused: nothing listens any more


def test_distribution_default_site_is_gone(host):
    assert not host.file("/etc/nginx/sites-enabled/default").exists


def test_rejected_configuration_never_went_live(host):
    message = host.file("/root/nginx-rejected-config.txt").content_string
    assert 'unknown directive "nonsense_directive"' in message
    assert "nothing went live" in message
    assert "nonsense_directive" not in host.file("/etc/nginx/sites-available/flaskapp.conf").content_string
    host.check_output("nginx -t -q")
    status, _, _ = curl(host, f"https://{APP}/api/health")
    assert status == 200


def test_reload_that_cannot_bind_fails_and_says_so(host):
    """side_effect declared a site on a port another process held: the reload failed with nginx's own words."""
    message = host.file("/root/nginx-unbindable.txt").content_string
    assert "nginx kept its previous configuration" in message
    assert "8444 failed (98: Address already in use)" in message
    assert not host.file("/etc/nginx/sites-available/clash.conf").exists
    status, _, _ = curl(host, f"https://{APP}/api/health")
    assert status == 200
