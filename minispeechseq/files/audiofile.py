"""Sound files in, one float32 mono waveform out, with the memory it will take known before it is taken.

`load_audio(path)` reads any file libsndfile reads (wav, flac, ogg...), at any rate and channel count, and returns
one float32 mono waveform at 16 kHz (or the rate asked for). A file is a promise made by its header, and a
header can lie, so the work is in three steps:

1. `probe_audio(path)` reads the header only (cheap: the CLI and `transcribe()` use it to sort inputs by length)
   and refuses, naming the file, what would cost absurd memory or time:
   - a sample rate outside [MIN_SAMPLE_RATE, MAX_SAMPLE_RATE]: no speech recording is below 1 kHz (telephone
     speech is 8 kHz), and 384 kHz is the highest rate audio interfaces record at; a "1 Hz" header on 4 KB of
     PCM would otherwise be resampled to 32 M samples;
   - more frames than the file's size can hold: exact for uncompressed PCM (frames x channels x bytes per sample
     <= file size), a generous bound for compressed data (MAX_FRAMES_PER_BYTE, above FLAC's densest frame);
     a FLAC header may declare up to 2^36 samples, 256 GiB as float32;
   - more than `max_duration_s` seconds (MAX_DURATION_S, 4 hours, unless the environment variable
     MINISPEECHSEQ_MAX_AUDIO_S says otherwise): 4 hours at 16 kHz are 0.86 GiB of float32 output;
   - a WAV whose data chunk declares more bytes than the file holds (a copy or recording cut short): libsndfile
     reads what is there without a word, and part of a recording would be transcribed as if it were all of it.
2. The samples are read in blocks of BLOCK_FRAMES, each downmixed and resampled (a streaming soxr resampler, whose
   output equals the one-shot one) into one output array allocated once from the header's length. Peak memory
   is that output plus a few blocks, whatever the file's rate, channel count or length.
3. Samples that are NaN or infinite (a crashed recorder, a bad export) are refused naming the file, rather than
   later by the feature extractor, where a batch no longer knows which file it came from. So are frames that do
   not decode (a damaged FLAC or Ogg page), whether libsndfile says so or just stops early: every such failure
   is a ValueError naming the file, so that one damaged file among many is that file's error only.

File names are handed to libsndfile as bytes (`os.fsencode`), so a name that is not valid UTF-8 (Python keeps
its bytes as surrogate escapes) still opens.

Shape legend: N frames in the file, C channels, L output samples.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import soundfile
import soxr

MIN_SAMPLE_RATE = 1_000
MAX_SAMPLE_RATE = 384_000
MAX_DURATION_S = 4 * 3600.0
MAX_DURATION_ENV = "MINISPEECHSEQ_MAX_AUDIO_S"
# FLAC's densest frame holds 65535 samples of a constant in about 10 bytes (6500 frames per byte); two hours of
# digital silence in 16-bit stereo FLAC as libsndfile writes it are 1.4 MB (250 frames per byte).
MAX_FRAMES_PER_BYTE = 8192
BLOCK_FRAMES = 1 << 18  # 5.5 s at 48 kHz: 2 MiB per channel as float32
# Containers that store PCM subtypes as they are (FLAC's subtype PCM_16 names the decoded width, not the stored
# one), and the bytes per sample of those subtypes: together, the size bounds the frame count exactly.
PCM_CONTAINERS = {"WAV", "WAVEX", "W64", "RF64", "AIFF", "AU", "CAF", "RAW", "IRCAM", "NIST"}
PCM_BYTES = {"PCM_S8": 1, "PCM_U8": 1, "PCM_16": 2, "PCM_24": 3, "PCM_32": 4, "FLOAT": 4, "DOUBLE": 8,
             "ULAW": 1, "ALAW": 1}
# A data chunk size this large is a placeholder, not a length: a writer on a pipe cannot seek back to fill it in
# and leaves a value at the 32-bit limit there (0xFFFFFFFF, or 0x7FFFFFFF rounded down to whole frames).
UNKNOWN_DATA_SIZE = 0x7FFF0000
# MP3 headers may only estimate the length (libsndfile takes it from mpg123), so a short read there is no damage.
ESTIMATED_LENGTH_FORMATS = {"MPEG"}


def max_duration_s() -> float:
    """The longest audio load_audio accepts by default: the environment variable when set, else MAX_DURATION_S."""
    value = os.environ.get(MAX_DURATION_ENV)
    if value is None:
        return MAX_DURATION_S
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise ValueError(f"{MAX_DURATION_ENV}={value!r}; expected a positive number of seconds.")
    return seconds


@dataclass
class AudioInfo:
    """What a sound file's header says, checked against the file's size."""

    path: str | os.PathLike
    frames: int  # N, per channel
    samplerate: int
    channels: int
    format: str  # the container: WAV, FLAC, OGG...
    subtype: str  # the sample encoding: PCM_16, FLOAT, VORBIS...

    @property
    def duration_s(self) -> float:
        return self.frames / self.samplerate

    def samples_at(self, sampling_rate: int) -> int:
        """L, the length once resampled: soxr returns round(N * rate / file rate) samples."""
        return int(round(self.frames * sampling_rate / self.samplerate))


def check_rate(rate: int, what: str) -> None:
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise ValueError(f"{what} is {rate} Hz, outside [{MIN_SAMPLE_RATE}, {MAX_SAMPLE_RATE}] Hz: no speech recording "
                         "is below 1 kHz and no audio interface records above 384 kHz; resample or re-export it.")


def check_declared_length(info: AudioInfo, file_bytes: int, limit_s: float) -> None:
    """The header's frame count against the file's size and against the duration limit."""
    width = PCM_BYTES.get(info.subtype) if info.format in PCM_CONTAINERS else None
    if width is not None and info.frames * info.channels * width > file_bytes:
        raise ValueError(f"{info.path}: its header declares {info.frames} frames of {info.channels} x {width} bytes "
                         f"but the file has {file_bytes} bytes; the file is corrupt.")
    if width is None and info.frames > file_bytes * MAX_FRAMES_PER_BYTE:
        raise ValueError(f"{info.path}: its header declares {info.frames} frames in {file_bytes} bytes, more than "
                         f"{MAX_FRAMES_PER_BYTE} frames per byte, beyond any real compression; the file is corrupt.")
    if info.duration_s > limit_s:
        raise ValueError(f"{info.path} lasts {info.duration_s:.0f} s, longer than the {limit_s:.0f} s limit; cut it, "
                         f"or raise the limit (max_duration_s=, or {MAX_DURATION_ENV}).")


def check_wav_data_chunk(path: str | os.PathLike, file_bytes: int) -> None:
    """A RIFF WAVE file cut inside its data chunk, refused: its header says how many bytes of samples follow."""
    with open(path, "rb") as f:
        riff = f.read(12)
        if riff[:4] != b"RIFF" or riff[8:12] != b"WAVE":
            return  # RF64 / Wave64 keep their sizes elsewhere; libsndfile's own checks stand for those
        while True:  # chunks: 4-byte id, 4-byte little-endian size, the data padded to an even length
            head = f.read(8)
            if len(head) < 8:
                return  # no data chunk: libsndfile says what is wrong when it opens the file
            size = int.from_bytes(head[4:], "little")
            if head[:4] == b"data":
                break
            f.seek(size + size % 2, os.SEEK_CUR)
        start = f.tell()
    if file_bytes - start < size < UNKNOWN_DATA_SIZE:
        raise ValueError(f"{path} is truncated: its data chunk declares {size} bytes of samples but only "
                         f"{file_bytes - start} follow; the copy or recording was cut short (copy or export it again).")


def _open(path: str | os.PathLike) -> soundfile.SoundFile:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No audio file at {path}.")
    try:
        return soundfile.SoundFile(os.fsencode(path))  # bytes: names that are not UTF-8 open too
    except soundfile.LibsndfileError as e:  # a text file, a truncated header, an unknown container...
        raise ValueError(f"{path} could not be read as audio by libsndfile ({e}); expected wav, flac, ogg, ...") from None


def _info(f: soundfile.SoundFile, path: str | os.PathLike, limit_s: float | None) -> AudioInfo:
    info = AudioInfo(path, f.frames, f.samplerate, f.channels, f.format, f.subtype)
    if info.frames == 0:
        raise ValueError(f"{path} holds no audio samples (0 frames); expected a non-empty recording.")
    check_rate(info.samplerate, f"{path}'s sample rate")
    check_declared_length(info, os.path.getsize(path), max_duration_s() if limit_s is None else limit_s)
    if info.format in ("WAV", "WAVEX"):
        check_wav_data_chunk(path, os.path.getsize(path))
    return info


def probe_audio(path: str | os.PathLike, *, max_duration_s: float | None = None) -> AudioInfo:
    """The header of a sound file, checked (see the module docstring); reads no samples."""
    with _open(path) as f:
        return _info(f, path, max_duration_s)


def load_audio(path: str | os.PathLike, sampling_rate: int = 16000, *,
               max_duration_s: float | None = None) -> np.ndarray:
    """Read an audio file as a float32 mono waveform (L,) at `sampling_rate` Hz, values in [-1, 1] for PCM files.

    max_duration_s: refuse longer files (default: MINISPEECHSEQ_MAX_AUDIO_S, else 4 hours)."""
    if not isinstance(sampling_rate, int) or sampling_rate <= 0:
        raise ValueError(f"sampling_rate must be a positive int (Hz), got {sampling_rate!r}.")
    check_rate(sampling_rate, "The sampling_rate asked for")
    with _open(path) as f:
        info = _info(f, path, max_duration_s)
        resampler = None
        if info.samplerate != sampling_rate:
            # soxr's default "HQ" quality, streamed: the same samples as soxr.resample on the whole signal.
            resampler = soxr.ResampleStream(info.samplerate, sampling_rate, 1, dtype="float32")
        out = np.empty(info.samples_at(sampling_rate) + 1, dtype=np.float32)  # (L,) +1: rounding slack
        filled, read = 0, 0
        while True:
            # dtype="float32": libsndfile scales integer PCM to [-1, 1] itself (int16 / 32768...).
            try:
                block = f.read(BLOCK_FRAMES, dtype="float32", always_2d=True)  # (n, C)
            except soundfile.SoundFileError as e:  # e.g. a FLAC frame that fails its checksum: "lost sync"
                reason = str(e).removeprefix("Error : ").strip().rstrip(".")
                raise ValueError(f"{path} could not be decoded (libsndfile: {reason}); the file is damaged (export "
                                 "or copy it again).") from None
            last = len(block) < BLOCK_FRAMES
            if not np.isfinite(block).all():
                first = read + int(np.flatnonzero(~np.isfinite(block).all(axis=1))[0])
                raise ValueError(f"{path} contains NaN or infinite samples (the first at {first / info.samplerate:.3f} "
                                 "s); expected finite audio.")
            read += len(block)
            # Downmix: the mean of the channels keeps the level of a centred (identical L/R) source unchanged.
            # Summed in float64: two channels near float32's maximum (3e38) would overflow a float32 sum.
            mono = block.mean(axis=1, dtype=np.float64).astype(np.float32)  # (n,)
            if resampler is not None:
                mono = resampler.resample_chunk(mono, last=last)
            if filled + len(mono) > len(out):
                raise ValueError(f"{path} holds more samples than its header declares ({info.frames} frames); "
                                 "the file is corrupt.")
            out[filled : filled + len(mono)] = mono
            filled += len(mono)
            if last:
                break
    if read == 0:
        raise ValueError(f"{path} holds no audio samples (0 frames); expected a non-empty recording.")
    if read < info.frames and info.format not in ESTIMATED_LENGTH_FORMATS:  # a damaged Ogg page ends a stream early
        raise ValueError(f"{path} could not be decoded after {read / info.samplerate:.2f} s of the "
                         f"{info.duration_s:.2f} s its header declares; the file is damaged (export or copy it again).")
    out = out[:filled]  # a prefix: contiguous, no copy
    if not np.isfinite(out).all():  # finite input overflowing the resampler's float32 (|x| near 3e38)
        raise ValueError(f"{path} has samples too large to resample in float32 (near its maximum, 3.4e38); "
                         "expected audio scaled to about [-1, 1].")
    return out
