"""Unit tests for roles/git_deploy/files/git-deploy-hook.py, installed as /usr/local/libexec/pyweb/git-deploy.

The script is loaded from its path (no package, no shebang). The pure decisions are tested directly; the
rollout itself runs unprivileged in tmp_path against the real app-release tool and the real app-env launcher of
pyweb.stack.app, with real venvs, real git archives and real subprocesses. Only the privilege switch (root ->
app user) is left to the molecule scenario.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from types import ModuleType

import jinja2
import pytest
import yaml
from ansible_collections.pyweb.stack.plugins.module_utils import _lock as release_lock
from ansible_collections.pyweb.stack.plugins.module_utils import venv as venv_utils

REPO = Path(__file__).resolve().parents[3]
SCRIPT = REPO / "roles" / "git_deploy" / "files" / "git-deploy-hook.py"
APP_RELEASE = REPO / "roles" / "app" / "files" / "app-release.py"
APP_ENV_TEMPLATE = REPO / "roles" / "app" / "templates" / "app-env.j2"
COLLECTIONS = str(REPO / ".cache" / "collections")
SHA_A = "a" * 40
SHA_B = "b" * 40
ZERO = "0" * 40


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("git_deploy_hook", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


hook = load_script()


# ---------------------------------------------------------------------------------------------- ref updates


def test_parse_ref_updates_reads_every_line() -> None:
    text = f"{ZERO} {SHA_A} refs/heads/main\n\n{SHA_A} {SHA_B} refs/tags/v1\n"
    assert hook.parse_ref_updates(text) == [
        hook.RefUpdate(ZERO, SHA_A, "refs/heads/main"),
        hook.RefUpdate(SHA_A, SHA_B, "refs/tags/v1"),
    ]


@pytest.mark.parametrize("line", ["garbage", f"{SHA_A} refs/heads/main", f"xyz {SHA_A} refs/heads/main"])
def test_parse_ref_updates_refuses_malformed_lines(line: str) -> None:
    with pytest.raises(hook.UsageError, match="unexpected ref update"):
        hook.parse_ref_updates(line)


def test_plan_deploys_only_the_deploy_branch() -> None:
    plan = hook.plan_push(
        [hook.RefUpdate(SHA_A, SHA_B, "refs/heads/main"), hook.RefUpdate(ZERO, SHA_A, "refs/heads/feature")],
        "main",
    )
    assert plan.deploy == hook.RefUpdate(SHA_A, SHA_B, "refs/heads/main")
    assert plan.refusal is None
    assert plan.notes == ["refs/heads/feature: accepted, not deployed (only refs/heads/main deploys)"]


def test_plan_without_the_deploy_branch_deploys_nothing() -> None:
    plan = hook.plan_push([hook.RefUpdate(ZERO, SHA_A, "refs/tags/v1")], "main")
    assert plan.deploy is None
    assert plan.refusal is None


def test_plan_refuses_deleting_the_deploy_branch() -> None:
    plan = hook.plan_push([hook.RefUpdate(SHA_A, ZERO, "refs/heads/main")], "main")
    assert plan.deploy is None
    assert plan.refusal is not None
    assert "deleting refs/heads/main" in plan.refusal


def test_new_branch_is_a_create() -> None:
    assert hook.RefUpdate(ZERO, SHA_A, "refs/heads/main").is_create
    assert not hook.RefUpdate(SHA_A, SHA_B, "refs/heads/main").is_create


# ---------------------------------------------------------------------------------------------- runner argv


def test_runner_argv_exact() -> None:
    assert hook.parse_runner_argv(["deploy", "shop", "refs/heads/main", SHA_A]) == ("shop", "refs/heads/main", SHA_A)


@pytest.mark.parametrize(
    "argv",
    [
        ["deploy", "shop", "refs/heads/main"],
        ["deploy", "shop", "refs/heads/main", SHA_A, "--extra"],
        ["hook", "shop", "refs/heads/main", SHA_A],
        ["deploy", "Shop", "refs/heads/main", SHA_A],
        ["deploy", "shop", "refs/tags/v1", SHA_A],
        ["deploy", "shop", "refs/heads/../../etc", SHA_A],
        ["deploy", "shop", "refs/heads/main", "abc"],
        ["deploy", "shop", "refs/heads/main", ZERO],
    ],
)
def test_runner_argv_refuses_anything_else(argv: list[str]) -> None:
    with pytest.raises(hook.UsageError):
        hook.parse_runner_argv(argv)


def test_main_refuses_to_deploy_without_root_or_settings(capsys: pytest.CaptureFixture[str]) -> None:
    assert hook.main(["deploy", "no-such-app", "refs/heads/main", SHA_A]) == 2
    output = capsys.readouterr().out
    if os.geteuid() == 0:
        assert "/etc/pyweb/git-deploy/no-such-app.json" in output
    else:
        assert "must run as root" in output


# ---------------------------------------------------------------------------------------------- configuration


def make_config(base: Path, **overrides: object) -> dict:
    config = {
        "app": "shop",
        "deploy_user": "shop-deploy",
        "repo_dir": "/var/lib/pyweb-git-deploy/shop/shop.git",
        "branch": "main",
        "runner": "/usr/local/libexec/pyweb/git-deploy",
        "app_user": "shop",
        "app_group": "shop",
        "base_dir": str(base),
        "python": sys.executable,
        "requirements_file": "requirements.txt",
        "shared_dirs": ["uploads", "logs"],
        "pip": {"index_url": "", "extra_index_urls": [], "trusted_hosts": [], "ca_bundle": ""},
        "steps": [],
        "health": {"path": "/health", "expect_json": True, "timeout": 10, "canary_command": [], "socket": ""},
        "reload_commands": [],
        "keep_releases": 3,
        "lock_timeout": 5,
        "step_timeout": 120,
    }
    config.update(overrides)
    return config


def test_a_complete_config_has_no_errors(tmp_path: Path) -> None:
    assert hook.config_errors(make_config(tmp_path)) == []


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"app_user": "root"}, "may be root"),
        ({"deploy_user": "root"}, "may be root"),
        ({"branch": "main..x"}, "plain branch name"),
        ({"base_dir": "srv/shop"}, "base_dir must be an absolute path"),
        ({"requirements_file": "../requirements.txt"}, "relative path inside the release"),
        ({"shared_dirs": ["a/b"]}, "plain directory names"),
        ({"steps": [{"name": "Migrate", "command": "x"}]}, "lowercase"),
        ({"steps": [{"name": "m", "command": "x"}, {"name": "m", "command": "y"}]}, "unique"),
        ({"steps": [{"name": "m", "command": "a\nb"}]}, "single-line"),
        ({"steps": ["migrate"]}, "name and a command"),
        ({"reload_commands": [""]}, "reload_commands"),
        ({"keep_releases": 0}, "positive"),
        ({"keep_releases": True}, "keep_releases must be a int"),
        ({"pip": []}, "pip must be a dict"),
    ],
)
def test_config_errors_name_the_problem(tmp_path: Path, overrides: dict, message: str) -> None:
    errors = hook.config_errors(make_config(tmp_path, **overrides))
    assert any(message in error for error in errors), errors


def test_health_settings_are_checked(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    config["health"] = {"path": "health", "canary_command": "gunicorn", "timeout": 0}
    errors = hook.config_errors(config)
    assert any("health.path" in e for e in errors)
    assert any("canary_command" in e for e in errors)
    assert any("health.timeout" in e for e in errors)


def test_check_config_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.json"
    good.write_text(json.dumps(make_config(tmp_path)), encoding="utf-8")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(make_config(tmp_path, app_user="root")), encoding="utf-8")
    assert hook.main(["check-config", str(good)]) == 0
    assert hook.main(["check-config", str(bad)]) == 2
    assert "may be root" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------- venv id


def ansible_venv_id(requirements_sha256: str, python: str, version: str) -> str:
    """Render the very expression roles/app/tasks/venv.yml uses, with Ansible's own hash filter."""
    from ansible.plugins.filter.core import get_hash  # noqa: PLC0415 - only this test needs ansible

    tasks = yaml.safe_load((REPO / "roles" / "app" / "tasks" / "venv.yml").read_text(encoding="utf-8"))
    expression = next(t["ansible.builtin.set_fact"]["_app_venv_id"] for t in tasks if "_app_venv_id" in str(t))
    environment = jinja2.Environment(autoescape=False)
    environment.filters["hash"] = get_hash
    return environment.from_string(expression).render(
        __app_requirements={"stat": {"checksum": requirements_sha256}}, app_python=python, _app_python_version=version
    )


