"""Read torch checkpoints without torch and without running any code stored in them.

A torch checkpoint is a pickle, and unpickling normally calls whatever callables the file names. Here a
restricted :class:`pickle.Unpickler` resolves every global itself:

* the few functions torch uses to rebuild tensors are replaced by our own (``_rebuild_tensor_v2`` and
  friends), which build numpy arrays over the raw storage bytes (dtype from the storage type; shape,
  stride and offset honoured and bounds-checked);
* plain containers and scalars (dict, OrderedDict, list, tuple, set, str, numbers, None) are allowed;
* any other global becomes an inert :class:`PickledObject` subclass that records its module, name,
  constructor arguments, state and items and runs nothing.

Both layouts of ``torch.save`` are read: the zip archive (torch >= 1.6) and the legacy stream (magic
number pickle, protocol pickle, sys-info pickle, main pickle, storage-key pickle, then per storage an
int64 element count and the raw bytes).
"""

from __future__ import annotations

import builtins
import io
import os
import pickle
import struct
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import numpy as np

from mde.errors import CheckpointError

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001
_ZIP_MAGIC = b"PK\x03\x04"
_BFLOAT16 = "bfloat16"

# numpy dtype of each torch storage type ('bfloat16' has no numpy dtype: widened to float32).
_STORAGE_DTYPES = {
    "DoubleStorage": "f8",
    "FloatStorage": "f4",
    "HalfStorage": "f2",
    "BFloat16Storage": _BFLOAT16,
    "LongStorage": "i8",
    "IntStorage": "i4",
    "ShortStorage": "i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "?",
    "ComplexFloatStorage": "c8",
    "ComplexDoubleStorage": "c16",
    "UntypedStorage": "u1",
}


