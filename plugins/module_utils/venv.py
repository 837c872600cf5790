# Copyright: pyweb.stack contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pure helpers for the ``pyweb.stack.venv`` module.

Everything here works on plain values, paths and files so it can be unit tested without
``AnsibleModule``: input fingerprinting (the stamp), pip command lines, package-set diffs and
the checks that decide whether an existing virtualenv can be kept.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import typing as t
from dataclasses import dataclass, field

from ansible_collections.pyweb.stack.plugins.module_utils._pip import PipSources, pip_base_argv, pip_install_argv

STAMP_NAME = ".pyweb-venv.json"
STAMP_FORMAT = 1

# Distributions that a fresh venv ships with (or that manage the venv itself); never pruned.
PROTECTED_PACKAGES = frozenset(("pip", "setuptools", "wheel"))

# Runs inside the venv interpreter; prints {distribution name: version} as JSON.
# importlib.metadata is much cheaper than ``pip list`` (no pip import, no index config).
INSTALLED_PACKAGES_SCRIPT = (
    "import importlib.metadata as m, json, sys\n"
    "out = {}\n"
    "for d in m.distributions():\n"
    "    name = d.metadata['Name']\n"
    "    if name and name not in out:\n"
    "        out[name] = d.version\n"
    "sys.stdout.write(json.dumps(out))\n"
)

# Runs with the requested base interpreter. The version format matches the ``version`` line that
# ``python -m venv`` writes into pyvenv.cfg; the executable is what the venv's bin/python will
# resolve to (differs from the given path when that is a wrapper such as a pyenv shim).
INTERPRETER_PROBE_SCRIPT = (
    "import json, os, sys\n"
    "sys.stdout.write(json.dumps({'version': '%d.%d.%d' % sys.version_info[:3],"
    " 'executable': os.path.realpath(sys.executable) if sys.executable else ''}))\n"
)

MINIMUM_PYTHON = (3, 8)  # importlib.metadata

_NESTED_FILE_OPTIONS = ("--requirement", "--constraint", "-r", "-c")
_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


@dataclass(frozen=True)
class PipInputs:
    """Everything that decides what pip installs into the venv."""

    requirements: tuple[str, ...] = ()
    packages: tuple[str, ...] = ()
    constraints: str | None = None
    wheelhouse: str | None = None
    index_url: str | None = None
    extra_index_urls: tuple[str, ...] = ()
    trusted_hosts: tuple[str, ...] = ()
    ca_bundle: str | None = None
    prune: bool = False

    def has_install_targets(self) -> bool:
        return bool(self.requirements or self.packages)


@dataclass(frozen=True)
class Interpreter:
    """The base interpreter a venv is built from.

    ``path`` is what the user gave, ``launcher`` its realpath, ``resolved`` the realpath of the
    running interpreter's ``sys.executable`` (what the venv links to), ``fingerprint`` the on-disk
    identity of launcher and resolved binary when ``version`` was asked.
    """

    path: str
    resolved: str
    version: str
    fingerprint: tuple[int, ...] = field(default=())
    launcher: str = ""


@dataclass
class PackageChanges:
    added: dict[str, str] = field(default_factory=dict)
    removed: dict[str, str] = field(default_factory=dict)
    changed: dict[str, dict[str, str]] = field(default_factory=dict)

    def any(self) -> bool:
        return bool(self.added or self.removed or self.changed)

    def as_dict(self) -> dict[str, t.Any]:
        return {"added": dict(self.added), "removed": dict(self.removed), "changed": dict(self.changed)}


# --------------------------------------------------------------------------- names & versions


