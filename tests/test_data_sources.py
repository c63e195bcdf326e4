"""Data sources: MagnaTagATune (annotations, mp3 tree, sota split files), GTZAN, CSV manifests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from mde.errors import MdeError
from mde.trainer.data.manifest import ManifestRow, load_manifest, read_manifest, write_manifest
from mde.trainer.data.mtat import (
    ANNOTATIONS,
    SYNONYMS,
    merge_synonym_tags,
    read_annotations,
    read_split_file,
)
from mde.trainer.data.sources import load_dataset

RATE = 16000

# A tiny MagnaTagATune: synonyms 'guitar'/'guitars' and 'drum'/'drums'. Unmerged, the top two tags are
# rock (5) and piano (3, ahead of guitars' 3 by column order); merged, guitar (5) ties rock and wins.
TAG_COLUMNS = ("guitar", "rock", "piano", "guitars", "drum", "drums")
ROWS = (
    ("0/a.mp3", {"guitar", "rock"}),
    ("1/b.mp3", {"guitars", "piano"}),
    ("2/c.mp3", {"guitar", "drums"}),
    ("b/d.mp3", {"guitars", "rock", "piano"}),
    ("c/e.mp3", {"rock", "piano"}),
    ("c/f.mp3", set()),
    ("d/g.mp3", {"drum", "drums"}),
    ("f/h.mp3", {"guitars", "rock"}),
    ("e/missing.mp3", {"rock"}),
)


def write_mp3(path: Path, seconds: float = 0.1) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tone = 0.1 * np.sin(2 * np.pi * 440 * np.arange(round(seconds * RATE)) / RATE)
    sf.write(path, tone.astype(np.float32), RATE, format="MP3", subtype="MPEG_LAYER_III")
    return path


def write_wav(path: Path, seconds: float = 0.05, fmt: str = "WAV") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.zeros(round(seconds * RATE), np.float32), RATE, format=fmt, subtype="PCM_16")
    return path


def write_annotations(folder: Path, columns=TAG_COLUMNS, rows=ROWS) -> Path:
    """annotations_final.csv as MagnaTagATune ships it: tab-separated, every field quoted."""
    lines = ["\t".join(f'"{v}"' for v in ("clip_id", *columns, "mp3_path"))]
    for clip_id, (clip, tags) in enumerate(rows):
        values = [str(clip_id), *("1" if t in tags else "0" for t in columns), clip]
        lines.append("\t".join(f'"{v}"' for v in values))
    path = folder / ANNOTATIONS
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def mtat(tmp_path: Path) -> Path:
    """The tiny MagnaTagATune tree; every clip but e/missing.mp3 has a real mp3."""
    root = tmp_path / "mtat"
    root.mkdir()
    write_annotations(root)
    for clip, _ in ROWS:
        if "missing" not in clip:
            write_mp3(root / clip)
    return root


def write_split(folder: Path, **splits: list[str]) -> None:
    """sota-format split files: arrays of '<row>\\t<clip>' for the given ROWS indices."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, entries in splits.items():
        np.save(folder / f"{name}.npy", np.array(entries))


def clip_names(dataset, split: str) -> list[str]:
    return [f"{c.path.parent.name}/{c.path.name}" for c in dataset.splits[split]]


# --- MagnaTagATune -----------------------------------------------------------------------------------


def test_mtat_folder_rule_keeps_tagged_clips_on_disk(mtat: Path) -> None:
    ds = load_dataset("mtat", mtat, top_k=2)
    assert ds.tag_names == ("rock", "piano")
    assert not ds.single_label
    assert clip_names(ds, "train") == ["0/a.mp3", "1/b.mp3", "b/d.mp3"]  # 2/c.mp3 has neither tag
    assert clip_names(ds, "valid") == ["c/e.mp3"]  # c/f.mp3 has no tag at all
    assert clip_names(ds, "test") == ["f/h.mp3"]  # d/g.mp3 untagged here, e/missing.mp3 not on disk
    assert ds.label_matrix("train").tolist() == [[1, 0], [0, 1], [1, 1]]
    assert ds.split("train")[0].labels.dtype == np.float32


