"""What this process runs: the version, the release directory and the virtualenv it loaded (read once, at import)."""

import os
import socket
import sys

from django.conf import settings

VERSION = settings.VERSION_FILE.read_text(encoding="utf-8").strip()
RELEASE = settings.BASE_DIR.name
# The venv under <base>/venvs that <release>/.venv pointed at when this process started.
VENV = os.path.realpath(sys.prefix)


def identity() -> dict:
    # host: which app host answered, when nginx spreads requests over several.
    return {"version": VERSION, "release": RELEASE, "venv": VENV, "pid": os.getpid(), "host": socket.gethostname()}
