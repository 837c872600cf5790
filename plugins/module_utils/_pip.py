# Copyright: pyweb.stack contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The pip command line that installs an app's requirements into a venv, built once for the pyweb.stack.venv module
and the push runner of pyweb.stack.git_deploy, and the choice of the wheelhouse pyweb.stack.app shipped to a host
for an interpreter, so a push installs from the same wheels an Ansible rollout would.

Standard library only, no ansible.module_utils: the same file runs inside a module and on the host as plain Python.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

# Printed by the interpreter a venv is built from: what names its wheelhouse directory (with the version), the same
# abi and machine pyweb.stack.app's wheelhouse probe (roles/app/vars/main.yml) puts into the directory name.
INTERPRETER_TAGS_SCRIPT = (
    "import json, platform, sys, sysconfig\n"
    "print(json.dumps({'version': '%d.%d.%d' % sys.version_info[:3],"
    " 'abi': 'cp%d%d' % sys.version_info[:2] + ('t' if sysconfig.get_config_var('Py_GIL_DISABLED') else ''),"
    " 'machine': platform.machine()}))\n"
)


def pip_base_argv(python: str) -> list[str]:
    return [python, "-m", "pip", "--disable-pip-version-check", "--no-input"]


@dataclass(frozen=True)
class PipSources:
    """Where pip finds packages: a wheelhouse directory (fully offline), else the indexes."""

    wheelhouse: str | None = None
    index_url: str | None = None
    extra_index_urls: Sequence[str] = ()
    trusted_hosts: Sequence[str] = ()
    ca_bundle: str | None = None


def pip_source_options(sources: PipSources) -> list[str]:
    """Fully offline from a wheelhouse (no index is consulted, so none is named), else the configured indexes."""
    options: list[str] = []
    if sources.wheelhouse:
        options += ["--no-index", "--find-links", sources.wheelhouse]
    else:
        options += ["--index-url", sources.index_url] if sources.index_url else []
        for url in sources.extra_index_urls:
            options += ["--extra-index-url", url]
    for host in sources.trusted_hosts:
        options += ["--trusted-host", host]
    return [*options, "--cert", sources.ca_bundle] if sources.ca_bundle else options


def pip_install_argv(
    python: str,
    sources: PipSources,
    *,
    requirements: Sequence[str] = (),
    packages: Sequence[str] = (),
    constraints: str | None = None,
    install_options: Sequence[str] = (),
) -> list[str]:
    """`<python> -m pip install ...`: options, sources, the constraints file, requirement files, then packages."""
    argv = [*pip_base_argv(python), "install", *install_options, *pip_source_options(sources)]
    argv += ["--constraint", constraints] if constraints else []
    for path in requirements:
        argv += ["--requirement", path]
    return [*argv, *packages]


def wheelhouse_key_prefix(version: str, abi: str, machine: str) -> str:
    """pyweb.stack.app names a host's wheelhouse `<X.Y.Z>-<abi>-<machine>-<hash of the interpreter's target>`."""
    return f"{version}-{abi}-{machine}-"


def _newest_wheel(directory: Path) -> float | None:
    times = [entry.stat().st_mtime for entry in directory.iterdir() if entry.suffix == ".whl" and entry.is_file()]
    return max(times) if times else None


def wheelhouse_dir(base: str | os.PathLike[str], version: str, abi: str, machine: str) -> Path | None:
    """The wheelhouse pyweb.stack.app shipped to <base>/wheelhouse for this interpreter: a directory named for its
    version, abi and machine that holds wheels; of several (a target that changed leaves the old one behind) the
    one shipped last. Directories of other interpreters and the old `<X.Y.Z>` naming never count."""
    root = Path(base) / "wheelhouse"
    if not root.is_dir():
        return None
    prefix = wheelhouse_key_prefix(version, abi, machine)
    shipped = []
    for directory in root.iterdir():
        if directory.name.startswith(prefix) and directory.is_dir() and not directory.is_symlink():
            newest = _newest_wheel(directory)
            if newest is not None:
                shipped.append((newest, directory.name, directory))
    return max(shipped)[2] if shipped else None