class PickledObject:
    """Inert stand-in for an object of a class that was never imported.

    Subclasses are made per global (``module``, ``name``). An instance records what unpickling would
    have passed to the real class: ``args``/``kwargs`` (constructor or ``__reduce__`` arguments),
    ``state`` (the ``__setstate__`` argument), ``mapping`` (items set by SETITEMS, e.g. of a dict
    subclass) and ``sequence`` (items appended, e.g. of a list subclass).
    """

    module: str = ""
    name: str = ""
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    state: Any
    mapping: dict[Any, Any]
    sequence: list[Any]

    def __new__(cls, *args: Any, **kwargs: Any) -> PickledObject:
        obj = object.__new__(cls)
        obj.args = args
        obj.kwargs = kwargs
        obj.state = None
        obj.mapping = {}
        obj.sequence = []
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Arguments were recorded by ``__new__``; nothing else happens."""

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __setitem__(self, key: Any, value: Any) -> None:
        self.mapping[key] = value

    def append(self, value: Any) -> None:
        self.sequence.append(value)

    def extend(self, values: Any) -> None:
        self.sequence.extend(values)

    def __repr__(self) -> str:
        return f"<pickled {self.module}.{self.name} (not loaded)>"


class _Sealed:
    """Objects of ours that a pickle may reference: its BUILD opcode must not change their attributes."""

    __slots__ = ()

    def __setstate__(self, state: Any) -> None:
        raise CheckpointError(f"refusing to set the state of {self!r}")


class _Allowed(_Sealed):
    """An allowlisted callable (one of our own rebuild functions), sealed against BUILD."""

    __slots__ = ("function",)

    def __init__(self, function: Callable[..., Any]) -> None:
        self.function = function

    def __call__(self, *args: Any) -> Any:
        return self.function(*args)

    def __repr__(self) -> str:
        return f"<allowed {self.function.__name__}>"


class _Storage(_Sealed):
    """One torch storage: a flat numpy buffer, filled at once (zip) or after the main pickle (legacy).

    ``file_dtype`` is how the elements lie in the file; bfloat16 (no numpy type) is widened to float32.
    """

    __slots__ = ("buffer", "file_dtype", "type_name")

    def __init__(self, type_name: str, buffer: np.ndarray, file_dtype: np.dtype) -> None:
        self.type_name = type_name
        self.buffer = buffer
        self.file_dtype = file_dtype

    @classmethod
    def allocate(cls, type_name: str, numel: int, big_endian: bool) -> _Storage:
        code = _STORAGE_DTYPES[type_name]
        file_dtype = np.dtype(_file_code(type_name)).newbyteorder(">" if big_endian else "<")
        buffer = np.empty(numel, dtype=np.float32 if code == _BFLOAT16 else np.dtype(code))
        return cls(type_name, buffer, file_dtype)

    @property
    def numel(self) -> int:
        return len(self.buffer)

    def view(self, offset: int, numel: int) -> _Storage:
        """A legacy storage view: ``numel`` elements from ``offset``, sharing this buffer."""
        return _Storage(self.type_name, self.buffer[offset:offset + numel], self.file_dtype)

    def fill(self, raw: bytes) -> None:
        """Copy the stored bytes into the buffer (converting byte order and bfloat16)."""
        if len(raw) != self.numel * self.file_dtype.itemsize:
            raise CheckpointError(
                f"storage of {self.numel} x {self.type_name} has {len(raw)} bytes of data"
            )
        values = np.frombuffer(raw, dtype=self.file_dtype)
        if _STORAGE_DTYPES[self.type_name] == _BFLOAT16:
            self.buffer[:] = (values.astype(np.uint32) << 16).view(np.float32)
        else:
            self.buffer[:] = values


def _file_code(type_name: str) -> str:
    """numpy code of one stored element of this storage type."""
    code = _STORAGE_DTYPES[type_name]
    return "u2" if code == _BFLOAT16 else code


class _StorageType(_Sealed):
    """The value of a global such as ``torch.FloatStorage``: only usable inside a persistent id."""

    __slots__ = ("type_name",)

    def __init__(self, type_name: str) -> None:
        self.type_name = type_name

    def __repr__(self) -> str:
        return f"<storage type {self.type_name}>"


def _array_view(storage: Any, offset: Any, size: Any, stride: Any) -> np.ndarray:
    """A numpy view of ``size`` elements with ``stride`` (in elements) from ``offset`` of a storage."""
    if not isinstance(storage, _Storage):
        raise CheckpointError(f"a tensor refers to {type(storage).__name__}, not to a storage")
    dims = tuple(size)
    steps = tuple(stride)
    if not all(isinstance(v, int) and v >= 0 for v in (offset, *dims, *steps)) or len(dims) != len(steps):
        raise CheckpointError(f"bad tensor layout: offset {offset}, size {dims}, stride {steps}")
    if 0 in dims:
        return np.empty(dims, dtype=storage.buffer.dtype)
    last = offset + sum((n - 1) * s for n, s in zip(dims, steps))
    if last >= storage.numel:
        raise CheckpointError(
            f"tensor of size {dims} at offset {offset} reaches past its storage of {storage.numel} elements"
        )
    item = storage.buffer.itemsize
    return np.lib.stride_tricks.as_strided(
        storage.buffer[offset:], shape=dims, strides=tuple(s * item for s in steps)
    )


def _rebuild_tensor(storage: Any, storage_offset: Any, size: Any, stride: Any) -> np.ndarray:
    return _array_view(storage, storage_offset, size, stride)


def _rebuild_tensor_v2(
    storage: Any, storage_offset: Any, size: Any, stride: Any, requires_grad: Any = False,
    backward_hooks: Any = None, metadata: Any = None,
) -> np.ndarray:
    return _array_view(storage, storage_offset, size, stride)


def _rebuild_parameter(data: Any, requires_grad: Any = True, backward_hooks: Any = None,
                       state: Any = None) -> Any:
    return data


def _rebuild_from_type_v2(func: Callable[..., Any], new_type: Any, args: Any, state: Any) -> Any:
    """``func`` was resolved by our ``find_class``, so it is an allowlisted rebuild or an inert type."""
    return func(*args)


def _reconstructor(cls: Any, base: Any, state: Any) -> Any:
    """``copyreg._reconstructor`` (protocol 0/1 objects): only for inert stand-ins."""
    if not (isinstance(cls, type) and issubclass(cls, PickledObject)):
        raise CheckpointError(f"refusing copyreg._reconstructor for {cls!r}")
    obj = cls(base, state)
    if isinstance(state, dict):
        obj.mapping.update(state)
    elif isinstance(state, list):
        obj.sequence.extend(state)
    return obj


def _codecs_encode(text: Any, encoding: str = "utf-8") -> bytes:
    """How protocol 2 pickles store ``bytes``: ``_codecs.encode(str, 'latin1')``."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1", "utf-8", "utf8", "ascii"):
        raise CheckpointError(f"refusing _codecs.encode({type(text).__name__}, {encoding!r})")
    return text.encode(encoding)


def _plain_dict(*args: Any) -> dict:
    """``collections.defaultdict(factory)`` is read as a plain dict (the factory is never kept)."""
    return {}


