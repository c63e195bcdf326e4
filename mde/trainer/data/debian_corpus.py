"""A corpus of real, unlabelled music from Debian's game-soundtrack packages (for distillation).

Each package is fetched with ``apt-get download`` (no root, installs nothing) or taken from a folder of
``.deb`` files (an offline mirror), unpacked with ``dpkg-deb -x`` into ``OUT/extract/<package>``, and its
audio is found by suffix and checked with :func:`mde.audio.open_audio`: files libsndfile cannot decode
(tracker modules, header-less ``.raw``), damaged files and files shorter than ``min_seconds`` are
skipped, each with its reason in ``OUT/corpus.log.tsv``. Audio packed in Quake-style ``.pk3`` (zip)
archives, as nexuiz-music and ufoai-music ship it, is unpacked beside the archive (``<archive>.unpacked/``)
and the archive removed.

The split is by package, so no package has tracks on both sides. The defaults hold out two small
packages for valid and two for test, each near 12 % of the hours. Hours per package (Debian 12),
measured for asc-music and drascula-music, else estimated from the package's size and the bitrate of
its first track: ufoai-music 3.6 h (Vorbis 128 kbit/s in a .pk3), warzone2100-music 4.1 h (Opus, about
46 kbit/s), planetblupi-music-ogg 2.8 h (64 kbit/s), nexuiz-music 1.3 h (Vorbis 128-160 kbit/s in a
.pk3), singularity-music 1.0 h, drascula-music 0.78 h, hyperrogue-music 0.45 h (Vorbis at about 320
kbit/s), asc-music 0.29 h (MP3), xblast-tnt-musics 0 (header-less raw PCM only): about 14 h in all.
valid = singularity-music + drascula-music (about 1.8 h, 12.5 %: the smallest pair of downloads, 88 MB,
over 10 %), test = nexuiz-music + hyperrogue-music (about 1.75 h, 12 %; nexuiz also exercises the
.pk3 path); the three largest stay in train (with asc-music, about 10.8 h). ``corpus.json`` records the
measured hours, and a held-out split under 10 % of them is reported through ``announce``.

``OUT/manifest.csv`` (one tag per row: the package's name; no text) is read with ``--dataset manifest``;
``OUT/corpus.json`` holds each package's version, file count, hours and split, and the totals. A rerun
does not fetch again a package whose extraction finished (its marker file is written last); the
manifest, the log and the json are rewritten whole (atomically) on every run. The corpus is data:
never commit it (``OUT/.gitignore`` ignores everything in it, so ``git add`` passes it by).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import NamedTuple

from mde.atomic import atomic_path, remove_stale_parts, write_bytes_atomic
from mde.audio import AUDIO_EXTENSIONS, open_audio
from mde.errors import AudioError, MdeError
from mde.trainer.data.manifest import ManifestRow, write_manifest

DEBIAN_PACKAGES: tuple[str, ...] = (
    "nexuiz-music",
    "ufoai-music",
    "warzone2100-music",
    "singularity-music",
    "asc-music",
    "drascula-music",
    "hyperrogue-music",
    "planetblupi-music-ogg",
    "xblast-tnt-musics",
)
"""The packages this corpus may be built from (about 600 MB of .deb in Debian 12)."""

DEFAULT_PACKAGES = DEBIAN_PACKAGES
DEFAULT_VALID: tuple[str, ...] = ("singularity-music", "drascula-music")
DEFAULT_TEST: tuple[str, ...] = ("nexuiz-music", "hyperrogue-music")
MIN_HELD_OUT = 2
"""The fewest packages valid and test hold together."""
MIN_HELD_OUT_FRACTION = 0.10
"""A held-out split with a smaller share of the hours is reported (not refused)."""

MANIFEST_NAME = "manifest.csv"
SUMMARY_NAME = "corpus.json"
LOG_NAME = "corpus.log.tsv"
EXTRACT_FOLDER = "extract"
KEPT_DEBS_FOLDER = "debs"
MARKER_NAME = ".mde-extracted.json"
"""Written into ``extract/<package>`` once the package is wholly extracted (its archives unpacked)."""
UNPACKED_SUFFIX = ".unpacked"
LOG_COLUMNS = ("package", "path", "status", "seconds", "reason")

EXTRA_AUDIO_SUFFIXES: frozenset[str] = frozenset(
    {".ogg", ".oga", ".opus", ".mp3", ".flac", ".wav", ".aiff", ".aif", ".au", ".raw", ".pcm",
     ".xm", ".mod", ".it", ".s3m", ".mid", ".midi", ".m4a", ".aac", ".wma", ".mp2", ".spx"}
)
"""Music suffixes beyond :data:`mde.audio.AUDIO_EXTENSIONS` that are tried too, so that a format
libsndfile does not decode (tracker modules, MIDI, raw PCM) is logged as skipped, with the reason."""
CANDIDATE_SUFFIXES: frozenset[str] = AUDIO_EXTENSIONS | EXTRA_AUDIO_SUFFIXES
ARCHIVE_SUFFIXES: frozenset[str] = frozenset({".pk3"})
"""Zip archives of game data whose audio members are unpacked (Quake-engine games: nexuiz, ufoai)."""

_DOWNLOAD_PREFIX = ".download-"
_PARTIAL_SUFFIX = ".partial"

Downloader = Callable[[str, Path], Path]
"""``(package, folder) -> path of its .deb``: fetch a package's .deb into ``folder`` (a fresh temporary
folder inside the corpus) or return where one already lies; raises MdeError when it cannot."""
Progress = Callable[[str, int, int], None]
"""``(stage, done, total)``: stage "packages", then "<package> files" while a package is scanned."""


class Track(NamedTuple):
    """One usable audio file of a package: its path and its length in seconds (from the header)."""

    path: Path
    seconds: float


class LogEntry(NamedTuple):
    """One line of the log: status ok, skipped (audio that is not used: why), ignored (not audio) or
    unpacked (an archive whose audio was unpacked)."""

    package: str
    path: Path
    status: str
    seconds: float | None
    reason: str


@dataclass(frozen=True)
class PackageReport:
    """What one package gave: its version, split, usable files and their seconds, files skipped, and
    whether its extraction was reused from an earlier run."""

    name: str
    version: str
    split: str
    files: int
    seconds: float
    skipped: int
    reused: bool

    @property
    def hours(self) -> float:
        return self.seconds / 3600.0


@dataclass(frozen=True)
class CorpusReport:
    """A built corpus: the files written and one report per package (in the order built)."""

    out: Path
    manifest: Path
    summary: Path
    log: Path
    packages: tuple[PackageReport, ...]

    @property
    def files(self) -> int:
        return sum(p.files for p in self.packages)

    @property
    def hours(self) -> float:
        return sum(p.seconds for p in self.packages) / 3600.0

    def split_hours(self, split: str) -> float:
        return sum(p.seconds for p in self.packages if p.split == split) / 3600.0

    def split_fraction(self, split: str) -> float:
        """The share of all hours in ``split`` (0 for an empty corpus)."""
        return self.split_hours(split) / self.hours if self.hours else 0.0


def plan_splits(
    packages: Sequence[str] = DEFAULT_PACKAGES,
    valid: Sequence[str] | None = None,
    test: Sequence[str] | None = None,
) -> dict[str, str]:
    """``{package: split}`` in the order of ``packages``: the ``valid`` ones valid, the ``test`` ones test,
    the rest train (None: the defaults, :data:`DEFAULT_VALID` and :data:`DEFAULT_TEST`).

    Raises MdeError for a package not in :data:`DEBIAN_PACKAGES`, no package, a package in both valid and
    test, a held-out package that ``packages`` leaves out, fewer than two held out, or none left to train.
    """
    chosen = _unique(packages)
    held = {"valid": _unique(DEFAULT_VALID if valid is None else valid),
            "test": _unique(DEFAULT_TEST if test is None else test)}
    for name in (*chosen, *held["valid"], *held["test"]):
        if name not in DEBIAN_PACKAGES:
            raise MdeError(f"unknown package {name!r}: the Debian corpus uses only {', '.join(DEBIAN_PACKAGES)}")
    if not chosen:
        raise MdeError("no package chosen")
    both = [name for name in held["valid"] if name in held["test"]]
    if both:
        raise MdeError(f"package {both[0]} is in both --valid and --test: a package's tracks stay on one side")
    for split, given in (("valid", valid), ("test", test)):
        outside = [name for name in held[split] if name not in chosen]
        if outside:
            default = " (the default; name the held-out packages with --valid and --test)" if given is None else ""
            raise MdeError(f"--{split} names {', '.join(outside)}, which --packages leaves out{default}")
    n_held = len(held["valid"]) + len(held["test"])
    if n_held < MIN_HELD_OUT:
        raise MdeError(f"hold out at least {MIN_HELD_OUT} packages with --valid and --test together, got {n_held}")
    if n_held == len(chosen):
        raise MdeError("every package is held out: leave at least one for train")
    return {name: next((s for s in ("valid", "test") if name in held[s]), "train") for name in chosen}


def build_debian_corpus(
    out: Path,
    packages: Sequence[str] = DEFAULT_PACKAGES,
    valid: Sequence[str] | None = None,
    test: Sequence[str] | None = None,
    min_seconds: float = 5.0,
    keep_debs: bool = False,
    on_progress: Progress | None = None,
    *,
    debs: Path | None = None,
    download: Downloader | None = None,
    announce: Callable[[str], None] | None = None,
) -> CorpusReport:
    """Fetch, unpack and scan the packages into a corpus in ``out``; see the module's docstring.

    packages, valid, test: package names (valid / test None: :data:`DEFAULT_VALID`, :data:`DEFAULT_TEST`);
      checked by :func:`plan_splits`. min_seconds: shorter files are skipped.

    debs: a folder holding the .deb files (searched recursively for ``<package>_*.deb``, e.g. a mirror's
      pool): apt-get is not run. download: fetches a package instead (default: :func:`apt_download`, or
      :func:`local_debs` of ``debs``). keep_debs: keep the downloaded .deb files in ``out/debs`` (a rerun
      then extracts from them instead of downloading). announce: receives one-line messages.
    Raises MdeError for bad arguments (before anything is written), a missing tool, a failed download or
    extraction, and a corpus without any usable audio.
    """
    split_of = plan_splits(packages, valid, test)
    if not min_seconds >= 0:
        raise MdeError(f"--min-seconds must be 0 or more, got {min_seconds}")
    if debs is not None and download is not None:
        raise MdeError("give either debs (a folder of .deb files) or download, not both")
    if debs is not None and not Path(debs).is_dir():
        raise MdeError(f"{debs}: not a folder of .deb files")
    fetch = download or (local_debs(Path(debs)) if debs is not None else apt_download)
    say = announce or (lambda message: None)
    progress = on_progress or (lambda stage, done, total: None)

    out = Path(out)
    extract = out / EXTRACT_FOLDER
    extract.mkdir(parents=True, exist_ok=True)
    if not (out / ".gitignore").exists():  # the corpus is data: a `git add` inside a checkout skips it
        write_bytes_atomic(out / ".gitignore", b"# mde corpus: data, never commit it\n*\n")
    targets = [out / MANIFEST_NAME, out / SUMMARY_NAME, out / LOG_NAME]
    remove_stale_parts(targets)
    _remove_leftovers(out, extract)

    reports: list[PackageReport] = []
    rows: list[ManifestRow] = []
    log: list[LogEntry] = []
    progress("packages", 0, len(split_of))
    for done, (name, split) in enumerate(split_of.items(), 1):
        root = extract / name
        marker = read_marker(root)
        reused = marker is not None
        if marker is None:
            marker = _fetch_and_extract(name, root, out, fetch, keep_debs, say)
        else:
            say(f"{name} {marker['version']}: extracted before, not fetched again")
        tracks, entries = scan_package(root, name, min_seconds, marker.get("archives", {}), progress)
        log.extend(entries)
        rows.extend(ManifestRow(t.path, split, (name,)) for t in tracks)
        seconds = sum(t.seconds for t in tracks)
        skipped = sum(e.status == "skipped" for e in entries)
        reports.append(PackageReport(name, str(marker["version"]), split, len(tracks), seconds, skipped, reused))
        say(f"{name} {marker['version']} ({split}): {len(tracks)} files, {seconds / 3600:.2f} h, {skipped} skipped")
        progress("packages", done, len(split_of))

    report = CorpusReport(out, targets[0], targets[1], targets[2], tuple(reports))
    _write_log(log, out, report.log)
    if not rows:
        raise MdeError(f"{out}: no usable audio in {', '.join(split_of)} (see {report.log})")
    with atomic_path(report.manifest) as tmp:
        write_manifest(rows, tmp)
    write_bytes_atomic(report.summary, (json.dumps(_summary(report, min_seconds), indent=2) + "\n").encode())
    for split in ("valid", "test"):
        if report.split_fraction(split) < MIN_HELD_OUT_FRACTION:
            say(f"note: {split} holds {100 * report.split_fraction(split):.1f} % of the hours (under "
                f"{100 * MIN_HELD_OUT_FRACTION:.0f} %); choose other packages with --{split}")
    return report


def apt_download(package: str, folder: Path) -> Path:
    """``apt-get download <package>`` in ``folder`` (no root needed, nothing installed); the .deb's path."""
    _run(["apt-get", "download", package], package, "download", cwd=folder)
    found = sorted(Path(folder).glob(f"{package}_*.deb"))
    if len(found) != 1:
        raise MdeError(f"{package}: apt-get download left {len(found)} {package}_*.deb files in {folder}, expected 1")
    return found[0]