def test_mtat_random_split_is_seeded_and_keeps_every_clip_on_disk(mtat: Path, monkeypatch) -> None:
    """The multi-scale CNN's split: valid first, train last, the rest test, over every clip whose mp3 exists
    (tagged or not); the sizes (2,000 and 18,000) shrunk for the tiny tree."""
    from mde.trainer.data import mtat as mtat_module

    monkeypatch.setattr(mtat_module, "RANDOM_SPLIT_SIZES", {"valid": 2, "train": 4})
    ds = load_dataset("mtat", mtat, top_k=2, merge_synonyms=True, mtat_split="random")
    assert ds.tag_names == ("guitar", "rock")
    sizes = {split: len(clips) for split, clips in ds.splits.items()}
    assert sizes == {"train": 4, "valid": 2, "test": 2}  # 8 clips on disk (e/missing.mp3 is not)
    names = [name for split in ("train", "valid", "test") for name in clip_names(ds, split)]
    assert sorted(names) == sorted(clip for clip, _ in ROWS if "missing" not in clip)  # c/f.mp3 (untagged) too
    again = load_dataset("mtat", mtat, top_k=2, merge_synonyms=True, mtat_split="random")
    assert {s: clip_names(again, s) for s in sizes} == {s: clip_names(ds, s) for s in sizes}
    monkeypatch.setattr(mtat_module, "RANDOM_SPLIT_SIZES", {"valid": 2, "train": 6})
    with pytest.raises(MdeError, match="the random split needs at least 9 clips on disk"):
        load_dataset("mtat", mtat, mtat_split="random")
    with pytest.raises(MdeError, match="must be one of sota, random, got 'folders'"):
        load_dataset("mtat", mtat, mtat_split="folders")
    with pytest.raises(MdeError, match="--mtat-split does not apply to --dataset manifest"):
        load_dataset("manifest", mtat / "x.csv", mtat_split="random")


def test_merging_synonyms_changes_the_top_k(mtat: Path) -> None:
    ds = load_dataset("mtat", mtat, top_k=2, merge_synonyms=True)
    assert ds.tag_names == ("guitar", "rock")
    assert clip_names(ds, "train") == ["0/a.mp3", "1/b.mp3", "2/c.mp3", "b/d.mp3"]
    assert ds.label_matrix("train").tolist() == [[1, 1], [1, 0], [1, 0], [1, 1]]
    assert load_dataset("mtat", mtat, top_k=3, merge_synonyms=True).tag_names == ("guitar", "rock", "piano")


def test_merge_synonym_tags_is_an_or_named_by_the_first(mtat: Path) -> None:
    merged = merge_synonym_tags(read_annotations(mtat / ANNOTATIONS))
    assert merged.tag_names == ("guitar", "rock", "piano", "drum")
    assert merged.matrix[:, 0].tolist() == [1, 1, 1, 1, 0, 0, 0, 1, 0]
    assert merged.matrix[:, 3].tolist() == [0, 0, 1, 0, 0, 0, 1, 0, 0]
    assert ("no beat", "no drums") in SYNONYMS and len(SYNONYMS) == 29


def test_mtat_audio_under_mp3_folder(mtat: Path) -> None:
    (mtat / "mp3").mkdir()
    for folder in ("0", "1", "2", "b", "c", "d", "f"):
        (mtat / folder).rename(mtat / "mp3" / folder)
    ds = load_dataset("mtat", mtat, top_k=2)
    assert ds.split("train")[0].path == mtat / "mp3" / "0" / "a.mp3"


