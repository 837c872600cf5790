# Copyright: pyweb.stack contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The pure helpers behind pyweb.stack.venv: stamp digest, pip command lines, package-set diffs."""

from __future__ import annotations

import json
import os
import sys

import pytest
from ansible_collections.pyweb.stack.plugins.module_utils import venv as vu

PY = os.path.realpath(sys.executable)
VERSION = ".".join(str(part) for part in sys.version_info[:3])


def interpreter(version: str = VERSION, resolved: str = PY) -> vu.Interpreter:
    return vu.Interpreter(path=resolved, resolved=resolved, version=version, fingerprint=(1, 2, 3, 4))


def write(path, text: str) -> str:
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Django", "django"),
        ("zope.interface", "zope-interface"),
        ("typing_extensions", "typing-extensions"),
        ("A-_.b", "a-b"),
    ],
)
def test_canonical_name(raw, expected):
    assert vu.canonical_name(raw) == expected


def test_version_checks():
    assert vu.version_tuple("3.12.1") == (3, 12, 1)
    assert vu.version_tuple("24.0b1") == (24, 0)
    assert vu.is_supported_python("3.8.0")
    assert not vu.is_supported_python("3.7.16")
    assert vu.pip_supports_report("22.2")
    assert vu.pip_supports_report("23.2.1")
    assert not vu.pip_supports_report("22.1.2")
    assert not vu.pip_supports_report(None)


def test_nested_references_are_followed_relative_to_the_including_file(tmp_path):
    sub = tmp_path / "sub"
    sub.mkdir()
    top = write(
        tmp_path / "top.txt", "-r sub/base.txt\n--constraint=c.txt\nflask  # web\n-r https://example.com/r.txt\n"
    )
    write(sub / "base.txt", "-rmore.txt\n--requirement ../top.txt\nrequests\n")
    write(sub / "more.txt", "attrs\n")
    closure = vu.requirement_file_closure([top])
    assert closure == [top, str(sub / "base.txt"), str(tmp_path / "c.txt"), str(sub / "more.txt")]
    # the nested constraints file does not exist: reported, not raised
    assert vu.missing_inputs(vu.PipInputs(requirements=(top,))) == [
        f"requirements file {tmp_path / 'c.txt'} does not exist (or is not a file)"
    ]
    assert vu.nested_file_reference("--requirements-typo x") is None
    assert vu.nested_file_reference("-c  pins.txt") == "pins.txt"


def test_missing_inputs_name_every_bad_path(tmp_path):
    inputs = vu.PipInputs(
        requirements=(str(tmp_path / "r.txt"),),
        constraints=str(tmp_path / "c.txt"),
        wheelhouse=str(tmp_path / "wheels"),
        ca_bundle=str(tmp_path / "ca.pem"),
    )
    problems = vu.missing_inputs(inputs)
    assert len(problems) == 4
    for name in ("r.txt", "c.txt", "wheels", "ca.pem"):
        assert any(name in problem for problem in problems)


def test_digest_tracks_every_input(tmp_path):
    req = write(tmp_path / "r.txt", "flask\n")
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "a-1.0-py3-none-any.whl").write_bytes(b"x" * 10)
    ca = write(tmp_path / "ca.pem", "CERT")
    base = vu.PipInputs(requirements=(req,), wheelhouse=str(wheels), ca_bundle=ca)
    digest = vu.input_digest(base, interpreter())
    assert digest == vu.input_digest(base, interpreter())

    variants = [
        vu.input_digest(
            vu.PipInputs(requirements=(req,), wheelhouse=str(wheels), ca_bundle=ca, prune=True), interpreter()
        ),
        vu.input_digest(base, interpreter(version="3.11.7")),
        vu.input_digest(base, interpreter(resolved="/usr/bin/python3.12")),
        vu.input_digest(
            vu.PipInputs(requirements=(req,), packages=("attrs",), wheelhouse=str(wheels), ca_bundle=ca), interpreter()
        ),
    ]
    assert digest not in variants
    assert len(set(variants)) == len(variants)

    write(tmp_path / "r.txt", "flask==3.0\n")
    assert vu.input_digest(base, interpreter()) != digest
    write(tmp_path / "r.txt", "flask\n")
    (wheels / "b-1.0-py3-none-any.whl").write_bytes(b"y")
    assert vu.input_digest(base, interpreter()) != digest
    (wheels / "b-1.0-py3-none-any.whl").unlink()
    assert vu.input_digest(base, interpreter()) == digest
    write(tmp_path / "ca.pem", "OTHER CERT")
    assert vu.input_digest(base, interpreter()) != digest