@pytest.mark.parametrize("version", ["3.11.2", "3.13.5"])
def test_venv_id_matches_the_app_role(version: str) -> None:
    checksum = "0123456789abcdef" * 4
    assert hook.venv_id(checksum, "/usr/bin/python3", version) == ansible_venv_id(checksum, "/usr/bin/python3", version)
    assert len(hook.venv_id(checksum, "/usr/bin/python3", version)) == 16


def test_venv_id_changes_with_each_input() -> None:
    ids = {
        hook.venv_id("a" * 64, "/usr/bin/python3", "3.11.2"),
        hook.venv_id("b" * 64, "/usr/bin/python3", "3.11.2"),
        hook.venv_id("a" * 64, "/opt/python3", "3.11.2"),
        hook.venv_id("a" * 64, "/usr/bin/python3", "3.11.3"),
    }
    assert len(ids) == 4


# ---------------------------------------------------------------------------------------------- pip and canary


def test_pip_installs_offline_from_a_wheelhouse(tmp_path: Path) -> None:
    pip = {"index_url": "https://pypi.example/simple", "extra_index_urls": ["https://x"], "trusted_hosts": []}
    argv = hook.venv_pip_argv("/v/bin/python", "/r.txt", tmp_path, {**pip, "ca_bundle": ""})
    assert argv[:3] == ["/v/bin/python", "-m", "pip"]
    assert "install" in argv
    assert argv[argv.index("--find-links") + 1] == str(tmp_path)
    assert "--no-index" in argv
    assert "--index-url" not in argv
    assert "--extra-index-url" not in argv
    assert argv[-2:] == ["--requirement", "/r.txt"]