def test_mtat_split_files_keep_every_listed_clip(mtat: Path) -> None:
    write_split(mtat / "split", train=["0\t0/a.mp3", "2\t2/c.mp3"], valid=["5\tc/f.mp3"], test=["7\tf/h.mp3"])
    ds = load_dataset("mtat", mtat, top_k=2)
    assert ds.tag_names == ("rock", "piano")
    assert clip_names(ds, "train") == ["0/a.mp3", "2/c.mp3"]
    assert ds.label_matrix("train").tolist() == [[1, 0], [0, 0]]  # listed clips stay, even untagged
    assert ds.label_matrix("valid").tolist() == [[0, 0]]


def test_mtat_split_files_with_binary_and_tags(mtat: Path) -> None:
    write_split(mtat, train=["1\t1/b.mp3"], valid=["4\tc/e.mp3"], test=["7\tf/h.mp3"])
    np.save(mtat / "tags.npy", np.array(["piano", "drums"]))
    binary = np.zeros((len(ROWS), 2))
    binary[1] = [1, 1]  # differs from the annotations on purpose: binary.npy is what counts
    np.save(mtat / "binary.npy", binary)
    ds = load_dataset("mtat", mtat, top_k=2)
    assert ds.tag_names == ("piano", "drums")
    assert ds.label_matrix("train").tolist() == [[1, 1]]
    assert ds.label_matrix("test").tolist() == [[0, 0]]


def test_mtat_tags_npy_without_binary_orders_rebuilt_labels(mtat: Path) -> None:
    write_split(mtat, train=["1\t1/b.mp3"], valid=["4\tc/e.mp3"], test=["7\tf/h.mp3"])
    np.save(mtat / "tags.npy", np.array(["piano", "rock"]))
    ds = load_dataset("mtat", mtat, top_k=2)
    assert ds.tag_names == ("piano", "rock")
    assert ds.label_matrix("valid").tolist() == [[1, 1]]
    merged = load_dataset("mtat", mtat, top_k=2, merge_synonyms=True)  # tags.npy is for unmerged tags
    assert merged.tag_names == ("guitar", "rock")
    assert merged.label_matrix("train").tolist() == [[1, 0]]


def test_mtat_split_file_errors(mtat: Path) -> None:
    write_split(mtat / "split", train=["0\t0/a.mp3"])
    with pytest.raises(MdeError, match=r"has train\.npy but not valid\.npy, test\.npy"):
        load_dataset("mtat", mtat)
    write_split(mtat / "split", valid=["4\tc/e.mp3"], test=["1\tf/h.mp3"])
    with pytest.raises(MdeError, match=r"test\.npy: row 1 lists 'f/h\.mp3' but annotations_final\.csv has '1/b\.mp3'"):
        load_dataset("mtat", mtat)
    write_split(mtat / "split", test=["8\te/missing.mp3"])
    with pytest.raises(MdeError, match=r"split: 1 audio file\(s\) missing: .*e/missing\.mp3$"):
        load_dataset("mtat", mtat)
    write_split(mtat / "split", test=["x\tf/h.mp3"])
    with pytest.raises(MdeError, match=r"entry 0 is 'x\\tf/h\.mp3', expected"):
        load_dataset("mtat", mtat)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda text: text.replace('"clip_id"', '"id"'), "not a MagnaTagATune annotations file"),
        (lambda text: text.replace('\t"0/a.mp3"', ""), rf"{ANNOTATIONS}:2: expected 8 fields, got 7"),
        (lambda text: text.replace('"1"\t"1"', '"2"\t"1"', 1), r":\d+: tag columns must hold 0 or 1"),
        (lambda text: text.replace('"0/a.mp3"', '"g/a.mp3"'), "'g/a.mp3' is not inside one of the folders"),
    ],
)
def test_mtat_malformed_annotations(mtat: Path, edit, message: str) -> None:
    path = mtat / ANNOTATIONS
    path.write_text(edit(path.read_text()))
    with pytest.raises(MdeError, match=message):
        load_dataset("mtat", mtat)


