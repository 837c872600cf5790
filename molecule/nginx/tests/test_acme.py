"""tls: acme against Pebble (prepare.yml): issued by its intermediate, renewed in place by a reload, never for an IP."""

import json
import re

ACME = "acme.pyweb.test"
PEBBLE_CA = "/etc/pebble/api-ca.pem"  # the scenario's CA for Pebble's own API (not the ACME CA)


def pebble(host, path):
    """GET from Pebble's management API: its current root and intermediate (regenerated at every Pebble start)."""
    return host.check_output(f"curl -sf --cacert {PEBBLE_CA} https://localhost:15000{path}")


def served_certificate(host):
    """The leaf certificate nginx presents for the ACME site, as PEM."""
    output = host.check_output(
        f"openssl s_client -connect 127.0.0.1:443 -servername {ACME} </dev/null 2>/dev/null | openssl x509 -outform PEM"
    )
    return output.strip() + "\n"


def certificate_field(host, pem, option):
    host.check_output(f"cat > /tmp/acme-cert.pem <<'EOF'\n{pem}EOF")
    return host.check_output(f"openssl x509 -in /tmp/acme-cert.pem -noout {option}").strip()


def nginx_master_pid(host):
    return int(host.file("/run/nginx.pid").content_string.strip())


def test_certificate_is_issued_by_pebble_for_the_site(host):
    pem = served_certificate(host)
    host.check_output(f"cat > /tmp/acme-leaf.pem <<'EOF'\n{pem}EOF")
    host.check_output(f"curl -sf --cacert {PEBBLE_CA} -o /tmp/pebble-root.pem https://localhost:15000/roots/0")
    host.check_output(
        f"curl -sf --cacert {PEBBLE_CA} -o /tmp/pebble-intermediate.pem https://localhost:15000/intermediates/0"
    )
    # The chain of trust ends at the root of the running Pebble: no stand-in, no other CA.
    verified = host.run(
        f"openssl verify -CAfile /tmp/pebble-root.pem -untrusted /tmp/pebble-intermediate.pem"
        f" -verify_hostname {ACME} /tmp/acme-leaf.pem"
    )
    assert verified.rc == 0, verified.stdout + verified.stderr
    intermediate = host.check_output("openssl x509 -in /tmp/pebble-intermediate.pem -noout -subject")
    issuer = certificate_field(host, pem, "-issuer")
    assert issuer.removeprefix("issuer=") == intermediate.removeprefix("subject=").strip()
    assert "DNS:acme.pyweb.test" in certificate_field(host, pem, "-ext subjectAltName")


def test_nginx_serves_the_full_chain(host):
    output = host.check_output(f"openssl s_client -connect 127.0.0.1:443 -servername {ACME} -showcerts </dev/null")
    assert output.count("-----BEGIN CERTIFICATE-----") == 2
    status = host.check_output(
        f"curl -s -o /dev/null -w '%{{http_code}}' --cacert /tmp/pebble-root.pem"
        f" --resolve {ACME}:443:127.0.0.1 https://{ACME}/"
    )
    assert status == "200"


def test_keys_stay_root_only(host):
    for path in ("/etc/nginx/tls/acme.key", "/etc/nginx/acme/account.key"):
        key = host.file(path)
        assert (key.user, key.group, key.mode) == ("root", "root", 0o600), path
    assert host.file("/etc/nginx/acme").mode == 0o700


def test_port_80_serves_challenges_and_redirects_the_rest(host):
    host.check_output("echo probe-token > /var/lib/pyweb-nginx-acme/.well-known/acme-challenge/probe")
    try:
        body = host.check_output(
            f"curl -sf --resolve {ACME}:80:127.0.0.1 http://{ACME}/.well-known/acme-challenge/probe"
        )
        assert body == "probe-token"
    finally:
        host.run("rm -f /var/lib/pyweb-nginx-acme/.well-known/acme-challenge/probe")
    headers = host.check_output(f"curl -sI --resolve {ACME}:80:127.0.0.1 http://{ACME}/page")
    assert re.search(rf"^Location: https://{re.escape(ACME)}/page\r?$", headers, re.MULTILINE), headers
    # Answers exist only while an order is validated.
    assert host.check_output("ls -A /var/lib/pyweb-nginx-acme/.well-known/acme-challenge") == ""


def test_renewal_within_the_window_reloads_without_restart(host):
    """side_effect.yml applied the role with a renewal window longer than Pebble's certificates live."""
    renewal = json.loads(host.file("/root/nginx-acme-renewal.json").content_string)
    assert renewal["changed"] is True
    assert renewal["serial_after"] != renewal["serial_before"]
    served_serial = certificate_field(host, served_certificate(host), "-serial").removeprefix("serial=")
    assert served_serial == renewal["serial_after"]
    assert renewal["pid_after"] == renewal["pid_before"] == nginx_master_pid(host)


def test_ip_address_is_refused_before_any_change(host):
    refusal = json.loads(host.file("/root/nginx-acme-ip-refused.json").content_string)
    assert "Check the names and ports of sites with tls acme" in refusal["task"], refusal
    assert "nginx_sites entry 'acme-ip'" in refusal["msg"]
    assert "server_name" in refusal["msg"]
    assert "192.0.2.10" in refusal["msg"]
    for path in (
        "/etc/nginx/sites-available/acme-ip.conf",
        "/etc/nginx/tls/acme-ip.key",
        "/etc/nginx/tls/acme-ip.csr",
        "/etc/nginx/tls/acme-ip.crt",
    ):
        assert not host.file(path).exists, path
