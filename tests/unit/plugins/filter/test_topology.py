"""module_utils/_topology.py and the filters over it: addresses and nginx upstreams from an inventory."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.pyweb.stack.plugins.filter import topology as filters
from ansible_collections.pyweb.stack.plugins.module_utils import _topology


def gunicorn_facts(remote: list[str]) -> dict:
    return {"upstream": {"local": ["unix:/run/app/gunicorn.sock"], "remote": remote, "ports": [8000] if remote else []}}


FACTS = {
    "web1": gunicorn_facts(["10.0.0.10:8000"]),
    "app1": gunicorn_facts(["10.0.0.11:8000"]),
    "app2": gunicorn_facts(["[fd00::12]:8000"]),
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
    hostvars = {**HOSTVARS, "app1": {"gunicorn_server_facts": gunicorn_facts([])}}
    with pytest.raises(
        AnsibleFilterError,
        match=r"app host app1 listens on this machine only.*gunicorn_web_clients and gunicorn_private_address",
    ):
        filters.app_upstream_servers(["app1"], hostvars, "web1")


def test_no_app_host_at_all_is_refused() -> None:
    with pytest.raises(AnsibleFilterError, match="no host in pyweb_app"):
        filters.app_upstream_servers([], HOSTVARS, "web1")


def test_the_servers_of_another_server_role_are_read_from_its_facts() -> None:
    hostvars = {
        "app1": {
            "uwsgi_server_facts": {"upstream": {"local": ["unix:/run/uwsgi/a.sock"], "remote": ["10.0.0.11:3031"]}}
        }
    }
    assert filters.app_upstream_servers(["app1"], hostvars, "web1", "uwsgi", "") == ["10.0.0.11:3031"]


def test_parameters_a_server_publishes_go_on_every_entry_of_it() -> None:
    """daphne's instances hide for a moment in a rolling restart: max_fails=0 on the socket and on the network."""
    daphne = {"upstream": {"local": ["unix:/run/d/1.sock", "unix:/run/d/2.sock"], "parameters": "max_fails=0"}}
    remote = {"upstream": {"local": ["10.0.0.12:8101"], "remote": ["10.0.0.12:8101"], "parameters": "max_fails=0"}}
    hostvars = {"web1": {"daphne_server_facts": daphne}, "app2": {"daphne_server_facts": remote}}
    assert filters.app_upstream_servers(["web1", "app2"], hostvars, "web1", "daphne") == [
        "unix:/run/d/1.sock max_fails=0",
        "unix:/run/d/2.sock max_fails=0",
        "10.0.0.12:8101 max_fails=0",
    ]


def test_the_filter_module_offers_both_filters() -> None:
    assert set(filters.FilterModule().filters()) == {"host_addresses", "app_upstream_servers", "redis_url"}


REDIS_HOSTVARS = {
    "cache1": {"ansible_host": "10.0.0.13", "redis_requirepass": "a/long secret:with@signs", "redis_port": 6380},
    "open1": {"ansible_host": "10.0.0.14"},
    "v6": {"pyweb_private_address": "fd00::15", "redis_requirepass": "0123456789abcdef"},
}


def test_a_client_on_another_machine_gets_the_private_address_and_the_encoded_password() -> None:
    assert (
        filters.redis_url(["cache1"], REDIS_HOSTVARS, "app1")
        == "redis://:a%2Flong%20secret%3Awith%40signs@10.0.0.13:6380"
    )
    assert filters.redis_url(["v6"], REDIS_HOSTVARS, "app1") == "redis://:0123456789abcdef@[fd00::15]:6379"


def test_the_redis_host_itself_connects_over_loopback() -> None:
    assert filters.redis_url(["open1"], REDIS_HOSTVARS, "open1") == "redis://127.0.0.1:6379"
    assert filters.redis_url(["cache1"], REDIS_HOSTVARS, "cache1").endswith("@127.0.0.1:6380")


def test_a_redis_host_elsewhere_without_a_password_is_refused() -> None:
    with pytest.raises(AnsibleFilterError, match=r"app1 reaches redis on open1.*set redis_requirepass"):
        filters.redis_url(["open1"], REDIS_HOSTVARS, "app1")


def test_no_redis_host_is_an_empty_url() -> None:
    assert filters.redis_url([], REDIS_HOSTVARS, "app1") == ""
