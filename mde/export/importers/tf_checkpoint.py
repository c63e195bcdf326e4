"""Read TensorFlow checkpoints (the V2 "tensor bundle" format of ``tf.train.Saver``) with numpy alone.

A checkpoint with prefix ``P`` is ``P.index`` plus data shards ``P.data-00000-of-0000N``:

* ``P.index`` is an SSTable (LevelDB table format): key-sorted blocks of prefix-compressed entries with
  restart points, each block followed by a compression byte and a masked CRC32C; an index block points
  at the data blocks; a 48-byte footer holds the metaindex and index block handles and the magic number.
* Its values are serialized protobufs, decoded here by hand: the entry with the empty key is a
  ``BundleHeaderProto`` (num_shards, endianness, version), every other key names a variable and holds a
  ``BundleEntryProto`` (dtype, shape, shard_id, offset, size, masked crc32c of the tensor bytes).

Every block checksum, every tensor checksum and every shard size is checked; anything wrong raises
:class:`mde.errors.CheckpointError` with one line. Snappy-compressed index blocks, partitioned (sliced)
variables and string tensors are not supported and say so. TensorFlow is never imported.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mde.errors import CheckpointError

TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48
BLOCK_TRAILER_SIZE = 5  # compression byte + masked crc32c
_NO_COMPRESSION, _SNAPPY = 0, 1

CRC32C_POLY = 0x82F63B78  # Castagnoli, reflected
_CRC_MASK_DELTA = 0xA282EAD8

# TensorFlow DataType enum -> numpy dtype (little-endian); strings, resources and variants are absent.
_DTYPES = {
    1: "<f4", 2: "<f8", 3: "<i4", 4: "u1", 5: "<i2", 6: "i1", 8: "<c8", 9: "<i8", 10: "?",
    17: "<u2", 18: "<c16", 19: "<f2", 22: "<u4", 23: "<u8",
}
_DTYPE_NAMES = {7: "string", 14: "bfloat16", 20: "resource", 21: "variant"}


# --------------------------------------------------------------------------------------------- crc32c

def _crc_table() -> np.ndarray:
    table = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        table = np.where(table & 1, (table >> 1) ^ np.uint32(CRC32C_POLY), table >> 1).astype(np.uint32)
    return table


_TABLE = _crc_table()
_TABLE_LIST = _TABLE.tolist()
_SERIAL_LIMIT = 1 << 14  # bytes: below this a plain loop is faster than the lane-parallel version
_LANES = 4096


def _apply(tables: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Apply a GF(2)-linear map on 32-bit words, given as 4 byte tables (4 x 256), to ``values``.

    Applied to another map's tables it gives the byte tables of the composition.
    """
    return (tables[0][values & 0xFF] ^ tables[1][(values >> 8) & 0xFF]
            ^ tables[2][(values >> 16) & 0xFF] ^ tables[3][values >> 24])


def _zero_byte_tables() -> np.ndarray:
    """Byte tables of the map 'run one zero byte through the CRC register'."""
    basis = np.arange(256, dtype=np.uint32)[None, :] << (8 * np.arange(4, dtype=np.uint32))[:, None]
    return _TABLE[basis & 0xFF] ^ (basis >> 8)


_ZERO_1 = _zero_byte_tables()


def _zeros_tables(n_bytes: int) -> np.ndarray:
    """Byte tables of the map 'run ``n_bytes`` (>= 1) zero bytes through the CRC register' (square-and-multiply)."""
    result: np.ndarray | None = None
    power = _ZERO_1
    while n_bytes:
        if n_bytes & 1:
            result = power if result is None else _apply(power, result)
        n_bytes >>= 1
        if n_bytes:
            power = _apply(power, power)
    if result is None:
        raise ValueError("_zeros_tables needs at least one byte")
    return result


def _crc32c_serial(data: bytes, crc: int = 0) -> int:
    """Raw register update (no pre/post inversion) one byte at a time."""
    table = _TABLE_LIST
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc


