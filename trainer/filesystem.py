"""File-system access of the trainer and the pipeline: local paths and any TensorFlow file system.

Everything :mod:`trainer` (and :mod:`pipeline` through it) reads or writes goes through this module, so a
``gs://`` (or ``s3://``, ``hdfs://``, ``ram://``) output directory, serving base or input log works where
a local one does. The rule:

- a plain local path (no ``scheme://``) uses :mod:`os`, :mod:`shutil` and :mod:`tempfile` directly:
  local commands stay fast and never import TensorFlow (``dmirec data ...`` must not);
- a URI with a scheme goes through ``tf.io.gfile``, imported inside the functions that need it.

Atomic writes need care on remote file systems, which rename files but not directories:

- a text file is written to a temporary file beside its target, then renamed over it (a file rename is
  atomic on POSIX; on GCS it is a copy then a delete, and the target object appears whole or not at all);
- a directory cannot be renamed into place: on ``ram://`` (TensorFlow 2.16) ``tf.io.gfile.rename`` of a
  directory "succeeds" but leaves the new directory empty (its files stay behind under the old name,
  unlisted), and GCS has no directory rename at all. So a directory is published by copying its files into
  the target with the SavedModel files (``saved_model.pb``, ``saved_model.pbtxt``) copied last, each
  through a temporary name and a file rename: TF Serving and ``serving/model_manager.py`` only consider a
  version directory once ``saved_model.pb`` exists, so a reader never loads a half-copied version.

Measured on ``ram://`` (TensorFlow 2.16), TensorFlow's in-process file system that the tests use: a file
written into a directory never created is readable but not listed, so this module creates directories
before writing into them; names work by string prefix (see :func:`_is_ram`), which this module corrects
for; written bytes are readable before the writer closes, which the temporary names above hide.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import io
import json
import os
import posixpath
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from typing import IO, Any

SAVED_MODEL_FILES = ("saved_model.pbtxt", "saved_model.pb")
"""What makes a directory a SavedModel version for a model server; published last, in this order."""

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_uri(path: str) -> bool:
    """Whether ``path`` names a file system by scheme (``gs://b/x``, ``ram://x``), not a local path.

    Args:
      path: a path or URI.

    Returns:
      True for ``scheme://...``; False for plain local paths, absolute or relative.
    """
    return bool(_SCHEME.match(path))


def _tf():
    """TensorFlow, imported on first use so that local-only commands never load it.

    (This module is in the ``trainer`` package, whose import has already selected Keras 2.)
    """
    import tensorflow as tf

    return tf


def _gfile():
    """``tf.io.gfile`` (see :func:`_tf`)."""
    return _tf().io.gfile


def _uses_gfile(*paths: str) -> bool:
    return any(is_uri(path) for path in paths)


def join(path: str, *paths: str) -> str:
    """Joins path components: with ``/`` for URIs (whatever the OS), as :func:`os.path.join` locally.

    Args:
      path: the first component.
      *paths: the others.

    Returns:
      The joined path.
    """
    return posixpath.join(path, *paths) if is_uri(path) else os.path.join(path, *paths)


def parent(path: str) -> str:
    """The directory holding ``path``: absolute for a local path, the URI without its last part otherwise.

    Args:
      path: a file or directory path.

    Returns:
      Its parent directory.
    """
    if is_uri(path):
        return posixpath.dirname(path.rstrip("/"))
    return os.path.dirname(os.path.abspath(path))


def _not_found(path: str) -> FileNotFoundError:
    return FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)


def open_file(path: str, mode: str = "r") -> IO:
    """Opens a file, text (UTF-8) or binary (``mode`` with ``b``).

    Text is never translated, on any file system (as :func:`open` with ``newline=""``): lines keep their
    ``\\n`` or ``\\r\\n``, and what is written is what lands. A URI is read through Python's buffered text
    reader over ``tf.io.gfile``'s bytes (in 1 MiB reads), so lines and line numbers are the same as for
    a local copy of the file.

    Args:
      path: the file.
      mode: ``r``, ``w``, ``a``, optionally with ``b``.

    Returns:
      A file object (a context manager, iterable by line in text mode).

    Raises:
      FileNotFoundError: reading a file that does not exist, on any file system.
    """
    if not is_uri(path):
        if "b" in mode:
            return builtins.open(path, mode)
        return builtins.open(path, mode, encoding="utf-8", newline="")
    if "r" not in mode:
        return _gfile().GFile(path, mode)
    # GFile opens lazily and fails at the first read; check now so every file system fails alike.
    if not exists(path):
        raise _not_found(path)
    binary = _gfile().GFile(path, "rb")
    if "b" in mode:
        return binary
    # GFile's own text lines drop every "\r"; Python's reader over its bytes reads as a local file does.
    buffered = io.BufferedReader(_RawReader(binary), buffer_size=_READ_BUFFER_BYTES)
    return io.TextIOWrapper(buffered, encoding="utf-8", newline="")


_READ_BUFFER_BYTES = 1 << 20  # a remote read per MiB, not per line


class _RawReader(io.RawIOBase):
    """A ``tf.io.gfile.GFile`` open for binary reading, as the raw stream Python's readers build on."""

    def __init__(self, gfile: Any):
        super().__init__()
        self._gfile = gfile

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._gfile.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._gfile.close()
        super().close()


def read_text(path: str) -> str:
    """The whole text of a UTF-8 file.

    Raises:
      FileNotFoundError: no such file.
    """
    with open_file(path) as f:
        return f.read()


def read_json(path: str) -> Any:
    """The JSON value of a file.

    Raises:
      FileNotFoundError: no such file.
      ValueError: the file is not JSON.
    """
    return json.loads(read_text(path))


def exists(path: str) -> bool:
    """Whether a file or directory exists."""
    if not is_uri(path):
        return os.path.exists(path)
    if not _gfile().exists(path):
        return False
    return not _is_ram(path) or _listed_by_parent(path)


def isdir(path: str) -> bool:
    """Whether ``path`` is an existing directory."""
    if not is_uri(path):
        return os.path.isdir(path)
    return exists(path) and _gfile().isdir(path)


def listdir(path: str) -> list[str]:
    """The names in a directory, without a trailing ``/`` (GCS lists subdirectories as ``name/``).

    Raises:
      FileNotFoundError: no such directory.
    """
    if not is_uri(path):
        return os.listdir(path)
    if not isdir(path):
        raise _not_found(path)
    gfile = _gfile()
    names = [name.rstrip("/") for name in gfile.listdir(path)]
    if _is_ram(path):  # drop the names ram:// makes up from siblings (see _is_ram)
        names = [name for name in names if gfile.exists(join(path, name))]
    return names


def makedirs(path: str) -> None:
    """Creates a directory and its parents; nothing to do when it exists."""
    if not is_uri(path):
        os.makedirs(path, exist_ok=True)
    else:
        _gfile().makedirs(path)


def remove(path: str) -> None:
    """Deletes a file.

    Raises:
      FileNotFoundError: no such file.
    """
    if not is_uri(path):
        os.remove(path)
        return
    if not exists(path):
        raise _not_found(path)
    _gfile().remove(path)


def rmtree(path: str, ignore_errors: bool = False) -> None:
    """Deletes a directory and everything under it.

    Args:
      path: the directory.
      ignore_errors: ignore a missing directory and failed deletions, as :func:`shutil.rmtree`'s.

    Raises:
      FileNotFoundError: no such directory (unless ``ignore_errors``).
    """
    if not is_uri(path):
        shutil.rmtree(path, ignore_errors=ignore_errors)
        return
    tf = _tf()
    if not exists(path):
        if ignore_errors:
            return
        raise _not_found(path)
    try:
        if _is_ram(path):
            _remove_one_by_one(path)
        else:
            tf.io.gfile.rmtree(path)
    except tf.errors.OpError:
        if not ignore_errors:
            raise


def walk(top: str) -> Iterator[tuple[str, list[str], list[str]]]:
    """Walks a directory tree top-down, as :func:`os.walk`, on any file system.

    Built on :func:`listdir` and :func:`isdir` rather than ``tf.io.gfile.walk``, which lists the names
    ram:// makes up (see :func:`_is_ram`).

    Args:
      top: the directory.

    Yields:
      ``(directory, subdirectory names, file names)``, ``top`` first; directories are ``join``-ed paths.

    Raises:
      FileNotFoundError: ``top`` is not a directory.
    """
    names = listdir(top)
    directories = [name for name in names if isdir(join(top, name))]
    yield top, directories, [name for name in names if name not in directories]
    for name in directories:
        yield from walk(join(top, name))


def same_tree(first: str, second: str, chunk_bytes: int = 1 << 20) -> bool:
    """Whether two directory trees hold the same file names with the same bytes, on any file systems.

    Args:
      first: a directory.
      second: another directory.
      chunk_bytes: bytes compared at a time (memory stays bounded whatever the file sizes).

    Returns:
      True when both list the same relative paths and every file's contents are equal.
    """
    def files(top: str) -> list[str]:
        found = []
        for directory, _, names in walk(top):
            relative = directory[len(top):].lstrip("/")
            found += [f"{relative}/{name}" if relative else name for name in names]
        return sorted(found)

    if not (isdir(first) and isdir(second)):
        return False
    names = files(first)
    if names != files(second):
        return False
    for name in names:
        with open_file(join(first, name), "rb") as a, open_file(join(second, name), "rb") as b:
            while True:
                block = a.read(chunk_bytes)
                if block != b.read(chunk_bytes):
                    return False
                if not block:
                    break
    return True


def _is_ram(path: str) -> bool:
    """Whether ``path`` is on TensorFlow's in-memory file system, whose names work by string prefix.

    Measured with TensorFlow 2.16: ``ram://`` answers ``exists``/``isdir``/``stat`` by name prefix
    (``ram://d/a`` "exists" when only ``ram://d/ab`` does), lists a sibling's name tail as a child
    (``ram://d/dmi`` lists ``_exact`` when ``ram://d/dmi_exact`` exists), and so ``tf.io.gfile.rmtree``
    fails with NOT_FOUND on such a directory. This module checks names against their parent's listing and
    deletes ram:// trees entry by entry instead. Other file systems (local, GCS, S3, HDFS) need none of it.
    """
    return path.startswith("ram://")


def _listed_by_parent(path: str) -> bool:
    """Whether the parent directory of a ram:// path lists its name (the top level is taken as is)."""
    directory, name = posixpath.split(path.rstrip("/"))
    if directory.endswith(":"):  # ram://name itself
        return True
    return name in {entry.rstrip("/") for entry in _gfile().listdir(directory)}


def _remove_one_by_one(path: str) -> None:
    """Deletes a ram:// tree: files, then each directory after everything under it."""
    gfile = _gfile()
    for directory, _, files in reversed(list(walk(path))):
        for name in files:
            gfile.remove(join(directory, name))
        gfile.remove(directory)


@contextlib.contextmanager
def atomic_writer(path: str) -> Iterator[IO[str]]:
    """Opens a temporary text file beside ``path`` and renames it to ``path`` only on success.

    An exception (or an interrupt) inside the ``with`` block removes the temporary file and leaves any
    existing ``path`` untouched. Locally: :func:`tempfile.mkstemp` in the same directory, then
    :func:`os.replace`; on a URI: a uniquely named hidden file beside it, then a file rename with
    overwrite (atomic where the file system's file renames are; directories are never renamed).

    Args:
      path: the file to write (its directory is created if needed).

    Yields:
      The temporary file, open for writing UTF-8 text (``\\n`` written as is).
    """
    directory = parent(path)
    makedirs(directory)
    if not is_uri(path):
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
        f = os.fdopen(fd, "w", encoding="utf-8", newline="")
    else:
        tmp = join(directory, f".{posixpath.basename(path)}.{uuid.uuid4().hex}.tmp")
        f = open_file(tmp, "w")
    try:
        with f:
            yield f
        _rename_file(tmp, path)
    except BaseException:
        with contextlib.suppress(Exception):
            remove(tmp)
        raise


def _rename_file(source: str, target: str) -> None:
    """Renames a file over ``target`` (replacing it), on one file system."""
    if not _uses_gfile(source, target):
        os.replace(source, target)
    else:
        _gfile().rename(source, target, overwrite=True)


def write_text(path: str, text: str) -> None:
    """Writes a UTF-8 text file atomically (:func:`atomic_writer`)."""
    with atomic_writer(path) as f:
        f.write(text)


def write_json(path: str, value: Any, indent: int = 2) -> None:
    """Writes a value as JSON atomically (:func:`atomic_writer`).

    Args:
      path: the file.
      value: anything :func:`json.dump` writes.
      indent: JSON indentation.
    """
    with atomic_writer(path) as f:
        json.dump(value, f, indent=indent)


@contextlib.contextmanager
def staged_directory(target: str, replace: bool = False) -> Iterator[str]:
    """Yields an empty directory to fill; on success its contents become ``target``.

    Locally the staging directory is a hidden temporary directory beside ``target``, renamed into place
    (a reader sees the old ``target`` or the new one). On a URI it is a hidden directory beside ``target``
    whose files are then copied into ``target`` as :func:`publish_directory` does (SavedModel files last)
    and which is deleted afterwards; with ``replace``, the old ``target`` is deleted just before the copy,
    so a failure during the copy leaves neither (remote file systems have no atomic directory swap).

    Args:
      target: the directory to create.
      replace: replace an existing ``target``; otherwise one is an error.

    Yields:
      The staging directory.

    Raises:
      FileExistsError: ``target`` exists and ``replace`` is False.
    """
    if not replace and exists(target):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), target)
    directory = parent(target)
    makedirs(directory)
    name = posixpath.basename(target.rstrip("/")) if is_uri(target) else os.path.basename(target)
    if not is_uri(target):
        tmp = tempfile.mkdtemp(prefix=f".{name}.", dir=directory)
    else:
        tmp = join(directory, f".{name}.{uuid.uuid4().hex}.tmp")
        makedirs(tmp)
    try:
        yield tmp
        if replace and exists(target):
            rmtree(target)
        if not is_uri(target):
            os.replace(tmp, target)
    except BaseException:
        rmtree(tmp, ignore_errors=True)
        raise
    if is_uri(target):
        try:
            publish_directory(tmp, target)
        finally:
            rmtree(tmp, ignore_errors=True)


