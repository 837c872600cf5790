"""Unit tests for roles/app/files/app-pack.py, the controller-side hash and tarball of app_source=directory.

The tool runs as a real command on real trees; the tarballs it writes are read back with tarfile.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[3] / "roles" / "app" / "files" / "app-pack.py"
# A time an unpacked release could never get by accident: 2024-03-09 16:00:00 UTC.
SOURCE_MTIME = 1710000000


def run(*args: str | Path) -> dict:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, check=True, timeout=60
    )
    return json.loads(result.stdout)


@pytest.fixture
def source(tmp_path: Path) -> Path:
    tree = tmp_path / "src"
    (tree / "spa" / "dist").mkdir(parents=True)
    (tree / "spa" / "dist" / "index.html").write_text("<script src=/a.js></script>\n", encoding="utf-8")
    (tree / "app.py").write_text("print('hi')\n", encoding="utf-8")
    (tree / "run.sh").write_text("#!/bin/sh\n", encoding="utf-8")
    (tree / "run.sh").chmod(0o755)
    for path in tree.rglob("*"):
        os.utime(path, (SOURCE_MTIME, SOURCE_MTIME))
    return tree


def members(archive: Path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(archive) as tar:
        return {info.name: info for info in tar.getmembers()}


def test_packed_files_keep_their_source_mtime(source: Path, tmp_path: Path) -> None:
    """nginx's ETag is mtime-size: a 1970 mtime would make a same-length change revalidate as 304."""
    run("pack", source, tmp_path / "release.tar.gz")
    packed = members(tmp_path / "release.tar.gz")
    assert packed["spa/dist/index.html"].mtime == SOURCE_MTIME
    assert {info.mtime for info in packed.values()} == {SOURCE_MTIME}


def test_a_same_length_change_gets_a_new_mtime_and_a_new_hash(source: Path, tmp_path: Path) -> None:
    index = source / "spa" / "dist" / "index.html"
    first = run("pack", source, tmp_path / "first.tar.gz")
    index.write_text(index.read_text(encoding="utf-8").replace("a.js", "b.js"), encoding="utf-8")
    second = run("pack", source, tmp_path / "second.tar.gz")
    before = members(tmp_path / "first.tar.gz")["spa/dist/index.html"]
    after = members(tmp_path / "second.tar.gz")["spa/dist/index.html"]
    assert before.size == after.size
    assert (before.mtime, before.size) != (after.mtime, after.size), "nginx would send the same ETag"
    assert first["hash"] != second["hash"]


def test_the_hash_ignores_times_so_release_identity_is_reproducible(source: Path) -> None:
    first = run("hash", source)
    for path in source.rglob("*"):
        os.utime(path, (SOURCE_MTIME + 3600, SOURCE_MTIME + 3600))
    assert run("hash", source) == first


def test_the_same_tree_packs_to_the_same_bytes(source: Path, tmp_path: Path) -> None:
    run("pack", source, tmp_path / "one.tar.gz")
    run("pack", source, tmp_path / "two.tar.gz")
    assert (tmp_path / "one.tar.gz").read_bytes() == (tmp_path / "two.tar.gz").read_bytes()


def test_owners_and_modes_are_normalised(source: Path, tmp_path: Path) -> None:
    (source / "app.py").chmod(0o600)
    run("pack", source, tmp_path / "release.tar.gz")
    packed = members(tmp_path / "release.tar.gz")
    assert {(info.uid, info.gid, info.uname) for info in packed.values()} == {(0, 0, "root")}
    assert packed["app.py"].mode == 0o644
    assert packed["run.sh"].mode == 0o755
    assert packed["spa"].mode == 0o755


def test_hash_and_pack_agree(source: Path, tmp_path: Path) -> None:
    assert run("pack", source, tmp_path / "release.tar.gz") == run("hash", source)
