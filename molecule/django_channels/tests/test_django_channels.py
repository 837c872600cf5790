"""The Django + Channels stack on one host, checked the way its users reach it: HTTPS and wss from outside the
host (this controller: Python's http/ssl clients and the `websockets` client library), and, for the processes,
sockets and units, the host itself."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import shutil
import threading
import time
import uuid

import pytest
from pyweb_molecule import (
    PROJECT,
    HttpWatcher,
    children,
    example_settings,
    main_pid,
    request,
    run_converge,
    tls_context,
    wait_for,
)
from websockets.asyncio.client import connect
from websockets.exceptions import WebSocketException

EXAMPLE = PROJECT / "examples" / "django_channels"
SETTINGS = example_settings("django_channels")
APP = SETTINGS["app_name"]
BASE = f"/srv/{APP}"
HOSTNAME = SETTINGS["nginx_sites"][0]["server_name"][0]
UWSGI_SOCKETS = [f"/run/uwsgi/{APP}.sock", f"/run/uwsgi/{APP}-http.sock"]
DAPHNE_INSTANCES = SETTINGS["daphne_instances"]
DAPHNE_SOCKETS = [f"/run/daphne-{APP}/{n}.sock" for n in range(1, DAPHNE_INSTANCES + 1)]
DAPHNE_UNITS = [f"daphne-{APP}@{n}.service" for n in range(1, DAPHNE_INSTANCES + 1)]
WORKER_UNITS = [f"daphne-{APP}-worker-{worker['name']}.service" for worker in SETTINGS["daphne_workers"]]
RECONNECT_LIMIT = 5.0  # seconds a websocket client may be without a server during a redeploy
WEBSOCKET_CLIENTS = 8  # connected through nginx during the redeploy: four on each of the two daphne instances
HTTP_CLIENTS = 4  # asking through nginx during the redeploy, each every 20 ms
NEW_DEPENDENCY = "six==1.17.0"  # pure Python: the redeploy's new venv installs it from the controller's wheelhouse


def ws_connect(address: str, path: str, origin: str = f"https://{HOSTNAME}"):
    """A websocket client for wss://<site>/<path>, connected to the test host's address (the site's name does not
    resolve here): the URI gives the Host header and SNI, host= the TCP peer."""
    return connect(f"wss://{HOSTNAME}{path}", ssl=tls_context(), host=address, port=443, origin=origin, open_timeout=10)


@pytest.fixture(scope="module")
def live_version(host) -> str:
    """The version of the release that is current (the example's, or a later one's when verify runs again)."""
    return host.file(f"{BASE}/current/VERSION").content_string.strip()


def uwsgi_master(host) -> int:
    return int(host.file(f"/run/uwsgi/{APP}.pid").content_string.strip())


def answering_workers(host, requests: int = 12) -> dict[int, set[str]]:
    """Which uwsgi worker answered from which release, asked through the vassal's HTTP socket. (Its /proc/<pid>/cwd
    is unreadable here: workers of a master that dropped root are not dumpable, and the container lacks ptrace.)"""
    answers: dict[int, set[str]] = {}
    for _ in range(requests):
        health = json.loads(host.check_output(f"curl -sf --unix-socket {UWSGI_SOCKETS[1]} http://localhost/health/"))
        answers.setdefault(health["pid"], set()).add(health["release"])
    return answers


# ---------------------------------------------------------------------------------------------- HTTP via uwsgi


@pytest.mark.parametrize(
    ("language", "greeting"),
    [("de", "Willkommen im Chat"), ("fr", "Bienvenue dans le chat"), ("en", "Welcome to the chat")],
)
def test_index_is_translated_for_the_accept_language(address, language, greeting) -> None:
    status, _, body = request(address, "/", HOSTNAME, headers={"Accept-Language": language})
    page = body.decode()
    assert status == 200, page[:500]
    assert f'<h1 id="greeting">{greeting}</h1>' in page
    assert f'<html lang="{language}">' in page


def test_health_answers_json_from_a_uwsgi_worker_in_the_current_release(host, address) -> None:
    status, headers, body = request(address, "/health/", HOSTNAME)
    assert status == 200, body[:500]
    assert headers["content-type"].startswith("application/json")
    health = json.loads(body)
    assert health["database"] == "ok"
    assert health["redis"] == "ok"
    current = host.check_output(f"readlink -f {BASE}/current")
    assert health["release"] == os.path.basename(current)
    assert health["pid"] in children(host, uwsgi_master(host)), "the answer did not come from a uwsgi worker"


def test_static_files_are_collected_and_served_by_nginx(address) -> None:
    status, headers, body = request(address, "/static/chat/chat.js", HOSTNAME)
    assert status == 200
    assert body == (EXAMPLE / "chat" / "static" / "chat" / "chat.js").read_bytes()
    assert "expires" in headers


def test_uwsgi_workers_run_as_the_app_user_in_the_current_release(host) -> None:
    master = uwsgi_master(host)
    workers = children(host, master)
    assert len(workers) == SETTINGS["uwsgi_processes"]
    current = host.check_output(f"readlink -f {BASE}/current")
    for pid in [master, *workers]:
        assert host.check_output(f"ps -o user= -p {pid}") == APP
    answers = answering_workers(host)
    assert set(answers) <= set(workers)
    assert set().union(*answers.values()) == {os.path.basename(current)}


def test_uwsgi_emperor_is_a_verified_notify_unit(host) -> None:
    unit = "uwsgi-emperor.service"
    assert host.check_output(f"systemctl show --property=Type --value {unit}") == "notify"
    assert host.service(unit).is_running
    assert host.service(unit).is_enabled
    assert host.run(f"systemd-analyze verify --man=no /etc/systemd/system/{unit}").rc == 0
    vassal = host.file(f"/etc/uwsgi/vassals/{APP}.ini")
    assert vassal.user == "root"
    assert vassal.mode == 0o644


def test_a_killed_vassal_comes_back_over_its_stale_sockets(host) -> None:
    master = uwsgi_master(host)
    host.check_output(f"kill -9 {master}")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        answer = host.run(f"curl -sf --unix-socket /run/uwsgi/{APP}-http.sock http://localhost/health/")
        if answer.rc == 0 and uwsgi_master(host) != master:
            assert host.file(UWSGI_SOCKETS[0]).mode == 0o660
            return
        time.sleep(1)
    pytest.fail("the vassal did not answer again within 60 s after its master was killed")


RETIRED_VASSAL = """[uwsgi]
strict = true
plugins = python3
master = true
procname-prefix-spaced = retired
uid = nobody
gid = nogroup
http-socket = 127.0.0.1:9197
vacuum = true
"""


def test_a_vassal_no_longer_declared_is_removed_and_stopped(host) -> None:
    """A vassal file left by an app that is no longer declared: the uwsgi role (alone, --tags uwsgi) removes it and
    the emperor stops its processes; the declared vassal keeps its master."""
    ini = "/etc/uwsgi/vassals/retired.ini"
    host.check_output(f"printf %s {shlex.quote(RETIRED_VASSAL)} > {ini}")
    # On loopback TCP: the emperor's sandbox gives its vassals a private /tmp that a path check from outside misses.
    retired_socket = host.socket("tcp://127.0.0.1:9197")
    assert wait_for(lambda: retired_socket.is_listening, 30), "the emperor never started it"
    assert host.run("pgrep -f '^retired uWSGI master'").rc == 0
    master = uwsgi_master(host)

    converged = run_converge("--tags", "uwsgi")

    assert converged.returncode == 0, converged.stdout[-3000:] + converged.stderr[-2000:]
    assert re.search(r"changed: \[[^]]+\] => \(item=/etc/uwsgi/vassals/retired\.ini\)", converged.stdout)
    assert not host.file(ini).exists
    assert wait_for(lambda: host.run("pgrep -f '^retired uWSGI'").rc == 1, 30), "its processes still run"
    assert uwsgi_master(host) == master
    assert host.file(f"/etc/uwsgi/vassals/{APP}.ini").exists


# ---------------------------------------------------------------------------------------------- sockets


@pytest.mark.parametrize("path", UWSGI_SOCKETS + DAPHNE_SOCKETS)
def test_sockets_are_group_only_for_nginx(host, path) -> None:
    socket_file = host.file(path)
    assert socket_file.is_socket
    assert socket_file.mode == 0o660, oct(socket_file.mode)
    assert socket_file.user == APP
    assert socket_file.group == "www-data"
    assert host.run(f"runuser -u nobody -- curl -s --unix-socket {path} http://localhost/health/").rc != 0


# ---------------------------------------------------------------------------------------------- websockets


@pytest.fixture(scope="module")
def loop():
    event_loop = asyncio.new_event_loop()
    yield event_loop
    event_loop.close()


def test_websocket_echo_over_wss(address, loop, live_version) -> None:
    async def talk():
        async with ws_connect(address, "/ws/echo/") as websocket:
            hello = json.loads(await asyncio.wait_for(websocket.recv(), 10))
            text = f"ping {uuid.uuid4()}"
            await websocket.send(text)
            echo = json.loads(await asyncio.wait_for(websocket.recv(), 10))
            return hello, echo, text

    hello, echo, text = loop.run_until_complete(talk())
    assert hello["type"] == "hello"
    assert hello["version"] == live_version
    assert echo == {**echo, "type": "echo", "echo": text}


def test_chat_reaches_every_client_of_the_room_and_the_archive_worker(address, loop) -> None:
    room = f"room-{uuid.uuid4().hex[:8]}"
    text = f"hello {uuid.uuid4()}"

    async def talk():
        async with ws_connect(address, f"/ws/chat/{room}/") as alice, ws_connect(address, f"/ws/chat/{room}/") as bob:
            await asyncio.wait_for(alice.recv(), 10)
            await asyncio.wait_for(bob.recv(), 10)
            await alice.send(text)
            return json.loads(await asyncio.wait_for(bob.recv(), 10))

    received = loop.run_until_complete(talk())
    assert received["type"] == "message"
    assert received["text"] == text
    assert received["room"] == room
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        status, _, body = request(address, f"/messages/?room={room}", HOSTNAME)
        if status == 200 and text in json.loads(body)["messages"]:
            return
        time.sleep(0.5)
    pytest.fail(f"the archive worker did not store the message of {room} within 20 s")


def test_websocket_from_a_foreign_origin_is_refused(address, loop) -> None:
    async def talk():
        async with ws_connect(address, "/ws/echo/", origin="https://evil.example") as websocket:
            await websocket.recv()

    with pytest.raises(WebSocketException):
        loop.run_until_complete(talk())


# ---------------------------------------------------------------------------------------------- daphne units


@pytest.mark.parametrize("unit", DAPHNE_UNITS + WORKER_UNITS)
def test_daphne_units_are_simple_and_run_as_the_app_user(host, unit) -> None:
    assert host.check_output(f"systemctl show --property=Type --value {unit}") == "simple"
    assert host.service(unit).is_running
    assert host.service(unit).is_enabled
    pid = main_pid(host, unit)
    assert host.check_output(f"ps -o user= -p {pid}") == APP


def test_daphne_survives_a_restart_and_is_not_killed_by_a_start_timeout(host) -> None:
    unit = DAPHNE_UNITS[0]
    before = main_pid(host, unit)
    restarts = int(host.check_output(f"systemctl show --property=NRestarts --value {unit}"))
    host.check_output(f"systemctl restart {unit}")
    after = main_pid(host, unit)
    assert after not in (0, before)
    # Type=notify would leave the unit "activating" with a start job waiting for READY=1 until the timeout
    # kills it; a simple unit is active at once, with no job pending.
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        answer = host.run(f"curl -sf --unix-socket {DAPHNE_SOCKETS[0]} http://localhost/health/")
        if answer.rc == 0:
            break
        time.sleep(0.5)
    assert answer.rc == 0, answer.stderr
    assert host.check_output(f"systemctl show --property=ActiveState,SubState --value {unit}").split() == [
        "active",
        "running",
    ]
    assert host.check_output(f"systemctl list-jobs --no-legend {unit}") == ""
    assert main_pid(host, unit) == after
    assert int(host.check_output(f"systemctl show --property=NRestarts --value {unit}")) == restarts


# ---------------------------------------------------------------------------------------------- redeploy


class WebsocketWatcher(threading.Thread):
    """Keeps one echo client connected through nginx, reconnecting at once whenever the server goes away; records
    every session (its hello, its echoes), each connection attempt that failed (a refused connect, a 502 for the
    upgrade), and how long each gap without a server lasted."""

    def __init__(self, address: str) -> None:
        super().__init__(daemon=True)
        self.address = address
        self.stop = threading.Event()
        self.sessions: list[dict] = []
        self.gaps: list[float] = []
        self.errors: list[str] = []
        self.failed_connects: list[str] = []

    def run(self) -> None:
        asyncio.run(self.watch())

    async def watch(self) -> None:
        lost_at: float | None = None
        # Bounded: a client that cannot reconnect gives up after 50 attempts instead of hammering the host.
        attempts = 0
        while not self.stop.is_set() and attempts < 50:
            attempts += 1
            session: dict | None = None
            try:
                async with ws_connect(self.address, "/ws/echo/") as websocket:
                    hello = json.loads(await asyncio.wait_for(websocket.recv(), 10))
                    if lost_at is not None:
                        self.gaps.append(time.monotonic() - lost_at)
                        lost_at = None
                    session = {"hello": hello, "echoes": []}
                    self.sessions.append(session)
                    while not self.stop.is_set():
                        await websocket.send("still there?")
                        echo = json.loads(await asyncio.wait_for(websocket.recv(), 10))
                        session["echoes"].append(echo["version"])
                        await asyncio.sleep(0.2)
            except (OSError, WebSocketException, asyncio.TimeoutError) as exc:
                if lost_at is None:
                    lost_at = time.monotonic()
                self.errors.append(repr(exc))
                if session is None:
                    self.failed_connects.append(repr(exc))
                await asyncio.sleep(0.1)

    @property
    def disconnects(self) -> int:
        """Sessions the server ended (the last one ends when the test stops the client)."""
        return max(0, len(self.sessions) - 1)


@pytest.fixture(scope="module")
def redeploy(host, address, tmp_path_factory) -> dict:
    """Deploys the example with a new VERSION and a new dependency (so a new venv, which uwsgi's master can only
    load by re-executing itself) through `--tags deploy`, while websocket clients and HTTP clients keep talking to
    the site."""
    version = f"2.0.{int(time.time())}"
    source = tmp_path_factory.mktemp("django_channels") / "v2"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("__pycache__", "*.mo", ".venv"))
    (source / "VERSION").write_text(version + "\n", encoding="utf-8")
    with (source / "requirements.txt").open("a", encoding="utf-8") as requirements:
        requirements.write(f"{NEW_DEPENDENCY}\n")
    venv_before = host.check_output(f"readlink -f {BASE}/current/.venv")
    # The first client is the one the single-client checks below look at; together they spread over every daphne
    # instance (nginx sends each new connection to the next one).
    clients = [WebsocketWatcher(address) for _ in range(WEBSOCKET_CLIENTS)]
    websocket = clients[0]
    # HTTP_CLIENTS clients ask /version/ through nginx and uwsgi, each every 20 ms, recording every answer that is
    # not a 200 and which version and venv each 200 came from.
    versions: set[str] = set()
    venvs: dict[str, set[str]] = {}

    def seen(body: bytes) -> None:
        answer = json.loads(body)
        versions.add(answer["version"])
        venvs.setdefault(answer["version"], set()).add(answer["venv"])

    webs = [
        # At least 20 minutes of requests: they must go on past the swap of a deploy that a busy machine slows.
        HttpWatcher(address, "/version/", HOSTNAME, interval=0.02, limit=60000, on_answer=seen)
        for _ in range(HTTP_CLIENTS)
    ]
    for client in clients:
        client.start()
    for web in webs:
        web.start()
    assert wait_for(lambda: all(client.sessions for client in clients), 30), "not every client got connected"
    # A new venv with a new dependency: on a CI machine running other scenarios beside this one the deploy has taken
    # more than 10 minutes, and a run cut off by the timeout leaves its release lock held for the tests after it.
    deployed = run_converge(
        "--tags", "deploy", "--extra-vars", json.dumps({"app_source_dir": str(source)}), timeout=1500
    )
    time.sleep(3)  # the watchers talk to the new code for a while
    for client in clients:
        client.stop.set()
    for web in webs:
        web.finish(30)
    for client in clients:
        client.join(30)
    return {
        "version": version,
        "deploy": deployed,
        "websocket": websocket,
        "clients": clients,
        "webs": webs,
        "versions": versions,
        "venvs": venvs,
        "venv_before": venv_before,
        "venv_after": host.check_output(f"readlink -f {BASE}/current/.venv"),
    }


def test_redeploy_succeeds(redeploy) -> None:
    deployed = redeploy["deploy"]
    assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-2000:]


def test_redeploy_serves_the_new_version_over_https(redeploy, host, address) -> None:
    status, _, body = request(address, "/version/", HOSTNAME)
    assert status == 200
    assert json.loads(body)["version"] == redeploy["version"]
    status, _, body = request(address, "/", HOSTNAME, headers={"Accept-Language": "de"})
    assert "Willkommen im Chat" in body.decode()
    assert redeploy["version"] in body.decode()
    current = host.check_output(f"readlink -f {BASE}/current")
    answers = answering_workers(host)
    assert set(answers) <= set(children(host, uwsgi_master(host)))
    assert set().union(*answers.values()) == {os.path.basename(current)}


def test_http_requests_keep_being_answered_during_the_redeploy(redeploy) -> None:
    webs = redeploy["webs"]
    answers = sum(web.answers for web in webs)
    failures = [failure for web in webs for failure in web.failures]
    print(f"during the redeploy: {answers} requests, {len(failures)} failed")
    assert answers > 100
    assert failures == [], f"{len(failures)} of {answers} requests failed: {failures[:5]}"
    assert redeploy["version"] in redeploy["versions"]


def test_the_new_dependency_is_served_from_a_new_venv(redeploy) -> None:
    # The release-aware reload had to re-execute uwsgi's master (a chain reload keeps the old interpreter): the
    # requests above were answered across that switch.
    assert redeploy["venv_after"] != redeploy["venv_before"]
    assert redeploy["venvs"][redeploy["version"]] == {redeploy["venv_after"]}


def test_websocket_client_reconnects_to_the_new_code_within_5_seconds(redeploy) -> None:
    websocket = redeploy["websocket"]
    versions = [session["hello"]["version"] for session in websocket.sessions]
    assert versions[0] != redeploy["version"], versions
    assert versions[-1] == redeploy["version"], versions
    assert len(websocket.sessions) >= 2, "the client was never moved to the new release"
    assert websocket.gaps, "no reconnect was recorded"
    assert max(websocket.gaps) <= RECONNECT_LIMIT, f"gaps without a server: {websocket.gaps} ({websocket.errors})"
    last = websocket.sessions[-1]
    assert last["echoes"]
    assert set(last["echoes"]) == {redeploy["version"]}


def test_every_websocket_client_reconnects_once_onto_the_new_code(redeploy) -> None:
    """daphne's rolling restart moves a dropped client only to an instance already on the new code, and nginx
    never counts a restarting instance as down: each client is dropped once, and no reconnect fails."""
    report = {
        index: {
            "disconnects": client.disconnects,
            "versions": [session["hello"]["version"] for session in client.sessions],
            "failed_connects": client.failed_connects,
        }
        for index, client in enumerate(redeploy["clients"])
    }
    for index, client in enumerate(redeploy["clients"]):
        assert client.failed_connects == [], report[index]
        assert client.disconnects == 1, report[index]
        first, *reconnected = client.sessions
        assert first["hello"]["version"] != redeploy["version"], report[index]
        assert {session["hello"]["version"] for session in reconnected} == {redeploy["version"]}, report[index]
        assert set(client.sessions[-1]["echoes"]) == {redeploy["version"]}, report[index]
