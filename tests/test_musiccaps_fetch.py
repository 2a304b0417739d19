"""MusicCaps fetcher (evalkit.data.musiccaps): a fake yt-dlp plays every case a real download meets."""
from __future__ import annotations

import csv
import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from evalkit.data import musiccaps as mc
from evalkit.data.prompts import load_musiccaps, select
from evalkit.data.references import ReferenceSet

REPO = Path(__file__).resolve().parents[1]
TABLE_COLUMNS = ["ytid", "start_s", "end_s", "audioset_positive_labels", "aspect_list", "caption", "author_id",
                 "is_balanced_subset", "is_audioset_eval"]

# ytid -> what the fake downloader does for it (see FAKE below)
CASES = {
    "okStereo441": {"kind": "ok", "sr": 44100, "ch": 2},
    "okMono48000": {"kind": "ok", "sr": 48000, "ch": 1},
    "goneTermin8": {"kind": "error", "msg": "Video unavailable. This video is no longer available because the YouTube "
                                            "account associated with this video has been terminated."},
    "privateVid1": {"kind": "error", "msg": "Private video. Sign in if you've been granted access to this video"},
    "ageGated001": {"kind": "error", "msg": "Sign in to confirm your age. This video may be inappropriate for some users."},
    "botCheck001": {"kind": "error", "msg": "Sign in to confirm you\u2019re not a bot. Use --cookies-from-browser or "
                                            "--cookies for the authentication."},
    "flaky503abc": {"kind": "flaky", "sr": 44100, "ch": 2},
    "hangsForevr": {"kind": "hang"},
    "truncated04": {"kind": "short", "sr": 44100, "ch": 2, "seconds": 4.0},
    "silentClip0": {"kind": "silent", "sr": 48000, "ch": 2},
}

FAKE = r'''#!{python}
"""Fake yt-dlp: parses the options evalkit passes, logs the call, and acts out the case of the requested id."""
import json, os, subprocess, sys, time
SPEC, LOG, STATE = {spec!r}, {log!r}, {state!r}
argv = sys.argv[1:]
def opt(name):
    return argv[argv.index(name) + 1]
for flag in ("--ignore-config", "-x", "--force-keyframes-at-cuts", "--no-playlist", "--"):
    if flag not in argv:
        print("ERROR: fake yt-dlp: missing option " + flag, file=sys.stderr); sys.exit(2)
if opt("--audio-format") != "wav" or not opt("-f").startswith("bestaudio"):
    print("ERROR: fake yt-dlp: wrong format options", file=sys.stderr); sys.exit(2)
url = argv[argv.index("--") + 1]
ytid = url.split("watch?v=", 1)[1]
section = opt("--download-sections")
assert section.startswith("*"), section
start, end = (float(x) for x in section[1:].split("-"))
template = opt("-o")
with open(LOG, "a") as fh:
    fh.write(json.dumps({{"ytid": ytid, "section": section, "template": template}}) + "\n")
case = json.load(open(SPEC))[ytid]
kind = case["kind"]
counter = os.path.join(STATE, ytid + ".count")
n = int(open(counter).read()) + 1 if os.path.exists(counter) else 1
open(counter, "w").write(str(n))
print("[youtube] Extracting URL: " + url)
if kind == "error":
    print("ERROR: [youtube] %s: %s" % (ytid, case["msg"]), file=sys.stderr); sys.exit(1)
if kind == "flaky" and n == 1:
    print("ERROR: unable to download video data: HTTP Error 503: Service Unavailable", file=sys.stderr); sys.exit(1)
if kind == "hang":
    child = subprocess.Popen(["sleep", "300"])
    open(os.path.join(STATE, ytid + ".child"), "w").write(str(child.pid))
    time.sleep(300)
if kind == "slow":  # ffmpeg mid-conversion: yt-dlp's FFmpegExtractAudioPP writes straight to <name>.wav
    partial = template.replace("%(ext)s", "wav")
    open(partial, "wb").write(b"RIFF\x00\x00\x00\x00WAVEfmt " + bytes(1000))
    open(os.path.join(STATE, ytid + ".started"), "w").write(str(os.getpid()))
    time.sleep(case["sleep"])
    os.remove(partial)
import numpy as np, soundfile as sf
out = template.replace("%(ext)s", "wav")
open(template.replace("%(ext)s", "webm.part"), "wb").write(b"partial")  # yt-dlp's intermediate file
sr, ch = case.get("sr", 44100), case.get("ch", 2)
frames = int(round(case.get("seconds", end - start) * sr))
t = np.arange(frames) / sr
x = 0.3 * np.sin(2 * np.pi * 440.0 * t)
if kind == "silent":
    x = np.zeros(frames)
sf.write(out, np.repeat(x[:, None], ch, axis=1), sr, subtype="PCM_16")
os.remove(template.replace("%(ext)s", "webm.part"))
'''


