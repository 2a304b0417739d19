"""Audio I/O and the named transforms every protocol is built from.

Nothing here knows which metric asks. Each transform mirrors one function of a reference implementation,
named in its docstring, so that a protocol is a sequence of these calls with constants from ``conf/``.

Conventions: waveforms are ``torch.Tensor`` of shape ``[channels, samples]`` (or ``[batch, channels, samples]``
where stated), float32, nominally in [-1, 1].
"""
from __future__ import annotations

import functools

import math
import os
from pathlib import Path

import numpy as np
import torch

AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg")


class AudioError(ValueError):
    """A clip that cannot be used; the message names the file (or id) and what is wrong."""


# ----------------------------------------------------------------------------------------------------------------
# Reading and writing
# ----------------------------------------------------------------------------------------------------------------
def load_audio(path: str | os.PathLike, check_finite: bool = True) -> tuple[torch.Tensor, int]:
    """Read a file with soundfile (not ``torchaudio.load``) -> (float32 ``[C, T]``, sample rate).

    Raises :class:`AudioError` naming the file when it is missing (or a link to a missing file: "a dangling link to
    <target>"), unreadable, empty, cut off or with a header that disagrees with its audio (:func:`integrity_problem`)
    or (with ``check_finite``) holds NaN/inf; the run's audit reads with ``check_finite=False`` and flags non-finite
    samples itself. mp3 is read by libsndfile >= 1.1 (soundfile wheels ship it). 16-bit PCM (WAV, FLAC) is read as
    int16 and scaled by 2^-15 here: the same float32 values as libsndfile's own conversion (``tests/test_audio.py``),
    in 2.8 instead of 4.8 ms for 10 s of stereo WAV.
    """
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        if path.is_symlink():
            raise AudioError(f"{path}: a dangling link to {os.readlink(path)} (the file it points to does not exist): "
                             f"restore that file or replace the link with the clip")
        raise AudioError(f"{path}: no such audio file")
    try:
        with sf.SoundFile(str(path)) as fh:
            sr, pcm16, declared = fh.samplerate, fh.subtype == "PCM_16", fh.frames
            raw = fh.read(dtype="int16" if pcm16 else "float32", always_2d=True)
    except Exception as exc:  # soundfile raises LibsndfileError / RuntimeError / TypeError
        raise AudioError(f"{path}: not a readable audio file ({type(exc).__name__}: {exc}); if it was copied or "
                         f"downloaded, it may be damaged or cut off: copy or generate it again") from exc
    if raw.shape[0] == 0:
        raise AudioError(f"{path}: the file holds no samples")
    problem = integrity_problem(path, declared, raw.shape[0], sr)
    if problem:
        raise AudioError(f"{path}: {problem}")
    data = np.ascontiguousarray(raw.T)  # [C, T]
    if pcm16:
        data = data.astype(np.float32)
        data *= np.float32(1.0 / 32768.0)  # libsndfile's normalisation of 16-bit PCM (exact: a power of two)
    elif check_finite and not np.isfinite(data).all():
        raise AudioError(f"{path}: the audio holds NaN or infinite samples")
    return torch.from_numpy(data), int(sr)


def integrity_problem(path: str | os.PathLike, declared_frames: int, decoded_frames: int, sample_rate: int
                      ) -> str | None:
    """Why a file that libsndfile decoded without an error is still not the audio it claims to be, or ``None``.

    libsndfile reads a cut-off file as the audio that is left, so an interrupted copy would be scored as a short
    clip. Three checks, each on what the container itself declares:

    * WAV (RIFF/RIFX): the ``data`` chunk's declared size against the bytes present, both ways: fewer (cut off), or
      more bytes after it that are no RIFF chunk (a header declaring less audio than the file holds);
    * a header frame count (mp3's Xing/LAME header) above what decodes, by more than 1 % and two mp3 frames;
    * Ogg (Vorbis, Opus, FLAC in Ogg): the last page lacks the end-of-stream flag.

    ``declared_frames``: ``SoundFile.frames``; ``decoded_frames``: what ``read`` returned."""
    wav = _riff_problem(path)
    if wav:
        return wav
    if declared_frames - decoded_frames > max(0.01 * declared_frames, 2304):
        return (f"truncated: its header declares {declared_frames / sample_rate:.2f} s but only "
                f"{decoded_frames / sample_rate:.2f} s decode; it was cut off (an interrupted copy, download or "
                f"write): copy or generate it again")
    if _ogg_without_end(path):
        return ("truncated: its last Ogg page does not end the stream (no end-of-stream flag), so the file was cut "
                f"off after {decoded_frames / sample_rate:.2f} s (an interrupted copy, download or write): copy or "
                f"generate it again")
    return None


