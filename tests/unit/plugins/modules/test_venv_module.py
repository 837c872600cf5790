# Copyright: pyweb.stack contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""pyweb.stack.venv end to end: real venvs, real pip, a wheelhouse built offline in tmp_path."""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import stat

import pytest
from ansible.module_utils import basic
from ansible.module_utils.testing import patch_module_args
from ansible_collections.pyweb.stack.plugins.modules import venv as venv_module

PY311 = "/root/.pyenv/versions/3.11.7/bin/python"
PY312 = "/root/.pyenv/versions/3.12.1/bin/python"
STAMP = ".pyweb-venv.json"

pytestmark = pytest.mark.skipif(
    not (os.access(PY311, os.X_OK) and os.access(PY312, os.X_OK)), reason="needs pyenv Python 3.11.7 and 3.12.1"
)


def _load_wheels():
    path = os.path.join(os.path.dirname(__file__), "fixtures", "venv", "wheels.py")
    spec = importlib.util.spec_from_file_location("pyweb_test_wheels", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


wheels = _load_wheels()


@pytest.fixture
def commands(monkeypatch):
    """Every argv the module runs, while still running it for real."""
    seen: list[list[str]] = []
    real = basic.AnsibleModule.run_command

    def recording(self, args, *more, **kwargs):
        seen.append(list(args))
        return real(self, args, *more, **kwargs)

    monkeypatch.setattr(basic.AnsibleModule, "run_command", recording)
    return seen


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory):
    return wheels.build_wheelhouse(str(tmp_path_factory.mktemp("wheelhouse")))


def run_module(capsys, check_mode=False, diff=True, **args):
    args.setdefault("python", PY312)
    args["_ansible_check_mode"] = check_mode
    args["_ansible_diff"] = diff
    with patch_module_args(args), pytest.raises(SystemExit):
        venv_module.main()
    return json.loads(capsys.readouterr().out)


def pip_calls(commands):
    return [argv for argv in commands if argv[1:3] == ["-m", "pip"]]


def tree_snapshot(root):
    snapshot = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            info = os.lstat(path)
            snapshot[path] = (info.st_size, info.st_mtime_ns, stat.S_IFMT(info.st_mode))
    return snapshot


def write(path, text):
    with open(path, "w") as handle:
        handle.write(text)
    return str(path)


def test_create_noop_update_and_check_mode(tmp_path, capsys, commands, wheelhouse):
    venv = str(tmp_path / "venv")
    requirements = write(tmp_path / "requirements.txt", "pyweb-alpha==1.0\n")
    args = {"path": venv, "requirements": [requirements], "packages": ["pyweb-gamma"], "wheelhouse": wheelhouse}

    first = run_module(capsys, **args)
    assert first["changed"]
    assert first["created"]
    assert not first["recreated"]
    assert first["pip_ran"]
    assert not first["stamp_matched"]
    assert first["python_version"] == "3.12.1"
    assert first["python"] == os.path.join(venv, "bin", "python")
    assert {k: first["packages"][k] for k in ("pyweb-alpha", "pyweb-beta", "pyweb-gamma")} == {
        "pyweb-alpha": "1.0",
        "pyweb-beta": "1.0",
        "pyweb-gamma": "2.0",
    }
    assert first["package_changes"]["added"]["pyweb-beta"] == "1.0"
    assert "pyweb-alpha==1.0\n" in first["diff"]["after"]
    install = pip_calls(commands)[0]
    assert ["--no-index", "--find-links", wheelhouse] == install[install.index("--no-index") :][:3]
    assert "--disable-pip-version-check" in install
    assert "--no-input" in install
    assert os.path.isfile(os.path.join(venv, STAMP))

    # No-op: the stamp matches, so nothing at all is started (no pip, no python).
    commands.clear()
    second = run_module(capsys, **args)
    assert commands == []
    assert not second["changed"]
    assert second["stamp_matched"]
    assert not second["pip_ran"]
    assert second["packages"] == first["packages"]
    assert second["python_version"] == "3.12.1"

    # Check mode with a changed requirement: pip resolves read-only, the disk is untouched.
    write(requirements, "pyweb-alpha==1.1\n")
    before = tree_snapshot(str(tmp_path))
    commands.clear()
    predicted = run_module(capsys, check_mode=True, **args)
    assert tree_snapshot(str(tmp_path)) == before
    assert predicted["changed"]
    assert predicted["pip_ran"]
    assert all("--dry-run" in argv for argv in pip_calls(commands))
    assert predicted["package_changes"]["changed"] == {"pyweb-alpha": {"before": "1.0", "after": "1.1"}}
    assert "pyweb-alpha==1.1\n" in predicted["diff"]["after"]
    assert "pyweb-alpha==1.0\n" in predicted["diff"]["before"]

    # The real run installs what check mode predicted.
    third = run_module(capsys, **args)
    assert third["changed"]
    assert not third["created"]
    assert not third["recreated"]
    assert third["package_changes"] == {
        "added": {},
        "removed": {},
        "changed": {"pyweb-alpha": {"before": "1.0", "after": "1.1"}},
    }
    assert third["packages"]["pyweb-alpha"] == "1.1"

    # Inputs changed but already satisfied (a comment): pip runs once more, nothing changes, next run is a no-op.
    write(requirements, "pyweb-alpha==1.1  # pinned\n")
    fourth = run_module(capsys, **args)
    assert fourth["pip_ran"]
    assert not fourth["changed"]
    commands.clear()
    assert run_module(capsys, **args)["stamp_matched"]
    assert commands == []

    # A wheelhouse change (new file) is an input change too.
    wheels.build_wheel(wheelhouse, "pyweb-epsilon", "1.0")
    try:
        assert not run_module(capsys, **args)["stamp_matched"]
    finally:
        os.unlink(os.path.join(wheelhouse, "pyweb_epsilon-1.0-py3-none-any.whl"))


