"""Push-to-deploy for a pyweb.stack app, installed by pyweb.stack.git_deploy as /usr/local/libexec/pyweb/git-deploy.

One file, two sides of a privilege boundary:

  git-deploy hook APP
      The bare repository's pre-receive hook, run by git as the deploy user. Reads the pushed ref updates on
      stdin; an update of the deploy branch is deployed before git moves the branch, so a failed deploy rejects
      the push and the branch keeps naming what is live. Serialises pushes with a lock file in the repository,
      then streams `git archive <commit>` into the runner below through `sudo -n`.

  git-deploy deploy APP REF COMMIT        (root, through the one sudoers rule the role writes)
      Builds <base>/releases/<UTC time> from the tar on stdin, reuses or builds <base>/venvs/<id> (the id the
      pyweb.stack.app role computes), runs the configured steps through <base>/bin/app-env as the app user,
      gates the release with `app-release canary`, swaps current with `app-release swap`, runs the reload
      commands, probes the live socket and prunes. Any failure marks the release failed (`app-release fail`),
      leaves or puts current back on the previous release and exits 1. Every step is printed; git shows the
      lines to the pusher as `remote:` lines.

  git-deploy check-config FILE
      Validates a configuration file (the role's `validate:`).

Settings come from /etc/pyweb/git-deploy/APP.json (root-owned, written by the role). Code from the push runs only
as the app user (venv build, steps, canary); root only unpacks files, keeps the release bookkeeping through
<base>/bin/app-release and runs the configured reload commands. Standard library only, Python 3.9 or later.
"""

from __future__ import annotations

import contextlib
import errno
import grp
import hashlib
import json
import os
import pwd
import re
import shlex
import shutil
import stat
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

sys.path.insert(0, "/usr/local/lib/pyweb-stack")  # the host library of pyweb.stack.common (host_library.yml)
from ansible_collections.pyweb.stack.plugins.module_utils._lock import LockError, hold, release_lock_path
from ansible_collections.pyweb.stack.plugins.module_utils._pip import (
    INTERPRETER_TAGS_SCRIPT,
    PipSources,
    pip_install_argv,
    wheelhouse_dir,
)

CONFIG_DIR = "/etc/pyweb/git-deploy"
ZERO_SHA = re.compile(r"^0+$")
SHA_PATTERN = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")
APP_PATTERN = re.compile(r"^[a-z][a-z0-9_-]{0,30}$")
STEP_NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,40}$")
BRANCH_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,100}$")
RELEASE_FORMAT = "%Y%m%dT%H%M%SZ"
META_FILE = ".pyweb-release.json"
VENV_MODULE_STAMP = ".pyweb-venv.json"  # written by pyweb.stack.venv when Ansible built the venv
VENV_HOOK_STAMP = ".pyweb-git-deploy-venv.json"  # written here once a venv built by a push is complete
REASON_LIMIT = 1500
OUTPUT_TAIL = 15
REF_UPDATE_WAIT = 60  # seconds the lock outlives a successful deploy, waiting for git to move the branch
SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class DeployError(Exception):
    """A step failed; the message is the reason recorded in the release's .failed file."""


class UsageError(Exception):
    """The command line or the configuration is invalid; nothing was changed."""


# ---------------------------------------------------------------------------------------------- configuration

REQUIRED_KEYS = {
    "app": str,
    "deploy_user": str,
    "repo_dir": str,
    "branch": str,
    "runner": str,
    "app_user": str,
    "app_group": str,
    "base_dir": str,
    "python": str,
    "requirements_file": str,
    "shared_dirs": list,
    "pip": dict,
    "steps": list,
    "health": dict,
    "reload_commands": list,
    "keep_releases": int,
    "lock_timeout": int,
    "step_timeout": int,
}


def config_errors(config: object) -> list[str]:
    """Everything wrong with a configuration document; empty when it is usable."""
    if not isinstance(config, dict):
        return ["the configuration must be a JSON object"]
    errors = [
        f"{key} must be a {kind.__name__}"
        for key, kind in REQUIRED_KEYS.items()
        if not isinstance(config.get(key), kind) or (kind is int and isinstance(config.get(key), bool))
    ]
    if errors:
        return errors
    return layout_errors(config) + step_errors(config) + health_errors(config)


