# Copyright: pyweb.stack contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Mark servers of nginx upstream blocks down (drained) or active again, line by line, keeping everything else.

Only ``server <address> [parameters];`` lines inside ``upstream <name> { ... }`` blocks are touched, and only their
``down`` parameter: the rest of each file (comments, indentation, other blocks) stays byte for byte.
"""

from __future__ import annotations

import re

_UPSTREAM_OPEN = re.compile(r"^\s*upstream\s+\S+\s*\{\s*(#.*)?$")
_SERVER_LINE = re.compile(r"^(?P<indent>\s*)server\s+(?P<address>[^\s;]+)(?P<params>[^;#]*);(?P<rest>.*)$")


def set_servers_down(text, addresses, down):
    """Return (new_text, matched) for a configuration text.

    Every upstream ``server`` line whose address is in ``addresses`` gets the ``down`` parameter (``down=True``) or
    loses it (``down=False``); ``matched`` lists the addresses found, in the order of the text, once each.
    """
    wanted = set(addresses)
    matched = []
    lines = text.splitlines(keepends=True)
    depth = 0  # brace depth inside the current upstream block; 0 outside any
    for index, line in enumerate(lines):
        body = line.rstrip("\r\n")
        ending = line[len(body) :]
        if depth == 0:
            if _UPSTREAM_OPEN.match(body):
                depth = 1
            continue
        found = _SERVER_LINE.match(body)
        if found and depth == 1 and found.group("address") in wanted:
            address = found.group("address")
            params = [word for word in found.group("params").split() if word != "down"]
            if down:
                params.append("down")
            lines[index] = f"{found.group('indent')}server {' '.join([address, *params])};{found.group('rest')}{ending}"
            if address not in matched:
                matched.append(address)
            continue
        code = body.split("#", 1)[0]
        depth += code.count("{") - code.count("}")
    return "".join(lines), matched
