"""``mde synth`` says which engine renders the corpus and shows its progress on stderr."""

from __future__ import annotations

from test_cli import run_mde

from mde.trainer.data import synth_fluidsynth
from mde.trainer.data.synth import describe_engine, synthesize_corpus


def test_synth_names_its_engine_and_reports_each_clip(tmp_path):
    seen: list[int] = []
    names: list[str] = []
    synthesize_corpus(tmp_path / "c", 3, seconds=0.5, engine="numpy", announce=names.append, on_clip=seen.append)
    assert names == ["numpy"] and seen == [1, 2, 3]
    proc = run_mde("synth", "--out", tmp_path / "cli", "--n", "3", "--seconds", "0.5", "--engine", "numpy",
                   cwd=tmp_path, home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert lines[0] == "synthesizing 3 clips with numpy ..."
    assert any(line.startswith("clips") and "3/3" in line for line in lines)  # the progress bar's last state


def test_the_fluidsynth_engine_is_named_with_its_soundfont(tmp_path):
    found = synth_fluidsynth.find_fluidsynth()
    assert describe_engine(("fluidsynth", tmp_path / "TimGM6mb.sf2")) == "FluidSynth (TimGM6mb.sf2)"
    if found is not None:
        proc = run_mde("synth", "--out", tmp_path / "cli", "--n", "1", "--seconds", "0.5", cwd=tmp_path, home=tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert proc.stderr.splitlines()[0] == f"synthesizing 1 clips with FluidSynth ({found[1].name}) ..."


def test_a_bad_argument_stays_one_line(tmp_path):
    proc = run_mde("synth", "--out", tmp_path / "x", "--n", "0", cwd=tmp_path, home=tmp_path)
    assert proc.returncode == 1 and proc.stderr.strip().splitlines() == [
        "mde: error: the corpus needs at least one clip, got n=0"]
