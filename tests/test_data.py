"""Generic training data: the manifest dataset, length-bucketed batches, augmentation, collation."""

import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile
import torch

from minispeechseq.audio import Wav2Vec2FeatureExtractor
from minispeechseq.training import data
from minispeechseq.training.digits import DIGIT_WORDS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # this checkout, not an installed copy


# ----------------------------------------------------------------------------------------- manifests
def _write_corpus(folder, durations):
    os.makedirs(folder / "wavs", exist_ok=True)
    lines = []
    for i, seconds in enumerate(durations):
        wave = 0.1 * np.sin(np.arange(int(seconds * 16000)) * 0.05).astype(np.float32)
        soundfile.write(folder / "wavs" / f"{i}.wav", wave, 16000, subtype="PCM_16")
        lines.append(f"wavs/{i}.wav\t{' '.join(DIGIT_WORDS[(i + k) % 10] for k in range(i % 3 + 1))}\n")
    (folder / "train.tsv").write_text("".join(lines))
    return folder / "train.tsv"


def test_manifest_dataset_reads_relative_paths_and_lengths(tmp_path):
    manifest = _write_corpus(tmp_path, [0.5, 0.25, 1.0])
    ds = data.ManifestDataset(manifest)
    assert len(ds) == 3 and ds.lengths == [8000, 4000, 16000]
    item = ds[2]
    assert item["index"] == 2 and item["audio"].shape == (16000,) and item["text"] == "two three four"


def test_manifest_errors_are_sentences(tmp_path):
    with pytest.raises(FileNotFoundError, match="No manifest"):
        data.ManifestDataset(tmp_path / "missing.tsv")
    (tmp_path / "bad.tsv").write_text("only-one-field\n")
    with pytest.raises(ValueError, match="line 1: expected `audio_path<TAB>transcript`"):
        data.ManifestDataset(tmp_path / "bad.tsv")
    (tmp_path / "gone.tsv").write_text("nowhere.wav\tone\n")
    with pytest.raises(FileNotFoundError, match="line 1: no audio file"):
        data.ManifestDataset(tmp_path / "gone.tsv")


# ------------------------------------------------------------------------------------------- batching
def test_bucket_batches_cover_everything_once_and_group_lengths():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1000, 100000, size=1000).tolist()
    sampler = data.BucketBatchSampler(lengths, batch_size=16, seed=7, pool_batches=10)
    batches = sampler.batches(epoch=1)
    assert sorted(i for b in batches for i in b) == list(range(1000))
    # Padding: the spread within a bucketed batch is far below that of a random batch.
    spread = np.mean([max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches])
    random_spread = np.mean([np.ptp(rng.choice(lengths, 16)) for _ in range(100)])
    assert spread < random_spread / 5, f"bucketed spread {spread:.0f} vs random {random_spread:.0f}"
    assert sampler.batches(1) == batches, "same (seed, epoch) must give the same batches"
    assert sampler.batches(2) != batches, "another epoch must reshuffle"


def test_shortest_first_epoch_then_random():
    lengths = [5, 3, 9, 1, 7, 2]
    sampler = data.BucketBatchSampler(lengths, batch_size=2, seed=0, shortest_first=True)
    assert sampler.batches(0) == [[3, 5], [1, 0], [4, 2]]
    assert sampler.batches(1) != sampler.batches(0)


def test_rank_shares_partition_a_global_batch():
    batch = list(range(10))
    shares = [data.rank_share(batch, r, 3) for r in range(3)]
    assert sorted(i for share in shares for i in share) == batch


# --------------------------------------------------------------------------------------- augmentation
def test_augmentation_snr_silence_and_determinism():
    wave = (np.random.default_rng(1).standard_normal(16000) * 0.1).astype(np.float32)  # aperiodic "speech"
    aug = data.Augmentation(max_silence_s=0.3, gain_db=(0.0, 0.0), snr_db=(20.0, 20.0))
    out = aug(wave, data.item_rng(0, 0, 5))
    again = aug(wave, data.item_rng(0, 0, 5))
    np.testing.assert_array_equal(out, again)
    assert 16000 <= len(out) <= 16000 + 2 * 4800
    # Find where the speech sits: the residual against the clean wave is the noise, at 20 dB below the speech.
    lead = int(np.argmin([np.mean((out[k:k + 16000] - wave) ** 2) for k in range(len(out) - 16000 + 1)]))
    noise = out[lead:lead + 16000] - wave
    snr = 10 * np.log10(np.mean(wave ** 2) / np.mean(noise ** 2))
    assert abs(snr - 20.0) < 0.3, f"measured SNR {snr:.2f} dB, expected 20 dB"
    assert not np.array_equal(out, aug(wave, data.item_rng(0, 1, 5))), "another epoch must draw anew"


# ------------------------------------------------------------------------------------------- collation
class _WordTokenizer:
    eos_token_id = 2

    def encode(self, text, add_special_tokens=True):
        return [4 + DIGIT_WORDS.index(w) for w in text.split()]


def test_collator_pads_audio_with_mask_and_labels_with_minus_100():
    fe = Wav2Vec2FeatureExtractor(return_attention_mask=True)
    collate = data.Collator(fe, _WordTokenizer())
    items = [{"index": 0, "audio": np.ones(100, np.float32) * np.arange(100), "text": "one two"},
             {"index": 1, "audio": np.ones(60, np.float32) * np.arange(60), "text": "nine"}]
    batch = collate(items)
    assert batch["input_values"].shape == (2, 100)
    assert batch["attention_mask"].tolist() == [[1] * 100, [1] * 60 + [0] * 40]
    assert batch["labels"].tolist() == [[5, 6, 2], [13, 2, -100]]
    # The feature extractor's own output for the short one, alone: padding did not change its values.
    alone = fe(items[1]["audio"], return_tensors="pt")["input_values"][0]
    assert torch.equal(batch["input_values"][1, :60], alone)
    no_mask = data.Collator(Wav2Vec2FeatureExtractor(return_attention_mask=False), _WordTokenizer())(items)
    assert "attention_mask" not in no_mask


def test_the_generic_pieces_stand_without_the_digits_recipe():
    # Any corpus in manifest form trains with data.py alone; and `import minispeechseq` loads no training code.
    code = ("import sys, minispeechseq, minispeechseq.training.data; "
            "print(sorted(m for m in sys.modules if m.startswith('minispeechseq.training.')))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                          check=True)
    assert done.stdout.split() == ["['minispeechseq.training.data']"], done.stdout
