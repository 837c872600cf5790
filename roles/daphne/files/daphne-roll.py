"""Rolling restart of an app's daphne instances, installed by pyweb.stack.daphne (run as root).

  daphne-roll --app NAME [--config-dir /etc/pyweb/daphne] [--timeout SECONDS]

Reads <config-dir>/NAME.json (written by the role: unit prefix, instance names, where each listens, the health
path, the channels worker units), then restarts one instance at a time: `systemctl restart <prefix>@<n>.service`,
and waits until the instance is active and answers GET <health path> with HTTP 200 on its own socket before the
next one goes down. The listening sockets belong to systemd (<prefix>@<n>.socket), so a restarting instance never
refuses a connection: it waits in the socket's backlog for the new process.

On unix sockets the roll also makes every client that loses its instance reconnect onto the new code, once: before
the first restart the sockets of all other instances are hidden (mode 0000: their processes keep their
connections, but the web server's connect fails at once and it goes to the first instance, whose backlog waits for
the new process); each later instance gets its socket back (0660) once its new process answers. So a dropped
client is never moved to an instance still on the old code. A roll that stops early gives every socket back, so
the instances left on the old code keep serving. (On TCP ports nothing can be hidden: instances restart in turn.)

Prints one JSON object; exit status 1 when an instance did not come back (the remaining ones are left untouched,
still serving). The logic is the collection's one copy (plugins/module_utils/_reload.py, with the one health probe
of _unixhttp.py, installed by pyweb.stack.common's host_library.yml), which the module
pyweb.stack.app_server_reload runs too; this is its command line.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

sys.path.insert(0, "/usr/local/lib/pyweb-stack")  # the host library of pyweb.stack.common (host_library.yml)
from ansible_collections.pyweb.stack.plugins.module_utils._reload import roll_daphne


def run(argv: list[str], timeout: float | None = None) -> tuple[int, str, str]:
    """The runner of the shared code (systemctl)."""
    completed = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=timeout)
    return completed.returncode, completed.stdout, completed.stderr


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="daphne-roll", description=__doc__.split("\n", 1)[0])
    parser.add_argument("--app", required=True)
    parser.add_argument("--config-dir", default="/etc/pyweb/daphne")
    parser.add_argument("--timeout", type=float, help="seconds each instance has to answer (default from the config)")
    args = parser.parse_args(argv)
    ok, result = roll_daphne(args.app, run, config_dir=args.config_dir, timeout=args.timeout)
    print(json.dumps(result, sort_keys=True))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