def test_stamp_round_trip_and_interpreter_version_reuse(tmp_path):
    probe = json.dumps({"version": VERSION, "executable": PY})
    interp = vu.parse_interpreter_probe("python3", PY, probe)
    assert interp.fingerprint == vu.interpreter_fingerprint(PY, PY)
    assert vu.load_stamp(str(tmp_path)) is None
    vu.write_stamp(str(tmp_path), vu.build_stamp("abc", interp, {"b": "2", "a": "1"}))
    stamp = vu.load_stamp(str(tmp_path))
    assert stamp["packages"] == {"a": "1", "b": "2"}
    assert vu.stamp_matches(stamp, "abc")
    assert not vu.stamp_matches(stamp, "abd")
    assert vu.recorded_interpreter(stamp, "python3", PY) == interp
    assert vu.recorded_interpreter(stamp, "python3", "/other/python") is None
    stamp["interpreter"]["fingerprint"][1] += 1  # the binary was replaced: ask it again
    assert vu.recorded_interpreter(stamp, "python3", PY) is None
    assert sorted(os.listdir(tmp_path)) == [vu.STAMP_NAME]  # no temp file left behind

    (tmp_path / vu.STAMP_NAME).write_text("{not json")
    assert vu.load_stamp(str(tmp_path)) is None
    vu.remove_stamp(str(tmp_path))
    vu.remove_stamp(str(tmp_path))
    assert not (tmp_path / vu.STAMP_NAME).exists()


def fake_venv(root, version: str, python: str) -> str:
    (root / "bin").mkdir(parents=True)
    (root / "pyvenv.cfg").write_text(f"home = {os.path.dirname(python)}\nversion = {version}\n")
    os.symlink(python, root / "bin" / "python")
    return str(root)


def test_replacement_reasons_come_from_pyvenv_cfg_and_links(tmp_path):
    venv = fake_venv(tmp_path / "v", VERSION, PY)
    cfg = vu.read_pyvenv_cfg(venv)
    assert cfg["version"] == VERSION
    assert vu.venv_replacement_reasons(venv, cfg, interpreter()) == []
    assert vu.venv_replacement_reasons(venv, cfg, interpreter(version="3.99.0")) == [
        f"venv was built with Python {VERSION}, wanted 3.99.0"
    ]
    assert vu.venv_replacement_reasons(venv, cfg, interpreter(resolved="/opt/py/bin/python3")) == [
        f"venv runs {PY}, wanted /opt/py/bin/python3"
    ]
    gone = fake_venv(tmp_path / "g", VERSION, str(tmp_path / "deleted-python"))
    reasons = vu.venv_replacement_reasons(gone, vu.read_pyvenv_cfg(gone), interpreter())
    assert any("interpreter is gone" in reason for reason in reasons)
    assert vu.venv_replacement_reasons(str(tmp_path), None, interpreter()) == [f"{tmp_path} has no pyvenv.cfg"]


