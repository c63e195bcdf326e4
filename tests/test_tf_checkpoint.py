"""The pure-numpy TensorFlow checkpoint reader: CRC32C, the SSTable index, shards and corruption handling."""

from __future__ import annotations

import importlib.util
import shutil
import struct
import time
from pathlib import Path

import numpy as np
import pytest

from mde.errors import CheckpointError
from mde.export.importers.tf_checkpoint import (
    TABLE_MAGIC,
    _crc32c_serial,
    crc32c,
    list_tf_variables,
    read_tf_checkpoint,
    unmask_crc,
)

MUSICNN_MISSING = "musicnn not installed (pip install --no-deps musicnn==0.1.0)"


def mask_crc(crc: int) -> int:
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


@pytest.fixture(scope="module")
def musicnn_dir() -> Path:
    spec = importlib.util.find_spec("musicnn")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(MUSICNN_MISSING)
    return Path(next(iter(spec.submodule_search_locations)))


@pytest.fixture
def vgg_copy(musicnn_dir: Path, tmp_path: Path) -> str:
    """MTT_vgg copied under the ordinary prefix form ``<tmp>/model.ckpt`` (.index, .data-00000-of-00001)."""
    prefix = tmp_path / "model.ckpt"
    shutil.copy(musicnn_dir / "MTT_vgg" / ".index", f"{prefix}.index")
    shutil.copy(musicnn_dir / "MTT_vgg" / ".data-00000-of-00001", f"{prefix}.data-00000-of-00001")
    return str(prefix)


# ------------------------------------------------------------------------------------------- crc32c

def test_crc32c_known_answers() -> None:
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(b"") == 0
    assert crc32c(bytes(32)) == 0x8A9136AA  # RFC 3720 B.4
    assert crc32c(b"\xff" * 32) == 0x62A8AB43
    assert crc32c(bytes(range(32))) == 0x46DD794E


@pytest.mark.parametrize("size", [16383, 16384, 16389, 100_003])
def test_crc32c_lane_path_matches_byte_loop(size: int) -> None:
    data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes()
    assert crc32c(data) == _crc32c_serial(data, 0xFFFFFFFF) ^ 0xFFFFFFFF


def test_crc32c_is_fast_on_10_mb() -> None:
    """The lane-parallel path is several times faster per byte than the byte loop (~17x here). Both are
    timed in this thread's CPU time, which other processes on a busy machine do not inflate as they do
    wall time, and compared with each other, so a slower machine does not matter either."""
    data = np.random.default_rng(0).integers(0, 256, 10_000_000, dtype=np.uint8).tobytes()
    start = time.thread_time()
    _crc32c_serial(data[:1_000_000], 0xFFFFFFFF)
    loop_seconds = (time.thread_time() - start) * 10  # scaled to the 10 MB
    start = time.thread_time()
    crc32c(data)
    assert time.thread_time() - start < loop_seconds / 4


def test_crc_masking_round_trips() -> None:
    for crc in (0, 1, 0xE3069283, 0xFFFFFFFF):
        assert unmask_crc(mask_crc(crc)) == crc


# ------------------------------------------------------------------------------ a synthetic bundle

def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, value: int | bytes) -> bytes:
    if isinstance(value, bytes):
        return _varint(number << 3 | 2) + _varint(len(value)) + value
    return _varint(number << 3) + _varint(value)


def _block(entries: list[tuple[bytes, bytes]], restart_every: int = 2) -> bytes:
    """A table block with prefix-compressed keys, a restart point every ``restart_every`` entries."""
    out, restarts, previous = bytearray(), [], b""
    for index, (key, value) in enumerate(entries):
        shared = 0
        if index % restart_every:
            while shared < min(len(key), len(previous)) and key[shared] == previous[shared]:
                shared += 1
        else:
            restarts.append(len(out))
        out += _varint(shared) + _varint(len(key) - shared) + _varint(len(value)) + key[shared:] + value
        previous = key
    restarts = restarts or [0]  # LevelDB always has a restart at 0, even in an empty block
    return bytes(out) + struct.pack(f"<{len(restarts)}I", *restarts) + struct.pack("<I", len(restarts))


def _append_block(table: bytearray, block: bytes, compression: int = 0) -> bytes:
    handle = _varint(len(table)) + _varint(len(block))
    table += block + bytes([compression]) + struct.pack("<I", mask_crc(crc32c(block + bytes([compression]))))
    return handle


def write_bundle(prefix: Path, tensors: dict[str, tuple[np.ndarray, int]], num_shards: int,
                 compression: int = 0) -> None:
    """A V2 checkpoint: ``tensors`` name -> (array, shard); keys split over two data blocks."""
    shards = [bytearray() for _ in range(num_shards)]
    dtypes = {np.dtype("<f4"): 1, np.dtype("<f8"): 2, np.dtype("<i4"): 3, np.dtype("<i8"): 9}
    entries = [(b"", _field(1, num_shards) + _field(2, 0) + _field(3, _field(1, 1)))]
    for name, (array, shard) in sorted(tensors.items()):
        raw = np.ascontiguousarray(array).tobytes()
        shape = b"".join(_field(2, _field(1, dim)) for dim in array.shape)
        proto = (_field(1, dtypes[array.dtype]) + _field(2, shape) + _field(3, shard)
                 + _field(4, len(shards[shard])) + _field(5, len(raw)) + _varint(6 << 3 | 5)
                 + struct.pack("<I", mask_crc(crc32c(raw))))
        entries.append((name.encode(), proto))
        shards[shard] += raw
    table = bytearray()
    half = len(entries) // 2
    index = [(entries[half - 1][0], _append_block(table, _block(entries[:half]), compression)),
             (entries[-1][0], _append_block(table, _block(entries[half:]), compression))]
    metaindex = _append_block(table, _block([]))
    index_handle = _append_block(table, _block(index))
    table += (metaindex + index_handle).ljust(40, b"\0") + struct.pack("<Q", TABLE_MAGIC)
    Path(f"{prefix}.index").write_bytes(bytes(table))
    for shard_id, data in enumerate(shards):
        Path(f"{prefix}.data-{shard_id:05d}-of-{num_shards:05d}").write_bytes(bytes(data))


