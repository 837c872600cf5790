"""The strict unit validator (roles/common/files/unit-verify.py) against this machine's real systemd-analyze:
what passes, and that a line systemd ignores fails it, for unit files, drop-ins and sockets. The last tests run it
the way the hosts do: as the file the `common` role installs."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pyweb_molecule import load_source

REPO = Path(__file__).resolve().parents[3]
SCRIPT = REPO / "roles" / "common" / "files" / "unit-verify.py"


def load_script():
    return load_source("unit_verify", SCRIPT)


unit_verify = load_script()
pytestmark = pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="needs systemd-analyze (Debian: systemd)")

SERVICE = "[Unit]\nDescription=test\n\n[Service]\nExecStart=/bin/true\nProtectSystem=strict\n"
SOCKET = "[Socket]\nListenStream=/run/pyweb-test/%i.sock\nSocketMode=0660\n"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_a_valid_service_passes(tmp_path: Path) -> None:
    found, _output = unit_verify.verify(write(tmp_path, "candidate", SERVICE), "app.service")
    assert found == []


@pytest.mark.parametrize(
    ("line", "named"),
    [
        ("ProtectSytem=strict", "ProtectSytem"),
        ("ProtectSystem=bogus", "bogus"),
        ("RestrictAddressFamilies=AF_NOPE", ""),
    ],
)
def test_a_line_systemd_ignores_fails(tmp_path: Path, line: str, named: str) -> None:
    found, output = unit_verify.verify(write(tmp_path, "candidate", SERVICE + line + "\n"), "app.service")
    assert found, output
    assert named in "\n".join(found)


def test_a_template_is_checked_as_its_instance(tmp_path: Path) -> None:
    found, _output = unit_verify.verify(
        write(tmp_path, "candidate", SERVICE.replace("/bin/true", "/bin/echo %i")), "app@1.service"
    )
    assert found == []


def test_a_drop_in_is_checked_with_the_unit_it_extends(tmp_path: Path) -> None:
    unit = write(tmp_path, "app.service", SERVICE)
    assert (
        unit_verify.verify(
            write(tmp_path, "ok.conf", "[Service]\nReadWritePaths=/srv\n"), "app.service", drop_in_for=unit
        )[0]
        == []
    )
    found, output = unit_verify.verify(
        write(tmp_path, "bad.conf", "[Service]\nReadWritePath=/srv\n"), "app.service", drop_in_for=unit
    )
    assert found, output
    assert "ReadWritePath" in "\n".join(found)


def test_a_socket_is_checked_beside_a_stand_in_service(tmp_path: Path) -> None:
    good = write(tmp_path, "good", SOCKET)
    assert unit_verify.verify(good, "app@1.socket", socket_service_stub=True)[0] == []
    found, output = unit_verify.verify(
        write(tmp_path, "bad", SOCKET + "SocketMod=0666\n"), "app@1.socket", socket_service_stub=True
    )
    assert found, output


@pytest.mark.parametrize("name", ["app", "app.", "../app.service", ".service"])
def test_a_name_that_is_no_unit_name_is_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(unit_verify.VerifyError):
        unit_verify.verify(write(tmp_path, "candidate", SERVICE), name)


def test_the_stub_goes_with_sockets_only(tmp_path: Path) -> None:
    with pytest.raises(unit_verify.VerifyError, match="socket"):
        unit_verify.verify(write(tmp_path, "candidate", SERVICE), "app.service", socket_service_stub=True)


def test_the_scratch_directory_is_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path / "scratch"))
    (tmp_path / "scratch").mkdir()
    monkeypatch.setattr(unit_verify.tempfile, "tempdir", None)
    unit_verify.verify(write(tmp_path, "candidate", SERVICE + "Bogus=1\n"), "app.service")
    assert list((tmp_path / "scratch").iterdir()) == []


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """unit-verify as the common role installs it: the copy task's content, rendered here without Ansible."""
    task = yaml.safe_load((REPO / "roles/common/tasks/unit_verify.yml").read_text(encoding="utf-8"))[-1]
    content = task["ansible.builtin.copy"]["content"]
    lookup = "{{ lookup('ansible.builtin.file', 'unit-verify.py') }}"
    assert lookup in content
    # ansible.builtin.file's lookup strips the trailing newline
    script = tmp_path_factory.mktemp("libexec") / "unit-verify"
    script.write_text(content.replace(lookup, SCRIPT.read_text(encoding="utf-8").rstrip("\n")), encoding="utf-8")
    return script


def run(script: Path, *args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(script), *map(str, args)], capture_output=True, text=True, check=False)


def test_the_installed_tool_passes_a_valid_unit(installed: Path, tmp_path: Path) -> None:
    result = run(installed, "--name", "app.service", write(tmp_path, "candidate", SERVICE))
    assert result.returncode == 0, result.stderr


def test_the_installed_tool_fails_on_an_ignored_line_and_says_which(installed: Path, tmp_path: Path) -> None:
    result = run(installed, "--name", "app.service", write(tmp_path, "candidate", SERVICE + "PrivateTmpp=yes\n"))
    assert result.returncode == 1
    assert "PrivateTmpp" in result.stderr
    assert "unit-verify: app.service:" in result.stderr


def test_the_installed_tool_names_a_missing_unit_file(installed: Path, tmp_path: Path) -> None:
    result = run(
        installed, "--name", "app.service", "--drop-in-for", tmp_path / "nope.service", write(tmp_path, "c", "")
    )
    assert result.returncode == 2
    assert "nope.service" in result.stderr
