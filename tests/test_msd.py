"""The MSD source: AMG tag sets in pandas' fixed-format h5 layout (written here with h5py), splits, reviews."""

from __future__ import annotations

import pickle
from pathlib import Path

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from mde.cli.train import DATASET_HELP
from mde.errors import MdeError
from mde.trainer.data.msd import AMG_TAGS, TAG_SETS, load_msd
from mde.trainer.data.sources import DATASET_KINDS, load_dataset

RATE = 16000
A, B, C, D = "TRAAAAW128F429D538", "TRAAABD128F429CF47", "TRAAADZ128F9348C2E", "TRAXLZU12903D05F94"
NAN = float("nan")

# Per track its genres, styles, moods, themes (None: NaN in the file). Over the listed tracks A-D: Cool, Jazz and
# Pop/Rock twice, Ballads, Blues, Bop, Holiday and Soft Rock once ('Holiday' is both a genre and a theme of D).
TRACKS: dict[str, tuple[list[str] | None, ...]] = {
    A: (["Pop/Rock"], ["Soft Rock", "Ballads"], None, None),
    B: (["Jazz", "Blues"], None, ["Cool"], None),
    C: (["Jazz"], ["Bop"], ["Cool"], None),
    D: (["Pop/Rock", "Holiday"], None, None, ["Holiday"]),
    "TRZZZZZ128F0000000": (["Pop/Rock"], None, None, None),  # in the tag file, not in splits.csv
}
SPLIT_OF = {A: "train", B: "train", C: "valid", D: "test"}