def canonical_name(name: str) -> str:
    """PEP 503 normalised project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def canonical_package_set(raw: t.Mapping[str, str]) -> dict[str, str]:
    return {canonical_name(name): version for name, version in sorted(raw.items())}


def version_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for piece in version.split("."):
        digits = re.match(r"\d+", piece)
        if not digits:
            break
        parts.append(int(digits.group(0)))
    return tuple(parts)


def is_supported_python(version: str) -> bool:
    return version_tuple(version)[:2] >= MINIMUM_PYTHON


# --------------------------------------------------------------------------- input files


def nested_file_reference(line: str) -> str | None:
    """Target of a ``-r``/``-c``/``--requirement``/``--constraint`` line, else None."""
    for option in _NESTED_FILE_OPTIONS:
        if not line.startswith(option):
            continue
        rest = line[len(option) :]
        if option.startswith("--") and rest[:1] not in ("", " ", "\t", "="):
            return None
        return rest.lstrip(" \t=").strip() or None
    return None


def nested_file_references(text: str, include_constraints: bool = True) -> list[str]:
    """Local files pulled in by a requirements file (URLs are skipped)."""
    found = []
    for raw_line in text.splitlines():
        line = raw_line.split(" #", 1)[0].strip()
        if not include_constraints and line.startswith(("-c", "--constraint")):
            continue
        target = nested_file_reference(line)
        if target and not _URL.match(target):
            found.append(target)
    return found


def requirement_file_closure(paths: t.Iterable[str], include_constraints: bool = True) -> list[str]:
    """Requirement/constraint files including the ones they pull in with ``-r``/``-c``.

    Relative nested paths are resolved against the including file's directory, like pip does.
    Missing nested files are kept in the result so that the caller can report them.
    """
    ordered: list[str] = []
    pending = list(paths)
    while pending:
        current = pending.pop(0)
        if current in ordered:
            continue
        ordered.append(current)
        if not os.path.isfile(current):
            continue
        base = os.path.dirname(current)
        for ref in nested_file_references(read_text(current), include_constraints):
            pending.append(ref if os.path.isabs(ref) else os.path.normpath(os.path.join(base, ref)))
    return ordered


def read_text(path: str) -> str:
    with open(path, "rb") as handle:
        return handle.read().decode("utf-8", errors="replace")


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(65536), b""):
            digest.update(chunk)
    return digest.hexdigest()


def missing_inputs(inputs: PipInputs) -> list[str]:
    """Human readable problems with input paths; empty when everything needed exists."""
    problems = []
    for path in requirement_file_closure(inputs.requirements):
        if not os.path.isfile(path):
            problems.append(f"requirements file {path} does not exist (or is not a file)")
    if inputs.constraints:
        for path in requirement_file_closure([inputs.constraints]):
            if not os.path.isfile(path):
                problems.append(f"constraints file {path} does not exist (or is not a file)")
    if inputs.wheelhouse and not os.path.isdir(inputs.wheelhouse):
        problems.append(f"wheelhouse directory {inputs.wheelhouse} does not exist (or is not a directory)")
    if inputs.ca_bundle and not os.path.isfile(inputs.ca_bundle):
        problems.append(f"ca_bundle {inputs.ca_bundle} does not exist (or is not a file)")
    return problems


def wheelhouse_listing(directory: str) -> list[list[t.Any]]:
    """Sorted ``[name, size]`` of the files pip's ``--find-links`` would look at (top level only)."""
    listing = []
    with os.scandir(directory) as entries:
        for entry in entries:
            if entry.is_file():
                listing.append([entry.name, entry.stat().st_size])
    return sorted(listing)


# --------------------------------------------------------------------------- stamp


def interpreter_fingerprint(*paths: str) -> tuple[int, ...]:
    """Identity of interpreter files on disk: (device, inode, size, mtime) of each path, flattened.

    Upgrading an interpreter in place (package manager, ``make install``) replaces the file and
    so changes this tuple; while it is unchanged the version recorded in the stamp is still
    valid and we do not need to spawn the interpreter to ask for it. A missing file gives zeros.
    """
    identity: list[int] = []
    for path in paths:
        try:
            info = os.stat(path)
        except OSError:
            identity += [0, 0, 0, 0]
            continue
        identity += [info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns]
    return tuple(identity)


def parse_interpreter_probe(python: str, launcher: str, output: str) -> Interpreter:
    """Interpreter from the JSON INTERPRETER_PROBE_SCRIPT printed."""
    probed = json.loads(output)
    resolved = probed.get("executable") or launcher
    return Interpreter(
        path=python,
        resolved=resolved,
        version=probed["version"],
        fingerprint=interpreter_fingerprint(launcher, resolved),
        launcher=launcher,
    )


def input_document(inputs: PipInputs, interpreter: Interpreter) -> dict[str, t.Any]:
    """Canonical description of every input; its sha256 is the stamp digest."""
    files = [["requirements", path, file_sha256(path)] for path in requirement_file_closure(inputs.requirements)]
    if inputs.constraints:
        files += [["constraints", path, file_sha256(path)] for path in requirement_file_closure([inputs.constraints])]
    return {
        "format": STAMP_FORMAT,
        "interpreter": {"resolved": interpreter.resolved, "version": interpreter.version},
        "files": files,
        "packages": list(inputs.packages),
        "wheelhouse": wheelhouse_listing(inputs.wheelhouse) if inputs.wheelhouse else None,
        "wheelhouse_path": inputs.wheelhouse,
        "index_url": inputs.index_url,
        "extra_index_urls": list(inputs.extra_index_urls),
        "trusted_hosts": list(inputs.trusted_hosts),
        "ca_bundle": [inputs.ca_bundle, file_sha256(inputs.ca_bundle)] if inputs.ca_bundle else None,
        "prune": inputs.prune,
    }


