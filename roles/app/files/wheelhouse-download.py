"""Download a wheelhouse on the controller for another interpreter: the one a host runs the app with.

pip's --python-version/--platform/--implementation/--abi pick wheels for the target, but pip still evaluates
environment markers (`tomli; python_version < "3.11"`) for the Python that runs pip, so a dependency behind a
marker is left out, or pulled in, for the wrong interpreter (pip issue 11664). This runner takes the marker
environment that the host's own interpreter reported (see _app_wheelhouse_probe in vars/main.yml), makes pip's
marker evaluation use it, and runs `pip download` in this process with the host's tags.

Usage: python wheelhouse-download.py --target TARGET_JSON --requirement FILE --dest DIR [-- EXTRA_PIP_ARGS...]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pip._internal.cli import cmdoptions
from pip._internal.cli.main import main as pip_main
from pip._vendor.packaging import markers
from pip._vendor.packaging.requirements import Requirement
from pip._vendor.packaging.utils import canonicalize_name, parse_sdist_filename

try:
    import tomllib
except ImportError:  # Python < 3.11: pip vendors the same parser
    from pip._vendor import tomli as tomllib  # type: ignore[no-redef]

SDIST_SUFFIXES = (".tar.gz", ".zip")
# What pip (PEP 517) assumes for a project without [build-system]; wheel too, for setuptools older than 70.1,
# whose get_requires_for_build_wheel asks for it.
LEGACY_BUILD_REQUIRES = ["setuptools>=40.8.0", "wheel"]
SETUPTOOLS_BACKENDS = ("setuptools.build_meta", "setuptools.build_meta:__legacy__")

# The keys of PEP 508's marker environment: a target missing one cannot be evaluated faithfully.
MARKER_KEYS = (
    "implementation_name",
    "implementation_version",
    "os_name",
    "platform_machine",
    "platform_python_implementation",
    "platform_release",
    "platform_system",
    "platform_version",
    "python_full_version",
    "python_version",
    "sys_platform",
)


class TargetError(ValueError):
    """The target description from the host is incomplete or malformed."""


def read_target(raw: str) -> dict[str, Any]:
    """Parse and check the host's description: its marker environment and its wheel tags."""
    try:
        target = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise TargetError(f"the target is not JSON: {exc}") from exc
    if not isinstance(target, dict):
        raise TargetError("the target must be a JSON object")
    environment = target.get("environment")
    if not isinstance(environment, dict):
        raise TargetError("the target has no 'environment' object")
    missing = [key for key in MARKER_KEYS if not isinstance(environment.get(key), str)]
    if missing:
        raise TargetError(f"the target's environment lacks {', '.join(missing)}")
    for key in ("python_version", "implementation", "abi"):
        if not isinstance(target.get(key), str) or not target[key]:
            raise TargetError(f"the target has no '{key}'")
    platforms = target.get("platforms")
    if not isinstance(platforms, list) or not platforms or not all(isinstance(p, str) for p in platforms):
        raise TargetError("the target has no 'platforms' list")
    return target


def pip_download_args(
    target: dict[str, Any], requirement: str, dest: str, extra: Sequence[str], allow_sdists: bool = False
) -> list[str]:
    """The `pip download` arguments that select the host's wheels: only wheels, or wheels first then sdists."""
    args = [
        "download",
        "--prefer-binary" if allow_sdists else "--only-binary=:all:",
        "--python-version",
        target["python_version"],
        "--implementation",
        target["implementation"],
        "--abi",
        target["abi"],
    ]
    for platform in target["platforms"]:
        args += ["--platform", platform]
    return [*args, "--requirement", requirement, "--dest", dest, *extra]


def use_marker_environment(markers_module: Any, environment: dict[str, str]) -> None:
    """Make every marker evaluation in this process see the host's environment instead of this interpreter's.

    packaging's Marker.evaluate() starts from the module-level default_environment() and only adds `extra`, so
    replacing that one function covers the requirements file and every dependency's metadata alike.
    """
    if not callable(getattr(markers_module, "default_environment", None)):
        raise RuntimeError(
            "this pip's vendored packaging has no markers.default_environment(); use a pip between 20 and 25"
        )
    host_environment = dict(environment)

    def default_environment() -> dict[str, str]:
        return dict(host_environment)

    markers_module.default_environment = default_environment


def allow_sdists_with_target_tags(cmdoptions_module: Any) -> None:
    """Let pip download sdists although --platform/--abi name another interpreter.

    pip refuses that combination because it cannot build for another interpreter; it does not need to: it only
    prepares the sdist's metadata here (to resolve its dependencies, with the host's markers), and the build runs
    on a host of the target interpreter.
    """
    if not callable(getattr(cmdoptions_module, "check_dist_restriction", None)):
        raise RuntimeError("this pip has no cmdoptions.check_dist_restriction(); use a pip between 20 and 25")

    def check_dist_restriction(*_args: Any, **_kwargs: Any) -> None:
        return None

    cmdoptions_module.check_dist_restriction = check_dist_restriction


