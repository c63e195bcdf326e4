"""An index's manifest: what its vectors are (model, layer, framing) and how they are searched.

The manifest is ``manifest.json`` in the index folder, written last and atomically by every update, so it
is the index's commit point: it names the data folder that holds the vectors of this version
(:mod:`mde.search.storage`). Its keys:

``format_version`` (:data:`FORMAT_VERSION`), ``generation`` (the update's number) and ``data`` (its
folder); ``model`` (``name``, ``sha256`` of the model file, ``path``: the file used); ``layer``; ``window``
and ``hop`` (seconds); ``sample_rate`` (Hz); ``dim``; ``tag_names`` (the model's tags, empty without a
tags output); ``n_files`` and ``n_frames``; ``exact`` (exact search forced) and ``exact_limit``;
``clip_index`` and ``frame_index`` (:class:`mde.search.faiss_kinds.IndexKind`: kind and parameters);
``faiss_version``; ``updated`` (UTC, ISO 8601).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

from mde.atomic import write_bytes_atomic
from mde.errors import MdeError, ModelError
from mde.runtime import store
from mde.runtime.batch import file_sha256
from mde.search.faiss_kinds import IndexKind

FORMAT_VERSION = 1
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class VectorSpace:
    """What makes vectors comparable: the model file, the layer and the framing they were made with.

    model: the model's name; model_sha256: hex SHA-256 of its file; model_path: the file used (absolute).
    layer: the model output the vectors come from. window, hop: frame length and step, in seconds.
    sample_rate: the model's rate in Hz. dim: vector width. tag_names: the model's tags ('' tuple: none).
    """

    model: str
    model_sha256: str
    model_path: str
    layer: str
    window: float
    hop: float
    sample_rate: int
    dim: int
    tag_names: tuple[str, ...]

    def refuse_mixing(self, other: VectorSpace, folder: Path) -> None:
        """One-line MdeError unless ``other`` (what a new run would add) is this space."""
        if other.model_sha256 != self.model_sha256:
            raise MdeError(
                f"{folder} holds vectors of model {self.model} (sha256 {self.model_sha256[:12]}); "
                f"{other.model} (sha256 {other.model_sha256[:12]}) is another model: index it into another folder"
            )
        if other.layer != self.layer:
            raise MdeError(f"{folder} holds layer {self.layer!r} of {self.model}; layer {other.layer!r} would mix "
                           "layers: index it into another folder")
        if not math.isclose(other.hop, self.hop, rel_tol=1e-9):
            raise MdeError(f"{folder} holds frames every {self.hop:g} s; --hop {other.hop:g} would mix framings: "
                           "index it into another folder")

    def model_file(self, override: Optional[str] = None) -> Path:
        """The model file of these vectors: ``override`` (a store name or .onnx path) if given, else the
        stored model of that name, else the recorded path; ModelError unless its SHA-256 is the recorded one."""
        if override:
            path = store.resolve(override)
            if file_sha256(path) != self.model_sha256:
                raise ModelError(f"{path} is not the model file this index was built with ({self.model}, "
                                 f"sha256 {self.model_sha256[:12]})")
            return path
        for candidate in (self.model, self.model_path):
            try:
                path = store.resolve(candidate)
            except ModelError:
                continue
            if file_sha256(path) == self.model_sha256:
                return path
        raise ModelError(f"the model this index was built with ({self.model}, sha256 {self.model_sha256[:12]}) "
                         f"is neither in the store nor at {self.model_path}: give its file with --model")


@dataclass(frozen=True)
class Manifest:
    """The manifest of one version of an index (see the module docstring for its JSON keys)."""

    space: VectorSpace
    generation: int
    n_files: int
    n_frames: int
    exact: bool
    exact_limit: int
    clip_index: IndexKind
    frame_index: IndexKind
    faiss_version: str
    updated: str = ""
    format_version: int = FORMAT_VERSION

    @property
    def data(self) -> str:
        """The name of this version's data folder."""
        return f"data-{self.generation:06d}"

    def to_json(self) -> str:
        s = self.space
        document = {
            "format_version": self.format_version, "generation": self.generation, "data": self.data,
            "model": {"name": s.model, "sha256": s.model_sha256, "path": s.model_path},
            "layer": s.layer, "window": s.window, "hop": s.hop, "sample_rate": s.sample_rate, "dim": s.dim,
            "tag_names": list(s.tag_names), "n_files": self.n_files, "n_frames": self.n_frames,
            "exact": self.exact, "exact_limit": self.exact_limit, "clip_index": self.clip_index.to_dict(),
            "frame_index": self.frame_index.to_dict(), "faiss_version": self.faiss_version,
            "updated": self.updated,
        }
        return json.dumps(document, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str, origin: str) -> Manifest:
        """Parse a manifest (MdeError, one line naming ``origin``, for one that is damaged or of another version)."""
        try:
            data = json.loads(text)
            version = data.get("format_version")
            if version != FORMAT_VERSION:
                raise MdeError(f"{origin}: index format {version} is not supported (want {FORMAT_VERSION}); "
                               "rebuild the index")
            model = data["model"]
            space = VectorSpace(
                model=str(model["name"]), model_sha256=str(model["sha256"]), model_path=str(model["path"]),
                layer=str(data["layer"]), window=float(data["window"]), hop=float(data["hop"]),
                sample_rate=int(data["sample_rate"]), dim=int(data["dim"]),
                tag_names=tuple(str(t) for t in data["tag_names"]),
            )
            return cls(
                space=space, generation=int(data["generation"]), n_files=int(data["n_files"]),
                n_frames=int(data["n_frames"]), exact=bool(data["exact"]), exact_limit=int(data["exact_limit"]),
                clip_index=IndexKind.from_dict(data["clip_index"]),
                frame_index=IndexKind.from_dict(data["frame_index"]),
                faiss_version=str(data["faiss_version"]), updated=str(data["updated"]),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise MdeError(f"{origin}: not a readable index manifest ({type(exc).__name__}: {exc})") from None

    def write(self, folder: Path) -> Manifest:
        """Write this manifest as ``folder/manifest.json`` (atomically, flushed to disk), stamped now."""
        stamped = replace(self, updated=datetime.now(timezone.utc).isoformat(timespec="seconds"))
        write_bytes_atomic(folder / MANIFEST, stamped.to_json().encode(), fsync=True)
        return stamped


def read_manifest(folder: Path) -> Optional[Manifest]:
    """The manifest of the index in ``folder``; None when it has none (yet)."""
    path = folder / MANIFEST
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise MdeError(f"{path}: cannot read the index manifest ({exc})") from None
    return Manifest.from_json(text, str(path))

