"""Unpacks an uploaded app archive (zip, tar, tar.gz) into a fresh directory; untrusted input.

Nothing in the archive is trusted: only regular files and directories are written (links,
devices and FIFOs are refused), every name is checked before anything is written (no absolute
paths, no '..', no backslashes or NUL, bounded depth and length), the number of files and the
unpacked size are capped from the headers and again while copying (a header that lies about a
size cannot get past the cap), files are created new (never through an existing path) with
fixed modes, and the archive's own modes, owners and times are ignored.

    root = unpack(data, Path("/data/staging/<id>"), Caps(files=500, total_bytes=50 << 20))
    # root: the folder holding manifest.json (the archive's top, or its one top-level folder)
"""

from __future__ import annotations

import functools
import io
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from handlerbox.runtime.serve.responses import ApiError

MAX_DEPTH = 12
MAX_NAME_CHARS = 255
MAX_PATH_CHARS = 1024
COPY_CHUNK = 64 << 10


@dataclass(frozen=True)
class Caps:
    files: int
    total_bytes: int


@dataclass(frozen=True)
class Member:
    """One entry to write: a checked relative path, and how to read it (None: a folder)."""

    path: PurePosixPath
    size: int
    read: Callable[[], IO[bytes]] | None


UNREADABLE = (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, NotImplementedError)
"""What a corrupt or exotic member raises while it is read."""


def bad_archive(message: str) -> ApiError:
    return ApiError(422, "bad_archive", message)


def unpack(data: bytes, dest: Path, caps: Caps) -> Path:
    """Unpack `data` into `dest` (created; must not exist) and return the app's root folder."""
    dest.mkdir(parents=True)
    if data[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        _unpack_zip(data, dest, caps)
    elif data[:2] == b"\x1f\x8b" or data[257:262] == b"ustar":
        _unpack_tar(data, dest, caps)
    else:
        raise ApiError(415, "unsupported_archive",
                       "the body is not a zip, tar or tar.gz archive")
    return app_root(dest)


def app_root(dest: Path) -> Path:
    if (dest / "manifest.json").is_file():
        return dest
    entries = list(dest.iterdir())
    if len(entries) == 1 and entries[0].is_dir() and (entries[0] / "manifest.json").is_file():
        return entries[0]
    raise bad_archive("no manifest.json at the archive's top or in its one top-level folder")


def check_name(name: str) -> PurePosixPath | None:
    """The member's path relative to the destination, or None for the archive's "./" entry;
    ApiError when it could point outside or is not a plain name."""
    if "\\" in name or "\x00" in name or len(name) > MAX_PATH_CHARS:
        raise bad_archive(f"refused member name {name[:80]!r}: backslash, NUL or too long")
    path = PurePosixPath(name)
    if path.is_absolute() or name.startswith("/"):
        raise bad_archive(f"refused member {name[:80]!r}: absolute path")
    parts = [part for part in path.parts if part != "."]
    if any(part == ".." for part in parts):
        raise bad_archive(f"refused member {name[:80]!r}: '..' in its path")
    if len(parts) > MAX_DEPTH or any(len(part) > MAX_NAME_CHARS for part in parts):
        raise bad_archive(f"refused member {name[:80]!r}: nested too deep or a name too long")
    if any(":" in part and len(part) == 2 for part in parts[:1]):
        raise bad_archive(f"refused member {name[:80]!r}: drive letter")
    return PurePosixPath(*parts) if parts else None


def _unpack_zip(data: bytes, dest: Path, caps: Caps) -> None:
    # Before zipfile reads the central directory into memory: each entry there starts with
    # this signature (file contents may hold it too, so this can only over-count).
    if data.count(b"PK\x01\x02") > caps.files:
        raise too_many(caps)
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError) as exc:
        raise bad_archive(f"not a readable zip archive ({exc})") from None
    with archive:
        infos = archive.infolist()
        if len(infos) > caps.files:
            raise too_many(caps)
        members = []
        for info in infos:
            kind = stat.S_IFMT(info.external_attr >> 16)
            if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
                raise bad_archive(f"refused member {info.filename[:80]!r}: not a plain file or "
                                  "folder (links and devices are not allowed)")
            if info.flag_bits & 0x1:
                raise bad_archive(f"refused member {info.filename[:80]!r}: encrypted")
            path = check_name(info.filename)
            if path is not None:
                members.append(Member(path, info.file_size, None if info.is_dir() else
                                      functools.partial(archive.open, info)))
        _write(dest, members, caps)


def _unpack_tar(data: bytes, dest: Path, caps: Caps) -> None:
    try:
        archive = tarfile.open(fileobj=io.BytesIO(data), mode="r:*")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise bad_archive(f"not a readable tar archive ({exc})") from None
    with archive:
        members, total = [], 0
        try:
            for info in _tar_members(archive, caps):
                if not (info.isfile() or info.isdir()):
                    raise bad_archive(f"refused member {info.name[:80]!r}: not a plain file or "
                                      "folder (links and devices are not allowed)")
                total += info.size
                if total > caps.total_bytes:
                    raise too_big(caps)
                path = check_name(info.name)
                if path is not None:
                    members.append(Member(path, info.size, functools.partial(
                        _tar_file, archive, info) if info.isfile() else None))
        except (*UNREADABLE, OSError) as exc:
            raise bad_archive(f"not a readable tar archive ({exc})") from None
        _write(dest, members, caps)


def _tar_file(archive: tarfile.TarFile, info: tarfile.TarInfo) -> IO[bytes]:
    found = archive.extractfile(info)
    if found is None:
        raise bad_archive(f"member {info.name[:80]!r} cannot be read")
    return found


def _tar_members(archive: tarfile.TarFile, caps: Caps) -> Iterator[tarfile.TarInfo]:
    """Members one header at a time, stopping at the cap (never reading the whole index)."""
    count = 0
    while (info := archive.next()) is not None:
        count += 1
        if count > caps.files:
            raise too_many(caps)
        yield info


def _write(dest: Path, members: list[Member], caps: Caps) -> None:
    if sum(m.size for m in members) > caps.total_bytes:
        raise too_big(caps)
    written = 0
    root = dest.resolve()
    for member in members:
        target = dest / member.path
        parent = target if member.read is None else target.parent
        parent.mkdir(parents=True, exist_ok=True)
        if not parent.resolve().is_relative_to(root):  # pragma: no cover - names are checked
            raise bad_archive(f"refused member {member.path}: outside the destination")
        if member.read is None:
            continue
        try:
            out = target.open("xb")
        except (FileExistsError, IsADirectoryError):
            raise bad_archive(f"member {member.path} appears twice") from None
        try:
            with out, member.read() as source:
                while chunk := source.read(COPY_CHUNK):
                    written += len(chunk)
                    if written > caps.total_bytes:
                        raise too_big(caps)
                    out.write(chunk)
        except UNREADABLE as exc:
            raise bad_archive(f"member {member.path} cannot be read ({exc})") from None
        target.chmod(0o644)


def too_many(caps: Caps) -> ApiError:
    return bad_archive(f"the archive holds more than {caps.files} entries")


def too_big(caps: Caps) -> ApiError:
    return bad_archive(f"the archive unpacks to more than {caps.total_bytes} bytes")
