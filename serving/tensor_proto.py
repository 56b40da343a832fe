"""Hostile ``TensorProto`` inputs decoded safely: every claim checked against the payload before allocation.

A ``TensorProto`` states its shape and carries its values separately, so a request of a few dozen bytes can
claim ``[2147483648, 1]`` and let the decoder broadcast one value (or none) into gigabytes. TensorFlow's
own decoder (``tf.make_ndarray``, ``Tensor::FromProto``) trusts the claim: no values means zeros, fewer
values than elements repeat the last one, extra values are ignored, and value fields of another dtype are
ignored. This module accepts a proto only when it is unambiguous:

- the shape has a known rank and no negative dimension;
- the values are in the one field of the proto's dtype: ``tensor_content`` (numeric dtypes, exactly
  ``elements * itemsize`` bytes, bool bytes 0 or 1) or the typed ``*_val`` field (strings always in
  ``string_val``), never both, and no other value field is set;
- the typed field holds exactly one value per element, or a single value for a tensor of several
  elements (TensorFlow's fill rule, which clients such as ``tf.make_tensor_proto`` of a scalar use); a
  tensor with elements but no values is rejected, as are extra values.

The element count is checked against the caller's limits (:func:`claimed_elements` first, then
:func:`decode`) before anything of that size is allocated. Messages quote at most a bounded prefix of
anything the client sent (:func:`quote`).
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

from serving.errors import invalid_argument

QUOTE_LIMIT = 64
"""At most this many characters of a client's text are repeated in an error message."""

# The value field that holds each dtype's values, as tensor.proto documents it.
_VALUE_FIELDS: dict[int, str] = {
    types_pb2.DT_STRING: "string_val",
    types_pb2.DT_FLOAT: "float_val",
    types_pb2.DT_DOUBLE: "double_val",
    types_pb2.DT_INT32: "int_val",
    types_pb2.DT_INT16: "int_val",
    types_pb2.DT_INT8: "int_val",
    types_pb2.DT_UINT8: "int_val",
    types_pb2.DT_UINT16: "int_val",
    types_pb2.DT_INT64: "int64_val",
    types_pb2.DT_UINT32: "uint32_val",
    types_pb2.DT_UINT64: "uint64_val",
    types_pb2.DT_BOOL: "bool_val",
    types_pb2.DT_HALF: "half_val",
    types_pb2.DT_BFLOAT16: "half_val",
}
_ALL_VALUE_FIELDS = tuple(
    field.name
    for field in tensor_pb2.TensorProto.DESCRIPTOR.fields
    if field.name.endswith("_val") or field.name == "tensor_content"
)


def quote(text: str | bytes, limit: int = QUOTE_LIMIT) -> str:
    """``repr`` of at most ``limit`` characters of ``text``, marked when cut."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} characters)"


def shape_text(shape: tensor_shape_pb2.TensorShapeProto, max_dims: int = 8, declared: bool = False) -> str:
    """A shape as ``[2,3,5]`` (at most ``max_dims`` dimensions spelled out); ``declared``: ``-1`` as ``?``."""
    if shape.unknown_rank:
        return "<unknown rank>"
    dims = ["?" if declared and d.size == -1 else str(d.size) for d in shape.dim[:max_dims]]
    if len(shape.dim) > max_dims:
        dims.append(f"... ({len(shape.dim)} dimensions)")
    return "[" + ",".join(dims) + "]"


def dtype_name(dtype: int) -> str:
    """``DT_STRING`` for a ``DataType`` number (or ``dtype 99`` for an unknown one)."""
    try:
        return types_pb2.DataType.Name(dtype)
    except ValueError:
        return f"dtype {dtype}"


def claimed_elements(name: str, proto: tensor_pb2.TensorProto) -> int:
    """The element count a proto's shape claims, after checking the shape is one a tensor can have.

    Args:
        name: the input's alias, for messages.
        proto: the client's tensor.

    Returns:
        The product of the dimensions (an exact Python int, whatever its size).

    Raises:
        StatusError: ``INVALID_ARGUMENT`` for an unknown rank or a negative dimension.
    """
    shape = proto.tensor_shape
    if shape.unknown_rank:
        raise invalid_argument(f"input {name!r}: a request tensor must have a known rank")
    negative = [d.size for d in shape.dim if d.size < 0]
    if negative:
        raise invalid_argument(
            f"input {name!r}: shape {shape_text(shape)} has a negative dimension ({negative[0]})"
        )
    return math.prod(d.size for d in shape.dim)


def decode(name: str, proto: tensor_pb2.TensorProto) -> np.ndarray:
    """Decodes a proto whose claimed shape was already checked against the caller's limits.

    Args:
        name: the input's alias, for messages.
        proto: the client's tensor.

    Returns:
        The array (``object`` dtype of ``bytes`` for strings).

    Raises:
        StatusError: ``INVALID_ARGUMENT`` if the payload does not match the claimed shape and dtype
            (see the module docstring).
    """
    elements = claimed_elements(name, proto)
    field = _VALUE_FIELDS.get(proto.dtype)
    if field is None:
        raise invalid_argument(f"input {name!r}: unsupported dtype {dtype_name(proto.dtype)}")
    others = [f for f in _ALL_VALUE_FIELDS if f not in (field, "tensor_content") and _is_set(proto, f)]
    content = bool(proto.tensor_content)
    if content and proto.dtype == types_pb2.DT_STRING:
        others.append("tensor_content")
    if content and _is_set(proto, field):
        others.append(field)
    if others:
        raise invalid_argument(
            f"input {name!r}: a {dtype_name(proto.dtype)} tensor carries its values in "
            f"{field}{'' if proto.dtype == types_pb2.DT_STRING else ' or tensor_content'} only, "
            f"but {', '.join(sorted(set(others)))} {'is' if len(set(others)) == 1 else 'are'} set too"
        )
    shape = tuple(d.size for d in proto.tensor_shape.dim)
    if content:
        dtype = tf.dtypes.as_dtype(proto.dtype).as_numpy_dtype
        expected = elements * np.dtype(dtype).itemsize
        if len(proto.tensor_content) != expected:
            raise invalid_argument(
                f"input {name!r}: shape {shape_text(proto.tensor_shape)} of {dtype_name(proto.dtype)} needs "
                f"{expected} bytes of tensor_content, got {len(proto.tensor_content)}"
            )
        if proto.dtype == types_pb2.DT_BOOL:
            raw = np.frombuffer(proto.tensor_content, dtype=np.uint8)
            if raw.size and raw.max() > 1:
                raise invalid_argument(f"input {name!r}: a bool in tensor_content is not 0 or 1")
        return tf.make_ndarray(proto)
    count = len(getattr(proto, field))
    if count != elements and not (count == 1 and elements > 1):
        raise invalid_argument(
            f"input {name!r}: shape {shape_text(proto.tensor_shape)} has {elements} elements but "
            f"{field} holds {count} values"
        )
    if proto.dtype == types_pb2.DT_STRING:
        values = np.empty(elements, dtype=object)
        values[:] = list(proto.string_val) if count == elements else proto.string_val[0]
        return values.reshape(shape)
    return tf.make_ndarray(proto)


def _is_set(proto: tensor_pb2.TensorProto, field: str) -> bool:
    return bool(len(getattr(proto, field))) if field != "tensor_content" else bool(proto.tensor_content)
