"""CPython 3.11.2 built by pyweb.stack.python_build: complete, shared, registered, and serving through a venv.

Every check runs a real program on the test host: the built interpreter itself, ldconfig, readelf, curl against
gunicorn, and /proc for what the gunicorn processes really execute.
"""

from __future__ import annotations

import json

PREFIX = "/opt/python/3.11.2"
PYTHON = f"{PREFIX}/bin/python3.11"
LIBPYTHON = f"{PREFIX}/lib/libpython3.11.so.1.0"
VENV = "/srv/pbdemo/venv"
MODULES = ["ssl", "_ssl", "sqlite3", "_sqlite3", "ctypes", "_ctypes", "lzma", "bz2", "zlib", "readline", "_uuid"]


def test_interpreter_imports_every_required_module_without_help(host):
    # env -i: no LD_LIBRARY_PATH or PYTHON* variables, so libpython is found through RUNPATH / ld.so.cache alone.
    code = f"import {', '.join(MODULES)}, sys; print(sys.version.split()[0], sys.prefix)"
    result = host.run("env -i %s -I -c %s", PYTHON, code)
    assert result.rc == 0, result.stderr
    assert result.stdout.split() == ["3.11.2", PREFIX]


def test_ssl_links_a_recent_openssl(host):
    code = "import ssl, json; print(json.dumps(ssl.OPENSSL_VERSION_INFO))"
    info = json.loads(host.check_output("%s -I -c %s", PYTHON, code))
    assert info[0] >= 3, info
    handshake_ready = host.run("%s -I -c %s", PYTHON, "import ssl; ssl.create_default_context()")
    assert handshake_ready.rc == 0, handshake_ready.stderr


def test_altinstall_created_no_unversioned_names(host):
    assert host.file(f"{PREFIX}/bin/python3.11").is_file
    assert host.file(f"{PREFIX}/bin/pip3.11").is_file
    for name in ("python3", "pip3", "python"):
        assert not host.file(f"{PREFIX}/bin/{name}").exists, name


def test_libpython_is_shared_and_registered(host):
    assert host.file(LIBPYTHON).is_file
    conf = host.file("/etc/ld.so.conf.d/pyweb-python-opt-python-3.11.2.conf")
    assert conf.mode == 0o644
    lines = [line for line in conf.content_string.splitlines() if line and not line.startswith("#")]
    assert lines == [f"{PREFIX}/lib"]
    assert f"=> {LIBPYTHON}" in host.check_output("ldconfig -p")


def test_interpreter_carries_a_runpath_to_its_own_libpython(host):
    dynamic = host.check_output("readelf -d %s", PYTHON)
    assert f"Library runpath: [{PREFIX}/lib]" in dynamic
    assert f"libpython3.11.so.1.0 => {LIBPYTHON}" in host.check_output("ldd %s", PYTHON)


def test_system_python_is_untouched(host):
    before = host.file("/var/lib/pyweb-test-system-python.txt").content_string.split("\n")[:2]
    now = host.check_output("readlink -f /usr/bin/python3; /usr/bin/python3 --version").split("\n")
    assert now == before
    assert now[0].startswith("/usr/bin/python3.")
    # dpkg --verify prints nothing when the package's files are as installed
    assert host.check_output("dpkg --verify python3-minimal python3.11-minimal") == ""


def test_stamp_records_version_flags_and_source(host):
    stamp = json.loads(host.file(f"{PREFIX}/.pyweb-python-build.json").content_string)
    assert stamp["version"] == "3.11.2"
    assert stamp["source_sha256"] == "2411c74bda5bbcfcddaf4531f66d1adc73f247f529aee981b029513aefdbf849"
    assert f"--prefix={PREFIX}" in stamp["configure_args"]
    assert "--enable-shared" in stamp["configure_args"]
    assert "--enable-optimizations" not in stamp["configure_args"]
    assert "--with-lto" not in stamp["configure_args"]
    assert len(stamp["hash"]) == 64


def test_build_left_no_tree_or_staging_behind(host):
    leftovers = host.check_output("ls -A /var/tmp/pyweb-python-build /opt/python").split()
    assert ".3.11.2.staging" not in leftovers
    assert ".3.11.2.previous" not in leftovers
    assert not [name for name in leftovers if name.startswith("build-")], leftovers
    assert host.file(PREFIX).user == "root"
    assert host.file(PREFIX).mode == 0o755


def test_build_user_is_unprivileged_and_cannot_log_in(host):
    user = host.user("pybuild")
    assert user.uid != 0
    assert user.shell == "/usr/sbin/nologin"


def test_venv_is_built_on_the_new_interpreter(host):
    cfg = host.file(f"{VENV}/pyvenv.cfg").content_string
    assert f"home = {PREFIX}/bin" in cfg
    assert "version = 3.11.2" in cfg
    code = "import sys, gunicorn; print(sys.base_prefix, gunicorn.__file__)"
    base, module = host.check_output("%s/bin/python -I -c %s", VENV, code).split()
    assert base == PREFIX
    assert module.startswith(f"{VENV}/lib/python3.11/site-packages/gunicorn/")


def test_gunicorn_from_the_venv_serves_the_app(host):
    body = host.check_output("curl -fsS --max-time 10 http://127.0.0.1:8011/")
    words = body.split()
    assert words[:4] == ["pbdemo", "3.11.2", PREFIX, VENV], body
    assert "OpenSSL 3." in body


def test_gunicorn_processes_run_the_built_python_from_the_venv(host):
    main_pid = host.check_output("systemctl show --property MainPID --value pbdemo.service")
    assert main_pid not in ("", "0")
    pids = [main_pid, *host.check_output("pgrep -P %s", main_pid).split()]
    assert len(pids) == 3  # the master and --workers 2
    for pid in pids:
        # /proc/<pid>/exe and maps of another user need CAP_SYS_PTRACE, which the container's root lacks: read them
        # as the process's own user.
        exe = host.check_output("runuser -u pbdemo -- readlink /proc/%s/exe", pid)
        assert exe == PYTHON, (pid, exe)
        argv = host.file(f"/proc/{pid}/cmdline").content.split(b"\0")
        assert argv[0].decode() == f"{VENV}/bin/python", argv
        assert argv[1].decode() == f"{VENV}/bin/gunicorn", argv
        assert LIBPYTHON in host.check_output("runuser -u pbdemo -- cat /proc/%s/maps", pid)
        assert host.check_output("stat -c %%U /proc/%s", pid) == "pbdemo"
