"""module_utils/_topology.py and the filters over it: addresses and nginx upstreams from an inventory."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.pyweb.stack.plugins.filter import topology as filters
from ansible_collections.pyweb.stack.plugins.module_utils import _topology

FACTS = {
    "web1": {"health_socket": "/run/app/gunicorn.sock", "tcp_address": "10.0.0.10:8000"},
    "app1": {"health_socket": "/run/app/gunicorn.sock", "tcp_address": "10.0.0.11:8000"},
    "app2": {"health_socket": "/run/app/gunicorn.sock", "tcp_address": "[fd00::12]:8000"},
}

HOSTVARS = {
    "web1": {
        "ansible_host": "192.0.2.10",
        "pyweb_private_address": "10.0.0.10",
        "gunicorn_server_facts": FACTS["web1"],
    },
    "app1": {"ansible_host": "10.0.0.11", "gunicorn_server_facts": FACTS["app1"]},
    "app2": {"pyweb_private_address": "", "ansible_host": "fd00::12", "gunicorn_server_facts": FACTS["app2"]},
    "lonely": {},
}


def test_the_private_address_wins_then_ansible_host_then_the_name() -> None:
    assert filters.host_addresses(["web1", "app1", "app2", "lonely"], HOSTVARS) == [
        "10.0.0.10",
        "10.0.0.11",
        "fd00::12",
        "lonely",
    ]


def test_a_host_missing_from_hostvars_is_its_name() -> None:
    assert _topology.host_addresses(["gone"], lambda name: None) == ["gone"]


def test_a_web_host_reaches_other_app_hosts_over_tcp_with_failure_parameters() -> None:
    assert filters.app_upstream_servers(["app1", "app2"], HOSTVARS, "web1") == [
        "10.0.0.11:8000 max_fails=3 fail_timeout=10s",
        "[fd00::12]:8000 max_fails=3 fail_timeout=10s",
    ]


def test_the_app_on_the_web_host_itself_is_reached_over_its_socket() -> None:
    servers = filters.app_upstream_servers(["web1", "app1"], HOSTVARS, "web1", parameters="max_fails=1")
    assert servers == ["unix:/run/app/gunicorn.sock", "10.0.0.11:8000 max_fails=1"]


def test_one_host_for_everything_is_the_socket_only() -> None:
    assert filters.app_upstream_servers(["web1"], HOSTVARS, "web1") == ["unix:/run/app/gunicorn.sock"]


def test_an_app_host_without_facts_in_this_run_is_named() -> None:
    with pytest.raises(AnsibleFilterError, match=r"app host lonely published no gunicorn_server_facts.*--limit"):
        filters.app_upstream_servers(["app1", "lonely"], HOSTVARS, "web1")


def test_an_app_host_on_its_socket_only_is_refused_for_a_web_host_elsewhere() -> None:
    hostvars = {**HOSTVARS, "app1": {"gunicorn_server_facts": {**FACTS["app1"], "tcp_address": ""}}}
    with pytest.raises(
        AnsibleFilterError, match=r"app host app1 listens on its unix socket only.*gunicorn_tcp_address"
    ):
        filters.app_upstream_servers(["app1"], hostvars, "web1")


def test_no_app_host_at_all_is_refused() -> None:
    with pytest.raises(AnsibleFilterError, match="no host in pyweb_app"):
        filters.app_upstream_servers([], HOSTVARS, "web1")


def test_the_servers_of_another_server_role_are_read_from_its_facts() -> None:
    hostvars = {"app1": {"uwsgi_server_facts": {"health_socket": "/run/d/uwsgi.sock", "tcp_address": "10.0.0.11:3031"}}}
    assert filters.app_upstream_servers(["app1"], hostvars, "web1", "uwsgi", "") == ["10.0.0.11:3031"]


def test_the_filter_module_offers_both_filters() -> None:
    assert set(filters.FilterModule().filters()) == {"host_addresses", "app_upstream_servers"}