def test_pip_uses_the_configured_index_without_a_wheelhouse() -> None:
    pip = {
        "index_url": "https://pypi.example/simple",
        "extra_index_urls": ["https://extra.example/simple"],
        "trusted_hosts": ["pypi.example"],
        "ca_bundle": "/etc/ssl/ca.pem",
    }
    argv = hook.venv_pip_argv("/v/bin/python", "/r.txt", None, pip)
    assert "--no-index" not in argv
    assert argv[argv.index("--index-url") + 1] == "https://pypi.example/simple"
    assert argv[argv.index("--extra-index-url") + 1] == "https://extra.example/simple"
    assert argv[argv.index("--trusted-host") + 1] == "pypi.example"
    assert argv[argv.index("--cert") + 1] == "/etc/ssl/ca.pem"


def test_the_hook_runs_the_venv_modules_pip_command_line(tmp_path: Path) -> None:
    """One pip command line for both paths (module_utils/_pip.py): the same inputs give the same argv."""
    pip = {
        "index_url": "https://pypi.example/simple",
        "extra_index_urls": ["https://extra.example/simple"],
        "trusted_hosts": ["pypi.example"],
        "ca_bundle": "/etc/ssl/ca.pem",
    }
    for wheelhouse in (None, str(tmp_path)):
        inputs = venv_utils.PipInputs(
            requirements=("/r.txt",),
            wheelhouse=wheelhouse,
            index_url=pip["index_url"],
            extra_index_urls=tuple(pip["extra_index_urls"]),
            trusted_hosts=tuple(pip["trusted_hosts"]),
            ca_bundle=pip["ca_bundle"],
        )
        expected = venv_utils.pip_install_command("/v/bin/python", inputs, ["--no-cache-dir"])
        assert hook.venv_pip_argv("/v/bin/python", "/r.txt", wheelhouse and Path(wheelhouse), pip) == expected


