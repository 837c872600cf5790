"""Unit tests for roles/app/files/wheelhouse-download.py, the controller-side runner of `pip download`.

The runner makes pip evaluate environment markers for the host's interpreter. The tests run the real script and
the real pip against a local find-links directory holding a wheel built here, with no index and no mocks.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from types import ModuleType

import pytest
import yaml
from pyweb_molecule import load_source

ROLE = Path(__file__).resolve().parents[3] / "roles" / "app"
SCRIPT = ROLE / "files" / "wheelhouse-download.py"


def load_script() -> ModuleType:
    return load_source("wheelhouse_download", SCRIPT)


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
    # With an sdist directory: wheels still first, an sdist only where no wheel fits the host.
    with_sdists = wheelhouse_download.pip_download_args(target, "req.txt", "out", ["--quiet"], allow_sdists=True)
    assert with_sdists == ["download", "--prefer-binary", *args[2:]]


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


# An in-tree PEP 517 backend for the sdist-only project below: it imports its build requirement, so a build
# only works where that requirement was installed into the isolated build environment.
BACKEND = """
import base64, hashlib, os, zipfile

import pyweb_build_dep  # noqa: F401

DIST_INFO = "pyweb_sdist_only-1.0.dist-info"
METADATA = "Metadata-Version: 2.1\\nName: pyweb-sdist-only\\nVersion: 1.0\\nRequires-Dist: pyweb-plain-dep\\n"


def get_requires_for_build_wheel(config_settings=None):
    return []


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    os.makedirs(os.path.join(metadata_directory, DIST_INFO))
    with open(os.path.join(metadata_directory, DIST_INFO, "METADATA"), "w") as handle:
        handle.write(METADATA)
    return DIST_INFO


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    files = {
        "pyweb_sdist_only.py": b"BUILT = True\\n",
        DIST_INFO + "/METADATA": METADATA.encode(),
        DIST_INFO + "/WHEEL": b"Wheel-Version: 1.0\\nGenerator: test\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n",
    }
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append("%s,sha256=%s,%d" % (path, digest, len(data)))
    record.append(DIST_INFO + "/RECORD,,")
    name = "pyweb_sdist_only-1.0-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
        archive.writestr(DIST_INFO + "/RECORD", "\\n".join(record) + "\\n")
    return name
"""

PYPROJECT = """[build-system]
requires = ["pyweb-build-dep==1.0"]
build-backend = "backend"
backend-path = ["."]
"""


def build_sdist(directory: Path, files: dict[str, str], name: str = "pyweb_sdist_only-1.0") -> Path:
    sdist = directory / f"{name}.tar.gz"
    with tarfile.open(sdist, "w:gz") as archive:
        for path, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"{name}/{path}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return sdist


@pytest.fixture
def sdist_links(links: Path) -> Path:
    """The find-links directory with an sdist-only project and its build requirement (a wheel)."""
    build_wheel(links, "pyweb_build_dep", "1.0")
    build_sdist(links, {"pyproject.toml": PYPROJECT, "backend.py": BACKEND, "PKG-INFO": "Metadata-Version: 2.1\n"})
    return links


def download_with_sdists(requirements: Path, links: Path, tmp_path: Path, sdists: bool = True) -> int:
    target = as_python(probe_target(), "3.11.2")
    sdist_args = ["--sdist-dest", str(tmp_path / "sd"), "--manifest", str(tmp_path / "sd" / "m.json")] if sdists else []
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--target", json.dumps(target), "--requirement", str(requirements),
         "--dest", str(tmp_path / "wh"), *sdist_args, "--", "--no-index", "--find-links", str(links), "--quiet"],
        env=isolated_pip_env(),
        check=False,
    ).returncode  # fmt: skip


def test_an_sdist_only_requirement_comes_with_its_build_requirements(sdist_links: Path, tmp_path: Path) -> None:
    requirements = tmp_path / "req.txt"
    requirements.write_text("pyweb-sdist-only==1.0\n")
    assert download_with_sdists(requirements, sdist_links, tmp_path) == 0
    # Its dependency (a wheel) is in the wheelhouse; the sdist and its build requirement are kept apart.
    assert sorted(path.name for path in (tmp_path / "wh").iterdir()) == ["pyweb_plain_dep-1.0-py3-none-any.whl"]
    assert sorted(path.name for path in (tmp_path / "sd").iterdir()) == [
        "m.json",
        "pyweb_build_dep-1.0-py3-none-any.whl",
        "pyweb_sdist_only-1.0.tar.gz",
    ]
    manifest = json.loads((tmp_path / "sd" / "m.json").read_text())
    assert manifest == {
        "build_requires": ["pyweb-build-dep==1.0"],
        "sdists": [{"file": "pyweb_sdist_only-1.0.tar.gz", "name": "pyweb-sdist-only", "version": "1.0"}],
    }


def test_the_shipped_sdist_builds_with_no_index(sdist_links: Path, tmp_path: Path) -> None:
    """What wheelhouse_build.yml runs on the host, here: only the sdist directory, no index."""
    requirements = tmp_path / "req.txt"
    requirements.write_text("pyweb-sdist-only==1.0\n")
    assert download_with_sdists(requirements, sdist_links, tmp_path) == 0
    out = tmp_path / "out"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-index", "--use-pep517", "--no-cache-dir",
         "--find-links", str(tmp_path / "sd"), "--wheel-dir", str(out), "--quiet",
         str(tmp_path / "sd" / "pyweb_sdist_only-1.0.tar.gz")],
        check=True,
        env=isolated_pip_env(),
    )  # fmt: skip
    assert [path.name for path in out.iterdir()] == ["pyweb_sdist_only-1.0-py3-none-any.whl"]


def test_without_the_sdist_directory_an_sdist_only_requirement_fails(sdist_links: Path, tmp_path: Path) -> None:
    requirements = tmp_path / "req.txt"
    requirements.write_text("pyweb-sdist-only==1.0\n")
    assert download_with_sdists(requirements, sdist_links, tmp_path, sdists=False) != 0


def test_a_wheel_is_preferred_to_an_sdist(sdist_links: Path, tmp_path: Path) -> None:
    build_sdist(sdist_links, {"setup.py": "raise SystemExit('never built')\n"}, name="pyweb_plain_dep-1.0")
    requirements = tmp_path / "req.txt"
    requirements.write_text("pyweb-plain-dep==1.0\n")
    assert download_with_sdists(requirements, sdist_links, tmp_path) == 0
    assert [path.name for path in (tmp_path / "wh").iterdir()] == ["pyweb_plain_dep-1.0-py3-none-any.whl"]
    assert json.loads((tmp_path / "sd" / "m.json").read_text()) == {"build_requires": [], "sdists": []}


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"setup.py": ""}, ["setuptools>=40.8.0", "wheel"]),
        ({"pyproject.toml": "[tool.black]\n"}, ["setuptools>=40.8.0", "wheel"]),
        (
            {
                "pyproject.toml": '[build-system]\nrequires = ["setuptools>=61"]\n'
                'build-backend = "setuptools.build_meta"\n'
            },
            ["setuptools>=61", "wheel"],
        ),
        (
            {"pyproject.toml": '[build-system]\nrequires = ["hatchling"]\nbuild-backend = "hatchling.build"\n'},
            ["hatchling"],
        ),
    ],
)
def test_build_requirements_as_pip_asks_for_them(tmp_path: Path, files: dict[str, str], expected: list[str]) -> None:
    assert wheelhouse_download.build_requires(build_sdist(tmp_path, files, name="x-1.0")) == expected
