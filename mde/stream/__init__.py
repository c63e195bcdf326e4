"""``mde stream``: frame embeddings and tags at several window lengths, live, from a microphone, a file
or a pipe, with exactly the frames the offline extractor computes. Imports no torch."""

from mde.stream.api import load_scales, stream, stream_file
from mde.stream.engine import StreamFrame, StreamSummary
from mde.stream.scales import DEFAULT_SCALES
from mde.stream.sources import FileSource, MicSource, StdinSource, list_input_devices

__all__ = [
    "DEFAULT_SCALES", "FileSource", "MicSource", "StdinSource", "StreamFrame", "StreamSummary",
    "list_input_devices", "load_scales", "stream", "stream_file",
]