def test_a_push_builds_from_the_wheelhouse_the_app_role_shipped(app_base: Path, work_tree: Path) -> None:
    """The app role names a host's wheelhouse <X.Y.Z>-<abi>-<machine>-<hash>; a push finds it (and never the old
    <X.Y.Z> directory, which nothing updates any more)."""
    deployer = hook.Deployer(make_config(app_base), hook.Reporter(io.StringIO()), privileged=False)
    interpreter = deployer.interpreter()
    version = interpreter["version"]
    assert version == ".".join(map(str, sys.version_info[:3]))
    stale = app_base / "wheelhouse" / version
    stale.mkdir()
    (stale / "Django-4.0-py3-none-any.whl").write_bytes(b"")
    shipped = app_base / "wheelhouse" / f"{version}-{interpreter['abi']}-{interpreter['machine']}-0123456789ab"
    shipped.mkdir()
    (shipped / "Django-5.0-py3-none-any.whl").write_bytes(b"")
    try:
        assert hook.wheelhouse_dir(app_base, version, interpreter["abi"], interpreter["machine"]) == shipped
    finally:
        shutil.rmtree(stale)
        shutil.rmtree(shipped)


def test_canary_argv_is_the_app_roles_command(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    config["health"]["canary_command"] = ["{release}/.venv/bin/gunicorn", "--bind", "unix:{socket}", "wsgi:app"]
    release = tmp_path / "releases" / "20240101T000000Z"
    launcher = str(tmp_path / "bin" / "app-env")
    assert hook.canary_argv(config, launcher, release) == [
        sys.executable,
        str(tmp_path / "bin" / "app-release"),
        "canary",
        "--path",
        "/health",
        "--timeout",
        "10",
        "--expect-json",
        "--",
        launcher,
        f"{release}/.venv/bin/gunicorn",
        "--bind",
        "unix:{socket}",
        "wsgi:app",
    ]


def test_health_failure_reads_like_a_sentence() -> None:
    assert hook.describe_health_failure({"error": "HTTP 500", "status": 500, "body": "boom"}) == (
        "HTTP 500; status 500; body: boom"
    )
    assert "server log: a | b" in hook.describe_health_failure({"error": "exited", "log": "a\nb"})


# ---------------------------------------------------------------------------------------------- release names


def test_release_name_is_a_utc_timestamp() -> None:
    name = hook.release_name(set(), clock=lambda: 0.0)
    assert name == "19700101T000000Z"


def test_release_name_waits_for_a_free_second() -> None:
    ticks = iter([0.0, 0.5, 1.0])
    assert hook.release_name({"19700101T000000Z"}, clock=lambda: next(ticks)) == "19700101T000001Z"


# ---------------------------------------------------------------------------------------------- unpacking


def tar_of(*members: tuple[tarfile.TarInfo, bytes | None]) -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    buffer.seek(0)
    return buffer


def entry(name: str, kind: bytes = tarfile.REGTYPE, mode: int = 0o644, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.linkname = linkname
    return info


def git(cwd: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.org",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.org",
    }
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def work_tree(tmp_path: Path) -> Path:
    tree = tmp_path / "work"
    (tree / "pkg").mkdir(parents=True)
    (tree / "pkg" / "__init__.py").write_text("VERSION = 1\n", encoding="utf-8")
    (tree / "manage.sh").write_text("#!/bin/sh\necho managed\n", encoding="utf-8")
    (tree / "manage.sh").chmod(0o775)
    (tree / "requirements.txt").write_text("", encoding="utf-8")
    os.symlink("pkg/__init__.py", tree / "link.py")
    git(tree, "init", "--quiet", "--initial-branch=main")
    git(tree, "add", "-A")
    git(tree, "commit", "--quiet", "-m", "one")
    return tree


def archive_of(tree: Path, commit: str = "HEAD") -> io.BytesIO:
    return io.BytesIO(
        subprocess.run(["git", "archive", "--format=tar", commit], cwd=tree, check=True, capture_output=True).stdout
    )


def test_extract_a_git_archive(work_tree: Path, tmp_path: Path) -> None:
    destination = tmp_path / "release"
    destination.mkdir()
    assert hook.extract_tree(archive_of(work_tree), destination) == 3
    assert (destination / "pkg" / "__init__.py").read_text(encoding="utf-8") == "VERSION = 1\n"
    assert os.readlink(destination / "link.py") == "pkg/__init__.py"
    assert (destination / "manage.sh").stat().st_mode & 0o777 == 0o755  # group write dropped, execute kept
    assert (destination / "requirements.txt").stat().st_mode & 0o777 == 0o644


def test_extract_drops_setuid_and_world_write(tmp_path: Path) -> None:
    destination = tmp_path / "release"
    destination.mkdir()
    hook.extract_tree(tar_of((entry("tool", mode=0o4777), b"x")), destination)
    assert (destination / "tool").stat().st_mode & 0o7777 == 0o755


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ([(entry("/etc/passwd"), b"x")], "absolute path"),
        ([(entry("../outside"), b"x")], "outside the release"),
        ([(entry("a/../../outside"), b"x")], "outside the release"),
        (
            [(entry("evil", tarfile.SYMTYPE, linkname="/etc"), None), (entry("evil/passwd"), b"x")],
            "through the symlink",
        ),
        ([(entry("hard", tarfile.LNKTYPE, linkname="/etc/passwd"), None)], "neither a file"),
        ([(entry("dev", tarfile.CHRTYPE), None)], "neither a file"),
        ([(entry("twice"), b"1"), (entry("twice"), b"2")], "twice"),
        ([(entry("nodir/file"), b"x")], "before its directory"),
    ],
)
def test_extract_refuses_what_could_escape_the_release(
    tmp_path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]], message: str
) -> None:
    destination = tmp_path / "release"
    destination.mkdir()
    with pytest.raises(hook.DeployError, match=message):
        hook.extract_tree(tar_of(*members), destination)
    assert not (tmp_path / "outside").exists()


