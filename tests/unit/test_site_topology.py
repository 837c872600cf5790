"""The site playbook's wiring of many hosts (playbooks/vars/site_roles.yml), run by a real ansible-playbook against
inventories of local-connection hosts: what each app host listens on, whom it trusts, and the upstream nginx gets on
each web host. The hosts only publish facts here; nothing on the controller changes but the result files."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]

PLAY = """
- name: Publish what the site playbook publishes and record what follows from it
  hosts: all
  gather_facts: false
  vars_files:
    - {site_roles}
  vars:
    app_release_facts: {{name: flaskapp, user: flaskapp, group: flaskapp, base_dir: /srv/flaskapp}}
  tasks:
    - name: Check the app servers' settings, as the site's preflight play does
      ansible.builtin.include_role:
        name: "pyweb.stack.{{{{ item }}}}"
        tasks_from: preflight.yml
      loop: "{{{{ _pyweb_site_roles | intersect(['gunicorn', 'uwsgi', 'daphne']) }}}}"

    - name: Publish how the app reaches its server, as the site's preflight play does
      ansible.builtin.include_role:
        name: "pyweb.stack.{{{{ item }}}}"
        tasks_from: publish.yml
      loop: "{{{{ _pyweb_site_roles | intersect(['gunicorn', 'uwsgi', 'daphne']) }}}}"

    - name: Check the push-to-deploy settings, after the servers published theirs as in the site's preflight play
      ansible.builtin.include_role:
        name: pyweb.stack.git_deploy
        tasks_from: preflight.yml
      when: "'git_deploy' in _pyweb_site_roles"

    - name: Check the redis settings, as the site's preflight play does
      ansible.builtin.include_role:
        name: pyweb.stack.redis
        tasks_from: preflight.yml
        public: true  # _redis_bind, recorded below
      when: "'redis' in _pyweb_site_roles"

    - name: Record what this host got
      ansible.builtin.copy:
        dest: "{out}/{{{{ inventory_hostname }}}}.json"
        mode: "0600"
        content: >-
          {{{{ {{'remote': app_server.upstream.remote if 'pyweb_app' in group_names else none,
               'websocket_remote': daphne_server_facts.upstream.remote if 'daphne' in _pyweb_site_roles else none,
               'web_clients': gunicorn_web_clients if 'pyweb_app' in group_names else none,
               'upstream': pyweb_app_upstream_servers if 'pyweb_web' in group_names else none,
               'websocket_upstream': pyweb_websocket_upstream_servers if 'pyweb_web' in group_names else none,
               'redis_url': pyweb_redis_url if group_names | intersect(['pyweb_app', 'pyweb_workers']) else none,
               'redis_bind': _redis_bind | default(none),
               'web_server': firewalld_web_server, 'peer_ports': firewalld_peer_ports}} | to_json }}}}
      delegate_to: localhost

    - name: Record how a rollout treats this host
      ansible.builtin.copy:
        dest: "{out}/{{{{ inventory_hostname }}}}.rollout.json"
        mode: "0600"
        content: >-
          {{{{ {{'swap': app_swap, 'web_hosts': _pyweb_rollout_web_hosts,
               'drained': _pyweb_rollout_drained_servers if 'pyweb_app' in group_names else none,
               'checked': _pyweb_rollout_checked_servers if 'pyweb_app' in group_names else none}} | to_json }}}}
      delegate_to: localhost
