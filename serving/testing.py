"""Small SavedModels with DMI-Rec's serving contract, for the serving tests (never imported by the server).

A :class:`ReferenceModel` is a toy retrieval model that honours the exported signatures:

- ``serving_default``: ``history`` string ``[batch, max_len]`` (``""`` pads) and ``top_n`` int32 scalar
  with a default recorded in the SignatureDef -> ``item_ids`` string and ``scores`` float32 ``[batch, N]``;
  a ``top_n`` below 1 or above the number of items fails a graph assertion (``InvalidArgumentError``);
- ``user_interests``: ``history`` -> ``interests`` float32 ``[batch, K, d]``.

The user vector is the mean embedding of the known ids of the history (unknown ids and padding ignored),
scores are dot products with every item. The same arithmetic in numpy (:meth:`ReferenceModel.top_n`)
gives the exact brute-force answer a test compares the server's responses with. The contract's names come
from :mod:`serving.contract`, requests and their answers go through :mod:`serving.client`'s builder and
reader, as a real client's would.

Warm-up files: the trainer's exporter is the one writer of them for real servables, and the server only
reads them (:mod:`serving.warmup`). A toy SavedModel needs one too, and serving may not import the
trainer, so :func:`write_warmup_requests` here is the serving side's only writer of the format: a few
lines that take ready requests (the exporter builds its own), at the path the server reads
(:data:`serving.warmup.WARMUP_PATH`).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import time
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

from serving import client, contract
from serving.client import TopN, top_items  # noqa: F401  (top_items: re-exported for the tests)
from serving.warmup import WARMUP_PATH


@dataclasses.dataclass(frozen=True)
class ReferenceModel:
    """A toy retrieval model's weights, its numpy reference implementation and its SavedModel writer.

    Attributes:
        item_ids: the vocabulary, ``i0``, ``i1``, ...
        embeddings: float32 ``[num_items, dim]`` item embeddings.
        projections: float32 ``[K, dim, dim]``; interest k of a user is ``user_vector @ projections[k]``.
        default_top_n: the ``top_n`` used when a request omits it.
    """

    item_ids: tuple[str, ...]
    embeddings: np.ndarray
    projections: np.ndarray
    default_top_n: int

    @classmethod
    def random(
        cls, seed: int, num_items: int = 50, dim: int = 8, num_interests: int = 2, default_top_n: int = 10
    ) -> ReferenceModel:
        """A model with random weights; different seeds give different rankings."""
        rng = np.random.default_rng(seed)
        return cls(
            item_ids=tuple(f"i{i}" for i in range(num_items)),
            embeddings=rng.normal(size=(num_items, dim)).astype(np.float32),
            projections=rng.normal(size=(num_interests, dim, dim)).astype(np.float32),
            default_top_n=default_top_n,
        )

    def user_vectors(self, histories: Sequence[Sequence[str]]) -> np.ndarray:
        """float32 ``[batch, dim]``: the mean embedding of each history's known ids (zeros if none)."""
        index = {item: i for i, item in enumerate(self.item_ids)}
        vectors = np.zeros((len(histories), self.embeddings.shape[1]), dtype=np.float32)
        for row, history in enumerate(histories):
            known = [index[item] for item in history if item in index]
            if known:
                vectors[row] = self.embeddings[known].sum(axis=0) / np.float32(len(known))
        return vectors

    def top_n(
        self, histories: Sequence[Sequence[str]], n: int | None = None
    ) -> list[list[tuple[str, float]]]:
        """Brute-force top-``n`` ``(item_id, score)`` per history, ties broken by the lower item index."""
        n = self.default_top_n if n is None else n
        scores = self.user_vectors(histories) @ self.embeddings.T
        results = []
        for row in scores:
            order = np.argsort(-row, kind="stable")[:n]
            results.append([(self.item_ids[i], float(row[i])) for i in order])
        return results

    def interests(self, histories: Sequence[Sequence[str]]) -> np.ndarray:
        """float32 ``[batch, K, dim]`` interest vectors."""
        return np.einsum("bd,kde->bke", self.user_vectors(histories), self.projections)

    def save(
        self, base_path: str, version: int, warmup_requests: Iterable[predict_pb2.PredictRequest] = ()
    ) -> str:
        """Writes this model as ``<base_path>/<version>``, atomically (written aside, then renamed).

        Args:
            base_path: the model's base path (created if needed).
            version: the version number.
            warmup_requests: requests for ``assets.extra/tf_serving_warmup_requests``.

        Returns:
            The version directory.
        """
        final = os.path.join(base_path, str(version))
        staging = os.path.join(base_path, f".staging-{version}")
        shutil.rmtree(staging, ignore_errors=True)
        module = _ServingModule(self)
        signatures = {
            contract.RETRIEVAL_SIGNATURE: module.serve,
            contract.INTERESTS_SIGNATURE: module.user_interests,
        }
        tf.saved_model.save(module, staging, signatures=signatures)
        warmup_requests = list(warmup_requests)
        if warmup_requests:
            write_warmup_requests(staging, warmup_requests)
        os.rename(staging, final)
        return final