def test_mtat_missing_pieces(tmp_path: Path) -> None:
    with pytest.raises(MdeError, match="MagnaTagATune folder not found"):
        load_dataset("mtat", tmp_path / "nowhere")
    with pytest.raises(MdeError, match="annotations not found"):
        load_dataset("mtat", tmp_path)


def test_real_sota_split_files_parse(shared_data: Path) -> None:
    folder = shared_data / "mtat_split"
    valid, test = read_split_file(folder / "valid.npy"), read_split_file(folder / "test.npy")
    assert (len(valid), len(test)) == (1529, 4332)
    assert all(clip.startswith("c/") and clip.endswith(".mp3") for _, clip in valid)
    assert {clip[0] for _, clip in test} == set("def")
    rows = [row for row, _ in valid + test]
    assert len(set(rows)) == len(rows) and max(rows) < 25863
    tags = np.load(folder / "tags.npy")
    assert len(tags) == 50 and "guitar" in tags.tolist()


# --- GTZAN -------------------------------------------------------------------------------------------


def gtzan_tree(root: Path, genres=("rock", "blues", "jazz"), per_genre: int = 10, suffix: str = ".wav") -> Path:
    fmt = {".wav": "WAV", ".au": "AU"}[suffix]
    for genre in genres:
        for i in range(per_genre):
            write_wav(root / genre / f"{genre}.{i:05d}{suffix}", fmt=fmt)
    return root


def test_gtzan_stratified_seeded_split(tmp_path: Path) -> None:
    gtzan_tree(tmp_path / "genres")
    ds = load_dataset("gtzan", tmp_path)
    assert ds.tag_names == ("blues", "jazz", "rock") and ds.single_label
    for split, per_genre in (("train", 8), ("valid", 1), ("test", 1)):
        assert ds.label_matrix(split).sum(axis=0).tolist() == [per_genre] * 3
    assert all(c.labels[ds.tag_names.index(c.path.parent.name)] == 1 for c in ds.split("valid"))
    again = load_dataset("gtzan", tmp_path)
    assert [c.path for c in again.split("test")] == [c.path for c in ds.split("test")]
    train = {c.path for c in ds.split("train")}
    assert not train & {c.path for c in ds.split("valid") + ds.split("test")}


def test_gtzan_genre_folders_at_top_level_with_au(tmp_path: Path) -> None:
    gtzan_tree(tmp_path, genres=("pop", "metal"), per_genre=3, suffix=".au")
    ds = load_dataset("gtzan", tmp_path)
    assert ds.tag_names == ("metal", "pop")
    assert [len(ds.splits[s]) for s in ("train", "valid", "test")] == [2, 2, 2]


def test_gtzan_fault_filtered_lists(tmp_path: Path) -> None:
    gtzan_tree(tmp_path / "genres", per_genre=3, suffix=".au")
    (tmp_path / "train_filtered.txt").write_text("rock/rock.00000.wav\nblues/blues.00000.wav\n")
    (tmp_path / "valid_filtered.txt").write_text("jazz/jazz.00001.wav\n")
    (tmp_path / "test_filtered.txt").write_text("jazz/jazz.00002.wav\n\n")
    ds = load_dataset("gtzan", tmp_path)
    assert [c.path.name for c in ds.split("train")] == ["rock.00000.au", "blues.00000.au"]
    assert ds.label_matrix("valid").tolist() == [[0, 1, 0]]
    (tmp_path / "test_filtered.txt").write_text("jazz/jazz.00054.wav\n")
    with pytest.raises(MdeError, match=r"test_filtered\.txt: 1 audio file\(s\) missing: .*jazz\.00054\.wav"):
        load_dataset("gtzan", tmp_path)
    (tmp_path / "test_filtered.txt").unlink()
    with pytest.raises(MdeError, match=r"but not test_filtered\.txt"):
        load_dataset("gtzan", tmp_path)