"""


def run_site_wiring(tmp_path: Path, groups: dict[str, dict[str, dict]], *options: str):
    playbook_bin = shutil.which("ansible-playbook") or str(ROOT / ".venv" / "bin" / "ansible-playbook")
    if not Path(playbook_bin).exists():
        pytest.skip("ansible-playbook is not installed (make venv)")
    out = tmp_path / "out"
    out.mkdir()
    inventory = tmp_path / "hosts.yml"
    local = {"ansible_connection": "local", "ansible_python_interpreter": "{{ ansible_playbook_python }}"}
    inventory.write_text(
        yaml.safe_dump({"all": {"vars": local, "children": {name: {"hosts": hosts} for name, hosts in groups.items()}}})
    )
    play = tmp_path / "play.yml"
    play.write_text(PLAY.format(site_roles=ROOT / "playbooks" / "vars" / "site_roles.yml", out=out))
    environment = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}
    result = subprocess.run(
        [playbook_bin, "-i", str(inventory), str(play), *options],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    recorded = {path.stem: json.loads(path.read_text()) for path in out.glob("*.json")}
    return result, recorded


def test_web_and_app_hosts_apart_meet_over_private_addresses(tmp_path: Path) -> None:
    result, got = run_site_wiring(
        tmp_path,
        {
            "pyweb_web": {"web1": {"ansible_host": "192.0.2.10", "pyweb_private_address": "10.0.0.10"}},
            "pyweb_app": {"app1": {"ansible_host": "10.0.0.11"}, "app2": {"pyweb_private_address": "fd00::12"}},
        },
    )
    assert result.returncode == 0, result.stdout[-3000:]
    for name, address in (("app1", "10.0.0.11:8000"), ("app2", "[fd00::12]:8000")):
        assert got[name] == {
            "remote": [address],
            "websocket_remote": None,
            "web_clients": ["10.0.0.10"],
            "upstream": None,
            "websocket_upstream": None,
            "redis_url": "",
            "redis_bind": None,
            # firewalld: nothing open to everyone but ssh, the app port to the web host only.
            "web_server": False,
            "peer_ports": [{"port": "8000/tcp", "sources": ["10.0.0.10"]}],
        }
    assert got["web1"]["web_server"] is True
    assert got["web1"]["peer_ports"] == []
    assert got["web1"]["upstream"] == [
        "10.0.0.11:8000 max_fails=3 fail_timeout=10s",
        "[fd00::12]:8000 max_fails=3 fail_timeout=10s",
    ]


def test_one_host_for_everything_keeps_the_unix_socket_only(tmp_path: Path) -> None:
    result, got = run_site_wiring(tmp_path, {"pyweb_web": {"one": {}}, "pyweb_app": {"one": {}}})
    assert result.returncode == 0, result.stdout[-3000:]
    assert got["one"] == {
        "remote": [],
        "websocket_remote": None,
        "web_clients": [],
        "upstream": ["unix:/run/flaskapp/gunicorn.sock"],
        "websocket_upstream": [],
        "redis_url": "",
        "redis_bind": None,
        "web_server": True,
        "peer_ports": [],
    }


def test_a_web_host_that_is_also_an_app_host_uses_its_socket_and_the_others_tcp(tmp_path: Path) -> None:
    result, got = run_site_wiring(
        tmp_path, {"pyweb_web": {"both": {}}, "pyweb_app": {"both": {}, "app2": {"ansible_host": "10.0.0.12"}}}
    )
    assert result.returncode == 0, result.stdout[-3000:]
    assert sorted(got["both"]["upstream"]) == [
        "10.0.0.12:8000 max_fails=3 fail_timeout=10s",
        "unix:/run/flaskapp/gunicorn.sock",
    ]
    assert got["both"]["remote"] == []  # its own web server is the only one, on this machine
    assert got["app2"]["web_clients"] == ["both"]


DJANGO = {"pyweb_app_server": "uwsgi", "pyweb_asgi_server": "daphne", "pyweb_firewalld_enabled": True}


def test_django_hosts_apart_get_uwsgi_and_daphne_upstreams_and_their_ports_open_to_the_web_host(tmp_path: Path) -> None:
    result, got = run_site_wiring(
        tmp_path,
        {
            "pyweb_web": {"web1": {"pyweb_private_address": "10.0.0.10", **DJANGO}},
            "pyweb_app": {
                "app1": {"ansible_host": "10.0.0.11", **DJANGO},
                "app2": {"ansible_host": "10.0.0.12", **DJANGO},
            },
        },
    )
    assert result.returncode == 0, result.stdout[-3000:]
    assert got["app1"]["remote"] == ["10.0.0.11:8000"]
    assert got["app1"]["websocket_remote"] == ["10.0.0.11:8101", "10.0.0.11:8102"]
    assert got["app1"]["peer_ports"] == [
        {"port": port, "sources": ["10.0.0.10"]} for port in ("8000/tcp", "8101/tcp", "8102/tcp")
    ]
    assert got["web1"]["upstream"] == [
        "10.0.0.11:8000 max_fails=3 fail_timeout=10s",
        "10.0.0.12:8000 max_fails=3 fail_timeout=10s",
    ]
    # daphne's instances keep max_fails=0: its rolling restart hides one for a moment.
    assert got["web1"]["websocket_upstream"] == [
        f"10.0.0.{host}:{port} max_fails=0" for host in (11, 12) for port in (8101, 8102)
    ]


def test_django_on_one_host_keeps_its_unix_sockets(tmp_path: Path) -> None:
    result, got = run_site_wiring(tmp_path, {"pyweb_web": {"one": DJANGO}, "pyweb_app": {"one": DJANGO}})
    assert result.returncode == 0, result.stdout[-3000:]
    assert got["one"]["upstream"] == ["unix:/run/uwsgi/flaskapp.sock"]
    assert got["one"]["websocket_upstream"] == [
        "unix:/run/daphne-flaskapp/1.sock max_fails=0",
        "unix:/run/daphne-flaskapp/2.sock max_fails=0",
    ]
    assert got["one"]["peer_ports"] == []


@pytest.mark.parametrize(
    ("django", "address"), [(False, "0.0.0.0"), (True, "127.0.0.1")], ids=["gunicorn-wildcard", "uwsgi-loopback"]
)
def test_an_app_host_apart_on_a_wildcard_or_loopback_address_is_refused(
    tmp_path: Path, django: bool, address: str
) -> None:
    settings = DJANGO if django else {}
    servers = "uwsgi|daphne" if django else "gunicorn"  # the first of the host's servers whose check runs
    result, got = run_site_wiring(
        tmp_path,
        {"pyweb_web": {"web1": settings}, "pyweb_app": {"app1": {"pyweb_private_address": address, **settings}}},
    )
    assert result.returncode != 0
    message = " ".join(result.stdout.split())
    found = re.search(rf"({servers})_web_clients lists hosts on other machines \(web1\), so ({servers}) must", message)
    assert found, message[-3000:]
    assert f'{found[1]}_private_address is "{address}"' in message
    assert "app1" not in got


def test_push_to_deploy_on_two_app_hosts_is_refused_naming_the_playbook(tmp_path: Path) -> None:
    push = {
        "pyweb_git_deploy_enabled": True,
        "git_deploy_authorized_keys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE test"],
    }
    result, got = run_site_wiring(
        tmp_path,
        {"pyweb_web": {"web1": {}}, "pyweb_app": {"app1": push, "app2": {"ansible_host": "10.0.0.12", **push}}},
    )
    assert result.returncode != 0
    message = " ".join(result.stdout.split())
    assert "Push-to-deploy updates only the host the push reaches (app1), but pyweb_app also holds app2" in message
    assert "ansible-playbook site.yml --tags deploy" in message
    assert "app1" not in got


def test_push_to_deploy_on_one_app_host_passes_its_check(tmp_path: Path) -> None:
    push = {
        "pyweb_git_deploy_enabled": True,
        "git_deploy_authorized_keys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE test"],
    }
    result, got = run_site_wiring(tmp_path, {"pyweb_web": {"one": push}, "pyweb_app": {"one": push}})
    assert result.returncode == 0, result.stdout[-3000:]
    assert "one" in got


SECRET = "redis-secret/of-the-test"  # at least 16 characters; the / must reach the URL encoded


def redis_apart(secret: str | None) -> dict[str, dict[str, dict]]:
    password = {} if secret is None else {"redis_requirepass": secret}
    return {
        "pyweb_web": {"web1": {"ansible_host": "10.0.0.10"}},
        "pyweb_app": {"app1": {"ansible_host": "10.0.0.11"}},
        "pyweb_workers": {"work1": {"ansible_host": "10.0.0.13", **password}},
        "pyweb_redis": {"work1": {}},
    }


def test_redis_apart_listens_for_app_and_workers_with_its_password(tmp_path: Path) -> None:
    result, got = run_site_wiring(tmp_path, redis_apart(SECRET))
    assert result.returncode == 0, result.stdout[-3000:]
    assert got["work1"]["redis_bind"] == ["127.0.0.1", "-::1", "10.0.0.13"]
    # Open to the app host only: the workers on the redis host use loopback, the web host never reaches it.
    assert got["work1"]["peer_ports"] == [{"port": "6379/tcp", "sources": ["10.0.0.11"]}]
    assert got["app1"]["redis_url"] == "redis://:redis-secret%2Fof-the-test@10.0.0.13:6379"
    assert got["work1"]["redis_url"] == "redis://:redis-secret%2Fof-the-test@127.0.0.1:6379"
    assert SECRET not in result.stdout  # the preflight's password checks are no_log


def test_redis_apart_without_a_password_is_refused_before_anything_changes(tmp_path: Path) -> None:
    result, got = run_site_wiring(tmp_path, redis_apart(None))
    assert result.returncode != 0
    assert "redis would listen on non-loopback addresses (10.0.0.13: redis_bind, and redis_private_address" in (
        " ".join(result.stdout.split())
    )
    assert "work1" not in got


def test_a_limit_that_leaves_out_the_app_hosts_names_them(tmp_path: Path) -> None:
    result, got = run_site_wiring(
        tmp_path,
        {"pyweb_web": {"web1": {}}, "pyweb_app": {"app1": {"ansible_host": "10.0.0.11"}}},
        "--limit",
        "web1",
    )
    assert result.returncode != 0
    assert "app host app1 published no gunicorn_server_facts" in result.stdout
    assert "--limit must keep every host of pyweb_app" in result.stdout
    assert "web1" not in got


def test_two_app_hosts_roll_out_drained_from_the_web_host_and_checked_through_their_port(tmp_path: Path) -> None:
    result, got = run_site_wiring(
        tmp_path,
        {
            "pyweb_web": {"web1": {"ansible_host": "10.0.0.10"}},
            "pyweb_app": {"app1": {"ansible_host": "10.0.0.11"}, "app2": {"ansible_host": "10.0.0.12"}},
        },
    )
    assert result.returncode == 0, result.stdout[-3000:]
    for name, address in (("app1", "10.0.0.11:8000"), ("app2", "10.0.0.12:8000")):
        assert got[f"{name}.rollout"] == {
            "swap": "later",
            "web_hosts": ["web1"],
            "drained": [address],
            "checked": [address],
        }


def test_django_hosts_drain_uwsgi_and_every_daphne_instance_but_check_no_uwsgi_port(tmp_path: Path) -> None:
    result, got = run_site_wiring(
        tmp_path,
        {
            "pyweb_web": {"web1": {"ansible_host": "10.0.0.10"}},
            "pyweb_app": {"app1": {"ansible_host": "10.0.0.11"}, "app2": {"ansible_host": "10.0.0.12"}},
        },
        "-e",
        json.dumps({"pyweb_app_server": "uwsgi", "pyweb_asgi_server": "daphne", "app_name": "chatapp"}),
    )
    assert result.returncode == 0, result.stdout[-3000:]
    rollout = got["app1.rollout"]
    assert rollout["swap"] == "later"
    assert rollout["drained"][0] == "10.0.0.11:8000"
    assert len(rollout["drained"]) > 1
    assert all(server.startswith("10.0.0.11:81") for server in rollout["drained"][1:])
    assert rollout["checked"] == []


def test_one_app_host_swaps_in_place(tmp_path: Path) -> None:
    result, got = run_site_wiring(
        tmp_path,
        {"pyweb_web": {"web1": {"ansible_host": "10.0.0.10"}}, "pyweb_app": {"app1": {"ansible_host": "10.0.0.11"}}},
    )
    assert result.returncode == 0, result.stdout[-3000:]
    assert got["app1.rollout"]["swap"] == "now"
    assert got["web1.rollout"] == {"swap": "now", "web_hosts": [], "drained": None, "checked": None}
