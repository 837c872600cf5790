"""The git and archive sources of the app role, after side_effect deployed each (twice, the second run changing
nothing) before the directory-source rollouts that test_app.py checks. The releases stay on the host (five are
kept), so their files are checked here as they are, with the answers side_effect recorded from the live app."""

from __future__ import annotations

import json

import pytest

BASE = "/srv/flaskapp"
RECORD = "/root/pyweb-app-sources.json"


@pytest.fixture
def record(host) -> dict:
    return json.loads(host.file(RECORD).content_string)


def release_meta(host, release: str) -> dict:
    return json.loads(host.file(f"{release}/.pyweb-release.json").content_string)


def test_git_release_is_the_tagged_commit(host, record):
    tag_commit = host.check_output("git --git-dir /srv/git/flaskapp.git rev-parse v3.0.0^{commit}")
    main_commit = host.check_output("git --git-dir /srv/git/flaskapp.git rev-parse main")
    assert tag_commit != main_commit
    assert record["git_commit"] == tag_commit
    assert record["git_answer"]["version"] == "3.0.0"
    assert record["git_answer"]["release"] == record["git_release"].rsplit("/", 1)[1]
    meta = release_meta(host, record["git_release"])
    assert meta["source"] == "git"
    assert meta["source_hash"] == f"git:{tag_commit}"
    assert host.file(f"{record['git_release']}/VERSION").content_string.strip() == "3.0.0"
    assert host.package("git").is_installed


def test_archive_release_is_the_checksummed_archive(host, record):
    assert record["archive_answer"]["version"] == "4.0.0"
    assert record["archive_answer"]["release"] == record["archive_release"].rsplit("/", 1)[1]
    meta = release_meta(host, record["archive_release"])
    assert meta["source"] == "archive"
    assert meta["source_hash"] == f"archive:{record['archive_sha256']}"
    # --strip-components=1 removed the archive's top directory.
    assert host.file(f"{record['archive_release']}/api/wsgi.py").exists
    assert not host.file(f"{record['archive_release']}/flaskapp-4.0.0").exists


@pytest.mark.parametrize("key", ["git_release", "archive_release"])
def test_code_from_git_and_archives_belongs_to_root(host, record, key):
    release = record[key]
    # The archive stores uid 1234 and a world-writable api/wsgi.py; git archive stores group-writable modes.
    wsgi = host.file(f"{release}/api/wsgi.py")
    assert wsgi.user == "root"
    assert wsgi.group == "root"
    assert wsgi.mode & 0o022 == 0, oct(wsgi.mode)
    foreign = host.check_output(f"find {release}/ ! -type l \\( ! -user root -o -perm -o=w -o -perm -g=w \\) -print")
    assert foreign == ""


def test_wrong_checksum_was_refused_before_any_release(record):
    assert int(record["wrong_checksum_rc"]) != 0
    assert record["releases_after_wrong"] == record["releases_before_wrong"]
    assert record["archive_release"].rsplit("/", 1)[1] in record["releases_after_wrong"]
