"""One signature of a loaded SavedModel: request validation against its SignatureDef, and execution.

Validation follows the SignatureDef, as TF Serving does: every input alias must be declared, a missing
input is filled from ``SignatureDef.defaults`` or rejected, dtypes must match exactly and shapes must agree
with the declared ``TensorShapeProto`` (unknown rank or ``-1`` dimensions accept anything). Before any
input is decoded, the shapes it claims are held to the server's :class:`~serving.server_config.RequestLimits`
(rows, elements per row, elements per request) and to one batch size across the batch inputs; decoding
then checks the payload against the claim (:mod:`serving.tensor_proto`). Every rejection is a
:class:`~serving.errors.StatusError` with ``INVALID_ARGUMENT`` and a short message naming the input.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2
from tensorflow.core.protobuf import meta_graph_pb2

from serving import tensor_proto
from serving.server_config import RequestLimits
from serving.errors import invalid_argument
from serving.tensor_proto import dtype_name, quote, shape_text

DEFAULT_SIGNATURE = "serving_default"


class Signature:
    """A SignatureDef with the ConcreteFunction that computes it.

    Inputs travel as numpy arrays between :meth:`prepare` and :meth:`__call__`, so that the batching layer
    can merge and split them without TensorFlow. What a request is checked against (aliases, dtypes,
    declared shapes, batch inputs) is read from the SignatureDef once, here; a request's own work is its
    checks, its decoding and the call.
    """

    def __init__(
        self,
        name: str,
        signature_def: meta_graph_pb2.SignatureDef,
        function: tf.types.experimental.ConcreteFunction,
    ):
        """Wraps one signature.

        Args:
            name: the signature key (e.g. ``serving_default``).
            signature_def: its SignatureDef, read from ``saved_model.pb``.
            function: ``loaded.signatures[name]``, called with one keyword tensor per input alias.
        """
        self.name = name
        self.signature_def = signature_def
        self._function = function
        self._defaults = {alias: tf.make_ndarray(proto) for alias, proto in signature_def.defaults.items()}
        self._inputs = dict(signature_def.inputs)
        self.input_names: tuple[str, ...] = tuple(sorted(self._inputs))
        """The input aliases, sorted."""
        self.output_names: tuple[str, ...] = tuple(sorted(signature_def.outputs))
        """The output aliases, sorted."""
        self.batch_input_names: tuple[str, ...] = tuple(
            n for n in self.input_names if _has_batch_dimension(self._inputs[n])
        )
        """Inputs whose first dimension is the (unknown-size) batch dimension."""
        self._batch_inputs = frozenset(self.batch_input_names)
        self._dtypes = {alias: tf.dtypes.as_dtype(info.dtype) for alias, info in self._inputs.items()}
        self._shapes = {alias: _declared_dims(info.tensor_shape) for alias, info in self._inputs.items()}
        # Small tensors a request sends again and again (top_n, exclude_history, the defaults), converted
        # once (at most _MAX_CACHED_SCALARS of them, so no request can grow the cache beyond that).
        self._scalars: dict[tuple[str, str, bytes], tf.Tensor] = {}
        self._call = _flat_call(function, self.input_names) or (lambda tensors: function(**tensors))

    @property
    def batchable(self) -> bool:
        """Whether requests can be concatenated along axis 0 and the outputs split back."""
        outputs = self.signature_def.outputs.values()
        return bool(self.batch_input_names) and all(_has_batch_dimension(info) for info in outputs)

    def prepare(
        self, tensors: Mapping[str, tensor_pb2.TensorProto], limits: RequestLimits = RequestLimits()
    ) -> dict[str, np.ndarray]:
        """Validates a request's inputs and completes them with the SignatureDef's defaults.

        Args:
            tensors: the request's ``inputs`` map (alias to TensorProto).
            limits: the largest request the server accepts; checked on the claimed shapes, before decoding.

        Returns:
            One numpy array per input alias of the signature.

        Raises:
            StatusError: ``INVALID_ARGUMENT`` for an unexpected or missing input, a wrong dtype or shape, or
                a malformed TensorProto, a request over ``limits``.
        """
        tensors = dict(tensors)  # one lookup of each entry of the protobuf map
        unexpected = sorted(alias for alias in tensors if alias not in self._inputs)
        if unexpected:
            shown = ", ".join(quote(name) for name in unexpected[:3])
            more = f" and {len(unexpected) - 3} more" if len(unexpected) > 3 else ""
            raise invalid_argument(
                f"signature {self.name!r} has no input(s) {shown}{more} (inputs: {', '.join(self.input_names)})"
            )
        claims = {alias: self._check_claim(alias, proto) for alias, proto in tensors.items()}
        self._check_limits(claims, limits)
        arrays = {}
        for alias in self.input_names:
            if alias in tensors:
                arrays[alias] = tensor_proto.decode(alias, tensors[alias])
            elif alias in self._defaults:
                arrays[alias] = self._defaults[alias]
            else:
                raise invalid_argument(f"signature {self.name!r} needs input {alias!r}, which has no default")
        return arrays

    def select_outputs(self, output_filter: Sequence[str]) -> tuple[str, ...]:
        """The outputs a request asked for.

        Args:
            output_filter: the request's ``output_filter``; empty means every output.

        Returns:
            The output aliases to return.

        Raises:
            StatusError: ``INVALID_ARGUMENT`` if the filter names an output the signature does not have.
        """
        if not output_filter:
            return self.output_names
        unknown = sorted(set(output_filter) - set(self.signature_def.outputs))
        if unknown:
            raise invalid_argument(
                f"output_filter names unknown output(s) {', '.join(map(repr, unknown))} of signature "
                f"{self.name!r} (outputs: {', '.join(self.output_names)})"
            )
        return tuple(dict.fromkeys(output_filter))

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Runs the signature.

        Args:
            inputs: one array per input alias, as :meth:`prepare` returns them.

        Returns:
            One array per output alias.

        Raises:
            tf.errors.OpError: the graph failed (``InvalidArgumentError`` for a failed assertion).
        """
        tensors = {alias: self._tensor(alias, array) for alias, array in inputs.items()}
        return {alias: tensor.numpy() for alias, tensor in self.call_tensors(tensors).items()}

    def call_tensors(self, tensors: Mapping[str, tf.Tensor]) -> Mapping[str, tf.Tensor]:
        """The function on ready tensors, one per input alias of the SignatureDef's dtype (unchecked).

        What :meth:`__call__` runs after converting its arrays: TensorFlow's flat call where it applies
        (see ``_flat_call``), else the keyword call. Benchmarks time the model through it, as the server
        calls it.
        """
        return self._call(tensors)

    def _tensor(self, alias: str, array: np.ndarray) -> tf.Tensor:
        """The input as a tensor of the SignatureDef's dtype; scalars from the cache when they are in it."""
        if array.ndim or array.dtype == object:
            return tf.constant(array, dtype=self._dtypes[alias])
        key = (alias, array.dtype.str, array.tobytes())
        tensor = self._scalars.get(key)
        if tensor is None:
            tensor = tf.constant(array, dtype=self._dtypes[alias])
            if len(self._scalars) < _MAX_CACHED_SCALARS:
                self._scalars[key] = tensor
        return tensor

    def _check_claim(self, alias: str, proto: tensor_pb2.TensorProto) -> tuple[int, ...]:
        """The dtype and the claimed shape against the SignatureDef (nothing decoded yet); the claimed dims."""
        info = self._inputs[alias]
        if proto.dtype != info.dtype:
            raise invalid_argument(
                f"input {alias!r} of signature {self.name!r} must be {dtype_name(info.dtype)}, "
                f"got {dtype_name(proto.dtype)}"
            )
        dims = tensor_proto.claimed_shape(alias, proto)
        expected = self._shapes[alias]
        if expected is not None and (
            len(dims) != len(expected) or any(e not in (-1, g) for e, g in zip(expected, dims))
        ):
            raise invalid_argument(
                f"input {alias!r} of signature {self.name!r} must have shape "
                f"{shape_text(info.tensor_shape, declared=True)}, got {shape_text(proto.tensor_shape)}"
            )
        return dims

    def _check_limits(self, claims: Mapping[str, tuple[int, ...]], limits: RequestLimits) -> None:
        """Rows, elements per row and per request of the claimed shapes; one batch size for all inputs."""
        total = 0
        rows_by_input = {}
        for alias, dims in claims.items():
            total += math.prod(dims)
            if alias in self._batch_inputs:
                rows_by_input[alias] = dims[0]
                if dims[0] > limits.max_batch_rows:
                    raise invalid_argument(
                        f"input {alias!r} has {dims[0]} rows; this server accepts at most "
                        f"{limits.max_batch_rows} per request (--max_batch_rows)"
                    )
                per_row = math.prod(dims[1:])
                if per_row > limits.max_row_elements:
                    raise invalid_argument(
                        f"input {alias!r} has {per_row} elements per row; this server accepts at most "
                        f"{limits.max_row_elements} (--max_row_elements)"
                    )
        if total > limits.max_request_elements:
            raise invalid_argument(
                f"the request's inputs have {total} elements; this server accepts at most "
                f"{limits.max_request_elements} (--max_request_elements)"
            )
        if len(set(rows_by_input.values())) > 1:
            sizes = ", ".join(f"{alias!r}: {rows}" for alias, rows in sorted(rows_by_input.items()))
            raise invalid_argument(f"the batch inputs disagree on the batch size ({sizes})")


