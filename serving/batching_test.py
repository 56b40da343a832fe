"""Tests of serving/batching.py with a fake signature whose runs are recorded."""

from __future__ import annotations

import threading
from collections.abc import Mapping

import numpy as np
import pytest

from serving.batching import BatchingRunner
from serving.server_config import BatchingOptions


class _EchoSignature:
    """Stands in for ``Signature``: output row i is the joined non-padding ids of history row i, plus k."""

    batchable = True
    batch_input_names = ("history",)

    def __init__(self) -> None:
        self.runs: list[tuple[int, ...]] = []
        self._lock = threading.Lock()

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        history = inputs["history"]
        with self._lock:
            self.runs.append(history.shape)
        if (history == b"bad").any():
            raise ValueError("bad item id")
        joined = [b",".join(item for item in row if item) for row in history]
        return {"joined": np.array(joined, dtype=object), "k": np.full(len(history), inputs["k"])}


def _inputs(rows: list[list[str]], k: int = 1) -> dict[str, np.ndarray]:
    """One request: ``rows`` padded with "" to their own common width, and the non-batch input ``k``."""
    width = max(len(row) for row in rows)
    history = np.array([[s.encode() for s in row] + [b""] * (width - len(row)) for row in rows], dtype=object)
    return {"history": history, "k": np.array(k, dtype=np.int32)}


def _run_concurrently(runner: BatchingRunner, signature: _EchoSignature, requests: list[dict]) -> list:
    """Runs every request from its own thread, all released at once; returns outputs or exceptions."""
    results: list = [None] * len(requests)
    start = threading.Barrier(len(requests))

    def call(i: int) -> None:
        start.wait(10)
        try:
            results[i] = runner.run(signature, requests[i])
        except Exception as e:  # recorded for the assertions
            results[i] = e

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    return results


def test_concurrent_requests_share_one_run_and_get_their_own_rows():
    signature = _EchoSignature()
    runner = BatchingRunner(BatchingOptions(max_batch_size=64, timeout_s=0.5))
    requests = [_inputs([["a"] * (i + 1), ["b", "c"]]) for i in range(4)]
    results = _run_concurrently(runner, signature, requests)
    assert signature.runs == [(8, 4)]  # 4 requests x 2 rows, padded to the widest history
    for i, result in enumerate(results):
        assert list(result["joined"]) == [b",".join([b"a"] * (i + 1)), b"b,c"]
        assert list(result["k"]) == [1, 1]


def test_requests_with_different_non_batch_inputs_run_apart():
    signature = _EchoSignature()
    runner = BatchingRunner(BatchingOptions(max_batch_size=64, timeout_s=0.2))
    results = _run_concurrently(runner, signature, [_inputs([["a"]], k=1), _inputs([["a"]], k=2)])
    assert sorted(signature.runs) == [(1, 1), (1, 1)]
    assert [list(r["k"]) for r in results] == [[1], [2]]


def test_full_batches_close_and_oversized_requests_run_alone():
    signature = _EchoSignature()
    runner = BatchingRunner(BatchingOptions(max_batch_size=2, timeout_s=0.5))
    requests = [_inputs([["a"]]) for _ in range(4)] + [_inputs([["x"]] * 3)]
    results = _run_concurrently(runner, signature, requests)
    assert sorted(signature.runs) == [(2, 1), (2, 1), (3, 1)]
    assert list(results[-1]["joined"]) == [b"x"] * 3


def test_a_failing_request_does_not_fail_its_batch_neighbours():
    signature = _EchoSignature()
    runner = BatchingRunner(BatchingOptions(max_batch_size=64, timeout_s=0.5))
    results = _run_concurrently(runner, signature, [_inputs([["a"]]), _inputs([["bad"]]), _inputs([["c"]])])
    assert (3, 1) in signature.runs  # the merged run, which failed and was retried request by request
    assert [list(results[i]["joined"]) for i in (0, 2)] == [[b"a"], [b"c"]]
    with pytest.raises(ValueError, match="bad item id"):
        raise results[1]
