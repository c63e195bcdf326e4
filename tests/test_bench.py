"""``mde bench``: each suite in quick mode writes JSON + Markdown + PNG naming the machine and command, its
ratios follow from its medians, FLOPs and the CPU peak are derived correctly, bad arguments give one line.

No timing is asserted: only what a bug in the bookkeeping would break.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
from test_cli import assert_one_line_error, run_mde

from mde.bench import suites
from mde.bench.flops import count_flops, cpu_peak
from mde.bench.report import Column, Timing, write_results

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _load(out: Path, suite: str) -> dict:
    """The suite's JSON, after checking that its Markdown and PNG exist and name the command."""
    record = json.loads((out / f"bench_{suite}_cpu.json").read_text())
    markdown = (out / f"bench_{suite}_cpu.md").read_text()
    assert (out / f"bench_{suite}_cpu.png").read_bytes().startswith(PNG_MAGIC)
    assert record["png"] == f"bench_{suite}_cpu.png"
    assert f"bench {suite}" in record["command"] and "--quick" in record["command"]
    assert record["machine"]["cpu"] and record["machine"]["cores"] >= 1
    assert record["machine"]["versions"]["numpy"]
    assert f"Command: `{record['command']}`" in markdown and "Machine: " in markdown
    for row in record["results"]:
        assert f"| {row['name']} |" in markdown
    return record


def _check_ratios(record: dict) -> dict[str, dict]:
    """Every ratio is the row's median over its reference row's median; returns the rows by name."""
    rows = {row["name"]: row for row in record["results"]}
    for row in rows.values():
        reference = rows[row["reference"]]
        assert row["ratio_to_ours"] == pytest.approx(row["median_s"] / reference["median_s"], rel=2e-3, abs=1e-3)
        assert row["min_s"] <= row["median_s"] <= row["max_s"]
    return rows


