#!/usr/bin/python
# Copyright: pyweb.stack contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: venv
short_description: Create a Python virtualenv and keep its packages in sync with requirement inputs
version_added: 0.1.0
author: pyweb.stack maintainers (@pyweb)
description:
  - Creates a virtualenv with C(python -m venv) at O(path) and installs packages into it with the venv's own pip,
    from requirement files, a package list, an optional constraints file and an optional local wheelhouse.
  - The venv is recreated when the interpreter changes (a different resolved binary or a different version).
  - A stamp file C(<path>/.pyweb-venv.json) records a sha256 of every input (file contents, package list,
    wheelhouse listing, index options, interpreter path and version) and the resulting package set.
    When the stamp matches, the module only reads files; it does not start pip or the venv's Python.
  - pip never uninstalls on its own. Packages dropped from the inputs stay installed unless O(prune=true),
    and are in any case gone after a recreate.
  - Nested C(-r)/C(-c) files referenced from requirement files are part of the stamp. Local directories or
    archives named inside requirement files are not; change a requirement line or the file to force a run.
options:
  path:
    description:
      - Directory of the virtualenv.
      - An existing non-empty directory that is not a virtualenv (no C(pyvenv.cfg)) is never replaced or removed.
    type: path
    required: true
  state:
    description:
      - V(present) creates or updates the venv, V(absent) removes it.
    type: str
    choices: [present, absent]
    default: present
  python:
    description:
      - Interpreter the venv is built from, as a path or as a command name looked up in E(PATH).
      - Defaults to the first C(python3) in E(PATH) on the target.
      - Must be Python 3.8 or later and have the C(venv) module (Debian and Ubuntu package it as C(python3-venv)).
    type: str
  requirements:
    description:
      - Requirement files on the target, passed to pip as C(--requirement).
    type: list
    elements: path
    default: []
  packages:
    description:
      - Requirement specifiers installed in addition to O(requirements), for example V(gunicorn==23.0.0).
      - Add V(pip>=23) here to upgrade the venv's pip in the same run.
    type: list
    elements: str
    default: []
  constraints:
    description:
      - Constraints file on the target, passed to pip as C(--constraint).
    type: path
  wheelhouse:
    description:
      - Directory of wheels and sdists on the target. Installs run fully offline from it
        (C(--no-index --find-links <wheelhouse>)).
    type: path
  index_url:
    description:
      - Base URL of the package index (pip C(--index-url)).
    type: str
  extra_index_urls:
    description:
      - Additional package indexes (pip C(--extra-index-url)).
    type: list
    elements: str
    default: []
  trusted_hosts:
    description:
      - Hosts pip trusts without valid HTTPS (pip C(--trusted-host)).
    type: list
    elements: str
    default: []
  ca_bundle:
    description:
      - CA bundle file on the target used to verify the index's TLS certificate (pip C(--cert)).
    type: path
  prune:
    description:
      - Uninstall distributions the inputs do not resolve to, so the venv holds exactly what was asked for.
      - The resolution comes from C(pip install --dry-run --ignore-installed --report), which needs pip 22.2 or later in
        the venv. C(pip), C(setuptools) and C(wheel) are never removed.
    type: bool
    default: false
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details:
      - Nothing on disk changes. When the venv exists and its pip is 22.2 or later, the would-be installs come from
        C(pip install --dry-run --report), which resolves against the configured indexes but does not install.
        Otherwise the result lists the requested requirement lines, as exact versions are unknown until pip runs.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: full
    details:
      - Shows the installed package set (C(name==version) per line) before and after.
  platform:
    description: Target OS/families that can be operated against.
    support: full
    platforms: posix
notes:
  - Use O(path) with C(become_user) to own the venv as another user.
  - The no-op check trusts C(pyvenv.cfg) and the stamp; a venv modified by hand (C(pip install) inside it) is not
    noticed until an input changes. Delete the stamp file to force a pip run.
seealso:
  - module: ansible.builtin.pip
"""

EXAMPLES = r"""
- name: App venv from requirements, fully offline from a wheelhouse shipped with the release
  pyweb.stack.venv:
    path: /srv/app/venv
    python: /usr/bin/python3.12
    requirements:
      - /srv/app/current/requirements.txt
    constraints: /srv/app/current/constraints.txt
    wheelhouse: /srv/app/current/wheels
  become: true
  become_user: app