def test_gtzan_without_genres(tmp_path: Path) -> None:
    write_wav(tmp_path / "only" / "one.wav")
    with pytest.raises(MdeError, match="no GTZAN genre folders found"):
        load_dataset("gtzan", tmp_path)


# --- manifests ---------------------------------------------------------------------------------------


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture
def audio_dir(tmp_path: Path) -> Path:
    for name in ("a", "b", "c", "d"):
        write_wav(tmp_path / "clips" / f"{name}.wav")
    return tmp_path


def test_manifest_multi_label(audio_dir: Path) -> None:
    absolute = audio_dir / "clips" / "d.wav"
    manifest = write_csv(audio_dir / "m.csv", (
        "path,split,tags\n"
        "clips/a.wav,train,rock|guitar\n"
        "clips/b.wav,train, rock \n"
        "clips/c.wav,valid,\n"
        f"{absolute},test,piano|rock|piano\n"
    ))
    ds = load_dataset("manifest", manifest)
    assert ds.tag_names == ("guitar", "piano", "rock") and not ds.single_label
    assert ds.label_matrix("train").tolist() == [[1, 0, 1], [0, 0, 1]]
    assert ds.label_matrix("valid").tolist() == [[0, 0, 0]]
    assert ds.split("test")[0].path == absolute
    assert ds.split("train")[0].path == audio_dir / "clips" / "a.wav"
    top = load_dataset("manifest", manifest, top_k=1)
    assert top.tag_names == ("rock",) and len(top.split("valid")) == 1


def test_manifest_single_label_and_top_k(audio_dir: Path) -> None:
    manifest = write_csv(audio_dir / "m.csv", (
        "tags,path,split,extra\n"
        "jazz,clips/a.wav,train,x\n"
        "jazz,clips/b.wav,valid,x\n"
        "blues,clips/c.wav,test,x\n"
    ))
    ds = load_dataset("manifest", manifest, single_label=True)
    assert ds.single_label and ds.tag_names == ("blues", "jazz")
    assert ds.label_matrix("test").tolist() == [[1, 0]]
    top = load_dataset("manifest", manifest, single_label=True, top_k=1)
    assert top.tag_names == ("jazz",) and top.splits["test"] == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("path,tags\nclips/a.wav,x\n", r"m\.csv: the header lacks column\(s\) split \(expected path,split,tags\)"),
        ("path,split,tags\nclips/a.wav,train,x\nclips/b.wav,training,x\n",
         r"m\.csv:3: split 'training' is not one of train, valid, test"),
        ("path,split,tags\nclips/a.wav,train\n", r"m\.csv:2: expected 3 fields \(path,split,tags\), got 2"),
        ("path,split,tags\n,train,x\n", r"m\.csv:2: empty path"),
        ("path,split,tags\n", r"m\.csv: the manifest has no rows"),
        ("", r"m\.csv: the header lacks column\(s\) path, split, tags"),
        ("path,split,tags\n" + "".join(f"clips/gone{i}.wav,train,x\n" for i in range(5)) + "clips/a.wav,test,y\n",
         r"m\.csv: 5 audio file\(s\) missing: \S+gone0\.wav, \S+gone1\.wav, \S+gone2\.wav and 2 more$"),
    ],
)
def test_manifest_errors(audio_dir: Path, text: str, message: str) -> None:
    with pytest.raises(MdeError, match=message):
        load_dataset("manifest", write_csv(audio_dir / "m.csv", text))


def test_manifest_single_label_needs_one_tag(audio_dir: Path) -> None:
    manifest = write_csv(audio_dir / "m.csv", "path,split,tags\nclips/a.wav,train,jazz\nclips/b.wav,train,jazz|rock\n")
    with pytest.raises(MdeError, match=r"m\.csv:3: a single-label manifest needs exactly one tag per row, got 2"):
        load_dataset("manifest", manifest, single_label=True)
    with pytest.raises(MdeError, match="manifest not found"):
        load_dataset("manifest", audio_dir / "absent.csv")