def layout_errors(config: dict) -> list[str]:
    errors = []
    if not APP_PATTERN.match(config["app"]):
        errors.append("app must be a short lowercase name")
    if "root" in (config["deploy_user"], config["app_user"]):
        errors.append("neither deploy_user nor app_user may be root")
    if not BRANCH_PATTERN.match(config["branch"]) or ".." in config["branch"]:
        errors.append("branch must be a plain branch name such as main")
    errors += [
        f"{key} must be an absolute path"
        for key in ("repo_dir", "runner", "base_dir", "python")
        if not config[key].startswith("/")
    ]
    if not relative_path_ok(config["requirements_file"]):
        errors.append("requirements_file must be a relative path inside the release")
    if not all(isinstance(d, str) and relative_path_ok(d) and "/" not in d for d in config["shared_dirs"]):
        errors.append("shared_dirs must be plain directory names")
    if config["keep_releases"] < 1 or config["lock_timeout"] < 1 or config["step_timeout"] < 1:
        errors.append("keep_releases, lock_timeout and step_timeout must be positive")
    return errors


def step_errors(config: dict) -> list[str]:
    errors = []
    names = []
    for step in config["steps"]:
        if not (isinstance(step, dict) and isinstance(step.get("name"), str) and isinstance(step.get("command"), str)):
            errors.append("each step needs a name and a command (strings)")
            continue
        names.append(step["name"])
        if not STEP_NAME_PATTERN.match(step["name"]):
            errors.append(f"step name {step['name']!r} must be lowercase letters, digits, '.', '_' or '-'")
        if not step["command"].strip() or "\n" in step["command"]:
            errors.append(f"step {step['name']!r} needs a single-line command")
    if len(set(names)) != len(names):
        errors.append("step names must be unique")
    if not all(isinstance(c, str) and c.strip() and "\n" not in c for c in config["reload_commands"]):
        errors.append("reload_commands must be single-line command strings")
    return errors


def health_errors(config: dict) -> list[str]:
    health = config["health"]
    errors = []
    if not (isinstance(health.get("path"), str) and health["path"].startswith("/")):
        errors.append("health.path must start with '/'")
    canary = health.get("canary_command")
    if not isinstance(canary, list) or not all(isinstance(part, str) for part in canary):
        errors.append("health.canary_command must be a list of strings")
    if not isinstance(health.get("socket", ""), str):
        errors.append("health.socket must be a string (empty to skip the live probe)")
    timeout = health.get("timeout", 30)
    if not isinstance(timeout, int) or isinstance(timeout, bool) or timeout < 1:
        errors.append("health.timeout must be a positive number of seconds")
    return errors


def relative_path_ok(path: str) -> bool:
    return bool(path) and not path.startswith("/") and ".." not in Path(path).parts


def load_config(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as handle:
            config = json.load(handle)
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read the configuration {path}: {exc}") from exc
    errors = config_errors(config)
    if errors:
        raise UsageError(f"{path} is invalid: " + "; ".join(errors))
    return config


def config_path(app: str) -> str:
    if not APP_PATTERN.match(app):
        raise UsageError(f"{app!r} is not an app name")
    return os.path.join(CONFIG_DIR, app + ".json")


def check_trusted_file(path: str) -> None:
    """The runner acts as root on what the configuration says: it must be root's and nobody else's to change."""
    try:
        info = os.stat(path)
    except OSError as exc:
        raise UsageError(f"cannot read the configuration {path}: {exc.strerror}") from exc
    if info.st_uid != 0 or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UsageError(f"{path} must be owned by root and writable by root only")


# ---------------------------------------------------------------------------------------------- pure decisions


@dataclass(frozen=True)
class RefUpdate:
    old: str
    new: str
    ref: str

    @property
    def is_delete(self) -> bool:
        return bool(ZERO_SHA.match(self.new))

    @property
    def is_create(self) -> bool:
        return bool(ZERO_SHA.match(self.old))


def parse_ref_updates(text: str) -> list[RefUpdate]:
    """The `<old> <new> <ref>` lines git feeds a pre-receive hook."""
    updates = []
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 3 or not all(SHA_PATTERN.match(sha) for sha in parts[:2]):
            raise UsageError(f"unexpected ref update line from git: {line!r}")
        updates.append(RefUpdate(*parts))
    return updates


@dataclass
class PushPlan:
    deploy: RefUpdate | None = None
    notes: list[str] = field(default_factory=list)
    refusal: str | None = None


def plan_push(updates: list[RefUpdate], branch: str) -> PushPlan:
    """Which update deploys (only the deploy branch), what to tell the pusher, or why the push is refused."""
    deploy_ref = "refs/heads/" + branch
    plan = PushPlan()
    for update in updates:
        if update.ref != deploy_ref:
            plan.notes.append(f"{update.ref}: accepted, not deployed (only {deploy_ref} deploys)")
        elif update.is_delete:
            plan.refusal = f"deleting {deploy_ref} is refused: it names the live release"
        else:
            plan.deploy = update
    return plan


def venv_id(requirements_sha256: str, python: str, python_version: str) -> str:
    """The venv directory name pyweb.stack.app computes in tasks/venv.yml, so both reuse each other's venvs."""
    return hashlib.sha256(f"{requirements_sha256}:{python}:{python_version}".encode()).hexdigest()[:16]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 16), b""):
            digest.update(chunk)
    return digest.hexdigest()


