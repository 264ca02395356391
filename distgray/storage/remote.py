"""A file or folder behind an fsspec URL, with the few path operations distgray needs.

``s3://bucket/in/a.jpg`` (or ``gs://``, ``az://``, ``memory://``...; ``file://`` and plain paths
stay :class:`pathlib.Path`) becomes a :class:`Remote`: an fsspec filesystem and a path in it.
It offers what a batch does with a path (name, suffix, parent, ``/``, size, read, exists) and
two ways to write that never leave a half-written file under the final name:

* object stores (S3, GCS, Azure, memory): one PUT of the whole object, or a multipart upload,
  which the store makes visible only when it completes;
* other filesystems (SFTP, HDFS, ...): written under a temporary name beside it, then renamed.

Every failure is an ``OSError`` with a one-line reason (the backends raise their own types for
a refused connection or a timeout). Options for the backend (endpoint, keys, timeouts) come from
``--storage-option`` and the backends' own environment (``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``, ...); they are never part of :func:`str` of a Remote, so they never reach a
log line, the page or the job log.
"""

from __future__ import annotations

import contextlib
import json
import posixpath
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path, PurePath, PurePosixPath
from typing import IO, Any

#: Protocols whose stores make an object visible only once its upload is complete.
OBJECT_STORES = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "memory"})


class Remote:
    """A path in an fsspec filesystem (``fs``): ``path`` as the filesystem spells it (no protocol)."""

    __slots__ = ("fs", "known", "path")

    def __init__(self, fs: Any, path: str, known: dict[str, Any] | None = None) -> None:
        """``known``: what a listing just said of it (size, ETag), so as not to ask again."""
        self.fs = fs
        self.path = path.rstrip("/") or path
        self.known = known

    # ------------------------------------------------------------------ naming
    def __str__(self) -> str:
        return str(self.fs.unstrip_protocol(self.path))

    def __repr__(self) -> str:
        return f"Remote({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Remote) and str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))

    def __truediv__(self, other: str | PurePath) -> Remote:
        part = other.as_posix() if isinstance(other, PurePath) else str(other)
        return Remote(self.fs, posixpath.normpath(posixpath.join(self.path, part)))

    @property
    def name(self) -> str:
        return PurePosixPath(self.path).name

    @property
    def stem(self) -> str:
        return PurePosixPath(self.path).stem

    @property
    def suffix(self) -> str:
        return PurePosixPath(self.path).suffix

    @property
    def parent(self) -> Remote:
        return Remote(self.fs, posixpath.dirname(self.path))

    def relative_to(self, other: Remote) -> PurePosixPath:
        return PurePosixPath(self.path).relative_to(other.path)

    @property
    def protocol(self) -> str:
        proto = self.fs.protocol
        return str(proto[0] if isinstance(proto, (tuple, list)) else proto)

    # ------------------------------------------------------------------ reading
    def info(self) -> dict[str, Any]:
        if self.known is not None:
            return self.known
        return dict(_call(self, self.fs.info, self.path))

    def size(self) -> int:
        return int(self.info().get("size") or 0)

    def version(self) -> tuple[int, str]:
        """(size, a tag that changes when the content does): the ETag where the store has one,
        else the modification time."""
        info = self.info()
        tag = info.get("ETag") or info.get("etag") or info.get("md5") or info.get("LastModified") or info.get("mtime")
        if tag is None:
            tag = info.get("created", "")
        return int(info.get("size") or 0), str(tag).strip('"')

    def exists(self) -> bool:
        return bool(_call(self, self.fs.exists, self.path))

    def is_dir(self) -> bool:
        return bool(_call(self, self.fs.isdir, self.path))

    def is_file(self) -> bool:
        return bool(_call(self, self.fs.isfile, self.path))

    def forget(self) -> None:
        """Drop the filesystem's cached listings below this path (s3fs keeps them): a listing
        after this one sees what arrived since."""
        with contextlib.suppress(Exception):
            self.fs.invalidate_cache(self.path)

    def names_matching(self, pattern: str) -> list[str]:
        """Names of the entries of this folder that match the glob ``pattern``."""
        self.forget()
        found = _call(self, self.fs.glob, posixpath.join(self.path, pattern))
        return [posixpath.basename(str(p).rstrip("/")) for p in found]

    def read_bytes(self) -> bytes:
        return bytes(_call(self, self.fs.cat_file, self.path))

    def open(self, block_size: int = 1 << 20) -> IO[bytes]:
        """A seekable reader that fetches ranges as they are read (the whole object is not fetched)."""
        handle: IO[bytes] = _call(self, self.fs.open, self.path, "rb", block_size=block_size)
        return handle

    def download(self, dest: Path) -> None:
        """Copy to the local ``dest`` in chunks (memory stays flat whatever the size)."""
        _call(self, self.fs.get_file, self.path, str(dest))

    def files(self, recursive: bool) -> Iterator[tuple[Remote, bool]]:
        """The entries below this folder (all depths when ``recursive``): (entry, is_a_folder)."""
        self.forget()
        found = _call(self, self.fs.find, self.path, maxdepth=None if recursive else 1, withdirs=True, detail=True)
        for path, info in sorted(found.items()):
            if path.rstrip("/") != self.path:
                yield Remote(self.fs, path, dict(info)), info.get("type") == "directory"

    # ------------------------------------------------------------------ writing, whole or not at all
    def write_atomic(self, data: bytes | memoryview) -> None:
        """``data`` to this path, visible only when whole."""
        payload = bytes(data)
        self._whole(lambda dest: _call(self, self.fs.pipe_file, dest, payload))

    def upload_atomic(self, local: Path) -> None:
        """The local file ``local`` to this path, in chunks, visible only when whole."""
        self._whole(lambda dest: _call(self, self.fs.put_file, str(local), dest))

    def _whole(self, put: Callable[[str], object]) -> None:
        """``put(dest)`` so that this path only ever holds a whole file: an object store's one PUT
        (or multipart upload) is all or nothing; elsewhere a temporary name, then a rename."""
        if self.protocol in OBJECT_STORES:
            put(self.path)
            return
        part = f"{self.path}.part-{uuid.uuid4().hex[:12]}"
        try:
            put(part)
            _call(self, self.fs.mv, part, self.path)
        except OSError:
            _remove_quietly(self.fs, part)
            raise

    def append_lines(self, lines: list[str]) -> None:
        """Add ``lines`` to this (text) file: read, add, write back whole (object stores cannot append)."""
        try:
            old = _call(self, self.fs.cat_file, self.path)
        except FileNotFoundError:
            old = b""
        self.write_atomic(bytes(old) + "".join(lines).encode())