def input_digest(inputs: PipInputs, interpreter: Interpreter) -> str:
    document = json.dumps(input_document(inputs, interpreter), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(document.encode("utf-8")).hexdigest()


def stamp_path(venv: str) -> str:
    return os.path.join(venv, STAMP_NAME)


def load_stamp(venv: str) -> dict[str, t.Any] | None:
    """The stamp written by the last successful run, or None if absent/unreadable."""
    try:
        with open(stamp_path(venv), "rb") as handle:
            data = json.loads(handle.read().decode("utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != STAMP_FORMAT:
        return None
    return data


def build_stamp(digest: str, interpreter: Interpreter, packages: t.Mapping[str, str]) -> dict[str, t.Any]:
    return {
        "format": STAMP_FORMAT,
        "digest": digest,
        "interpreter": {
            "path": interpreter.path,
            "launcher": interpreter.launcher,
            "resolved": interpreter.resolved,
            "version": interpreter.version,
            "fingerprint": list(interpreter.fingerprint),
        },
        "packages": dict(sorted(packages.items())),
    }


def write_stamp(venv: str, stamp: t.Mapping[str, t.Any]) -> None:
    """Write the stamp atomically (temp file + rename) so a crash never leaves half a stamp."""
    # os.open(O_EXCL) instead of tempfile: importing tempfile costs more than the whole no-op path.
    tmp = stamp_path(venv) + f".{os.getpid()}.tmp"
    try:
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644), "w") as out:
            json.dump(stamp, out, indent=1, sort_keys=True)
        os.replace(tmp, stamp_path(venv))
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def remove_stamp(venv: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(stamp_path(venv))


def recorded_interpreter(stamp: t.Mapping[str, t.Any] | None, python: str, launcher: str) -> Interpreter | None:
    """The interpreter as the stamp describes it, if its files are unchanged on disk; else None (ask it)."""
    recorded = (stamp or {}).get("interpreter") or {}
    if recorded.get("launcher") != launcher or not recorded.get("resolved") or not recorded.get("version"):
        return None
    fingerprint = interpreter_fingerprint(launcher, recorded["resolved"])
    if tuple(recorded.get("fingerprint") or ()) != fingerprint:
        return None
    return Interpreter(
        path=python,
        resolved=recorded["resolved"],
        version=recorded["version"],
        fingerprint=fingerprint,
        launcher=launcher,
    )


# --------------------------------------------------------------------------- venv layout


def venv_python(venv: str) -> str:
    return os.path.join(venv, "bin", "python")


def read_pyvenv_cfg(venv: str) -> dict[str, str] | None:
    try:
        text = read_text(os.path.join(venv, "pyvenv.cfg"))
    except OSError:
        return None
    values = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip().lower()] = value.strip()
    return values


def venv_base_interpreter(venv: str, cfg: t.Mapping[str, str]) -> str | None:
    """Resolved path of the interpreter the venv runs, from symlinks/pyvenv.cfg (no process spawned)."""
    link = venv_python(venv)
    if os.path.islink(link):
        return os.path.realpath(link)
    if cfg.get("executable"):
        return os.path.realpath(cfg["executable"])
    return None


def venv_replacement_reasons(venv: str, cfg: t.Mapping[str, str] | None, interpreter: Interpreter) -> list[str]:
    """Why an existing venv cannot be reused for ``interpreter`` (empty list: reuse it).

    Cheap by design: pyvenv.cfg is written by ``python -m venv`` from the creating interpreter's
    ``sys.version_info`` and the venv's bin/python is a symlink to (or a copy of) that
    interpreter. So "pyvenv.cfg version == expected version", "bin/python resolves to the
    expected binary" and "that binary is unchanged since we asked it for its version" (the
    fingerprint check done by the caller) together imply the venv python runs the expected
    version, without spawning it.
    """
    if cfg is None:
        return [f"{venv} has no pyvenv.cfg"]
    reasons = []
    if cfg.get("version") != interpreter.version:
        reasons.append(f"venv was built with Python {cfg.get('version') or '?'}, wanted {interpreter.version}")
    if not os.path.exists(venv_python(venv)):
        reasons.append(f"{venv_python(venv)} is missing or its interpreter is gone")
    base = venv_base_interpreter(venv, cfg)
    if base is not None and base != interpreter.resolved:
        reasons.append(f"venv runs {base}, wanted {interpreter.resolved}")
    return reasons


def stamp_matches(stamp: t.Mapping[str, t.Any] | None, digest: str) -> bool:
    return bool(stamp) and stamp.get("digest") == digest and isinstance(stamp.get("packages"), dict)


def directory_is_empty(path: str) -> bool:
    with os.scandir(path) as entries:
        return next(entries, None) is None


def remove_tree(path: str) -> None:
    if os.path.islink(path) or os.path.isfile(path):
        os.unlink(path)
    elif os.path.isdir(path):
        shutil.rmtree(path)


# --------------------------------------------------------------------------- pip command lines


def pip_install_command(python: str, inputs: PipInputs, install_options: t.Sequence[str] = ()) -> list[str]:
    """The one pip install command line (module_utils/_pip.py), the push runner of pyweb.stack.git_deploy's too."""
    sources = PipSources(
        inputs.wheelhouse, inputs.index_url, inputs.extra_index_urls, inputs.trusted_hosts, inputs.ca_bundle
    )
    return pip_install_argv(
        python,
        sources,
        requirements=inputs.requirements,
        packages=inputs.packages,
        constraints=inputs.constraints,
        install_options=install_options,
    )


def pip_dry_run_command(python: str, inputs: PipInputs, full_resolution: bool = False) -> list[str]:
    """Read-only ``pip install --dry-run --report -`` (pip >= 22.2).

    With ``full_resolution`` pip ignores what is installed and reports the complete set the
    inputs resolve to (used to decide what ``prune`` removes); otherwise it reports only what
    an install would add or change.
    """
    extra = ["--dry-run", "--quiet", "--report", "-"]
    if full_resolution:
        extra.append("--ignore-installed")
    return pip_install_command(python, inputs, extra)


def pip_uninstall_command(python: str, names: t.Iterable[str]) -> list[str]:
    return [*pip_base_argv(python), "uninstall", "--yes", *sorted(names)]


def pip_supports_report(pip_version: str | None) -> bool:
    return pip_version is not None and version_tuple(pip_version)[:2] >= (22, 2)


def parse_pip_report(text: str) -> dict[str, str]:
    """{canonical name: version} of the ``install`` entries of a pip installation report."""
    report = json.loads(text)
    found = {}
    for item in report.get("install") or []:
        metadata = item.get("metadata") or {}
        if metadata.get("name") and metadata.get("version"):
            found[canonical_name(metadata["name"])] = metadata["version"]
    return dict(sorted(found.items()))


def requirement_lines(inputs: PipInputs) -> list[str]:
    """What was asked for, as written (used when resolution is unknown, e.g. check mode, no venv)."""
    lines = []
    for path in requirement_file_closure(inputs.requirements, include_constraints=False):
        for raw in read_text(path).splitlines():
            line = raw.split(" #", 1)[0].strip()
            if line and not line.startswith("#") and not line.startswith("-"):
                lines.append(line)
    return lines + list(inputs.packages)


# --------------------------------------------------------------------------- package sets


def diff_package_sets(before: t.Mapping[str, str], after: t.Mapping[str, str]) -> PackageChanges:
    changes = PackageChanges()
    for name in sorted(set(before) | set(after)):
        if name not in before:
            changes.added[name] = after[name]
        elif name not in after:
            changes.removed[name] = before[name]
        elif before[name] != after[name]:
            changes.changed[name] = {"before": before[name], "after": after[name]}
    return changes


def predicted_package_set(installed: t.Mapping[str, str], would_install: t.Mapping[str, str]) -> dict[str, str]:
    predicted = dict(installed)
    predicted.update(would_install)
    return dict(sorted(predicted.items()))


def packages_to_prune(installed: t.Mapping[str, str], resolved: t.Iterable[str]) -> list[str]:
    """Installed distributions the inputs do not resolve to (protected tooling excluded)."""
    wanted = {canonical_name(name) for name in resolved}
    return sorted(name for name in installed if name not in wanted and name not in PROTECTED_PACKAGES)


def render_listing(packages: t.Mapping[str, str]) -> str:
    return "".join(f"{name}=={version}\n" for name, version in sorted(packages.items()))


def output_tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])
