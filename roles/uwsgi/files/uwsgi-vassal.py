"""Starts one uwsgi vassal with its app's environment: the uwsgi emperor's emperor-wrapper, installed by
pyweb.stack.uwsgi.

  uwsgi-vassal --ini /etc/uwsgi/vassals/NAME.ini

The emperor runs it with the vassal's arguments, as root. It reads the vassal file's [pyweb] section (uwsgi reads
only [uwsgi]): `env-file = <base>/shared/.env`. It exports each KEY=VALUE line of that file exactly as written,
like the app's bin/app-env (no quoting, no expansion; empty lines and lines starting with # are skipped) over the
environment it inherited, and execs $PYWEB_UWSGI_BINARY (set by the emperor's unit) with the same arguments, in
the same process. So the values are in the environment the vassal's
master is executed with, and the workers it forks inherit it: /proc/<pid>/environ shows them. (A graceful reload
re-executes uwsgi itself with the environment it holds in memory; the vassal file keeps that in step.)

Values never appear on a command line or in a message: errors name the file and the line number only. Exit status
78 for an environment file or vassal file that cannot be used, 127 when the uwsgi binary cannot be executed.
"""

from __future__ import annotations

import configparser
import os
import re
import sys
from pathlib import Path

BINARY_VARIABLE = "PYWEB_UWSGI_BINARY"
NAME = re.compile(rb"[A-Za-z_][A-Za-z0-9_]*")
EX_CONFIG = 78


class LaunchError(Exception):
    """A vassal that cannot be started as configured; the message holds no value from the environment file."""


def vassal_file(argv: list[str]) -> Path | None:
    """The vassal file uwsgi is asked to load: the argument after --ini (the emperor passes `--ini <file>`)."""
    for index, argument in enumerate(argv[:-1]):
        if argument == "--ini":
            return Path(argv[index + 1].split(":", 1)[0])
    return None


def env_file_of(vassal: Path) -> Path | None:
    """The `env-file` of the vassal file's [pyweb] section, or None (a vassal that has no app environment)."""
    # uwsgi ini files repeat keys (strict=False) and hold % placeholders (no interpolation).
    parser = configparser.RawConfigParser(strict=False, allow_no_value=True, interpolation=None)
    try:
        parser.read_string(vassal.read_text(encoding="utf-8"), source=str(vassal))
    except configparser.Error as exc:
        raise LaunchError(f"cannot read the vassal file {vassal}: {exc.message}") from None
    value = parser.get("pyweb", "env-file", fallback=None)
    return Path(value) if value else None


def read_environment(content: bytes, source: str) -> dict[bytes, bytes]:
    """The KEY=VALUE lines of an environment file, values taken exactly as written (a trailing \\r stays)."""
    values: dict[bytes, bytes] = {}
    for number, line in enumerate(content.split(b"\n"), start=1):
        if not line or line.startswith(b"#"):
            continue
        key, separator, value = line.partition(b"=")
        if not NAME.fullmatch(key):
            raise LaunchError(f"{source} line {number}: not a KEY=VALUE line with a variable name before the =")
        if not separator:
            continue  # `export KEY` in bin/app-env: nothing to set
        if key.upper().startswith(b"UWSGI_") or key == BINARY_VARIABLE.encode():
            # uwsgi reads UWSGI_* variables as its own options (UWSGI_CHMOD_SOCKET=666 would loosen the socket).
            raise LaunchError(f"{source} line {number}: {key.decode()} is reserved for uwsgi and pyweb.stack")
        values[key] = value
    return values


def prepare(argv: list[str], inherited: dict[bytes, bytes]) -> tuple[bytes, dict[bytes, bytes]]:
    """The binary to execute and its environment."""
    binary = inherited.get(BINARY_VARIABLE.encode(), b"")
    if not binary:
        raise LaunchError(f"{BINARY_VARIABLE} is not set: the emperor's unit names the uwsgi binary there")
    vassal = vassal_file(argv)
    env_file = env_file_of(vassal) if vassal is not None else None
    if env_file is None:
        return binary, inherited
    try:
        content = env_file.read_bytes()
    except OSError as exc:
        raise LaunchError(f"cannot read the environment file {env_file}: {exc.strerror}") from None
    return binary, {**inherited, **read_environment(content, str(env_file))}


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    try:
        binary, env = prepare(arguments, dict(os.environb))
    except (LaunchError, OSError) as exc:
        print(f"uwsgi-vassal: {exc}", file=sys.stderr)
        return EX_CONFIG
    try:
        os.execve(binary, [binary, *(argument.encode() for argument in arguments)], env)
    except OSError as exc:
        print(f"uwsgi-vassal: cannot execute {binary.decode(errors='replace')}: {exc.strerror}", file=sys.stderr)
    return 127


if __name__ == "__main__":
    sys.exit(main())
