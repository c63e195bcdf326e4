"""``mde corpus debian``: real .deb packages built here with dpkg-deb stand in for Debian's downloads."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from mde.errors import MdeError
from mde.trainer.data import debian_corpus as dc

pytestmark = pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="dpkg-deb is not installed")

RATE = 16000
VERSIONS = {"asc-music": "1.3-6", "drascula-music": "1.0+ds4-2", "nexuiz-music": "2.5.2-12",
            "xblast-tnt-musics": "20050106-3.1"}
SPLITS = {"valid": ["drascula-music"], "test": ["nexuiz-music", "xblast-tnt-musics"]}
# seconds of every usable track, by package (paths relative to the package's root)
TRACKS = {
    "asc-music": {"usr/share/games/asc/music/frontiers.ogg": 6.0, "usr/share/games/asc/music/second.ogg": 7.5},
    "drascula-music": {"usr/share/scummvm/drascula/audio/track1.ogg": 6.25},
    "nexuiz-music": {"usr/share/games/nexuiz/data/music.pk3.unpacked/sound/cdtracks/beast.ogg": 5.5},
    "xblast-tnt-musics": {"usr/share/games/xblast-tnt/sounds/theme.ogg": 8.0},
}


def _tone(path: Path, seconds: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(round(seconds * RATE)) / RATE
    sf.write(path, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), RATE, format="OGG", subtype="VORBIS")


def _build_deb(work: Path, package: str, files: dict[str, float | bytes], dest: Path) -> Path:
    """A real .deb of ``package`` holding ``files`` (path -> seconds of a Vorbis tone, or raw bytes)."""
    root = work / package
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        f"Package: {package}\nVersion: {VERSIONS[package]}\nArchitecture: all\n"
        "Maintainer: Test <test@example.org>\nDescription: test music package\n")
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            _tone(path, content)
    deb = dest / f"{package}_{VERSIONS[package]}_all.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(root), str(deb)],
                   check=True, capture_output=True)
    return deb


@pytest.fixture(scope="module")
def debs(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("debs-work")
    dest = tmp_path_factory.mktemp("debs")
    (dest / "pool" / "a").mkdir(parents=True)  # found recursively, as in a mirror's pool

    music = "usr/share/games/asc/music"
    _tone(work / "broken-src.ogg", 8.0)
    whole = (work / "broken-src.ogg").read_bytes()
    _build_deb(work, "asc-music", {
        **TRACKS["asc-music"],
        f"{music}/short.ogg": 2.0,
        f"{music}/broken.ogg": whole[: len(whole) // 2],  # cut in the middle: a corrupt Ogg stream
        f"{music}/fake.wav": b"this is not a wave file\n" * 20,
        "usr/share/doc/asc-music/readme.txt": b"notes\n",
    }, dest / "pool" / "a")
    _build_deb(work, "drascula-music", TRACKS["drascula-music"], dest)

    _tone(work / "pk3" / "beast.ogg", 5.5)
    pk3 = work / "music.pk3"
    with zipfile.ZipFile(pk3, "w") as z:
        z.write(work / "pk3" / "beast.ogg", "sound/cdtracks/beast.ogg")
        z.writestr("sound/cdtracks/readme.txt", "not audio")
    _build_deb(work, "nexuiz-music", {"usr/share/games/nexuiz/data/music.pk3": pk3.read_bytes()}, dest)
    _build_deb(work, "xblast-tnt-musics", {
        **TRACKS["xblast-tnt-musics"],
        "usr/share/games/xblast-tnt/sounds/xbsng1.raw": bytes(range(256)) * 400,  # header-less PCM
    }, dest)
    return dest


def _build(out: Path, debs: Path, **kwargs) -> dc.CorpusReport:
    kwargs.setdefault("packages", list(VERSIONS))
    kwargs.setdefault("valid", SPLITS["valid"])
    kwargs.setdefault("test", SPLITS["test"])
    return dc.build_debian_corpus(out, debs=debs, **kwargs)


def _log(out: Path) -> dict[str, dict[str, str]]:
    with open(out / dc.LOG_NAME, newline="", encoding="utf-8") as f:
        return {row["path"]: row for row in csv.DictReader(f, delimiter="\t")}


def test_builds_a_corpus_split_by_package(debs, tmp_path):
    from mde.trainer.data.sources import load_dataset

    out = tmp_path / "corpus"
    stages = []
    report = _build(out, debs, on_progress=lambda stage, done, total: stages.append((stage, done, total)))

    by_name = {p.name: p for p in report.packages}
    for name, tracks in TRACKS.items():
        assert by_name[name].files == len(tracks)
        assert by_name[name].seconds == pytest.approx(sum(tracks.values()), abs=1e-3)
        assert by_name[name].version == VERSIONS[name]
        assert not by_name[name].reused
    assert {p.name: p.split for p in report.packages} == {
        "asc-music": "train", "drascula-music": "valid", "nexuiz-music": "test", "xblast-tnt-musics": "test"}
    assert ("packages", 4, 4) in stages and ("asc-music files", 5, 5) in stages

    dataset = load_dataset("manifest", report.manifest)
    assert dataset.tag_names == tuple(sorted(VERSIONS))
    seen: dict[str, set[str]] = {}
    for split, clips in dataset.splits.items():
        for clip in clips:
            (tag,) = [dataset.tag_names[i] for i in np.flatnonzero(clip.labels)]
            seen.setdefault(tag, set()).add(split)
            assert clip.text == ""
            rel = Path(clip.path).resolve().relative_to((out / "extract" / tag).resolve()).as_posix()
            assert rel in TRACKS[tag]
    assert seen == {"asc-music": {"train"}, "drascula-music": {"valid"}, "nexuiz-music": {"test"},
                    "xblast-tnt-musics": {"test"}}
    header = (out / dc.MANIFEST_NAME).read_text().splitlines()[0]
    assert header == "path,split,tags"

    log = _log(out)
    music = "extract/asc-music/usr/share/games/asc/music"
    assert log[f"{music}/frontiers.ogg"]["status"] == "ok"
    assert float(log[f"{music}/frontiers.ogg"]["seconds"]) == pytest.approx(6.0, abs=1e-3)
    assert log[f"{music}/short.ogg"]["status"] == "skipped"
    assert "shorter than 5 s (2.00 s)" in log[f"{music}/short.ogg"]["reason"]
    assert log[f"{music}/broken.ogg"]["status"] == "skipped"
    assert "truncated" in log[f"{music}/broken.ogg"]["reason"]
    assert log[f"{music}/fake.wav"]["status"] == "skipped"
    assert "not a recognised audio format" in log[f"{music}/fake.wav"]["reason"]
    assert log["extract/asc-music/usr/share/doc/asc-music/readme.txt"]["status"] == "ignored"
    raw = log["extract/xblast-tnt-musics/usr/share/games/xblast-tnt/sounds/xbsng1.raw"]
    assert raw["status"] == "skipped" and "RAW" in raw["reason"]
    nexuiz = out / "extract/nexuiz-music/usr/share/games/nexuiz/data"
    assert not (nexuiz / "music.pk3").exists()  # unpacked, then removed
    assert not (nexuiz / "music.pk3.unpacked/sound/cdtracks/readme.txt").exists()  # only audio comes out
    unpacked = log["extract/nexuiz-music/usr/share/games/nexuiz/data/music.pk3.unpacked"]
    assert unpacked["status"] == "unpacked" and "1 audio file(s) of music.pk3" in unpacked["reason"]

    summary = json.loads(report.summary.read_text())
    assert summary["packages"]["drascula-music"] == {
        "version": "1.0+ds4-2", "split": "valid", "files": 1, "skipped": 0,
        "seconds": pytest.approx(6.25, abs=1e-3), "hours": pytest.approx(6.25 / 3600, abs=1e-4)}
    assert summary["packages"]["asc-music"]["skipped"] == 3
    total_seconds = sum(sum(t.values()) for t in TRACKS.values())
    assert summary["totals"]["files"] == 5 == report.files
    assert summary["totals"]["seconds"] == pytest.approx(total_seconds, abs=1e-2)
    assert summary["totals"]["hours"] == pytest.approx(total_seconds / 3600, abs=1e-4)
    assert summary["splits"]["test"]["packages"] == ["nexuiz-music", "xblast-tnt-musics"]
    assert summary["splits"]["valid"]["fraction"] == pytest.approx(6.25 / total_seconds, abs=1e-3)
    assert sum(s["files"] for s in summary["splits"].values()) == 5
    assert not list(out.glob(".download-*")) and not list(out.glob("**/*.part"))
    assert not (out / "debs").exists()  # the .deb files came from --debs: nothing is copied
    assert (out / ".gitignore").read_text().splitlines()[-1] == "*"  # data: git passes it by


def test_min_seconds_keeps_short_files(debs, tmp_path):
    report = _build(tmp_path / "c", debs, min_seconds=0.0)
    assert {p.name: p.files for p in report.packages}["asc-music"] == 3


def test_a_rerun_does_not_fetch_or_extract_again(debs, tmp_path):
    out = tmp_path / "corpus"
    calls: list[str] = []
    local = dc.local_debs(debs)

    def download(package: str, folder: Path) -> Path:
        calls.append(package)
        deb = local(package, folder)
        return Path(shutil.copy(deb, folder / deb.name))  # like apt-get: the file lands in the folder

    dc.build_debian_corpus(out, list(VERSIONS), SPLITS["valid"], SPLITS["test"], download=download)
    assert sorted(calls) == sorted(VERSIONS)
    marker = out / "extract" / "asc-music" / dc.MARKER_NAME
    stamp = marker.stat().st_mtime_ns
    manifest = (out / dc.MANIFEST_NAME).read_text()

    calls.clear()
    again = dc.build_debian_corpus(out, list(VERSIONS), SPLITS["valid"], SPLITS["test"], download=download)
    assert calls == []
    assert marker.stat().st_mtime_ns == stamp
    assert all(p.reused for p in again.packages)
    assert (out / dc.MANIFEST_NAME).read_text() == manifest
    assert json.loads(again.summary.read_text())["packages"]["asc-music"]["version"] == "1.3-6"

    # an extraction that never finished (no marker) is redone; a killed run's leftovers are cleared
    (out / "extract" / "drascula-music" / dc.MARKER_NAME).unlink()
    (out / "extract" / ".asc-music.partial").mkdir()
    (out / ".download-stale").mkdir()
    third = dc.build_debian_corpus(out, list(VERSIONS), SPLITS["valid"], SPLITS["test"], download=download)
    assert calls == ["drascula-music"]
    assert {p.name: p.reused for p in third.packages}["drascula-music"] is False
    assert (out / dc.MANIFEST_NAME).read_text() == manifest
    assert not (out / "extract" / ".asc-music.partial").exists() and not (out / ".download-stale").exists()


def test_keep_debs_keeps_the_downloads_and_reuses_them(debs, tmp_path):
    out = tmp_path / "corpus"
    local = dc.local_debs(debs)

    def download(package: str, folder: Path) -> Path:
        deb = local(package, folder)
        return Path(shutil.copy(deb, folder / deb.name))

    dc.build_debian_corpus(out, list(VERSIONS), SPLITS["valid"], SPLITS["test"], keep_debs=True,
                           download=download)
    kept = sorted(p.name for p in (out / "debs").iterdir())
    assert kept == sorted(f"{name}_{version}_all.deb" for name, version in VERSIONS.items())
    shutil.rmtree(out / "extract" / "asc-music")

    def refuse(package: str, folder: Path) -> Path:
        raise AssertionError(f"{package} downloaded again")

    report = dc.build_debian_corpus(out, list(VERSIONS), SPLITS["valid"], SPLITS["test"], download=refuse)
    assert {p.name: p.files for p in report.packages}["asc-music"] == 2


@pytest.mark.parametrize("packages, valid, test, fragment", [
    (["asc-music", "vim"], ["asc-music"], ["vim"], "unknown package 'vim'"),
    (list(VERSIONS), ["drascula-music", "asc-music"], ["asc-music"], "asc-music is in both --valid and --test"),
    (list(VERSIONS), ["drascula-music"], [], "hold out at least 2 packages"),
    (list(VERSIONS), None, None, "--valid names singularity-music, which --packages leaves out (the default"),
    (["asc-music", "drascula-music"], ["asc-music"], ["drascula-music"], "leave at least one for train"),
    (list(VERSIONS), ["ufoai-music"], ["asc-music"], "--valid names ufoai-music, which --packages leaves out"),
])
def test_refusals_write_nothing(packages, valid, test, fragment, debs, tmp_path):
    with pytest.raises(MdeError) as caught:
        dc.build_debian_corpus(tmp_path / "corpus", packages, valid, test, debs=debs)
    assert fragment in str(caught.value) and "\n" not in str(caught.value)
    assert not (tmp_path / "corpus").exists()


def test_the_default_split_is_by_package_and_holds_four_out():
    plan = dc.plan_splits()
    assert list(plan) == list(dc.DEBIAN_PACKAGES)
    assert [n for n, s in plan.items() if s == "valid"] == ["singularity-music", "drascula-music"]
    assert [n for n, s in plan.items() if s == "test"] == ["nexuiz-music", "hyperrogue-music"]
    assert sum(s == "train" for s in plan.values()) == 5


def _fake_tool(folder: Path, name: str, script: str) -> None:
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(f"#!/bin/sh\n{script}\n")
    (folder / name).chmod(0o755)


def test_a_failed_download_names_the_package_and_the_tools_last_error(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    _fake_tool(bin_dir, "apt-get", "echo 'Reading package lists...' >&2\n"
                                   "echo 'E: Unable to locate package asc-music' >&2\n"
                                   "echo 'W: some warning' >&2\nexit 100")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(MdeError) as caught:
        dc.apt_download("asc-music", tmp_path)
    assert str(caught.value) == (
        "asc-music: download failed: apt-get exited with 100: E: Unable to locate package asc-music")


def test_missing_tools_are_one_line_errors(debs, tmp_path, monkeypatch):
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(MdeError, match=r"^asc-music: apt-get not found \(install apt, or pass --debs DIR"):
        dc.apt_download("asc-music", tmp_path)
    with pytest.raises(MdeError, match=r"^asc-music: dpkg-deb not found"):
        _build(tmp_path / "corpus", debs)


def test_a_deb_of_another_package_is_refused(debs, tmp_path):
    def wrong(package: str, folder: Path) -> Path:
        return next(debs.rglob("drascula-music_*.deb"))

    with pytest.raises(MdeError, match="holds package 'drascula-music', not 'asc-music'"):
        dc.build_debian_corpus(tmp_path / "c", list(VERSIONS), SPLITS["valid"], SPLITS["test"], download=wrong)


def _mde(*args, cwd):
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "mde", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300)


def test_the_command_builds_from_a_folder_of_debs_and_refuses_in_one_line(debs, tmp_path):
    proc = _mde("corpus", "debian", "--out", tmp_path / "c", "--debs", debs, "--packages", ",".join(VERSIONS),
                "--valid", "drascula-music", "--test", "nexuiz-music,xblast-tnt-musics", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "train: 2 files" in proc.stderr and "train with: mde train --dataset manifest" in proc.stderr
    assert (tmp_path / "c" / "manifest.csv").is_file()

    proc = _mde("corpus", "debian", "--out", tmp_path / "d", "--packages", "asc-music,nethack", cwd=tmp_path)
    assert proc.returncode == 1
    assert [line for line in proc.stderr.splitlines() if line.strip()] == [
        f"mde: error: unknown package 'nethack': the Debian corpus uses only {', '.join(dc.DEBIAN_PACKAGES)}"]

    proc = _mde("corpus", "debian", "--help", cwd=tmp_path)
    assert proc.returncode == 0 and "never commit" in proc.stdout
    for option in ("--out", "--packages", "--valid", "--test", "--min-seconds", "--keep-debs", "--debs"):
        assert option in proc.stdout
