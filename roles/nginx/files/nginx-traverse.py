"""Let the nginx user enter every directory on the way to the files it serves; runs on the host as root.

  nginx-traverse.py USER [--check] [--require DIR ...] [PATH ...]

PATH: a site's root or an alias; DIR: a directory that must exist (nginx_traverse_dirs). For each, every directory
from / down to it is checked, following symlinks (a release's `current` link leads through releases/<name>), by
the kernel itself: a child process with the user's uid, gid and groups calls access(X_OK). Where the user cannot
enter, a POSIX ACL entry for the user gains the execute bit (--x: enter, not list) and keeps what it had. Mode,
owner and group stay as they are, so nobody else gains anything. With --check nothing changes.

Prints {"granted": [...], "missing": [...]}: the directories the user was (or, with --check, would be) let into,
and the given paths that do not exist (nothing to grant below them yet). Exits 1 with a message when a --require
directory is missing (unless --check) or an ACL cannot be set.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import pwd
import struct
import subprocess
import sys
from pathlib import PurePosixPath

ACL_XATTR = "system.posix_acl_access"
ACL_USER = 0x02
PERMISSION_LETTERS = "rwx"

# Run as the nginx user. "self": which directories (open file descriptors on argv) lack its execute bit themselves,
# whatever their parents allow, so a grant is predicted exactly in check mode; "path": which paths on argv it cannot
# reach, parents included.
ACCESS_PROBE = """
import json, os, sys
kind, targets = sys.argv[1], sys.argv[2:]
if kind == "self":
    blocked = [t for t in targets if not os.access(".", os.X_OK, dir_fd=int(t))]
else:
    blocked = [t for t in targets if not os.access(t, os.X_OK)]
print(json.dumps(blocked))
"""


def prefixes(path: str) -> list[str]:
    """Prefixes of a path: "/srv/app/dist" -> ["/", "/srv", "/srv/app", "/srv/app/dist"]."""
    parts = PurePosixPath(os.path.normpath(path)).parts
    return [str(PurePosixPath(*parts[: index + 1])) for index in range(len(parts))]


def directories_on_the_way(path: str) -> tuple[list[str], bool]:
    """Real directories a lookup of `path` passes through (itself included), and whether all of `path` exists."""
    found: list[str] = []
    for prefix in prefixes(path):
        if not os.path.lexists(prefix):
            return found, False
        for directory in prefixes(os.path.realpath(prefix)):
            if directory not in found and os.path.isdir(directory):
                found.append(directory)
    return found, True


def probe(user: pwd.struct_passwd, kind: str, targets: list[str], fds: tuple[int, ...] = ()) -> list[str]:
    if not targets:
        return []
    result = subprocess.run(
        [sys.executable, "-c", ACCESS_PROBE, kind, *targets],
        user=user.pw_uid,
        group=user.pw_gid,
        extra_groups=os.getgrouplist(user.pw_name, user.pw_gid),
        cwd="/",
        pass_fds=fds,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout)


def without_execute_bit(user: pwd.struct_passwd, directories: list[str]) -> list[str]:
    """The directories whose own mode and ACL do not let `user` enter them."""
    fds = {os.open(directory, os.O_PATH | os.O_DIRECTORY): directory for directory in directories}
    try:
        blocked = probe(user, "self", [str(fd) for fd in fds], tuple(fds))
    finally:
        for fd in fds:
            os.close(fd)
    return [fds[int(fd)] for fd in blocked]


def acl_user_permissions(directory: str, uid: int) -> int:
    """The permission bits of the ACL entry for `uid` (0 when it has none); format of linux/posix_acl_xattr.h."""
    try:
        data = os.getxattr(directory, ACL_XATTR)
    except OSError as error:
        if error.errno in (errno.ENODATA, errno.ENOTSUP):
            return 0
        raise
    for offset in range(4, len(data) - 7, 8):
        tag, permissions, qualifier = struct.unpack_from("<HHI", data, offset)
        if tag == ACL_USER and qualifier == uid:
            return permissions
    return 0


def letters(permissions: int) -> str:
    return "".join(letter if permissions & (4 >> index) else "-" for index, letter in enumerate(PERMISSION_LETTERS))


def grant(user: pwd.struct_passwd, directory: str) -> None:
    entry = f"u:{user.pw_name}:{letters(acl_user_permissions(directory, user.pw_uid) | 1)}"
    result = subprocess.run(["setfacl", "--modify", entry, directory], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(
            f"cannot let {user.pw_name} enter {directory}: setfacl {entry} failed ({result.stderr.strip()}); "
            f"its file system may not support POSIX ACLs: give {user.pw_name} the execute bit there another way "
            "(group or mode)"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("user")
    parser.add_argument("paths", nargs="*")
    parser.add_argument("--require", action="append", default=[])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_intermixed_args(argv)
    try:
        user = pwd.getpwnam(args.user)
    except KeyError:
        if args.check:
            # Check mode on a host where the package that brings the user is not installed yet: nothing to probe.
            print(json.dumps({"granted": [], "missing": [*args.require, *args.paths]}))
            return 0
        print(f"nginx_user {args.user} does not exist on this host", file=sys.stderr)
        return 1

    directories: list[str] = []
    missing: list[str] = []
    for path in [*args.require, *args.paths]:
        if not os.path.isabs(path):
            parser.error(f"{path} is not an absolute path")
        found, complete = directories_on_the_way(path)
        directories += [directory for directory in found if directory not in directories]
        if not complete and path not in missing:
            missing.append(path)
    required_missing = [path for path in args.require if path in missing]
    if required_missing and not args.check:
        print(
            f"nginx_traverse_dirs: {', '.join(required_missing)} does not exist; the directories nginx must enter "
            "have to exist before nginx is configured (apply the app's roles first)",
            file=sys.stderr,
        )
        return 1

    granted = without_execute_bit(user, directories)
    if not args.check:
        try:
            for directory in granted:
                grant(user, directory)
        except RuntimeError as error:
            print(error, file=sys.stderr)
            return 1
        still_blocked = probe(user, "path", directories)
        if still_blocked:
            print(f"{user.pw_name} still cannot enter {', '.join(still_blocked)}", file=sys.stderr)
            return 1
    print(json.dumps({"granted": granted, "missing": missing}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