def test_pip_command_lines():
    inputs = vu.PipInputs(
        requirements=("/r1.txt", "/r2.txt"),
        packages=("gunicorn==23.0.0",),
        constraints="/c.txt",
        index_url="https://idx/simple",
        extra_index_urls=("https://extra/simple",),
        trusted_hosts=("idx",),
        ca_bundle="/ca.pem",
    )
    assert vu.pip_install_command("/v/bin/python", inputs) == [
        "/v/bin/python", "-m", "pip", "--disable-pip-version-check", "--no-input", "install",
        "--index-url", "https://idx/simple", "--extra-index-url", "https://extra/simple",
        "--trusted-host", "idx", "--cert", "/ca.pem", "--constraint", "/c.txt",
        "--requirement", "/r1.txt", "--requirement", "/r2.txt", "gunicorn==23.0.0",
    ]  # fmt: skip
    offline = vu.PipInputs(packages=("a",), wheelhouse="/w")
    assert vu.pip_install_command("py", offline)[6:] == ["--no-index", "--find-links", "/w", "a"]
    dry = vu.pip_dry_run_command("py", offline, full_resolution=True)
    assert dry[5:11] == ["install", "--dry-run", "--quiet", "--report", "-", "--ignore-installed"]
    assert vu.pip_uninstall_command("py", ["b", "a"])[-4:] == ["uninstall", "--yes", "a", "b"]


def test_parse_pip_report_normalises_names():
    report = {
        "version": "1",
        "install": [
            {"metadata": {"name": "Flask", "version": "3.0.3"}, "requested": True},
            {"metadata": {"name": "Werkzeug", "version": "3.0.4"}, "requested": False},
        ],
    }
    assert vu.parse_pip_report(json.dumps(report)) == {"flask": "3.0.3", "werkzeug": "3.0.4"}
    assert vu.parse_pip_report('{"version": "1", "install": []}') == {}


def test_package_set_diff_prediction_and_prune():
    before = {"a": "1", "b": "1", "pip": "23.2.1"}
    after = {"a": "2", "c": "1", "pip": "23.2.1"}
    changes = vu.diff_package_sets(before, after)
    assert changes.as_dict() == {
        "added": {"c": "1"},
        "removed": {"b": "1"},
        "changed": {"a": {"before": "1", "after": "2"}},
    }
    assert changes.any()
    assert not vu.diff_package_sets(after, dict(after)).any()
    assert vu.predicted_package_set(before, {"a": "3", "d": "1"}) == {"a": "3", "b": "1", "d": "1", "pip": "23.2.1"}
    installed = {"a": "1", "b": "1", "pip": "1", "setuptools": "1", "wheel": "1"}
    assert vu.packages_to_prune(installed, ["A"]) == ["b"]
    assert vu.render_listing({"b": "2", "a": "1"}) == "a==1\nb==2\n"


def test_requirement_lines_skip_comments_and_options(tmp_path):
    req = write(tmp_path / "r.txt", "# top\n--index-url https://x\nflask>=3  # web\n\n-c pins.txt\n")
    write(tmp_path / "pins.txt", "flask==3.0.3\n")
    # constraints limit versions but request nothing, so pins.txt is not listed
    assert vu.requirement_lines(vu.PipInputs(requirements=(req,), packages=("attrs",))) == ["flask>=3", "attrs"]


def test_interpreter_probe_behind_a_wrapper(tmp_path):
    shim = write(tmp_path / "python3", '#!/bin/sh\nexec python3 "$@"\n')
    interp = vu.parse_interpreter_probe(shim, shim, json.dumps({"version": "3.12.1", "executable": PY}))
    assert interp.launcher == shim
    assert interp.resolved == PY  # what the venv links to, not the wrapper
    assert len(interp.fingerprint) == 8
    assert vu.interpreter_fingerprint(str(tmp_path / "gone")) == (0, 0, 0, 0)


def test_wheelhouse_listing_is_sorted_names_and_sizes(tmp_path):
    (tmp_path / "b.whl").write_bytes(b"12")
    (tmp_path / "a.whl").write_bytes(b"1")
    (tmp_path / "subdir").mkdir()
    assert vu.wheelhouse_listing(str(tmp_path)) == [["a.whl", 1], ["b.whl", 2]]