def write_wav(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.zeros(RATE // 20, np.float32), RATE, format="WAV", subtype="PCM_16")
    return path


def write_frame(path: Path, tracks: dict = TRACKS, protocol: int = 5, transposed: bool = True) -> Path:
    """What pandas' ``DataFrame.to_hdf(path, "data")`` writes for the tag table (the fixed format): the tag
    columns and artist_name in one object block, pickled into PyTables' object atom (vlen uint8)."""
    columns = [*TAG_SETS, "artist_name"]
    cells = np.empty((len(tracks), len(columns)), dtype=object)
    for row, sets in enumerate(tracks.values()):
        cells[row] = [NAN if tags is None else tags for tags in sets] + ["an artist"]
    with h5py.File(path, "w") as f:
        frame = f.create_group("data")
        frame.attrs.update(pandas_type=np.bytes_(b"frame"), nblocks=np.int64(1), encoding=np.bytes_(b"UTF-8"))
        frame["axis0"] = np.array(columns, dtype="S")
        frame["axis1"] = np.array(list(tracks), dtype="S")
        frame["block0_items"] = np.array(columns, dtype="S")
        write_object_atom(frame, "block0_values", pickle.dumps(cells if transposed else cells.T, protocol))
        frame["block0_values"].attrs["transposed"] = np.uint8(transposed)
    return path


def write_object_atom(frame: h5py.Group, name: str, blob: bytes) -> None:
    if name in frame:
        del frame[name]
    dataset = frame.create_dataset(name, (1,), dtype=h5py.vlen_dtype(np.uint8))
    dataset[0] = np.frombuffer(blob, np.uint8)
    dataset.attrs["transposed"] = np.uint8(1)


def write_text(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def msd(tmp_path: Path) -> Path:
    """A tiny MSD folder: tag file, splits.csv and flat WAVs, no reviews."""
    root = tmp_path / "msd"
    root.mkdir()
    write_frame(root / AMG_TAGS)
    write_text(root / "splits.csv", "track_id,split\n" + "".join(f"{t},{s}\n" for t, s in SPLIT_OF.items()))
    for track in SPLIT_OF:
        write_wav(root / "audio" / f"{track}.wav")
    return root


def tags_of(dataset, clip) -> list[str]:
    return [tag for tag, on in zip(dataset.tag_names, clip.labels) if on]


def test_tags_labels_and_splits(msd: Path) -> None:
    ds = load_msd(msd)
    assert (ds.name, ds.single_label) == ("msd", False)
    assert ds.tag_names == ("Ballads", "Blues", "Bop", "Cool", "Holiday", "Jazz", "Pop/Rock", "Soft Rock")
    assert {s: [c.path.name for c in clips] for s, clips in ds.splits.items()} == {
        "train": [f"{A}.wav", f"{B}.wav"], "valid": [f"{C}.wav"], "test": [f"{D}.wav"]}
    train, _ = ds.split("train")
    assert tags_of(ds, train) == ["Ballads", "Pop/Rock", "Soft Rock"]
    assert tags_of(ds, ds.split("test")[0]) == ["Holiday", "Pop/Rock"]  # merged across sets, once
    assert train.labels.dtype == np.float32 and set(np.unique(train.labels)) == {0.0, 1.0}
    assert all(clip.text == "" for clips in ds.splits.values() for clip in clips)


def test_top_k_keeps_the_most_frequent_ties_by_name(msd: Path) -> None:
    assert load_msd(msd, top_k=2).tag_names == ("Cool", "Jazz")  # of the three 2s, by name
    assert load_msd(msd, top_k=4).tag_names == ("Ballads", "Cool", "Jazz", "Pop/Rock")  # Ballads first of the 1s
    ds = load_msd(msd, top_k=1)
    assert ds.label_matrix("train").tolist() == [[0.0], [1.0]]  # A keeps its row with no kept tag


def test_older_pickles_and_untransposed_blocks_read_alike(msd: Path) -> None:
    expected = load_msd(msd)
    write_frame(msd / AMG_TAGS, protocol=2)  # protocol 2 names globals as text lines: rename them as numpy 1 did
    with h5py.File(msd / AMG_TAGS, "a") as f:
        blob = f["data/block0_values"][0].tobytes().replace(b"numpy._core.", b"numpy.core.")
        assert b"numpy.core.multiarray\n_reconstruct" in blob
        write_object_atom(f["data"], "block0_values", blob)
    assert [c.labels.tolist() for c in load_msd(msd).split("train")] == [
        c.labels.tolist() for c in expected.split("train")]
    write_frame(msd / AMG_TAGS, transposed=False)
    assert load_msd(msd).tag_names == expected.tag_names


def test_a_tag_set_without_any_tag_may_be_a_float_block(msd: Path) -> None:
    write_frame(msd / AMG_TAGS)
    with h5py.File(msd / AMG_TAGS, "a") as f:
        frame = f["data"]
        frame.attrs["nblocks"] = np.int64(2)
        del frame["block0_items"]
        frame["block0_items"] = np.array(["genres", "styles", "moods", "artist_name"], dtype="S")
        cells = pickle.loads(frame["block0_values"][0].tobytes())[:, [0, 1, 2, 4]]
        write_object_atom(frame, "block0_values", pickle.dumps(cells, 5))
        frame["block1_items"] = np.array(["themes"], dtype="S")
        frame["block1_values"] = np.full((len(TRACKS), 1), np.nan)
        frame["block1_values"].attrs["transposed"] = np.uint8(1)
    ds = load_msd(msd)
    assert tags_of(ds, ds.split("test")[0]) == ["Holiday", "Pop/Rock"]  # 'Holiday' is still a genre of D


def test_reviews_reach_clip_text_joined_and_parquet_equals_csv(msd: Path) -> None:
    write_text(msd / "reviews.csv", "track_id,text,source\n"
               f'{A},"First review.\nSecond line.",amg\n'
               f"{C},A cool bop record.,amg\n"
               f"{A},  Another take.  ,amg\n"
               f"{B},,amg\n"
               "TRZZZZZ128F0000000,Not in splits.csv: ignored.,amg\n")
    from_csv = load_msd(msd)
    texts = {c.path.stem: c.text for clips in from_csv.splits.values() for c in clips}
    assert texts == {A: "First review.\nSecond line.\n\nAnother take.", B: "", C: "A cool bop record.", D: ""}
    rows = [(A, "First review.\nSecond line."), (C, "A cool bop record."), (A, "  Another take.  "), (B, None),
            ("TRZZZZZ128F0000000", "ignored")]
    (msd / "reviews.csv").unlink()
    pq.write_table(pa.table({"text": [r[1] for r in rows], "track_id": [r[0] for r in rows]}),
                   msd / "reviews.parquet")
    from_parquet = load_msd(msd)
    assert [c.text for c in from_parquet.split("train")] == [c.text for c in from_csv.split("train")]
    assert [c.text for c in from_parquet.split("valid")] == [c.text for c in from_csv.split("valid")]


def test_msd_tree_layout(msd: Path) -> None:
    for path in (msd / "audio").iterdir():
        path.unlink()
    for track in SPLIT_OF:
        write_wav(msd / "audio" / track[2] / track[3] / track[4] / f"{track}.mp3")
    assert load_msd(msd).split("test")[0].path == msd / "audio" / "A" / "X" / "L" / f"{D}.mp3"
    (msd / "audio" / "A" / "X" / "L" / f"{D}.mp3").unlink()
    with pytest.raises(MdeError, match=rf"splits.csv: 1 audio file\(s\) missing: .*audio/A/X/L/{D}\.mp3$"):
        load_msd(msd)


def test_registered_as_a_dataset_kind(msd: Path) -> None:
    assert "msd" in DATASET_KINDS and "msd (folder" in DATASET_HELP
    assert load_dataset("msd", msd, top_k=2).tag_names == ("Cool", "Jazz")
    for option, flag in (({"single_label": True}, "single-label"), ({"merge_synonyms": True}, "merge-synonyms"),
                         ({"mtat_split": "random"}, "mtat-split")):
        with pytest.raises(MdeError, match=f"--{flag} does not apply to --dataset msd"):
            load_dataset("msd", msd, **option)
    with pytest.raises(MdeError, match="top_k must be at least 1"):
        load_dataset("msd", msd, top_k=0)


# --- errors ------------------------------------------------------------------------------------------


def _splits(root: Path, body: str) -> None:
    write_text(root / "splits.csv", body)


def _attr(name, value):
    def edit(frame):
        frame.attrs[name] = value
    return edit


def _delete(name):
    def edit(frame):
        del frame[name]
    return edit


def _replace(name, data):
    def edit(frame):
        del frame[name]
        frame[name] = data
    return edit


class _Hostile:
    def __reduce__(self):
        return (print, ("pwned",))


def _blob(value):
    return lambda frame: write_object_atom(frame, "block0_values", pickle.dumps(value, 5))


def _cell(row: int, column: int, value):
    def edit(frame):
        cells = pickle.loads(frame["block0_values"][0].tobytes())
        cells[row, column] = value
        write_object_atom(frame, "block0_values", pickle.dumps(cells, 5))
    return edit


H5_ERRORS = [
    (_attr("pandas_type", np.bytes_(b"frame_table")), r"/data has pandas_type 'frame_table', expected 'frame'"),
    (_delete("axis1"), r"missing dataset /data/axis1$"),
    (_replace("axis1", np.arange(len(TRACKS))), r"/data/axis1 is int64 \(5,\), expected 1-D byte strings"),
    (_replace("axis1", np.array([b"\xff" * 18] * len(TRACKS))), r"/data/axis1 is not UTF-8"),
    (_attr("nblocks", np.bytes_(b"1")), r"/data lacks the integer attribute 'nblocks'"),
    (_replace("block0_items", np.array(["genres", "styles", "themes", "x", "y"], dtype="S")),
     r"/data has no column\(s\) moods \(columns: genres, styles, moods, themes, artist_name\)"),
    (_delete("block0_values"), r"missing dataset /data/block0_values$"),
    (_replace("block0_values", np.zeros((len(TRACKS), 5), np.int32)),
     r"/data/block0_values is int32 \(5, 5\), expected a pickled object array or floats"),
    (_blob(_Hostile()), r"/data/block0_values is not a pickled numpy array \(UnpicklingError: refused global "
                        r"builtins.print\)"),
    (lambda frame: write_object_atom(frame, "block0_values", b"not a pickle"),
     r"/data/block0_values is not a pickled numpy array"),
    (_blob(["a", "list"]), r"/data/block0_values holds list, expected a 2-D numpy array"),
    (_blob(np.empty((2, 5), object)), r"/data/block0_values has shape \(2, 5\), expected \(5, 5\) \(tracks, columns\)"),
    (_cell(1, 2, "Cool"), rf"track {B}, column moods: str 'Cool', expected a list of tag strings or NaN"),
    (_cell(0, 0, [1, 2]), rf"track {A}, column genres: list '\[1, 2\]', expected a list of tag strings or NaN"),
]


@pytest.mark.parametrize(("edit", "message"), H5_ERRORS)
def test_malformed_tag_files_are_one_line_errors(msd: Path, edit, message: str) -> None:
    with h5py.File(msd / AMG_TAGS, "a") as f:
        edit(f["data"])
    with pytest.raises(MdeError, match=f"^{msd / AMG_TAGS}: {message}") as caught:
        load_msd(msd)
    assert "\n" not in str(caught.value)


def test_tag_file_errors(msd: Path, tmp_path: Path) -> None:
    tags = msd / AMG_TAGS
    with pytest.raises(MdeError, match=f"{tmp_path / 'nowhere'}: MSD folder not found"):
        load_msd(tmp_path / "nowhere")
    write_frame(tags, {t: v for t, v in TRACKS.items() if t not in (B, D)})
    with pytest.raises(MdeError, match=rf"{tags}: 2 track\(s\) of splits.csv not in it: {B}, {D}$"):
        load_msd(msd)
    write_frame(tags, dict.fromkeys(TRACKS, (None, None, None, None)))
    with pytest.raises(MdeError, match=f"{tags}: none of the 4 tracks of splits.csv has a tag"):
        load_msd(msd)
    with h5py.File(tags, "w") as f:
        f["other"] = np.zeros(1)
    with pytest.raises(MdeError, match=rf"{tags}: no group /data \(what pandas' to_hdf\(path, 'data'\) writes\)"):
        load_msd(msd)
    write_text(tags, "not hdf5")
    with pytest.raises(MdeError, match=f"{tags}: not a readable HDF5 file"):
        load_msd(msd)
    tags.unlink()
    with pytest.raises(MdeError, match=f"{tags}: AMG tag file not found"):
        load_msd(msd)


@pytest.mark.parametrize(("body", "message"), [
    (f"track_id,split\n{A},train\n{B},val\n", rf":3: track {B}: split 'val' is not one of train, valid, test"),
    (f"track_id,split\n{A},train\n{B},\n", rf":3: track {B} has no split"),
    (f"track_id,split\n{A},train\n{A},test\n", rf":3: track {A} is listed twice"),
    ("track_id,split\n../../etc,train\n", r":2: '../../etc' is not an MSD track id"),
    (f"track_id,split\n{A},train,extra\n", r":2: expected 2 fields \(track_id,split\), got 3"),
    (f"track,split\n{A},train\n", r": the header lacks column\(s\) track_id \(expected track_id,split\)"),
    ("track_id,split\n\n", r": no tracks"),
])
def test_split_file_errors(msd: Path, body: str, message: str) -> None:
    _splits(msd, body)
    with pytest.raises(MdeError, match=f"^{msd / 'splits.csv'}{message}"):
        load_msd(msd)


def test_missing_split_file_and_audio(msd: Path) -> None:
    for track in (A, B, C, D):
        (msd / "audio" / f"{track}.wav").unlink()
    write_wav(msd / "audio" / "TRZZZZZ128F0000000.wav")  # flat layout: the missing are named .wav
    with pytest.raises(MdeError, match=rf"splits.csv: 4 audio file\(s\) missing: .*{A}\.wav, .*{B}\.wav, "
                                       rf".*{C}\.wav and 1 more$"):
        load_msd(msd)
    write_wav(msd / "audio" / f"{A}.wav")
    write_wav(msd / "audio" / f"{A}.flac")
    with pytest.raises(MdeError, match=f"{msd / 'audio'}: two audio files for track {A}: {A}.flac, {A}.wav"):
        load_msd(msd)
    for path in (msd / "audio").iterdir():
        path.unlink()
    (msd / "audio").rmdir()
    with pytest.raises(MdeError, match=f"{msd / 'audio'}: audio folder not found"):
        load_msd(msd)
    (msd / "splits.csv").unlink()
    with pytest.raises(MdeError, match=f"{msd / 'splits.csv'}: split file not found"):
        load_msd(msd)


def test_review_errors(msd: Path) -> None:
    write_text(msd / "reviews.csv", f"track_id,text\n{A},fine\n,orphan text\n")
    with pytest.raises(MdeError, match=f"{msd / 'reviews.csv'}:3: empty track_id"):
        load_msd(msd)
    write_text(msd / "reviews.csv", f"track_id,review\n{A},fine\n")
    with pytest.raises(MdeError, match=r"reviews.csv: the header lacks column\(s\) text"):
        load_msd(msd)
    pq.write_table(pa.table({"track_id": [A], "text": ["x"]}), msd / "reviews.parquet")
    with pytest.raises(MdeError, match=f"{msd}: has both reviews.csv and reviews.parquet; keep one"):
        load_msd(msd)
    (msd / "reviews.csv").unlink()
    parquet = msd / "reviews.parquet"
    for table, message in (
        (pa.table({"track_id": [A], "body": ["x"]}), r"no column 'text' \(columns: track_id, body\)"),
        (pa.table({"track_id": [1], "text": ["x"]}), r"column 'track_id' is int64, expected strings"),
        (pa.table({"track_id": [A, None], "text": ["x", "y"]}), r"row 1: no track_id"),
    ):
        pq.write_table(table, parquet)
        with pytest.raises(MdeError, match=f"^{parquet}: {message}$"):
            load_msd(msd)
    write_text(parquet, "not parquet")
    with pytest.raises(MdeError, match=f"{parquet}: not a readable parquet file"):
        load_msd(msd)