_ALLOWED: dict[tuple[str, str], Any] = {
    ("builtins", name): getattr(builtins, name)
    for name in ("dict", "list", "tuple", "set", "frozenset", "str", "bytes", "bytearray",
                 "int", "float", "complex", "bool", "object")
}
_ALLOWED.update({
    ("builtins", "long"): int,
    ("builtins", "unicode"): str,
    ("collections", "OrderedDict"): OrderedDict,
    ("torch", "Size"): tuple,
})
_FUNCTIONS: dict[tuple[str, str], Callable[..., Any]] = {
    ("collections", "defaultdict"): _plain_dict,
    ("copyreg", "_reconstructor"): _reconstructor,
    ("_codecs", "encode"): _codecs_encode,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
}
_ALLOWED.update({key: _Allowed(function) for key, function in _FUNCTIONS.items()})
_PY2_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg"}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler whose globals are allowlisted rebuilds, plain types, or inert stand-ins."""

    def __init__(self, file: io.BufferedIOBase, load_storage: Callable[[tuple], _Storage]) -> None:
        super().__init__(file, encoding="utf-8")
        self._load_storage = load_storage
        self._stand_ins: dict[tuple[str, str], type] = {}

    def find_class(self, module: str, name: str) -> Any:
        module = _PY2_MODULES.get(module, module)
        key = (module, name)
        if key in _ALLOWED:
            return _ALLOWED[key]
        if module in ("torch", "torch.storage") and name in _STORAGE_DTYPES:
            return _StorageType(name)
        if key not in self._stand_ins:
            self._stand_ins[key] = type(name, (PickledObject,), {"module": module, "name": name})
        return self._stand_ins[key]

    def persistent_load(self, pid: Any) -> Any:
        if not isinstance(pid, tuple) or not pid:
            raise CheckpointError(f"unknown persistent id {pid!r}")
        if pid[0] == "storage":
            return self._load_storage(pid[1:])
        if pid[0] == "module" and len(pid) > 1:  # legacy: a module class (with its source), kept as resolved
            return pid[1]
        raise CheckpointError(f"unknown persistent id kind {pid[0]!r}")


def _storage_type_name(value: Any) -> str:
    if not isinstance(value, _StorageType):
        raise CheckpointError(f"persistent id names {value!r}, not a torch storage type")
    return value.type_name


def _unpickle(data: io.BufferedIOBase, load_storage: Callable[[tuple], _Storage]) -> Any:
    return _RestrictedUnpickler(data, load_storage).load()


def _read_legacy(handle: io.BufferedReader, file_size: int) -> Any:
    """The pre-1.6 stream layout (see the module docstring)."""
    if _unpickle(handle, _no_storage) != LEGACY_MAGIC_NUMBER:
        raise CheckpointError("not a torch checkpoint (no torch magic number)")
    protocol = _unpickle(handle, _no_storage)
    if protocol != LEGACY_PROTOCOL_VERSION:
        raise CheckpointError(f"unsupported legacy protocol version {protocol!r}")
    sys_info = _unpickle(handle, _no_storage)
    big_endian = isinstance(sys_info, dict) and sys_info.get("little_endian") is False
    storages: dict[str, _Storage] = {}

    def load_storage(fields: tuple) -> _Storage:
        if len(fields) != 5:
            raise CheckpointError(f"legacy storage id has {len(fields)} fields, expected 5")
        type_name, key, _location, numel, view = _storage_type_name(fields[0]), str(fields[1]), *fields[2:]
        itemsize = np.dtype(_file_code(type_name)).itemsize
        if not isinstance(numel, int) or not 0 <= numel * itemsize <= file_size:
            raise CheckpointError(f"storage {key} claims {numel!r} elements, more than the file holds")
        if key not in storages:
            storages[key] = _Storage.allocate(type_name, numel, big_endian)
        root = storages[key]
        if root.type_name != type_name:
            raise CheckpointError(f"storage {key} is read both as {root.type_name} and {type_name}")
        if view is None:
            return root
        view_key, offset, view_size = view
        in_range = isinstance(offset, int) and isinstance(view_size, int)
        if not (in_range and 0 <= offset <= offset + view_size <= root.numel):
            raise CheckpointError(f"storage view {view_key} is out of range of storage {key}")
        return root.view(offset, view_size)

    result = _unpickle(handle, load_storage)
    keys = _unpickle(handle, _no_storage)
    if not isinstance(keys, list) or set(map(str, keys)) != set(storages):
        raise CheckpointError("the storage list does not match the storages the checkpoint uses")
    for key in keys:
        storage = storages[str(key)]
        header = handle.read(8)
        if len(header) != 8:
            raise CheckpointError(f"file ends before the data of storage {key}")
        (count,) = struct.unpack(">q" if big_endian else "<q", header)
        if count != storage.numel:
            raise CheckpointError(f"storage {key} holds {count} elements, expected {storage.numel}")
        raw = handle.read(count * storage.file_dtype.itemsize)
        if len(raw) != count * storage.file_dtype.itemsize:
            raise CheckpointError(f"file ends inside the data of storage {key}")
        storage.fill(raw)
    return result