def _synthetic_tensors() -> dict[str, tuple[np.ndarray, int]]:
    rng = np.random.default_rng(0)
    return {
        "layer/kernel": (rng.standard_normal((3, 5, 1, 4)).astype(np.float32), 0),
        "layer/bias": (rng.standard_normal(4).astype(np.float32), 1),
        "layer_1/kernel": (rng.standard_normal((6, 2)), 1),
        "global_step": (np.array(1234, dtype=np.int64), 0),
        "counts": (np.arange(7, dtype=np.int32), 1),
    }


def test_reads_a_two_shard_bundle(tmp_path: Path) -> None:
    tensors = _synthetic_tensors()
    write_bundle(tmp_path / "ckpt", tensors, num_shards=2)
    read = read_tf_checkpoint(tmp_path / "ckpt")
    assert set(read) == set(tensors)
    for name, (array, _) in tensors.items():
        assert read[name].dtype == array.dtype and read[name].shape == array.shape
        np.testing.assert_array_equal(read[name], array)
    listed = list_tf_variables(tmp_path / "ckpt")
    assert listed["layer_1/kernel"] == (np.dtype("<f8"), (6, 2))
    assert listed["global_step"] == (np.dtype("<i8"), ())


def test_snappy_index_is_refused_clearly(tmp_path: Path) -> None:
    write_bundle(tmp_path / "ckpt", _synthetic_tensors(), num_shards=2, compression=1)
    with pytest.raises(CheckpointError, match="snappy"):
        list_tf_variables(tmp_path / "ckpt")


# ------------------------------------------------------------------------------ the musicnn files

def test_lists_musicnn_variables(musicnn_dir: Path) -> None:
    variables = list_tf_variables(musicnn_dir / "MTT_musicnn")
    assert len(variables) == 150
    model = {name: spec for name, spec in variables.items() if not name.endswith(("/Adam", "/Adam_1"))}
    assert len(model) == 66  # 8 convs + 2 denses (kernel, bias), 11 batch norms x 4, beta1/2_power
    assert model["conv2d/kernel"] == (np.dtype("float32"), (7, 38, 1, 204))
    assert model["conv2d_1/kernel"][1] == (7, 67, 1, 204)
    assert model["conv2d_2/kernel"][1] == (128, 1, 1, 51)
    assert model["conv2d_5/kernel"][1] == (7, 561, 1, 64)
    assert model["batch_normalization/moving_variance"][1] == (1,)
    assert model["batch_normalization_9/gamma"][1] == (1506,)
    assert model["dense/kernel"][1] == (1506, 200)
    assert model["dense_1/kernel"][1] == (200, 50)
    assert model["beta1_power"][1] == ()

    vgg = list_tf_variables(musicnn_dir / "MSD_vgg")
    assert len(vgg) == 86
    assert vgg["1CNN/kernel"][1] == (3, 3, 1, 128)
    assert vgg["5CNN/kernel"][1] == (3, 3, 128, 128)
    assert vgg["dense/kernel"][1] == (256, 50)


def test_reads_musicnn_tensors(musicnn_dir: Path) -> None:
    tensors = read_tf_checkpoint(musicnn_dir / "MTT_musicnn")
    listed = list_tf_variables(musicnn_dir / "MTT_musicnn")
    assert list(tensors) == sorted(listed)
    for name, array in tensors.items():
        assert (array.dtype, array.shape) == listed[name]
        assert np.isfinite(array).all()
    assert (tensors["batch_normalization_1/moving_variance"] > 0).all()


def test_flipped_data_byte_fails_the_crc(vgg_copy: str) -> None:
    data = Path(f"{vgg_copy}.data-00000-of-00001")
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    data.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="checksum mismatch in variable"):
        read_tf_checkpoint(vgg_copy)


def test_truncated_data_shard(vgg_copy: str) -> None:
    data = Path(f"{vgg_copy}.data-00000-of-00001")
    data.write_bytes(data.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="the index expects"):
        read_tf_checkpoint(vgg_copy)


def test_missing_data_shard(vgg_copy: str) -> None:
    Path(f"{vgg_copy}.data-00000-of-00001").unlink()
    with pytest.raises(CheckpointError, match="data shard missing"):
        read_tf_checkpoint(vgg_copy)


def test_garbage_index(vgg_copy: str) -> None:
    index = Path(f"{vgg_copy}.index")
    index.write_bytes(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    with pytest.raises(CheckpointError, match="bad magic number"):
        list_tf_variables(vgg_copy)
    index.write_bytes(b"short")
    with pytest.raises(CheckpointError, match="too short"):
        list_tf_variables(vgg_copy)


def test_flipped_index_byte_fails_the_block_crc(vgg_copy: str) -> None:
    index = Path(f"{vgg_copy}.index")
    raw = bytearray(index.read_bytes())
    raw[20] ^= 0x40
    index.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="block checksum mismatch"):
        read_tf_checkpoint(vgg_copy)


def test_missing_index(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no such checkpoint index"):
        read_tf_checkpoint(tmp_path / "nothing")
