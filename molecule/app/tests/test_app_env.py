"""The app's environment file: private to the app user, and every value, awkward ones included, reaches the
workers. The flask_spa scenario reuses test_app.py; this file is the app scenario's own (its converge sets the
marker value)."""

from __future__ import annotations

import pytest

BASE = "/srv/flaskapp"
PIDFILE = "/run/flaskapp/gunicorn.pid"


@pytest.fixture
def workers(host) -> list[int]:
    master = int(host.file(PIDFILE).content_string.strip())
    found = host.check_output(f"pgrep -P {master}").split()
    assert found, "the gunicorn master has no workers"
    return [int(pid) for pid in found]


def test_env_file_is_private_and_reaches_the_workers(host, workers):
    env = host.file(f"{BASE}/shared/.env")
    assert env.user == "flaskapp"
    assert env.group == "flaskapp"
    assert env.mode == 0o640
    assert "PYWEB_MARKER=value with spaces and $dollar" in env.content_string.splitlines()
    for pid in workers:
        environ = host.run(f"runuser -u flaskapp -- cat /proc/{pid}/environ").stdout.split("\0")
        assert "PYWEB_MARKER=value with spaces and $dollar" in environ
        assert "UPLOAD_DIR=/srv/flaskapp/shared/uploads" in environ
