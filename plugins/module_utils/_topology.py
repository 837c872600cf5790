# Copyright: (c) 2026, pyweb.stack maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where the hosts of a site reach each other: the one place that turns an inventory into addresses and upstreams.

The site playbook's filters (pyweb.stack.host_addresses, pyweb.stack.app_upstream_servers) call these. A web host
talks to an app server on the same machine over its unix socket and to one on another machine over the app host's
private address and port, as that host's server role published them (``<server>_server_facts.upstream``).
"""

from __future__ import annotations

from urllib.parse import quote

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


def app_upstream_servers(web_host, app_hosts, facts_of, server, parameters=None):
    """The nginx upstream ``server`` entries through which web_host reaches the app servers of app_hosts.

    facts_of(name) gives that app host's ``<server>_server_facts`` (or None when the host published none in this
    run), whose ``upstream`` says where its server answers: ``local`` for a web server on the same machine (unix
    sockets), ``remote`` for web hosts elsewhere (``address:port``, empty while it listens for none), and optionally
    ``parameters`` that every entry of that server needs (daphne's ``max_fails=0``). Entries reached over the network
    get parameters (default DEFAULT_SERVER_PARAMETERS: max_fails, fail_timeout), so that nginx stops sending to a host
    that fails.
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
        upstream = facts.get("upstream") or {}
        published = upstream.get("parameters")
        if name == web_host:
            entries, extra = upstream.get("local") or [], published or ""
        else:
            entries = upstream.get("remote") or []
            extra = parameters if parameters is not None else (published or DEFAULT_SERVER_PARAMETERS)
            if not entries:
                raise TopologyError(
                    f"the app host {name} listens on this machine only, so the web host {web_host} on another "
                    f"machine cannot reach its {server}: the site playbook sets {server}_web_clients and "
                    f"{server}_private_address from the inventory when pyweb_web holds other hosts; do not override "
                    f"them for {name}"
                )
        servers.extend(f"{entry} {extra}".strip() for entry in entries)
    return servers


def redis_url(client, redis_hosts, variables_of):
    """The redis URL (without a database number) through which client reaches the site's redis.

    variables_of(name) gives a host's variables (hostvars): the redis host's redis_requirepass and redis_port. The
    redis host itself connects over loopback; any other host over the redis host's private address, which redis
    listens on only with a password (the redis role refuses it without one), so a missing password is named here too.
    """
    if not redis_hosts:
        return ""
    name = redis_hosts[0]
    variables = variables_of(name) or {}
    password = str(variables.get("redis_requirepass") or "")
    port = int(variables.get("redis_port") or 6379)
    if name == client:
        address = "127.0.0.1"
    else:
        if not password:
            raise TopologyError(
                f"{client} reaches redis on {name}, another machine, where redis listens on its private address only "
                "with a password: set redis_requirepass (at least 16 characters, from a vault) in group_vars/all, so "
                "that the redis role and every client's pyweb_redis_url use the same one"
            )
        address = host_address(name, variables)
    host = f"[{address}]" if ":" in address else address
    userinfo = f":{quote(password, safe='')}@" if password else ""
    return f"redis://{userinfo}{host}:{port}"
