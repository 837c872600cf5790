"""Unit tests for roles/app/files/wheelhouse-download.py, the controller-side runner of `pip download`.

The runner makes pip evaluate environment markers for the host's interpreter. The tests run the real script and
the real pip against a local find-links directory holding a wheel built here, with no index and no mocks.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from types import ModuleType

import pytest
import yaml

ROLE = Path(__file__).resolve().parents[3] / "roles" / "app"
SCRIPT = ROLE / "files" / "wheelhouse-download.py"


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("wheelhouse_download", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


wheelhouse_download = load_script()


def probe_target() -> dict[str, object]:
    """What the role's probe prints on this machine (the same code runs on the hosts)."""
    code = yaml.safe_load((ROLE / "vars" / "main.yml").read_text())["_app_wheelhouse_probe"]
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(result.stdout)


def as_python(target: dict[str, object], version: str) -> dict[str, object]:
    """The target of a host running CPython `version` (X.Y.Z) on this machine's platform."""
    major, minor, _micro = version.split(".")
    environment = dict(target["environment"])  # type: ignore[call-overload]
    environment.update(python_full_version=version, python_version=f"{major}.{minor}", implementation_version=version)
    return {**target, "environment": environment, "python_version": version, "abi": f"cp{major}{minor}"}


def build_wheel(directory: Path, name: str, version: str) -> Path:
    """A minimal pure-Python wheel pip accepts (METADATA, WHEEL and a RECORD with hashes)."""
    dist_info = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": b"",
        f"{dist_info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{dist_info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{dist_info}/RECORD,,")
    wheel = directory / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
        archive.writestr(f"{dist_info}/RECORD", "\n".join(record) + "\n")
    return wheel


@pytest.fixture
def links(tmp_path: Path) -> Path:
    directory = tmp_path / "links"
    directory.mkdir()
    build_wheel(directory, "pyweb_marker_dep", "1.0")
    build_wheel(directory, "pyweb_plain_dep", "1.0")
    return directory


@pytest.fixture
def requirements(tmp_path: Path) -> Path:
    path = tmp_path / "requirements.txt"
    # Needed only below 3.11.3 (Debian 12's 3.11.2), never on the 3.12+ that runs these tests.
    path.write_text('pyweb-plain-dep==1.0\npyweb-marker-dep==1.0; python_full_version < "3.11.3"\n')
    return path


def isolated_pip_env() -> dict[str, str]:
    """This machine's pip configuration (extra indexes, find-links, constraints) left out."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull
    return env


def download(target: dict[str, object], requirements: Path, links: Path, dest: Path) -> list[str]:
    subprocess.run(
        [sys.executable, str(SCRIPT), "--target", json.dumps(target), "--requirement", str(requirements),
         "--dest", str(dest), "--", "--no-index", "--find-links", str(links), "--quiet"],
        check=True,
        env=isolated_pip_env(),
    )  # fmt: skip
    return sorted(path.name.split("-")[0] for path in dest.glob("*.whl"))


def test_a_marker_that_holds_on_the_host_only_is_downloaded(requirements: Path, links: Path, tmp_path: Path) -> None:
    target = as_python(probe_target(), "3.11.2")
    assert download(target, requirements, links, tmp_path / "wh") == ["pyweb_marker_dep", "pyweb_plain_dep"]


def test_a_marker_that_fails_on_the_host_is_left_out(requirements: Path, links: Path, tmp_path: Path) -> None:
    target = as_python(probe_target(), "3.13.5")
    assert download(target, requirements, links, tmp_path / "wh") == ["pyweb_plain_dep"]


def test_plain_pip_download_misses_the_host_only_dependency(requirements: Path, links: Path, tmp_path: Path) -> None:
    """The bug the runner exists for: --python-version alone does not change how markers are evaluated."""
    dest = tmp_path / "wh"
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--only-binary=:all:", "--python-version", "3.11.2",
         "--no-index", "--find-links", str(links), "--requirement", str(requirements), "--dest", str(dest), "--quiet"],
        check=True,
        env=isolated_pip_env(),
    )  # fmt: skip
    assert sorted(path.name.split("-")[0] for path in dest.glob("*.whl")) == ["pyweb_plain_dep"]


def test_the_probe_reports_this_interpreter() -> None:
    target = probe_target()
    assert target["abi"] == "cp{}{}".format(*sys.version_info[:2])
    assert target["python_version"] == "{}.{}.{}".format(*sys.version_info[:3])
    assert target["implementation"] == "cp"
    assert set(target["environment"]) == set(wheelhouse_download.MARKER_KEYS)  # type: ignore[arg-type]
    platforms = target["platforms"]
    assert isinstance(platforms, list)
    if sys.platform == "linux" and os.confstr("CS_GNU_LIBC_VERSION"):
        assert f"manylinux_2_17_{os.uname().machine}" in platforms
        assert f"manylinux2014_{os.uname().machine}" in platforms


def test_pip_arguments_carry_every_tag_of_the_host() -> None:
    target = as_python(probe_target(), "3.11.2") | {"platforms": ["manylinux_2_36_x86_64", "manylinux2014_x86_64"]}
    args = wheelhouse_download.pip_download_args(target, "req.txt", "out", ["--quiet"])
    assert args[:2] == ["download", "--only-binary=:all:"]
    assert args[args.index("--python-version") + 1] == "3.11.2"
    assert args[args.index("--abi") + 1] == "cp311"
    assert args[args.index("--implementation") + 1] == "cp"
    assert [args[i + 1] for i, arg in enumerate(args) if arg == "--platform"] == target["platforms"]
    assert args[-5:] == ["--requirement", "req.txt", "--dest", "out", "--quiet"]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("not json", "not JSON"),
        ("[]", "JSON object"),
        ('{"python_version": "3.11.2"}', "'environment'"),
        ('{"environment": {"os_name": "posix"}}', "lacks implementation_name"),
    ],
)
def test_a_malformed_target_is_refused(raw: str, message: str) -> None:
    with pytest.raises(wheelhouse_download.TargetError, match=message):
        wheelhouse_download.read_target(raw)


def test_a_target_without_platforms_is_refused() -> None:
    target = as_python(probe_target(), "3.11.2") | {"platforms": []}
    with pytest.raises(wheelhouse_download.TargetError, match="'platforms'"):
        wheelhouse_download.read_target(json.dumps(target))
