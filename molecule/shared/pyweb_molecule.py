"""What the molecule scenarios' testinfra tests share: reading processes and their environment on a test host,
the sandboxing scores the role READMEs publish, and HTTPS clients (one request, and a bounded watcher that keeps
asking through a deploy and counts every failed answer).

Importable from every scenario's tests: pyproject.toml puts this folder on pytest's `pythonpath`.
"""

from __future__ import annotations

import http.client
import importlib.util
import os
import re
import shutil
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
import yaml

PROJECT = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", Path(__file__).resolve().parents[2]))


def load_source(name: str, path: Path) -> ModuleType:
    """Import a Python file that is no package module (a host tool under roles/*/files, another test file) by
    path, as module `name`."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cached_venv(directory: Path, *packages: str) -> Path:
    """A venv at `directory` with `packages` from the package index, built once and kept for later runs (under
    .cache/); the test is skipped when the index cannot be reached."""
    python = directory / "bin" / "python"
    if not python.exists():
        directory.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(directory)], check=True, timeout=120)
        install = subprocess.run(
            [str(python), "-m", "pip", "install", "--disable-pip-version-check", *packages],
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
        )
        if install.returncode != 0:
            shutil.rmtree(directory, ignore_errors=True)
            pytest.skip(f"cannot install {' '.join(packages)} from the package index: {install.stderr[-500:]}")
    return directory


def example_settings(example: str) -> dict:
    """The group_vars of one of the examples (`flask_spa`, `django_channels`): the settings its scenario deploys."""
    path = PROJECT / "examples" / example / "inventory" / "group_vars" / "all.yml"
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def run_converge(*arguments: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """The scenario's converge.yml again, from the controller against the scenario's inventory, with extra
    ansible-playbook arguments (`--tags deploy`, `--check --diff`, `--extra-vars {...}`)."""
    command = [
        str(Path(sys.executable).parent / "ansible-playbook"),
        "--inventory",
        os.environ["MOLECULE_INVENTORY_FILE"],
        *arguments,
        str(Path(os.environ["MOLECULE_SCENARIO_DIRECTORY"]) / "converge.yml"),
    ]
    return subprocess.run(command, capture_output=True, text=True, check=False, timeout=timeout)


# Check mode after converge

RECAP = re.compile(r"^(\S+)\s+: ok=\d+\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.MULTILINE)
COLOUR = re.compile(r"\x1b\[[0-9;]*m")  # molecule may force colours on the nested run
CHECK_DIFF_RECORD = "/root/pyweb-check-diff.json"  # written by shared/check_diff_after_converge.yml


def recap(output: str) -> dict[str, dict[str, int]]:
    """The PLAY RECAP of an ansible-playbook run: changed, unreachable and failed per host."""
    return {
        name: {"changed": int(changed), "unreachable": int(unreachable), "failed": int(failed)}
        for name, changed, unreachable, failed in RECAP.findall(COLOUR.sub("", output))
    }


def changed_tasks(output: str) -> list[str]:
    """The tasks that reported a change, by name (what a failing check names)."""
    tasks, task = [], ""
    for line in COLOUR.sub("", output).splitlines():
        if line.startswith("TASK ["):
            task = line.split("[", 1)[1].rsplit("]", 1)[0]
        elif line.startswith("changed: ") and task not in tasks:
            tasks.append(task)
    return tasks


def assert_check_diff_changes_nothing(run: subprocess.CompletedProcess) -> None:
    """A `--check --diff` run of converge.yml succeeded and reported changed=0 on every host."""
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    hosts = recap(run.stdout)
    assert hosts, run.stdout[-2000:]
    changed = {name: counts["changed"] for name, counts in hosts.items()}
    assert changed == dict.fromkeys(hosts, 0), changed_tasks(run.stdout)


def assert_recorded_check_diff_changed_nothing(host) -> None:
    """What shared/check_diff_after_converge.yml recorded right after converge and idempotence."""
    check = yaml.safe_load(host.file(CHECK_DIFF_RECORD).content_string)
    assert check["rc"] == 0, check["tail"]
    assert check["changed"] == 0, check["changed_tasks"]


def wait_for(check: Callable[[], object], seconds: float, interval: float = 0.5) -> bool:
    """Polls check until it is true or seconds have passed (a bounded wait, never a timing assert)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(interval)
    return False


# Processes


def process_tree(host, pid: int) -> list[int]:
    """The process and all its descendants (gunicorn or uwsgi workers, a prefork pool's children)."""
    tree = [pid]
    for child in host.run(f"ps -o pid= --ppid {pid}").stdout.split():  # exit status 1: no children
        tree.extend(process_tree(host, int(child)))
    return tree


def children(host, pid: int) -> list[int]:
    """The direct children of a process; a master without any fails the test that asked."""
    found = host.check_output(f"pgrep -P {pid}").split()
    assert found, f"process {pid} has no children (workers)"
    return [int(child) for child in found]


