"""The spoken-digits corpus: English digit strings said by espeak-ng's synthetic voices, and its tokenizer.

`make_digits_corpus(folder, recipe)` (or `minispeechseq data DIR`, whose command line is tools/data.py):
1. `plan_digits_corpus` draws every utterance from the recipe's seed alone: a random digit string ("four two
   seven"), its split (train / valid / test, by string), an espeak-ng English voice and variant, speed, pitch and
   word gap. No audio yet, so the plan can be checked and remade cheaply.
2. `synthesize_many` renders a group of planned utterances with one espeak-ng process, resamples them to 16 kHz,
   and `wavs/NNNNNN.wav` are written; then one manifest per split (`train.tsv`, `valid.tsv`, `test.tsv`, the
   layout `data.ManifestDataset` reads) and a word-level tokenizer (`build_digits_tokenizer`).
The corpus is regenerated from its seed, never committed. It is what the bundled model was trained on.

Shape legend: L audio samples.
"""

from __future__ import annotations

import concurrent.futures
import io
import json
import os
import random
import shutil
import subprocess
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import soundfile
import soxr
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import models, pre_tokenizers

from .data import SAMPLING_RATE

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
SPLITS = ("train", "valid", "test")
# espeak-ng's voice variants (espeak-ng-data/voices/!v/m1 ... f4); "" is the voice's own sound.
VARIANTS = ("",) + tuple(f"+m{i}" for i in range(1, 8)) + tuple(f"+f{i}" for i in range(1, 5))
SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>")


# ========================================================================================= the corpus recipe
@dataclass
class DigitsRecipe:
    """Everything that decides the corpus. Saved as recipe.json next to it, so the corpus can be remade."""

    num_utterances: int = 4000
    seed: int = 0
    min_digits: int = 1
    max_digits: int = 8
    speed_wpm: tuple[int, int] = (130, 200)  # espeak-ng -s, words per minute (its default is 175)
    pitch: tuple[int, int] = (25, 75)  # espeak-ng -p, 0..99 (default 50)
    word_gap: tuple[int, int] = (0, 8)  # espeak-ng -g, extra pause between words in units of 10 ms
    valid_fraction: float = 0.1
    test_fraction: float = 0.1
    per_call: int = 8  # utterances rendered by one espeak-ng process (they share voice, speed, pitch and gap)


@dataclass
class PlannedUtterance:
    index: int
    text: str
    split: str
    voice: str  # e.g. "en-gb-x-rp+f2"
    speed: int
    pitch: int
    word_gap: int

    @property
    def audio_path(self) -> str:
        return f"wavs/{self.index:06d}.wav"


def english_voices() -> list[str]:
    """espeak-ng's English voices (`espeak-ng --voices=en`), without the MBROLA ones.

    MBROLA voices (file `mb/...`) need the separate mbrola program and its voice databases, which espeak-ng does
    not ship; rows of language "variant" are variants, which we add to every voice ourselves (VARIANTS)."""
    espeak = _espeak_binary()
    listing = subprocess.run([espeak, "--voices=en"], capture_output=True, text=True, check=True).stdout
    voices = []
    for line in listing.splitlines()[1:]:  # the first line is the column header
        columns = line.split()
        if len(columns) < 5:
            continue
        language, voice_file = columns[1], columns[4]
        if voice_file.startswith("mb/") or language == "variant" or language in voices:
            continue
        voices.append(language)
    if not voices:
        raise ValueError(f"`{espeak} --voices=en` listed no usable English voice; is espeak-ng-data installed?")
    return voices


def _espeak_binary() -> str:
    path = shutil.which("espeak-ng")
    if path is None:
        raise FileNotFoundError(
            "espeak-ng is not installed (not on PATH); the digits recipe needs it: apt-get install espeak-ng."
        )
    return path


def digits_to_text(digits: str) -> str:
    """'407' -> 'four zero seven' (the transcript, and what espeak-ng reads)."""
    return " ".join(DIGIT_WORDS[int(d)] for d in digits)


