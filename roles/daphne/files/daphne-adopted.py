"""daphne on the listening socket systemd passes, installed by pyweb.stack.daphne; run with the app's venv python.

  python daphne-adopted --endpoint systemd:domain=UNIX:index=0 [daphne options...] module:application

The socket belongs to systemd (daphne-<app>@<n>.socket, SocketMode=0660), so it outlives a restart of the
instance. Twisted treats an adopted unix socket like one it bound itself: it chmods the path to 0666 when it
starts listening and unlinks the path when it stops, which would leave the socket world-writable and then take it
away from the web server for good (the next instance adopts a socket that no path reaches), and it shuts the
socket down at exit, which stops it listening for systemd too (Twisted spares adopted TCP ports that, not unix
ones). Telling Twisted that no unix socket of this process lives in the filesystem, and that its unix ports are not
to be shut down, keeps its hands off; the process listens on no other unix socket. Then it runs daphne's command
line.
"""

from __future__ import annotations

import sys

from twisted.internet import unix

if not hasattr(unix, "_inFilesystemNamespace"):
    sys.exit(
        "daphne-adopted: this Twisted has no twisted.internet.unix._inFilesystemNamespace, so it would chmod the "
        "adopted socket to 0666 and unlink it at exit; pin a Twisted that has it or use daphne_bind: tcp"
    )
unix._inFilesystemNamespace = lambda path: False  # type: ignore[attr-defined]
unix.Port._shouldShutdown = False

from daphne.cli import CommandLineInterface  # noqa: E402  (after the patch, which its reactor import must see)

CommandLineInterface.entrypoint()