def main_pid(host, unit: str) -> int:
    """The main process of a systemd unit; 0 fails the test that asked."""
    pid = int(host.check_output(f"systemctl show --property MainPID --value {unit}"))
    assert pid > 0, f"{unit} has no main process"
    return pid


def environ(host, pid: int, user: str | None = None) -> dict[str, str]:
    """The environment a process was started with (/proc/<pid>/environ).

    Read it as the process's user when root cannot: root in a container lacks CAP_SYS_PTRACE for another user's
    /proc/<pid>/environ."""
    reader = f"runuser -u {user} -- " if user else ""
    raw = host.check_output(f"{reader}cat /proc/{pid}/environ | tr '\\0' '\\n'")
    return dict(line.split("=", 1) for line in raw.splitlines() if "=" in line)


def proc_status(host, pid: int) -> dict[str, str]:
    """/proc/<pid>/status as a mapping (Uid, Gid, CapBnd, NoNewPrivs...)."""
    status = host.file(f"/proc/{pid}/status").content_string
    return {key: value.strip() for key, value in (line.split(":", 1) for line in status.splitlines() if ":" in line)}


# Sandboxing


def published_score(role: str, row_name: str, codename: str) -> float:
    """The score the role README's Sandboxing table publishes for the unit in row `row_name` on the Debian release
    `codename` (the column whose title names it)."""
    text = (PROJECT / "roles" / role / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Sandboxing\n", 1)[1].split("\n## ", 1)[0]
    rows = [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in section.splitlines()
        if line.startswith("|")
    ]
    column = next(i for i, title in enumerate(rows[0]) if codename in title.lower())
    return float(next(row for row in rows[2:] if row[0].strip("`") == row_name)[column])


def measured_score(host, unit: str) -> float:
    """`systemd-analyze security`'s overall exposure of a unit on the host."""
    out = host.check_output(f"systemd-analyze security {unit} --no-pager")
    return float(re.search(r"Overall exposure level for \S+: (\d+\.\d+)", out).group(1))


# HTTPS clients


def tls_context(version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    """A client context for the scenarios' self-signed certificates (TLS itself is checked by its own tests); with
    `version`, it offers only that protocol version.

    SECLEVEL=0 lets this client offer TLS 1.0 and 1.1 at all, so a refusal can only come from the server."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if version is not None:
        context.minimum_version = context.maximum_version = version
        if version < ssl.TLSVersion.TLSv1_3:
            context.set_ciphers("DEFAULT:@SECLEVEL=0")
    return context


def request(
    address: str,
    path: str,
    host_name: str,
    *,
    method: str = "GET",
    tls: bool = True,
    port: int | None = None,
    headers: dict | None = None,
    body: bytes | None = None,
    tls_version: ssl.TLSVersion | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """(status, lower-cased headers, body) of one request to a site, over HTTPS unless tls=False (offering only
    `tls_version` when given)."""
    if tls:
        connection = http.client.HTTPSConnection(address, port, timeout=30, context=tls_context(tls_version))
    else:
        connection = http.client.HTTPConnection(address, port, timeout=30)
    try:
        connection.request(method, path, body=body, headers={"Host": host_name, **(headers or {})})
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def upload(
    address: str, name: str, content: bytes, *, host_name: str, path: str = "/api/upload"
) -> tuple[int, dict[str, str], bytes]:
    """POST one file as multipart/form-data (field `file`), as an upload form does: request()'s answer."""
    boundary = uuid.uuid4().hex
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n\r\n'.encode()
        + content
        + f"\r\n--{boundary}--\r\n".encode()
    )
    content_type = f"multipart/form-data; boundary={boundary}"
    return request(address, path, host_name, method="POST", body=body, headers={"Content-Type": content_type})


class HttpWatcher(threading.Thread):
    """Asks `path` of a site every `interval` seconds, at most `limit` times, and records every answer that is not
    a 200 and every failed connection. `on_answer(body)` sees each 200's body (to collect versions, for example).

    Start it, run the deploy, then `finish()`: the deploy's failed requests are `failures`."""

    def __init__(
        self,
        address: str,
        path: str,
        host_name: str,
        *,
        interval: float = 0.2,
        limit: int = 1500,
        on_answer: Callable[[bytes], None] | None = None,
    ) -> None:
        super().__init__(daemon=True)
        self.address, self.path, self.host_name = address, path, host_name
        self.interval, self.limit, self.on_answer = interval, limit, on_answer
        self.stop = threading.Event()
        self.answers = 0
        self.failures: list[str] = []

    def run(self) -> None:
        while not self.stop.is_set() and self.answers + len(self.failures) < self.limit:
            try:
                status, _, body = request(self.address, self.path, self.host_name)
                self.answers += 1
                if status != 200:
                    self.failures.append(f"HTTP {status}")
                elif self.on_answer:
                    self.on_answer(body)
            except (OSError, http.client.HTTPException) as exc:
                self.failures.append(repr(exc))
            time.sleep(self.interval)

    def finish(self, timeout: float = 60) -> None:
        """Stops asking and waits for the request in flight."""
        self.stop.set()
        self.join(timeout)
