"""A corrupt TensorFlow index entry (a field of the wrong protobuf wire type) is a CheckpointError."""

from __future__ import annotations

import pytest

from mde.errors import CheckpointError
from mde.export.importers.tf_checkpoint import _parse_entry

VARINT, LENGTH_DELIMITED = 0, 2


def _key(number: int, wire: int) -> int:
    return number << 3 | wire


def test_a_shape_stored_as_a_number_is_refused() -> None:
    entry = bytes([_key(2, VARINT), 5])  # BundleEntryProto.shape (2) must be a TensorShapeProto message
    with pytest.raises(CheckpointError, match=r"index entry 'w': protobuf field 2 is a number where a message"):
        _parse_entry("w", entry)


def test_a_dimension_size_stored_as_a_message_is_refused() -> None:
    dim = bytes([_key(1, LENGTH_DELIMITED), 0])  # Dim.size (1) must be a varint
    shape = bytes([_key(2, LENGTH_DELIMITED), len(dim)]) + dim
    entry = bytes([_key(2, LENGTH_DELIMITED), len(shape)]) + shape
    with pytest.raises(CheckpointError, match=r"protobuf field 1 is a message where a number belongs"):
        _parse_entry("w", entry)


def test_a_well_formed_shape_still_parses() -> None:
    dims = b"".join(bytes([_key(2, LENGTH_DELIMITED), 2, _key(1, VARINT), size]) for size in (3, 4))
    entry = bytes([_key(2, LENGTH_DELIMITED), len(dims)]) + dims
    assert _parse_entry("w", entry).shape == (3, 4)
