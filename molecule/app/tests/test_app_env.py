"""The app's environment file: private to the app user, and every value, awkward ones included, reaches the
workers. The flask_spa scenario reuses test_app.py; this file is the app scenario's own (its converge sets the
marker value)."""

from __future__ import annotations

import pytest
from pyweb_molecule import children, environ

BASE = "/srv/flaskapp"
PIDFILE = "/run/flaskapp/gunicorn.pid"


@pytest.fixture
def workers(host) -> list[int]:
    return children(host, int(host.file(PIDFILE).content_string.strip()))


def test_env_file_is_private_and_reaches_the_workers(host, workers):
    env = host.file(f"{BASE}/shared/.env")
    assert env.user == "flaskapp"
    assert env.group == "flaskapp"
    assert env.mode == 0o640
    assert "PYWEB_MARKER=value with spaces and $dollar" in env.content_string.splitlines()
    for pid in workers:
        started_with = environ(host, pid, user="flaskapp")
        assert started_with["PYWEB_MARKER"] == "value with spaces and $dollar"
        assert started_with["UPLOAD_DIR"] == "/srv/flaskapp/shared/uploads"
