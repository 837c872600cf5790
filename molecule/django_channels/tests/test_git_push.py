"""Push-to-deploy on the Django Channels stack: the `client` user of the test host clones the bare repository over
SSH with its key, pushes the Django example, a changed page, a migration that fails and two pushes at once. Every
check uses the real git client, sshd, the hook, the page uwsgi serves (curl on the vassal's HTTP socket), the daphne
instances and the files on the host.

The pushes run once per module (fixture `pushes`), in order, after test_django_channels.py; the tests then read
what each one did. Last (fixture `push_and_rollout`), a push that sits in its migrate step while an Ansible
`--tags deploy` run starts: the lock every path takes keeps the two apart, read from the lock's journal lines.
"""

from __future__ import annotations

import base64
import json
import re
import shlex
import shutil
import threading
import uuid

import pytest
from pyweb_molecule import PROJECT, run_converge, wait_for

BASE = "/srv/chatapp"
UWSGI_HTTP_SOCKET = "/run/uwsgi/chatapp-http.sock"
DAPHNE_SOCKETS = ["/run/daphne-chatapp/1.sock", "/run/daphne-chatapp/2.sock"]
DEPLOY_USER = "chatapp-deploy"
REMOTE = f"{DEPLOY_USER}@localhost:chatapp.git"
WORK = "/home/client/work"
SSH = "ssh -o StrictHostKeyChecking=accept-new -o BatchMode=yes"
PAGE_MARKER = "pushed-by-git-deploy"
BROKEN_MARKER = "never-served-broken-migration"

FAILING_MIGRATION = """from django.db import migrations


def fail(apps, schema_editor):
    raise RuntimeError("this migration fails on purpose")


class Migration(migrations.Migration):
    dependencies = [("chat", "0001_initial")]
    operations = [migrations.RunPython(fail)]
"""


def as_client(host, command: str, directory: str = WORK):
    script = f"export GIT_SSH_COMMAND={shlex.quote(SSH)}; cd {shlex.quote(directory)} && {command}"
    return host.run(f"runuser -l client -c {shlex.quote(script)}")


def put(host, path: str, content: str) -> None:
    encoded = base64.b64encode(content.encode()).decode()
    result = host.run(f"echo {encoded} | base64 -d > {path} && chown client:client {path}")
    assert result.rc == 0, result.stderr


def current(host) -> str:
    return host.check_output(f"readlink -f {BASE}/current")


def page(host) -> str:
    result = host.run(f"curl -sS --fail --max-time 20 --unix-socket {UWSGI_HTTP_SOCKET} http://localhost/")
    assert result.rc == 0, result.stderr
    return result.stdout


def health(host, socket: str) -> dict:
    return json.loads(
        host.check_output(f"curl -sS --fail --max-time 20 --unix-socket {socket} http://localhost/health/")
    )


def push(host, directory: str = WORK) -> dict:
    """git push from the client; what was live before and after, and the output git printed."""
    before = {"current": current(host), "page": page(host)}
    result = as_client(host, "git push deploy main 2>&1", directory)
    return {
        "rc": result.rc,
        "output": result.stdout,
        "before": before,
        "after": {"current": current(host), "page": page(host)},
        "commit": as_client(host, "git rev-parse HEAD", directory).stdout.strip(),
    }


def commit(host, message: str, directory: str = WORK) -> None:
    result = as_client(host, f"git add -A && git commit -q --allow-empty -m {shlex.quote(message)}", directory)
    assert result.rc == 0, result.stdout + result.stderr


def steps(output: str) -> list[str]:
    """Step names in the order the push output announced them ('-----> [n/m] name: ...')."""
    return re.findall(r"-----> \[\d+/\d+\] ([a-z0-9_.-]+):", output)