def publish_directory(source: str, target: str, last: Sequence[str] = SAVED_MODEL_FILES) -> None:
    """Copies the directory ``source`` to a new directory ``target`` that no reader sees half-written.

    Locally: copied into a hidden directory beside ``target`` and renamed into place. With a URI on either
    side: copied file by file straight into ``target``, the top-level files named in ``last`` at the end,
    each through a temporary name and a file rename, so a model server (which only considers a version
    once ``saved_model.pb`` exists) never loads a partial copy; a failed copy deletes what it wrote. A copy
    killed outright can leave ``target`` without those files: servers ignore it, and it is not reused.

    Args:
      source: the directory to copy (e.g. an exported SavedModel).
      target: the directory to create (e.g. ``<model_base>/<version>``).
      last: top-level file names copied last, in this order.

    Raises:
      FileExistsError: ``target`` exists.
    """
    if not _uses_gfile(source, target):
        with staged_directory(target) as tmp:
            shutil.copytree(source, tmp, dirs_exist_ok=True)
        return
    if exists(target):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), target)
    try:
        _copy_tree_published_last(source, target, last)
    except BaseException:
        rmtree(target, ignore_errors=True)
        raise


def _copy_tree_published_last(source: str, target: str, last: Sequence[str]) -> None:
    """Copies a tree file by file through ``tf.io.gfile``, the top-level files of ``last`` at the end."""
    gfile = _gfile()
    source = source.rstrip("/")
    makedirs(target)
    for directory, subdirectories, files in walk(source):
        relative = directory[len(source) :].lstrip("/")
        destination = join(target, relative) if relative else target
        for name in subdirectories:
            makedirs(join(destination, name))
        for name in files:
            if not relative and name in last:
                continue
            gfile.copy(join(directory, name), join(destination, name), overwrite=True)
    for name in last:
        if exists(join(source, name)):
            # Through a temporary name, so that the file a server looks for appears complete.
            tmp = join(target, f".{name}.{uuid.uuid4().hex}.tmp")
            gfile.copy(join(source, name), tmp, overwrite=True)
            gfile.rename(tmp, join(target, name), overwrite=True)
