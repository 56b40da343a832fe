"""Server-side batching: concurrent Predict requests merged into one signature run (``--enable_batching``).

Requests can share a run when they use the same signature of the same loaded version and agree on every
input that has no batch dimension (e.g. ``top_n``). Their batch inputs are concatenated along axis 0;
string inputs of different widths are first padded with ``""``, which DMI-Rec models treat as padding
(enable batching only for models where that holds). The outputs are split back by row.

The first request of a batch leads it: it waits up to the timeout (or until the batch is full), runs the
merged inputs and hands each follower its rows; no extra thread is involved. A request with more rows than
the maximum batch size runs alone. If a merged run fails, every request of the batch is run on its own, so
one request's data-dependent error never fails its neighbours and results always equal unbatched ones.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Hashable, Mapping, Sequence

import numpy as np

from serving.server_config import BatchingOptions
from serving.signature import Signature

_STRING_PAD = b""


@dataclasses.dataclass
class _Task:
    """One request waiting for its share of a batch's outputs."""

    inputs: Mapping[str, np.ndarray]
    rows: int
    done: threading.Event = dataclasses.field(default_factory=threading.Event)
    outputs: dict[str, np.ndarray] | None = None
    error: BaseException | None = None


@dataclasses.dataclass
class _Batch:
    """Requests that will run together."""

    signature: Signature
    tasks: list[_Task] = dataclasses.field(default_factory=list)
    rows: int = 0
    closed: bool = False


class BatchingRunner:
    """Runs signatures, merging concurrent compatible requests into one run."""

    def __init__(self, options: BatchingOptions):
        """Creates a runner.

        Args:
            options: the most rows per merged run and how long a batch waits for more requests.
        """
        self._max_rows = options.max_batch_size
        self._timeout_s = options.timeout_s
        self._lock = threading.Lock()
        self._batch_closed = threading.Condition(self._lock)
        self._open: dict[Hashable, _Batch] = {}

    def run(self, signature: Signature, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Runs ``signature`` on ``inputs``, possibly together with other requests.

        Args:
            signature: the signature to run.
            inputs: one array per input alias, as ``Signature.prepare`` returns them.

        Returns:
            This request's outputs, exactly as an unbatched run returns them.

        Raises:
            tf.errors.OpError: the run failed (as an unbatched run would have).
        """
        rows = _rows(signature, inputs)
        if rows is None or rows > self._max_rows:
            return signature(inputs)
        task = _Task(inputs, rows)
        key = _batch_key(signature, inputs)
        with self._lock:
            batch = self._open.get(key)
            if batch is not None and batch.rows + rows > self._max_rows:
                self._close(key, batch)
                batch = None
            leader = batch is None
            if leader:
                batch = self._open[key] = _Batch(signature)
            batch.tasks.append(task)
            batch.rows += rows
            if batch.rows >= self._max_rows:
                self._close(key, batch)
            if leader:
                self._batch_closed.wait_for(lambda: batch.closed, self._timeout_s)
                self._close(key, batch)
        if leader:
            _execute(batch)
        else:
            task.done.wait()
        if task.error is not None:
            raise task.error
        return task.outputs

    def _close(self, key: Hashable, batch: _Batch) -> None:
        """Stops a batch from taking requests; the caller holds the lock."""
        if not batch.closed:
            batch.closed = True
            if self._open.get(key) is batch:
                del self._open[key]
            self._batch_closed.notify_all()


def _rows(signature: Signature, inputs: Mapping[str, np.ndarray]) -> int | None:
    """The request's batch size, or None if it cannot be batched."""
    if not signature.batchable:
        return None
    sizes = {inputs[name].shape[0] for name in signature.batch_input_names}
    return sizes.pop() if len(sizes) == 1 else None


def _batch_key(signature: Signature, inputs: Mapping[str, np.ndarray]) -> Hashable:
    """What requests must share to be merged: the signature, and every value that is not concatenated."""
    parts: list[Hashable] = [signature]
    batch_names = set(signature.batch_input_names)
    for name in sorted(inputs):
        array = inputs[name]
        if name not in batch_names:
            parts.append((name, array.dtype.str, array.shape, _value_key(array)))
        elif array.dtype == object:
            parts.append((name, array.ndim))
        else:
            parts.append((name, array.dtype.str, array.shape[1:]))
    return tuple(parts)


def _value_key(array: np.ndarray) -> Hashable:
    return tuple(array.ravel().tolist()) if array.dtype == object else array.tobytes()


def _execute(batch: _Batch) -> None:
    """Runs a closed batch and gives every task its outputs or error."""
    try:
        if len(batch.tasks) > 1:
            merged = _run_merged(batch)
            if merged is not None:
                for task, outputs in zip(batch.tasks, merged):
                    task.outputs = outputs
                return
        for task in batch.tasks:
            try:
                task.outputs = batch.signature(task.inputs)
            except Exception as e:  # this request's own error, as an unbatched run would raise it
                task.error = e
    except BaseException as e:  # never leave a follower waiting
        for task in batch.tasks:
            if task.outputs is None and task.error is None:
                task.error = e
        raise
    finally:
        for task in batch.tasks:
            task.done.set()


def _run_merged(batch: _Batch) -> list[dict[str, np.ndarray]] | None:
    """Each task's outputs from one merged run, or None if the merged run failed."""
    signature = batch.signature
    inputs = dict(batch.tasks[0].inputs)
    for name in signature.batch_input_names:
        inputs[name] = np.concatenate(_pad_strings([task.inputs[name] for task in batch.tasks]), axis=0)
    try:
        outputs = signature(inputs)
    except Exception:  # retried request by request, so each gets its own result
        return None
    if any(array.ndim == 0 or array.shape[0] != batch.rows for array in outputs.values()):
        return None
    results, start = [], 0
    for task in batch.tasks:
        results.append({name: array[start : start + task.rows] for name, array in outputs.items()})
        start += task.rows
    return results


def _pad_strings(arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Pads string arrays with ``""`` to a common shape beyond axis 0; other arrays are returned unchanged."""
    if arrays[0].dtype != object:
        return list(arrays)
    inner = tuple(max(sizes) for sizes in zip(*(a.shape[1:] for a in arrays)))
    padded = []
    for array in arrays:
        if array.shape[1:] == inner:
            padded.append(array)
            continue
        grown = np.full((array.shape[0], *inner), _STRING_PAD, dtype=object)
        grown[tuple(slice(0, size) for size in array.shape)] = array
        padded.append(grown)
    return padded
