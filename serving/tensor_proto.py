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

Both directions run in numpy, without TensorFlow's Python conversion layer (``tf.make_ndarray``,
``tf.make_tensor_proto``: tens of microseconds per tensor, a measurable share of a batch-1 request):
:func:`decode` gives the array ``tf.make_ndarray`` would give for every proto it accepts, and
:func:`encode` writes the proto ``tf.make_tensor_proto`` would write, for the dtypes a servable returns;
rarer dtypes (half precision, complex, quantized) go through TensorFlow's own functions.
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
_VALUE_FIELD_SET = frozenset(_ALL_VALUE_FIELDS)
# The numpy dtype of each DataType whose typed field holds values of exactly that type, so that numpy reads
# them as tf.make_ndarray does (others, e.g. int8 in int_val or half bits in half_val, go through it).
_NUMPY_DTYPES: dict[int, np.dtype] = {
    types_pb2.DT_FLOAT: np.dtype(np.float32),
    types_pb2.DT_DOUBLE: np.dtype(np.float64),
    types_pb2.DT_INT32: np.dtype(np.int32),
    types_pb2.DT_INT64: np.dtype(np.int64),
    types_pb2.DT_UINT32: np.dtype(np.uint32),
    types_pb2.DT_UINT64: np.dtype(np.uint64),
    types_pb2.DT_BOOL: np.dtype(np.bool_),
}
# The dtypes tf.make_tensor_proto writes as tensor_content (for more than one element), by numpy dtype.
_CONTENT_DTYPES: dict[np.dtype, int] = {
    np.dtype(np.float32): types_pb2.DT_FLOAT,
    np.dtype(np.float64): types_pb2.DT_DOUBLE,
    np.dtype(np.int32): types_pb2.DT_INT32,
    np.dtype(np.int64): types_pb2.DT_INT64,
    np.dtype(np.int16): types_pb2.DT_INT16,
    np.dtype(np.int8): types_pb2.DT_INT8,
    np.dtype(np.uint8): types_pb2.DT_UINT8,
}
# The typed field tf.make_tensor_proto fills for a single element (and for bool arrays), by numpy dtype.
_TYPED_FIELDS: dict[np.dtype, tuple[int, str]] = {
    np.dtype(np.float32): (types_pb2.DT_FLOAT, "float_val"),
    np.dtype(np.float64): (types_pb2.DT_DOUBLE, "double_val"),
    np.dtype(np.int32): (types_pb2.DT_INT32, "int_val"),
    np.dtype(np.int64): (types_pb2.DT_INT64, "int64_val"),
    np.dtype(np.bool_): (types_pb2.DT_BOOL, "bool_val"),
}


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
    return math.prod(claimed_shape(name, proto))


def claimed_shape(name: str, proto: tensor_pb2.TensorProto) -> tuple[int, ...]:
    """The dimensions a proto's shape claims, checked as :func:`claimed_elements` checks them."""
    shape = proto.tensor_shape
    if shape.unknown_rank:
        raise invalid_argument(f"input {name!r}: a request tensor must have a known rank")
    dims = tuple(d.size for d in shape.dim)
    if any(size < 0 for size in dims):
        negative = next(size for size in dims if size < 0)
        raise invalid_argument(
            f"input {name!r}: shape {shape_text(shape)} has a negative dimension ({negative})"
        )
    return dims


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
    shape = claimed_shape(name, proto)
    elements = math.prod(shape)
    field = _VALUE_FIELDS.get(proto.dtype)
    if field is None:
        raise invalid_argument(f"input {name!r}: unsupported dtype {dtype_name(proto.dtype)}")
    # The value fields that are set (ListFields lists a repeated or bytes field only when it is non-empty).
    present = {descriptor.name for descriptor, _ in proto.ListFields()} & _VALUE_FIELD_SET
    others = [f for f in _ALL_VALUE_FIELDS if f in present and f not in (field, "tensor_content")]
    content = "tensor_content" in present
    if content and proto.dtype == types_pb2.DT_STRING:
        others.append("tensor_content")
    if content and field in present:
        others.append(field)
    if others:
        raise invalid_argument(
            f"input {name!r}: a {dtype_name(proto.dtype)} tensor carries its values in "
            f"{field}{'' if proto.dtype == types_pb2.DT_STRING else ' or tensor_content'} only, "
            f"but {', '.join(sorted(set(others)))} {'is' if len(set(others)) == 1 else 'are'} set too"
        )
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
        return np.frombuffer(proto.tensor_content, dtype=dtype).copy().reshape(shape)
    values = getattr(proto, field)
    count = len(values)
    if count != elements and not (count == 1 and elements > 1):
        raise invalid_argument(
            f"input {name!r}: shape {shape_text(proto.tensor_shape)} has {elements} elements but "
            f"{field} holds {count} values"
        )
    if proto.dtype == types_pb2.DT_STRING:
        array = np.empty(elements, dtype=object)
        array[:] = list(values) if count == elements else values[0]
        return array.reshape(shape)
    dtype = _NUMPY_DTYPES.get(proto.dtype)
    if dtype is None:
        return tf.make_ndarray(proto)
    if count == elements:
        return np.array(values, dtype=dtype).reshape(shape)
    return np.full(shape, values[0], dtype=dtype)  # one value for every element (TensorFlow's fill rule)


def encode(array: np.ndarray, proto: tensor_pb2.TensorProto) -> None:
    """Writes ``array`` into an empty ``proto`` as ``proto.CopyFrom(tf.make_tensor_proto(array))`` would.

    Strings (``object`` arrays of ``bytes``, as TensorFlow returns them) go to ``string_val``; numeric
    arrays of more than one element to ``tensor_content``, single values and bools to their typed field,
    exactly as ``tf.make_tensor_proto`` chooses; other dtypes (or ``str`` elements) through it.

    Args:
        array: an output of a signature.
        proto: the message to fill, e.g. ``response.outputs[alias]`` (written in place, no copy).
    """
    dtype = array.dtype
    if dtype == object:
        values = array.ravel().tolist()
        if all(type(value) is bytes for value in values):
            proto.dtype = types_pb2.DT_STRING
            _set_shape(proto, array.shape)
            proto.string_val.extend(values)
            return
    elif array.size > 1 and dtype in _CONTENT_DTYPES and dtype.byteorder != ">":
        proto.dtype = _CONTENT_DTYPES[dtype]
        _set_shape(proto, array.shape)
        proto.tensor_content = array.tobytes()
        return
    elif dtype in _TYPED_FIELDS and dtype.byteorder != ">":
        proto.dtype, field = _TYPED_FIELDS[dtype]
        _set_shape(proto, array.shape)
        getattr(proto, field).extend(array.ravel().tolist())
        return
    proto.CopyFrom(tf.make_tensor_proto(array))


def _set_shape(proto: tensor_pb2.TensorProto, shape: tuple[int, ...]) -> None:
    proto.tensor_shape.SetInParent()  # present even for a scalar, as tf.make_tensor_proto writes it
    dims = proto.tensor_shape.dim
    for size in shape:
        dims.add(size=size)