def _riff_problem(path: str | os.PathLike) -> str | None:
    import struct

    try:
        with open(path, "rb") as fh:
            head = fh.read(12)
            if len(head) < 12 or head[:4] not in (b"RIFF", b"RIFX") or head[8:12] != b"WAVE":
                return None
            order = "<" if head[:4] == b"RIFF" else ">"
            size, pos, byte_rate = os.fstat(fh.fileno()).st_size, 12, 0
            while pos + 8 <= size:
                fh.seek(pos)
                chunk, n = struct.unpack(order + "4sI", fh.read(8))
                if chunk == b"fmt " and n >= 12:
                    byte_rate = struct.unpack(order + "I", fh.read(12)[8:12])[0]
                if chunk == b"data":
                    return _data_chunk_problem(fh, order, pos, n, size, byte_rate)
                pos += 8 + n + (n & 1)  # RIFF chunks are padded to an even size
    except OSError:
        return None
    return None


def _data_chunk_problem(fh, order: str, pos: int, n: int, size: int, byte_rate: int) -> str | None:
    """The WAV ``data`` chunk at ``pos`` declaring ``n`` bytes, in a file of ``size`` bytes (see
    :func:`integrity_problem`). 0 and 0xFFFFFFFF are streaming writers' placeholders: not checked."""
    import struct

    def secs(b: int) -> str:
        return f" ({b / byte_rate:.2f} s)" if byte_rate else ""

    if n in (0, 0xFFFFFFFF):
        return None
    present = size - pos - 8
    if n > present:
        return (f"truncated: its WAV header declares {n} bytes of audio{secs(n)} but the file holds {present}"
                f"{secs(present)}; it was cut off (an interrupted copy, download or write): copy or generate it again")
    after = pos + 8 + n + (n & 1)
    if size - after >= 8:
        fh.seek(after)
        chunk, m = struct.unpack(order + "4sI", fh.read(8))
        tag_or_padding = chunk[:3] == b"ID3" or chunk == b"\0\0\0\0"  # an appended ID3 tag, zero padding
        if not tag_or_padding and not (all(32 <= c < 127 for c in chunk) and after + 8 + m <= size + 1):
            return (f"its WAV header declares {n} bytes of audio{secs(n)} but {size - after} more bytes follow that "
                    f"are no RIFF chunk: the header is wrong (a writer that did not finish it?), so the audio read "
                    f"would be cut short: rewrite the file")
    return None


def _ogg_without_end(path: str | os.PathLike) -> bool:
    """An Ogg file whose last page (the last ``OggS`` capture pattern in its final 64 KiB) lacks the
    end-of-stream flag (header type bit 0x04)."""
    try:
        with open(path, "rb") as fh:
            if fh.read(4) != b"OggS":
                return False
            size = os.fstat(fh.fileno()).st_size
            fh.seek(max(0, size - 65536))
            tail = fh.read()
    except OSError:
        return False
    i = tail.rfind(b"OggS")
    return i >= 0 and i + 5 < len(tail) and not (tail[i + 5] & 0x04)


def save_audio(path: str | os.PathLike, wav: torch.Tensor, sample_rate: int, subtype: str = "PCM_16") -> Path:
    """Write ``wav`` ``[C, T]`` atomically (temp file, fsync, rename). Format from the extension (flac, wav).
    Encoded in memory first (the same bytes), so a full disk raises ``OSError`` ``[Errno 28]`` naming ``path``, not
    libsndfile's "System error"."""
    import io

    import soundfile as sf

    from evalkit.io import atomic_path

    path = Path(path)
    data = wav.detach().cpu().float().clamp(-1, 1).numpy().T
    fmt = path.suffix.lstrip(".").upper()
    encoded = io.BytesIO()
    sf.write(encoded, data, sample_rate, subtype=subtype, format=fmt)
    with atomic_path(path) as tmp:
        tmp.write_bytes(encoded.getvalue())
    return path