@pytest.fixture(scope="module")
def pushes(host) -> dict:
    record = {}
    host.run(f"rm -rf {WORK} /home/client/other")
    record["clone"] = as_client(host, f"git clone -q {REMOTE} {WORK} 2>&1", "/home/client")
    assert record["clone"].rc == 0, record["clone"].stdout
    setup = as_client(
        host,
        # exactly the example: on a kept host the clone may hold files earlier runs pushed (a migration)
        "git rm -r -q --ignore-unmatch . && cp -a ../src/. . && printf '__pycache__/\\n*.pyc\\n*.mo\\n' > .gitignore"
        " && git config user.email client@test && git config user.name client"
        f" && git checkout -q -B main && git remote add deploy {REMOTE}",
    )
    assert setup.rc == 0, setup.stdout + setup.stderr
    commit(host, "the example app")
    record["first"] = push(host)

    template = "chat/templates/chat/index.html"
    original = '<ul id="log"></ul>'
    marked = f'<p id="marker">{PAGE_MARKER}</p>{original}'
    as_client(host, f"sed -i {shlex.quote(f's|{original}|{marked}|')} {template}")
    commit(host, "a changed page")
    record["page"] = push(host)

    put(host, f"{WORK}/chat/migrations/0002_fails.py", FAILING_MIGRATION)
    as_client(host, f"sed -i 's|{PAGE_MARKER}|{BROKEN_MARKER}|' {template}")
    commit(host, "a migration that fails")
    record["broken"] = push(host)
    record["branch_after_broken"] = as_client(host, "git ls-remote deploy refs/heads/main").stdout.split()[0]
    newest = sorted(host.check_output(f"ls {BASE}/releases").split())[-1]
    record["newest_after_broken"] = newest
    # read now: the next good deploy prunes failed releases first
    record["failed_reason"] = host.run(f"cat {BASE}/releases/{newest}/.failed").stdout

    # Two pushes at once, both on top of the live commit: the second waits for the first's lock, then finds the
    # branch moved and is rejected; the deploys never interleave.
    as_client(host, "git reset -q --hard HEAD~1")
    as_client(host, f"git clone -q {REMOTE} /home/client/other && git -C /home/client/other remote add deploy {REMOTE}")
    as_client(host, "git config user.email other@test && git config user.name other", "/home/client/other")
    put(host, f"{WORK}/VERSION", "2.0.0-first\n")
    commit(host, "first of two")
    put(host, "/home/client/other/VERSION", "2.0.0-second\n")
    commit(host, "second of two", "/home/client/other")
    log_a, log_b = "/home/client/push-a.log", "/home/client/push-b.log"
    both = as_client(
        host,
        f"(git push deploy main > {log_a} 2>&1; echo rc=$? >> {log_a}) & sleep 3;"
        f" (cd /home/client/other && git push deploy main > {log_b} 2>&1; echo rc=$? >> {log_b}); wait",
    )
    assert both.rc == 0, both.stderr
    record["concurrent"] = (host.file(log_a).content_string, host.file(log_b).content_string)
    record["final"] = {"current": current(host), "page": page(host)}
    return record


def test_ssh_gives_the_deploy_user_git_only(host, pushes):
    result = as_client(host, f"{SSH} {DEPLOY_USER}@localhost id 2>&1", "/home/client")
    assert result.rc != 0
    assert "uid=" not in result.stdout


def test_deploy_user_is_neither_root_nor_the_app(host):
    user = host.user(DEPLOY_USER)
    assert user.uid != 0
    assert user.shell == "/usr/bin/git-shell"
    assert "chatapp" not in user.groups
    rules = host.check_output(f"sudo -l -U {DEPLOY_USER}")
    assert "/usr/local/libexec/pyweb/git-deploy deploy chatapp *" in rules
    assert "ALL) ALL" not in rules.replace("(root)", "")


def test_keys_belong_to_root(host):
    keys = host.file("/var/lib/pyweb-git-deploy/chatapp/.ssh/authorized_keys")
    assert keys.user == "root"
    assert keys.mode == 0o644
    assert keys.content_string.count("restrict ssh-ed25519 ") == 1


def test_clone_over_ssh(pushes):
    assert pushes["clone"].rc == 0


def test_first_push_lists_every_step(pushes):
    first = pushes["first"]
    assert first["rc"] == 0, first["output"]
    assert steps(first["output"]) == [
        "checkout",
        "venv",
        "compilemessages",
        "collectstatic",
        "migrate",
        "health-gate",
        "swap",
        "reload-1",
        "reload-2",
        "live-probe",
        "prune",
    ]
    assert "remote: " in first["output"]  # the hook's lines reach the pusher through git
    assert "reusing venvs/" in first["output"]  # the venv pyweb.stack.app built for the same requirements
    assert "uwsgi-reload" in first["output"]
    assert "daphne-roll" in first["output"]
    assert first["after"]["current"] != first["before"]["current"]


def test_changed_page_is_served(host, pushes):
    pushed = pushes["page"]
    assert pushed["rc"] == 0, pushed["output"]
    assert PAGE_MARKER not in pushed["before"]["page"]
    assert PAGE_MARKER in pushed["after"]["page"]
    release = pushed["after"]["current"].rsplit("/", 1)[1]
    assert f"({release}, pid" in pushed["after"]["page"]  # the page names the release that serves it
    meta = host.file(f"{pushed['after']['current']}/.pyweb-release.json").content_string
    assert f"git:{pushed['commit']}" in meta


