"""What this process runs: the version and release directory it loaded (read once, at import)."""

import os

from django.conf import settings

VERSION = settings.VERSION_FILE.read_text(encoding="utf-8").strip()
RELEASE = settings.BASE_DIR.name


def identity() -> dict:
    return {"version": VERSION, "release": RELEASE, "pid": os.getpid()}