def release_name(existing: set[str], clock: Callable[[], float] = time.time) -> str:
    """A fresh UTC timestamp name; waits for the next second when a release of this second exists."""
    while True:
        name = time.strftime(RELEASE_FORMAT, time.gmtime(clock()))
        if name not in existing:
            return name
        time.sleep(0.2)


def venv_pip_argv(venv_python: str, requirements: str, wheelhouse: Path | None, pip: dict) -> list[str]:
    """pyweb.stack.venv's own pip command line (module_utils/_pip.py) with the runner's pip settings."""
    sources = PipSources(
        wheelhouse=str(wheelhouse) if wheelhouse is not None else None,
        index_url=pip.get("index_url") or None,
        extra_index_urls=pip.get("extra_index_urls") or [],
        trusted_hosts=pip.get("trusted_hosts") or [],
        ca_bundle=pip.get("ca_bundle") or None,
    )
    return pip_install_argv(venv_python, sources, requirements=[requirements], install_options=["--no-cache-dir"])


def canary_argv(config: dict, launcher: str, release: Path) -> list[str]:
    """The same `app-release canary` command line pyweb.stack.app runs in tasks/release.yml."""
    health = config["health"]
    argv = [config["python"], app_release_tool(config), "canary", "--path", health["path"]]
    argv += ["--timeout", str(health.get("timeout", 30))]
    if health.get("expect_json"):
        argv.append("--expect-json")
    return [*argv, "--", launcher, *(part.replace("{release}", str(release)) for part in health["canary_command"])]


def probe_argv(config: dict) -> list[str]:
    health = config["health"]
    argv = [config["python"], app_release_tool(config), "probe", "--socket", health["socket"], "--path", health["path"]]
    argv += ["--timeout", str(health.get("timeout", 30))]
    return [*argv, "--expect-json"] if health.get("expect_json") else argv


def app_release_tool(config: dict) -> str:
    return os.path.join(config["base_dir"], "bin", "app-release")


def describe_health_failure(result: dict) -> str:
    """One line from app-release's canary/probe JSON: the error, then the status and body or the server log."""
    reason = str(result.get("error") or "unknown error")
    if "status" in result:
        reason += f"; status {result['status']}"
    if result.get("body"):
        reason += f"; body: {str(result['body'])[:300]}"
    elif result.get("log"):
        reason += "; server log: " + " | ".join(str(result["log"]).splitlines()[-5:])
    return reason


def parse_runner_argv(argv: list[str]) -> tuple[str, str, str]:
    """`deploy APP REF COMMIT` exactly: the sudoers rule pins APP, so nothing else may ride along."""
    if len(argv) != 4 or argv[0] != "deploy":
        raise UsageError("usage: git-deploy deploy APP REF COMMIT")
    app, ref, commit = argv[1:]
    if not APP_PATTERN.match(app):
        raise UsageError(f"{app!r} is not an app name")
    if not ref.startswith("refs/heads/") or not BRANCH_PATTERN.match(ref[len("refs/heads/") :]) or ".." in ref:
        raise UsageError(f"{ref!r} is not a branch ref")
    if not SHA_PATTERN.match(commit) or ZERO_SHA.match(commit):
        raise UsageError(f"{commit!r} is not a commit id")
    return app, ref, commit


# ---------------------------------------------------------------------------------------------- safe unpacking


def member_path(name: str) -> str:
    """The normalised relative path of a tar member; DeployError when it could land outside the release."""
    if name.startswith("/"):
        raise DeployError(f"the archive holds an absolute path: {name!r}")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if not parts or ".." in parts:
        raise DeployError(f"the archive holds a path outside the release: {name!r}")
    return "/".join(parts)


