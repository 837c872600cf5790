"""Release bookkeeping for one pyweb.stack app, installed by the pyweb.stack.app role as <base>/bin/app-release.

Subcommands (each prints one JSON object; exit status 0 on success, 1 when the check or action failed):
  state    list releases (good / failed / incomplete), the current one and the previous good one
  swap     point <base>/current at a release atomically (new symlink, then rename over current)
  fail     mark a release failed, with the reason, so it never becomes current and is pruned first; when it is
           current, current goes back to the previous good release (or is removed when there is none)
  rolled-back  mark the release a rollback left, so the next rollback goes further back and prune takes it early
  prune    keep current, the rollback target and the newest good releases up to --keep; remove failed and
           rolled-back releases, incomplete ones older than --incomplete-grace seconds (a release still being
           built is young and stays), and venvs no kept release links to (again only past the grace period)
  probe    GET a path through a live unix socket, expecting 200 (and JSON), within --timeout seconds overall
  canary   start a one-off server from a release on a temporary unix socket, probe it, stop it

A release is good once <release>/.pyweb-release.json exists (written after its canary passed) and it has no
.failed file. A good release a rollback moved away from is rolled_back (.rolled-back) until it is current again.
Runs on the managed host's system Python (3.9 or later), standard library only.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

META_FILE = ".pyweb-release.json"
FAILED_FILE = ".failed"
ROLLED_BACK_FILE = ".rolled-back"
BODY_LIMIT = 2000
INCOMPLETE_GRACE = 3600.0  # seconds an incomplete release (or an unlinked venv) may be still being built


def emit(result: dict, ok: bool = True) -> int:
    print(json.dumps(result, sort_keys=True))
    return 0 if ok else 1


# ---------------------------------------------------------------------------------------------- release state


def release_status(path: Path) -> str:
    if (path / FAILED_FILE).exists():
        return "failed"
    if (path / META_FILE).is_file():
        return "rolled_back" if (path / ROLLED_BACK_FILE).exists() else "good"
    return "incomplete"


def read_meta(path: Path) -> dict | None:
    try:
        return json.loads((path / META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def current_release(base: Path) -> str | None:
    link = base / "current"
    if not link.is_symlink():
        return None
    return Path(os.path.realpath(link)).name


def releases(base: Path) -> list[dict]:
    directory = base / "releases"
    if not directory.is_dir():
        return []
    found = []
    for path in sorted(p for p in directory.iterdir() if p.is_dir() and not p.is_symlink()):
        entry = {"name": path.name, "status": release_status(path)}
        if entry["status"] == "failed":
            entry["reason"] = (path / FAILED_FILE).read_text(encoding="utf-8", errors="replace").strip()
        found.append(entry)
    return found


def previous_good(all_releases: list[dict], current: str | None) -> str | None:
    """The newest good release older than current (the rollback target)."""
    good = [r["name"] for r in all_releases if r["status"] == "good"]
    older = [name for name in good if current is None or name < current]
    return older[-1] if older else None


def cmd_state(args: argparse.Namespace) -> int:
    base = Path(args.base)
    all_releases = releases(base)
    current = current_release(base)
    meta = read_meta(base / "releases" / current) if current else None
    return emit(
        {
            "current": current,
            "current_meta": meta,
            "releases": all_releases,
            "good": [r["name"] for r in all_releases if r["status"] == "good"],
            "rolled_back": [r["name"] for r in all_releases if r["status"] == "rolled_back"],
            "previous_good": previous_good(all_releases, current),
        }
    )


# ---------------------------------------------------------------------------------------------- swap / fail


def cmd_swap(args: argparse.Namespace) -> int:
    base = Path(args.base)
    target = base / "releases" / args.to
    previous = current_release(base)
    result = {"changed": previous != args.to, "previous": previous, "current": args.to}
    if not target.is_dir():
        return emit(dict(result, changed=False, msg=f"release {args.to} does not exist under {base}/releases"), False)
    if not args.allow_unchecked and release_status(target) not in ("good", "rolled_back"):
        return emit(dict(result, changed=False, msg=f"release {args.to} is {release_status(target)}, not good"), False)
    if result["changed"] and not args.dry_run:
        try:
            point_current_at(base, target)
        except OSError as exc:
            return emit(dict(result, changed=False, msg=f"cannot point {base}/current at {args.to}: {exc}"), False)
        # Only now that current points at it is it no longer rolled back: a swap that failed keeps the marker.
        (target / ROLLED_BACK_FILE).unlink(missing_ok=True)
    return emit(result)


def point_current_at(base: Path, target: Path) -> None:
    """Swap <base>/current to target atomically: a new symlink renamed over current, so it is never missing."""
    temporary = base / f".current.{os.getpid()}"
    try:
        if temporary.is_symlink():
            temporary.unlink()
        os.symlink(str(target), str(temporary))  # absolute: main() made base absolute, so it never dangles
        os.replace(str(temporary), str(base / "current"))
    except OSError:
        if temporary.is_symlink():
            temporary.unlink()
        raise


def cmd_fail(args: argparse.Namespace) -> int:
    """Mark a release failed; a failed release never stays current (back to the previous good one, or none)."""
    base = Path(args.base)
    path = base / "releases" / args.release
    if not path.is_dir():
        return emit({"changed": False, "msg": f"release {args.release} does not exist"}, False)
    (path / FAILED_FILE).write_text(args.reason.rstrip() + "\n", encoding="utf-8")
    result = {"changed": True, "release": args.release, "reason": args.reason, "current": current_release(base)}
    if result["current"] != args.release:
        return emit(result)
    # It failed after the swap (a reload, a live probe, an after-swap hook) and nothing swapped back yet.
    target = previous_good(releases(base), args.release)
    try:
        if target is None:
            (base / "current").unlink()
        else:
            point_current_at(base, base / "releases" / target)
    except OSError as exc:
        return emit(dict(result, msg=f"marked failed, but {base}/current still points at it: {exc}"), False)
    return emit(dict(result, current=target))


def cmd_rolled_back(args: argparse.Namespace) -> int:
    path = Path(args.base) / "releases" / args.release
    if not path.is_dir() or release_status(path) != "good":
        return emit({"changed": False, "release": args.release})
    (path / ROLLED_BACK_FILE).write_text(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()) + "\n", encoding="utf-8")
    return emit({"changed": True, "release": args.release})


# ---------------------------------------------------------------------------------------------- prune


def releases_to_remove(
    all_releases: list[dict], current: str | None, keep: int, young_incomplete: frozenset[str] = frozenset()
) -> list[str]:
    """Failed, rolled-back and old incomplete releases first, then good ones beyond `keep`, oldest first.

    Never current, nor the rollback target (previous_good: the newest good release older than current, or the
    newest good one without current), nor an incomplete release in `young_incomplete` (still being built). Of the
    good releases, `keep` survive: current (when good) and the rollback target count first, then the newest others
    (which may be newer than current after a manual swap or a rollback).
    """
    protected = {name for name in (current, previous_good(all_releases, current)) if name}
    remove = [
        r["name"]
        for r in all_releases
        if r["status"] != "good" and r["name"] not in protected and r["name"] not in young_incomplete
    ]
    good = [r["name"] for r in all_releases if r["status"] == "good"]
    kept = [name for name in good if name in protected]
    for name in reversed(good):  # newest first
        if len(kept) >= keep:
            break
        if name not in kept:
            kept.append(name)
    remove.extend(name for name in good if name not in kept)
    return remove


def age(path: Path, now: float) -> float:
    """Seconds since path or one of its direct entries last changed (a build in progress keeps touching them)."""
    try:
        newest = path.lstat().st_mtime
        for entry in path.iterdir():
            try:
                newest = max(newest, entry.lstat().st_mtime)
            except OSError:
                continue
    except OSError:
        return 0.0  # vanished or unreadable: treat as young, never remove on a guess
    return now - newest


def linked_venvs(base: Path, names: list[str]) -> set[str]:
    linked = set()
    for name in names:
        link = base / "releases" / name / ".venv"
        if link.is_symlink():
            linked.add(os.path.realpath(link))
    return linked


def cmd_prune(args: argparse.Namespace) -> int:
    base = Path(args.base)
    if args.keep < 0 or args.incomplete_grace < 0:
        return emit({"changed": False, "msg": "--keep and --incomplete-grace must not be negative"}, False)
    now = time.time()
    all_releases = releases(base)
    current = current_release(base)
    young = frozenset(
        r["name"]
        for r in all_releases
        if r["status"] == "incomplete" and age(base / "releases" / r["name"], now) < args.incomplete_grace
    )
    remove = releases_to_remove(all_releases, current, args.keep, young)
    survivors = [r["name"] for r in all_releases if r["name"] not in remove]
    in_use = linked_venvs(base, survivors)
    venv_dir = base / "venvs"
    stale_venvs = []
    kept_venvs = []
    if venv_dir.is_dir():
        for path in sorted(venv_dir.iterdir()):
            if os.path.realpath(path) in in_use:
                continue
            # A venv nothing links to yet may belong to a release being built: only an old one is stale.
            (stale_venvs if age(path, now) >= args.incomplete_grace else kept_venvs).append(path.name)
    if not args.dry_run:
        for name in remove:
            shutil.rmtree(base / "releases" / name)
        for name in stale_venvs:
            shutil.rmtree(venv_dir / name)
    return emit(
        {
            "changed": bool(remove or stale_venvs),
            "removed": remove,
            "removed_venvs": stale_venvs,
            "kept_incomplete": sorted(young - set(remove)),
            "kept_young_venvs": kept_venvs,
        }
    )


# ---------------------------------------------------------------------------------------------- probes


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.socket_path)
        self.sock = sock


def get_once(socket_path: str, path: str, timeout: float) -> tuple[int, str]:
    connection = UnixHTTPConnection(socket_path, timeout)
    try:
        connection.request("GET", path, headers={"Host": "localhost", "User-Agent": "pyweb-app-release"})
        response = connection.getresponse()
        data = response.read(BODY_LIMIT * 4)
        if response.length and len(data) < BODY_LIMIT * 4:  # closed before the Content-Length it announced
            raise http.client.IncompleteRead(data, response.length)
        return response.status, data.decode("utf-8", errors="replace")
    finally:
        connection.close()


def judge(status: int, body: str, expect_json: bool) -> str | None:
    """None when the answer is healthy, else the reason."""
    if status != 200:
        return f"HTTP {status}"
    if expect_json:
        try:
            json.loads(body)
        except ValueError:
            return "HTTP 200 but the body is not JSON"
    return None


def probe(socket_path: str, path: str, timeout: float, expect_json: bool, alive=lambda: None) -> dict:
    """Retry connection errors until the deadline; the first HTTP answer decides.

    Every attempt (connect, send, read) gets only the time left before the overall deadline, so the probe never
    runs past `timeout`. A reply that is not valid HTTP is a failure, reported like any other.
    """
    deadline = time.monotonic() + timeout
    last_error = "no answer"
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        died = alive()
        if died:
            return {"ok": False, "error": died}
        try:
            status, body = get_once(socket_path, path, remaining)
        except http.client.HTTPException as exc:
            if not isinstance(exc, OSError):  # RemoteDisconnected is both: a server closing early is retried
                detail = repr(exc)[:200]
                return {"ok": False, "error": f"malformed HTTP reply from {socket_path}: {detail}"}
            last_error = f"{socket_path}: {exc}"
        except OSError as exc:
            last_error = f"{socket_path}: {exc.strerror or exc}"
        else:
            reason = judge(status, body, expect_json)
            return {"ok": reason is None, "status": status, "body": body[:BODY_LIMIT], "error": reason}
        time.sleep(max(0.0, min(0.5, deadline - time.monotonic())))
    return {"ok": False, "error": f"no answer within {timeout:g}s ({last_error})"}


def cmd_probe(args: argparse.Namespace) -> int:
    result = probe(args.socket, args.path, args.timeout, args.expect_json)
    result["socket"] = args.socket
    return emit(result, result["ok"])


def stop_process_group(process: subprocess.Popen, grace: float) -> None:
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def cmd_canary(args: argparse.Namespace) -> int:
    if not args.command:
        return emit({"ok": False, "error": "no canary command given after --"}, False)
    workdir = Path(tempfile.mkdtemp(prefix="app-canary-"))
    socket_path = str(workdir / "canary.sock")
    log_path = workdir / "canary.log"
    command = [part.replace("{socket}", socket_path) for part in args.command]
    try:
        with log_path.open("wb") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

        def alive() -> str | None:
            code = process.poll()
            return None if code is None else f"the canary exited with status {code} before answering"

        try:
            result = probe(socket_path, args.path, args.timeout, args.expect_json, alive)
        finally:
            stop_process_group(process, args.grace)
        result["command"] = command
        if not result["ok"]:
            result["log"] = tail(log_path)
        return emit(result, result["ok"])
    except OSError as exc:
        return emit({"ok": False, "error": f"cannot start {command[0]}: {exc.strerror}", "command": command}, False)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


# ---------------------------------------------------------------------------------------------- entry point


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="app-release", description=__doc__.split("\n", 1)[0])
    sub = top.add_subparsers(dest="subcommand", required=True)

    state = sub.add_parser("state")
    state.add_argument("--base", required=True)
    state.set_defaults(func=cmd_state)

    swap = sub.add_parser("swap")
    swap.add_argument("--base", required=True)
    swap.add_argument("--to", required=True)
    swap.add_argument("--dry-run", action="store_true")
    swap.add_argument("--allow-unchecked", action="store_true", help="swap to a release that is not marked good")
    swap.set_defaults(func=cmd_swap)

    fail = sub.add_parser("fail")
    fail.add_argument("--base", required=True)
    fail.add_argument("--release", required=True)
    fail.add_argument("--reason", required=True)
    fail.set_defaults(func=cmd_fail)

    rolled_back = sub.add_parser("rolled-back")
    rolled_back.add_argument("--base", required=True)
    rolled_back.add_argument("--release", required=True)
    rolled_back.set_defaults(func=cmd_rolled_back)

    prune = sub.add_parser("prune")
    prune.add_argument("--base", required=True)
    prune.add_argument("--keep", type=int, required=True)
    prune.add_argument("--dry-run", action="store_true")
    prune.add_argument(
        "--incomplete-grace",
        type=float,
        default=INCOMPLETE_GRACE,
        help="keep incomplete releases and unlinked venvs changed less than this many seconds ago (being built)",
    )
    prune.set_defaults(func=cmd_prune)

    for name, func in (("probe", cmd_probe), ("canary", cmd_canary)):
        command = sub.add_parser(name)
        command.add_argument("--path", default="/")
        command.add_argument("--timeout", type=float, default=30.0)
        command.add_argument("--expect-json", action="store_true")
        if name == "probe":
            command.add_argument("--socket", required=True)
        else:
            command.add_argument("--grace", type=float, default=10.0)
            command.add_argument("command", nargs=argparse.REMAINDER)
        command.set_defaults(func=func)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if getattr(args, "command", None) and args.command[0] == "--":
        args.command = args.command[1:]
    if getattr(args, "base", None):
        # Absolute once, here: the links swap writes must not depend on the caller's working directory.
        args.base = os.path.abspath(args.base)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