def test_manifest_encoding(audio_dir: Path) -> None:
    manifest = audio_dir / "m.csv"
    manifest.write_bytes(b"\xef\xbb\xbfpath,split,tags\nclips/a.wav,train,caf\xc3\xa9\n")  # Excel's BOM
    assert load_dataset("manifest", manifest).tag_names == ("caf\u00e9",)
    manifest.write_bytes(b"path,split,tags\nclips/a.wav,train,caf\xe9\n")  # Latin-1
    with pytest.raises(MdeError, match=r"m\.csv: not a readable UTF-8 CSV file \('utf-8' codec can't decode"):
        load_dataset("manifest", manifest)
    write_csv(manifest, "path,split,tags\nclips/a.wav,train,\n")
    with pytest.raises(MdeError, match=r"m\.csv: no row has a tag"):
        load_dataset("manifest", manifest)


def test_write_manifest_round_trip(audio_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    outside = write_wav(tmp_path_factory.mktemp("elsewhere") / "x, y.wav")
    rows = [
        ManifestRow(audio_dir / "clips" / "a.wav", "train", ("piano", "loud")),
        (outside, "test", ["quiet"]),
    ]
    path = write_manifest(rows, audio_dir / "out.csv")
    lines = path.read_text().splitlines()
    assert lines[:2] == ["path,split,tags", "clips/a.wav,train,piano|loud"]
    assert lines[2] == f'"{outside}",test,quiet'
    ds = load_manifest(path)
    assert [c.path for c in ds.split("test")] == [outside]
    with pytest.raises(MdeError, match=r"tag 'a\|b' is empty, padded with spaces or contains '\|'"):
        write_manifest([(outside, "train", ["a|b"])], audio_dir / "bad.csv")
    with pytest.raises(MdeError, match="split 'dev' is not one of"):
        write_manifest([(outside, "dev", ["a"])], audio_dir / "bad.csv")


def test_a_text_column_round_trips_and_is_optional(audio_dir: Path) -> None:
    text = 'Ein "leises" Stück, für Flöte\nund Klavier.'
    rows = [ManifestRow(audio_dir / "clips" / "a.wav", "train", ("piano",), text),
            ManifestRow(audio_dir / "clips" / "a.wav", "test", ("quiet",))]
    path = write_manifest(rows, audio_dir / "text.csv")
    assert path.read_text(encoding="utf-8").splitlines()[0] == "path,split,tags,text"
    assert [r.text for r in read_manifest(path)] == [text, ""]
    dataset = load_manifest(path)
    assert (dataset.split("train")[0].text, dataset.split("test")[0].text) == (text, "")
    plain = write_manifest([r[:3] for r in rows], audio_dir / "plain.csv")
    assert plain.read_text().splitlines()[0] == "path,split,tags"
    assert [r.text for r in read_manifest(plain)] == ["", ""]


# --- dispatch ----------------------------------------------------------------------------------------


def test_load_dataset_refuses_unknown_kinds_and_options(tmp_path: Path) -> None:
    with pytest.raises(MdeError, match="unknown dataset 'fma'; choose one of mtat, gtzan, manifest"):
        load_dataset("fma", tmp_path)
    with pytest.raises(MdeError, match="--merge-synonyms does not apply to --dataset gtzan"):
        load_dataset("gtzan", tmp_path, merge_synonyms=True)
    with pytest.raises(MdeError, match="--single-label does not apply to --dataset mtat"):
        load_dataset("mtat", tmp_path, single_label=True)
    manifest = write_csv(tmp_path / "m.csv", f"path,split,tags\n{write_wav(tmp_path / 'a.wav')},train,x\n")
    with pytest.raises(MdeError, match="top_k must be at least 1"):
        load_dataset("manifest", manifest, top_k=0)
