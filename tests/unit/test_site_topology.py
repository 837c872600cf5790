"""The site playbook's wiring of many hosts (playbooks/vars/site_roles.yml), run by a real ansible-playbook against
inventories of local-connection hosts: what each app host listens on, whom it trusts, and the upstream nginx gets on
each web host. The hosts only publish facts here; nothing on the controller changes but the result files."""

from __future__ import annotations

import json
import os
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
    - name: Publish how the app reaches gunicorn
      ansible.builtin.include_role:
        name: pyweb.stack.gunicorn
        tasks_from: publish.yml
      when: "'pyweb_app' in group_names"

    - name: Record what this host got
      ansible.builtin.copy:
        dest: "{out}/{{{{ inventory_hostname }}}}.json"
        mode: "0600"
        content: >-
          {{{{ {{'tcp_address': gunicorn_server_facts.tcp_address | default(none),
               'web_clients': gunicorn_web_clients if 'pyweb_app' in group_names else none,
               'upstream': pyweb_app_upstream_servers if 'pyweb_web' in group_names else none,
               'web_server': firewalld_web_server, 'peer_ports': firewalld_peer_ports}} | to_json }}}}
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
            "tcp_address": address,
            "web_clients": ["10.0.0.10"],
            "upstream": None,
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
        "tcp_address": "",
        "web_clients": [],
        "upstream": ["unix:/run/flaskapp/gunicorn.sock"],
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
    assert got["both"]["tcp_address"] == ""  # its own web server is the only one, on this machine
    assert got["app2"]["web_clients"] == ["both"]


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