# ---------------------------------------------------------------------------------------------- locking


def test_a_second_holder_waits_then_gives_up(tmp_path: Path) -> None:
    path = str(tmp_path / "deploy.lock")
    out = io.StringIO()
    # flock locks belong to the open file description: a second open() in this process competes like another push.
    with (
        hook.locked(path, 5, hook.Reporter(out), "push", "push of refs/heads/main aaaa"),
        pytest.raises(hook.DeployError, match=r"still held by push of refs/heads/main aaaa \(pid \d+"),
        hook.locked(path, 1, hook.Reporter(out), "push", "push of refs/heads/main bbbb"),
    ):
        pass
    assert f"waiting for another push to finish: the lock {path} is held by push of refs/heads/main aaaa" in (
        out.getvalue()
    )
    with hook.locked(path, 1, hook.Reporter(out), "push", "push of refs/heads/main bbbb"):
        pass  # free again once the first holder left


# ---------------------------------------------------------------------------------------------- a rollout


CANARY_SERVER = """
import http.server, json, os, socketserver, sys
socket_path = sys.argv[1]
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        broken = os.path.exists("BROKEN")
        body = json.dumps({"ok": not broken}).encode()
        self.send_response(500 if broken else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
class Server(socketserver.UnixStreamServer):
    def get_request(self):
        request, _ = super().get_request()
        return request, ("local", 0)
Server(socket_path, Handler).serve_forever()
"""