def _remove_quietly(fs: Any, path: str) -> None:
    with contextlib.suppress(Exception):  # best effort: a temporary name left is never the final name
        fs.rm_file(path)


def _call(where: Remote, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """``fn(*args)``, its failures as OSError (FileNotFoundError kept) with a one-line reason."""
    try:
        return fn(*args, **kwargs)
    except OSError:
        raise
    except Exception as exc:  # botocore's connection errors, timeouts, aiohttp's...
        raise OSError(f"{type(exc).__name__}: {exc}".splitlines()[0]) from exc


def is_url(text: str | PurePath) -> bool:
    """Whether ``text`` names a place through fsspec rather than a local path (``file://`` is local)."""
    text = str(text)
    head, sep, _ = text.partition("://")
    return bool(sep) and head.isidentifier() and head.lower() != "file"


def locate(text: str, options: Mapping[str, Any] | None = None) -> Path | Remote:
    """A local path, or a Remote for an fsspec URL (its backend loaded now: ImportError names
    the extra to install). ``options``: the backend's options (``--storage-option``)."""
    if not is_url(text):
        return Path(text[len("file://") :] if text.startswith("file://") else text)
    import fsspec
    from fsspec.core import url_to_fs

    protocol = text.partition("://")[0]
    try:
        fs, path = url_to_fs(text, **dict(options or {}))
    except ImportError as exc:
        extra = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs"}.get(protocol, protocol)
        raise ImportError(f"{protocol}:// needs its fsspec backend: pip install 'distgray[{extra}]' ({exc})") from exc
    except ValueError as exc:
        known = ", ".join(sorted(fsspec.available_protocols())[:12])
        raise ValueError(f"{text}: not a URL fsspec knows ({exc}); some it knows: {known}...") from exc
    return Remote(fs, path)


def parse_option(text: str) -> tuple[list[str], Any]:
    """``key=value`` of ``--storage-option``: dotted keys nest (``config_kwargs.connect_timeout=2``),
    values are JSON where they parse (numbers, true/false, objects), else strings."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise ValueError(f"{text!r}: expected key=value")
    try:
        value: Any = json.loads(raw)
    except ValueError:
        value = raw
    return key.split("."), value


def options_of(pairs: list[str]) -> dict[str, Any]:
    """The backend options of several ``key=value`` (see :func:`parse_option`)."""
    options: dict[str, Any] = {}
    for pair in pairs:
        keys, value = parse_option(pair)
        at = options
        for key in keys[:-1]:
            at = at.setdefault(key, {})
            if not isinstance(at, dict):
                raise ValueError(f"{pair!r}: {key} is already set to a value")
        at[keys[-1]] = value
    return options
