# Copyright: (c) 2026, pyweb.stack maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where the hosts of a site reach each other: the one place that turns an inventory into addresses and upstreams.

The site playbook's filters (pyweb.stack.host_addresses, pyweb.stack.app_upstream_servers) call these. A web host
talks to an app server on the same machine over its unix socket and to one on another machine over the app host's
private address and port, which that host's server role published (``<server>_server_facts.tcp_address``).
"""

from __future__ import annotations

DEFAULT_SERVER_PARAMETERS = "max_fails=3 fail_timeout=10s"


class TopologyError(ValueError):
    """An inventory this module cannot turn into addresses; the message names the host and the way out."""


def host_address(name, variables):
    """The private address of one host: pyweb_private_address, else ansible_host, else its inventory name."""
    for key in ("pyweb_private_address", "ansible_host"):
        value = variables.get(key) if variables is not None else None
        if value not in (None, ""):
            return str(value)
    return str(name)


def host_addresses(names, variables_of):
    """The private address of each host in names; variables_of(name) gives that host's variables (hostvars)."""
    return [host_address(name, variables_of(name)) for name in names]


def app_upstream_servers(web_host, app_hosts, facts_of, server, parameters=DEFAULT_SERVER_PARAMETERS):
    """The nginx upstream ``server`` entries through which web_host reaches the app servers of app_hosts.

    facts_of(name) gives that app host's ``<server>_server_facts`` (or None when the host published none in this
    run). The web host's own app server is reached over its unix socket; every other one over the TCP address it
    published, with parameters (max_fails, fail_timeout) so that nginx stops sending to a host that fails.
    """
    if not app_hosts:
        raise TopologyError(
            "the inventory has no host in pyweb_app, so nginx has no app server to send requests to: "
            "add the app hosts to the group pyweb_app"
        )
    servers = []
    for name in app_hosts:
        facts = facts_of(name)
        if not facts:
            raise TopologyError(
                f"the app host {name} published no {server}_server_facts in this run, so {web_host} cannot build "
                "its upstream: run the site playbook on the app hosts too (a --limit must keep every host of pyweb_app)"
            )
        if name == web_host:
            servers.append(f"unix:{facts['health_socket']}")
            continue
        address = facts.get("tcp_address") or ""
        if not address:
            raise TopologyError(
                f"the app host {name} listens on its unix socket only, so the web host {web_host} on another machine "
                f"cannot reach it: the site playbook sets {server}_tcp_address from pyweb_private_address when "
                f"pyweb_web holds other hosts; do not set it empty for {name}"
            )
        servers.append(f"{address} {parameters}".strip())
    return servers