def local_debs(folder: Path) -> Downloader:
    """A downloader that takes each package's .deb from ``folder`` (searched recursively, so a mirror's
    ``pool/`` works); a package without one, or with several, is an MdeError."""

    def find(package: str, _tmp: Path) -> Path:
        found = sorted(p for p in Path(folder).rglob(f"{package}_*.deb") if p.is_file())
        if not found:
            raise MdeError(f"{package}: no {package}_*.deb under {folder}")
        if len(found) > 1:
            raise MdeError(f"{package}: {len(found)} .deb files under {folder} "
                           f"({', '.join(p.name for p in found[:3])}); leave one")
        return found[0]

    return find


def deb_fields(deb: Path, package: str) -> dict[str, str]:
    """The Package and Version fields of ``deb`` (``dpkg-deb -f``); MdeError if it holds another package."""
    text = _run(["dpkg-deb", "-f", str(deb), "Package", "Version"], package, "reading the control fields")
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    if fields.get("Package") != package:
        raise MdeError(f"{deb}: holds package {fields.get('Package')!r}, not {package!r}")
    if not fields.get("Version"):
        raise MdeError(f"{deb}: no Version field")
    return fields


def read_marker(root: Path) -> dict | None:
    """The marker of a finished extraction in ``root`` (package, version, deb, archives), or None."""
    try:
        marker = json.loads((root / MARKER_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and "version" in marker else None


def scan_package(
    root: Path, package: str, min_seconds: float, archives: dict | None = None, on_progress: Progress | None = None,
) -> tuple[list[Track], list[LogEntry]]:
    """The usable audio files under ``root`` (sorted by path) and a log entry for every file.

    A file whose suffix is in :data:`CANDIDATE_SUFFIXES` is opened with :func:`mde.audio.open_audio`; its
    length is the header's frame count over its rate. It is skipped, with the reason, when it does not
    open (not decodable, damaged, truncated) or is shorter than ``min_seconds``. Other files and symbolic
    links are ignored (logged). ``archives``: the marker's record of unpacked archives, logged as such.
    """
    files = sorted(p for p in _walk(root) if p.name != MARKER_NAME)
    candidates = [p for p in files if p.suffix.lower() in CANDIDATE_SUFFIXES and not p.is_symlink()]
    tracks: list[Track] = []
    entries = [LogEntry(package, root / rel, "unpacked", None, note) for rel, note in sorted((archives or {}).items())]
    stage = f"{package} files"
    if on_progress:
        on_progress(stage, 0, len(candidates))
    done = 0
    for path in files:
        if path.is_symlink():
            entries.append(LogEntry(package, path, "ignored", None, "a symbolic link"))
            continue
        if path.suffix.lower() not in CANDIDATE_SUFFIXES:
            entries.append(LogEntry(package, path, "ignored", None, f"not an audio suffix ({path.suffix or 'none'})"))
            continue
        seconds, reason = _probe(path, min_seconds)
        if reason:
            entries.append(LogEntry(package, path, "skipped", seconds, reason))
        else:
            assert seconds is not None
            tracks.append(Track(path, seconds))
            entries.append(LogEntry(package, path, "ok", seconds, ""))
        done += 1
        if on_progress:
            on_progress(stage, done, len(candidates))
    return tracks, entries


def _probe(path: Path, min_seconds: float) -> tuple[float | None, str]:
    """(seconds from the header, '' if usable else why it is skipped)."""
    try:
        with open_audio(path) as f:
            frames, rate = int(f.frames), int(f.samplerate)
    except AudioError as e:
        message = str(e)
        prefix = f"{path}: "
        return None, message[len(prefix):] if message.startswith(prefix) else message
    except OSError as e:
        return None, f"cannot read ({e.strerror or e})"
    if frames <= 0:
        return 0.0, "the header announces no audio frames"
    seconds = frames / rate
    if seconds < min_seconds:
        return seconds, f"shorter than {min_seconds:g} s ({seconds:.2f} s)"
    return seconds, ""


def _fetch_and_extract(
    name: str, root: Path, out: Path, fetch: Downloader, keep_debs: bool, say: Callable[[str], None],
) -> dict:
    """Get ``name``'s .deb (a kept one in out/debs first), extract it to ``root`` and write its marker."""
    kept = sorted((out / KEPT_DEBS_FOLDER).glob(f"{name}_*.deb"))
    with tempfile.TemporaryDirectory(prefix=_DOWNLOAD_PREFIX, dir=out) as tmp_name:
        tmp = Path(tmp_name)
        if kept:
            deb = kept[-1]
            say(f"{name}: extracting the kept {deb.name}")
        else:
            say(f"{name}: fetching")
            deb = Path(fetch(name, tmp))
            if not deb.is_file():
                raise MdeError(f"{name}: the download gave no file at {deb}")
        fields = deb_fields(deb, name)
        marker = extract_deb(deb, root, name, fields["Version"])
        if keep_debs and not kept and deb.resolve().is_relative_to(tmp.resolve()):
            (out / KEPT_DEBS_FOLDER).mkdir(exist_ok=True)
            os.replace(deb, out / KEPT_DEBS_FOLDER / deb.name)
    return marker


def extract_deb(deb: Path, root: Path, package: str, version: str) -> dict:
    """``dpkg-deb -x`` ``deb`` into ``root`` (replacing it), unpack its audio archives, write the marker.

    The package is extracted into a hidden sibling folder that is renamed to ``root`` after the marker is
    written, so ``root`` never holds a part of a package. Returns the marker.
    """
    partial = root.with_name(f".{root.name}{_PARTIAL_SUFFIX}")
    shutil.rmtree(partial, ignore_errors=True)
    _run(["dpkg-deb", "-x", str(deb), str(partial)], package, "extraction")
    archives = {os.fspath(path.relative_to(partial)) + UNPACKED_SUFFIX: note
                for path, note in _unpack_archives(partial)}
    marker = {"package": package, "version": version, "deb": deb.name, "archives": archives}
    write_bytes_atomic(partial / MARKER_NAME, (json.dumps(marker, indent=2) + "\n").encode())
    if root.exists():
        shutil.rmtree(root)
    os.replace(partial, root)
    return marker


def _unpack_archives(root: Path) -> list[tuple[Path, str]]:
    """Unpack the audio members of every .pk3 under ``root`` into ``<archive>.unpacked/`` and remove the
    archive; returns (archive, note) per archive. A member whose path would leave its folder is left out."""
    notes = []
    for archive in sorted(p for p in _walk(root) if p.suffix.lower() in ARCHIVE_SUFFIXES and not p.is_symlink()):
        target = archive.with_name(archive.name + UNPACKED_SUFFIX)
        try:
            with zipfile.ZipFile(archive) as z:
                members = [m for m in z.infolist()
                           if not m.is_dir() and PurePosixPath(m.filename).suffix.lower() in CANDIDATE_SUFFIXES]
                unsafe = [m for m in members if _unsafe_member(m.filename)]
                for member in members:
                    if member not in unsafe:
                        z.extract(member, target)
        except (zipfile.BadZipFile, OSError) as e:
            notes.append((archive, f"not a readable zip archive ({e}); left as it is"))
            continue
        if not members:
            shutil.rmtree(target, ignore_errors=True)
            notes.append((archive, "no audio inside; left as it is"))
            continue
        archive.unlink()
        left = f", {len(unsafe)} with unsafe paths left out" if unsafe else ""
        notes.append((archive, f"{len(members) - len(unsafe)} audio file(s) of {archive.name} unpacked here{left}; "
                               "archive removed"))
    return notes


def _unsafe_member(name: str) -> bool:
    path = PurePosixPath(name.replace("\\", "/"))
    return path.is_absolute() or ".." in path.parts


def _walk(root: Path) -> Iterable[Path]:
    """Every non-directory under ``root`` (symbolic links included, not followed)."""
    for folder, dirs, names in os.walk(root):
        dirs.sort()
        for name in names:
            yield Path(folder, name)


def _run(cmd: list[str], package: str, what: str, cwd: Path | None = None) -> str:
    """Run ``cmd``; its stdout, or MdeError in one line naming the package, the tool and its last error."""
    tool = cmd[0]
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, errors="replace",
                              stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        hint = {"apt-get": "install apt, or pass --debs DIR with the .deb files",
                "dpkg-deb": "install dpkg (it unpacks .deb files)"}.get(tool, "install it")
        raise MdeError(f"{package}: {tool} not found ({hint})") from None
    if proc.returncode != 0:
        raise MdeError(f"{package}: {what} failed: {tool} exited with {proc.returncode}: {_last_error(proc)}")
    return proc.stdout


def _last_error(proc: subprocess.CompletedProcess) -> str:
    """The tool's last 'E:' line (apt's errors; its warnings may come after), else its last stderr line."""
    lines = [line.strip() for line in (proc.stderr or "").splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("E:")]
    return (errors or lines or ["no message"])[-1]


def _remove_leftovers(out: Path, extract: Path) -> None:
    """Remove download folders and partial extractions that a killed run left (only those this module names)."""
    for path in [*out.glob(f"{_DOWNLOAD_PREFIX}*"), *extract.glob(f".*{_PARTIAL_SUFFIX}")]:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)


def _unique(names: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(name.strip() for name in names if name.strip()))


def _relative(path: Path, out: Path) -> str:
    try:
        return path.relative_to(out).as_posix()
    except ValueError:
        return os.fspath(path)


def _write_log(entries: list[LogEntry], out: Path, target: Path) -> None:
    with atomic_path(target) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        writer.writerow(LOG_COLUMNS)
        for e in entries:
            writer.writerow((e.package, _relative(e.path, out), e.status,
                             "" if e.seconds is None else f"{e.seconds:.3f}", e.reason))


def _summary(report: CorpusReport, min_seconds: float) -> dict:
    total = report.hours
    packages = {
        p.name: {"version": p.version, "split": p.split, "files": p.files, "skipped": p.skipped,
                 "seconds": round(p.seconds, 3), "hours": round(p.hours, 4)}
        for p in report.packages
    }
    splits = {}
    for split in ("train", "valid", "test"):
        members = [p for p in report.packages if p.split == split]
        hours = sum(p.seconds for p in members) / 3600.0
        splits[split] = {"packages": [p.name for p in members], "files": sum(p.files for p in members),
                         "hours": round(hours, 4), "fraction": round(hours / total, 4) if total else 0.0}
    return {
        "source": "Debian game-soundtrack packages (apt-get download, dpkg-deb -x)",
        "min_seconds": min_seconds,
        "manifest": MANIFEST_NAME,
        "log": LOG_NAME,
        "packages": packages,
        "splits": splits,
        "totals": {"packages": len(report.packages), "files": report.files,
                   "skipped": sum(p.skipped for p in report.packages),
                   "seconds": round(sum(p.seconds for p in report.packages), 3), "hours": round(total, 4)},
    }