def _crc32c_lanes(data: np.ndarray) -> int:
    """Raw register value (start 0) of ``data``, computed over many lanes at once.

    Leading zero bytes do not change a register that starts at 0, so the data is front-padded to
    ``lanes x length``; each lane's register is computed in parallel, then neighbouring lanes are merged
    pairwise (left register shifted past the right lane's bytes, xor the right register).
    """
    length = -(-data.size // _LANES)
    padded = np.zeros(_LANES * length, dtype=np.uint8)
    padded[padded.size - data.size:] = data
    columns = np.ascontiguousarray(padded.reshape(_LANES, length).T)
    registers = np.zeros(_LANES, dtype=np.uint32)
    for column in columns:
        registers = _TABLE[(registers ^ column) & 0xFF] ^ (registers >> 8)
    shift = _zeros_tables(length)
    while registers.size > 1:
        registers = _apply(shift, registers[0::2]) ^ registers[1::2]
        shift = _apply(shift, shift)
    return int(registers[0])


def crc32c(data: bytes | bytearray | memoryview) -> int:
    """CRC-32C (Castagnoli) of ``data``, as used by TensorFlow and LevelDB. 10 MB take about 0.1 s."""
    raw = np.frombuffer(data, dtype=np.uint8)
    if raw.size < _SERIAL_LIMIT:
        return _crc32c_serial(raw.tobytes(), 0xFFFFFFFF) ^ 0xFFFFFFFF
    # Starting the register at 0xFFFFFFFF equals starting at 0 with the first 4 bytes inverted.
    raw = raw.copy()
    raw[:4] ^= 0xFF
    return _crc32c_lanes(raw) ^ 0xFFFFFFFF


def unmask_crc(masked: int) -> int:
    """Undo LevelDB/TensorFlow CRC masking (rotate right 17 after subtracting a constant)."""
    rotated = (masked - _CRC_MASK_DELTA) & 0xFFFFFFFF
    return ((rotated >> 17) | (rotated << 15)) & 0xFFFFFFFF


# ------------------------------------------------------------------------------------------- protobuf

def _varint(buf: bytes, pos: int, where: str) -> tuple[int, int]:
    """Decode a base-128 varint at ``pos``; returns (value, next position)."""
    value = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise CheckpointError(f"{where}: truncated or overlong varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _proto_fields(buf: bytes, where: str) -> Iterator[tuple[int, int | bytes]]:
    """(field number, value) of each field of a serialized protobuf message.

    Varints and fixed-width fields come back as ints, length-delimited fields as bytes.
    """
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos, where)
        number, wire = key >> 3, key & 7
        value: int | bytes
        if wire == 0:
            value, pos = _varint(buf, pos, where)
        elif wire in (1, 5):
            width = 8 if wire == 1 else 4
            if pos + width > len(buf):
                raise CheckpointError(f"{where}: truncated protobuf field {number}")
            value = int.from_bytes(buf[pos:pos + width], "little")
            pos += width
        elif wire == 2:
            size, pos = _varint(buf, pos, where)
            if pos + size > len(buf):
                raise CheckpointError(f"{where}: truncated protobuf field {number}")
            value, pos = bytes(buf[pos:pos + size]), pos + size
        else:
            raise CheckpointError(f"{where}: unsupported protobuf wire type {wire}")
        yield number, value


def _message_field(value: int | bytes, number: int, where: str) -> bytes:
    """A length-delimited field's bytes; CheckpointError when the file gives the field another wire type."""
    if isinstance(value, int):
        raise CheckpointError(f"{where}: protobuf field {number} is a number where a message belongs")
    return value


def _number_field(value: int | bytes, number: int, where: str) -> int:
    """A varint or fixed-width field's value; CheckpointError when the file gives it another wire type."""
    if isinstance(value, bytes):
        raise CheckpointError(f"{where}: protobuf field {number} is a message where a number belongs")
    return value


@dataclass(frozen=True)
class BundleEntry:
    """Where a tensor lives: data shard, byte offset and size in it, and its masked CRC32C."""

    name: str
    dtype_code: int
    shape: tuple[int, ...]
    shard_id: int
    offset: int
    size: int
    masked_crc: int
    sliced: bool

    @property
    def dtype(self) -> np.dtype:
        """The numpy dtype; CheckpointError for types this reader does not decode."""
        if self.dtype_code not in _DTYPES:
            kind = _DTYPE_NAMES.get(self.dtype_code, f"DataType {self.dtype_code}")
            raise CheckpointError(f"variable {self.name!r}: {kind} tensors are not supported")
        return np.dtype(_DTYPES[self.dtype_code])


def _parse_shape(buf: bytes, where: str) -> tuple[int, ...]:
    """TensorShapeProto: repeated dim (2) {size (1)}; unknown_rank (3) is an error."""
    dims = []
    for number, value in _proto_fields(buf, where):
        if number == 2:
            dim = _proto_fields(_message_field(value, number, where), where)
            size = next((_number_field(v, n, where) for n, v in dim if n == 1), 0)
            dims.append(size - (1 << 64) if size >= 1 << 63 else size)
        elif number == 3 and value:
            raise CheckpointError(f"{where}: tensor of unknown rank")
    if any(d < 0 for d in dims):
        raise CheckpointError(f"{where}: negative dimension in shape {dims}")
    return tuple(dims)


def _parse_entry(name: str, buf: bytes) -> BundleEntry:
    """BundleEntryProto: dtype 1, shape 2, shard_id 3, offset 4, size 5, crc32c 6, slices 7."""
    where = f"index entry {name!r}"
    values: dict[int, int | bytes] = {}
    sliced = False
    for number, value in _proto_fields(buf, where):
        if number == 7:
            sliced = True
        else:
            values[number] = value
    shape = _parse_shape(_message_field(values.get(2, b""), 2, where), where)
    return BundleEntry(
        name=name, dtype_code=int(values.get(1, 0)), shape=shape,
        shard_id=int(values.get(3, 0)), offset=int(values.get(4, 0)), size=int(values.get(5, 0)),
        masked_crc=int(values.get(6, 0)), sliced=sliced,
    )


def _parse_header(buf: bytes) -> int:
    """BundleHeaderProto: num_shards 1, endianness 2 (0 little, 1 big), version 3. Returns num_shards."""
    values = dict(_proto_fields(buf, "bundle header"))
    if values.get(2, 0) != 0:
        raise CheckpointError("big-endian checkpoints are not supported")
    num_shards = int(values.get(1, 0))
    if num_shards < 1:
        raise CheckpointError(f"bundle header declares {num_shards} data shards")
    return num_shards


# -------------------------------------------------------------------------------------------- sstable

def _block(table: bytes, handle: bytes, where: str) -> bytes:
    """Contents of the block a BlockHandle (varint offset, varint size) points at, checksum verified."""
    offset, pos = _varint(handle, 0, where)
    size, _ = _varint(handle, pos, where)
    end = offset + size
    if end + BLOCK_TRAILER_SIZE > len(table) - FOOTER_SIZE:
        raise CheckpointError(f"{where}: block at {offset} (+{size} bytes) lies outside the index file")
    compression = table[end]
    stored = unmask_crc(int.from_bytes(table[end + 1:end + BLOCK_TRAILER_SIZE], "little"))
    if crc32c(table[offset:end + 1]) != stored:
        raise CheckpointError(f"{where}: block checksum mismatch (the index file is corrupt)")
    if compression == _SNAPPY:
        raise CheckpointError(f"{where}: snappy-compressed index blocks are not supported")
    if compression != _NO_COMPRESSION:
        raise CheckpointError(f"{where}: unknown block compression type {compression}")
    return table[offset:end]


def _block_entries(block: bytes, where: str) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) pairs of a table block; keys share prefixes with their predecessor."""
    if len(block) < 4:
        raise CheckpointError(f"{where}: block too short")
    n_restarts = struct.unpack_from("<I", block, len(block) - 4)[0]
    limit = len(block) - 4 - 4 * n_restarts
    if n_restarts < 1 or limit < 0:
        raise CheckpointError(f"{where}: bad restart array ({n_restarts} restarts)")
    restarts = struct.unpack_from(f"<{n_restarts}I", block, limit)
    if any(r > limit for r in restarts):
        raise CheckpointError(f"{where}: restart point beyond the entries")
    pos, key = 0, b""
    while pos < limit:
        shared, pos = _varint(block, pos, where)
        unshared, pos = _varint(block, pos, where)
        value_size, pos = _varint(block, pos, where)
        if shared > len(key) or pos + unshared + value_size > limit:
            raise CheckpointError(f"{where}: malformed block entry")
        key = key[:shared] + block[pos:pos + unshared]
        pos += unshared
        yield key, block[pos:pos + value_size]
        pos += value_size


def _table_items(table: bytes, where: str) -> Iterator[tuple[bytes, bytes]]:
    """Every (key, value) of an SSTable held in memory, in key order."""
    if len(table) < FOOTER_SIZE:
        raise CheckpointError(f"{where}: {len(table)} bytes is too short for a checkpoint index")
    footer = table[-FOOTER_SIZE:]
    if int.from_bytes(footer[-8:], "little") != TABLE_MAGIC:
        raise CheckpointError(f"{where}: not a TensorFlow checkpoint index (bad magic number)")
    _, pos = _varint(footer, 0, where)  # metaindex handle: offset, size (unused by tensor bundles)
    _, pos = _varint(footer, pos, where)
    index = _block(table, footer[pos:], f"{where} index block")
    for _, handle in _block_entries(index, f"{where} index block"):
        yield from _block_entries(_block(table, handle, f"{where} data block"), f"{where} data block")


# ---------------------------------------------------------------------------------------- checkpoint

def _index_path(prefix: str | Path) -> tuple[str, Path]:
    """The prefix as a string and its ``.index`` file.

    A directory without a ``<dir>.index`` beside it counts as the prefix ``dir/`` (musicnn saves
    ``<dir>/.index``), since ``Path`` drops the trailing slash.
    """
    text = str(prefix)
    if Path(text).is_dir() and not Path(text + ".index").is_file() and not text.endswith(("/", "\\")):
        text += "/"
    index = Path(text + ".index")
    if not index.is_file():
        raise CheckpointError(f"{index}: no such checkpoint index (prefix {text!r})")
    return text, index


def _read_index(prefix: str | Path) -> tuple[str, int, dict[str, BundleEntry]]:
    """(prefix text, number of data shards, entries by variable name) of a checkpoint."""
    text, index = _index_path(prefix)
    num_shards = None
    entries: dict[str, BundleEntry] = {}
    for key, value in _table_items(index.read_bytes(), str(index)):
        if key == b"":
            num_shards = _parse_header(value)
        else:
            name = key.decode("utf-8", errors="replace")
            entries[name] = _parse_entry(name, value)
    if num_shards is None:
        raise CheckpointError(f"{index}: no bundle header (not a V2 checkpoint index)")
    for entry in entries.values():
        if entry.sliced:
            raise CheckpointError(
                f"{index}: variable {entry.name!r} is partitioned; sliced variables are not supported"
            )
        if not 0 <= entry.shard_id < num_shards:
            raise CheckpointError(f"{index}: variable {entry.name!r} is in shard {entry.shard_id} of {num_shards}")
    return text, num_shards, entries


def list_tf_variables(prefix: str | Path) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
    """Variable name -> (numpy dtype, shape) of the checkpoint at ``prefix``, reading only the index."""
    _, _, entries = _read_index(prefix)
    return {name: (entry.dtype, entry.shape) for name, entry in entries.items()}


def read_tf_checkpoint(prefix: str | Path) -> dict[str, np.ndarray]:
    """Every variable of the checkpoint at ``prefix`` (e.g. ``model.ckpt-1000`` or a directory for
    ``dir/.index``) as numpy arrays, checking shard sizes and each tensor's CRC32C."""
    text, num_shards, entries = _read_index(prefix)
    by_shard: dict[int, list[BundleEntry]] = {}
    for entry in entries.values():
        by_shard.setdefault(entry.shard_id, []).append(entry)
    tensors = {}
    for shard_id in range(num_shards):
        path = Path(f"{text}.data-{shard_id:05d}-of-{num_shards:05d}")
        if not path.is_file():
            raise CheckpointError(f"{path}: data shard missing")
        data = memoryview(path.read_bytes())
        expected = max((e.offset + e.size for e in by_shard.get(shard_id, [])), default=0)
        if len(data) != expected:
            raise CheckpointError(f"{path}: {len(data)} bytes, the index expects {expected} (truncated or wrong file)")
        for entry in by_shard.get(shard_id, []):
            tensors[entry.name] = _decode_tensor(entry, data, path)
    return dict(sorted(tensors.items()))


def _decode_tensor(entry: BundleEntry, data: memoryview, path: Path) -> np.ndarray:
    """One tensor from its shard's bytes, size and checksum verified."""
    dtype = entry.dtype
    count = int(np.prod(entry.shape, dtype=np.int64))
    if count * dtype.itemsize != entry.size:
        raise CheckpointError(
            f"{path}: variable {entry.name!r} has {entry.size} bytes, shape {entry.shape} of {dtype} needs "
            f"{count * dtype.itemsize}"
        )
    raw = data[entry.offset:entry.offset + entry.size]
    if crc32c(raw) != unmask_crc(entry.masked_crc):
        raise CheckpointError(f"{path}: checksum mismatch in variable {entry.name!r} (the data is corrupt)")
    return np.frombuffer(raw, dtype=dtype).reshape(entry.shape).astype(dtype.newbyteorder("="))