def write_table(path: Path, ids, start: float = 30.0, end: float = 40.0) -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(TABLE_COLUMNS)
        for i, ytid in enumerate(ids):
            w.writerow([ytid, start, end, "/m/04rlf", "['piano']", f"caption {i} of {ytid}", 1, i % 2 == 0, True])
    return path


class Fake:
    def __init__(self, root: Path, cases: dict):
        self.root = root
        self.spec, self.log, self.state = root / "spec.json", root / "calls.log", root / "state"
        self.state.mkdir(parents=True, exist_ok=True)
        self.set_cases(cases)
        self.exe = root / "yt-dlp"
        self.exe.write_text(FAKE.format(python=sys.executable, spec=str(self.spec), log=str(self.log), state=str(self.state)))
        self.exe.chmod(self.exe.stat().st_mode | stat.S_IXUSR)

    def set_cases(self, cases: dict) -> None:
        self.spec.write_text(json.dumps(cases))

    def calls(self) -> list[dict]:
        if not self.log.exists():
            return []
        return [json.loads(ln) for ln in self.log.read_text().splitlines()]

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for c in self.calls():
            out[c["ytid"]] = out.get(c["ytid"], 0) + 1
        return out


def rows_by_id(out: Path) -> dict[str, dict]:
    df = mc.read_manifest(out)
    assert list(df.columns) == list(mc.MANIFEST_COLUMNS)
    return {r["ytid"]: r for r in df.to_dict("records")}


def clip_files(out: Path) -> set[str]:
    """What a run would read as clips in ``out``."""
    try:
        return {p.name for p in ReferenceSet.from_dir(out).paths.values()}
    except Exception:  # ReferenceError when the folder holds no clip at all
        return set()


def run_download(out: Path, table: Path, fake: Fake, *extra: str) -> int:
    return mc.main(["download", "--out", str(out), "--table", str(table), "--downloader", str(fake.exe),
                    "--jobs", "4", "--timeout", "2", "--retries", "1", "--backoff", "0.01", "--no-progress", *extra])


