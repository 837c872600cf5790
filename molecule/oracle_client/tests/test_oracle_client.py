"""pyweb.stack.oracle_client in thick mode, from the TEST FIXTURE zip: the client is installed and registered, every
library it needs resolves (Debian 13 through the libaio.so.1 compat link), and the environment reaches a running
gunicorn worker under supervisor, a systemd unit and login shells."""

from __future__ import annotations

import json

import pytest

HOME = "/opt/oracle/instantclient"
VERSIONED = "/opt/oracle/instantclient_23_5"
KEYS = ("ORACLE_HOME", "LD_LIBRARY_PATH", "NLS_LANG", "TNS_ADMIN")
EXPECTED = {
    "ORACLE_HOME": HOME,
    "LD_LIBRARY_PATH": HOME,
    "NLS_LANG": "AMERICAN_AMERICA.AL32UTF8",
    "TNS_ADMIN": f"{HOME}/network/admin",
}
SOCKET = "/run/oraapp/gunicorn.sock"
PIDFILE = "/run/oraapp/gunicorn.pid"


def environ_of(host, pid: int) -> dict[str, str]:
    raw = host.check_output(f"cat /proc/{pid}/environ | tr '\\0' '\\n'")
    return dict(line.split("=", 1) for line in raw.splitlines() if "=" in line)


@pytest.fixture
def workers(host) -> list[int]:
    if host.system_info.codename == "trixie":
        pytest.skip("Debian 13 runs only what differs there (the client and libaio); the app's workers: Debian 12")
    master = int(host.file(PIDFILE).content_string.strip())
    found = host.check_output(f"pgrep -P {master}").split()
    assert found, "the gunicorn master has no workers"
    return [int(pid) for pid in found]


def test_client_is_installed_under_a_versioned_dir_with_a_stable_link(host):
    link = host.file(HOME)
    assert link.is_symlink
    assert link.linked_to == VERSIONED
    assert host.file(f"{VERSIONED}/libclntsh.so.23.1").is_file
    assert host.file(f"{VERSIONED}/libclntsh.so").linked_to == f"{VERSIONED}/libclntsh.so.23.1"
    assert host.file(f"{VERSIONED}/libnnz.so").is_file
    assert "TEST FIXTURE" in host.file(f"{VERSIONED}/TEST_FIXTURE_README").content_string
    assert host.file(f"{VERSIONED}/libclntsh.so.23.1").user == "root"
    assert not host.file("/opt/oracle/.staging").exists


def test_ldconfig_lists_libclntsh(host):
    assert host.file("/etc/ld.so.conf.d/oracle-instantclient.conf").content_string.splitlines()[-1] == HOME
    cache = host.check_output("/sbin/ldconfig -p")
    assert f"libclntsh.so.23.1 (libc6,x86-64) => {HOME}/libclntsh.so.23.1" in cache
    assert f"libnnz.so (libc6,x86-64) => {HOME}/libnnz.so" in cache


def test_every_library_of_libclntsh_resolves(host):
    # No LD_LIBRARY_PATH here: the ldconfig registration alone must find libnnz, and libaio must exist as libaio.so.1.
    ldd = host.check_output(f"env -u LD_LIBRARY_PATH ldd {HOME}/libclntsh.so")
    assert "not found" not in ldd
    assert "libaio.so.1 =>" in ldd
    assert f"libnnz.so => {HOME}/libnnz.so" in ldd


def test_libaio_package_and_compat_link_match_the_release(host):
    release = host.system_info.codename
    if release == "bookworm":
        # Debian 12's own libaio1 provides libaio.so.1 (a link to libaio.so.1.0.x): no compat link there.
        assert host.package("libaio1").is_installed
        assert "1t64" not in host.file("/usr/lib/x86_64-linux-gnu/libaio.so.1").linked_to
    else:
        assert host.package("libaio1t64").is_installed
        # The compat link names the soname link of libaio1t64 (testinfra's linked_to would resolve it further).
        assert host.file("/usr/lib/x86_64-linux-gnu/libaio.so.1").is_symlink
        assert host.check_output("readlink /usr/lib/x86_64-linux-gnu/libaio.so.1") == "libaio.so.1t64"