@pytest.fixture(scope="module")
def app_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """<base> as pyweb.stack.app leaves it: releases/, venvs/, cache/, shared/, bin/app-env and bin/app-release."""
    base = tmp_path_factory.mktemp("srv") / "shop"
    for directory in ("releases", "venvs", "cache", "wheelhouse", "bin", "shared/uploads", "shared/logs"):
        (base / directory).mkdir(parents=True)
    (base / "shared" / ".env").write_text("GREETING=hello from the env file\n", encoding="utf-8")
    environment = jinja2.Environment(autoescape=False)
    environment.filters["comment"] = lambda text: f"# {text}"
    launcher = environment.from_string(APP_ENV_TEMPLATE.read_text(encoding="utf-8")).render(
        ansible_managed="managed", app_name="shop", app_user="shop", app_base_dir=str(base),
        _app_env_file=str(base / "shared" / ".env"), _app_env_launcher=str(base / "bin" / "app-env"),
    )  # fmt: skip
    (base / "bin" / "app-env").write_text(launcher, encoding="utf-8")
    (base / "bin" / "app-env").chmod(0o755)
    # The release tool imports the host library from /usr/local/lib/pyweb-stack; here the collection checkout is it.
    tool = APP_RELEASE.read_text(encoding="utf-8").replace('"/usr/local/lib/pyweb-stack"', repr(COLLECTIONS))
    (base / "bin" / "app-release").write_text(tool, encoding="utf-8")
    (base / "canary.py").write_text(CANARY_SERVER, encoding="utf-8")
    return base


def rollout(base: Path, tree: Path, **overrides: object) -> tuple[str | None, str, Path | None]:
    """Deploy the work tree's HEAD; returns (release name or None, the push output, the new release dir)."""
    commit = git(tree, "rev-parse", "HEAD").strip()
    out = io.StringIO()
    deployer = hook.Deployer(make_config(base, **overrides), hook.Reporter(out), privileged=False)
    try:
        name = deployer.deploy("refs/heads/main", commit, archive_of(tree))
    except hook.DeployError as exc:
        out.write(f"ERROR {exc}\n")
        name = None
    return name, out.getvalue(), deployer.release