def inside_without_links(root: Path, relative: str) -> Path:
    """root/relative, refusing any existing parent component that is a symlink (no writing through links)."""
    target = root
    parts = relative.split("/")
    for part in parts[:-1]:
        target = target / part
        if target.is_symlink():
            raise DeployError(f"the archive writes through the symlink {target.relative_to(root)}")
    return root / relative


def extract_tree(stream: IO[bytes], destination: Path) -> int:
    """Unpack a tar stream (git archive's output) into destination: regular files, directories and symlinks
    only, no absolute or parent paths, nothing written through a symlink, modes reduced to 0644/0755 and owned
    by whoever runs this (root in production). Returns the number of files."""
    count = 0
    with tarfile.open(fileobj=stream, mode="r|") as archive:
        for member in archive:
            if member.type in (tarfile.XGLTYPE, tarfile.XHDTYPE):
                continue
            relative = member_path(member.name)
            target = inside_without_links(destination, relative)
            if member.isdir():
                target.mkdir(mode=0o755, parents=False, exist_ok=True)
                continue
            if target.is_symlink() or target.exists():
                raise DeployError(f"the archive holds {relative} twice")
            if not target.parent.is_dir():
                raise DeployError(f"the archive holds {relative} before its directory")
            if member.issym():
                os.symlink(member.linkname, target)
            elif member.isfile():
                source = archive.extractfile(member)
                mode = 0o755 if member.mode & 0o111 else 0o644
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
                descriptor = os.open(target, flags, mode)
                with os.fdopen(descriptor, "wb") as out:
                    if source is not None:
                        shutil.copyfileobj(source, out)
                os.chmod(target, mode)
                count += 1
            else:
                raise DeployError(f"the archive holds {relative}, which is neither a file, a directory nor a symlink")
    return count


# ---------------------------------------------------------------------------------------------- output


class Reporter:
    """Prints to the pusher: git relays hook output line by line as `remote:`."""

    def __init__(self, out: IO[str] | None = None) -> None:
        self.out = out or sys.stdout

    def line(self, text: str = "") -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def heading(self, text: str) -> None:
        self.line(f"-----> {text}")

    def detail(self, text: str) -> None:
        self.line(f"       {text}")

    def alarm(self, text: str) -> None:
        self.line(f" !!!!  {text}")


# ---------------------------------------------------------------------------------------------- the deploy


@dataclass
class Account:
    name: str
    uid: int
    gid: int
    groups: list[int]
    home: str

    @classmethod
    def lookup(cls, user: str, group: str | None = None) -> Account:
        entry = pwd.getpwnam(user)
        gid = grp.getgrnam(group).gr_gid if group else entry.pw_gid
        groups = sorted({g.gr_gid for g in grp.getgrall() if user in g.gr_mem} | {gid})
        return cls(user, entry.pw_uid, gid, groups, entry.pw_dir)