- name: Tools venv from an internal index behind a private CA, exact package set
  pyweb.stack.venv:
    path: /opt/tools/venv
    packages:
      - gunicorn==23.0.0
      - "uvicorn[standard]>=0.30"
    index_url: https://pypi.internal.example.com/simple
    ca_bundle: /etc/ssl/certs/internal-ca.pem
    prune: true
  register: tools_venv

- name: Show what the venv holds
  ansible.builtin.debug:
    msg: "{{ tools_venv.python_version }}: {{ tools_venv.packages | dict2items | length }} packages"

- name: Remove an old venv
  pyweb.stack.venv:
    path: /srv/legacy/venv
    state: absent
"""

RETURN = r"""
path:
  description: Directory of the venv.
  returned: always
  type: str
  sample: /srv/app/venv
python:
  description: The venv's interpreter.
  returned: always
  type: str
  sample: /srv/app/venv/bin/python
python_version:
  description: Python version of the venv (of the base interpreter when O(state=absent)).
  returned: when O(state=present)
  type: str
  sample: 3.12.1
packages:
  description:
    - Installed distributions, PEP 503 normalised name to version.
    - Predicted set in check mode when the venv exists; empty in check mode when the venv would be (re)created.
  returned: when O(state=present)
  type: dict
  sample: {"gunicorn": "23.0.0", "packaging": "24.1", "pip": "23.2.1"}
package_changes:
  description: Distributions added, removed and changed by this run (predicted in check mode).
  returned: when O(state=present)
  type: dict
  contains:
    added:
      description: Name to version of new distributions.
      type: dict
      returned: always
      sample: {"gunicorn": "23.0.0"}
    removed:
      description: Name to version of distributions no longer installed.
      type: dict
      returned: always
      sample: {}
    changed:
      description: Name to C(before)/C(after) versions.
      type: dict
      returned: always
      sample: {"packaging": {"before": "23.2", "after": "24.1"}}
created:
  description: Whether the venv was created (or would be, in check mode) where none existed.
  returned: always
  type: bool
  sample: false
recreated:
  description: Whether an existing venv was replaced (or would be) because its interpreter changed.
  returned: always
  type: bool
  sample: false
stamp_matched:
  description: Whether the stamp matched the inputs, so nothing but file reads happened.
  returned: always
  type: bool
  sample: true
pip_ran:
  description: Whether pip was started in any form (install, uninstall, dry-run report).
  returned: always
  type: bool
  sample: false
reasons:
  description: Why the venv was created, recreated or updated; empty for a no-op.
  returned: always
  type: list
  elements: str
  sample: ["venv was built with Python 3.11.7, wanted 3.12.1"]
requested:
  description:
    - Requirement lines from O(requirements) and O(packages).
    - Returned in check mode when the exact resolution is unknown.
  returned: in check mode, when pip could not be asked
  type: list
  elements: str
  sample: ["gunicorn==23.0.0", "uvicorn[standard]>=0.30"]
stamp:
  description: Path of the stamp file.
  returned: always
  type: str
  sample: /srv/app/venv/.pyweb-venv.json
