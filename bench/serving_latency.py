"""Serving latency and throughput of the exported servables through gRPC on loopback.

For each catalogue the trained model is exported with :func:`trainer.export.export_servables` (``dmi``:
ScaNN index; ``dmi_exact``: brute force, Eq. 20) into TF Serving's layout, served by ``dmirec serve`` (the
project's TF Serving-compatible server, in a child process on 127.0.0.1) and measured with prebuilt
``PredictRequest`` messages on ``PredictionService.Predict`` (``serving_default``, ``top_n`` = 50):

- latency at batch 1 and batch 32 (p50 / p95 / p99), sequential requests for ``--duration`` seconds;
- throughput with N concurrent clients (one channel and thread each) for ``--duration`` seconds;
- the same signature called in-process on the loaded SavedModel (inputs already tensors): the model's own
  cost, so that gRPC minus in-process is the server's overhead (protos, Python handler, transport). The
  two servables are timed in-process in turns (:func:`interleaved_latency`), but the in-process figures
  are measured before the gRPC ones, not interleaved with them, so on a shared machine that difference
  also holds any change of load in between; :mod:`bench.serving_profile` splits one request's time
  request by request (docs/performance.md, "Serving");
- ScaNN Recall@50 against exact retrieval: the mean share of the exact top 50 that ``dmi`` returns, for
  the same test-user histories through both; every ScaNN setting of a sweep, index build or curve is
  timed in turns with the exact graph of the same catalogue, so its speed-up is a side-by-side ratio.

Two floors are measured in the same run, so that every speed figure also reads as a ratio that the load
of a shared machine moves much less than the absolute time:

- serving floor (:func:`serve_floor`): a trivial server of the same ``PredictionService`` API in a child
  process on loopback, answering each Predict with one pre-built response of a real answer's size, called
  with the same requests by the same client code, interleaved with the servables figure by figure. Every
  gRPC figure carries ``p50_over_floor``; gRPC − in-process − floor is the server's own overhead;
- scoring floor (:func:`scoring_floor_latency`): exact retrieval's arithmetic in numpy/BLAS on the same
  users' interest vectors over the servable's item embeddings; in-process ``dmi_exact`` over it is
  ``dmi_exact_over_scoring_floor_p50``.

Catalogues:

- ``trained`` (labelled ``beauty``): a DMI model trained on Beauty (``--model-dir``, or trained here:
  2,000 steps, ``--quick`` 500), its 12,101 items;
- ``grown`` (labelled ``1m``): the SAME trained model with its item table grown to ``--items``
  (1,000,000) rows: rows 1..12,101 keep the trained Beauty embeddings (so the test histories keep their
  meaning) and the others are synthetic items under synthetic ids, each a trained item's embedding plus
  Gaussian noise as wide as the trained table's own per-dimension spread: variants of real items, so that
  the grown table keeps the neighbourhood structure of a trained one (see :func:`grown_catalogue`);
- ``grown-gaussian`` (labelled ``1m_gaussian``): the same size, the synthetic rows drawn independently
  from a Gaussian with the trained table's per-dimension mean and standard deviation: no structure at all,
  the worst case for a partitioned index (on request; the results before this option used it).

Both measure retrieval COST at that size (and ScaNN's agreement with exact search on such vectors), not
recommendation quality.

If ScaNN's default parameters miss the targets (1M: Recall@50 >= 0.95 vs exact at >= 10x lower latency),
a few ``scann_leaves`` / ``scann_leaves_to_search`` settings are tried in-process and recorded, and the best
is exported and served.

    python -m bench.serving_latency                  # beauty and 1m
    python -m bench.serving_latency --quick          # beauty only, short measurements
    python -m bench.serving_latency --model-dir runs/dmi --catalogues trained
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import math
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TextIO, TypeVar

import numpy as np

from bench import arguments, datasets, plots, run_record, summaries, timing, training

if TYPE_CHECKING:
    import tensorflow as tf
    from matplotlib.axes import Axes
    from tensorflow_serving.apis.predict_pb2 import PredictRequest, PredictResponse

    from bench.datasets import Dataset
    from serving.client import RetrievalClient
    from serving.servable import Servable
    from trainer.config import ModelConfig
    from trainer.model import DMIModel
    from trainer.sequences import Vocabulary

T = TypeVar("T")  # one input of a timed call

MODULE = "bench.serving_latency"
SERVABLE_NAMES = ("dmi_exact", "dmi")
CATALOGUES = ("trained", "grown", "grown-gaussian")
# The synthetic rows of each grown catalogue (see grown_catalogue).
GROWN_ROWS = {"grown": "clustered", "grown-gaussian": "gaussian"}
TOP_N = 50
TARGETS = {
    "beauty_p50_ms": 3.0,
    "beauty_p99_ms": 10.0,
    "scann_recall_at_50": 0.95,
    "scann_speedup": 10.0,
    # Issue 13's ratios, each against a figure of the same run.
    "beauty_p50_over_serving_floor": 5.0,
    "beauty_p99_over_own_p50": 2.0,
    "beauty_in_process_p50_ms": 1.0,
    "exact_over_scoring_floor": 1.5,
    "scann_over_exact_in_process": 0.1,
}
CATALOGUE_NOTE = (
    "The trained Beauty model's user tower with an item table of {items:,} rows: rows 1..{trained:,} are "
    "the trained Beauty embeddings (the test histories keep their meaning), the other {extra:,} rows are "
    "{rows}, under synthetic ids. This measures retrieval cost at that size, not recommendation quality."
)
ROWS_NOTE = {
    "clustered": "variants of trained items (a trained row drawn at random plus Gaussian noise with the "
    "trained table's per-dimension std)",
    "gaussian": "Gaussian with the trained table's per-dimension mean and std (no structure: the worst case "
    "for a partitioned index)",
}


# ----- model and catalogues ----------------------------------------------------------------------------


def trained_model(
    args: argparse.Namespace, dataset: Dataset | None
) -> tuple[ModelConfig, Vocabulary, DMIModel, dict[str, Any]]:
    """``(config, vocabulary, model, info)``: ``--model-dir`` loaded, or a DMI model trained here."""
    from trainer import train as train_lib

    if args.model_dir:
        config, vocabulary, model = train_lib.load_model(args.model_dir)
        return config, vocabulary, model, {"source": os.path.abspath(args.model_dir)}
    steps = args.train_steps or (500 if args.quick else 2000)
    out_dir = os.path.join(args.work_dir, "serving_latency", f"model_{steps}")
    overrides = {"max_steps": steps, "eval_every": min(500, steps), "patience": 10**9}
    run_record.log(f"training dmi on {dataset.name} for {steps} steps into {out_dir}")
    result, record = training.train_run("dmi", dataset.data, overrides, seed=0, out_dir=out_dir)
    info = {
        "source": f"trained here: dmi, {steps} steps on {dataset.name} ({out_dir})",
        "test": record["test"],
        "steps": record["steps"],
        "wall_time_s": record["wall_time_s"],
    }
    return result.config, dataset.data.vocabulary, result.model, info


def model_and_test_histories(
    args: argparse.Namespace,
) -> tuple[Dataset, ModelConfig, Vocabulary, DMIModel, dict[str, Any], list[list[str]]]:
    """``(dataset, config, vocabulary, model, info, histories)``: :func:`trained_model` and the raw ids of
    the test users' histories as the protocol cuts them, their last L items (the requests of a serving
    benchmark; items a loaded model does not know stay in, as in real traffic)."""
    from trainer import data_schema, sequences

    dataset = None if args.model_dir else datasets.load_dataset(args.data, args.beauty_path, args.split_seed)
    config, vocabulary, model, model_info = trained_model(args, dataset)
    if args.sampling_steps is not None and args.sampling_steps != config.num_sampling_steps:
        # The product's own change of S (what `dmirec export --sampling-steps` exports): no weight changes.
        model = model.with_sampling_steps(args.sampling_steps)
        config = model.config
        run_record.log(f"serving with S = {args.sampling_steps} of T = {config.diffusion_steps} DDIM steps")
    if dataset is None:
        dataset = datasets.load_dataset(args.data, args.beauty_path, args.split_seed, vocabulary=vocabulary)
    users = sequences.cut_users(dataset.sequences, data_schema.TEST, args.split_seed)
    histories = [history[-config.max_length :] for _, history, _ in users]
    return dataset, config, vocabulary, model, model_info, histories


def grown_catalogue(
    model: DMIModel, vocabulary: Vocabulary, num_items: int, seed: int, rows: str = "clustered"
) -> tuple[DMIModel, Vocabulary]:
    """The trained model with an item table of ``num_items`` rows (see the module docstring).

    ``rows`` chooses the synthetic rows. ``clustered`` (the default): each is a trained item's embedding
    (drawn uniformly) plus noise ``N(0, diag(sigma^2))`` with ``sigma`` the trained table's per-dimension
    standard deviation. A real catalogue of a million items is not a million independent directions: its
    trained embeddings form neighbourhoods of related items, which is what partitioned indexes (ScaNN's
    tree, IVF) exploit and what ScaNN's published benchmarks (GloVe, SIFT) have. Noise as wide as the whole
    table's spread keeps the variants far from copies (a variant is about as far from its source as two
    unrelated trained items are from each other), so the index still has to separate close candidates.
    ``gaussian``: independent rows with the trained table's per-dimension mean and std, no structure at
    all (in 64 dimensions every point is nearly as far as every other: the worst case for any index that
    searches a fraction of its partitions).
    """
    from trainer.sequences import Vocabulary
    from trainer.train import build_model

    trained = model.item_table.numpy()
    if num_items <= model.num_items:
        raise ValueError(f"--items ({num_items:,}) must exceed the trained catalogue ({model.num_items:,})")
    if rows not in ROWS_NOTE:
        raise ValueError(f"unknown grown rows {rows!r}: one of {', '.join(ROWS_NOTE)}")
    known = trained[1:]
    rng = np.random.default_rng(seed)
    count = num_items - model.num_items
    std = known.std(axis=0, keepdims=True)
    noise = rng.standard_normal((count, known.shape[1]), dtype=np.float32) * std
    if rows == "clustered":
        extra = known[rng.integers(0, len(known), count)] + noise
    else:
        extra = noise + known.mean(axis=0, keepdims=True)
    table = np.concatenate([trained, extra.astype(np.float32)])
    big_vocabulary = Vocabulary(
        vocabulary.item_ids + tuple(f"synthetic-{i}" for i in range(model.num_items + 1, num_items + 1)),
        vocabulary.counts + (0,) * count,
    )
    big = build_model(model.config, big_vocabulary)
    position = [w.ref() for w in model.weights].index(model.item_table.ref())
    weights = model.get_weights()
    weights[position] = table
    big.set_weights(weights)
    return big, big_vocabulary


def size_label(items: int) -> str:
    """1000000 -> ``1m``, 20000 -> ``20k``."""
    if items % 1_000_000 == 0:
        return f"{items // 1_000_000}m"
    if items % 1000 == 0:
        return f"{items // 1000}k"
    return str(items)


def export_layout(
    model: DMIModel, vocabulary: Vocabulary, directory: str, max_top_n: int, leaves: int | None, searched: int | None
) -> tuple[dict[str, str], dict[str, Any]]:
    """Exports both servables and pushes them as version 1 of ``<directory>/serving/<name>`` (the product's
    exporter and pusher, as the pipeline's Trainer and Pusher run them).

    Returns:
      ``{servable name: version directory}`` and ``{"export_seconds", "size_mb"}``.
    """
    from trainer import export, push
    from trainer.export_settings import ExportSettings

    export_dir = os.path.join(directory, "export")
    serving = os.path.join(directory, "serving")
    shutil.rmtree(export_dir, ignore_errors=True)
    shutil.rmtree(serving, ignore_errors=True)
    started = time.perf_counter()
    export.export_servables(
        model,
        vocabulary,
        export_dir,
        ExportSettings(scann_leaves=leaves, scann_leaves_to_search=searched),
        top_n=TOP_N,
        max_top_n=max_top_n,
    )
    seconds = time.perf_counter() - started
    version = push.push_servables(export_dir, serving, version=1)
    shutil.rmtree(export_dir, ignore_errors=True)
    layout = {name: os.path.join(serving, name, str(version)) for name in sorted(os.listdir(serving))}
    sizes = {name: round(_directory_bytes(path) / 2**20, 1) for name, path in layout.items()}
    return layout, {"export_seconds": round(seconds, 1), "size_mb": sizes}


def _directory_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(path) for f in files)


def chunks(histories: Sequence[Sequence[str]], batch: int) -> list[Sequence[Sequence[str]]]:
    return [histories[i : i + batch] for i in range(0, len(histories) - batch + 1, batch)]


# ----- in-process ---------------------------------------------------------------------------------------


def string_tensor(histories: Sequence[Sequence[str]]) -> tf.Tensor:
    import tensorflow as tf

    from serving.client import history_array

    return tf.constant(history_array(histories), dtype=tf.string)


def saved_model_function(path: str) -> tuple[Servable, Callable[[tf.Tensor], Mapping[str, tf.Tensor]]]:
    """Loads a SavedModel as the server does; returns it (keep it alive) and ``history tensor -> outputs``
    of serving_default.

    The signature is called as the server calls it (:meth:`serving.signature.Signature.call_tensors`:
    TensorFlow's flat call with ready tensors), not through the keyword call of ``loaded.signatures``,
    which binds the keywords to the structured signature again on every call: 0.13-0.21 ms more per
    Beauty request on this machine (docs/performance.md), work that neither this project's server nor TF
    Serving's C++ ``Session::Run`` does.
    """
    import tensorflow as tf

    from serving import contract
    from serving.servable import Servable

    servable = Servable.load(os.path.basename(path), 1, path)
    signature = servable.signature(contract.RETRIEVAL_SIGNATURE)
    options = {
        contract.TOP_N_INPUT: tf.constant(TOP_N, tf.int32),
        contract.EXCLUDE_HISTORY_INPUT: tf.constant(False),
    }
    return servable, lambda history: signature.call_tensors({contract.HISTORY_INPUT: history, **options})


def servable_function(
    model: DMIModel, vocabulary: Vocabulary, max_top_n: int, scann: tuple[int, int] | None
) -> Callable[[tf.Tensor], dict[str, tf.Tensor]]:
    """A serving graph built in memory (no SavedModel), for the parameter sweep: ScaNN with
    ``scann = (leaves, leaves_to_search)``, or exact retrieval when None."""
    import tempfile

    import tensorflow as tf

    from trainer.export import ITEM_VOCABULARY_FILE, RetrievalServable, write_vocabulary_file

    leaves, searched = scann or (None, None)
    with tempfile.TemporaryDirectory() as directory:  # read when the lookup tables are built, right here
        vocabulary_file = write_vocabulary_file(vocabulary, os.path.join(directory, ITEM_VOCABULARY_FILE))
        servable = RetrievalServable(
            model, vocabulary, vocabulary_file, TOP_N, max_top_n, scann is not None, leaves, searched
        )
    function = tf.function(
        lambda history: servable.retrieve(history, tf.constant(TOP_N), tf.constant(False)),
        input_signature=[tf.TensorSpec([None, None], tf.string)],
        autograph=False,
    )
    function.servable = servable  # keep the index alive with the function
    return function


def top_ids(function: Callable[[tf.Tensor], dict[str, tf.Tensor]], batches: Sequence[tf.Tensor]) -> list[np.ndarray]:
    from serving import contract

    return [np.asarray(function(batch)[contract.ITEM_IDS_OUTPUT]) for batch in batches]


def recall_vs_exact(exact: Sequence[np.ndarray], approximate: Sequence[np.ndarray]) -> float:
    """Mean over users of |approximate top-N ∩ exact top-N| / N."""
    overlaps = [
        len(set(a_row.tolist()) & set(e_row.tolist())) / len(e_row)
        for e_batch, a_batch in zip(exact, approximate)
        for e_row, a_row in zip(e_batch, a_batch)
    ]
    return float(np.mean(overlaps))


def _top_ids_call(function: Callable[[tf.Tensor], Mapping[str, tf.Tensor]]) -> Callable[[tf.Tensor], np.ndarray]:
    """A serving function's call as a client sees it: the top ids, as numpy (the outputs computed)."""
    from serving import contract

    return lambda history: function(history)[contract.ITEM_IDS_OUTPUT].numpy()


def _timed_loop(
    call: Callable[[T], object], inputs: Sequence[T], duration: float, warmup: int = 10, at_least: int = 20
) -> list[float]:
    """Times sequential calls for ``duration`` seconds (at least ``at_least`` calls), after ``warmup`` untimed
    ones."""
    for i in range(warmup):
        call(inputs[i % len(inputs)])
    seconds: list[float] = []
    deadline = time.perf_counter() + duration
    i = 0
    while time.perf_counter() < deadline or len(seconds) < at_least:
        start = time.perf_counter()
        call(inputs[i % len(inputs)])
        seconds.append(time.perf_counter() - start)
        i += 1
    return seconds


def interleaved_latency(
    calls: Mapping[str, Callable[[T], object]],
    inputs: Sequence[T],
    duration: float,
    rounds: int = 5,
    warmup: int = 10,
) -> dict[str, dict[str, Any]]:
    """Latency summaries of several calls timed in turns: each call is timed for ``duration`` seconds in
    all (and at least 20 calls), in ``rounds`` turns, after ``warmup`` untimed calls before its first.

    A ratio of two of them (ScaNN over exact) is then measured side by side: a change of the shared
    machine's speed during the measurement moves both alike (a slow minute otherwise lands on one side:
    the same ScaNN setting read 4.0-7.5 ms p50 over five builds timed one after the other).
    """
    seconds: dict[str, list[float]] = {name: [] for name in calls}
    for round_ in range(rounds):
        for name, call in calls.items():
            seconds[name] += _timed_loop(
                call, inputs, duration / rounds, warmup if round_ == 0 else 1, at_least=-(-20 // rounds)
            )
    return {name: timing.latency_summary(values) for name, values in seconds.items()}


# ----- gRPC ---------------------------------------------------------------------------------------------


def free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """``dmirec serve`` in a child process on 127.0.0.1, serving every servable of a layout."""

    def __init__(
        self,
        layout: Mapping[str, str],
        log_path: str,
        threads: tuple[int, int] = (0, 0),
        startup_timeout_s: float = 900.0,
        poll_s: float = 0.0,
        flags: Sequence[str] = (),
    ):
        """
        Args:
          layout: ``{servable name: version directory}`` (the base path is its parent).
          log_path: the child's stdout and stderr; its ``models.config`` is written beside it.
          threads: TensorFlow ``(intra-op, inter-op)`` threads of the server (0: TensorFlow's choice).
          startup_timeout_s: how long to wait for every servable to be AVAILABLE.
          poll_s: ``--file_system_poll_wait_seconds`` (0: scan once).
          flags: more ``dmirec serve`` flags, e.g. ``("--enable_batching",)``.
        """
        self.flags = tuple(flags)
        self.layout = dict(layout)
        self.poll_s = poll_s
        self.threads = threads
        self.log_path = log_path
        self.startup_timeout_s = startup_timeout_s
        self.address = ""
        self.startup_seconds = 0.0
        self._process: subprocess.Popen | None = None
        self._log: TextIO | None = None

    def command(self, port: int) -> list[str]:
        """The child's command line (after writing the files it reads)."""
        from serving.server_config import ServedModel, write_model_config_file

        config_path = os.path.join(os.path.dirname(self.log_path), "models.config")
        models = [ServedModel(name, os.path.dirname(os.path.abspath(path))) for name, path in self.layout.items()]
        write_model_config_file(config_path, models)
        return [
            sys.executable, "-m", "pipeline.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
            "--model_config_file", config_path, "--file_system_poll_wait_seconds", str(self.poll_s),
            "--tensorflow_intra_op_parallelism", str(self.threads[0]),
            "--tensorflow_inter_op_parallelism", str(self.threads[1]), *self.flags,
        ]  # fmt: skip

    def serving(self, name: str) -> bool:
        """Whether the child answers for ``name`` yet."""
        from serving.client import RetrievalClient, ServingError

        try:
            with RetrievalClient(self.address, name, timeout_s=2.0) as client:
                return any(status.state == "AVAILABLE" for status in client.status())
        except ServingError:
            return False

    def __enter__(self) -> "ServerProcess":
        port = free_port()
        self.address = f"127.0.0.1:{port}"
        command = self.command(port)
        self._log = open(self.log_path, "w", encoding="utf-8")
        started = time.perf_counter()
        self._process = subprocess.Popen(
            command,
            cwd=run_record.REPO_ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = started + self.startup_timeout_s
        pending = set(self.layout)
        while pending:
            if self._process.poll() is not None:
                self.__exit__()
                raise RuntimeError(f"the server exited with {self._process.returncode}; see {self.log_path}")
            if time.perf_counter() > deadline:
                self.__exit__()
                raise TimeoutError(f"the server did not serve {sorted(pending)} in time; see {self.log_path}")
            pending = {name for name in pending if not self.serving(name)}
            if pending:
                time.sleep(1.0)
        self.startup_seconds = time.perf_counter() - started
        return self

    @property
    def pid(self) -> int:
        """The server's process id."""
        if self._process is None:
            raise RuntimeError("the server is not started")
        return self._process.pid

    def kill(self) -> None:
        """``kill -9``: no chance to clean up, as a crash or an OOM kill."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()

    def __exit__(self, *exc_info: object) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGINT)
            try:
                self._process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None


# ----- floors -------------------------------------------------------------------------------------------

FLOOR_NAME = "floor"
FLOOR_RESPONSE_FILE = "floor_response_{rows}.pb"
SERVING_FLOOR_NOTE = (
    "serving floor: a trivial server of the same gRPC API (PredictionService, grpcio's generated servicer, "
    "the real server's thread pool and message limits) in a child process on 127.0.0.1, answering every "
    "Predict with one pre-built PredictResponse the size of a real answer (the exact top-50 ids of a "
    "test user, 50 float32 scores; 32 rows for batch-32 requests); called with the same requests by the "
    "same client code. `/ floor` = p50 over its p50 (the same batch or clients), measured interleaved."
)
SCORING_FLOOR_NOTE = (
    "scoring floor: numpy {blas} for a user's K interest vectors Z (K x d, from the servable's "
    "user_interests) over the N item embeddings E (N x d): scores = Z @ E.T, max over K, np.argpartition "
    "of the top 50 and a sort of those 50; timed as the in-process servable (the same users, batch 1)."
)


def floor_responses(item_ids: np.ndarray, rows: Sequence[int], seed: int = 0) -> dict[int, bytes]:
    """Serialized ``PredictResponse`` messages of ``rows`` rows, as the real server builds one.

    Args:
      item_ids: ``[>= max(rows), top_n]`` bytes, real top-N ids (the rows are repeated if too few).
      rows: the batch sizes to answer.
      seed: of the (meaningless) scores.
    """
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    from serving import contract

    rng = np.random.default_rng(seed)
    out = {}
    for count in rows:
        ids = np.resize(np.asarray(item_ids, dtype=object), (count, item_ids.shape[1]))
        scores = np.sort(rng.standard_normal(ids.shape).astype(np.float32), axis=1)[:, ::-1]
        response = predict_pb2.PredictResponse()
        response.model_spec.name = FLOOR_NAME
        response.model_spec.version.value = 1
        response.model_spec.signature_name = contract.RETRIEVAL_SIGNATURE
        response.outputs[contract.ITEM_IDS_OUTPUT].CopyFrom(tf.make_tensor_proto(ids))
        response.outputs[contract.SCORES_OUTPUT].CopyFrom(tf.make_tensor_proto(np.ascontiguousarray(scores)))
        out[count] = response.SerializeToString()
    return out


class FloorServerProcess(ServerProcess):
    """The serving floor (:func:`serve_floor`) in a child process on 127.0.0.1, started as the real server."""

    def __init__(self, responses: Mapping[int, bytes], log_path: str, startup_timeout_s: float = 300.0):
        super().__init__({FLOOR_NAME: ""}, log_path, startup_timeout_s=startup_timeout_s)
        self.responses = dict(responses)

    def command(self, port: int) -> list[str]:
        directory = os.path.join(os.path.dirname(self.log_path), "floor")
        os.makedirs(directory, exist_ok=True)
        for rows, data in self.responses.items():
            with open(os.path.join(directory, FLOOR_RESPONSE_FILE.format(rows=rows)), "wb") as f:
                f.write(data)
        return [sys.executable, "-m", MODULE, "--floor-server", directory, "--floor-port", str(port)]

    def serving(self, name: str) -> bool:
        from serving.client import RetrievalClient, ServingError, predict_request

        try:
            with RetrievalClient(self.address, FLOOR_NAME, timeout_s=2.0) as client:
                client.predict(predict_request(FLOOR_NAME, [["x"]]))
            return True
        except ServingError:
            return False


def serve_floor(directory: str, port: int) -> int:
    """The serving floor's process: PredictionService answering each Predict with a pre-built response
    (the one of the request's row count, else the first), until SIGINT or SIGTERM.

    The same gRPC server set-up as :class:`serving.server.ModelServer` (thread pool size, message
    limits), none of its work: no model, no validation, no tensors.
    """
    import concurrent.futures

    import grpc
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from serving import contract
    from serving.server_config import DEFAULT_MAX_MESSAGE_BYTES, ServerOptions

    responses = {}
    for name in sorted(os.listdir(directory)):
        rows = int(name.split("_")[-1].split(".")[0])
        with open(os.path.join(directory, name), "rb") as f:
            responses[rows] = predict_pb2.PredictResponse.FromString(f.read())
    first = responses[min(responses)]
    workers = {f.name: f.default for f in dataclasses.fields(ServerOptions)}["max_workers"]  # the server's

    class Floor(prediction_service_pb2_grpc.PredictionServiceServicer):
        def Predict(self, request: PredictRequest, context: grpc.ServicerContext) -> PredictResponse:
            dims = request.inputs[contract.HISTORY_INPUT].tensor_shape.dim
            return responses.get(dims[0].size if dims else 0, first)

    server = grpc.server(
        concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="rpc"),
        options=[
            ("grpc.max_send_message_length", DEFAULT_MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", DEFAULT_MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
        ],
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Floor(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    print(f"serving floor on 127.0.0.1:{port}, responses for rows {sorted(responses)}", flush=True)
    stop.wait()
    server.stop(5).wait()
    return 0


def scoring_floor_latency(
    interests: Sequence[np.ndarray], item_embeddings: np.ndarray, duration: float, threads: int, top_n: int = TOP_N
) -> dict[str, Any]:
    """Batch-1 latency of exact retrieval in numpy/BLAS: the cost of the arithmetic alone.

    Args:
      interests: one ``[K, d]`` float32 array per request (a user's interest vectors).
      item_embeddings: ``[N, d]`` float32, the retrievable items (no padding row).
      duration: seconds of timed calls (as :func:`interleaved_latency`).
      threads: BLAS threads (0: the library's default), as the servable's intra-op threads.
    """
    embeddings_t = np.ascontiguousarray(item_embeddings, dtype=np.float32).T

    def top(z: np.ndarray) -> np.ndarray:
        scores = (z @ embeddings_t).max(axis=0)
        best = np.argpartition(-scores, top_n)[:top_n]
        return best[np.argsort(-scores[best], kind="stable")]

    with _blas_threads(threads) as used:
        seconds = _timed_loop(top, list(interests), duration)
    return {**timing.latency_summary(seconds), "blas_threads": used, "items": int(item_embeddings.shape[0])}


@contextlib.contextmanager
def _blas_threads(threads: int) -> Iterator[int | None]:
    """Limits BLAS to ``threads`` (threadpoolctl, when installed); yields the count in use or None."""
    try:
        import threadpoolctl
    except ImportError:
        yield None
        return
    if threads > 0:
        with threadpoolctl.threadpool_limits(limits=threads, user_api="blas"):
            yield threads
    else:
        info = threadpoolctl.threadpool_info()
        yield max((i.get("num_threads", 0) for i in info if i.get("user_api") == "blas"), default=None)


def predict_requests(name: str, batches: Sequence[Sequence[Sequence[str]]]) -> list[PredictRequest]:
    """Prebuilt ``PredictRequest`` messages for ``serving_default`` with ``top_n`` = 50 (the client's own)."""
    from serving.client import predict_request

    return [predict_request(name, batch, top_n=TOP_N) for batch in batches]


def client_for(address: str) -> RetrievalClient:
    """The product's client (its channel options and error mapping), for pre-built requests."""
    from serving.client import RetrievalClient

    return RetrievalClient(address, "", timeout_s=60.0)


def grpc_latency(address: str, requests: Sequence[PredictRequest], duration: float) -> dict[str, Any]:
    """Sequential requests on one channel for ``duration`` seconds (after 20 warm-up requests)."""
    from serving import contract

    with client_for(address) as client:
        response = client.predict(requests[0])
        rows = requests[0].inputs[contract.HISTORY_INPUT].tensor_shape.dim[0].size
        shape = [d.size for d in response.outputs[contract.ITEM_IDS_OUTPUT].tensor_shape.dim]
        if shape != [rows, TOP_N]:
            raise RuntimeError(f"unexpected response shape {shape} for {rows} rows")
        seconds = _timed_loop(client.predict, requests, duration, warmup=20)
    return timing.latency_summary(seconds)


def run_clients(
    address: str,
    requests: Sequence[PredictRequest],
    clients: int,
    load: Callable[[RetrievalClient, int, float], list[float]],
    warmup: int = 3,
) -> tuple[list[list[float]], float]:
    """``clients`` threads, each with its own channel, released together: what every load test shares.

    Each client sends ``warmup`` requests (so that its channel is up), waits for all the others, and from
    the common release time on runs ``load(connection, index, release)``, which returns the latencies it
    timed (s). The release time is taken when the last client is ready, so that no schedule starts late.

    Returns:
      The latencies of each client, and the release time (``time.perf_counter()``).

    Raises:
      RuntimeError: a client failed (the others are released and joined first).
    """
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors: list[BaseException] = []
    release: list[float] = []
    barrier = threading.Barrier(clients + 1, action=lambda: release.append(time.perf_counter() + 0.01))

    def client(index: int) -> None:
        try:
            with client_for(address) as connection:
                for k in range(warmup):
                    connection.predict(requests[(index + k) % len(requests)])
                barrier.wait()
                pause = release[0] - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
                latencies[index] = load(connection, index, release[0])
        except BaseException as e:  # reported below
            errors.append(e)
            with contextlib.suppress(threading.BrokenBarrierError):
                barrier.abort()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    with contextlib.suppress(threading.BrokenBarrierError):
        barrier.wait()
    for thread in threads:
        thread.join()
    if errors:
        raise RuntimeError(f"a client failed: {errors[0]!r}")
    return latencies, release[0]


def grpc_throughput(
    address: str, requests: Sequence[PredictRequest], clients: int, duration: float
) -> dict[str, Any]:
    """``clients`` threads, each with its own channel, sending back-to-back for ``duration`` seconds."""
    from serving import contract

    rows = requests[0].inputs[contract.HISTORY_INPUT].tensor_shape.dim[0].size

    def back_to_back(connection: RetrievalClient, index: int, release: float) -> list[float]:
        seconds = []
        deadline = release + duration
        k = index
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            connection.predict(requests[k % len(requests)])
            seconds.append(time.perf_counter() - start)
            k += clients
        return seconds

    latencies, release = run_clients(address, requests, clients, back_to_back)
    elapsed = time.perf_counter() - release
    done = sum(len(x) for x in latencies)
    return {
        "clients": clients,
        "batch": rows,
        "requests": done,
        "seconds": round(elapsed, 2),
        "requests_per_s": round(done / elapsed, 1),
        "rows_per_s": round(done * rows / elapsed, 1),
        "latency": timing.latency_summary([s for x in latencies for s in x]),
    }


# ----- one catalogue ------------------------------------------------------------------------------------


@dataclasses.dataclass
class Inputs:
    """The requests of one run: the same test-user histories for every servable and path.

    Attributes:
      single: batch-1 history tensors (in-process calls).
      batched: batch-32 history tensors.
      recall: batch-32 tensors of the users scored for ScaNN's recall against exact retrieval.
      single_raw: the batch-1 histories as raw ids (gRPC requests).
      batched_raw: the batch-32 histories as raw ids.
    """

    single: list[tf.Tensor]
    batched: list[tf.Tensor]
    recall: list[tf.Tensor]
    single_raw: list[list[Sequence[str]]]
    batched_raw: list[Sequence[Sequence[str]]]

    @classmethod
    def from_histories(cls, histories: Sequence[Sequence[str]], recall_users: int) -> "Inputs":
        batched_raw = chunks(histories, 32)[:50]
        single_raw = [[h] for h in histories[:500]]
        return cls(
            single=[string_tensor(h) for h in single_raw],
            batched=[string_tensor(b) for b in batched_raw],
            recall=[string_tensor(b) for b in chunks(histories[:recall_users], 32)],
            single_raw=single_raw,
            batched_raw=batched_raw,
        )


def measure_saved_models(
    layout: Mapping[str, str],
    inputs: Inputs,
    duration: float,
    item_embeddings: np.ndarray | None = None,
    blas_threads: int = 0,
) -> dict[str, Any]:
    """Loads both SavedModels in this process: latency, the user tower's latency, top-50 ids of the
    recall users (``exact_ids`` / ``scann_ids``, numpy, not for the result file) and, given the item
    embeddings, the scoring floor (:func:`scoring_floor_latency`) on the users' interest vectors."""
    from serving import contract

    loaded = {name: saved_model_function(path) for name, path in layout.items()}
    tops = {name: _top_ids_call(function) for name, (_, function) in loaded.items()}
    out: dict[str, Any] = {
        "exact_ids": top_ids(loaded["dmi_exact"][1], inputs.recall),
        "scann_ids": top_ids(loaded["dmi"][1], inputs.recall),
        "in_process": {
            name: {"batch_1": latency}
            for name, latency in interleaved_latency(tops, inputs.single, duration).items()
        },
    }
    if inputs.batched:
        for name, latency in interleaved_latency(tops, inputs.batched, duration, warmup=3).items():
            out["in_process"][name]["batch_32"] = latency
    interests = loaded["dmi_exact"][0].signature(contract.INTERESTS_SIGNATURE)

    def tower(history: tf.Tensor) -> np.ndarray:
        return interests.call_tensors({contract.HISTORY_INPUT: history})[contract.INTERESTS_OUTPUT].numpy()

    seconds = _timed_loop(tower, inputs.single, duration)
    out["user_interests"] = {
        "batch_1": timing.latency_summary(seconds),
        "note": "the user tower alone (signature user_interests: id lookup, extractor, DDIM refinement)",
    }
    if item_embeddings is not None:
        vectors = [tower(history)[0] for history in inputs.single]
        out["scoring_floor"] = scoring_floor_latency(vectors, item_embeddings, duration, blas_threads)
    del loaded
    gc.collect()
    return out


def sweep_scann(
    model: DMIModel,
    vocabulary: Vocabulary,
    max_top_n: int,
    grid: Sequence[tuple[int, int]],
    inputs: Inputs,
    exact_ids: Sequence[np.ndarray],
    duration: float,
) -> list[dict[str, Any]]:
    """ScaNN recall against exact and batch-1 latency for each ``(leaves, leaves_to_search)``, in-process.

    Each setting is timed in turns with the exact graph of the same catalogue (:func:`interleaved_latency`),
    built in memory as the ScaNN one is, so that its speed-up over exact is a ratio measured side by side.
    """
    exact = _top_ids_call(servable_function(model, vocabulary, max_top_n, None))
    rows = []
    for leaves, searched in grid:
        run_record.log(f"  ScaNN sweep: leaves {leaves}, leaves_to_search {searched}")
        built = time.perf_counter()
        function = servable_function(model, vocabulary, max_top_n, (leaves, searched))
        function(inputs.recall[0])
        build_seconds = time.perf_counter() - built
        timed = interleaved_latency({"scann": _top_ids_call(function), "exact": exact}, inputs.single, duration)
        latency = timed["scann"]
        rows.append(
            {
                "scann_leaves": leaves,
                "scann_leaves_to_search": searched,
                "default": False,
                "build_and_trace_seconds": round(build_seconds, 1),
                "recall_at_50_vs_exact": recall_vs_exact(exact_ids, top_ids(function, inputs.recall)),
                "in_process_batch_1": latency,
                "exact_in_process_batch_1": timed["exact"],
                "speedup_p50": timed["exact"]["p50_ms"] / latency["p50_ms"],
            }
        )
        run_record.log(
            f"   recall {rows[-1]['recall_at_50_vs_exact']:.4f}, p50 {latency['p50_ms']:.2f} ms "
            f"(exact beside it {timed['exact']['p50_ms']:.2f} ms)"
        )
        del function
        gc.collect()
    return rows


def measure_grpc(
    layout: Mapping[str, str],
    inputs: Inputs,
    log_path: str,
    threads: tuple[int, int],
    args: argparse.Namespace,
    floor_ids: np.ndarray | None = None,
) -> dict[str, Any]:
    """Serves the layout from a child ``dmirec serve`` and measures each servable through gRPC.

    Given ``floor_ids`` (``[32, top_n]`` real top-N ids), the serving floor (:class:`FloorServerProcess`)
    runs beside it and is measured with the same requests (``dmi_exact``'s), interleaved with the
    servables figure by figure (batch 1, batch 32, then each client count), so that a change of load on
    the machine moves the floor as it moves the servables; each gRPC figure then carries its
    ``p50_over_floor``.
    """
    out: dict[str, Any] = {"grpc": {name: {"throughput_batch_1": []} for name in SERVABLE_NAMES}}
    requests = {
        name: {
            "batch_1": predict_requests(name, inputs.single_raw),
            "batch_32": predict_requests(name, inputs.batched_raw),
        }
        for name in SERVABLE_NAMES
    }
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(ServerProcess(layout, log_path, threads))
        out["server_startup_seconds"] = round(server.startup_seconds, 1)
        targets: dict[str, tuple[str, dict[str, list[PredictRequest]]]] = {
            name: (server.address, requests[name]) for name in SERVABLE_NAMES
        }
        if floor_ids is not None:
            rows = sorted({len(inputs.single_raw[0]), *(len(b) for b in inputs.batched_raw[:1])})
            responses = floor_responses(floor_ids, rows)
            floor_log = os.path.join(os.path.dirname(log_path), "floor_server.log")
            floor = stack.enter_context(FloorServerProcess(responses, floor_log))
            targets = {FLOOR_NAME: (floor.address, requests["dmi_exact"]), **targets}
            out["serving_floor"] = {"throughput_batch_1": [], "note": SERVING_FLOOR_NOTE}
        figures = {name: out["serving_floor"] if name == FLOOR_NAME else out["grpc"][name] for name in targets}
        for batch in ("batch_1", "batch_32"):
            run_record.log(f"  gRPC latency at {batch.replace('_', ' ')}: {', '.join(targets)}")
            for name, (address, named) in targets.items():
                figures[name][batch] = grpc_latency(address, named[batch], args.duration)
        for clients in args.clients:
            run_record.log(f"  gRPC throughput with {clients} clients: {', '.join(targets)}")
            for name, (address, named) in targets.items():
                figures[name]["throughput_batch_1"].append(
                    grpc_throughput(address, named["batch_1"], clients, args.duration)
                )
    if floor_ids is not None:
        add_floor_ratios(out["grpc"], out["serving_floor"])
    for name in SERVABLE_NAMES:
        run_record.log(f"   {name}: p50 {out['grpc'][name]['batch_1']['p50_ms']:.2f} ms at batch 1")
    return out


def add_floor_ratios(grpc: Mapping[str, Any], floor: Mapping[str, Any]) -> None:
    """Adds ``p50_over_floor`` (p50 / the floor's p50 at the same batch or client count) to each figure."""
    floor_throughput = {t["clients"]: t["latency"] for t in floor["throughput_batch_1"]}
    for figures in grpc.values():
        for batch in ("batch_1", "batch_32"):
            if batch in figures and batch in floor:
                figures[batch]["p50_over_floor"] = _ratio(figures[batch]["p50_ms"], floor[batch]["p50_ms"])
        for t in figures.get("throughput_batch_1", []):
            if t["clients"] in floor_throughput:
                floor_p50 = floor_throughput[t["clients"]]["p50_ms"]
                t["latency"]["p50_over_floor"] = _ratio(t["latency"]["p50_ms"], floor_p50)


def _ratio(value: float, floor: float) -> float | None:
    return round(value / floor, 2) if floor else None


def measure_catalogue(
    label: str,
    model: DMIModel,
    vocabulary: Vocabulary,
    histories: Sequence[Sequence[str]],
    args: argparse.Namespace,
    note: str | None = None,
    grown: bool = False,
) -> dict[str, Any]:
    """Export, in-process measurements, the ScaNN check (and sweep), then gRPC through the server.

    Args:
      label: the catalogue's name in the result (``beauty``, ``1m``).
      model: the model to export.
      vocabulary: its vocabulary.
      histories: test-user histories (raw ids), the same for every measurement.
      args: the command line.
      note: what the catalogue is, for the result file.
      grown: the catalogue is the grown one (the ScaNN speed-up target applies to it).
    """
    import scann  # noqa: F401  (registers the ScaNN ops before a SavedModel holding an index is loaded)

    directory = os.path.join(args.work_dir, "serving_latency", label)
    os.makedirs(directory, exist_ok=True)
    max_top_n = min(args.max_top_n, model.num_items)
    from trainer.export import scann_parameters

    _, leaves, searched = scann_parameters(model.num_items, max_top_n, model.config.max_length)
    result: dict[str, Any] = {"items": model.num_items, "max_top_n": max_top_n, "top_n": TOP_N}
    if note:
        result["note"] = note
    inputs = Inputs.from_histories(histories, args.recall_users)

    run_record.log(
        f"[{label}] exporting {model.num_items:,} items (ScaNN leaves {leaves}, searched {searched})"
    )
    layout, export_info = export_layout(model, vocabulary, directory, max_top_n, None, None)
    result["export"] = {**export_info, "scann_leaves": leaves, "scann_leaves_to_search": searched}
    run_record.log(f"[{label}] in-process latency, ScaNN recall@{TOP_N} vs exact ({args.recall_users} users)")
    item_embeddings = model.item_table.numpy()[1:]  # the retrievable rows (0 pads)
    floor_args = (item_embeddings, args.intra_op_threads)
    measured = measure_saved_models(layout, inputs, args.duration, *floor_args)
    exact_ids = measured["exact_ids"]
    recall = recall_vs_exact(exact_ids, measured["scann_ids"])
    result["in_process"] = measured["in_process"]
    result["in_process_user_interests"] = measured["user_interests"]
    result["scoring_floor"] = measured["scoring_floor"]
    result["recall_users"] = sum(len(batch) for batch in exact_ids)
    result["scann_recall_at_50_vs_exact"] = recall
    speedup = _speedup(result["in_process"])
    run_record.log(f"[{label}] ScaNN recall@50 vs exact {recall:.4f}, in-process speed-up x{speedup:.1f}")

    grid = args.scann_sweep
    if grid is None:
        grid = _auto_sweep((leaves, searched), recall, speedup, grown, args.quick)
    if grid:
        default_row = {
            "scann_leaves": leaves,
            "scann_leaves_to_search": searched,
            "default": True,
            "recall_at_50_vs_exact": recall,
            "in_process_batch_1": result["in_process"]["dmi"]["batch_1"],
            "speedup_p50": speedup,
        }
        run_record.log(f"[{label}] sweeping ScaNN parameters: {grid}")
        result["sweep"] = [default_row] + sweep_scann(
            model, vocabulary, max_top_n, grid, inputs, exact_ids, args.duration
        )
        chosen = _choose(result["sweep"])
        result["chosen_scann"] = {k: chosen[k] for k in ("scann_leaves", "scann_leaves_to_search")}
        if not chosen["default"]:
            run_record.log(
                f"[{label}] re-exporting with the chosen ScaNN parameters {result['chosen_scann']}"
            )
            parameters = (chosen["scann_leaves"], chosen["scann_leaves_to_search"])
            layout, export_info = export_layout(model, vocabulary, directory, max_top_n, *parameters)
            result["export"] = {**export_info, **result["chosen_scann"]}
            measured = measure_saved_models(layout, inputs, args.duration, *floor_args)
            result["scann_recall_at_50_vs_exact"] = recall_vs_exact(exact_ids, measured["scann_ids"])
            result["in_process"] = measured["in_process"]
            result["in_process_user_interests"] = measured["user_interests"]
            result["scoring_floor"] = measured["scoring_floor"]
    if grown and args.scann_builds:
        chosen = result.get("chosen_scann") or {"scann_leaves": leaves, "scann_leaves_to_search": searched}
        parameters = (chosen["scann_leaves"], chosen["scann_leaves_to_search"])
        run_record.log(f"[{label}] {args.scann_builds} independent ScaNN index builds at {parameters}")
        builds = sweep_scann(
            model, vocabulary, max_top_n, [parameters] * args.scann_builds, inputs, exact_ids, args.duration
        )
        result["scann_builds"] = build_summary(builds)
    if grown and args.scann_curve:
        chosen = result.get("chosen_scann") or {"scann_leaves": leaves}
        curve_leaves = chosen["scann_leaves"]
        grid = [(curve_leaves, max(1, round(share * curve_leaves))) for share in args.scann_curve]
        run_record.log(f"[{label}] the ScaNN recall/latency curve: {grid}")
        result["scann_curve"] = sweep_scann(model, vocabulary, max_top_n, grid, inputs, exact_ids, args.duration)
    del item_embeddings, floor_args  # 256 MB at 1M items: not kept while the servers run
    result["scoring_floor"]["note"] = SCORING_FLOOR_NOTE.format(
        blas=f"({result['scoring_floor']['blas_threads']} BLAS thread(s))"
    )
    result["dmi_exact_over_scoring_floor_p50"] = scoring_floor_ratios(result)

    run_record.log(f"[{label}] serving through gRPC")
    threads = (args.intra_op_threads, args.inter_op_threads)
    log_path = os.path.join(directory, "server.log")
    floor_ids = exact_ids[0] if exact_ids else None
    result.update(measure_grpc(layout, inputs, log_path, threads, args, floor_ids))
    grpc, in_process = result["grpc"], result["in_process"]
    result["server_overhead_p50_ms"] = {
        name: round(grpc[name]["batch_1"]["p50_ms"] - in_process[name]["batch_1"]["p50_ms"], 3)
        for name in SERVABLE_NAMES
    }
    if "serving_floor" in result:
        floor_p50 = result["serving_floor"]["batch_1"]["p50_ms"]
        result["server_overhead_above_floor_p50_ms"] = {
            name: round(overhead - floor_p50, 3) for name, overhead in result["server_overhead_p50_ms"].items()
        }
    result["speedup_p50_batch_1"] = {
        "grpc": grpc["dmi_exact"]["batch_1"]["p50_ms"] / grpc["dmi"]["batch_1"]["p50_ms"],
        "in_process": _speedup(in_process),
    }
    if not args.keep_exports:
        shutil.rmtree(os.path.join(directory, "serving"), ignore_errors=True)
        shutil.rmtree(os.path.join(directory, "export"), ignore_errors=True)
    return result


def scoring_floor_ratios(catalogue: Mapping[str, Any]) -> dict[str, float | None]:
    """In-process ``dmi_exact`` p50 over the scoring floor's p50, whole and without the user tower."""
    floor = catalogue["scoring_floor"]["p50_ms"]
    exact = catalogue["in_process"]["dmi_exact"]["batch_1"]["p50_ms"]
    tower = catalogue["in_process_user_interests"]["batch_1"]["p50_ms"]
    return {"in_process": _ratio(exact, floor), "in_process_minus_user_tower": _ratio(exact - tower, floor)}


def _speedup(in_process: Mapping[str, Any]) -> float:
    return in_process["dmi_exact"]["batch_1"]["p50_ms"] / in_process["dmi"]["batch_1"]["p50_ms"]


def _auto_sweep(
    default: tuple[int, int], recall: float, speedup: float, grown: bool, quick: bool
) -> list[tuple[int, int]]:
    """A few settings around the default when it misses a target (none in --quick or when it meets them).

    Too low a recall: search 2x and 4x more leaves. Too small a speed-up (the grown catalogue): search 2x
    and 4x fewer leaves, or split into 2x more leaves.
    """
    if quick:
        return []
    leaves, searched = default
    grid: list[tuple[int, int]] = []
    if recall < TARGETS["scann_recall_at_50"]:
        grid += [(leaves, min(leaves, 2 * searched)), (leaves, min(leaves, 4 * searched))]
    if grown and speedup < TARGETS["scann_speedup"]:
        grid += [(leaves, max(1, searched // 2)), (leaves, max(1, searched // 4)), (2 * leaves, searched)]
    return list(dict.fromkeys(g for g in grid if g != default))


def build_summary(builds: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Recall and latency over independent index builds of one setting: min / median / max."""

    def spread(values: Sequence[float], digits: int) -> dict[str, float]:
        return {
            "min": round(min(values), digits),
            "median": round(statistics.median(values), digits),
            "max": round(max(values), digits),
        }

    return {
        "scann_leaves": builds[0]["scann_leaves"],
        "scann_leaves_to_search": builds[0]["scann_leaves_to_search"],
        "builds": len(builds),
        "recall_at_50_vs_exact": spread([b["recall_at_50_vs_exact"] for b in builds], 4),
        "in_process_p50_ms": spread([b["in_process_batch_1"]["p50_ms"] for b in builds], 3),
        "over_exact_p50": spread([1 / b["speedup_p50"] for b in builds], 4),
        "runs": list(builds),
    }


def _choose(rows: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
    """The fastest setting reaching the recall target, else the one with the best recall."""
    good = [r for r in rows if r["recall_at_50_vs_exact"] >= TARGETS["scann_recall_at_50"]]
    if good:
        return min(good, key=lambda r: r["in_process_batch_1"]["p50_ms"])
    return max(rows, key=lambda r: r["recall_at_50_vs_exact"])


# ----- report -------------------------------------------------------------------------------------------


def _target(text: str, value: float | str, reached: bool) -> dict[str, Any]:
    """One row of :func:`targets`."""
    return {"target": text, "value": value, "reached": reached}


def targets(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each target with the measured value and whether it was reached."""
    out = []
    beauty = result["catalogues"].get("beauty")
    config = result.get("model", {}).get("config", {})
    steps = config.get("sampling_steps") or config.get("diffusion_steps")
    at = "" if steps == config.get("diffusion_steps") else f" at S = {steps} DDIM steps (not the default)"
    if beauty and beauty.get("kind") == "trained":
        for name in SERVABLE_NAMES:
            latency = beauty["grpc"][name]["batch_1"]
            floor = beauty.get("serving_floor", {}).get("batch_1", {})
            for stat, wanted in (("p50", TARGETS["beauty_p50_ms"]), ("p99", TARGETS["beauty_p99_ms"])):
                target = {
                    "target": f"Beauty {name}{at}: gRPC {stat} <= {wanted:g} ms at batch 1",
                    "value": latency[f"{stat}_ms"],
                    "reached": latency[f"{stat}_ms"] <= wanted,
                }
                if floor:
                    target["floor_stat"] = stat
                    target["floor_ms"] = floor[f"{stat}_ms"]
                    target["over_floor"] = _ratio(latency[f"{stat}_ms"], floor[f"{stat}_ms"])
                out.append(target)
            if floor:
                over = _ratio(latency["p50_ms"], floor["p50_ms"])
                wanted = TARGETS["beauty_p50_over_serving_floor"]
                text = f"Beauty {name}{at}: gRPC p50 <= {wanted:g}x the serving floor's (batch 1)"
                out.append(_target(text, f"{over:.2f}x", over <= wanted))
            spread = _ratio(latency["p99_ms"], latency["p50_ms"])
            wanted = TARGETS["beauty_p99_over_own_p50"]
            text = f"Beauty {name}{at}: gRPC p99 <= {wanted:g}x its own p50 (batch 1)"
            out.append(_target(text, f"{spread:.2f}x", spread <= wanted))
        in_process = beauty["in_process"]["dmi_exact"]["batch_1"]["p50_ms"]
        wanted = TARGETS["beauty_in_process_p50_ms"]
        text = f"Beauty dmi_exact{at}: in-process p50 <= {wanted:g} ms (batch 1)"
        out.append(_target(text, in_process, in_process <= wanted))
    for label, catalogue in result["catalogues"].items():
        if catalogue.get("kind") != "grown":
            continue
        recall = catalogue["scann_recall_at_50_vs_exact"]
        speedup = catalogue["speedup_p50_batch_1"]["grpc"]
        # Results written before grown-gaussian existed grew Gaussian rows.
        items = f"{catalogue['items']:,} items ({catalogue.get('rows', 'gaussian')} rows)"
        text = f"{items}: ScaNN Recall@50 vs exact >= {TARGETS['scann_recall_at_50']}"
        out.append(_target(text, round(recall, 4), recall >= TARGETS["scann_recall_at_50"]))
        out.append(
            {
                "target": f"{items}: ScaNN p50 >= {TARGETS['scann_speedup']:g}x lower than exact "
                "(gRPC, batch 1)",
                "value": round(speedup, 2),
                "reached": speedup >= TARGETS["scann_speedup"],
                "in_process_speedup": round(catalogue["speedup_p50_batch_1"]["in_process"], 2),
            }
        )
        over_scoring = (catalogue.get("dmi_exact_over_scoring_floor_p50") or {}).get("in_process")
        if over_scoring is not None:
            wanted = TARGETS["exact_over_scoring_floor"]
            text = f"{items}: dmi_exact in-process p50 <= {wanted:g}x the numpy scoring floor's"
            out.append(_target(text, f"{over_scoring:.2f}x", over_scoring <= wanted))
        scann_share = 1 / catalogue["speedup_p50_batch_1"]["in_process"]
        wanted = TARGETS["scann_over_exact_in_process"]
        builds = catalogue.get("scann_builds")
        if builds:
            recall, share = builds["recall_at_50_vs_exact"], builds["over_exact_p50"]
            text = (
                f"{items}: ScaNN in-process p50 <= {wanted:g}x exact's at Recall@50 >= "
                f"{TARGETS['scann_recall_at_50']} over {builds['builds']} index builds"
            )
            value = (
                f"p50 {share['min']:.3f}-{share['max']:.3f}x (median {share['median']:.3f}x); Recall@50 "
                f"min {recall['min']:.4f} / median {recall['median']:.4f} / max {recall['max']:.4f}"
            )
            reached = share["max"] <= wanted and recall["min"] >= TARGETS["scann_recall_at_50"]
            out.append(_target(text, value, reached))
        else:
            text = f"{items}: ScaNN in-process p50 <= {wanted:g}x exact's (one index build)"
            out.append(_target(text, f"{scann_share:.3f}x", scann_share <= wanted))
    return out


SERVING_FLOOR_ROW = "floor: trivial server"
SCORING_FLOOR_ROW = "floor: numpy scoring"


def latency_rows(result: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Latency per catalogue, servable, path and batch, with the floors measured in the same run.

    ``p50 / floor``: gRPC figures over the serving floor's p50 at the same batch; in-process ``dmi_exact``
    at batch 1 over the scoring floor's. ``-`` where a result has no floor (runs before they existed).
    """
    header = ["catalogue", "servable", "path", "batch", "p50 ms", "p50 / floor", "p95 ms", "p99 ms", "requests"]
    rows = []

    def row(label: str, name: str, path: str, batch: str, s: Mapping[str, Any], ratio: float | None) -> list[str | int]:
        return [
            label, name, path, batch.split("_")[1], f"{s['p50_ms']:.2f}",
            "-" if ratio is None else f"{ratio:.2f}x", f"{s['p95_ms']:.2f}", f"{s['p99_ms']:.2f}", s["count"],
        ]  # fmt: skip

    for label, catalogue in result["catalogues"].items():
        shown = f"{label} ({catalogue['items']:,})"
        for name in SERVABLE_NAMES:
            for path in ("grpc", "in_process"):
                for batch in ("batch_1", "batch_32"):
                    s = catalogue[path][name][batch]
                    ratio = s.get("p50_over_floor")
                    if path == "in_process" and name == "dmi_exact" and batch == "batch_1":
                        ratio = catalogue.get("dmi_exact_over_scoring_floor_p50", {}).get("in_process")
                    rows.append(row(shown, name, path.replace("_", "-"), batch, s, ratio))
        floor = catalogue.get("serving_floor")
        if floor:
            for batch in ("batch_1", "batch_32"):
                if batch in floor:
                    rows.append(row(shown, SERVING_FLOOR_ROW, "grpc", batch, floor[batch], 1.0))
        if catalogue.get("scoring_floor"):
            rows.append(row(shown, SCORING_FLOOR_ROW, "in-process", "batch_1", catalogue["scoring_floor"], 1.0))
    return header, rows


def throughput_rows(result: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Throughput at batch 1 per catalogue, servable and client count; ``p50 / floor`` as in
    :func:`latency_rows` (the serving floor at the same client count)."""
    header = ["catalogue", "servable", "clients", "requests/s", "p50 ms", "p50 / floor", "p99 ms"]
    rows = []
    for label, catalogue in result["catalogues"].items():
        floor = catalogue.get("serving_floor")
        named = [(name, catalogue["grpc"][name]) for name in SERVABLE_NAMES]
        for name, figures in named + ([(SERVING_FLOOR_ROW, floor)] if floor else []):
            for t in figures["throughput_batch_1"]:
                latency = t["latency"]
                ratio = 1.0 if figures is floor else latency.get("p50_over_floor")
                rows.append(
                    [
                        label,
                        name,
                        t["clients"],
                        f"{t['requests_per_s']:.0f}",
                        f"{latency['p50_ms']:.2f}",
                        "-" if ratio is None else f"{ratio:.2f}x",
                        f"{latency['p99_ms']:.2f}",
                    ]
                )
    return header, rows


def floor_lines(label: str, catalogue: Mapping[str, Any]) -> list[str]:
    """What the floors of one catalogue say, one sentence each (none for results without floors)."""
    lines = []
    floor = catalogue.get("serving_floor")
    if floor:
        ratios = ", ".join(
            f"{name} {catalogue['grpc'][name]['batch_1']['p50_over_floor']:.2f}x" for name in SERVABLE_NAMES
        )
        above = catalogue.get("server_overhead_above_floor_p50_ms", {})
        one = floor["batch_1"]
        lines.append(
            f"{label}: serving floor p50 {one['p50_ms']:.2f} ms / p99 {one['p99_ms']:.2f} ms at batch 1; "
            f"gRPC p50 / floor p50: {ratios}; the server's own overhead above the floor "
            "(gRPC − in-process − floor, p50): " + ", ".join(f"{k} {v:+.2f} ms" for k, v in above.items())
        )
    scoring = catalogue.get("scoring_floor")
    if scoring:
        ratio = catalogue["dmi_exact_over_scoring_floor_p50"]
        lines.append(
            f"{label}: scoring floor (numpy, {scoring['items']:,} items, {scoring.get('blas_threads')} BLAS "
            f"thread(s)) p50 {scoring['p50_ms']:.2f} ms; in-process dmi_exact p50 / floor p50 "
            f"{ratio['in_process']:.2f}x, without the user tower {ratio['in_process_minus_user_tower']:.2f}x"
        )
    return lines


def plot(result: Mapping[str, Any], path: str) -> str:
    """Left: batch-1 latency per catalogue and servable (gRPC, in-process). Right: throughput vs clients."""
    plt = plots.pyplot()
    from matplotlib.ticker import ScalarFormatter

    curves = {
        label: catalogue for label, catalogue in result["catalogues"].items() if catalogue.get("scann_curve")
    }
    panels = 3 if curves else 2
    figure, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 3.8))
    left, right = axes[0], axes[1]
    labels, p50, p99, inproc = [], [], [], []
    for label, catalogue in result["catalogues"].items():
        for name in SERVABLE_NAMES:
            labels.append(f"{label}\n{name}")
            p50.append(catalogue["grpc"][name]["batch_1"]["p50_ms"])
            p99.append(catalogue["grpc"][name]["batch_1"]["p99_ms"])
            inproc.append(catalogue["in_process"][name]["batch_1"]["p50_ms"])
    x = np.arange(len(labels))
    left.bar(x - 0.27, inproc, 0.27, label="in-process p50", color="#8c8c8c")
    left.bar(x, p50, 0.27, label="gRPC p50", color="#4c72b0")
    left.bar(x + 0.27, p99, 0.27, label="gRPC p99", color="#dd8452")
    left.set_xticks(x, labels, fontsize=8)
    left.set_yscale("log")
    left.yaxis.set_major_formatter(ScalarFormatter())
    left.set_ylabel("latency at batch 1 (ms, log)")
    left.axhline(TARGETS["beauty_p50_ms"], color="#4c72b0", linestyle=":", linewidth=1)
    left.axhline(TARGETS["beauty_p99_ms"], color="#dd8452", linestyle=":", linewidth=1)
    left.legend(fontsize=8)
    left.set_title("Latency per request (dotted: Beauty targets)")
    for label, catalogue in result["catalogues"].items():
        for name in SERVABLE_NAMES:
            points = catalogue["grpc"][name]["throughput_batch_1"]
            clients = [p["clients"] for p in points]
            right.plot(clients, [p["requests_per_s"] for p in points], "o-", label=f"{label} {name}")
            right.set_xticks(clients)
    right.set_xscale("log", base=2)
    right.set_yscale("log")
    for axis in (right.xaxis, right.yaxis):
        axis.set_major_formatter(ScalarFormatter())
    right.set_xlabel("concurrent clients")
    right.set_ylabel("requests/s at batch 1 (log)")
    right.set_title("Throughput through gRPC")
    right.grid(alpha=0.3)
    right.legend(fontsize=8)
    if curves:
        scann_curve_panel(axes[2], curves)
    figure.tight_layout()
    return plots.save_figure(figure, path)


def scann_curve_panel(axis: Axes, curves: Mapping[str, Mapping[str, Any]]) -> None:
    """Recall@50 against ScaNN's in-process p50 per share of leaves searched; the builds' spread as a bar."""
    for label, catalogue in curves.items():
        points = sorted(catalogue["scann_curve"], key=lambda r: r["scann_leaves_to_search"])
        x = [r["in_process_batch_1"]["p50_ms"] for r in points]
        y = [r["recall_at_50_vs_exact"] for r in points]
        axis.plot(x, y, "o-", label=f"{label}: one build per point")
        for r, xi, yi in zip(points, x, y):
            axis.annotate(f"{r['scann_leaves_to_search']}/{r['scann_leaves']}", (xi, yi), fontsize=7)
        builds = catalogue.get("scann_builds")
        if builds:
            recall, p50 = builds["recall_at_50_vs_exact"], builds["in_process_p50_ms"]
            axis.errorbar(
                [p50["median"]],
                [recall["median"]],
                yerr=[[recall["median"] - recall["min"]], [recall["max"] - recall["median"]]],
                xerr=[[p50["median"] - p50["min"]], [p50["max"] - p50["median"]]],
                fmt="s",
                color="black",
                capsize=3,
                label=f"served setting, {builds['builds']} builds (min-max)",
            )
    axis.axhline(TARGETS["scann_recall_at_50"], color="grey", linestyle=":", linewidth=1)
    axis.set_xlabel("ScaNN in-process p50 at batch 1 (ms)")
    axis.set_ylabel("Recall@50 vs exact")
    axis.set_title("ScaNN: leaves searched / leaves")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)


def parse_sweep(text: str) -> list[tuple[int, int]]:
    """``"1000:50,1000:100"`` -> ``[(1000, 50), (1000, 100)]``."""
    pairs = []
    for part in text.split(","):
        if part.strip():
            leaves, _, searched = part.partition(":")
            pairs.append((int(leaves), int(searched)))
    return pairs


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = arguments.base_parser(MODULE, __doc__)
    arguments.add_data_arguments(parser)
    add = parser.add_argument
    arguments.add_model_arguments(parser)
    add(
        "--catalogues",
        type=arguments.parse_name_list(CATALOGUES),
        help="trained (the model's own items, e.g. Beauty's), grown (--items rows, variants of trained "
        "items) and/or grown-gaussian (--items rows, structureless; see above); default trained,grown; "
        "--quick: trained",
    )
    add("--items", type=int, default=1_000_000, help="rows of the grown catalogue (default 1,000,000)")
    add("--duration", type=float, help="seconds per latency / throughput figure (default 5; --quick 2)")
    add(
        "--clients",
        type=arguments.parse_int_list,
        help="concurrent clients of the throughput figures (default 1,4,16; --quick 1,4)",
    )
    add("--recall-users", type=int, help="test users scored for ScaNN recall (default 1000; --quick 300)")
    add("--max-top-n", type=int, default=200, help="max_top_n of the export (default 200, as dmirec train)")
    add(
        "--scann-sweep",
        type=parse_sweep,
        help="ScaNN settings to try, LEAVES:SEARCH,... (default: a few around the default when it misses "
        "a target)",
    )
    add(
        "--scann-builds",
        type=int,
        help="independent ScaNN index builds of the served setting on the grown catalogue, for the spread of "
        "its recall (default 5; --quick 0)",
    )
    add(
        "--scann-curve",
        type=lambda text: [float(x) for x in text.split(",") if x.strip()],
        help="shares of the leaves searched for the grown catalogue's recall/latency curve "
        "(default 0.05,0.1,0.2,0.4,0.7,1; --quick none)",
    )
    add("--keep-exports", action="store_true", help="keep the exported SavedModels under --work-dir")
    add("--seed", type=int, default=0, help="seed of the grown catalogue's random rows")
    add("--floor-server", metavar="DIR", help=argparse.SUPPRESS)  # the serving floor's child process
    add("--floor-port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument(
        "--intra-op-threads",
        type=int,
        default=1,
        help="TensorFlow intra-op threads of the server (its --tensorflow_intra_op_parallelism) and of the "
        "in-process measurements (default 1: the lowest batch-1 latency on 2 cores)",
    )
    parser.add_argument(
        "--inter-op-threads",
        type=int,
        default=1,
        help="TensorFlow inter-op threads, likewise (default 1: ~0.1 ms less per batch-1 request on 2 cores "
        "than 0 = TensorFlow's choice, for 0-12 %% of the throughput at 16 clients; docs/performance.md)",
    )
    args = parser.parse_args(argv)
    args.catalogues = args.catalogues or (["trained"] if args.quick else ["trained", "grown"])
    args.duration = args.duration or (2.0 if args.quick else 5.0)
    args.clients = args.clients or ([1, 4] if args.quick else [1, 4, 16])
    args.recall_users = args.recall_users or (300 if args.quick else 1000)
    if args.scann_builds is None:
        args.scann_builds = 0 if args.quick else 5
    if args.scann_curve is None:
        args.scann_curve = [] if args.quick else [0.05, 0.1, 0.2, 0.4, 0.7, 1.0]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.floor_server:
        return serve_floor(args.floor_server, args.floor_port)
    started = time.perf_counter()
    threads = arguments.configure_threads(args)
    import scann  # noqa: F401  (before any SavedModel with a ScaNN index is loaded)

    path = run_record.result_path(args.out, "serving_latency", args.quick)
    dataset, config, vocabulary, model, model_info, histories = model_and_test_histories(args)
    result: dict[str, Any] = {
        **run_record.run_metadata(MODULE, argv, args.quick),
        "data": dataset.describe(),
        "model": {**model_info, "config": dataclasses.asdict(config)},
        "threads_in_process": threads,
        "settings": {
            "duration_s": args.duration,
            "clients": args.clients,
            "recall_users": args.recall_users,
            "scann_builds": args.scann_builds,
            "scann_curve_shares_searched": args.scann_curve,
            "top_n": TOP_N,
            "max_top_n": args.max_top_n,
            "requests": "prebuilt PredictRequest (serving_default, top_n=50) on PredictionService.Predict; "
            "histories of the test users, raw item ids",
            "server": "dmirec serve (serving/server.py) in a child process on 127.0.0.1, no server-side "
            f"batching, TensorFlow threads intra-op {args.intra_op_threads} / inter-op "
            f"{args.inter_op_threads} (0 = TensorFlow's choice), the same in-process",
            "in_process": "the SavedModel loaded by serving.servable.Servable, called with ready tensors through "
            "Signature.call_tensors (the server's call path: TensorFlow's flat call, no keyword binding)",
            "serving_floor": SERVING_FLOOR_NOTE,
            "scoring_floor": SCORING_FLOOR_NOTE.format(blas=f"({args.intra_op_threads or 'all'} BLAS thread(s))"),
        },
        "targets_wanted": TARGETS,
        "catalogues": {},
    }
    for kind in args.catalogues:
        if kind == "trained":
            label = dataset.name
            result["catalogues"][label] = measure_catalogue(label, model, vocabulary, histories, args)
        else:
            rows = GROWN_ROWS[kind]
            label = size_label(args.items) + ("" if rows == "clustered" else f"_{rows}")
            run_record.log(f"[{label}] growing the item table to {args.items:,} rows ({rows})")
            big, big_vocabulary = grown_catalogue(model, vocabulary, args.items, args.seed, rows)
            extra = args.items - model.num_items
            note = CATALOGUE_NOTE.format(
                items=args.items, trained=model.num_items, extra=extra, rows=ROWS_NOTE[rows]
            )
            result["catalogues"][label] = measure_catalogue(
                label, big, big_vocabulary, histories, args, note, grown=True
            )
            result["catalogues"][label]["rows"] = rows
            del big, big_vocabulary
            gc.collect()
        result["catalogues"][label]["kind"] = "trained" if kind == "trained" else "grown"
        run_record.write_json(path, result)
    result["targets"] = targets(result)
    figure = plot(result, run_record.result_path(args.out, "serving_latency", args.quick, ".png"))
    result["figure"] = os.path.basename(figure)
    run_record.finish_metadata(result, started)
    run_record.write_json(path, result)

    print("\nLatency (ms) through gRPC and in-process, top_n = 50")
    print(summaries.text_table(*latency_rows(result)))
    print("\nThroughput at batch 1")
    print(summaries.text_table(*throughput_rows(result)))
    for label, catalogue in result["catalogues"].items():
        speedup = catalogue["speedup_p50_batch_1"]
        overhead = ", ".join(f"{k} {v:.2f} ms" for k, v in catalogue["server_overhead_p50_ms"].items())
        print(
            f"{label}: ScaNN Recall@50 vs exact {catalogue['scann_recall_at_50_vs_exact']:.4f} "
            f"({catalogue['recall_users']} users); exact/ScaNN p50 x{speedup['grpc']:.1f} (gRPC), "
            f"x{speedup['in_process']:.1f} (in-process); server overhead p50 {overhead}; user tower alone "
            f"p50 {catalogue['in_process_user_interests']['batch_1']['p50_ms']:.2f} ms"
        )
        for line in floor_lines(label, catalogue):
            print(f"  {line}")
    print("\nTargets")
    for target in result["targets"]:
        ratio = f" ({target['over_floor']:.2f}x the floor)" if target.get("over_floor") else ""
        print(f"  [{'x' if target['reached'] else ' '}] {target['target']}: {target['value']}{ratio}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
