# Copyright: (c) 2026, pyweb.stack maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters that turn the inventory into addresses, nginx upstreams and the redis URL (documented in
host_addresses.yml, app_upstream_servers.yml and redis_url.yml next to this file); the logic lives in
module_utils/_topology.py."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError
from ansible_collections.pyweb.stack.plugins.module_utils import _topology


def _variables_of(hostvars):
    def variables_of(name):
        return hostvars.get(name, {})

    return variables_of


def host_addresses(names, hostvars):
    """The private address of each host: pyweb_private_address, else ansible_host, else its name."""
    return _topology.host_addresses(list(names), _variables_of(hostvars))


def app_upstream_servers(app_hosts, hostvars, web_host, server="gunicorn", parameters=None):
    """The upstream server entries through which web_host reaches the app servers of app_hosts."""
    variables_of = _variables_of(hostvars)
    key = f"{server}_server_facts"

    def facts_of(name):
        return variables_of(name).get(key)

    try:
        return _topology.app_upstream_servers(
            web_host,
            list(app_hosts),
            facts_of,
            server,
            parameters,
        )
    except _topology.TopologyError as error:
        raise AnsibleFilterError(str(error)) from error


def redis_url(redis_hosts, hostvars, client):
    """The redis URL (no database number) through which client reaches the first host of redis_hosts."""
    try:
        return _topology.redis_url(client, list(redis_hosts), _variables_of(hostvars))
    except _topology.TopologyError as error:
        raise AnsibleFilterError(str(error)) from error


class FilterModule:
    def filters(self):
        return {"host_addresses": host_addresses, "app_upstream_servers": app_upstream_servers, "redis_url": redis_url}
