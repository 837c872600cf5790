"""Content hash and reproducible tarball of an app source directory; runs on the controller for app_source=directory.

  app-pack.py hash SOURCE [--exclude GLOB ...]            prints {"hash": sha256, "files": count}
  app-pack.py pack SOURCE ARCHIVE [--exclude GLOB ...]    writes ARCHIVE (tar.gz) and prints the same JSON

The hash covers relative paths, the executable bit and contents (not timestamps or owners), so an unchanged
tree hashes the same on every run and a new release is made only when the code really changed. Symlinks are
stored as links. The tarball holds the same files owned by root, files 0644 (0755 when executable), dirs 0755,
each with its own modification time (whole seconds): web servers derive validators from it (nginx's ETag is
mtime-size, Last-Modified the mtime), so a file changed at the source, even to the same length, gets a new ETag,
and browsers holding the old one get the new file instead of a 304. The same tree with the same times packs to the
same bytes (no time or name in the gzip header).
"""

from __future__ import annotations

import argparse
import fnmatch
import gzip
import hashlib
import io
import json
import os
import stat
import sys
import tarfile
from pathlib import Path


def excluded(relative: str, patterns: list[str]) -> bool:
    parts = relative.split("/")
    return any(fnmatch.fnmatch(part, pattern) for part in parts for pattern in patterns) or any(
        fnmatch.fnmatch(relative, pattern) for pattern in patterns
    )


def walk(source: Path, patterns: list[str]) -> list[tuple[str, Path]]:
    entries = []
    for root, dirs, files in os.walk(source):
        root_path = Path(root)
        for name in sorted(dirs + files):
            path = root_path / name
            relative = path.relative_to(source).as_posix()
            if excluded(relative, patterns):
                if name in dirs:
                    dirs.remove(name)
                continue
            entries.append((relative, path))
        dirs.sort()
    return sorted(entries)


def tree_hash(entries: list[tuple[str, Path]]) -> str:
    digest = hashlib.sha256()
    for relative, path in entries:
        mode = path.lstat().st_mode
        if stat.S_ISLNK(mode):
            digest.update(f"L {relative} {os.readlink(path)}\n".encode())
        elif stat.S_ISDIR(mode):
            digest.update(f"D {relative}\n".encode())
        else:
            executable = "x" if mode & stat.S_IXUSR else "-"
            digest.update(f"F {relative} {executable} {hashlib.sha256(path.read_bytes()).hexdigest()}\n".encode())
    return digest.hexdigest()


def normalised(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    info.mtime = int(info.mtime)
    if info.isdir() or (info.isfile() and info.mode & stat.S_IXUSR):
        info.mode = 0o755
    elif info.isfile():
        info.mode = 0o644
    return info


def pack(entries: list[tuple[str, Path]], archive: Path) -> None:
    with (
        archive.open("wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as compressed,
        tarfile.open(fileobj=compressed, mode="w") as tar,
    ):
        for relative, path in entries:
            info = normalised(tar.gettarinfo(str(path), arcname=relative))
            if info.isfile():
                tar.addfile(info, io.BytesIO(path.read_bytes()))
            else:
                tar.addfile(info)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("action", choices=["hash", "pack"])
    parser.add_argument("source", type=Path)
    parser.add_argument("archive", type=Path, nargs="?")
    parser.add_argument("--exclude", action="append", default=[])
    args = parser.parse_args(argv)
    if not args.source.is_dir():
        parser.error(f"{args.source} is not a directory")
    if args.action == "pack" and args.archive is None:
        parser.error("pack needs an ARCHIVE path")
    entries = walk(args.source, args.exclude)
    if args.action == "pack":
        pack(entries, args.archive)
    print(json.dumps({"hash": tree_hash(entries), "files": len(entries)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