def test_failed_migration_rejects_the_push_and_keeps_serving(host, pushes):
    broken = pushes["broken"]
    assert broken["rc"] != 0
    assert "step 'migrate' failed" in broken["output"]
    assert "this migration fails on purpose" in broken["output"]
    assert "pre-receive hook declined" in broken["output"]
    assert "push REJECTED" in broken["output"]
    assert broken["after"]["current"] == broken["before"]["current"]
    assert PAGE_MARKER in broken["after"]["page"]
    assert BROKEN_MARKER not in broken["after"]["page"]
    # git did not move the branch: it still names the live commit
    assert pushes["branch_after_broken"] == pushes["page"]["commit"]


def test_failed_release_is_marked_with_the_step(host, pushes):
    live = pushes["broken"]["after"]["current"].rsplit("/", 1)[1]
    assert pushes["newest_after_broken"] != live
    assert "step 'migrate' failed" in pushes["failed_reason"]
    assert "this migration fails on purpose" in pushes["failed_reason"]
    # and the good deploy after it pruned it (failed releases go first)
    assert not host.file(f"{BASE}/releases/{pushes['newest_after_broken']}").exists


def test_two_pushes_at_once_do_not_interleave(host, pushes):
    first, second = pushes["concurrent"]
    assert first.rstrip().endswith("rc=0"), first
    assert second.rstrip().endswith("rc=1"), second
    assert "waiting for another push to finish" in second
    assert "moved to" in second
    assert "-----> [1/" not in second  # the second push built nothing
    assert "2.0.0-first" in pushes["final"]["page"]


def test_release_is_sealed_to_root(host, pushes):
    live = pushes["final"]["current"]
    assert host.file(live).user == "root"
    assert host.file(f"{live}/manage.py").user == "root"
    assert host.run(f"runuser -u chatapp -- touch {live}/manage.py").rc != 0
    assert host.run(f"runuser -u chatapp -- touch {live}/new-file").rc != 0


def test_uwsgi_and_daphne_answer_from_the_pushed_release(host, pushes):
    release = pushes["final"]["current"].rsplit("/", 1)[1]
    answers = [health(host, UWSGI_HTTP_SOCKET) for _ in range(8)]
    assert {answer["release"] for answer in answers} == {release}
    assert {answer["version"] for answer in answers} == {"2.0.0-first"}
    for socket in DAPHNE_SOCKETS:
        answer = health(host, socket)
        assert (answer["release"], answer["version"]) == (release, "2.0.0-first"), socket


# ---------------------------------------------------------------------------------------------- push and Ansible

LOCK = f"{BASE}/.pyweb-release.lock"
GATE = "/tmp/pyweb-lock-test"  # the migration below says it started here and waits for the test's go file
GATE_SECONDS = 600  # the migration's own bound: a test that never says go fails the push instead of hanging it
LOCK_EVENT = re.compile(r"^(?P<event>waiting for|taken|released)\b.* (?P<path>/\S+) at (?P<at>\S+) by (?P<by>.*)$")
ANSIBLE_OWNER = "ansible-playbook rollout of chatapp (pyweb.stack.app)"
PUSH_OWNER = "git push of refs/heads/main"

WAITING_MIGRATION = f"""import os
import time

from django.db import migrations

GATE = {GATE!r}


def wait_for_the_lock_test(apps, schema_editor):
    open(os.path.join(GATE, "in-migrate"), "w").close()
    deadline = time.monotonic() + {GATE_SECONDS}
    while not os.path.exists(os.path.join(GATE, "go")):
        if time.monotonic() > deadline:
            raise RuntimeError("the lock test never let this migration go")
        time.sleep(0.2)


class Migration(migrations.Migration):
    atomic = False  # holds no database lock while it waits
    dependencies = [("chat", "0001_initial")]
    operations = [migrations.RunPython(wait_for_the_lock_test, migrations.RunPython.noop)]
"""


def host_now(host) -> str:
    return host.check_output("date -u +%Y-%m-%dT%H:%M:%S.%6NZ")


def lock_events(host, since: str) -> list[dict]:
    """The release lock's journal lines since a time: event, when (the holder's own clock reading) and by whom."""
    lines = host.check_output("journalctl --no-pager -o cat -t pyweb-release-lock").splitlines()
    events = [match.groupdict() for match in map(LOCK_EVENT.match, lines) if match]
    return [event for event in events if event["path"] == LOCK and event["at"] >= since]


def once(events: list[dict], owner: str, event: str) -> str:
    """When the one `event` line of owner was logged; fails naming what the journal holds instead."""
    times = [e["at"] for e in events if e["event"] == event and e["by"].startswith(owner)]
    assert len(times) == 1, f"expected one '{event}' line by {owner!r}; the lock's journal: {events}"
    return times[0]