# ----------------------------------------------------------------------------------------------------------------
# Resampling, channels, length
# ----------------------------------------------------------------------------------------------------------------
def resample(wav: torch.Tensor, from_rate: int, to_rate: int) -> torch.Tensor:
    """``julius.resample_frac`` over the last dimension: the resampler audiocraft uses everywhere
    (``audiocraft/data/audio_utils.py: convert_audio``)."""
    if int(from_rate) == int(to_rate):
        return wav
    import julius

    return julius.resample_frac(wav, int(from_rate), int(to_rate))


def resample_with(wav: torch.Tensor, from_rate: int, to_rate: int, method: str = "julius") -> torch.Tensor:
    """Resample ``[..., T]`` with the named resampler, each a tool's own:

    - ``julius``: ``julius.resample_frac`` (audiocraft's ``convert_audio``);
    - ``resampy``: ``resampy.resample(x, from, to)`` (kaiser_best; the frechet-audio-distance package), computed bit
      for bit by :mod:`evalkit.resampy_exact`, per channel, float32;
    - ``soxr_hq``: ``librosa.resample(x, orig_sr=from, target_sr=to, res_type="soxr_hq")`` (``librosa.load``'s
      default; stable-audio-metrics), per channel;
    - ``torchaudio_hann``: ``torchaudio.functional.resample(x, from, to)`` with its defaults (Hann-windowed sinc,
      ``lowpass_filter_width=6``, ``rolloff=0.99``; audiobox-aesthetics ``infer.py``), in the input's dtype;
    - ``torchaudio_kaiser``: ``torchaudio.transforms.Resample(from, to, lowpass_filter_width=64,
      rolloff=0.9475937167399596, resampling_method="sinc_interp_kaiser", beta=14.769656459379492)`` in float32:
      fadtk's and kadtk's ``load_audio`` (``fadtk/fad.py``, ``kadtk/emb_loader.py``).
    """
    if int(from_rate) == int(to_rate):
        return wav
    if method == "julius":
        return resample(wav, from_rate, to_rate)
    if method == "torchaudio_hann":
        import torchaudio

        return torchaudio.functional.resample(wav, int(from_rate), int(to_rate))
    if method == "torchaudio_kaiser":
        return kaiser_resampler(int(from_rate), int(to_rate))(wav.to(torch.float32))
    rows = wav.reshape(-1, wav.shape[-1]).detach().cpu().numpy()
    if method == "resampy":
        from evalkit import resampy_exact

        out = [resampy_exact.resample(r, int(from_rate), int(to_rate)) for r in rows]
    elif method == "soxr_hq":
        import librosa

        out = [librosa.resample(r, orig_sr=int(from_rate), target_sr=int(to_rate), res_type="soxr_hq") for r in rows]
    else:
        raise ValueError(f"resampler {method!r}: expected julius, resampy, soxr_hq, torchaudio_hann or "
                         "torchaudio_kaiser")
    res = torch.from_numpy(np.ascontiguousarray(np.stack(out)))
    return res.reshape(*wav.shape[:-1], res.shape[-1])


@functools.lru_cache(maxsize=8)
def kaiser_resampler(from_rate: int, to_rate: int):
    """fadtk's / kadtk's ``torchaudio.transforms.Resample`` (the Kaiser-windowed sinc of ``resample_with``), its
    kernel built once per pair of rates."""
    import torchaudio

    return torchaudio.transforms.Resample(from_rate, to_rate, lowpass_filter_width=64, rolloff=0.9475937167399596,
                                          resampling_method="sinc_interp_kaiser", beta=14.769656459379492)


def to_channels(wav: torch.Tensor, channels: int) -> torch.Tensor:
    """``audiocraft/data/audio_utils.py: convert_audio_channels``: mono = mean over channels; mono -> N by
    repetition; N -> M (M < N) keeps the first M channels."""
    src = wav.shape[-2]
    if src == channels:
        return wav
    if channels == 1:
        return wav.mean(dim=-2, keepdim=True)
    if src == 1:
        return wav.expand(*wav.shape[:-2], channels, wav.shape[-1])
    if src > channels:
        return wav[..., :channels, :]
    raise AudioError(f"cannot convert {src} channels to {channels}")


def convert_audio(wav: torch.Tensor, from_rate: int, to_rate: int, channels: int) -> torch.Tensor:
    """audiocraft's ``convert_audio``: resample first, then convert channels (order matters at the last ulp)."""
    return to_channels(resample(wav, from_rate, to_rate), channels)