def test_frontend_quick(tmp_path):
    out = tmp_path / "results"
    proc = run_mde("bench", "frontend", "--quick", "--threads", "2", "--out", out, cwd=tmp_path, home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    record = _load(out, "frontend")
    rows = _check_ratios(record)
    groups = {(row["clip_s"], row["threads"]) for row in rows.values()}
    assert groups == {(0.5, 1), (0.5, 2), (3.7, 1), (3.7, 2)}
    for row in rows.values():
        assert row["runs"] == record["rounds"] == 3
        ours = rows[row["reference"]]
        assert ours["method"] == "ours (C kernel)"
        assert (ours["clip_s"], ours["threads"]) == (row["clip_s"], row["threads"])
        assert row["x_real_time"] == pytest.approx(row["clip_s"] / row["median_s"], rel=1e-2)
    methods = {row["method"] for row in rows.values()}
    assert {"ours (C kernel)", "torch.stft", "librosa"} <= methods
    if importlib.util.find_spec("torchaudio") is None:
        assert "torchaudio" not in methods and "not installed" in record["skipped"]["torchaudio"]
    assert all(delta < 0.05 for delta in record["agreement_db"].values())


def test_models_quick_on_the_tiny_model(tmp_path, mde_home, tiny_model):
    out = tmp_path / "results"
    proc = run_mde("bench", "models", "--quick", "--models", tiny_model, "--threads", "1", "--out", out,
                   cwd=tmp_path, home=mde_home)
    assert proc.returncode == 0, proc.stderr
    record = _load(out, "models")
    rows = _check_ratios(record)
    assert {row["batch"] for row in rows.values()} == {1, 2}
    for row in rows.values():
        assert row["reference"].endswith(": ORT fp32") and row["reference"].startswith(f"tiny 0.5 s x{row['batch']}")
        # the tiny graph: one (batch, 16) x (16, 3) MatMul, and no convolution
        assert row["flops"] == 2 * row["batch"] * 16 * 3
        assert row["gflops_per_s"] == pytest.approx(row["flops"] / row["median_s"] / 1e9, rel=1e-2, abs=0.06)
        assert row["x_real_time"] == pytest.approx(row["batch"] * 0.5 / row["median_s"], rel=1e-2)
    paths = {row["path"] for row in rows.values()}
    assert {"ORT fp32", "torch eager", "ORT fp16"} <= paths
    assert "ORT int8" in paths or "tiny ORT int8" in record["skipped"]
    assert record["peak_gflops"]["fp32"] > 0 and "cpu MHz" in record["peak_source"]["fp32"]
    assert "cpu MHz" in (out / "bench_models_cpu.md").read_text()


def test_e2e_quick_on_real_files(tmp_path, mde_home, tiny_model, shared_data, monkeypatch):
    monkeypatch.setenv("MDE_TEST_DATA", str(shared_data))  # an installed mde cannot look beside a checkout
    out = tmp_path / "results"
    proc = run_mde("bench", "e2e", "--quick", "--models", tiny_model, "--out", out, cwd=tmp_path, home=mde_home)
    assert proc.returncode == 0, proc.stderr
    record = _load(out, "e2e")
    rows = _check_ratios(record)
    mp3s = sorted(p.stem for p in (shared_data / "audio").glob("*.mp3"))
    assert sorted(Path(f).stem for f in record["files"]) == sorted(
        [f"{stem}-0" for stem in mp3s] + [f"{stem}_vorbis-0" for stem in mp3s])
    assert {Path(f).suffix for f in record["files"]} == {".mp3", ".ogg"}
    cores = len(os.sched_getaffinity(0))
    assert cores > 1, "this test expects a machine of 2 cores or more (CI has 2)"
    assert sorted((row["cpus"], row["workers"]) for row in rows.values()) == [(1, 1), (cores, 1), (cores, 2)]
    one_core = next(name for name, row in rows.items() if row["cpus"] == 1)
    assert {row["reference"] for row in rows.values()} == {one_core}  # the others' ratios are their scaling
    floor = rows[one_core]["floor_decode_s"] + rows[one_core]["floor_resample_s"] + rows[one_core]["floor_model_s"]
    assert all(rows[one_core][f"floor_{part}_s"] > 0 for part in ("decode", "resample", "model"))
    for row in rows.values():  # each row's floor: the 1-core floor over its cores
        assert row["floor_s"] == pytest.approx(floor / row["cpus"], abs=2e-3)
        assert row["over_floor"] == pytest.approx(row["median_s"] / row["floor_s"], rel=1e-2)
    for row in rows.values():
        assert row["files_per_s"] == pytest.approx(len(record["files"]) / row["median_s"], rel=1e-2)
        assert row["x_real_time"] == pytest.approx(record["audio_seconds"] / row["median_s"], rel=1e-2)
        assert row["peak_rss_mb"] > 10
        assert (row["worker_peak_rss_mb"] or 0) > 10 if row["workers"] == 2 else row["worker_peak_rss_mb"] is None
    assert "seed pipeline FCN29 (torch eager)" in record["skipped"]


def test_stream_quick(tmp_path, musicnn_home):
    out = tmp_path / "results"
    proc = run_mde("bench", "stream", "--quick", "--seconds", "5", "--out", out, cwd=tmp_path, home=musicnn_home)
    assert proc.returncode == 0, proc.stderr
    record = _load(out, "stream")
    rows = {row["name"]: row for row in record["results"]}
    assert sorted(rows) == ["0.5 s window, hop 0.496 s", "3.7 s window, hop 0.992 s"]
    assert "29 s window" in " ".join(record["skipped"])  # no 29 s window fits in 5 s of audio
    assert rows["0.5 s window, hop 0.496 s"]["frames"] == int((5 - 0.5) / 0.496) + 1
    for row in rows.values():
        assert row["min_s"] <= row["median_s"] <= row["max_s"] and row["runs"] == row["frames"]
        assert row["median_s"] * 1e3 <= row["p99_ms"] <= row["max_s"] * 1e3 + 1e-6
    assert record["audio_seconds"] == pytest.approx(5.0, abs=0.01) and 0 < record["cpu_load"] <= 1.05


@pytest.mark.parametrize("args, fragment", [
    (["frontend", "--device", "tpu"], "unknown device 'tpu'"),
    (["models", "--threads", "0"], "--threads must be at least 1"),
    (["frontend", "--quick", "--rounds", "0"], "--rounds must be at least 1"),
    (["e2e", "--audio", "no-such-folder"], "no such folder"),
    (["models", "--quick", "--models", "no-such-model"], "no-such-model"),
])
def test_bad_arguments_give_one_line(tmp_path, args, fragment):
    assert_one_line_error(run_mde("bench", *args, cwd=tmp_path, home=tmp_path), fragment)


def test_cuda_without_a_device_is_one_line(tmp_path):
    if suites.cuda_available():
        pytest.skip("a CUDA device is present")
    proc = run_mde("bench", "frontend", "--device", "cuda", "--out", tmp_path, cwd=tmp_path, home=tmp_path)
    assert_one_line_error(proc, "no CUDA device")
    assert not list(tmp_path.glob("bench_*"))


def test_search_quick(tmp_path):
    out = tmp_path / "results"
    proc = run_mde("bench", "search", "--quick", "--rounds", "50", "--out", out, cwd=tmp_path, home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    record = _load(out, "search")
    [row] = record["results"]
    assert (row["vectors"], row["kind"], row["runs"], row["recall_at_10"]) == (10_000, "flat", 50, 1.0)
    assert row["p50_ms"] <= row["p99_ms"] and row["index_mb"] == pytest.approx(10_000 * 200 * 4 / 1e6, rel=1e-3)
    assert record["goal"] == {"vectors": 1_000_000, "p99_ms": 10.0, "recall_at_10": 0.95}
    assert "Goal: p99 < 10 ms at 1,000,000 vectors with recall@10 >= 0.95: not measured" in (
        out / "bench_search_cpu.md").read_text()


@pytest.mark.parametrize(
    "command", ["bench", "bench frontend", "bench models", "bench e2e", "bench stream", "bench search", "bench all"]
)
def test_every_bench_option_is_explained(tmp_path, command):
    proc = run_mde(*command.split(), "--help", cwd=tmp_path, home=tmp_path)
    assert proc.returncode == 0
    for line in proc.stdout.splitlines():
        match = re.search(r"(--[a-z][a-z-]+)", line)
        if match and match.group(1) != "--help" and "│" in line:
            assert line.split(match.group(1), 1)[1].strip(" │"), f"{match.group(1)} has no help in: {line}"


def test_registering_the_cli_imports_no_torch_or_matplotlib(tmp_path):
    import subprocess
    import sys

    code = ("import sys; from mde.cli.app import _register_commands; _register_commands(); "
            "print(sorted(m for m in ('torch', 'matplotlib', 'librosa', 'onnx') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]"


def test_all_runs_the_suite_list_in_order(monkeypatch, tmp_path):
    calls = []

    def fake(name):
        return lambda settings: calls.append((name, settings.out)) or name

    monkeypatch.setattr(suites, "suite_function", fake)
    settings = suites.BenchSettings(out=tmp_path, announce=lambda message: None)
    assert suites.run_all(settings) == suites.ALL_SUITES
    assert calls == [(name, tmp_path) for name in suites.ALL_SUITES]
    assert set(suites.ALL_SUITES) <= set(suites.SUITES)
    with pytest.raises(suites.MdeError, match="unknown device"):
        suites.run_all(suites.BenchSettings(out=tmp_path, device="tpu"))
    assert len(calls) == len(suites.ALL_SUITES)  # nothing ran with bad settings


def test_write_results_extra_columns_and_references(tmp_path):
    timings = [Timing("a ours", 0.002, 0.001, 0.003, 5), Timing("a base", 0.006, 0.005, 0.007, 5),
               Timing("b ours", 0.010, 0.009, 0.011, 5), Timing("b base", 0.005, 0.004, 0.006, 5)]
    references = {"a base": "a ours", "b base": "b ours", "a ours": "a ours", "b ours": "b ours"}
    json_path, md_path = write_results(
        tmp_path / "r", "title", timings, None, {}, references=references,
        metrics={"a base": {"speed": 12.345}}, columns=[Column("speed", "speed (x)", ".1f")], ratio_heading="t / ours",
    )
    rows = {row["name"]: row for row in json.loads(json_path.read_text())["results"]}
    assert rows["a base"]["ratio_to_ours"] == 3.0 and rows["b base"]["ratio_to_ours"] == 0.5
    assert rows["a base"]["reference"] == "a ours" and rows["a base"]["speed"] == 12.345
    text = md_path.read_text()
    assert "| t / ours | speed (x) |" in text and "| 3.00x | 12.3 |" in text and "| 0.50x | - |" in text


def test_write_results_keeps_the_old_table(tmp_path):
    timings = [Timing("ours", 0.001, 0.001, 0.001, 1), Timing("them", 0.004, 0.004, 0.004, 1)]
    json_path, md_path = write_results(tmp_path / "r", "title", timings, "ours", {"k": 1})
    record = json.loads(json_path.read_text())
    assert [row["ratio_to_ours"] for row in record["results"]] == [1.0, 4.0] and record["k"] == 1
    assert "reference" not in record["results"][0]
    header = "| what | median (ms) | min (ms) | max (ms) | runs | time / ours |\n|---|---:|---:|---:|---:|---:|\n"
    assert header in md_path.read_text()


def test_count_flops_of_conv_and_gemm(tmp_path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.zeros((4, 2, 3, 3), np.float32), "w")
    dense = numpy_helper.from_array(np.zeros((400, 7), np.float32), "d")
    shape = numpy_helper.from_array(np.array([0, -1], np.int64), "shape")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Reshape", ["c", "shape"], ["flat"]),
             helper.make_node("Gemm", ["flat", "d"], ["y"]),
             helper.make_node("Relu", ["y"], ["out"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 2, 10, 10])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["n", 7])],
                              initializer=[weight, dense, shape])
    path = tmp_path / "g.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    conv_macs = 4 * 10 * 10 * (2 * 3 * 3)  # per example: outputs x (C_in x kernel)
    gemm_macs = 400 * 7
    assert count_flops(path, (3, 2, 10, 10)) == 2 * 3 * (conv_macs + gemm_macs)


CPUINFO = "processor\t: 0\nvendor_id\t: {vendor}\ncpu MHz\t\t: 2500.000\nflags\t\t: fpu sse2 {flags}\n"


@pytest.mark.parametrize("vendor, flags, lanes", [
    ("AuthenticAMD", "avx avx2 fma avx512f", 8),
    ("GenuineIntel", "avx avx2 fma avx512f", 16),
    ("GenuineIntel", "avx avx2 fma", 8),
    ("GenuineIntel", "avx", 4),
])
def test_cpu_peak_from_cpuinfo(vendor, flags, lanes):
    peak = cpu_peak(2, CPUINFO.format(vendor=vendor, flags=flags))
    assert peak.gflops == pytest.approx(2 * lanes * 2 * 2.5 * 2)
    assert "cpu MHz" in peak.source and f"{lanes} float32 lanes" in peak.source


def test_cpu_peak_without_a_clock():
    assert cpu_peak(1, "flags: avx2 fma\n").gflops is None
