"""Validate a supervisord config file, or a fragment of one, with supervisor's own parser before it goes live.

Used as the ``validate:`` command of the role's templates, run by supervisor's interpreter (system or venv):

    supervisor-check-config.py main FILE                   a complete supervisord.conf
    supervisor-check-config.py fragment FILE               a file meant for [include] (server sections)
    supervisor-check-config.py programs FILE NAME [NAME...]  program sections, exactly [program:NAME] for each NAME

FILE may be "-" for stdin: programs.yml pipes every program of an owner through it before writing any of them.
Fragments and program files are wrapped in a throwaway supervisord.conf that includes only them, so a bad file is
caught on its own, before it joins the others. ``ServerOptions`` is what supervisord and ``supervisorctl reread`` use,
so everything they reject (unknown users, bad signals, sizes, numprocs without %(process_num), ...) fails here.
"""

from __future__ import annotations

import configparser
import os
import sys
import tempfile

from supervisor.options import ServerOptions


def load(config_file: str) -> ServerOptions:
    """Parse a complete config the way supervisord does at start and on reread; raise ValueError on errors."""
    options = ServerOptions()
    options.configfile = config_file
    options.process_config(do_usage=False)
    for warning in options.parse_warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return options


def load_wrapped(fragment: str) -> ServerOptions:
    """Parse one included file (or stdin, "-") inside a minimal supervisord.conf whose paths all exist."""
    with tempfile.TemporaryDirectory(prefix="supervisor-check-") as scratch:
        if fragment == "-":
            fragment = os.path.join(scratch, "stdin.conf")
            with open(fragment, "w", encoding="utf-8") as handle:
                handle.write(sys.stdin.read())
        wrapper = os.path.join(scratch, "supervisord.conf")
        with open(wrapper, "w", encoding="utf-8") as handle:
            handle.write(
                "[supervisord]\n"
                f"logfile={scratch}/supervisord.log\n"
                f"pidfile={scratch}/supervisord.pid\n"
                f"childlogdir={scratch}\n"
                "[include]\n"
                f"files={os.path.abspath(fragment)}\n"
            )
        return load(wrapper)


def check_programs(path: str, names: list[str]) -> None:
    """Parse program sections and insist they define exactly the expected groups, nothing else."""
    options = load_wrapped(path)
    groups = sorted(group.name for group in options.process_group_configs)
    if groups != sorted(names):
        raise ValueError(f"expected the program groups {sorted(names)}, supervisor parsed {groups}")
    if options.configroot.supervisord.server_configs:
        raise ValueError("program files must not define servers ([inet_http_server]/[unix_http_server])")


def main(argv: list[str]) -> int:
    try:
        if len(argv) == 2 and argv[0] == "main":
            load(argv[1])
        elif len(argv) == 2 and argv[0] == "fragment":
            load_wrapped(argv[1])
        elif len(argv) >= 3 and argv[0] == "programs":
            check_programs(argv[1], argv[2:])
        else:
            print(__doc__, file=sys.stderr)
            return 2
    except (ValueError, configparser.Error, OSError) as error:
        print(f"invalid supervisor config {argv[1]}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