class Deployer:
    """One rollout of one commit. `privileged` is true when run as root (production): code from the push then
    runs as the app user and the release is sealed to root; unit tests run it unprivileged as themselves."""

    def __init__(self, config: dict, reporter: Reporter, privileged: bool | None = None) -> None:
        self.config = config
        self.report = reporter
        self.privileged = os.geteuid() == 0 if privileged is None else privileged
        self.base = Path(config["base_dir"])
        self.launcher = str(self.base / "bin" / "app-env")
        self.app = Account.lookup(config["app_user"], config["app_group"]) if self.privileged else None
        self.release: Path | None = None
        self.previous: str | None = None
        self.swapped = False
        self.steps_total = 0
        self.steps_done = 0

    # -- running things

    def environment(self, as_app: bool) -> dict[str, str]:
        home = self.app.home if (as_app and self.app) else os.environ.get("HOME", "/root")
        return {"PATH": SAFE_PATH, "HOME": home, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "PIP_NO_CACHE_DIR": "1"}

    def run(self, argv: list[str], cwd: Path | str, as_app: bool, quiet: bool = False) -> tuple[int, str]:
        """Run argv, echo its output indented (unless quiet), return (status, output)."""
        kwargs = {}
        if as_app and self.app is not None:
            kwargs = {"user": self.app.uid, "group": self.app.gid, "extra_groups": self.app.groups}
        lines: list[str] = []
        try:
            process = subprocess.Popen(
                argv,
                cwd=str(cwd),
                env=self.environment(as_app),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                errors="replace",
                start_new_session=True,
                **kwargs,
            )
        except OSError as exc:
            return 127, f"cannot run {argv[0]}: {exc.strerror or exc}"
        # A step that hangs without printing must end too: the watchdog kills its process group at the deadline.
        expired = threading.Event()

        def kill() -> None:
            expired.set()
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, 9)

        watchdog = threading.Timer(self.config["step_timeout"], kill)
        watchdog.start()
        try:
            assert process.stdout is not None
            for text in process.stdout:
                lines.append(text.rstrip("\n"))
                if not quiet:
                    self.report.detail(text.rstrip("\n"))
            status = process.wait()
        finally:
            watchdog.cancel()
        if expired.is_set():
            lines.append(f"killed after {self.config['step_timeout']}s (step_timeout)")
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, 9)  # nothing a step started may outlive it (and write into a sealed release)
        return status, "\n".join(lines)

    def app_release(self, *args: str) -> dict:
        """Run <base>/bin/app-release as root and return its JSON (the one release-bookkeeping implementation)."""
        status, output = self.run([self.config["python"], app_release_tool(self.config), *args], self.base, False, True)
        try:
            result = json.loads(output.strip().splitlines()[-1]) if output.strip() else {}
        except ValueError:
            result = {}
        if status != 0:
            raise DeployError(f"app-release {args[0]} failed: {result.get('msg') or output.strip()[-REASON_LIMIT:]}")
        return result

    @contextlib.contextmanager
    def step(self, name: str, what: str) -> Iterator[None]:
        self.steps_done += 1
        self.report.heading(f"[{self.steps_done}/{self.steps_total}] {name}: {what}")
        started = time.monotonic()
        try:
            yield
        except DeployError as exc:
            self.report.alarm(f"{name} FAILED: {exc}")
            raise DeployError(f"step '{name}' failed: {exc}") from exc
        self.report.detail(f"ok ({time.monotonic() - started:.1f}s)")

    def checked(self, argv: list[str], cwd: Path | str, as_app: bool, quiet: bool = False) -> str:
        status, output = self.run(argv, cwd, as_app, quiet)
        if status != 0:
            tail = " | ".join(output.strip().splitlines()[-OUTPUT_TAIL:])
            raise DeployError(f"{shlex.join(argv)} exited with status {status}: {tail}"[:REASON_LIMIT])
        return output

    # -- ownership

    def give_to_app(self, path: Path) -> None:
        if self.app is not None:
            os.lchown(path, self.app.uid, self.app.gid)

    def seal(self, path: Path) -> None:
        """Root owns the tree and only root may write it; the app user keeps read (and execute) access.
        os.fwalk and O_NOFOLLOW keep this on the tree even if something swaps a directory for a symlink."""
        if not self.privileged:
            return
        seal_entry(str(path), None)
        for _top, dirs, files, dirfd in os.fwalk(str(path), follow_symlinks=False):
            for name in [*dirs, *files]:
                seal_entry(name, dirfd)

    # -- the steps

    def plan(self) -> list[str]:
        names = ["checkout", "venv", *(s["name"] for s in self.config["steps"])]
        names += ["health-gate"] if self.config["health"]["canary_command"] else []
        names += ["swap", *(f"reload-{i + 1}" for i in range(len(self.config["reload_commands"])))]
        names += ["live-probe"] if self.config["health"].get("socket") else []
        return [*names, "prune"]

    def deploy(self, ref: str, commit: str, archive: IO[bytes]) -> str:
        """Run every step; returns the new release's name or raises DeployError naming the failed step."""
        state = self.app_release("state", "--base", str(self.base))
        self.previous = state.get("current")
        releases_dir = self.base / "releases"
        name = release_name({r["name"] for r in state.get("releases", [])} | set(os.listdir(releases_dir)))
        self.release = releases_dir / name
        self.steps_total = len(self.plan())
        self.report.heading(f"deploying {ref} {commit[:12]} as release {name} (current: {self.previous or 'none'})")
        self.release.mkdir(mode=0o755)
        try:
            self.build(commit, archive)
            self.activate()
        except DeployError as exc:
            self.fail(str(exc))
            raise
        with self.step("prune", f"app-release prune --keep {self.config['keep_releases']}"):
            result = self.app_release("prune", "--base", str(self.base), "--keep", str(self.config["keep_releases"]))
            self.report.detail(f"removed releases: {', '.join(result.get('removed') or []) or 'none'}")
        return name

    def build(self, commit: str, archive: IO[bytes]) -> None:
        assert self.release is not None
        with self.step("checkout", f"{commit[:12]} into {self.release}"):
            try:
                count = extract_tree(archive, self.release)
            except (tarfile.TarError, OSError) as exc:
                raise DeployError(f"cannot unpack the pushed tree: {exc}") from exc
            for shared in self.config["shared_dirs"]:
                link = self.release / shared
                if link.is_symlink() or link.exists():
                    raise DeployError(f"the repository holds {shared}, which is a shared directory (shared/{shared})")
                link.symlink_to(self.base / "shared" / shared)
            self.report.detail(f"{count} files; shared: {', '.join(self.config['shared_dirs']) or 'none'}")
        with self.step("venv", f"{self.config['requirements_file']} with {self.config['python']}"):
            venv = self.venv()
            (self.release / ".venv").symlink_to(venv)
        # The build steps may write into the release (compiled messages, collected static files, bytecode):
        # the app user owns it while they run; it is sealed to root before anything serves it.
        if self.privileged:
            for root, dirs, files in os.walk(self.release):
                for entry in [*dirs, *files]:
                    self.give_to_app(Path(root) / entry)
            self.give_to_app(self.release)
        try:
            for step in self.config["steps"]:
                with self.step(step["name"], step["command"]):
                    self.checked([self.launcher, *shlex.split(step["command"])], self.release, True)
        finally:
            self.seal(self.release)
        if self.config["health"]["canary_command"]:
            with self.step("health-gate", f"app-release canary GET {self.config['health']['path']}"):
                status, output = self.run(
                    canary_argv(self.config, self.launcher, self.release), self.release, True, True
                )
                result = last_json(output)
                if status != 0:
                    raise DeployError(f"canary unhealthy: {describe_health_failure(result) if result else output}")
                self.report.detail(f"HTTP {result.get('status')} from {self.config['health']['path']}")
        meta = {
            "name": self.release.name,
            "source": "git",
            "source_hash": f"git:{commit}",
            "venv": os.path.realpath(self.release / ".venv"),
            "python": self.python_version(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        (self.release / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")

    def activate(self) -> None:
        assert self.release is not None
        with self.step("swap", f"current -> releases/{self.release.name}"):
            self.app_release("swap", "--base", str(self.base), "--to", self.release.name)
            self.swapped = True
        try:
            self.reload()
            if self.config["health"].get("socket"):
                with self.step(
                    "live-probe", f"GET {self.config['health']['path']} on {self.config['health']['socket']}"
                ):
                    status, output = self.run(probe_argv(self.config), self.base, True, True)
                    if status != 0:
                        result = last_json(output)
                        raise DeployError(
                            f"live app unhealthy: {describe_health_failure(result) if result else output}"
                        )
        except DeployError:
            self.swap_back()
            raise

    def reload(self, label: str = "reload") -> None:
        for number, command in enumerate(self.config["reload_commands"], start=1):
            with self.step(f"{label}-{number}", command):
                self.checked(shlex.split(command), "/", False)

    def swap_back(self) -> None:
        """After a failed reload or live probe: the previous release goes live again, its processes reloaded."""
        if not self.previous:
            self.report.alarm("there is no previous release to go back to")
            return
        self.report.heading(f"swapping current back to {self.previous}")
        self.app_release("swap", "--base", str(self.base), "--to", self.previous)
        self.swapped = False
        self.steps_total += len(self.config["reload_commands"])
        try:
            self.reload("reload-previous")
        except DeployError as exc:
            self.report.alarm(f"reloading the previous release failed too: {exc}")

    def fail(self, reason: str) -> None:
        if self.release is None or not self.release.is_dir():
            return
        with contextlib.suppress(DeployError):
            self.app_release("fail", "--base", str(self.base), "--release", self.release.name, "--reason", reason)

    # -- the venv

    def python_version(self) -> str:
        return self.interpreter()["version"]

    def interpreter(self) -> dict[str, str]:
        """Version, abi and machine of the configured interpreter: they name its venv and its wheelhouse."""
        output = self.checked([self.config["python"], "-c", INTERPRETER_TAGS_SCRIPT], "/", False, True)
        try:
            return json.loads(output.strip().splitlines()[-1])
        except (ValueError, IndexError) as exc:
            raise DeployError(f"cannot read the version of {self.config['python']}: {output.strip()[-300:]}") from exc

    def venv(self) -> Path:
        """<base>/venvs/<id>, reused when Ansible or an earlier push completed it, else built as the app user."""
        assert self.release is not None
        requirements = self.release / self.config["requirements_file"]
        if not requirements.is_file() or requirements.is_symlink():
            raise DeployError(f"the release has no {self.config['requirements_file']} to build the venv from")
        interpreter = self.interpreter()
        version = interpreter["version"]
        identifier = venv_id(file_sha256(requirements), self.config["python"], version)
        venv = self.base / "venvs" / identifier
        if (venv / "bin" / "python").exists() and (
            (venv / VENV_MODULE_STAMP).is_file() or (venv / VENV_HOOK_STAMP).is_file()
        ):
            self.report.detail(f"reusing venvs/{identifier} (same requirements and interpreter)")
            return venv
        if venv.exists():
            self.report.detail(f"venvs/{identifier} is incomplete; building it again")
            shutil.rmtree(venv)
        stable = self.base / "cache" / f"requirements-{identifier}.txt"
        shutil.copyfile(requirements, stable)
        os.chmod(stable, 0o644)
        wheelhouse = wheelhouse_dir(self.base, version, interpreter["abi"], interpreter["machine"])
        self.report.detail(
            f"building venvs/{identifier} "
            + (f"offline from wheelhouse/{wheelhouse.name}" if wheelhouse else "from the package index")
        )
        venv.mkdir(mode=0o755)
        self.give_to_app(venv)
        try:
            self.checked([self.config["python"], "-m", "venv", str(venv)], self.base, True, True)
            self.checked(
                venv_pip_argv(str(venv / "bin" / "python"), str(stable), wheelhouse, self.config["pip"]),
                self.base,
                True,
            )
            (venv / VENV_HOOK_STAMP).write_text(
                json.dumps(
                    {"requirements_sha256": file_sha256(stable), "python": self.config["python"], "version": version}
                )
                + "\n",
                encoding="utf-8",
            )
        except BaseException:
            shutil.rmtree(venv, ignore_errors=True)
            raise
        self.seal(venv)
        return venv


def seal_entry(name: str, dirfd: int | None) -> None:
    """chown root:root and drop group/other write, setuid and setgid bits, never following a symlink."""
    try:
        descriptor = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dirfd)
    except OSError as exc:
        if exc.errno not in (errno.ELOOP, errno.ENXIO):  # a symlink or a socket: ownership only
            raise
        os.chown(name, 0, 0, dir_fd=dirfd, follow_symlinks=False)
        return
    try:
        os.fchown(descriptor, 0, 0)
        mode = stat.S_IMODE(os.fstat(descriptor).st_mode)
        os.fchmod(descriptor, mode & ~(stat.S_IWGRP | stat.S_IWOTH | stat.S_ISUID | stat.S_ISGID))
    finally:
        os.close(descriptor)


def last_json(output: str) -> dict:
    for line in reversed(output.strip().splitlines()):
        with contextlib.suppress(ValueError):
            value = json.loads(line)
            if isinstance(value, dict):
                return value
    return {}


# ---------------------------------------------------------------------------------------------- locking


@contextlib.contextmanager
def locked(path: str | os.PathLike[str], timeout: float, report: Reporter, what: str, owner: str) -> Iterator[int]:
    """The release lock code of pyweb.stack (module_utils/_lock.py) on path; the pusher hears who it waits for."""
    try:
        with hold(
            path, timeout, owner, lambda message: report.heading(f"waiting for another {what} to finish: {message}")
        ) as descriptor:
            yield descriptor
    except LockError as exc:
        raise DeployError(str(exc)) from exc


def git_without_quarantine() -> dict[str, str]:
    """The hook's environment minus the push quarantine, which git removes once the hook has finished."""
    hidden = ("GIT_QUARANTINE_PATH", "GIT_OBJECT_DIRECTORY", "GIT_ALTERNATE_OBJECT_DIRECTORIES")
    return {key: value for key, value in os.environ.items() if key not in hidden}


def ref_value(ref: str, environment: dict[str, str] | None = None) -> str:
    return subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", ref], capture_output=True, text=True, check=False, env=environment
    ).stdout.strip()


def keep_lock_until_ref_moves(ref: str, new: str, timeout: float) -> None:
    """git moves the ref only after the pre-receive hook exited: until then a waiting push would still see the old
    value and deploy over this one. A detached child keeps the inherited lock (flock belongs to the open file, not
    the process) until the ref names the new commit, or timeout passes (git refused the update after all)."""
    if os.fork() != 0:
        return
    try:
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDWR)
        for descriptor in (0, 1, 2):  # git relays the hook's output until EOF: the child must not hold it open
            os.dup2(devnull, descriptor)
        environment = git_without_quarantine()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and ref_value(ref, environment) != new:
            time.sleep(0.2)
    finally:
        os._exit(0)