def test_login_shells_get_the_environment(host):
    profile = host.file("/etc/profile.d/oracle-instantclient.sh")
    assert profile.mode == 0o644
    printed = host.check_output(
        "env -u LD_LIBRARY_PATH sh -c '. /etc/profile.d/oracle-instantclient.sh; "
        'for k in ORACLE_HOME LD_LIBRARY_PATH NLS_LANG TNS_ADMIN; do eval "echo $k=\\$$k"; done\''
    )
    assert dict(line.split("=", 1) for line in printed.splitlines()) == EXPECTED


def test_the_host_name_resolves_through_etc_hosts(host):
    name = host.check_output("hostname")
    lines = host.file("/etc/hosts").content_string.splitlines()
    managed = [line for line in lines if line.startswith("127.0.1.1 ")]
    assert len(managed) == 1
    assert name in managed[0].split()[1:]
    assert host.run(f"getent hosts {name}").rc == 0


def test_running_workers_carry_the_oracle_environment(host, workers):
    env_file = host.file("/srv/oraapp/shared/.env").content_string.splitlines()
    for key, value in EXPECTED.items():
        assert f"{key}={value}" in env_file
    for pid in workers:
        environ = environ_of(host, pid)
        assert {key: environ.get(key) for key in KEYS} == EXPECTED, f"worker {pid}"
        assert environ.get("APP_MARKER") == "oracle-client-scenario"


def test_a_worker_loads_libclntsh_by_name(host, workers):
    answer = json.loads(host.check_output(f"curl -sf --unix-socket {SOCKET} http://localhost/oracle"))
    assert answer["pid"] in workers
    assert answer["environment"] == EXPECTED
    client = answer["client"]
    assert client["loaded"], client
    assert client["version"] == "23.5.0.0.0"
    assert client["nnz"] == "libnnz TEST FIXTURE"
    assert client["aio_probe"] == 0
    assert client["libclntsh"] == [f"{VERSIONED}/libclntsh.so.23.1"]
    assert client["libaio"], "libaio is not mapped into the worker"


def test_ctypes_dlopens_libclntsh_with_a_workers_environment(host, workers):
    # Replays exactly a worker's environment, as the app user, in a fresh interpreter.
    assert dlopen_with(host, environ_of(host, workers[0]), "oraapp") == "loaded"


def test_ctypes_dlopens_libclntsh_with_a_units_environment(host):
    # The drop-in's environment of a unit, replayed as an unprivileged user: libclntsh and libaio resolve by name.
    pid = int(host.check_output("systemctl show --property MainPID --value oracle-probe.service"))
    assert dlopen_with(host, environ_of(host, pid), "nobody") == "loaded"


def dlopen_with(host, environ: dict[str, str], user: str) -> str:
    assignments = " ".join(f"{key}='{environ[key]}'" for key in (*KEYS, "PATH"))
    script = 'import ctypes; ctypes.CDLL("libclntsh.so"); ctypes.CDLL("libaio.so.1"); print("loaded")'
    return host.check_output(f"runuser -u {user} -- env -i {assignments} /usr/bin/python3 -c '{script}'")


def test_systemd_units_get_the_environment_through_a_drop_in(host):
    dropin = host.file("/etc/systemd/system/oracle-probe.service.d/oracle-client.conf")
    assert 'Environment="NLS_LANG=AMERICAN_AMERICA.AL32UTF8"' in dropin.content_string
    pid = int(host.check_output("systemctl show --property MainPID --value oracle-probe.service"))
    assert pid > 0
    environ = environ_of(host, pid)
    assert {key: environ.get(key) for key in KEYS} == EXPECTED