def plan_digits_corpus(recipe: DigitsRecipe, voices: Sequence[str]) -> list[PlannedUtterance]:
    """Draw every utterance's string, split and voice settings from `recipe.seed` alone (no audio made here).

    Splits are by string: a multi-digit string belongs to exactly one split, so the test set measures
    recognition of digit sequences never heard in training. The ten single-digit strings are the one exception:
    each of them is in every split (said by different voices), which also puts every digit in every split.
    """
    if not 1 <= recipe.min_digits <= recipe.max_digits:
        raise ValueError(f"Need 1 <= min_digits <= max_digits, got {recipe.min_digits} and {recipe.max_digits}.")
    held_out = recipe.valid_fraction + recipe.test_fraction
    if recipe.valid_fraction <= 0 or recipe.test_fraction <= 0 or held_out >= 1:
        raise ValueError(
            f"valid_fraction={recipe.valid_fraction} and test_fraction={recipe.test_fraction} must be > 0 "
            "and leave some training data (their sum < 1)."
        )
    singles_needed = len(DIGIT_WORDS) * len(SPLITS)  # every digit, alone, in every split
    if recipe.num_utterances < singles_needed:
        raise ValueError(
            f"num_utterances={recipe.num_utterances} is too few: every split needs each of the 10 single digits "
            f"alone, so at least {singles_needed} utterances."
        )
    rng = random.Random(recipe.seed)

    # The strings: the guaranteed single digits first, then random lengths and digits.
    strings = [str(d) for _ in SPLITS for d in range(10)]
    while len(strings) < recipe.num_utterances:
        length = rng.randint(recipe.min_digits, recipe.max_digits)
        strings.append("".join(rng.choice("0123456789") for _ in range(length)))

    # Splits: one draw per distinct multi-digit string (so all its copies go together).
    split_of_string: dict[str, str] = {}

    def draw_split() -> str:
        u = rng.random()
        return "test" if u < recipe.test_fraction else "valid" if u < held_out else "train"

    splits = []
    for i, s in enumerate(strings):
        if i < singles_needed:
            splits.append(SPLITS[i // 10])
        elif len(s) == 1:
            splits.append(draw_split())  # single digits: an independent draw per utterance
        else:
            if s not in split_of_string:
                split_of_string[s] = draw_split()
            splits.append(split_of_string[s])

    # Settings are drawn per group of `per_call` utterances: one espeak-ng process renders a whole group
    # (see `synthesize_many`). The order is shuffled first, so a group mixes lengths, splits and digits.
    pairs = list(zip(strings, splits))
    rng.shuffle(pairs)
    plan = []
    for i, (s, split) in enumerate(pairs):
        if i % recipe.per_call == 0:
            voice = rng.choice(list(voices)) + rng.choice(VARIANTS)
            speed, pitch, word_gap = rng.randint(*recipe.speed_wpm), rng.randint(*recipe.pitch), rng.randint(*recipe.word_gap)
        plan.append(PlannedUtterance(i, digits_to_text(s), split, voice, speed, pitch, word_gap))
    return plan


def _espeak(text: str, voice: str, speed: int, pitch: int, word_gap: int, ssml: bool = False) -> tuple[np.ndarray, int]:
    """One espeak-ng process -> (float32 samples at espeak-ng's own rate, that rate: 22050 Hz)."""
    command = [_espeak_binary(), "-v", voice, "-s", str(speed), "-p", str(pitch), "-g", str(word_gap), "--stdout"]
    result = subprocess.run(command + (["-m"] if ssml else []) + [text], capture_output=True, check=False)
    if result.returncode != 0 or not result.stdout:
        raise ValueError(
            f"espeak-ng failed for voice {voice!r} on {text!r}: {result.stderr.decode(errors='replace').strip()}"
        )
    # espeak-ng's streamed wav header has no final length; libsndfile reads it to the end of the data.
    samples, rate = soundfile.read(io.BytesIO(result.stdout), dtype="float32")  # (N,)
    return samples, rate


def _to_16k(samples: np.ndarray, rate: int) -> np.ndarray:
    return soxr.resample(samples, rate, SAMPLING_RATE).astype(np.float32, copy=False)


def synthesize(text: str, voice: str, speed: int = 175, pitch: int = 50, word_gap: int = 0) -> np.ndarray:
    """One utterance, one espeak-ng call -> float32 mono waveform at 16 kHz."""
    return _to_16k(*_espeak(text, voice, speed, pitch, word_gap))


# The pause between utterances in one call: an SSML break, which espeak-ng renders as digital silence (exact
# zeros, or int16 noise at about -93 dB for the breathy variants such as +f3, +f4, +m2). Within an utterance the
# longest pause is the word gap (<= 80 ms here), so a quiet run of half the break can only be a break.
_BREAK_S = 1.0
_SILENCE_FLOOR = 1e-3  # |sample| below -60 dB of full scale counts as silence


def synthesize_many(texts: Sequence[str], voice: str, speed: int = 175, pitch: int = 50,
                    word_gap: int = 0) -> list[np.ndarray]:
    """Several utterances with the same settings from one espeak-ng process, cut apart at the breaks.

    Why: ~90 % of an espeak-ng call is start-up (loading the voice and phoneme tables), so eight utterances per
    call make the corpus several times faster. If the cut does not give exactly len(texts) pieces (it never has),
    we fall back to one call per utterance rather than guess."""
    if len(texts) == 1:
        return [synthesize(texts[0], voice, speed, pitch, word_gap)]
    pause = f'<break time="{int(_BREAK_S * 1000)}ms"/>'
    ssml = "<speak>" + pause.join(texts) + "</speak>"
    samples, rate = _espeak(ssml, voice, speed, pitch, word_gap, ssml=True)
    pieces = _split_at_silences(samples, min_run=int(_BREAK_S / 2 * rate))
    if len(pieces) != len(texts):
        return [synthesize(t, voice, speed, pitch, word_gap) for t in texts]
    return [_to_16k(piece, rate) for piece in pieces]  # resampled after the cut: no filter ringing across pieces


def _split_at_silences(samples: np.ndarray, min_run: int) -> list[np.ndarray]:
    """Cut at every run of >= min_run silent samples; the runs themselves are dropped, and so is the silence
    before the first and after the last sound."""
    loud = np.flatnonzero(np.abs(samples) >= _SILENCE_FLOOR)  # positions of sound
    if loud.size == 0:
        return []
    gaps = np.flatnonzero(np.diff(loud) > min_run)  # sound at loud[g], the next sound only after a long silence
    starts = np.concatenate([[loud[0]], loud[gaps + 1]])
    ends = np.concatenate([loud[gaps] + 1, [loud[-1] + 1]])
    # Keep 50 ms of the surrounding quiet on each side, so no onset or decay is cut at a hard edge.
    margin = min_run // 10
    return [samples[max(s - margin, 0) : e + margin] for s, e in zip(starts, ends)]


def _render_group(folder: str, group: list[PlannedUtterance]) -> None:
    paths = [os.path.join(folder, item.audio_path) for item in group]
    if all(os.path.exists(p) for p in paths):  # made by an earlier, interrupted run with the same recipe
        return
    first = group[0]
    waves = synthesize_many([item.text for item in group], first.voice, first.speed, first.pitch, first.word_gap)
    for path, wave in zip(paths, waves):
        # Write beside, then rename: a killed run never leaves a truncated wav under the final name, and two
        # processes rendering the same corpus only ever replace a file with an identical one.
        tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp.wav"
        soundfile.write(tmp, wave, SAMPLING_RATE, subtype="PCM_16")
        os.replace(tmp, path)


def make_digits_corpus(
    folder: str | os.PathLike, recipe: DigitsRecipe | None = None, workers: int | None = None
) -> dict[str, str]:
    """Render the corpus into `folder` (resumable: existing wavs of the same recipe are kept).

    Speed: each espeak-ng call costs ~20 ms, mostly process start-up, so one call renders `recipe.per_call`
    utterances, and `workers` threads (default: the number of CPUs) each run their own espeak-ng process. Returns {split: manifest path}.
    """
    recipe = recipe or DigitsRecipe()
    folder = os.fspath(folder)
    os.makedirs(os.path.join(folder, "wavs"), exist_ok=True)
    recipe_path = os.path.join(folder, "recipe.json")
    voices = english_voices()
    description = {**asdict(recipe), "voices": voices, "variants": list(VARIANTS)}
    description = json.loads(json.dumps(description))  # tuples -> lists, to compare with what json gives back
    if os.path.exists(recipe_path):
        with open(recipe_path, encoding="utf-8") as f:
            if json.load(f) != description:
                raise ValueError(
                    f"{folder} already holds a corpus made with another recipe (see {recipe_path}); "
                    "choose an empty folder, or delete that one."
                )
    with open(recipe_path, "w", encoding="utf-8") as f:
        json.dump(description, f, indent=2)

    plan = plan_digits_corpus(recipe, voices)
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        groups = [plan[i : i + recipe.per_call] for i in range(0, len(plan), recipe.per_call)]
        for future in [pool.submit(_render_group, folder, group) for group in groups]:
            future.result()  # re-raises the first failure

    manifests = {}
    for split in SPLITS:
        manifests[split] = os.path.join(folder, f"{split}.tsv")
        lines = [f"{item.audio_path}\t{item.text}\n" for item in plan if item.split == split]
        with open(manifests[split] + ".tmp", "w", encoding="utf-8") as f:
            f.writelines(lines)
        os.replace(manifests[split] + ".tmp", manifests[split])
    build_digits_tokenizer(os.path.join(folder, "tokenizer"))
    return manifests


# ============================================================================================== the tokenizer
def build_digits_tokenizer(folder: str | os.PathLike, max_length: int = 32) -> None:
    """A word-level tokenizer over the ten digit words plus <pad> <s> </s> <unk>, in transformers' layout
    (tokenizer.json + tokenizer_config.json + special_tokens_map.json); load it with Tokenizer.from_pretrained.

    It adds no special tokens itself (no post-processor): the collator appends </s> to the labels, and the model
    starts decoding from <s> (decoder_start_token_id), so each side of the pair is explicit in our own code."""
    folder = os.fspath(folder)
    os.makedirs(folder, exist_ok=True)
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS + DIGIT_WORDS)}
    tokenizer = HFTokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.add_special_tokens(list(SPECIAL_TOKENS))  # so decode(skip_special_tokens=True) drops them
    tokenizer.save(os.path.join(folder, "tokenizer.json"))
    specials = {"pad_token": "<pad>", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    config = {
        **specials,
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": max_length,
        "clean_up_tokenization_spaces": False,
    }
    for name, content in (("tokenizer_config.json", config), ("special_tokens_map.json", specials)):
        with open(os.path.join(folder, name), "w", encoding="utf-8") as f:
            json.dump(content, f, indent=2)


def recipe_utterances(split: str, count: int, recipe: DigitsRecipe | None = None) -> tuple[list[np.ndarray], list[str]]:
    """The first `count` utterances of one split of the recipe, rendered in memory exactly as the corpus renders
    them (the same espeak-ng groups and settings, no files): (waveforms at 16 kHz, transcripts)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}.")
    recipe = recipe or DigitsRecipe()
    plan = plan_digits_corpus(recipe, english_voices())
    waves: list[np.ndarray] = []
    texts: list[str] = []
    for start in range(0, len(plan), recipe.per_call):
        group = plan[start : start + recipe.per_call]
        if len(waves) >= count:
            break
        if not any(u.split == split for u in group):
            continue
        first = group[0]
        said = synthesize_many([u.text for u in group], first.voice, first.speed, first.pitch, first.word_gap)
        waves += [w for u, w in zip(group, said) if u.split == split]
        texts += [u.text for u in group if u.split == split]
    return waves[:count], texts[:count]


# ============================================================================ audio with known word boundaries
# Word timestamps need a reference: when was each word really said? espeak-ng does not report it, so these
# utterances are built word by word: each digit word is rendered alone (all ten in one espeak-ng call), trimmed
# to its sound (the first and last sample above -60 dB), and joined with silences of known length. The
# boundaries are then exact by construction. (Joined words lose the coarticulation of continuous speech, which
# the bundled model heard in training; the measured word error rate on such audio says how much that matters.)
@dataclass
class TimedUtterance:
    audio: np.ndarray  # float32 mono, 16 kHz
    text: str
    words: list[tuple[str, float, float]]  # (word, start s, end s)


def word_clips(voice: str, speed: int = 175, pitch: int = 50) -> dict[str, np.ndarray]:
    """The ten digit words said by one voice, each trimmed to its sound: word -> float32 samples at 16 kHz."""
    waves = synthesize_many(list(DIGIT_WORDS), voice, speed, pitch)
    clips = {}
    for word, wave in zip(DIGIT_WORDS, waves):
        loud = np.flatnonzero(np.abs(wave) >= _SILENCE_FLOOR)
        if loud.size == 0:
            raise ValueError(f"espeak-ng voice {voice!r} said nothing audible for {word!r}.")
        clips[word] = wave[loud[0] : loud[-1] + 1]
    return clips


def timed_utterance(words: Sequence[str], clips: dict[str, np.ndarray], rng: random.Random,
                    gap_s: tuple[float, float] = (0.05, 0.25), edge_s: tuple[float, float] = (0.1, 0.4)) -> TimedUtterance:
    """`words` said with `clips`, separated by random silences of gap_s seconds, with edge_s of silence before
    the first and after the last word."""
    def silence(bounds: tuple[float, float]) -> np.ndarray:
        return np.zeros(int(rng.uniform(*bounds) * SAMPLING_RATE), dtype=np.float32)

    parts, timed, at = [silence(edge_s)], [], 0
    at = len(parts[0])
    for k, word in enumerate(words):
        if k:
            parts.append(silence(gap_s))
            at += len(parts[-1])
        parts.append(clips[word])
        timed.append((word, at / SAMPLING_RATE, (at + len(clips[word])) / SAMPLING_RATE))
        at += len(clips[word])
    parts.append(silence(edge_s))
    return TimedUtterance(np.concatenate(parts), " ".join(words), timed)


def timed_digit_strings(count: int, seed: int, voices: Sequence[str] | None = None, min_digits: int = 1,
                        max_digits: int = 8, gap_s: tuple[float, float] = (0.05, 0.25)) -> list[TimedUtterance]:
    """`count` random digit strings with exact word boundaries, voices and speeds drawn from `seed` (one espeak-ng
    call per distinct voice setting); gap_s: the silence between two words ((0, 0): words said without a break,
    each starting where the one before ends)."""
    rng = random.Random(seed)
    voices = list(voices) if voices is not None else english_voices()
    settings = [(rng.choice(voices), rng.randint(140, 190), rng.randint(35, 65)) for _ in range(max(1, count // 4))]
    clips = {s: word_clips(*s) for s in set(settings)}
    out = []
    for _ in range(count):
        digits = "".join(rng.choice("0123456789") for _ in range(rng.randint(min_digits, max_digits)))
        out.append(timed_utterance(digits_to_text(digits).split(), clips[rng.choice(settings)], rng, gap_s))
    return out


def long_recording(seconds: float, seed: int, voices: Sequence[str] | None = None,
                   pause_s: tuple[float, float] = (0.6, 1.5)) -> tuple[TimedUtterance, list[TimedUtterance]]:
    """Digit strings said one after another, with pauses of pause_s between them, until `seconds` of audio:
    the long recording, and the same strings as separate utterances (the short-form reference)."""
    rng = random.Random(seed)
    return join_with_pauses(timed_digit_strings(max(1, int(seconds / 2)), seed, voices), seconds, rng, pause_s)


def join_with_pauses(pieces: Sequence[TimedUtterance], seconds: float, rng: random.Random,
                     pause_s: tuple[float, float] = (0.6, 1.5)) -> tuple[TimedUtterance, list[TimedUtterance]]:
    """`pieces` one after another, with a pause (digital silence) of pause_s drawn from `rng` between two, until
    `seconds` of audio: one recording whose word times are the pieces' own, shifted; and the pieces it used."""
    parts, words, used, at = [], [], [], 0
    for piece in pieces:
        if at / SAMPLING_RATE >= seconds:
            break
        if parts:
            pause = np.zeros(int(rng.uniform(*pause_s) * SAMPLING_RATE), dtype=np.float32)
            parts.append(pause)
            at += len(pause)
        parts.append(piece.audio)
        words += [(w, s + at / SAMPLING_RATE, e + at / SAMPLING_RATE) for w, s, e in piece.words]
        used.append(piece)
        at += len(piece.audio)
    return TimedUtterance(np.concatenate(parts), " ".join(u.text for u in used), words), used