def crop_or_pad(wav: torch.Tensor, length: int) -> torch.Tensor:
    """Keep the first ``length`` samples, zero-pad at the end if shorter."""
    n = wav.shape[-1]
    if n >= length:
        return wav[..., :length]
    return torch.nn.functional.pad(wav, (0, length - n))


# ----------------------------------------------------------------------------------------------------------------
# Normalisations (audiocraft/data/audio_utils.py)
# ----------------------------------------------------------------------------------------------------------------
def peak_normalize(wav: torch.Tensor, peak_dbfs: float = -1.0, gain: str = "audiocraft") -> torch.Tensor:
    """Scale so that max|x| = ``10 ** (peak_dbfs / 20)``: the peak at ``peak_dbfs`` dB relative to full scale
    (-1.0: 1 dB below). ``gain`` says how the factor is rounded, as each tool does it:

    - ``audiocraft``: ``normalize_audio(strategy='peak', peak_clip_headroom_db=1)``: ``x * (10 ** (-1 / 20) /
      max|x|)`` in the tensor's dtype (the division rounded to float32 for float32 audio);
    - ``pyloudnorm``: ``pyloudnorm.normalize.peak(x, -1.0)`` under numpy 1.x (stable-audio-metrics pins 1.23.5):
      ``np.power(10.0, -1 / 20) / max|x|`` in float64, rounded once to the audio's float32, then the product.

    The two factors differ in the last bit for some peaks (a 1e-7 relative difference in every sample).
    Silent audio (max|x| == 0) cannot be peak-normalised: raises :class:`AudioError` instead of returning NaN."""
    peak = wav.abs().max()
    if not torch.isfinite(peak) or peak == 0:
        raise AudioError("peak normalisation of silent or non-finite audio")
    if gain == "pyloudnorm":
        factor = float(np.power(10.0, peak_dbfs / 20.0)) / float(peak)
        return wav * torch.tensor(factor, dtype=wav.dtype)
    if gain != "audiocraft":
        raise ValueError(f"peak gain {gain!r}: expected audiocraft or pyloudnorm")
    return wav * (10 ** (peak_dbfs / 20) / peak)


def i16_pcm(wav: torch.Tensor) -> torch.Tensor:
    """audiocraft ``audio_utils.i16_pcm``: ``round(x * 2**15)``, or ``round(x * (2**15 - 1))`` when the first
    would reach 2**15. Returns int16. Input must lie in [-1, 1]."""
    if wav.abs().max() > 1:
        raise AudioError("i16_pcm expects audio in [-1, 1]")
    candidate = (wav * 2**15).round()
    if candidate.max() >= 2**15:
        candidate = (wav * (2**15 - 1)).round()
    return candidate.to(torch.int16)


def pcm16_round_trip(wav: torch.Tensor) -> torch.Tensor:
    """A float signal written as a 16-bit PCM wav by ``torchaudio.save(..., encoding="PCM_S", bits_per_sample=16)``
    (FFmpeg's conversion, torchaudio's backend since 2.9 and its ffmpeg backend before: ``round(x * 32768)``, half to
    even, saturated to [-32768, 32767]) and read back as ``soundfile.read(dtype="int16") / 32768.0`` (fadtk's and
    kadtk's ``ModelLoader.load_wav``). Returns float64 (numpy's division)."""
    q = torch.round(wav.to(torch.float32) * 32768.0).clamp_(-32768.0, 32767.0)
    return q.to(torch.float64) / 32768.0


def quantize_int16_laion(wav: torch.Tensor) -> torch.Tensor:
    """laion_clap's ``int16_to_float32(float32_to_int16(x))``: clip to ±1, ``* 32767``, truncate to int16,
    ``/ 32767`` (what its ``use_tensor=False`` path and stable-audio-metrics do; audiocraft does not)."""
    q = (torch.clamp(wav, -1.0, 1.0) * 32767.0).to(torch.int16)
    return q.to(torch.float32) / 32767.0