@pytest.fixture(scope="module")
def push_and_rollout(host, pushes, tmp_path_factory) -> dict:
    """A push whose migrate step waits for a file; once it sits there, the site's `--tags deploy` runs from the
    controller; once that run waits for the lock (its journal line), the migration is let go."""
    since = host_now(host)
    host.run(f"rm -rf {GATE} && install -d -m 1777 {GATE}")
    # a new name each run: on a kept host an earlier run's migration is applied already and would not wait
    put(host, f"{WORK}/chat/migrations/0002_waits_for_the_lock_test_{uuid.uuid4().hex[:8]}.py", WAITING_MIGRATION)
    commit(host, "a migration that waits for the lock test")
    log = "/home/client/push-lock.log"
    inner = f"git push deploy main > {log} 2>&1; echo rc=$? >> {log}"
    started = as_client(host, f"setsid sh -c {shlex.quote(inner)} < /dev/null > /dev/null 2>&1 &")
    assert started.rc == 0, started.stderr
    assert wait_for(lambda: host.file(f"{GATE}/in-migrate").exists, 300), host.file(log).content_string
    once(lock_events(host, since), PUSH_OWNER, "taken")  # the push sits in migrate holding the lock

    source = tmp_path_factory.mktemp("lock") / "src"
    shutil.copytree(
        PROJECT / "examples" / "django_channels", source, ignore=shutil.ignore_patterns("__pycache__", "*.mo", ".venv")
    )
    (source / "VERSION").write_text("3.0.0-after-the-push\n", encoding="utf-8")
    record: dict = {}
    rollout = threading.Thread(
        target=lambda: record.update(
            deploy=run_converge(
                "--tags", "deploy", "--extra-vars", json.dumps({"app_source_dir": str(source)}), timeout=1200
            )
        )
    )
    rollout.start()

    # Bounded: either the run reaches the lock and waits, or (without the lock) it finishes while the push sits
    # in migrate.
    def rollout_waits_or_ended() -> bool:
        events = lock_events(host, since)
        return any(e["event"] == "waiting for" and e["by"].startswith(ANSIBLE_OWNER) for e in events) or (
            not rollout.is_alive()
        )

    wait_for(rollout_waits_or_ended, 900, 2)
    record["rollout_done_while_push_in_migrate"] = not rollout.is_alive()
    record["push_done_when_let_go"] = "rc=" in host.file(log).content_string
    host.run(f"touch {GATE}/go")
    rollout.join(1200)
    assert not rollout.is_alive(), "the --tags deploy run did not end"
    assert wait_for(lambda: "rc=" in host.file(log).content_string, 300), host.file(log).content_string
    record["push"] = host.file(log).content_string
    record["events"] = lock_events(host, since)
    record["current"] = current(host)
    host.run(f"rm -rf {GATE}")
    return record


def test_the_push_and_the_rollout_both_succeed(push_and_rollout) -> None:
    assert push_and_rollout["push"].rstrip().endswith("rc=0"), push_and_rollout["push"]
    deployed = push_and_rollout["deploy"]
    assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-2000:]
    assert steps(push_and_rollout["push"])[4] == "migrate"


def test_a_rollout_started_during_a_push_waits_for_it(push_and_rollout) -> None:
    assert not push_and_rollout["rollout_done_while_push_in_migrate"], "the rollout did not wait for the push"
    assert not push_and_rollout["push_done_when_let_go"]
    events = push_and_rollout["events"]
    push_taken, push_released = once(events, PUSH_OWNER, "taken"), once(events, PUSH_OWNER, "released")
    waiting = once(events, ANSIBLE_OWNER, "waiting for")
    assert push_taken < waiting < push_released, events  # it asked while the push held the lock


def test_the_push_and_the_rollout_never_interleave(host, push_and_rollout) -> None:
    events = push_and_rollout["events"]
    push_taken, push_released = once(events, PUSH_OWNER, "taken"), once(events, PUSH_OWNER, "released")
    rollout_taken, rollout_released = once(events, ANSIBLE_OWNER, "taken"), once(events, ANSIBLE_OWNER, "released")
    assert push_taken < push_released <= rollout_taken < rollout_released, events
    # the rollout's release is newer than the push's (both are named after the time they were started) and serves
    pushed = re.search(r"deploying refs/heads/main \w+ as release (\S+)", push_and_rollout["push"])
    assert pushed, push_and_rollout["push"]
    assert push_and_rollout["current"].rsplit("/", 1)[1] > pushed.group(1)
    assert health(host, UWSGI_HTTP_SOCKET)["version"] == "3.0.0-after-the-push"
    assert host.run(f"flock --nonblock {LOCK} true").rc == 0  # and nobody holds the lock any more