def is_sdist(name: str) -> bool:
    return name.endswith(SDIST_SUFFIXES)


def build_requires(sdist: Path) -> list[str]:
    """The sdist's build requirements, as pip's isolated build will ask for them (PEP 517/518)."""
    name = sdist.name
    text = None
    if name.endswith(".zip"):
        with zipfile.ZipFile(sdist) as archive:
            members = [m for m in archive.namelist() if m.count("/") == 1 and m.endswith("/pyproject.toml")]
            if members:
                text = archive.read(members[0]).decode()
    else:
        with tarfile.open(sdist) as archive:
            members = [m for m in archive.getmembers() if m.name.count("/") == 1 and m.name.endswith("/pyproject.toml")]
            if members:
                handle = archive.extractfile(members[0])
                text = handle.read().decode() if handle else None
    system = tomllib.loads(text).get("build-system") if text else None
    if not isinstance(system, dict) or "requires" not in system:
        return list(LEGACY_BUILD_REQUIRES)
    requires = [str(item) for item in system["requires"]]
    backend = system.get("build-backend", SETUPTOOLS_BACKENDS[1])
    names = {canonicalize_name(Requirement(item).name) for item in requires}
    if backend in SETUPTOOLS_BACKENDS and "wheel" not in names:
        requires.append("wheel")
    return requires


def sdist_entry(path: Path) -> dict[str, str]:
    project, version = parse_sdist_filename(path.name)
    return {"file": path.name, "name": str(project), "version": str(version)}


def pip_in_subprocess(target: dict[str, Any], args: Sequence[str]) -> int:
    """Run pip in a fresh interpreter: pip's state does not survive a second main() in one process."""
    command = [sys.executable, __file__, "--pip", "--target", json.dumps(target), "--", *args]
    return subprocess.call(command)


def download(target: dict[str, Any], options: argparse.Namespace) -> int:
    """Wheels to --dest; with --sdist-dest, sdists and their build requirements there, listed in --manifest."""
    dest = Path(options.dest)
    dest.mkdir(parents=True, exist_ok=True)
    if not options.sdist_dest:
        return pip_in_subprocess(target, pip_download_args(target, options.requirement, str(dest), options.extra))
    sdist_dest = Path(options.sdist_dest)
    sdist_dest.mkdir(parents=True, exist_ok=True)
    # A fresh directory tells exactly what these requirements resolve to; pip's HTTP cache makes it cheap.
    with tempfile.TemporaryDirectory(prefix=".incoming-", dir=dest.parent) as incoming:
        args = pip_download_args(target, options.requirement, incoming, options.extra, allow_sdists=True)
        status = pip_in_subprocess(target, args)
        if status != 0:
            return status
        sdists = []
        for path in sorted(Path(incoming).iterdir()):
            if is_sdist(path.name):
                sdists.append(sdist_entry(path))
                shutil.move(str(path), sdist_dest / path.name)
            else:
                shutil.move(str(path), dest / path.name)
    requires = sorted({req for entry in sdists for req in build_requires(sdist_dest / entry["file"])})
    if requires:
        with tempfile.NamedTemporaryFile("w", suffix=".txt", dir=sdist_dest, delete=False) as handle:
            handle.write("\n".join(requires) + "\n")
        try:
            status = pip_in_subprocess(target, pip_download_args(target, handle.name, str(sdist_dest), options.extra))
        finally:
            Path(handle.name).unlink()
        if status != 0:
            return status
    manifest = {"sdists": sdists, "build_requires": requires}
    Path(options.manifest).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return 0


def run(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True, help="JSON from the host's probe")
    parser.add_argument("--requirement")
    parser.add_argument("--dest")
    parser.add_argument("--sdist-dest", help="where sdists (no wheel for the host) and their build requirements go")
    parser.add_argument("--manifest", help="JSON file listing the sdists, written with --sdist-dest")
    parser.add_argument("--pip", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("extra", nargs="*", help="further pip download arguments, after --")
    options = parser.parse_args(argv)
    try:
        target = read_target(options.target)
    except TargetError as exc:
        print(f"wheelhouse-download: {exc}", file=sys.stderr)
        return 2
    if options.pip:
        # The worker: pip itself, with the host's markers, and sdists allowed if the arguments ask for them.
        use_marker_environment(markers, target["environment"])
        allow_sdists_with_target_tags(cmdoptions)
        return pip_main(options.extra)
    if not options.requirement or not options.dest:
        parser.error("--requirement and --dest are required")
    if bool(options.sdist_dest) != bool(options.manifest):
        parser.error("--sdist-dest and --manifest go together")
    return download(target, options)


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