def _biquad_kweight(sample_rate: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The two biquads of ``torchaudio.functional.loudness`` (BS.1770 K-weighting): ``treble_biquad(gain=4,
    central_freq=1500, Q=1/sqrt(2))`` then ``highpass_biquad(cutoff=38, Q=0.5)``, coefficients as torchaudio
    computes them (RBJ cookbook), normalised by a0."""
    w0 = 2 * math.pi * 1500.0 / sample_rate
    alpha = math.sin(w0) / 2 / (1 / math.sqrt(2))
    A = math.exp(4.0 / 40 * math.log(10))
    t1, t2, t3 = 2 * math.sqrt(A) * alpha, (A - 1) * math.cos(w0), (A + 1) * math.cos(w0)
    shelf_b = [A * ((A + 1) + t2 + t1), -2 * A * ((A - 1) + t3), A * ((A + 1) + t2 - t1)]
    shelf_a = [(A + 1) - t2 + t1, 2 * ((A - 1) - t3), (A + 1) - t2 - t1]
    w0 = 2 * math.pi * 38.0 / sample_rate
    alpha = math.sin(w0) / 2.0 / 0.5
    hp_b = [(1 + math.cos(w0)) / 2, -1 - math.cos(w0), (1 + math.cos(w0)) / 2]
    hp_a = [1 + alpha, -2 * math.cos(w0), 1 - alpha]
    out = []
    for b, a in ((shelf_b, shelf_a), (hp_b, hp_a)):
        b, a = np.asarray(b, dtype=np.float64), np.asarray(a, dtype=np.float64)
        out.append((b / a[0], a / a[0]))
    return out


def loudness_lufs(wav: torch.Tensor, sample_rate: int) -> float:
    """Integrated loudness (BS.1770-4) exactly as ``torchaudio.functional.loudness`` computes it, which is what
    audiocraft's ``normalize_loudness`` calls: K-weighting biquads (each output clamped to [-1, 1], torchaudio's
    ``lfilter`` default), 400 ms blocks with 75 % overlap, channel weights (1, 1, 1, 1.41, 1.41), absolute gate
    -70 LUFS, relative gate -10 LU, offset -0.691. Filtering runs in float64 here (torchaudio: float32), which
    moves the result by < 1e-4 dB. ``wav``: ``[C, T]``."""
    from scipy.signal import lfilter

    if wav.shape[-2] > 5:
        raise AudioError(f"BS.1770 loudness takes at most 5 channels (torchaudio refuses more), got {wav.shape[-2]}: "
                         f"downmix the file to stereo, or score it without loudness normalisation (postprocess=none)")
    x = wav.detach().cpu().double().numpy()
    for b, a in _biquad_kweight(sample_rate):
        x = np.clip(lfilter(b, a, x, axis=-1), -1.0, 1.0)
    gate = int(round(0.4 * sample_rate))
    step = int(round(gate * (1 - 0.75)))
    if x.shape[-1] < gate:
        raise AudioError(f"loudness needs at least {gate} samples (400 ms), got {x.shape[-1]}")
    n_blocks = 1 + (x.shape[-1] - gate) // step
    sq = x**2
    csum = np.concatenate([np.zeros((sq.shape[0], 1)), np.cumsum(sq, axis=-1)], axis=-1)
    starts = np.arange(n_blocks) * step
    energy = (csum[:, starts + gate] - csum[:, starts]) / gate  # [C, blocks]
    g = np.array([1.0, 1.0, 1.0, 1.41, 1.41])[: energy.shape[0], None]
    with np.errstate(divide="ignore", invalid="ignore"):
        block_loudness = -0.691 + 10 * np.log10((g * energy).sum(0))
        gated = block_loudness > -70.0
        e_abs = (energy * gated).sum(-1) / np.count_nonzero(gated)
        gamma_rel = -0.691 + 10 * np.log10((g[:, 0] * e_abs).sum()) - 10
        gated = gated & (block_loudness > gamma_rel)
        e_rel = (energy * gated).sum(-1) / np.count_nonzero(gated)
        return float(-0.691 + 10 * np.log10((g[:, 0] * e_rel).sum()))


def loudness_normalize(
    wav: torch.Tensor, sample_rate: int, headroom_db: float = 14.0, energy_floor: float = 2e-3, clamp: bool = True
) -> torch.Tensor:
    """audiocraft ``normalize_audio(strategy='loudness')``: ``normalize_loudness`` (gain to -headroom LUFS,
    skipped when RMS < energy_floor) followed by ``_clip_wav`` (clamp to [-1, 1])."""
    energy = float(wav.double().pow(2).mean().sqrt())
    if energy >= energy_floor:
        gain = 10.0 ** ((-headroom_db - loudness_lufs(wav, sample_rate)) / 20.0)
        wav = wav * gain
    return wav.clamp(-1, 1) if clamp else wav


def check_finite(wav: torch.Tensor, what: str) -> None:
    if not torch.isfinite(wav).all():
        raise AudioError(f"{what}: the audio holds NaN or infinite samples")
