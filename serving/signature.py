"""One signature of a loaded SavedModel: request validation against its SignatureDef, and execution.

Validation follows the SignatureDef, as TF Serving does: every input alias must be declared, a missing
input is filled from ``SignatureDef.defaults`` or rejected, dtypes must match exactly and shapes must agree
with the declared ``TensorShapeProto`` (unknown rank or ``-1`` dimensions accept anything). Every rejection
is a :class:`~serving.errors.StatusError` with ``INVALID_ARGUMENT`` and a message naming the input.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow.core.protobuf import meta_graph_pb2

from serving.errors import invalid_argument

DEFAULT_SIGNATURE = "serving_default"


class Signature:
    """A SignatureDef with the ConcreteFunction that computes it.

    Inputs travel as numpy arrays between :meth:`prepare` and :meth:`__call__`, so that the batching layer
    can merge and split them without TensorFlow.
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

    @property
    def input_names(self) -> tuple[str, ...]:
        """The input aliases, sorted."""
        return tuple(sorted(self.signature_def.inputs))

    @property
    def output_names(self) -> tuple[str, ...]:
        """The output aliases, sorted."""
        return tuple(sorted(self.signature_def.outputs))

    @property
    def batch_input_names(self) -> tuple[str, ...]:
        """Inputs whose first dimension is the (unknown-size) batch dimension."""
        return tuple(n for n in self.input_names if _has_batch_dimension(self.signature_def.inputs[n]))

    @property
    def batchable(self) -> bool:
        """Whether requests can be concatenated along axis 0 and the outputs split back."""
        outputs = self.signature_def.outputs.values()
        return bool(self.batch_input_names) and all(_has_batch_dimension(info) for info in outputs)

    def prepare(self, tensors: Mapping[str, tensor_pb2.TensorProto]) -> dict[str, np.ndarray]:
        """Validates a request's inputs and completes them with the SignatureDef's defaults.

        Args:
            tensors: the request's ``inputs`` map (alias to TensorProto).

        Returns:
            One numpy array per input alias of the signature.

        Raises:
            StatusError: ``INVALID_ARGUMENT`` for an unexpected or missing input, a wrong dtype or shape, or
                a malformed TensorProto.
        """
        unexpected = sorted(set(tensors) - set(self.signature_def.inputs))
        if unexpected:
            raise invalid_argument(
                f"signature {self.name!r} has no input(s) {', '.join(map(repr, unexpected))} "
                f"(inputs: {', '.join(self.input_names)})"
            )
        arrays = {}
        for alias in self.input_names:
            if alias in tensors:
                arrays[alias] = self._to_array(alias, tensors[alias])
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
        tensors = {
            alias: tf.constant(array, dtype=tf.dtypes.as_dtype(self.signature_def.inputs[alias].dtype))
            for alias, array in inputs.items()
        }
        return {alias: tensor.numpy() for alias, tensor in self._function(**tensors).items()}

    def _to_array(self, alias: str, proto: tensor_pb2.TensorProto) -> np.ndarray:
        info = self.signature_def.inputs[alias]
        if proto.dtype != info.dtype:
            raise invalid_argument(
                f"input {alias!r} of signature {self.name!r} must be {_dtype_name(info.dtype)}, "
                f"got {_dtype_name(proto.dtype)}"
            )
        if not _shape_compatible(info.tensor_shape, proto.tensor_shape):
            raise invalid_argument(
                f"input {alias!r} of signature {self.name!r} must have shape "
                f"{_shape_text(info.tensor_shape)}, got {_shape_text(proto.tensor_shape)}"
            )
        try:
            return tf.make_ndarray(proto)
        except (ValueError, TypeError) as e:
            raise invalid_argument(f"input {alias!r}: malformed TensorProto: {e}") from e


def graph_error_message(error: tf.errors.OpError) -> str:
    """The useful part of a TensorFlow runtime error (the failed assertion), without node and op noise."""
    noise = ("Graph execution error", "Detected at node", "<stack traces unavailable>")
    lines = [line.strip() for line in error.message.splitlines()]
    kept = [line.split("[[{{node")[0].strip() for line in lines if line and not line.startswith(noise)]
    return " ".join(line for line in kept if line) or error.message


def _has_batch_dimension(info: meta_graph_pb2.TensorInfo) -> bool:
    shape = info.tensor_shape
    return not shape.unknown_rank and len(shape.dim) >= 1 and shape.dim[0].size == -1


def _shape_compatible(
    expected: tensor_shape_pb2.TensorShapeProto, got: tensor_shape_pb2.TensorShapeProto
) -> bool:
    if expected.unknown_rank:
        return True
    if got.unknown_rank or len(got.dim) != len(expected.dim):
        return False
    return all(e.size in (-1, g.size) for e, g in zip(expected.dim, got.dim))


def _shape_text(shape: tensor_shape_pb2.TensorShapeProto) -> str:
    if shape.unknown_rank:
        return "<unknown rank>"
    return "[" + ",".join("?" if d.size == -1 else str(d.size) for d in shape.dim) + "]"


def _dtype_name(dtype: int) -> str:
    try:
        return types_pb2.DataType.Name(dtype)
    except ValueError:
        return f"dtype {dtype}"
