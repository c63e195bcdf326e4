"""A model's tag encoder: sets of tag words -> points of its joint audio-tag space.

A model trained with a joint embedding (JETATAG withJE) has a ``joint`` output: each window's unit-norm
point in a space its tag autoencoder learned, where a clip lands near the encoding of its tags. The model
file carries that tag encoder as a second small ONNX graph (``ModelInfo.tag_encoder``, base64), run here
with ONNX Runtime on the CPU, so a tag query and an audio window can be compared by cosine similarity
(their dot product: both have unit norm).
"""

from __future__ import annotations

import base64
import binascii
import difflib
from collections.abc import Sequence
from typing import Any

import numpy as np

from mde.errors import MdeError, ModelError
from mde.runtime.package import JOINT_OUTPUT, TAG_ENCODER_INPUT, ModelInfo, open_session


def encode_graph(onnx_bytes: bytes) -> str:
    """The text ``ModelInfo.tag_encoder`` holds for a serialized tag encoder graph."""
    return base64.b64encode(onnx_bytes).decode("ascii")


def decode_graph(text: str, origin: str) -> bytes:
    """The serialized graph of ``ModelInfo.tag_encoder`` (ModelError when it is not base64)."""
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise ModelError(f"{origin}: the tag encoder in the metadata is not base64") from None


def multi_hot(tags: Sequence[str], tag_names: Sequence[str], model: str) -> np.ndarray:
    """float32 (n_tags,) with 1 at each of ``tags`` (MdeError, one line, for an empty or unknown tag)."""
    if isinstance(tags, str):
        tags = [tags]
    if not tags:
        raise MdeError("give at least one tag")
    index = {name: i for i, name in enumerate(tag_names)}
    vector = np.zeros(len(tag_names), np.float32)
    for tag in tags:
        if tag not in index:
            close = difflib.get_close_matches(tag, tag_names, n=3)
            hint = f"; did you mean {', '.join(map(repr, close))}?" if close else f" ({len(tag_names)} tags)"
            raise MdeError(f"{model} has no tag {tag!r}{hint}")
        vector[index[tag]] = 1.0
    return vector


class TagEncoder:
    """The tag encoder of a model file, loaded once (ModelError when the model has none or it is broken);
    safe to use from several threads, as ONNX Runtime sessions are."""

    def __init__(self, info: ModelInfo, origin: str) -> None:
        import onnxruntime as ort

        if info.tag_encoder is None:
            raise ModelError(f"{info.name} has no tag encoder (models trained with a joint tag space, such as "
                             "JETATAG withJE, have one)")
        self.info = info
        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        self.session: Any = open_session(decode_graph(info.tag_encoder, origin), ["CPUExecutionProvider"],
                                         options, what=f"{origin}: the tag encoder")
        names = ([i.name for i in self.session.get_inputs()], [o.name for o in self.session.get_outputs()])
        if names != ([TAG_ENCODER_INPUT], [JOINT_OUTPUT]):
            raise ModelError(f"{origin}: the tag encoder maps {names[0]} to {names[1]}, not "
                             f"[{TAG_ENCODER_INPUT!r}] to [{JOINT_OUTPUT!r}]")

    def embed(self, tags: Sequence[str]) -> np.ndarray:
        """The joint-space point (float32 (dim,), unit norm) of the tag set ``tags`` (words of ``tag_names``)."""
        vector = multi_hot(tags, self.info.tag_names, self.info.name)[None]
        [joint] = self.session.run([JOINT_OUTPUT], {TAG_ENCODER_INPUT: vector})
        return np.asarray(joint[0], dtype=np.float32)
