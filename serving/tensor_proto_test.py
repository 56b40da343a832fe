"""decode / encode without TensorFlow's conversion layer give exactly what tf.make_ndarray / tf.make_tensor_proto
give, for every encoding the decoder accepts and every output dtype the encoder writes itself."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2

from serving import fuzzing, tensor_proto
from serving.errors import StatusError

_DTYPES = [tf.float32, tf.float64, tf.int32, tf.int64, tf.uint32, tf.uint64, tf.bool, tf.int8, tf.int16,
           tf.uint8, tf.uint16, tf.float16, tf.bfloat16, tf.string]  # fmt: skip
_SHAPES = [(), (1,), (3,), (2, 3), (0,), (4, 0, 2), (1, 1, 1)]


def _values(dtype: tf.DType, shape: tuple[int, ...], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    size = int(np.prod(shape))
    if dtype == tf.string:
        return np.array([f"id{v}".encode() for v in rng.integers(0, 99, size)], dtype=object).reshape(shape)
    if dtype == tf.bool:
        return rng.random(size).reshape(shape) < 0.5
    if dtype.is_integer:
        low, high = max(dtype.min, -100), min(dtype.max, 100)
        return rng.integers(low, high + 1, size).astype(dtype.as_numpy_dtype).reshape(shape)
    return rng.standard_normal(size).astype(dtype.as_numpy_dtype).reshape(shape)


def _encodings(dtype: tf.DType, shape: tuple[int, ...], seed: int) -> list[tensor_pb2.TensorProto]:
    """The valid protos of one tensor: typed field, tensor_content, and one value filling many elements."""
    values = _values(dtype, shape, seed)
    protos = [tf.make_tensor_proto(values, dtype=dtype)]
    typed = tensor_pb2.TensorProto(dtype=dtype.as_datatype_enum)
    for size in shape:
        typed.tensor_shape.dim.add(size=size)
    field = tensor_proto._VALUE_FIELDS[dtype.as_datatype_enum]
    flat = values.ravel()
    if dtype in (tf.float16, tf.bfloat16):
        flat = flat.view(np.uint16)
    getattr(typed, field).extend(flat.tolist())
    protos.append(typed)
    if dtype != tf.string and values.size:
        content = tensor_pb2.TensorProto()
        content.CopyFrom(typed)
        content.ClearField(field)
        content.tensor_content = values.tobytes()
        protos.append(content)
    if values.size > 1:
        filled = tensor_pb2.TensorProto()
        filled.CopyFrom(typed)
        del getattr(filled, field)[1:]
        protos.append(filled)
    return protos


@pytest.mark.parametrize("dtype", _DTYPES, ids=lambda d: d.name)
def test_decode_gives_what_make_ndarray_gives(dtype):
    for seed, shape in enumerate(_SHAPES):
        for proto in _encodings(dtype, shape, seed):
            got, expected = tensor_proto.decode("x", proto), tf.make_ndarray(proto)
            assert got.dtype == expected.dtype and got.shape == expected.shape, proto
            np.testing.assert_array_equal(got, expected)


def test_decode_refuses_what_it_refused():
    bad = [
        (fuzzing.claimed_tensor(types_pb2.DT_INT32, [2, 3], int_val=[1, 2]), "has 6 elements but int_val holds 2"),
        (fuzzing.claimed_tensor(types_pb2.DT_INT32, [2], int_val=[1], int64_val=[2]), "but int64_val is set"),
        (fuzzing.claimed_tensor(types_pb2.DT_INT32, [1], int_val=[1], tensor_content=b"\0\0\0\0"), "int_val is"),
        (fuzzing.claimed_tensor(types_pb2.DT_STRING, [1], string_val=[b"a"], tensor_content=b"a"), "tensor_con"),
        (fuzzing.claimed_tensor(types_pb2.DT_FLOAT, [2], tensor_content=b"\0" * 7), "needs 8 bytes"),
        (fuzzing.claimed_tensor(types_pb2.DT_BOOL, [2], tensor_content=b"\0\2"), "is not 0 or 1"),
        (fuzzing.claimed_tensor(types_pb2.DT_INT32, [3, 0], int_val=[1]), "has 0 elements but int_val holds 1"),
        (fuzzing.claimed_tensor(types_pb2.DT_INT32, [2, -1]), "negative dimension (-1)"),
        (fuzzing.claimed_tensor(types_pb2.DT_COMPLEX64, [1], scomplex_val=[1.0, 2.0]), "unsupported dtype"),
        (fuzzing.claimed_tensor(types_pb2.DT_STRING, [2]), "has 2 elements but string_val holds 0"),
    ]
    for proto, message in bad:
        with pytest.raises(StatusError) as error:
            tensor_proto.decode("x", proto)
        assert message in error.value.message, (message, error.value.message)


_OUTPUTS = [
    np.array([[b"a", b"bc"], [b"", b"d"]], dtype=object),
    np.array([b"x"], dtype=object),
    np.empty((0, 3), dtype=object),
    np.array(["text", "more"], dtype=object),  # str, not bytes: through make_tensor_proto
    np.arange(6, dtype=np.float32).reshape(2, 3),
    np.array([1.5], dtype=np.float32),
    np.array(2.5, dtype=np.float32),
    np.zeros((0, 4), dtype=np.float32),
    np.arange(4, dtype=np.float64),
    np.arange(4, dtype=np.int32).reshape(2, 2),
    np.array(7, dtype=np.int32),
    np.array([7], dtype=np.int64),
    np.arange(3, dtype=np.int64),
    np.array([True, False, True]),
    np.array(True),
    np.arange(5, dtype=np.int8),
    np.arange(5, dtype=np.uint8),
    np.arange(5, dtype=np.int16),
    np.arange(5, dtype=np.uint16),
    np.arange(3, dtype=np.float16),
    np.arange(3, dtype=np.uint64),
    np.arange(6, dtype=np.float32).reshape(2, 3)[:, ::2],  # not contiguous
    np.arange(3, dtype=">f4"),  # big-endian
]


@pytest.mark.parametrize("array", _OUTPUTS, ids=lambda a: f"{a.dtype}{list(a.shape)}")
def test_encode_writes_what_make_tensor_proto_writes(array):
    got = tensor_pb2.TensorProto()
    tensor_proto.encode(array, got)
    assert got == tf.make_tensor_proto(array)
    np.testing.assert_array_equal(tf.make_ndarray(got), tf.make_ndarray(tf.make_tensor_proto(array)))
