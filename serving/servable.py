"""One loaded version of a model (a "servable" in TF Serving's words): its SavedModel and signatures.

The SignatureDefs (with their input defaults) are read from ``saved_model.pb`` itself, as TF Serving does;
the functions that compute them come from ``tf.saved_model.load(...).signatures``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

import tensorflow as tf
from google.protobuf import message, text_format
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2

from serving.errors import invalid_argument
from serving.signature import DEFAULT_SIGNATURE, Signature

_LOG = logging.getLogger(__name__)

SAVED_MODEL_FILENAMES = ("saved_model.pb", "saved_model.pbtxt")
SERVING_TAG = "serve"


class Servable:
    """A loaded SavedModel version: its signatures, ready to validate and run requests.

    Requests keep a reference to the servable they started with, so a version swapped out while they run
    stays alive until they finish.
    """

    def __init__(
        self,
        name: str,
        version: int,
        path: str,
        signature_defs: Mapping[str, meta_graph_pb2.SignatureDef],
        signatures: Mapping[str, Signature],
        loaded: object,
    ):
        """Assembles a servable; use :meth:`load` to read one from disk.

        Args:
            name: the model name.
            version: the version number.
            path: the version's directory.
            signature_defs: every SignatureDef of the serving MetaGraph (reported by GetModelMetadata).
            signatures: the callable signatures, by key.
            loaded: the object ``tf.saved_model.load`` returned; it owns the variables and tables the
                signatures use, so it lives as long as the servable.
        """
        self.name = name
        self.version = version
        self.path = path
        self.signature_defs = dict(signature_defs)
        self._signatures = dict(signatures)
        self._loaded = loaded

    @classmethod
    def load(cls, name: str, version: int, path: str) -> Servable:
        """Loads one version from its SavedModel directory.

        Args:
            name: the model name.
            version: the version number.
            path: the directory holding ``saved_model.pb`` (or ``.pbtxt``), ``variables/`` and ``assets/``.

        Returns:
            The servable.

        Raises:
            OSError, ValueError, tf.errors.OpError: the SavedModel is missing, corrupt or has no
                ``serve`` MetaGraph.
        """
        signature_defs = read_signature_defs(path)
        loaded = tf.saved_model.load(path, tags=[SERVING_TAG])
        signatures = {
            key: Signature(key, signature_defs[key], function)
            for key, function in loaded.signatures.items()
            if key in signature_defs
        }
        return cls(name, version, path, signature_defs, signatures, loaded)

    def signature(self, name: str) -> Signature:
        """The signature a request names.

        Args:
            name: the request's ``signature_name``; empty means ``serving_default``.

        Returns:
            The signature.

        Raises:
            StatusError: ``INVALID_ARGUMENT`` if the model has no such signature.
        """
        key = name or DEFAULT_SIGNATURE
        try:
            return self._signatures[key]
        except KeyError:
            raise invalid_argument(
                f"model {self.name!r} version {self.version} has no signature {key!r} "
                f"(signatures: {', '.join(sorted(self._signatures))})"
            ) from None


def read_signature_defs(path: str) -> dict[str, meta_graph_pb2.SignatureDef]:
    """Reads the SignatureDefs of the ``serve`` MetaGraph of a SavedModel.

    Args:
        path: the SavedModel directory.

    Returns:
        The SignatureDefs by key, including TF2's ``__saved_model_init_op`` as TF Serving reports it.

    Raises:
        FileNotFoundError: the directory holds neither ``saved_model.pb`` nor ``saved_model.pbtxt``.
        ValueError: the file does not parse or has no MetaGraph tagged ``serve``.
    """
    saved_model = saved_model_pb2.SavedModel()
    binary, text = (os.path.join(path, f) for f in SAVED_MODEL_FILENAMES)
    source = binary if tf.io.gfile.exists(binary) else text
    if not tf.io.gfile.exists(source):
        raise FileNotFoundError(f"no saved_model.pb or saved_model.pbtxt in {path}")
    try:
        if source == binary:
            with tf.io.gfile.GFile(binary, "rb") as f:
                saved_model.ParseFromString(f.read())
        else:
            with tf.io.gfile.GFile(text, "r") as f:
                text_format.Parse(f.read(), saved_model)
    except (text_format.ParseError, message.DecodeError) as e:
        raise ValueError(f"cannot parse {source}: {e}") from e
    for meta_graph in saved_model.meta_graphs:
        if SERVING_TAG in meta_graph.meta_info_def.tags:
            return dict(meta_graph.signature_def)
    raise ValueError(f"the SavedModel in {path} has no MetaGraph tagged {SERVING_TAG!r}")


def register_custom_ops() -> None:
    """Imports ScaNN so that SavedModels holding a ScaNN index load; logs whether it could.

    Must run before the first SavedModel is loaded.
    """
    try:
        import scann  # noqa: F401  (registers the ScaNN TensorFlow ops)
    except ImportError:
        _LOG.warning("scann is not installed: SavedModels holding a ScaNN index will fail to load")
    else:
        _LOG.info("scann imported: ScaNN ops registered")