def test_interpreter_change_recreates_the_venv(tmp_path, capsys, wheelhouse):
    venv = str(tmp_path / "venv")
    args = {"path": venv, "packages": ["pyweb-gamma"], "wheelhouse": wheelhouse}
    old = run_module(capsys, **dict(args, python=PY311))
    assert old["python_version"] == "3.11.7"

    predicted = run_module(capsys, check_mode=True, **args)
    assert predicted["changed"]
    assert predicted["recreated"]
    assert "3.11.7" in pathlib.Path(venv, "pyvenv.cfg").read_text()

    new = run_module(capsys, **args)
    assert new["changed"]
    assert new["recreated"]
    assert not new["created"]
    assert new["python_version"] == "3.12.1"
    assert any("3.11.7" in reason and "3.12.1" in reason for reason in new["reasons"])
    assert "version = 3.12.1" in pathlib.Path(venv, "pyvenv.cfg").read_text()
    assert new["packages"]["pyweb-gamma"] == "2.0"
    assert run_module(capsys, **args)["stamp_matched"]


def test_missing_inputs_fail_before_anything_is_touched(tmp_path, capsys, commands, wheelhouse):
    venv = str(tmp_path / "venv")
    result = run_module(capsys, path=venv, requirements=[str(tmp_path / "nope.txt")], wheelhouse=wheelhouse)
    assert result["failed"]
    assert str(tmp_path / "nope.txt") in result["msg"]
    assert not os.path.exists(venv)
    assert commands == []

    nested = write(tmp_path / "req.txt", "-r other.txt\n")
    result = run_module(capsys, path=venv, requirements=[nested])
    assert result["failed"]
    assert str(tmp_path / "other.txt") in result["msg"]

    result = run_module(capsys, path=venv, packages=["x"], wheelhouse=str(tmp_path / "no-wheels"))
    assert result["failed"]
    assert "wheelhouse" in result["msg"]

    result = run_module(capsys, path=venv, python=str(tmp_path / "python9"))
    assert result["failed"]
    assert "python9" in result["msg"]
    assert not os.path.exists(venv)
    assert commands == []


def test_pip_failure_leaves_no_stamp_and_the_next_run_retries(tmp_path, capsys, commands, wheelhouse):
    venv = str(tmp_path / "venv")
    requirements = write(tmp_path / "requirements.txt", "pyweb-no-such-package==9\n")
    args = {"path": venv, "requirements": [requirements], "wheelhouse": wheelhouse}
    failed = run_module(capsys, **args)
    assert failed["failed"]
    assert "pip install failed" in failed["msg"]
    assert "pyweb-no-such-package" in failed["msg"] + failed["stderr"]
    assert failed["cmd"][1:4] == ["-m", "pip", "--disable-pip-version-check"]
    assert not os.path.exists(os.path.join(venv, STAMP))

    write(requirements, "pyweb-gamma\n")
    commands.clear()
    retried = run_module(capsys, **args)
    assert retried["changed"]
    assert not retried["created"]
    assert retried["pip_ran"]
    assert [argv[0] for argv in commands if "venv" in argv[1:3]] == []  # the venv was reused, not re-created
    assert retried["package_changes"]["added"] == {"pyweb-gamma": "2.0"}