def test_download_records_every_case_and_second_run_fetches_only_what_is_missing(tmp_path, capsys):
    fake = Fake(tmp_path / "fake", CASES)
    table = write_table(tmp_path / "musiccaps.csv", list(CASES))
    out = tmp_path / "clips"

    rc = run_download(out, table, fake)
    assert rc == 1  # some failed
    rows = rows_by_id(out)
    assert set(rows) == set(CASES)
    status = {k: r["status"] for k, r in rows.items()}
    assert status == {
        "okStereo441": "ok", "okMono48000": "ok", "flaky503abc": "ok",
        "goneTermin8": "unavailable", "privateVid1": "unavailable", "ageGated001": "unavailable",
        "botCheck001": "failed", "hangsForevr": "failed", "truncated04": "failed", "silentClip0": "failed",
    }
    # ok rows: the file's own rate and channels (no resampling), its sha256, 10 s
    for ytid, sr, ch in [("okStereo441", 44100, 2), ("okMono48000", 48000, 1), ("flaky503abc", 44100, 2)]:
        r = rows[ytid]
        path = out / f"{ytid}.wav"
        info = sf.info(str(path))
        assert (info.samplerate, info.channels, info.frames) == (sr, ch, 10 * sr)
        assert (r["sample_rate"], r["channels"], r["duration_s"]) == (sr, ch, 10.0)
        assert r["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert r["reason"] == "" and r["fetched_at"].endswith("Z")
    # unavailable: YouTube's reason kept, no file, no sha
    assert "account associated with this video has been terminated" in rows["goneTermin8"]["reason"]
    assert "Private video" in rows["privateVid1"]["reason"]
    assert "confirm your age" in rows["ageGated001"]["reason"]
    for ytid in ("goneTermin8", "privateVid1", "ageGated001"):
        assert rows[ytid]["sha256"] == "" and pd_isna(rows[ytid]["sample_rate"])
    # failed, each with its reason; the bot check is transient (retried), not "unavailable"
    assert "not a bot" in rows["botCheck001"]["reason"] and "after 2 attempts" in rows["botCheck001"]["reason"]
    assert rows["hangsForevr"]["reason"].startswith("timeout:") and "--timeout=2 s" in rows["hangsForevr"]["reason"]
    short = rows["truncated04"]
    assert short["reason"].startswith("wrong duration: 4.000 s (176400 frames at 44100 Hz), expected 10 s")
    assert (short["duration_s"], short["sample_rate"], short["channels"], short["sha256"]) == (4.0, 44100, 2, "")
    silent = rows["silentClip0"]
    assert silent["reason"].startswith("silent: peak 0") and silent["duration_s"] == 10.0
    assert (silent["sample_rate"], silent["channels"]) == (48000, 2)
    # attempts: unavailable never retried; failures retried once (--retries 1); the flaky one succeeds on the 2nd
    assert fake.counts() == {"okStereo441": 1, "okMono48000": 1, "goneTermin8": 1, "privateVid1": 1, "ageGated001": 1,
                             "botCheck001": 2, "flaky503abc": 2, "hangsForevr": 2, "truncated04": 2, "silentClip0": 2}
    # the command line: the excerpt and an output template inside the hidden work folder
    for call in fake.calls():
        assert call["section"] == "*30-40"
        assert Path(call["template"]).parent.parent == out.resolve() / mc.WORK_DIR_NAME
        assert Path(call["template"]).name == f"{call['ytid']}.%(ext)s"
    # the timeout killed the downloader's whole process group, its child included
    child = int((fake.state / "hangsForevr.child").read_text())
    alive = _alive(child)
    if alive:
        os.kill(child, signal.SIGKILL)  # leave nothing behind, then fail
    assert not alive
    # the folder: verified clips only; no work folder left
    assert clip_files(out) == {"okStereo441.wav", "okMono48000.wav", "flaky503abc.wav"}
    assert not (out / mc.WORK_DIR_NAME).exists()
    printed = capsys.readouterr().out.strip().splitlines()[-1]
    ident = mc.reference_set_identity(out)
    assert printed == (f"musiccaps: 3 ok, 3 unavailable, 4 failed of 10 (manifest {out.resolve() / 'manifest.csv'}, "
                       f"sha256 {ident['manifest_sha256'][:12]}...)")
    assert ident == {"manifest": str(out / "manifest.csv"),
                     "manifest_sha256": hashlib.sha256((out / "manifest.csv").read_bytes()).hexdigest(),
                     "n_ok": 3, "n_failed": 4, "n_unavailable": 3, "n_missing": 0}
    ok_sha = {k: rows[k]["sha256"] for k in ("okStereo441", "okMono48000", "flaky503abc")}

    # second run: the hanging video came back; only failed ids are fetched again, ok/unavailable never
    fake.log.unlink()
    cases2 = dict(CASES, hangsForevr={"kind": "ok", "sr": 48000, "ch": 2})
    fake.set_cases(cases2)
    rc = run_download(out, table, fake)
    assert rc == 1
    assert fake.counts() == {"botCheck001": 2, "hangsForevr": 1, "truncated04": 2, "silentClip0": 2}
    rows2 = rows_by_id(out)
    assert rows2["hangsForevr"]["status"] == "ok" and rows2["hangsForevr"]["sample_rate"] == 48000
    assert {k: rows2[k]["sha256"] for k in ok_sha} == ok_sha
    assert [rows2[k]["status"] for k in ("goneTermin8", "privateVid1", "ageGated001")] == ["unavailable"] * 3

    # third run without the manifest: finished files are verified on disk, not fetched again
    (out / "manifest.csv").unlink()
    fake.log.unlink()
    fake.set_cases(dict(cases2, botCheck001={"kind": "ok", "sr": 44100, "ch": 1},
                        truncated04={"kind": "ok", "sr": 44100, "ch": 2}, silentClip0={"kind": "ok", "sr": 48000, "ch": 2}))
    rc = run_download(out, table, fake)
    # unavailable rows were only in the lost manifest, so those ids are tried again (and are still gone)
    assert fake.counts() == {"botCheck001": 1, "truncated04": 1, "silentClip0": 1,
                             "goneTermin8": 1, "privateVid1": 1, "ageGated001": 1}
    assert rc == 0
    rows3 = rows_by_id(out)
    assert {k: rows3[k]["sha256"] for k in ok_sha} == ok_sha
    assert sum(r["status"] == "ok" for r in rows3.values()) == 7
    assert len(clip_files(out)) == 7


def pd_isna(v) -> bool:
    import pandas as pd

    return bool(pd.isna(v))


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in state  # a zombie waiting for its reaper is dead


def test_bad_file_already_in_folder_is_moved_aside_and_fetched(tmp_path):
    fake = Fake(tmp_path / "fake", {"okStereo441": CASES["okStereo441"], "okMono48000": CASES["okMono48000"]})
    table = write_table(tmp_path / "t.csv", ["okStereo441", "okMono48000"])
    out = tmp_path / "clips"
    out.mkdir()
    good = np.repeat((0.2 * np.sin(np.arange(480000) / 10))[:, None], 1, axis=1)
    sf.write(str(out / "okMono48000.flac"), good, 48000)  # a user's finished clip (flac): kept, not fetched
    sf.write(str(out / "okStereo441.wav"), good[:48000], 48000)  # a 1 s leftover: not a finished clip
    assert run_download(out, table, fake) == 0
    assert fake.counts() == {"okStereo441": 1}
    assert clip_files(out) == {"okMono48000.flac", "okStereo441.wav"}
    assert sf.info(str(out / "okStereo441.wav")).frames == 441000
    assert sf.info(str(out / mc.REJECTED_DIR_NAME / "okStereo441.wav")).frames == 48000
    rows = rows_by_id(out)
    assert rows["okMono48000"]["sha256"] == hashlib.sha256((out / "okMono48000.flac").read_bytes()).hexdigest()


def test_sigkill_mid_run_leaves_only_verified_clips_and_next_run_completes(tmp_path):
    ids = ["okStereo441", "okMono48000", "slowOne0001", "slowTwo0002"]
    cases = {"okStereo441": CASES["okStereo441"], "okMono48000": CASES["okMono48000"],
             "slowOne0001": {"kind": "slow", "sleep": 120, "sr": 44100, "ch": 2},
             "slowTwo0002": {"kind": "slow", "sleep": 120, "sr": 48000, "ch": 1}}
    fake = Fake(tmp_path / "fake", cases)
    table = write_table(tmp_path / "t.csv", ids)
    out = tmp_path / "clips"
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "evalkit.data.musiccaps", "download", "--out", str(out), "--table",
                             str(table), "--downloader", str(fake.exe), "--jobs", "4", "--timeout", "200",
                             "--no-progress"], cwd=str(REPO), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            started = [fake.state / f"{i}.started" for i in ("slowOne0001", "slowTwo0002")]
            done = (out / "manifest.csv").exists() and sum(
                r["status"] == "ok" for r in rows_by_id(out).values()) == 2
            if all(p.exists() and p.read_text() for p in started) and done:
                break
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.1)
        else:
            pytest.fail("the fake downloads never started")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        # only verified clips can be read as clips; the partial downloads are inside the hidden work folder
        assert clip_files(out) == {"okStereo441.wav", "okMono48000.wav"}
        partial = sorted(p.name for p in (out / mc.WORK_DIR_NAME).rglob("*.wav"))
        assert partial == ["slowOne0001.wav", "slowTwo0002.wav"]
        assert all(not p.name.endswith((".wav", ".flac", ".mp3", ".ogg")) or p.name.startswith(".")
                   for p in out.iterdir() if p.is_file() and p.stem not in ("okStereo441", "okMono48000"))
        rows = rows_by_id(out)  # the manifest is whole (atomic writes)
        assert {k: r["status"] for k, r in rows.items()} == {"okStereo441": "ok", "okMono48000": "ok",
                                                             "slowOne0001": "missing", "slowTwo0002": "missing"}
        assert mc.reference_set_identity(out)["n_missing"] == 2
    finally:
        if proc.poll() is None:
            proc.kill()
        for started in fake.state.glob("*.started"):  # the orphaned fakes (they outlive the killed CLI, as yt-dlp would)
            try:
                os.killpg(int(started.read_text()), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
    fake.log.unlink()
    fake.set_cases(dict(cases, slowOne0001={"kind": "ok", "sr": 44100, "ch": 2}, slowTwo0002={"kind": "ok", "sr": 48000, "ch": 1}))
    assert run_download(out, table, fake) == 0
    assert fake.counts() == {"slowOne0001": 1, "slowTwo0002": 1}
    assert clip_files(out) == {f"{i}.wav" for i in ids}
    assert {r["status"] for r in rows_by_id(out).values()} == {"ok"}
    assert not (out / mc.WORK_DIR_NAME).exists()


def test_sigterm_kills_running_downloads_and_writes_the_manifest(tmp_path):
    cases = {"okStereo441": CASES["okStereo441"], "slowOne0001": {"kind": "slow", "sleep": 120}}
    fake = Fake(tmp_path / "fake", cases)
    table = write_table(tmp_path / "t.csv", list(cases))
    out = tmp_path / "clips"
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "evalkit.data.musiccaps", "download", "--out", str(out), "--table",
                             str(table), "--downloader", str(fake.exe), "--timeout", "200", "--no-progress"],
                            cwd=str(REPO), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    started = fake.state / "slowOne0001.started"
    try:
        deadline = time.time() + 60
        while not (started.exists() and started.read_text()):
            assert proc.poll() is None and time.time() < deadline, proc.communicate()
            time.sleep(0.1)
        pid = int(started.read_text())
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        assert proc.returncode == 128 + signal.SIGTERM
        assert not _alive(pid)  # the download was killed with the CLI, not orphaned
        rows = rows_by_id(out)
        assert rows["slowOne0001"]["status"] == "missing"
        assert clip_files(out) <= {"okStereo441.wav"} and not (out / mc.WORK_DIR_NAME).exists()
    finally:
        if proc.poll() is None:
            proc.kill()
        if started.exists() and started.read_text():
            try:
                os.killpg(int(started.read_text()), signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_missing_ffmpeg_stops_the_run(tmp_path, capsys):
    msg = "You have requested downloading the video partially, but ffmpeg is not installed. Aborting due to --abort-on-error"
    ids = [f"noFfmpeg{i:03d}" for i in range(5)]
    fake = Fake(tmp_path / "fake", {i: {"kind": "error", "msg": msg} for i in ids})
    table = write_table(tmp_path / "t.csv", ids)
    out = tmp_path / "clips"
    rc = mc.main(["download", "--out", str(out), "--table", str(table), "--downloader", str(fake.exe), "--jobs", "1",
                  "--backoff", "0", "--no-progress"])
    assert rc == 2 and "Install ffmpeg" in capsys.readouterr().err
    assert sum(fake.counts().values()) == 1  # not 5 x 4 attempts
    statuses = sorted(r["status"] for r in rows_by_id(out).values())
    assert statuses == ["failed"] + ["missing"] * 4


def test_check_folder_good_wrong_length_unreadable_missing(tmp_path, capsys):
    ids = ["goodClip001", "shortClip01", "garbageClip", "absentClip1"]
    table = write_table(tmp_path / "t.csv", ids, start=0, end=10)
    d = tmp_path / "have"
    d.mkdir()
    sr = 32000
    x = 0.25 * np.sin(2 * np.pi * 220 * np.arange(10 * sr) / sr)
    sf.write(str(d / "goodClip001.flac"), x, sr)
    sf.write(str(d / "shortClip01.wav"), x[: 9 * sr], sr)
    (d / "garbageClip.wav").write_bytes(b"not audio at all" * 100)
    rc = mc.main(["check", str(d), "--table", str(table), "--no-progress"])
    assert rc == 1
    rows = rows_by_id(d)
    good = rows["goodClip001"]
    assert (good["status"], good["reason"], good["duration_s"], good["sample_rate"], good["channels"]) == (
        "ok", "", 10.0, sr, 1)
    assert good["sha256"] == hashlib.sha256((d / "goodClip001.flac").read_bytes()).hexdigest()
    short = rows["shortClip01"]
    assert short["status"] == "failed" and short["reason"].startswith("wrong duration: 9.000 s (288000 frames at 32000 Hz)")
    assert short["sha256"] == hashlib.sha256((d / "shortClip01.wav").read_bytes()).hexdigest()
    bad = rows["garbageClip"]
    assert bad["status"] == "failed" and bad["reason"].startswith("unreadable: soundfile cannot read garbageClip.wav")
    assert pd_isna(bad["duration_s"]) and pd_isna(bad["sample_rate"])
    assert rows["absentClip1"]["status"] == "missing" and rows["absentClip1"]["sha256"] == ""
    # check moves nothing
    assert sorted(p.name for p in d.iterdir() if not p.name.startswith(".")) == [
        "garbageClip.wav", "goodClip001.flac", "manifest.csv", "shortClip01.wav"]
    assert capsys.readouterr().out.strip().startswith("musiccaps: 1 ok, 0 unavailable, 2 failed, 1 missing of 4")
    assert mc.reference_set_identity(d)["n_missing"] == 1
    assert mc.reference_set_identity(tmp_path) is None


def test_limit_selects_the_same_ids_as_a_run(musiccaps_csv, tmp_path):
    expected = [p.id for p in select(load_musiccaps(str(musiccaps_csv)), 3)]
    clips = mc.load_clips(musiccaps_csv, "all", 3)
    assert [c.ytid for c in clips] == expected
    assert all(c.duration_s == 10.0 for c in clips)
    out = tmp_path / "empty"
    out.mkdir()
    assert mc.main(["check", str(out), "--table", str(musiccaps_csv), "--limit", "3", "--no-progress"]) == 0
    rows = rows_by_id(out)
    assert sorted(rows) == sorted(expected) and {r["status"] for r in rows.values()} == {"missing"}


@pytest.mark.parametrize("line, kind", [
    ("ERROR: [youtube] abc: Video unavailable", "unavailable"),
    ("ERROR: [youtube] abc: Video unavailable. This video has been removed by the uploader", "unavailable"),
    ("ERROR: [youtube] abc: This video has been removed for violating YouTube's policy on hate speech.", "unavailable"),
    ("ERROR: [youtube] abc: Private video. Sign in if you've been granted access to this video", "unavailable"),
    ("ERROR: [youtube] abc: Sign in to confirm your age. This video may be inappropriate for some users.", "unavailable"),
    ("ERROR: [youtube] abc: Sign in to confirm you\u2019re not a bot. Use --cookies-from-browser", "failed"),
    ("ERROR: unable to download video data: HTTP Error 503: Service Unavailable", "failed"),
    ("ERROR: [youtube] abc: This content isn't available, try again later.", "failed"),
    ("WARNING: [youtube] abc: Video unavailable in some clients\nERROR: [download] Got error: timed out", "failed"),
    ("ERROR: You have requested downloading the video partially, but ffmpeg is not installed. Aborting", "fatal"),
])
def test_classify_failure_real_yt_dlp_messages(line, kind):
    assert mc.classify_failure(line)[0] == kind


def test_missing_downloader_names_the_fix(tmp_path, capsys):
    table = write_table(tmp_path / "t.csv", ["okStereo441"])
    rc = mc.main(["download", "--out", str(tmp_path / "o"), "--table", str(table), "--downloader",
                  str(tmp_path / "no-such-yt-dlp"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "pip install 'evalkit[musiccaps]'" in err and "--downloader" in err
    assert not (tmp_path / "o").exists()


def test_command_line(tmp_path):
    cmd = mc.downloader_command("yt-dlp", mc.Clip("-0Gj8-vB1q4", 30.0, 40.0), tmp_path / "w" / "-0Gj8-vB1q4.%(ext)s")
    assert cmd == ["yt-dlp", "--ignore-config", "--no-playlist", "--no-progress", "-f", "bestaudio/best", "-x",
                   "--audio-format", "wav", "--download-sections", "*30-40", "--force-keyframes-at-cuts",
                   "-o", str(tmp_path / "w" / "-0Gj8-vB1q4.%(ext)s"), "--",
                   "https://www.youtube.com/watch?v=-0Gj8-vB1q4"]


def test_a_run_records_its_reference_set_and_compare_warns_when_two_differ(tmp_path):
    """reference.dir=DIR with a manifest: summary.json records which reference set (the manifest's sha256) the numbers
    were computed against, and compare warns (exit status unchanged) when two runs used different sets."""
    import evalkit
    from evalkit.audio import save_audio
    from evalkit.data.references import synth_clip
    from evalkit.report.compare import compare_paths

    ids = ["aaa", "bbb", "ccc"]
    table = write_table(tmp_path / "table.csv", ids)
    refs, gen = tmp_path / "refs", tmp_path / "gen"
    for i in ids:
        save_audio(refs / f"{i}.wav", synth_clip(f"r{i}", 44100, 10.0), 44100)
        save_audio(gen / f"{i}.flac", synth_clip(f"g{i}", 32000, 10.0), 32000)
    mc.check(refs, mc.load_clips(table), progress=False)
    ident = mc.reference_set_identity(refs)
    common = ["model=folder", f"model.dir={gen}", "dataset=musiccaps", f"dataset.path={table}", f"reference.dir={refs}",
              "metrics=[kld]", "backbone_weights=random", "backbone_size=tiny", "progress=false"]
    a = evalkit.evaluate(common, out_dir=tmp_path / "a")
    assert {k: a["reference_set"][k] for k in ("dir", *ident)} == {"dir": str(refs), **ident} and ident["n_ok"] == 3
    assert a["reference_set"]["n_files"] == 3 and len(a["reference_set"]["listing_sha256"]) == 64
    assert "manifest.csv" not in json.dumps(a["unused_files"])  # the manifest is not an unusable clip
    (refs / "ccc.wav").unlink()
    mc.check(refs, mc.load_clips(table), progress=False)  # one reference fewer: another reference set
    b = evalkit.evaluate(common, out_dir=tmp_path / "b")
    assert b["reference_set"]["manifest_sha256"] != a["reference_set"]["manifest_sha256"]
    assert b["reference_set"]["n_missing"] == 1 and b["n_missing_reference"] == 1
    cmp = compare_paths(tmp_path / "a", tmp_path / "b", {"default": "1e9"})  # numbers aside: the warning alone
    assert cmp.exit_code == 0 and any("reference set" in w for w in cmp.warnings)


def test_verify_clip_refuses_a_wav_cut_off_before_its_declared_end(tmp_path):
    """libsndfile reads a WAV cut to a third of its bytes as a 3.33 s clip; the check names it truncated rather
    than "wrong duration" (the header says 10 s), and a whole file passes."""
    p = tmp_path / "clip.wav"
    sf.write(str(p), 0.1 * np.random.default_rng(0).standard_normal((320000, 2)).astype(np.float32), 32000,
             subtype="PCM_16")
    assert mc.verify_clip(p, 10.0).ok
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 3])
    check = mc.verify_clip(p, 10.0)
    # 44-byte header + 1,280,000 bytes of audio, cut to 1,280,044 // 3 = 426,681 bytes: 426,637 bytes of audio left
    assert not check.ok and check.reason.startswith("unreadable: clip.wav: truncated: its WAV header declares 1280000 "
                                                    "bytes of audio (10.00 s) but the file holds 426637 (3.33 s)")
