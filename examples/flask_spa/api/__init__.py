"""Example Flask API served by gunicorn from a pyweb.stack release directory.

Every setting comes from the environment (the release's shared ``.env``, exported by ``bin/app-env``), so the
same code runs in each release and in management commands.
"""

from __future__ import annotations

import os
import socket
import sqlite3
from pathlib import Path

from flask import Flask, current_app, g, jsonify, request
from werkzeug.utils import secure_filename

SCHEMA = "CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL)"
PACKAGE_ROOT = Path(__file__).resolve().parent.parent


def read_version() -> str:
    """The app version from the VERSION file next to the package; a release without it is broken."""
    return (PACKAGE_ROOT / "VERSION").read_text(encoding="utf-8").strip()


def release_name() -> str:
    """Name of the release directory this process runs from (its working directory, symlinks resolved)."""
    return Path(os.getcwd()).resolve().name


def get_db() -> sqlite3.Connection:
    if "db" not in g:
        g.db = sqlite3.connect(current_app.config["DATABASE_PATH"], timeout=5)
        g.db.row_factory = sqlite3.Row
    return g.db


def close_db(_error: BaseException | None = None) -> None:
    db = g.pop("db", None)
    if db is not None:
        db.close()


def init_db(path: str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as db:
        db.execute(SCHEMA)


def health_problems() -> list[str]:
    problems = []
    try:
        read_version()
    except OSError as exc:
        problems.append(f"VERSION file unreadable: {exc.strerror}")
    try:
        get_db().execute("SELECT count(*) FROM items").fetchone()
    except sqlite3.Error as exc:
        problems.append(f"database not ready ({exc}); run the init-db management command")
    return problems


def create_app() -> Flask:
    app = Flask(__name__)
    app.config.update(
        DATABASE_PATH=os.environ.get("DATABASE_PATH", str(PACKAGE_ROOT / "app.sqlite3")),
        UPLOAD_DIR=os.environ.get("UPLOAD_DIR", str(PACKAGE_ROOT / "uploads")),
        MAX_CONTENT_LENGTH=int(os.environ.get("MAX_UPLOAD_BYTES", str(10 * 1024 * 1024))),
        TASK_TIMEOUT=float(os.environ.get("TASK_TIMEOUT", "10")),
    )
    app.teardown_appcontext(close_db)

    @app.get("/api/health")
    def health():
        problems = health_problems()
        body = {
            "status": "ok" if not problems else "failing",
            "release": release_name(),
            "pid": os.getpid(),
            "problems": problems,
        }
        return jsonify(body), 200 if not problems else 500

    @app.get("/api/version")
    def version():
        # host: which app host answered, when nginx spreads requests over several.
        return jsonify(version=read_version(), release=release_name(), pid=os.getpid(), host=socket.gethostname())

    @app.get("/api/items")
    def list_items():
        rows = get_db().execute("SELECT id, name FROM items ORDER BY id").fetchall()
        return jsonify(items=[dict(row) for row in rows])

    @app.post("/api/items")
    def add_item():
        name = (request.get_json(silent=True) or {}).get("name")
        if not isinstance(name, str) or not name.strip():
            return jsonify(error="'name' must be a non-empty string"), 400
        db = get_db()
        cursor = db.execute("INSERT INTO items (name) VALUES (?)", (name.strip(),))
        db.commit()
        return jsonify(id=cursor.lastrowid, name=name.strip()), 201

    @app.post("/api/upload")
    def upload():
        uploaded = request.files.get("file")
        filename = secure_filename(uploaded.filename or "") if uploaded else ""
        if not filename:
            return jsonify(error="send one file in the multipart field 'file'"), 400
        target = Path(app.config["UPLOAD_DIR"]) / filename
        uploaded.save(target)
        return jsonify(saved=filename, size=target.stat().st_size), 201

    @app.post("/api/tasks/add")
    def enqueue_add():
        from celery.exceptions import TimeoutError as CeleryTimeout  # noqa: PLC0415 - only this route needs celery

        from .tasks import add  # noqa: PLC0415

        payload = request.get_json(silent=True) or {}
        x, y = payload.get("x"), payload.get("y")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (x, y)):
            return jsonify(error="'x' and 'y' must be numbers"), 400
        try:
            result = add.delay(x, y).get(timeout=app.config["TASK_TIMEOUT"])
        except CeleryTimeout:
            return jsonify(error=f"no worker answered within {app.config['TASK_TIMEOUT']}s"), 504
        except OSError as exc:
            return jsonify(error=f"broker unreachable: {exc}"), 503
        return jsonify(result=result)

    @app.cli.command("init-db")
    def init_db_command():
        """Create the database schema (safe to run on every release)."""
        init_db(app.config["DATABASE_PATH"])
        print(f"schema ready in {app.config['DATABASE_PATH']}")

    return app