_MAX_CACHED_SCALARS = 256


def _flat_call(
    function: tf.types.experimental.ConcreteFunction, aliases: Sequence[str]
) -> Callable[[Mapping[str, tf.Tensor]], Mapping[str, tf.Tensor]] | None:
    """``function(**tensors)`` without binding the keywords to its structured signature on every call.

    A loaded signature is called through TensorFlow's flat call (``ConcreteFunction._call_flat``, what
    the keyword call ends in) with the tensors in the order of the function's parameters; the binding it
    skips only re-checks what :meth:`Signature.prepare` and :meth:`Signature._tensor` already ensured
    (the aliases, a tensor of the declared dtype each). Returns None, so that the keyword call is used,
    for a function whose parameters are not exactly the aliases as keyword-only tensors, or a TensorFlow
    without that method.
    """
    try:
        parameters = list(function.function_type.parameters.values())
        specs = function.structured_input_signature[1]
        call_flat = function._call_flat
    except (AttributeError, TypeError, IndexError):
        return None
    names = [parameter.name for parameter in parameters]
    if (
        sorted(names) != sorted(aliases)
        or any(parameter.kind != parameter.KEYWORD_ONLY for parameter in parameters)
        or set(specs) != set(names)
        or not all(type(specs[name]) is tf.TensorSpec for name in names)
    ):
        return None

    def call(tensors: Mapping[str, tf.Tensor]) -> Mapping[str, tf.Tensor]:
        return call_flat([tensors[name] for name in names], function.captured_inputs)

    return call


def graph_error_message(error: tf.errors.OpError) -> str:
    """The useful part of a TensorFlow runtime error (the failed assertion), without node and op noise."""
    noise = ("Graph execution error", "Detected at node", "<stack traces unavailable>")
    lines = [line.strip() for line in error.message.splitlines()]
    kept = [line.split("[[{{node")[0].strip() for line in lines if line and not line.startswith(noise)]
    return " ".join(line for line in kept if line) or error.message


def _has_batch_dimension(info: meta_graph_pb2.TensorInfo) -> bool:
    shape = info.tensor_shape
    return not shape.unknown_rank and len(shape.dim) >= 1 and shape.dim[0].size == -1


def _declared_dims(shape: tensor_shape_pb2.TensorShapeProto) -> tuple[int, ...] | None:
    """A declared shape's dimensions (``-1``: any size), or None for an unknown rank (any shape)."""
    return None if shape.unknown_rank else tuple(d.size for d in shape.dim)