"""

# Ansible requires module imports below the documentation strings, hence E402.
import json  # noqa: E402
import os  # noqa: E402
import typing as t  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.pyweb.stack.plugins.module_utils.venv import (  # noqa: E402
    INSTALLED_PACKAGES_SCRIPT,
    INTERPRETER_PROBE_SCRIPT,
    Interpreter,
    PackageChanges,
    PipInputs,
    build_stamp,
    canonical_package_set,
    diff_package_sets,
    directory_is_empty,
    input_digest,
    is_supported_python,
    load_stamp,
    missing_inputs,
    output_tail,
    packages_to_prune,
    parse_interpreter_probe,
    parse_pip_report,
    pip_dry_run_command,
    pip_install_command,
    pip_supports_report,
    pip_uninstall_command,
    predicted_package_set,
    read_pyvenv_cfg,
    recorded_interpreter,
    remove_stamp,
    remove_tree,
    render_listing,
    requirement_lines,
    stamp_matches,
    stamp_path,
    venv_python,
    venv_replacement_reasons,
    write_stamp,
)

ARGUMENT_SPEC: dict[str, t.Any] = {
    "path": {"type": "path", "required": True},
    "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
    "python": {"type": "str"},
    "requirements": {"type": "list", "elements": "path", "default": []},
    "packages": {"type": "list", "elements": "str", "default": []},
    "constraints": {"type": "path"},
    "wheelhouse": {"type": "path"},
    "index_url": {"type": "str"},
    "extra_index_urls": {"type": "list", "elements": "str", "default": []},
    "trusted_hosts": {"type": "list", "elements": "str", "default": []},
    "ca_bundle": {"type": "path"},
    "prune": {"type": "bool", "default": False},
}


class DryRunFailed(Exception):
    """pip could not resolve the inputs read-only (network, unsatisfiable requirement...)."""


class VenvRun:
    """One invocation of the module for O(state=present)."""

    def __init__(self, module: AnsibleModule) -> None:
        self.module = module
        self.path: str = module.params["path"]
        self.inputs = inputs_from_params(module.params)
        self.pip_ran = False
        self.result: dict[str, t.Any] = {
            "changed": False,
            "path": self.path,
            "python": venv_python(self.path),
            "stamp": stamp_path(self.path),
            "created": False,
            "recreated": False,
            "stamp_matched": False,
            "pip_ran": False,
            "reasons": [],
            "packages": {},
            "package_changes": PackageChanges().as_dict(),
        }

    # ------------------------------------------------------------------ process helpers

    def fail(self, msg: str, **extra: t.Any) -> t.NoReturn:
        self.module.fail_json(msg=msg, **self.result_with(pip_ran=self.pip_ran), **extra)

    def result_with(self, **updates: t.Any) -> dict[str, t.Any]:
        merged = dict(self.result)
        merged.update(updates)
        merged.pop("changed", None)
        return merged

    def run(self, command: list[str], what: str) -> str:
        """Run an argument list; fail with the command and output tail when it fails."""
        rc, out, err = self.module.run_command(command, check_rc=False)
        if rc != 0:
            self.fail(
                f"{what} failed (rc={rc}): {output_tail(err or out)}",
                cmd=command,
                rc=rc,
                stdout=output_tail(out, 50),
                stderr=output_tail(err, 50),
            )
        return out

    def run_pip(self, command: list[str], what: str) -> str:
        self.pip_ran = True
        return self.run(command, what)

    def installed_packages(self) -> dict[str, str]:
        out = self.run([venv_python(self.path), "-I", "-c", INSTALLED_PACKAGES_SCRIPT], "listing installed packages")
        return canonical_package_set(json.loads(out))

    def installed_packages_or_empty(self) -> dict[str, str]:
        """Package set of a venv that is about to be replaced; it may no longer run at all."""
        rc, out, _err = self.module.run_command(
            [venv_python(self.path), "-I", "-c", INSTALLED_PACKAGES_SCRIPT], check_rc=False
        )
        if rc != 0:
            return {}
        try:
            return canonical_package_set(json.loads(out))
        except ValueError:
            return {}

    # ------------------------------------------------------------------ decisions

    def locate_interpreter(self) -> str:
        wanted = self.module.params["python"] or "python3"
        if "/" not in wanted:
            found = self.module.get_bin_path(wanted)
            if not found:
                self.fail(f"interpreter {wanted!r} not found in PATH on the target; install it or set python to a path")
            return found
        if not (os.path.isfile(wanted) and os.access(wanted, os.X_OK)):
            self.fail(f"interpreter {wanted} does not exist or is not executable; install it or fix the python option")
        return wanted

    def describe_interpreter(self, python: str, stamp: dict[str, t.Any] | None) -> Interpreter:
        """Resolved binary and version; taken from the stamp while the interpreter files are unchanged."""
        launcher = os.path.realpath(python)
        interpreter = recorded_interpreter(stamp, python, launcher)
        if interpreter is None:
            out = self.run([python, "-c", INTERPRETER_PROBE_SCRIPT], f"asking {python} for its version")
            try:
                interpreter = parse_interpreter_probe(python, launcher, out)
            except (ValueError, KeyError):
                self.fail(f"{python} did not answer like a Python interpreter: {output_tail(out, 5)}")
        if not is_supported_python(interpreter.version):
            self.fail(f"{python} is Python {interpreter.version}; the venv module needs Python 3.8 or later")
        return interpreter

    def existing_venv_config(self) -> dict[str, str] | None:
        """pyvenv.cfg of the venv at path; None when there is nothing there (or an empty directory)."""
        if not os.path.lexists(self.path):
            return None
        if not os.path.isdir(self.path):
            self.fail(f"{self.path} exists and is not a directory; remove it or choose another path")
        cfg = read_pyvenv_cfg(self.path)
        if cfg is None and not directory_is_empty(self.path):
            self.fail(
                f"{self.path} is a non-empty directory without pyvenv.cfg, so not a virtualenv; "
                "refusing to replace it. Remove it or choose another path"
            )
        return cfg

    # ------------------------------------------------------------------ main flow

    def ensure_present(self) -> dict[str, t.Any]:
        problems = missing_inputs(self.inputs)
        if problems:
            self.fail("; ".join(problems) + ". Nothing was changed; fix the path or create it before this task.")
        python = self.locate_interpreter()
        cfg = self.existing_venv_config()
        stamp = load_stamp(self.path) if cfg is not None else None
        interpreter = self.describe_interpreter(python, stamp)
        digest = input_digest(self.inputs, interpreter)
        self.result["python_version"] = interpreter.version

        replace_reasons = venv_replacement_reasons(self.path, cfg, interpreter) if cfg is not None else []
        if cfg is not None and not replace_reasons and stamp_matches(stamp, digest):
            self.result.update(stamp_matched=True, packages=stamp["packages"])
            return self.finish()

        self.result["created"] = cfg is None
        self.result["recreated"] = bool(replace_reasons)
        if cfg is None:
            self.result["reasons"] = [f"no virtualenv at {self.path}"]
        elif replace_reasons:
            self.result["reasons"] = replace_reasons
        else:
            self.result["reasons"] = ["inputs changed since the last run" if stamp else "no stamp from a previous run"]

        if self.module.check_mode:
            return self.predict(interpreter, reuse=cfg is not None and not replace_reasons)
        return self.apply(interpreter, digest, reuse=cfg is not None and not replace_reasons)

    def apply(self, interpreter: Interpreter, digest: str, reuse: bool) -> dict[str, t.Any]:
        if reuse:
            remove_stamp(self.path)  # a failed pip run below must not leave a stamp that matches old inputs
            before = self.installed_packages()
        else:
            before = self.installed_packages_or_empty() if self.result["recreated"] else {}
            self.create_venv(interpreter)

        if self.inputs.has_install_targets():
            self.run_pip(pip_install_command(venv_python(self.path), self.inputs), "pip install")
        after = self.installed_packages()
        if self.inputs.prune:
            after = self.prune(after)

        write_stamp(self.path, build_stamp(digest, interpreter, after))
        changes = diff_package_sets(before, after)
        self.result.update(
            changed=not reuse or changes.any(), packages=after, package_changes=changes.as_dict(), pip_ran=self.pip_ran
        )
        self.add_diff(before, after)
        return self.finish()

    def create_venv(self, interpreter: Interpreter) -> None:
        if self.result["recreated"]:
            remove_tree(self.path)
        command = [interpreter.path, "-m", "venv", self.path]
        rc, out, err = self.module.run_command(command, check_rc=False)
        if rc != 0:
            remove_tree(self.path)  # never leave a half-created venv behind
            self.fail(
                f"creating the venv failed (rc={rc}): {output_tail(err or out)}. "
                "On Debian/Ubuntu the venv module is packaged separately (python3-venv / python3.X-venv).",
                cmd=command,
                rc=rc,
            )

    def prune(self, installed: dict[str, str]) -> dict[str, str]:
        extras = packages_to_prune(installed, self.resolved_set())
        if not extras:
            return installed
        self.run_pip(pip_uninstall_command(venv_python(self.path), extras), "pip uninstall")
        return self.installed_packages()

    def resolved_set(self) -> dict[str, str]:
        """Every distribution the inputs resolve to, ignoring what is installed."""
        if not self.inputs.has_install_targets():
            return {}
        command = pip_dry_run_command(venv_python(self.path), self.inputs, full_resolution=True)
        return parse_pip_report(self.run_pip(command, "resolving the inputs for prune (pip install --dry-run)"))

    def predict(self, interpreter: Interpreter, reuse: bool) -> dict[str, t.Any]:
        """Check mode: never write; say what would happen, as precisely as read-only pip allows."""
        self.result["changed"] = True
        if reuse:
            installed = self.installed_packages()
            if pip_supports_report(installed.get("pip")):
                return self.predict_with_pip_report(installed)
            self.module.warn("pip in the venv is older than 22.2 (no --dry-run --report); listing requested lines only")
            self.add_diff(installed, None)
            return self.finish()
        before = self.installed_packages_or_empty() if self.result["recreated"] else {}
        self.add_diff(before, None, header=f"new venv with Python {interpreter.version}")
        return self.finish()

    def predict_with_pip_report(self, installed: dict[str, str]) -> dict[str, t.Any]:
        try:
            would_install = self.dry_run_report(full_resolution=False)
            resolved = self.dry_run_report(full_resolution=True) if self.inputs.prune else {}
        except DryRunFailed as exc:
            self.module.warn(f"pip install --dry-run failed, so the prediction lists requested lines only: {exc}")
            self.add_diff(installed, None)
            return self.finish()
        predicted = predicted_package_set(installed, would_install)
        if self.inputs.prune:
            for name in packages_to_prune(predicted, resolved):
                predicted.pop(name)
        changes = diff_package_sets(installed, predicted)
        self.result.update(
            changed=changes.any(), packages=predicted, package_changes=changes.as_dict(), pip_ran=self.pip_ran
        )
        self.add_diff(installed, predicted)
        return self.finish()

    def dry_run_report(self, full_resolution: bool) -> dict[str, str]:
        """Read-only pip resolution (check mode); raises DryRunFailed instead of failing the task."""
        if not self.inputs.has_install_targets():
            return {}
        self.pip_ran = True
        command = pip_dry_run_command(venv_python(self.path), self.inputs, full_resolution=full_resolution)
        rc, out, err = self.module.run_command(command, check_rc=False)
        if rc != 0:
            raise DryRunFailed(output_tail(err or out, 5))
        try:
            return parse_pip_report(out)
        except ValueError as exc:
            raise DryRunFailed(f"unreadable pip report: {exc}") from exc

    def add_diff(self, before: dict[str, str], after: dict[str, str] | None, header: str | None = None) -> None:
        """Diff of package listings; with after=None the requested lines stand in for the unknown resolution."""
        if after is None:
            self.result["requested"] = requirement_lines(self.inputs)
        if not self.module._diff:
            return
        if after is None:
            after_text = "# exact versions are resolved by pip at install time; requested:\n" + "".join(
                line + "\n" for line in self.result["requested"]
            )
        else:
            after_text = render_listing(after)
        self.result["diff"] = {
            "before": render_listing(before),
            "after": after_text,
            "before_header": f"{self.path} (installed)",
            "after_header": f"{self.path} ({header or 'after'})",
        }

    def finish(self) -> dict[str, t.Any]:
        self.result["pip_ran"] = self.pip_ran
        return self.result


def inputs_from_params(params: t.Mapping[str, t.Any]) -> PipInputs:
    return PipInputs(
        requirements=tuple(params["requirements"]),
        packages=tuple(params["packages"]),
        constraints=params["constraints"],
        wheelhouse=params["wheelhouse"],
        index_url=params["index_url"],
        extra_index_urls=tuple(params["extra_index_urls"]),
        trusted_hosts=tuple(params["trusted_hosts"]),
        ca_bundle=params["ca_bundle"],
        prune=params["prune"],
    )


def ensure_absent(module: AnsibleModule) -> dict[str, t.Any]:
    path = module.params["path"]
    result: dict[str, t.Any] = {
        "changed": False,
        "path": path,
        "python": venv_python(path),
        "stamp": stamp_path(path),
        "created": False,
        "recreated": False,
        "stamp_matched": False,
        "pip_ran": False,
        "reasons": [],
    }
    if not os.path.lexists(path):
        return result
    if not os.path.isdir(path) or (read_pyvenv_cfg(path) is None and not directory_is_empty(path)):
        module.fail_json(msg=f"{path} is not a virtualenv (no pyvenv.cfg); refusing to remove it", **result)
    stamp = load_stamp(path) or {}
    result.update(changed=True, reasons=[f"removing {path}"])
    if module._diff:
        result["diff"] = {
            "before": render_listing(stamp.get("packages") or {}),
            "after": "",
            "before_header": f"{path} (installed)",
            "after_header": f"{path} (absent)",
        }
    if not module.check_mode:
        remove_tree(path)
    return result


def main() -> None:
    module = AnsibleModule(
        argument_spec=ARGUMENT_SPEC,
        supports_check_mode=True,
        mutually_exclusive=[("wheelhouse", "index_url"), ("wheelhouse", "extra_index_urls")],
    )
    if module.params["state"] == "absent":
        module.exit_json(**ensure_absent(module))
    module.exit_json(**VenvRun(module).ensure_present())


if __name__ == "__main__":
    main()