# ---------------------------------------------------------------------------------------------- entry points


def runner_main(argv: list[str], stdin: IO[bytes], report: Reporter) -> int:
    app, ref, commit = parse_runner_argv(argv)
    if os.geteuid() != 0:
        raise UsageError("the deploy runner must run as root (through sudo, from the pre-receive hook)")
    path = config_path(app)
    check_trusted_file(path)
    config = load_config(path)
    caller = os.environ.get("SUDO_USER")
    if caller and caller not in (config["deploy_user"], "root"):
        raise UsageError(f"{caller} is not the deploy user of {app}")
    if ref != "refs/heads/" + config["branch"]:
        raise UsageError(f"{ref} is not the deploy branch of {app} (refs/heads/{config['branch']})")
    return deploy_under_lock(Deployer(config, report), ref, commit, stdin, caller or "root")


def deploy_under_lock(deployer: Deployer, ref: str, commit: str, stdin: IO[bytes], caller: str) -> int:
    """The rollout under the app's one release lock, the lock an Ansible rollout and bin/app-lock take too: the
    state read, the build, the swap, the reloads and the prune all happen while no other path can roll out."""
    report = deployer.report
    owner = f"git push of {ref} {commit[:12]} (pyweb.stack.git_deploy, pushed by {caller})"
    with locked(release_lock_path(deployer.base), deployer.config["lock_timeout"], report, "rollout", owner):
        try:
            name = deployer.deploy(ref, commit, stdin)
        except DeployError as exc:
            report.alarm(f"deploy FAILED: {exc}")
            report.alarm(
                f"current stays at {deployer.previous or 'nothing'}; release "
                f"{deployer.release.name if deployer.release else '-'} is marked failed (.failed has the reason)"
            )
            return 1
    report.heading(f"deployed {commit[:12]}: current is releases/{name}")
    return 0