def state(base: Path) -> dict:
    output = subprocess.run(
        [sys.executable, str(base / "bin" / "app-release"), "state", "--base", str(base)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(output)


def commit_change(tree: Path, path: str, text: str, message: str) -> None:
    (tree / path).write_text(text, encoding="utf-8")
    git(tree, "add", "-A")
    git(tree, "commit", "--quiet", "-m", message)


STEPS = [
    {"name": "build", "command": "sh -c 'echo \"$GREETING\" > built.txt'"},
    {"name": "check", "command": "sh -c 'test ! -e FAIL_CHECK || { echo check says no; exit 3; }'"},
]


def canary(base: Path) -> dict:
    return {
        "path": "/health",
        "expect_json": True,
        "timeout": 15,
        "canary_command": [sys.executable, str(base / "canary.py"), "{socket}"],
        "socket": "",
    }


def test_rollout_of_a_good_commit(app_base: Path, work_tree: Path) -> None:
    name, output, release = rollout(app_base, work_tree, steps=STEPS, health=canary(app_base))
    assert name is not None, output
    assert release is not None
    listed = [line for line in output.splitlines() if line.startswith("-----> [")]
    assert [line.split("]")[1].split(":")[0].strip() for line in listed] == [
        "checkout",
        "venv",
        "build",
        "check",
        "health-gate",
        "swap",
        "prune",
    ]
    assert os.path.realpath(app_base / "current") == str(release)
    assert (release / "built.txt").read_text(encoding="utf-8") == "hello from the env file\n"
    assert os.readlink(release / "uploads") == str(app_base / "shared" / "uploads")
    meta = json.loads((release / ".pyweb-release.json").read_text(encoding="utf-8"))
    assert meta["source_hash"] == "git:" + git(work_tree, "rev-parse", "HEAD").strip()
    venv = Path(os.path.realpath(release / ".venv"))
    assert venv.parent == app_base / "venvs"
    assert (venv / hook.VENV_HOOK_STAMP).is_file()
    assert state(app_base)["current"] == name


def test_a_failing_step_keeps_current_and_names_the_step(app_base: Path, work_tree: Path) -> None:
    before = state(app_base)["current"]
    assert before is not None
    commit_change(work_tree, "FAIL_CHECK", "", "break the check step")
    name, output, release = rollout(app_base, work_tree, steps=STEPS, health=canary(app_base))
    assert name is None
    assert release is not None
    assert "check FAILED" in output
    assert "step 'check' failed" in output
    assert "check says no" in output
    assert "reusing venvs/" in output  # same requirements: the venv of the first rollout
    assert "[5/7] health-gate" not in output  # nothing after the failed step ran
    after = state(app_base)
    assert after["current"] == before
    failed = next(r for r in after["releases"] if r["name"] == release.name)
    assert failed["status"] == "failed"
    assert "step 'check' failed" in failed["reason"]
    git(work_tree, "rm", "--quiet", "FAIL_CHECK")
    git(work_tree, "commit", "--quiet", "-m", "unbreak")


def test_an_unhealthy_canary_keeps_current(app_base: Path, work_tree: Path) -> None:
    before = state(app_base)["current"]
    commit_change(work_tree, "BROKEN", "", "health says 500")
    name, output, release = rollout(app_base, work_tree, steps=STEPS, health=canary(app_base))
    assert name is None
    assert release is not None
    assert "step 'health-gate' failed" in output
    assert "HTTP 500" in output
    assert state(app_base)["current"] == before
    git(work_tree, "rm", "--quiet", "BROKEN")
    git(work_tree, "commit", "--quiet", "-m", "healthy again")


def test_a_failing_reload_swaps_back(app_base: Path, work_tree: Path, tmp_path: Path) -> None:
    before = state(app_base)["current"]
    marker = tmp_path / "reloads.log"
    commit_change(work_tree, "pkg/__init__.py", "VERSION = 2\n", "two")
    reloads = [f"sh -c 'readlink -f {app_base}/current >> {marker}'", "sh -c 'exit 4'"]
    name, output, release = rollout(app_base, work_tree, reload_commands=reloads)
    assert name is None
    assert release is not None
    assert "step 'reload-2' failed" in output
    assert f"swapping current back to {before}" in output
    assert state(app_base)["current"] == before
    # reload-1 ran for the new release, then again for the previous one after the swap back
    assert marker.read_text(encoding="utf-8").split() == [str(release), str(app_base / "releases" / before)]


def test_a_new_requirements_file_builds_a_new_venv(app_base: Path, work_tree: Path) -> None:
    commit_change(work_tree, "requirements.txt", "# no packages, but a different file\n", "new requirements")
    name, output, release = rollout(app_base, work_tree)
    assert name is not None, output
    assert release is not None
    assert "building venvs/" in output
    assert "from the package index" in output  # no wheel in <base>/wheelhouse
    venvs = sorted(p.name for p in (app_base / "venvs").iterdir())
    assert Path(os.path.realpath(release / ".venv")).name in venvs


def test_missing_requirements_fails_the_venv_step(app_base: Path, work_tree: Path) -> None:
    git(work_tree, "rm", "--quiet", "requirements.txt")
    git(work_tree, "commit", "--quiet", "-m", "no requirements")
    before = state(app_base)["current"]
    name, output, _result = rollout(app_base, work_tree)
    assert name is None
    assert "step 'venv' failed" in output
    assert "no requirements.txt" in output
    assert state(app_base)["current"] == before


def test_prune_keeps_the_configured_number(app_base: Path, work_tree: Path) -> None:
    for number in range(3):
        commit_change(work_tree, "pkg/__init__.py", f"VERSION = {10 + number}\n", f"v{number}")
        name, output, _result = rollout(app_base, work_tree, keep_releases=2)
        assert name is not None, output
        time.sleep(1)  # release names are per second
    assert len(state(app_base)["good"]) <= 2


def test_the_lock_outlives_the_hook_until_git_moves_the_ref(
    work_tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(work_tree)
    path = str(tmp_path / "deploy.lock")
    old = git(work_tree, "rev-parse", "HEAD").strip()
    commit_change(work_tree, "pkg/__init__.py", "VERSION = 2\n", "two")
    new = git(work_tree, "rev-parse", "HEAD").strip()
    git(work_tree, "update-ref", "refs/heads/main", old)
    out = io.StringIO()
    with hook.locked(path, 1, hook.Reporter(out), "push", "first push"):
        hook.keep_lock_until_ref_moves("refs/heads/main", new, 30)
    # the hook has left the lock, but its detached child still holds it: git has not moved the ref yet
    with (
        pytest.raises(hook.DeployError, match="still held by first push"),
        hook.locked(path, 1, hook.Reporter(out), "push", "second push"),
    ):
        pass
    git(work_tree, "update-ref", "refs/heads/main", new)
    with hook.locked(path, 10, hook.Reporter(out), "push", "second push"):
        pass  # released once the ref names the deployed commit


def test_the_runner_rolls_out_under_the_apps_release_lock(app_base: Path, work_tree: Path) -> None:
    """The lock every path takes (<base>/.pyweb-release.lock) is held, naming the push, while the steps run."""
    looked = {"name": "look", "command": "sh -c 'cat ../../.pyweb-release.lock > held-by.json'"}
    out = io.StringIO()
    deployer = hook.Deployer(make_config(app_base, steps=[looked]), hook.Reporter(out), privileged=False)
    commit = git(work_tree, "rev-parse", "HEAD").strip()
    status = hook.deploy_under_lock(deployer, "refs/heads/main", commit, archive_of(work_tree), "shop-deploy")
    assert status == 0, out.getvalue()
    assert deployer.release is not None
    holder = json.loads((deployer.release / "held-by.json").read_text(encoding="utf-8"))
    assert (
        holder["owner"] == f"git push of refs/heads/main {commit[:12]} (pyweb.stack.git_deploy, pushed by shop-deploy)"
    )
    assert holder["pid"] == os.getpid()
    assert not release_lock.is_locked(app_base / ".pyweb-release.lock")  # given back after the rollout


def test_the_runner_waits_for_another_rollout_and_builds_nothing(app_base: Path, work_tree: Path) -> None:
    before = state(app_base)
    out = io.StringIO()
    deployer = hook.Deployer(make_config(app_base, lock_timeout=1), hook.Reporter(out), privileged=False)
    commit = git(work_tree, "rev-parse", "HEAD").strip()
    with (
        release_lock.hold(app_base / ".pyweb-release.lock", 1, "ansible-playbook rollout of shop"),
        pytest.raises(hook.DeployError, match=r"still held by ansible-playbook rollout of shop \(pid"),
    ):
        hook.deploy_under_lock(deployer, "refs/heads/main", commit, archive_of(work_tree), "shop-deploy")
    assert "waiting for another rollout to finish: the lock " in out.getvalue()
    assert "-----> [1/" not in out.getvalue()
    assert state(app_base) == before


def test_a_silent_step_is_killed_at_the_timeout(tmp_path: Path) -> None:
    out = io.StringIO()
    deployer = hook.Deployer(make_config(tmp_path, step_timeout=1), hook.Reporter(out), privileged=False)
    started = time.monotonic()
    status, output = deployer.run(["sleep", "30"], tmp_path, as_app=False)
    assert status != 0
    assert "killed after 1s (step_timeout)" in output
    assert time.monotonic() - started < 20