class _ServingModule(tf.Module):
    """The TensorFlow graph of a :class:`ReferenceModel`."""

    def __init__(self, model: ReferenceModel):
        super().__init__()
        ids = tf.constant(model.item_ids)
        self._table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(ids, tf.range(len(model.item_ids), dtype=tf.int64)), -1
        )
        self._item_ids = tf.Variable(ids, trainable=False)
        self._embeddings = tf.Variable(model.embeddings, trainable=False)
        self._projections = tf.Variable(model.projections, trainable=False)
        self._num_items = len(model.item_ids)
        default_top_n = tf.constant(model.default_top_n, dtype=tf.int32)
        history_spec = tf.TensorSpec([None, None], tf.string, name=contract.HISTORY_INPUT)

        @tf.function(input_signature=[history_spec, tf.TensorSpec([], tf.int32, name=contract.TOP_N_INPUT)])
        def serve(history: tf.Tensor, top_n: tf.Tensor = default_top_n) -> dict[str, tf.Tensor]:
            return self._retrieve(history, top_n)

        @tf.function(input_signature=[history_spec])
        def user_interests(history: tf.Tensor) -> dict[str, tf.Tensor]:
            interests = tf.einsum("bd,kde->bke", self._user_vectors(history), self._projections)
            return {contract.INTERESTS_OUTPUT: interests}

        self.serve = serve
        self.user_interests = user_interests

    def _user_vectors(self, history: tf.Tensor) -> tf.Tensor:
        index = self._table.lookup(history)
        mask = tf.cast(index >= 0, tf.float32)
        embedded = tf.gather(self._embeddings, tf.maximum(index, 0)) * mask[..., tf.newaxis]
        counts = tf.reduce_sum(mask, axis=1, keepdims=True)
        return tf.reduce_sum(embedded, axis=1) / tf.maximum(counts, 1.0)

    def _retrieve(self, history: tf.Tensor, top_n: tf.Tensor) -> dict[str, tf.Tensor]:
        checks = [
            tf.debugging.assert_greater_equal(top_n, 1, message="top_n must be at least 1"),
            tf.debugging.assert_less_equal(
                top_n,
                self._num_items,
                message=f"top_n must be at most the number of items ({self._num_items})",
            ),
        ]
        with tf.control_dependencies(checks):
            scores = tf.matmul(self._user_vectors(history), self._embeddings, transpose_b=True)
            best_scores, best = tf.math.top_k(scores, k=top_n)
        return {
            contract.ITEM_IDS_OUTPUT: tf.gather(self._item_ids, best),
            contract.SCORES_OUTPUT: best_scores,
        }


def write_broken_version(base_path: str, version: int) -> str:
    """Writes ``<base_path>/<version>`` with a corrupt ``saved_model.pb``, which fails to load.

    Returns:
        The version directory.
    """
    path = os.path.join(base_path, str(version))
    os.makedirs(path)
    with open(os.path.join(path, "saved_model.pb"), "wb") as f:
        f.write(b"this is not a SavedModel")
    return path


def write_warmup_requests(export_dir: str, requests: Iterable[predict_pb2.PredictRequest]) -> str:
    """Writes Predict requests as the warm-up file of a SavedModel (see the module docstring).

    Write it before ``saved_model.pb`` is in place (or export to a temporary directory and rename it), so
    a polling server never loads the version without its warm-up requests.

    Args:
        export_dir: the SavedModel (version) directory.
        requests: the requests to replay; the model name and version in their ``model_spec`` are ignored.

    Returns:
        The path of the written file.
    """
    path = os.path.join(export_dir, WARMUP_PATH)
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.TFRecordWriter(path) as writer:
        for request in requests:
            log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())
    return path


def predict_request(
    histories: Sequence[Sequence[str]], top_n: int | None = None, model_name: str = "dmi"
) -> predict_pb2.PredictRequest:
    """A raw retrieval PredictRequest with no ``signature_name``, as a client relying on the default sends.

    Args:
        histories: one sequence of raw item ids per user (padded with ``""``).
        top_n: items per user; None leaves the model's default.
        model_name: the served model.
    """
    return client.predict_request(model_name, histories, signature_name="", top_n=top_n)


def assert_same_top(actual: TopN, expected: TopN) -> None:
    """Same items in the same order, scores equal to float32 precision."""
    assert [[item for item, _ in row] for row in actual] == [[item for item, _ in row] for row in expected]
    actual_scores = [[score for _, score in row] for row in actual]
    expected_scores = [[score for _, score in row] for row in expected]
    np.testing.assert_allclose(actual_scores, expected_scores, rtol=1e-5, atol=1e-6)


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    """Polls ``condition`` every 50 ms; fails the test after ``timeout_s`` seconds."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def resident_memory_mb(pid: int | str = "self") -> float:
    """Resident memory of a process in MB (``VmRSS`` of ``/proc/<pid>/status``; Linux only)."""
    return _proc_status_kb(pid, "VmRSS") / 1024.0


def peak_memory_mb(pid: int | str = "self") -> float:
    """Peak resident memory of a process in MB (``VmHWM``)."""
    return _proc_status_kb(pid, "VmHWM") / 1024.0


def _proc_status_kb(pid: int | str, field: str) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return float(line.split()[1])
    raise OSError(f"/proc/{pid}/status has no {field}")


def unused_port() -> int:
    """A loopback TCP port nothing listens on when this returns."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
