"""Deployment: push exported servables into a TF Serving model base directory, as integer versions.

One job, apart from building the servables (``export.py``): ``<serving_base>/<name>/<version>/`` with
``version`` one more than the largest there, written so that a model server polling the directory never
loads half a version (:func:`trainer.filesystem.publish_directory`), and not written at all when the
latest version already holds the same model byte for byte (:func:`served_version`). Used by
``dmirec train --serving-base`` and by the pipeline's ServablePusher.
"""

from __future__ import annotations

import re

from trainer import filesystem as fs
from trainer.export import SERVABLES


def _exported_servables(export_dir: str) -> list[str]:
    """The servables (of :data:`trainer.export.SERVABLES`) that ``export_dir`` holds."""
    return [name for name in SERVABLES if fs.exists(fs.join(export_dir, name, "saved_model.pb"))]


def latest_version(model_base: str) -> int:
    """The largest integer version directory under ``model_base`` (0 when there is none)."""
    if not fs.isdir(model_base):
        return 0
    versions = [int(name) for name in fs.listdir(model_base) if re.fullmatch(r"\d+", name)]
    return max(versions, default=0)


def served_version(export_dir: str, serving_base: str) -> int | None:
    """The version under ``serving_base`` that already holds ``export_dir``'s servables, byte for byte.

    Only the latest version of each servable is compared (an older copy is not what is served).

    Args:
      export_dir: a directory written by :func:`trainer.export.export_servables`.
      serving_base: the serving directory.

    Returns:
      That version, or None when any servable's latest version differs (or there is none).
    """
    names = _exported_servables(export_dir)
    versions = {latest_version(fs.join(serving_base, name)) for name in names}
    if len(versions) != 1 or 0 in versions:
        return None
    (version,) = versions
    same = all(
        fs.same_tree(fs.join(export_dir, name), fs.join(serving_base, name, str(version))) for name in names
    )
    return version if same else None


def push_servables(export_dir: str, serving_base: str, version: int | None = None) -> int:
    """Copies every servable of ``export_dir`` to ``<serving_base>/<name>/<version>/``.

    A model server polling ``serving_base`` never sees half a version (:func:`trainer.filesystem.
    publish_directory`): locally each copy is written to a hidden temporary directory beside its target
    and renamed into place; on a remote file system (``gs://``...), which cannot rename directories, the
    files are copied into the version directory with ``saved_model.pb`` last, the file a server waits for.

    Args:
      export_dir: a directory written by :func:`trainer.export.export_servables` (local or a TensorFlow file system URI).
      serving_base: the serving directory (TF Serving's model base paths are ``<serving_base>/<name>``),
        local or a TensorFlow file system URI.
      version: the version to write; None means one more than the largest version of any servable.

    Returns:
      The version written.

    Raises:
      FileExistsError: the version already exists for a servable.
      ValueError: ``export_dir`` holds no servable.
    """
    names = _exported_servables(export_dir)
    if not names:
        raise ValueError(f"{export_dir} holds no servable ({', '.join(SERVABLES)})")
    if version is None:
        version = 1 + max(latest_version(fs.join(serving_base, name)) for name in names)
    for name in names:
        target = fs.join(serving_base, name, str(version))
        if fs.exists(target):
            raise FileExistsError(f"{target} already exists")
        fs.publish_directory(fs.join(export_dir, name), target)
    return version
