"""``mde stream --mic`` on a real audio device: a private PulseAudio server with a null sink.

A real clip is played into the sink with paplay and captured from the sink's monitor through
PortAudio (sounddevice, ALSA's pulse plugin), exactly as a microphone is. CI installs pulseaudio,
pulseaudio-utils and libportaudio2 from Debian; elsewhere the test skips when they are missing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator

import numpy as np
import pytest
from conftest import MTAT_CLIP, store_at
from test_cli import assert_one_line_error

SINK = "mde_test_sink"


def _portaudio_available() -> bool:
    try:
        import sounddevice  # noqa: F401
    except (ImportError, OSError):
        return False
    return True


@pytest.fixture(scope="module")
def pulse_env(tmp_path_factory) -> Iterator[dict[str, str]]:
    """Environment variables that point PulseAudio clients at a private server with a null sink."""
    if not (shutil.which("pulseaudio") and shutil.which("paplay") and _portaudio_available()):
        pytest.skip("needs pulseaudio, paplay and PortAudio (apt install pulseaudio pulseaudio-utils libportaudio2)")
    runtime = tmp_path_factory.mktemp("pulse")
    env = {**os.environ, "PULSE_RUNTIME_PATH": str(runtime), "HOME": str(runtime),
           "PULSE_SERVER": f"unix:{runtime}/native", "PULSE_SOURCE": f"{SINK}.monitor", "PULSE_SINK": SINK}
    server = subprocess.Popen(
        ["pulseaudio", "-n", "--daemonize=no", "--exit-idle-time=-1", "--disallow-exit",
         "--load=module-native-protocol-unix", f"--load=module-null-sink sink_name={SINK} rate=44100"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 15
    while subprocess.run(["pactl", "info"], env=env, capture_output=True).returncode != 0:
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            pytest.fail(f"PulseAudio did not start: {server.stderr.read().decode()[-500:]}")
        time.sleep(0.1)
    yield env
    server.terminate()
    server.wait(timeout=10)


def test_list_devices_shows_the_pulse_capture_device(pulse_env, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "mde", "stream", "--list-devices"], env=pulse_env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "pulse" in proc.stdout


def test_mic_frames_arrive_at_real_time_pace_with_the_offline_tags(pulse_env, musicnn_home, shared_data, tmp_path):
    from mde.runtime.extractor import load_model

    seconds = 12.0
    env = {**pulse_env, "MDE_HOME": str(musicnn_home)}
    launched = time.monotonic()  # before the stream's clock starts
    stream = subprocess.Popen(
        [sys.executable, "-m", "mde", "stream", "--mic", "--input-device", "pulse", "--duration", str(seconds),
         "--scales", "0.5,3.7", "--hop", "0.5:0.5,3.7:1", "--jsonl", "-", "--no-view"],
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    player = None
    arrivals, rows = [], []
    try:
        assert stream.stdout is not None
        for line in stream.stdout:
            if player is None:  # capture is running: the first frame is out; start the music
                player = subprocess.Popen(["paplay", f"--device={SINK}", str(shared_data / MTAT_CLIP)], env=env)
            arrivals.append(time.monotonic())
            rows.append(json.loads(line))
        stream.wait(timeout=60)
    finally:
        if player is not None:
            player.kill()
            player.wait()
    stderr = stream.stderr.read() if stream.stderr else ""
    assert stream.returncode == 0, stderr
    assert "audio dropped 0.00 s" in stderr and " 0 dropped" in stderr

    # Real-time pace: the 0.5 s frames come out as the audio arrives, not in a burst. A busy machine only
    # delays frames, so both checks hold however loaded it is: no frame comes out before its audio can have
    # been captured (less 0.25 s for the device's buffering), and the frames spread over most of the
    # audio's span (with nothing dropped, no frame waited behind more than a few others).
    short = [(r["timestamp"], a) for r, a in zip(rows, arrivals) if r["scale"] == 0.5]
    assert len(short) >= int(seconds / 0.5) - 2
    t = np.array([s[0] for s in short])
    wall = np.array([s[1] for s in short])
    assert np.all(np.diff(t) > 0)
    assert np.all(wall - launched >= t + 0.5 - 0.25)
    assert wall[-1] - wall[0] >= 0.5 * (t[-1] - t[0])

    # What was heard is the clip: the tags of the captured 3.7 s windows that hold music match offline.
    with store_at(musicnn_home):
        offline = load_model("MTT_musicnn", threads=1).embed(shared_data / MTAT_CLIP, window=3.7, hop=1)
    heard = [r for r in rows if r["scale"] == 3.7]
    assert len(heard) >= 5
    live = heard[-4:]  # the last windows are full of music
    live_mean = _mean_tags(live)
    offline_mean = dict(zip(offline.tag_names, offline.tags[:10].mean(axis=0)))
    top_live = sorted(live_mean, key=live_mean.get, reverse=True)[:3]
    top_offline = sorted(offline_mean, key=offline_mean.get, reverse=True)[:5]
    assert len(set(top_live) & set(top_offline)) >= 2, (top_live, top_offline)


def _mean_tags(rows: list[dict]) -> dict[str, float]:
    """Mean probability per tag over frames, counting a tag missing from a frame's top-k as 0."""
    totals: dict[str, float] = {}
    for row in rows:
        for name, p in row["top_tags"]:
            totals[name] = totals.get(name, 0.0) + p / len(rows)
    return totals


def test_mic_errors_are_one_line(pulse_env, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "mde", "stream", "--mic", "--input-device", "no such device"],
                          env=pulse_env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert_one_line_error(proc, "no capture device")