def test_failed_create_removes_the_half_created_venv(tmp_path, capsys):
    real = os.path.realpath(PY312)
    fake = tmp_path / "python3"
    # Answers the version probe like a real interpreter, but "python -m venv DIR" dies half way.
    fake.write_text(
        f'#!/bin/sh\nif [ "$1" = -c ]; then exec {real} "$@"; fi\nmkdir -p "$3/bin"; echo boom >&2; exit 3\n'
    )
    fake.chmod(0o755)
    venv = str(tmp_path / "venv")
    result = run_module(capsys, path=venv, python=str(fake))
    assert result["failed"]
    assert "boom" in result["msg"]
    assert "python3-venv" in result["msg"]
    assert not os.path.exists(venv)


def test_prune_removes_what_the_inputs_no_longer_resolve_to(tmp_path, capsys, wheelhouse):
    venv = str(tmp_path / "venv")
    args = {"path": venv, "wheelhouse": wheelhouse, "prune": True}
    first = run_module(capsys, packages=["pyweb-alpha==1.0", "pyweb-gamma"], **args)
    assert {"pyweb-alpha", "pyweb-beta", "pyweb-gamma"} <= set(first["packages"])

    predicted = run_module(capsys, check_mode=True, packages=["pyweb-delta"], **args)
    assert set(predicted["package_changes"]["removed"]) == {"pyweb-alpha", "pyweb-gamma"}
    assert predicted["package_changes"]["added"] == {"pyweb-delta": "0.5"}
    assert "pyweb-alpha" in pathlib.Path(venv, STAMP).read_text()

    pruned = run_module(capsys, packages=["pyweb-delta"], **args)
    assert pruned["changed"]
    assert pruned["package_changes"]["removed"] == {"pyweb-alpha": "1.0", "pyweb-gamma": "2.0"}
    assert "pyweb-beta" in pruned["packages"]
    assert "pip" in pruned["packages"]
    assert "pyweb-alpha" not in pruned["packages"]


def test_check_mode_without_a_venv_lists_requested_lines_and_creates_nothing(tmp_path, capsys, commands, wheelhouse):
    venv = str(tmp_path / "venv")
    requirements = write(tmp_path / "requirements.txt", "# app\npyweb-alpha>=1.0\n-r more.txt\n")
    write(tmp_path / "more.txt", "pyweb-gamma\n")
    result = run_module(
        capsys, check_mode=True, path=venv, requirements=[requirements], packages=["pyweb-delta"], wheelhouse=wheelhouse
    )
    assert result["changed"]
    assert result["created"]
    assert not result["pip_ran"]
    assert result["requested"] == ["pyweb-alpha>=1.0", "pyweb-gamma", "pyweb-delta"]
    assert "pyweb-gamma" in result["diff"]["after"]
    assert not os.path.exists(venv)
    assert pip_calls(commands) == []


def test_absent_removes_only_virtualenvs(tmp_path, capsys):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\nversion = 3.12.1\n")
    (venv / STAMP).write_text(json.dumps({"format": 1, "packages": {"pyweb-gamma": "2.0"}}))

    predicted = run_module(capsys, check_mode=True, path=str(venv), state="absent")
    assert predicted["changed"]
    assert venv.exists()
    assert predicted["diff"]["before"] == "pyweb-gamma==2.0\n"
    assert run_module(capsys, path=str(venv), state="absent")["changed"]
    assert not venv.exists()
    assert not run_module(capsys, path=str(venv), state="absent")["changed"]

    precious = tmp_path / "data"
    precious.mkdir()
    (precious / "keep.txt").write_text("x")
    assert run_module(capsys, path=str(precious), state="absent")["failed"]
    assert run_module(capsys, path=str(precious), packages=["x"])["failed"]
    assert (precious / "keep.txt").exists()
