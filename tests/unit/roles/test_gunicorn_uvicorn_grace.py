"""A uvicorn worker that is told to stop (a HUP's old workers, a retired master's workers) must still answer the
connections it accepted just before: uvicorn's own graceful shutdown closes every connection that has not sent its
request yet, and the client of such a connection (nginx, or the molecule load generator) sees a reset. Found as
ConnectionResetError under load in molecule/gunicorn_systemd's process-manager switch, about one switch in seven
on a busy machine.

A real uvicorn server in a subprocess, a client that connects, lets the server accept, and sends its request only
after the server was told to stop: with let_accepted_connections_speak the answer is 200, without it the
connection is closed unanswered.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pyweb_molecule import cached_venv, load_source

ROOT = Path(__file__).resolve().parents[3]
MODULE = ROOT / "roles" / "gunicorn" / "files" / "gunicorn_environment.py"
UVICORN_VENV = ROOT / ".cache" / "unit-uvicorn" / f"py{sys.version_info.major}{sys.version_info.minor}"

SERVER = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("pyweb_gunicorn_environment", {module!r})
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
import uvicorn, uvicorn.server

async def app(scope, receive, send):
    if scope["type"] == "http":
        await send({{"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]}})
        await send({{"type": "http.response.body", "body": b"ok"}})

if sys.argv[2] == "grace":
    assert module.let_accepted_connections_speak(grace=1.0)
    assert module.let_accepted_connections_speak(grace=1.0), "a second call (every HUP loads the config) is a no-op"
uvicorn.Server(uvicorn.Config(app, uds=sys.argv[1], log_level="warning", lifespan="off")).run()
"""


@pytest.fixture(scope="session")
def uvicorn_python() -> Path:
    """A venv with a real uvicorn, built once from PyPI and kept under .cache/ for later runs."""
    return cached_venv(UVICORN_VENV, "uvicorn") / "bin" / "python"


def ask_after_stop(python: Path, tmp_path: Path, mode: str) -> bytes:
    """Connect, let the server accept, tell it to stop, then send the request; what came back (b"" when the
    connection was closed unanswered)."""
    path = tmp_path / "u.sock"
    script = tmp_path / "server.py"
    script.write_text(SERVER.format(module=str(MODULE)), encoding="utf-8")
    server = subprocess.Popen([str(python), str(script), str(path), mode])
    try:
        deadline = time.monotonic() + 20
        while not path.exists():
            assert server.poll() is None, "the server exited before it listened"
            assert time.monotonic() < deadline, "the server did not listen within 20 s"
            time.sleep(0.05)
        with socket.socket(socket.AF_UNIX) as client:
            client.settimeout(10)
            client.connect(str(path))
            time.sleep(0.2)  # the server's event loop accepts the connection meanwhile
            server.send_signal(signal.SIGTERM)
            time.sleep(0.3)  # past uvicorn's check of its exit flag (every 0.1 s): it is shutting down now
            data = b""
            try:
                client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                while chunk := client.recv(4096):
                    data += chunk
            except OSError:
                pass
        # uvicorn raises the signal it caught again once it has shut down: it ends by SIGTERM.
        assert server.wait(timeout=20) in (0, -signal.SIGTERM)
        return data
    finally:
        if server.poll() is None:
            os.kill(server.pid, signal.SIGKILL)
            server.wait()


def test_uvicorn_alone_closes_an_accepted_connection_unanswered(uvicorn_python: Path, tmp_path: Path) -> None:
    """The trap itself, so that the test below stays meaningful with newer uvicorn releases."""
    assert ask_after_stop(uvicorn_python, tmp_path, "plain") == b""


def test_an_accepted_connection_is_answered_during_the_shutdown(uvicorn_python: Path, tmp_path: Path) -> None:
    assert ask_after_stop(uvicorn_python, tmp_path, "grace").startswith(b"HTTP/1.1 200 OK")


def test_without_uvicorn_nothing_is_patched() -> None:
    module = load_source("pyweb_gunicorn_environment_plain", MODULE)
    if "uvicorn.server" in sys.modules:
        pytest.skip("uvicorn is imported in the test process")
    assert module.let_accepted_connections_speak() is False