def hook_main(app: str, stdin: IO[str], report: Reporter) -> int:
    config = load_config(config_path(app))
    plan = plan_push(parse_ref_updates(stdin.read()), config["branch"])
    for note in plan.notes:
        report.detail(note)
    if plan.refusal:
        report.alarm(plan.refusal)
        return 1
    if plan.deploy is None:
        return 0
    update = plan.deploy
    git_dir = os.path.abspath(os.environ.get("GIT_DIR", "."))
    # Pushes queue on the repository's own lock first: it outlives the hook until git moved the ref (see below).
    owner = f"push of {update.ref} {update.new[:12]} (pre-receive hook)"
    with locked(os.path.join(git_dir, "deploy.lock"), config["lock_timeout"], report, "push", owner):
        # Under the lock: a push that waited for another one must still start from what the branch names now.
        current = ref_value(update.ref)
        if (current or "0" * len(update.old)) != update.old:
            report.alarm(f"{update.ref} moved to {current[:12]} while this push waited; fetch, rebase and push again")
            return 1
        archive = subprocess.Popen(["git", "archive", "--format=tar", update.new], stdout=subprocess.PIPE)
        runner = subprocess.Popen(
            ["sudo", "-n", config["runner"], "deploy", app, update.ref, update.new], stdin=archive.stdout
        )
        assert archive.stdout is not None
        archive.stdout.close()  # only the runner reads it: git archive gets SIGPIPE if the runner stops early
        status = runner.wait()
        archive.wait()
        if status == 0:
            keep_lock_until_ref_moves(update.ref, update.new, REF_UPDATE_WAIT)
    if status != 0:
        report.alarm(
            f"push REJECTED: {update.ref} stays at {update.old[:12] if not update.is_create else 'nothing'} "
            "(pre-receive hook: the deploy failed before the branch moved)"
        )
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    report = Reporter()
    try:
        if len(args) == 2 and args[0] == "hook":
            return hook_main(args[1], sys.stdin, report)
        if len(args) == 2 and args[0] == "check-config":
            load_config(args[1])
            return 0
        if args[:1] == ["deploy"]:
            return runner_main(args, sys.stdin.buffer, report)
        raise UsageError("usage: git-deploy hook APP | git-deploy deploy APP REF COMMIT | git-deploy check-config FILE")
    except (UsageError, DeployError) as exc:
        report.alarm(f"git-deploy: {exc}")
        return 2 if isinstance(exc, UsageError) else 1


if __name__ == "__main__":
    sys.exit(main())
