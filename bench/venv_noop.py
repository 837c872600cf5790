# Copyright: pyweb.stack contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""No-op cost of pyweb.stack.venv against ansible.builtin.pip, measured in one run.

Builds a small offline wheelhouse, creates one venv with pyweb.stack.venv, then, on the already
satisfied venv, times N interleaved rounds of:

- ``ansible localhost -m MODULE`` for both modules, and ``ansible.builtin.ping`` as ansible's own cost;
- the module payload alone: the AnsiballZ file Ansible ran on the target (kept with
  ANSIBLE_KEEP_REMOTE_FILES), executed again with the same interpreter, as Ansible executes it.

Prints medians and the pip/venv ratios. Every timed run must report changed=false. Needs no network.

    python bench/venv_noop.py [--python /usr/bin/python3] [-n 5]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WHEELS_HELPER = os.path.join(REPO, "tests", "unit", "plugins", "modules", "fixtures", "venv", "wheels.py")
REQUIREMENTS = "pyweb-alpha==1.1\npyweb-gamma\npyweb-delta\n"


def load_wheels_helper():
    spec = importlib.util.spec_from_file_location("pyweb_bench_wheels", WHEELS_HELPER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def find_ansible() -> str:
    found = shutil.which("ansible", path=os.path.dirname(sys.executable)) or shutil.which("ansible")
    if not found:
        sys.exit("venv_noop: no 'ansible' next to this Python or in PATH; run it with the project's .venv")
    return found


def collections_dir(workdir: str) -> str:
    """A private collections path whose pyweb/stack points at this checkout."""
    root = os.path.join(workdir, "collections")
    link = os.path.join(root, "ansible_collections", "pyweb", "stack")
    os.makedirs(os.path.dirname(link))
    os.symlink(REPO, link)
    return root


class Runner:
    def __init__(self, ansible: str, workdir: str) -> None:
        self.ansible = ansible
        self.workdir = workdir
        self.env = {key: value for key, value in os.environ.items() if not key.startswith("ANSIBLE_")}
        self.env.update(
            ANSIBLE_COLLECTIONS_PATH=collections_dir(workdir),
            ANSIBLE_LOCAL_TEMP=os.path.join(workdir, "ansible-tmp"),
            ANSIBLE_HOST_KEY_CHECKING="False",
            ANSIBLE_NOCOLOR="1",
        )

    def run(self, module: str, args: dict | None = None, keep_payload_in: str | None = None) -> tuple[float, dict]:
        """Seconds for one ad-hoc run and the module result; optionally keep the AnsiballZ payload."""
        command = [self.ansible, "localhost", "-i", "localhost,", "-c", "local", "-m", module]
        command += ["-e", f"ansible_python_interpreter={sys.executable}"]
        if args is not None:
            command += ["-a", json.dumps(args)]
        env = dict(self.env, ANSIBLE_REMOTE_TEMP=keep_payload_in or os.path.join(self.workdir, "remote-tmp"))
        if keep_payload_in:
            env["ANSIBLE_KEEP_REMOTE_FILES"] = "1"
        start = time.perf_counter()
        proc = subprocess.run(command, cwd=self.workdir, env=env, capture_output=True, text=True, check=False)
        elapsed = time.perf_counter() - start
        if proc.returncode != 0 or "=>" not in proc.stdout:
            sys.exit(f"venv_noop: {' '.join(command)} failed (rc={proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return elapsed, json.loads(proc.stdout.split("=>", 1)[1])

    def payload(self, module: str, args: dict | None) -> list[str]:
        """Command that runs the module on the target exactly as Ansible did (same AnsiballZ file, same args)."""
        keep = os.path.join(self.workdir, "payload-" + module.replace(".", "-"))
        self.run(module, args, keep_payload_in=keep)
        found = [os.path.join(d, f) for d, _dirs, files in os.walk(keep) for f in files if f.startswith("AnsiballZ_")]
        if len(found) != 1:
            sys.exit(f"venv_noop: expected one AnsiballZ payload under {keep}, found {found}")
        return [sys.executable, found[0]]

    def run_payload(self, command: list[str]) -> tuple[float, dict]:
        start = time.perf_counter()
        proc = subprocess.run(command, cwd=self.workdir, env=self.env, capture_output=True, text=True, check=False)
        elapsed = time.perf_counter() - start
        if proc.returncode != 0:
            sys.exit(f"venv_noop: {command} failed (rc={proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return elapsed, json.loads(proc.stdout)


def expect_noop(name: str, result: dict) -> None:
    if result.get("changed"):
        sys.exit(f"venv_noop: {name} reported changed on a satisfied venv; the comparison would be meaningless")
    if name == "pyweb.stack.venv" and (result.get("pip_ran") or not result.get("stamp_matched")):
        sys.exit(f"venv_noop: pyweb.stack.venv did not take the stamp path: {result}")


def report(title: str, timings: dict[str, list[float]]) -> None:
    medians = {name: statistics.median(values) for name, values in timings.items()}
    print(title)
    for name, value in medians.items():
        print(f"  {name:<20} {value * 1000:8.1f} ms")
    ratio = medians["ansible.builtin.pip"] / medians["pyweb.stack.venv"]
    print(f"  ratio ansible.builtin.pip / pyweb.stack.venv: {ratio:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--python", default=shutil.which("python3") or sys.executable, help="venv base interpreter")
    parser.add_argument("-n", "--runs", type=int, default=5, help="timed runs per module (default 5)")
    options = parser.parse_args()
    runs = max(1, min(options.runs, 50))

    workdir = tempfile.mkdtemp(prefix="pyweb-bench-venv-")
    try:
        runner = Runner(find_ansible(), workdir)
        wheelhouse = load_wheels_helper().build_wheelhouse(os.path.join(workdir, "wheels"))
        requirements = os.path.join(workdir, "requirements.txt")
        with open(requirements, "w") as handle:
            handle.write(REQUIREMENTS)
        venv = os.path.join(workdir, "venv")
        ours = {"path": venv, "python": options.python, "requirements": [requirements], "wheelhouse": wheelhouse}
        builtin = {
            "virtualenv": venv,
            "requirements": requirements,
            "extra_args": f"--no-index --find-links {wheelhouse} --disable-pip-version-check",
        }

        modules = {"pyweb.stack.venv": ours, "ansible.builtin.pip": builtin}
        created = runner.run("pyweb.stack.venv", ours)[1]
        print(f"venv: Python {created['python_version']} at {venv}, {len(created['packages'])} packages")
        expect_noop("ansible.builtin.pip", runner.run("ansible.builtin.pip", builtin)[1])  # warm-up

        payloads = {name: runner.payload(name, args) for name, args in modules.items()}
        ping_payload = runner.payload("ansible.builtin.ping", None)
        adhoc: dict[str, list[float]] = {"ansible.builtin.ping": [], **{name: [] for name in modules}}
        target: dict[str, list[float]] = {"ansible.builtin.ping": [], **{name: [] for name in modules}}
        for _round in range(runs):
            adhoc["ansible.builtin.ping"].append(runner.run("ansible.builtin.ping")[0])
            target["ansible.builtin.ping"].append(runner.run_payload(ping_payload)[0])
            for name, args in modules.items():
                elapsed, result = runner.run(name, args)
                expect_noop(name, result)
                adhoc[name].append(elapsed)
                elapsed, result = runner.run_payload(payloads[name])
                expect_noop(name, result)
                target[name].append(elapsed)

        report(f"median of {runs} no-op runs, whole 'ansible localhost -m MODULE' (ping = ansible's own cost):", adhoc)
        report(
            f"median of {runs} no-op runs, module payload only (AnsiballZ file as run on the target; ping = floor):",
            target,
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