def _no_storage(fields: tuple) -> _Storage:
    raise CheckpointError("a storage reference outside the main pickle")


def _read_zip(archive: zipfile.ZipFile) -> Any:
    """The zip layout of ``torch.save``: ``<root>/data.pkl`` plus ``<root>/data/<key>`` per storage."""
    pickles = [n for n in archive.namelist() if n.endswith("data.pkl") and n.count("/") == 1]
    if len(pickles) != 1:
        raise CheckpointError("a zip file without a single '<name>/data.pkl' (not a torch.save archive)")
    root = pickles[0].split("/")[0]
    names = set(archive.namelist())
    byteorder_name = f"{root}/byteorder"
    big_endian = byteorder_name in names and archive.read(byteorder_name).strip() == b"big"
    storages: dict[str, _Storage] = {}

    def load_storage(fields: tuple) -> _Storage:
        if len(fields) != 4:
            raise CheckpointError(f"storage id has {len(fields)} fields, expected 4")
        type_name, key, _location, numel = _storage_type_name(fields[0]), str(fields[1]), *fields[2:]
        if key in storages:
            return storages[key]
        entry = f"{root}/data/{key}"
        if entry not in names:
            raise CheckpointError(f"storage {key} is missing from the archive")
        size = archive.getinfo(entry).file_size
        itemsize = np.dtype(_file_code(type_name)).itemsize
        if not isinstance(numel, int) or numel < 0 or size != numel * itemsize:
            raise CheckpointError(f"storage {key} has {size} bytes for {numel!r} x {type_name}")
        storage = _Storage.allocate(type_name, numel, big_endian)
        storage.fill(archive.read(entry))
        storages[key] = storage
        return storage

    with archive.open(pickles[0]) as data:
        return _unpickle(io.BufferedReader(data), load_storage)  # type: ignore[type-var]  # a readable ZipExtFile


def _load_object(path: Path) -> Any:
    with path.open("rb") as handle:
        head = handle.read(4)
        handle.seek(0)
        if head == _ZIP_MAGIC:
            with zipfile.ZipFile(handle) as archive:
                return _read_zip(archive)
        return _read_legacy(handle, path.stat().st_size)


def read_checkpoint(path: str | os.PathLike[str]) -> dict:
    """The top-level dict of a torch checkpoint, tensors as numpy arrays, foreign objects inert.

    Raises CheckpointError (one line) for a missing, truncated, corrupt or non-torch file, or one whose
    top level is not a dict.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        result = _load_object(path)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    except Exception as exc:  # a damaged or hostile pickle can fail in any of the unpickler's ways
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({reason})") from None
    if not isinstance(result, dict):
        raise CheckpointError(f"{path}: the checkpoint holds {_describe(result)}, not a dict")
    return result


def _describe(value: Any) -> str:
    if isinstance(value, PickledObject):
        return f"a pickled {value.module}.{value.name}"
    return f"a {type(value).__name__}"


def state_dict_from_checkpoint(path: str | os.PathLike[str],
                               prefix: Optional[str] = "model.") -> dict[str, np.ndarray]:
    """The arrays of a checkpoint file's state dict whose keys start with ``prefix``, with it removed.

    See :func:`extract_state_dict`.
    """
    return extract_state_dict(read_checkpoint(path), prefix, origin=str(path))


def extract_state_dict(checkpoint: dict, prefix: Optional[str] = "model.",
                       origin: str = "checkpoint") -> dict[str, np.ndarray]:
    """The arrays of a read checkpoint's state dict whose keys start with ``prefix``, with it removed.

    The state dict is the checkpoint's ``'state_dict'`` entry (Lightning) or the checkpoint itself
    when it is a plain mapping of arrays. ``prefix=None`` or ``''`` keeps every key unchanged.
    ``origin`` names the checkpoint in error messages.
    """
    state = checkpoint.get("state_dict", checkpoint)
    if not isinstance(state, dict):
        raise CheckpointError(f"{origin}: 'state_dict' holds {_describe(state)}, not a dict")
    arrays = {str(k): v for k, v in state.items() if isinstance(v, np.ndarray)}
    if not arrays:
        raise CheckpointError(f"{origin}: no tensors in the checkpoint's state dict")
    if not prefix:
        return arrays
    selected = {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
    if not selected:
        sample = ", ".join(sorted(arrays)[:3])
        raise CheckpointError(
            f"{origin}: no state-dict keys start with {prefix!r} (keys look like: {sample})"
        )
    return selected
