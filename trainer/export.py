"""Export a trained model as TF Serving servables (pushing them to a serving directory: ``push.py``).

One trained model gives two servables, side by side (TF Serving's layout once pushed,
``<serving_base>/<name>/<version>/saved_model.pb``):

- ``dmi``: retrieval through a ScaNN index (``tfrs.layers.factorized_top_k.ScaNN``) over the item
  embeddings; needs a TF Serving build with the ScaNN ops (and ``import scann`` in a Python process);
- ``dmi_exact``: the same user tower with exact brute-force scoring (Eq. 20) in stock TF ops, so stock TF
  Serving serves it.

Both graphs hold the whole request path: raw string item ids -> indices (lookup tables over the training
vocabulary, which each SavedModel carries as its asset ``assets/item_ids.txt``, one id per line, line
``i`` being index ``i + 1``; unknown ids and "" map to 0, the padding index, and are ignored) -> the user
tower with the unrolled DDIM refinement -> Eq. 20 over all items -> raw ids of the top-N. Raw ids are all
that goes in and out: indices never leave the graph (:func:`servable_item_ids` reads the asset back).
Signatures:

- ``serving_default(history: string [batch, max_len], top_n: int32 = default_top_n,
  exclude_history: bool = False) -> {item_ids: string [batch, top_n], scores: float32 [batch, top_n]}``.
  Histories longer than the model's L keep their last L items. A history with no known item gets the most
  popular items (score 0). ``top_n`` outside ``[1, max_top_n]`` fails with INVALID_ARGUMENT.
- ``user_interests(history) -> {interests: float32 [batch, K, d]}``: the refined interest vectors Z.

The defaults of ``top_n`` and ``exclude_history`` are recorded in the SignatureDef, so TF Serving clients
may leave them out. These names are the serving contract; the constants below (``RETRIEVAL_SIGNATURE``,
``HISTORY_INPUT``, ...) are their one home on the trainer side, and the SignatureDefs written from them are
the source of truth: ``serving/contract.py`` repeats them for the server's clients (serving may not import
the trainer) and ``tests/test_serving_contract.py`` checks that it matches what this module exports.

This module is also the one writer of warm-up requests for real servables (``assets.extra/
tf_serving_warmup_requests``, which ``serving/warmup.py`` reads and replays): one per signature and
allowed batch size.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from trainer import filesystem as fs
from trainer import retrieval
from trainer.export_settings import ExportSettings
from trainer.model import DMIModel
from trainer.sequences import Vocabulary

# The serving contract: signature keys, input and output aliases (see the module docstring).
RETRIEVAL_SIGNATURE = "serving_default"  # TF Serving's default: a request without signature_name retrieves
INTERESTS_SIGNATURE = "user_interests"
HISTORY_INPUT = "history"
TOP_N_INPUT = "top_n"
EXCLUDE_HISTORY_INPUT = "exclude_history"
ITEM_IDS_OUTPUT = "item_ids"
SCORES_OUTPUT = "scores"
INTERESTS_OUTPUT = "interests"

EXACT = "dmi_exact"
SCANN = "dmi"
SERVABLES = (SCANN, EXACT)
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
# The vocabulary asset of every servable (``<servable>/assets/<ITEM_VOCABULARY_FILE>``).
ITEM_VOCABULARY_FILE = "item_ids.txt"
DEFAULT_BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64)
DEFAULT_TOP_N = 50
DEFAULT_MAX_TOP_N = 200


def scann_parameters(
    num_items: int,
    max_top_n: int,
    max_length: int,
    leaves: int | None = None,
    leaves_to_search: int | None = None,
) -> tuple[int, int, int]:
    """The ScaNN index settings of the ``dmi`` servable: ``(per_interest, leaves, leaves_to_search)``.

    The index is built for ``max_top_n + L`` candidates per interest, the most a request can need (after
    removing history items, an option of the request, and merging the K lists, ``max_top_n`` distinct
    items remain); each request asks for fewer (:func:`candidates_per_interest`). By default there are
    about ``sqrt(N)`` partitions, of which two fifths are searched, and at least enough of them to hold
    about four times the candidates asked for (small catalogues then search most of their partitions).
    Measured with bench/serving_latency.py at 1M items, Recall@50 against exact varies between index
    builds (ScaNN's partitioning and quantization are trained at random): 0.949 and 0.967 with a fifth of
    the leaves, 0.980 and 0.948 with two fifths, 0.974 with all of them, so the re-scoring of
    ``num_reordering_candidates``, not the partitions searched, is what limits it. Those builds are of
    structureless Gaussian rows, the worst case; on a catalogue of variants of trained items
    (``bench/serving_latency.py``'s default 1M) a tenth of the leaves held Recall@50 0.985-0.987 over 5
    builds at 0.07x exact's latency, and two fifths 0.998 (docs/performance.md). The default keeps two
    fifths: the setting that held >= 0.95 on both.

    Args:
      num_items: N, the catalogue size.
      max_top_n: the longest list a request may ask for.
      max_length: L, the history length.
      leaves: partitions (2 to N: a tree of one leaf answers ScaNN's first item to every query, measured
        with scann 1.3.2), or None for the default.
      leaves_to_search: partitions searched per query (1 to ``leaves``), or None for the default.

    Raises:
      ValueError: an explicit setting out of its range (checked before training by ``dmirec train`` and
        the pipeline's Trainer, so that a bad flag does not end a finished training run).
    """
    per_interest = min(max_top_n + max_length, num_items)
    if num_items < 2:
        raise ValueError(f"a ScaNN index needs at least 2 items, the catalogue has {num_items}")
    if leaves is not None and not 2 <= leaves <= num_items:
        raise ValueError(
            f"scann_leaves must be between 2 and the number of items ({num_items:,}), got {leaves}"
            + (" (ScaNN's tree of one leaf answers the first item to every query)" if leaves == 1 else "")
        )
    leaves = leaves or max(2, int(round(np.sqrt(num_items))))
    if leaves_to_search is not None and not 1 <= leaves_to_search <= leaves:
        raise ValueError(
            f"scann_leaves_to_search must be between 1 and the index's {leaves:,} leaves, got {leaves_to_search}"
        )
    searched = leaves_to_search or max(2 * leaves // 5, int(np.ceil(4 * per_interest * leaves / num_items)))
    return per_interest, leaves, max(1, min(leaves, searched))


def candidates_per_interest(top_n: tf.Tensor, excluded: tf.Tensor, most: int) -> tf.Tensor:
    """How many candidates each interest asks of the ScaNN index for one request: ``top_n`` + exclusions.

    The merge of the K lists is then exact with respect to the lists (``retrieval.merge_candidates``): an
    item of the merged top ``n`` ranks within the top ``n`` non-excluded items of its best interest, so
    that interest's first ``n + m`` candidates hold it whenever at most ``m`` of them are excluded. ``m``
    is the most non-zero excluded slots of any user of the batch (repeated history items counted
    each time: a bound, never short). Asking for ``max_top_n + L`` on every request instead (the index's
    build-time ``k``) merged 4 x 220 candidates where a top-50 request without exclusion needs 4 x 50:
    ~0.17 ms of a ~7 ms request at 1M items (docs/performance.md). The re-scoring depth, which sets the
    recall, is the index's own and does not change with it.

    Args:
      top_n: scalar int32, the list length asked for.
      excluded: ``(B, M)`` int32 item indices to drop per user (0 = nothing).
      most: the index's build-time ``k`` (``max_top_n + L``, at most N), an upper bound.

    Returns:
      Scalar int32: ``min(top_n + m, most)``.
    """
    per_user = tf.reduce_sum(tf.cast(excluded > 0, tf.int32), axis=1)
    excluded_slots = tf.reduce_max(tf.concat([per_user, [0]], axis=0))  # 0 for an empty batch
    return tf.minimum(top_n + excluded_slots, most)


class RetrievalServable(tf.Module):
    """The serving graph of one servable: raw ids in, top-N raw ids and scores out.

    Args:
      model: the trained model (its user tower and item table are tracked, so its weights are saved).
      vocabulary: the item ids of indices 1..N.
      default_top_n: ``top_n`` when a request leaves it out.
      max_top_n: the largest ``top_n`` a request may ask for.
      use_scann: retrieve with a ScaNN index instead of exact scoring.
      scann_leaves: ScaNN partitions (default ~sqrt(N)); ``scann_leaves_to_search`` of them are searched.
      scann_leaves_to_search: partitions searched per query.
      xla: compile the numeric part of a request with XLA: the user tower (extractor and the unrolled
        DDIM loop) and, for exact retrieval, the scoring, history exclusion and ranking. The tower's graph
        has over a thousand small ops at batch 1, so per-op overhead dominates its latency and XLA's
        fusion cuts it by more than half on CPU (bench/serving_latency.py). The SavedModel then marks those
        functions ``_XlaMustCompile``: the loading TensorFlow (or TF Serving) build must include XLA's
        CPU JIT, as the official builds do; export with False for one that does not.
      batch_sizes: the only batch sizes the numeric part runs at, ascending (TF Serving's
        ``allowed_batch_sizes``). XLA compiles one executable per input shape (2-4 s each for Beauty's
        model on these machines, and memory kept for good), so a request's rows are padded with empty
        histories up to the next allowed size, and requests of more rows than the largest run in chunks of
        the largest; the padding rows are dropped from the outputs. The warm-up requests cover every size,
        so no request after loading pays a compilation, whatever its batch size. Powers of two bound the
        padding at twice the work.
    """

    def __init__(
        self,
        model: DMIModel,
        vocabulary: Vocabulary,
        vocabulary_file: str,
        default_top_n: int,
        max_top_n: int,
        use_scann: bool,
        scann_leaves: int | None = None,
        scann_leaves_to_search: int | None = None,
        xla: bool = True,
        batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    ):
        super().__init__()
        if not batch_sizes or list(batch_sizes) != sorted(set(batch_sizes)) or batch_sizes[0] < 1:
            raise ValueError(f"batch_sizes must be distinct positive sizes, ascending; got {list(batch_sizes)}")
        if len(vocabulary) != model.num_items:
            raise ValueError(f"the vocabulary has {len(vocabulary)} items but the model {model.num_items}")
        if not 1 <= default_top_n <= max_top_n <= model.num_items:
            raise ValueError(
                f"need 1 <= default_top_n ({default_top_n}) <= max_top_n ({max_top_n}) <= items ({model.num_items})"
            )
        self.model = model
        self.max_length = model.config.max_length
        self.default_top_n = default_top_n
        self.max_top_n = max_top_n
        self.batch_sizes = tuple(int(size) for size in batch_sizes)
        indices_spec = tf.TensorSpec([None, self.max_length], tf.int32)
        self._interests_row = tf.TensorSpec([model.config.num_interests, model.config.embedding_dim], tf.float32)
        # One input signature each, so that every call (padded batch or chunk) shares one compiled function.
        if use_scann:  # the tower alone: ScaNN's search is a custom op outside it
            self._user_interests = tf.function(
                lambda indices: model.user_interests(indices),
                input_signature=[indices_spec],
                jit_compile=xla,
                autograph=False,
            )
        else:
            # The tower and exact retrieval of the max_top_n best items (the evaluator's top_n, with the
            # history excluded) in one function, so that a request runs one compiled executable, not two
            # (measured: see docs/performance.md); `score` False (the user_interests signature) skips the
            # scoring at run time, so both signatures share one executable per batch size and the tower is
            # compiled once.
            self._interests_and_candidates = tf.function(
                self._score_interests,
                input_signature=[indices_spec, indices_spec, tf.TensorSpec([], tf.bool)],
                jit_compile=xla,
                autograph=False,
            )
        # Both directions read the one vocabulary asset; line i is index i + 1 (0 = padding / unknown).
        self.item_vocabulary = tf.saved_model.Asset(vocabulary_file)
        line = tf.lookup.TextFileIndex.LINE_NUMBER
        whole = tf.lookup.TextFileIndex.WHOLE_LINE
        self.indices_of_ids = tf.lookup.StaticHashTable(
            tf.lookup.TextFileInitializer(
                self.item_vocabulary, tf.string, whole, tf.int64, line, vocab_size=len(vocabulary)
            ),
            default_value=-1,
        )
        self.ids_of_indices = tf.lookup.StaticHashTable(
            tf.lookup.TextFileInitializer(
                self.item_vocabulary, tf.int64, line, tf.string, whole, vocab_size=len(vocabulary)
            ),
            default_value="",
        )
        self.scann = None
        if use_scann:
            # The index is built for the longest list (max_top_n + L candidates per interest, its
            # re-scoring depth four times that); each request asks for top_n + its exclusions only.
            per_interest, leaves, searched = scann_parameters(
                model.num_items, max_top_n, self.max_length, scann_leaves, scann_leaves_to_search
            )
            self.scann = tfrs.layers.factorized_top_k.ScaNN(
                k=per_interest,
                distance_measure="dot_product",
                num_leaves=leaves,
                num_leaves_to_search=searched,
                num_reordering_candidates=4 * per_interest,
            )
            self.scann.index(model.item_table[1:], tf.range(1, model.num_items + 1, dtype=tf.int32))
            self.scann_candidates = per_interest

    def _score_interests(
        self, indices: tf.Tensor, excluded: tf.Tensor, score: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """The interests (B, K, d) and, when ``score``, the exact top ``max_top_n`` scores and indices (B, n).

        Without ``score`` both candidate outputs are zeros: the branch not taken costs nothing at run time.
        """
        interests = self.model.user_interests(indices)
        shape = tf.stack([tf.shape(indices)[0], self.max_top_n])
        scores, top = tf.cond(
            score,
            # The excluded ids come from `encode` (0..N): no run-time check, which XLA would drop (and log).
            lambda: retrieval.top_n(
                interests, self.model.item_table, self.max_top_n, exclude=excluded, check_exclude=False
            ),
            lambda: (tf.zeros(shape, tf.float32), tf.zeros(shape, tf.int32)),
        )
        return interests, scores, top

    def encode(self, history: tf.Tensor) -> tf.Tensor:
        """Raw ids (batch, any length) -> the model's (batch, L) indices: the last L known items, left-aligned."""
        indices = tf.cast(self.indices_of_ids.lookup(history) + 1, tf.int32)
        # Keep known items only, in order, then the last L of them, left-aligned with zero padding.
        ragged = tf.ragged.boolean_mask(indices, indices > 0)
        last = ragged[:, -self.max_length :]
        return last.to_tensor(default_value=0, shape=[None, self.max_length])

    def interests(self, history: tf.Tensor) -> tf.Tensor:
        tower = self._user_interests if self.scann is not None else self._exact_tower
        return self._in_batches(tower, self._interests_row, self.encode(history))

    def _exact_tower(self, indices: tf.Tensor) -> tf.Tensor:
        """The exact servable's interests: its one executable with the scoring skipped."""
        return self._interests_and_candidates(indices, indices, tf.constant(False))[0]

    def _in_batches(self, fn, row_spec, *tensors: tf.Tensor):
        """``fn(*tensors)`` computed at the allowed batch sizes only (see ``batch_sizes``).

        Args:
          fn: a function of tensors with a leading batch dimension, returning a tensor or tuple of them.
          row_spec: ``tf.TensorSpec`` (or tuple of them) of one row of each output, without the batch dim.
          *tensors: its inputs, all with the same number of rows (zeros pad them).

        Returns:
          ``fn``'s outputs for the real rows only.
        """
        rows = tf.shape(tensors[0])[0]
        sizes = tf.constant(self.batch_sizes, tf.int32)
        largest = self.batch_sizes[-1]

        def padded(tensor: tf.Tensor, size: tf.Tensor) -> tf.Tensor:
            return tf.pad(tensor, [[0, size - rows]] + [[0, 0]] * (tensor.shape.rank - 1))

        def one_batch():
            size = tf.gather(sizes, tf.searchsorted(sizes, tf.reshape(rows, [1]), side="left")[0])
            return fn(*(padded(tensor, size) for tensor in tensors))

        def chunks():
            count = (rows + largest - 1) // largest
            stacked = tuple(
                tf.reshape(padded(tensor, count * largest), [count, largest, *tensor.shape[1:]])
                for tensor in tensors
            )
            spec = tf.nest.map_structure(lambda t: tf.TensorSpec([largest, *t.shape], t.dtype), row_spec)
            out = tf.map_fn(lambda chunk: fn(*chunk), stacked, fn_output_signature=spec, parallel_iterations=1)
            return tf.nest.map_structure(lambda t: tf.reshape(t, [count * largest, *t.shape[2:]]), out)

        out = tf.cond(rows <= largest, one_batch, chunks)
        return tf.nest.map_structure(lambda t: t[:rows], out)

    def retrieve(
        self, history: tf.Tensor, top_n: tf.Tensor, exclude_history: tf.Tensor
    ) -> dict[str, tf.Tensor]:
        top_n = tf.convert_to_tensor(top_n, tf.int32)
        with tf.control_dependencies(
            [
                tf.debugging.assert_greater_equal(top_n, 1, message="top_n must be at least 1"),
                tf.debugging.assert_less_equal(
                    top_n, self.max_top_n, message=f"top_n must be at most {self.max_top_n}"
                ),
            ]
        ):
            top_n = tf.identity(top_n)
        encoded = self.encode(history)
        excluded = tf.where(tf.convert_to_tensor(exclude_history), encoded, tf.zeros_like(encoded))
        if self.scann is None:
            scores, indices = self._in_batches(
                lambda e, x: self._interests_and_candidates(e, x, tf.constant(True))[1:],
                (tf.TensorSpec([self.max_top_n], tf.float32), tf.TensorSpec([self.max_top_n], tf.int32)),
                encoded,
                excluded,
            )
            scores, indices = scores[:, :top_n], indices[:, :top_n]
        else:
            interests = self._in_batches(self._user_interests, self._interests_row, encoded)
            scores, indices = self._scann_top(interests, excluded, top_n)
        # Users without a known item: the most popular items (indices 1.. are sorted by frequency).
        empty = tf.reduce_all(tf.equal(encoded, 0), axis=1, keepdims=True)
        popular = tf.range(1, top_n + 1, dtype=tf.int32)[tf.newaxis, :]
        indices = tf.where(empty, popular, indices)
        scores = tf.where(empty, tf.zeros_like(scores), scores)
        item_ids = self.ids_of_indices.lookup(tf.cast(indices, tf.int64) - 1)
        return {ITEM_IDS_OUTPUT: item_ids, SCORES_OUTPUT: scores}

    def _scann_top(
        self, interests: tf.Tensor, excluded: tf.Tensor, top_n: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor]:
        batch = tf.shape(interests)[0]
        dim = interests.shape[-1]
        k = candidates_per_interest(top_n, excluded, self.scann_candidates)
        scores, indices = self.scann(tf.reshape(interests, [-1, dim]), k=k)  # (B*K, k) each
        scores = tf.reshape(scores, [batch, -1])
        indices = tf.reshape(indices, [batch, -1])
        return retrieval.merge_candidates(scores, indices, excluded, top_n)


def _signatures(servable: RetrievalServable) -> dict[str, tf.types.experimental.PolymorphicFunction]:
    history_spec = tf.TensorSpec([None, None], tf.string, name=HISTORY_INPUT)

    # Passed as tf.functions with an input signature (not concrete functions), so that the defaults of
    # top_n and exclude_history are recorded in the SignatureDef for TF Serving to apply.
    @tf.function(
        input_signature=[
            history_spec,
            tf.TensorSpec([], tf.int32, name=TOP_N_INPUT),
            tf.TensorSpec([], tf.bool, name=EXCLUDE_HISTORY_INPUT),
        ],
        autograph=False,
    )
    def serve(
        history: tf.Tensor,
        top_n: tf.Tensor = tf.constant(servable.default_top_n, tf.int32),
        exclude_history: tf.Tensor = tf.constant(False),
    ) -> dict[str, tf.Tensor]:
        return servable.retrieve(history, top_n, exclude_history)

    @tf.function(input_signature=[history_spec], autograph=False)
    def user_interests(history: tf.Tensor) -> dict[str, tf.Tensor]:
        return {INTERESTS_OUTPUT: servable.interests(history)}

    return {RETRIEVAL_SIGNATURE: serve, INTERESTS_SIGNATURE: user_interests}


def _write_warmup_requests(
    export_dir: str, name: str, histories: Sequence[Sequence[str]], batch_sizes: Sequence[int]
) -> None:
    """Writes the warm-up file that TF Serving replays after loading, before the version serves traffic.

    One PredictRequest per signature and allowed batch size (the sample histories repeated to fill it), so
    that every executable a request can use is compiled before the version serves.

    Args:
      export_dir: the SavedModel directory (its ``assets.extra/`` is created).
      name: the servable's name, for the requests' ``model_spec``.
      histories: sample histories of raw item ids, any lengths (padded with ``""``).
      batch_sizes: the servable's allowed batch sizes.
    """
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    width = max(1, max(len(h) for h in histories))
    padded = [list(h) + [""] * (width - len(h)) for h in histories]
    path = fs.join(export_dir, WARMUP_FILE)
    fs.makedirs(fs.parent(path))
    with tf.io.TFRecordWriter(path) as writer:
        for signature in (RETRIEVAL_SIGNATURE, INTERESTS_SIGNATURE):
            for size in batch_sizes:
                rows = np.array([padded[i % len(padded)] for i in range(size)], dtype=object)
                request = predict_pb2.PredictRequest()
                request.model_spec.name = name
                request.model_spec.signature_name = signature
                request.inputs[HISTORY_INPUT].CopyFrom(tf.make_tensor_proto(rows, dtype=tf.string))
                log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
                writer.write(log.SerializeToString())


def export_servables(
    model: DMIModel,
    vocabulary: Vocabulary,
    export_dir: str,
    settings: ExportSettings = ExportSettings(),
    *,
    top_n: int = DEFAULT_TOP_N,
    max_top_n: int = DEFAULT_MAX_TOP_N,
    scann: bool = True,
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
) -> dict[str, str]:
    """Writes the ``dmi`` (ScaNN) and ``dmi_exact`` SavedModels under ``export_dir``.

    Args:
      model: the trained model.
      vocabulary: its item vocabulary.
      export_dir: directory to write ``dmi/`` and ``dmi_exact/`` into (replaced if present), local or a
        TensorFlow file system URI (each servable is staged beside its target, see
        :func:`trainer.filesystem.staged_directory`).
      settings: the ScaNN index, XLA and the DDIM steps served (:class:`ExportSettings`; the defaults:
        ~sqrt(items) leaves, XLA, the model's own S).
      top_n: the default list length of ``serving_default``.
      max_top_n: the longest list a request may ask for (capped at the number of items).
      scann: also write the ScaNN servable.
      batch_sizes: the batch sizes the numeric part is compiled for (see :class:`RetrievalServable`).

    Returns:
      Servable name -> SavedModel directory.

    Raises:
      ValueError: settings that do not fit the model (:meth:`ExportSettings.check_model`).
    """
    settings.check_model(model.config, model.num_items)
    if settings.sampling_steps not in (None, model.config.num_sampling_steps):
        model = model.with_sampling_steps(settings.sampling_steps)
    max_top_n = min(max_top_n, model.num_items)
    top_n = min(top_n, max_top_n)
    warmup = [list(vocabulary.item_ids[:3]), list(vocabulary.item_ids[3:5]), []]
    written = {}
    with tempfile.TemporaryDirectory() as local:  # the asset's source; saving copies it into the SavedModel
        vocabulary_file = write_vocabulary_file(vocabulary, os.path.join(local, ITEM_VOCABULARY_FILE))
        for name in SERVABLES if scann else (EXACT,):
            written[name] = _export_one(
                name, export_dir, warmup, RetrievalServable(
                    model,
                    vocabulary,
                    vocabulary_file,
                    top_n,
                    max_top_n,
                    name == SCANN,
                    settings.scann_leaves,
                    settings.scann_leaves_to_search,
                    settings.xla,
                    batch_sizes,
                ),
            )
    return written


def _export_one(name: str, export_dir: str, warmup: list[list[str]], servable: RetrievalServable) -> str:
    """Saves one servable with its warm-up requests under ``export_dir/name``; returns that path."""
    path = fs.join(export_dir, name)
    with fs.staged_directory(path, replace=True) as tmp:
        options = tf.saved_model.SaveOptions(namespace_whitelist=["Scann"] if name == SCANN else None)
        tf.saved_model.save(servable, tmp, signatures=_signatures(servable), options=options)
        _write_warmup_requests(tmp, name, warmup, servable.batch_sizes)
    return path


def write_vocabulary_file(vocabulary: Vocabulary, path: str) -> str:
    """Writes the ids one per line (index order) for the servables' asset; returns ``path``.

    Raises:
      ValueError: an empty id (it would be the padding value) or one holding a line break (the asset is
        read line by line).
    """
    for item in vocabulary.item_ids:
        if not item or "\n" in item or "\r" in item:
            raise ValueError(f"item id {item!r} cannot be served: ids must be non-empty, without line breaks")
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.writelines(f"{item}\n" for item in vocabulary.item_ids)
    return path


def servable_item_ids(saved_model_dir: str) -> tuple[str, ...]:
    """The item vocabulary a servable carries (its asset), in index order: raw ids, as it serves them."""
    text = fs.read_text(fs.join(saved_model_dir, "assets", ITEM_VOCABULARY_FILE))
    return tuple(text.split("\n")[:-1])


def servable_scann_settings(saved_model_dir: str) -> tuple[int, int]:
    """``(leaves, leaves_to_search)`` of the ScaNN index a ``dmi`` SavedModel holds, read from its checkpoint.

    Raises:
      ValueError: the SavedModel holds no ScaNN index (a ``dmi_exact`` one, say).
    """
    from google.protobuf.message import DecodeError
    from scann.proto import scann_pb2

    reader = tf.train.load_checkpoint(fs.join(saved_model_dir, "variables", "variables"))
    for key, dtype in reader.get_variable_to_dtype_map().items():
        if key.startswith("scann/") and dtype == tf.string:
            config = scann_pb2.ScannConfig()
            try:
                config.ParseFromString(reader.get_tensor(key).reshape(-1)[0])
            except DecodeError:  # another of the index's serialized parts: not a config
                continue
            if config.HasField("partitioning"):
                partitioning = config.partitioning
                return partitioning.num_children, partitioning.query_spilling.max_spill_centers
    raise ValueError(f"{saved_model_dir} holds no ScaNN index")
