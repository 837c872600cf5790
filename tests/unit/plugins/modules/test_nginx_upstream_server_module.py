# Copyright: pyweb.stack contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""pyweb.stack.nginx_upstream_server on real files, with real commands standing in for `nginx -t` and the reload:
a drained server is marked down and only it, nginx rejecting the change or a reload that did not take puts the files
back, check mode writes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ansible.module_utils.testing import patch_module_args
from ansible_collections.pyweb.stack.plugins.module_utils._nginx_upstream import set_servers_down
from ansible_collections.pyweb.stack.plugins.modules import nginx_upstream_server as module_under_test

SITE = """\
# pyweb.stack: flaskapp
upstream flaskapp_api {
    server 10.0.0.11:8000 max_fails=3 fail_timeout=10s;
    server 10.0.0.12:8000 max_fails=3 fail_timeout=10s;  # app2
    keepalive 16;
}

upstream flaskapp_ws {
    server 10.0.0.11:8001 max_fails=0;
}

server {
    listen 80;
    location / {
        # server 10.0.0.11:8000; is not an upstream line
        proxy_pass http://flaskapp_api;
    }
}
"""


def run_module(
    capsys: pytest.CaptureFixture[str], check_mode: bool = False, diff: bool = False, **args: object
) -> dict:
    with (
        patch_module_args({**args, "_ansible_check_mode": check_mode, "_ansible_diff": diff}),
        pytest.raises(SystemExit),
    ):
        module_under_test.main()
    return json.loads(capsys.readouterr().out)


@pytest.fixture
def sites(tmp_path: Path) -> Path:
    """sites-enabled holding a link to sites-available/flaskapp.conf, as pyweb.stack.nginx writes them."""
    (tmp_path / "sites-available").mkdir()
    (tmp_path / "sites-enabled").mkdir()
    site = tmp_path / "sites-available" / "flaskapp.conf"
    site.write_text(SITE)
    site.chmod(0o644)
    (tmp_path / "sites-enabled" / "flaskapp.conf").symlink_to(site)
    return tmp_path


def commands(tmp_path: Path, validate_rc: int = 0, reload_rc: int = 0) -> dict[str, list[str]]:
    """A validate and a reload command that log their runs, and what the file held when they ran."""
    log = tmp_path / "commands.log"
    site = tmp_path / "sites-available" / "flaskapp.conf"

    def command(name: str, rc: int) -> list[str]:
        return [
            "sh",
            "-c",
            f'grep -c " down;" {site} | sed "s/^/{name} /" >> {log}; echo "{name} said no" >&2; exit {rc}',
        ]

    return {
        "validate_command": command("validate", validate_rc),
        "reload_command": command("reload", reload_rc),
        "lock_file": str(tmp_path / "upstream.lock"),
    }


def test_the_text_edit_touches_only_the_named_server_lines_of_upstream_blocks() -> None:
    drained, matched = set_servers_down(SITE, ["10.0.0.11:8000", "10.0.0.11:8001"], down=True)
    assert matched == ["10.0.0.11:8000", "10.0.0.11:8001"]
    assert "    server 10.0.0.11:8000 max_fails=3 fail_timeout=10s down;\n" in drained
    assert "    server 10.0.0.12:8000 max_fails=3 fail_timeout=10s;  # app2\n" in drained
    assert "    server 10.0.0.11:8001 max_fails=0 down;\n" in drained
    assert "        # server 10.0.0.11:8000; is not an upstream line\n" in drained
    assert drained.count("down") == 2
    again, matched_again = set_servers_down(drained, ["10.0.0.11:8000"], down=True)
    assert again == drained
    assert matched_again == ["10.0.0.11:8000"]
    restored, matched_back = set_servers_down(drained, ["10.0.0.11:8000", "10.0.0.11:8001"], down=False)
    assert restored == SITE
    assert matched_back == matched


def test_drained_marks_the_server_down_validates_and_reloads(capsys: pytest.CaptureFixture[str], sites: Path) -> None:
    result = run_module(
        capsys, servers=["10.0.0.11:8000"], state="drained", sites_dir=str(sites / "sites-enabled"), **commands(sites)
    )
    site = sites / "sites-available" / "flaskapp.conf"
    assert result["changed"] is True
    assert result["matched"] == ["10.0.0.11:8000"]
    assert result["files"] == [str(site)]
    assert "server 10.0.0.11:8000 max_fails=3 fail_timeout=10s down;" in site.read_text()
    assert (sites / "sites-enabled" / "flaskapp.conf").is_symlink()
    assert site.stat().st_mode & 0o777 == 0o644
    # nginx -t saw the drained file, then the reload did.
    assert (sites / "commands.log").read_text().splitlines() == ["validate 1", "reload 1"]

    again = run_module(
        capsys, servers=["10.0.0.11:8000"], state="drained", sites_dir=str(sites / "sites-enabled"), **commands(sites)
    )
    assert again["changed"] is False
    assert (sites / "commands.log").read_text().splitlines() == ["validate 1", "reload 1"]

    back = run_module(
        capsys, servers=["10.0.0.11:8000"], state="active", sites_dir=str(sites / "sites-enabled"), **commands(sites)
    )
    assert back["changed"] is True
    assert site.read_text() == SITE


@pytest.mark.parametrize(("validate_rc", "reload_rc", "said"), [(1, 0, "rejected"), (0, 1, "did not reload")])
def test_a_rejected_or_untaken_change_puts_the_files_back(
    capsys: pytest.CaptureFixture[str], sites: Path, validate_rc: int, reload_rc: int, said: str
) -> None:
    result = run_module(
        capsys,
        servers=["10.0.0.11:8000"],
        sites_dir=str(sites / "sites-enabled"),
        **commands(sites, validate_rc=validate_rc, reload_rc=reload_rc),
    )
    assert result["failed"] is True
    assert f"nginx {said}" in result["msg"]
    assert "said no" in result["msg"]
    assert "the files are back as they were" in result["msg"]
    assert (sites / "sites-available" / "flaskapp.conf").read_text() == SITE


def test_check_mode_predicts_with_a_diff_and_writes_nothing(capsys: pytest.CaptureFixture[str], sites: Path) -> None:
    result = run_module(
        capsys,
        check_mode=True,
        diff=True,
        servers=["10.0.0.12:8000"],
        sites_dir=str(sites / "sites-enabled"),
        **commands(sites),
    )
    assert result["changed"] is True
    assert "server 10.0.0.12:8000 max_fails=3 fail_timeout=10s down;" in result["diff"][0]["after"]
    assert (sites / "sites-available" / "flaskapp.conf").read_text() == SITE
    assert not (sites / "commands.log").exists()


def test_a_server_no_upstream_lists_changes_nothing(capsys: pytest.CaptureFixture[str], sites: Path) -> None:
    result = run_module(
        capsys, servers=["unix:/run/flaskapp/gunicorn.sock"], sites_dir=str(sites / "sites-enabled"), **commands(sites)
    )
    assert result["changed"] is False
    assert result["matched"] == []
    assert not (sites / "commands.log").exists()
