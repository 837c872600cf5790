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
import sys
from collections.abc import Sequence
from typing import Any

from pip._internal.cli.main import main as pip_main
from pip._vendor.packaging import markers

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


def pip_download_args(target: dict[str, Any], requirement: str, dest: str, extra: Sequence[str]) -> list[str]:
    """The `pip download` arguments that select the host's wheels, and only wheels."""
    args = [
        "download",
        "--only-binary=:all:",
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


def run(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True, help="JSON from the host's probe")
    parser.add_argument("--requirement", required=True)
    parser.add_argument("--dest", required=True)
    parser.add_argument("extra", nargs="*", help="further pip download arguments, after --")
    options = parser.parse_args(argv)
    try:
        target = read_target(options.target)
    except TargetError as exc:
        print(f"wheelhouse-download: {exc}", file=sys.stderr)
        return 2
    use_marker_environment(markers, target["environment"])
    return pip_main(pip_download_args(target, options.requirement, options.dest, options.extra))


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
