"""`minispeechseq pretrain` (training/pretrain.py): the unlabelled corpus, HuBERT-style cluster targets, both
objectives' loops with exact resume, and the fine-tune's --encoder-init / --freeze-encoder.

The corpus here is written directly (sines and noise as audio.npy + index.json), so no test needs espeak-ng.
"""

from __future__ import annotations

import itertools
import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from minispeechseq import SpeechEncoderDecoderModel, Tokenizer, Wav2Vec2Model
from minispeechseq.tools import pretrain as pt_cli
from minispeechseq.tools import train as train_cli
from minispeechseq.training import pretrain as pt
from minispeechseq.training import train as tr
from tests.utils import write_tone_corpus


def write_corpus(folder, pieces: int = 12, seed: int = 0) -> str:
    """Sine bursts of random pitch and length (1-2.5 s) with pauses: audio.npy + index.json, as make_unlabelled_corpus
    writes them."""
    rng = np.random.default_rng(seed)
    waves = []
    for _ in range(pieces):
        n = int(rng.uniform(1.0, 2.5) * 16000)
        t = np.arange(n) / 16000
        wave = 0.3 * np.sin(2 * np.pi * rng.uniform(150, 900) * t) * (np.sin(2 * np.pi * 2 * t) > 0)
        waves.append(wave.astype(np.float32))
    offsets = np.cumsum([0] + [len(w) for w in waves]).tolist()
    os.makedirs(folder, exist_ok=True)
    np.save(os.path.join(folder, pt.CORPUS_AUDIO), np.concatenate(waves))
    with open(os.path.join(folder, pt.CORPUS_INDEX), "w") as f:
        json.dump({"offsets": offsets, "sources": ["test"] * pieces, "hours": offsets[-1] / 16000 / 3600}, f)
    return str(folder)


def args_for(corpus, out, *extra):
    args = pt_cli.build_parser().parse_args(["--corpus", corpus, "--out", str(out), "--steps", "4", "--batch-size", "4",
                                         "--max-samples", "24000", "--log-every", "1", "--save-every", "2",
                                         "--kmeans-batches", "3", "--clusters", "8", "--negatives", "5",
                                         "--quiet", *extra])
    pt_cli.check_args(args)
    return args


def metrics(out) -> list[dict]:
    with open(os.path.join(out, pt.METRICS_FILE)) as f:
        return [json.loads(line) for line in f]


# ----------------------------------------------------------------------------------------- the corpus
def test_read_words_drops_digit_names_and_refuses_too_few(tmp_path):
    text = tmp_path / "words.txt"
    filler = ["".join(pair) + "ly" for pair in itertools.product("abcdefghijklm", repeat=2)]  # 169 plain words
    text.write_text("\n".join(["one", "Two", "three", "four", "oh", "can't", "x", *filler]))
    got = pt.read_words(text)
    assert not {"one", "three", "four", "oh"} & set(got), got[:10]
    assert all(w.isalpha() and w.islower() and len(w) >= 2 for w in got)
    (tmp_path / "few.txt").write_text("apple banana cherry")
    with pytest.raises(ValueError, match="usable words"):
        pt.read_words(tmp_path / "few.txt")


def test_corpus_batches_are_cropped_noisy_and_normalised(tmp_path):
    corpus = pt.UnlabelledCorpus(write_corpus(tmp_path / "c"))
    samples, mask = corpus.batch(6, 20000, np.random.default_rng(0))
    assert samples.shape[0] == 6 and samples.shape[1] <= 20000
    for row, m in zip(samples, mask):
        real = row[m.bool()]
        assert abs(float(real.mean())) < 1e-4 and abs(float(real.std()) - 1) < 1e-2, (real.mean(), real.std())
        assert float(real.abs().min()) >= 0 and int((real == 0).sum()) < 10, "digital silence left in the crop"
    os.remove(tmp_path / "c" / pt.CORPUS_AUDIO)
    with pytest.raises(FileNotFoundError, match="not an unlabelled corpus"):
        pt.UnlabelledCorpus(tmp_path / "c")


# ------------------------------------------------------------------------------------ cluster targets
def test_mel_filterbank_matches_transformers():
    audio_utils = pytest.importorskip("transformers.audio_utils")
    ours = pt.mel_filterbank(40, 1024, 16000, low_hz=20.0, high_hz=8000.0)
    theirs = audio_utils.mel_filter_bank(513, 40, 20.0, 8000.0, 16000, norm=None, mel_scale="htk")
    diff = (ours.double() - torch.from_numpy(theirs).T).abs().max().item()
    assert diff < 1e-5, f"mel filterbank differs from transformers' by {diff} (tolerance 1e-5)"


def test_kmeans_recovers_separated_clusters():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(5, 40, generator=g) * 10
    rows = torch.cat([c + 0.1 * torch.randn(200, 40, generator=g) for c in centres])
    targets = pt.ClusterTargets(hop=640, num_clusters=5)
    targets.fit(rows, seed=0)
    assign = torch.cdist(rows, targets.centroids).argmin(1).view(5, 200)
    purity = [float((a == a.mode().values).float().mean()) for a in assign]
    assert min(purity) == 1.0 and len({int(a.mode().values) for a in assign}) == 5, purity


def test_cluster_targets_line_up_with_encoder_frames():
    # A tone switched on at frame 20 changes the log-mel rows from there on, not earlier ones.
    encoder = Wav2Vec2Model(pt.encoder_config(args_for("x", "y")))
    hop, L = 640, 640 * 40 + 40
    frames = int(encoder.output_lengths(torch.tensor(L)))
    samples = 1e-3 * torch.randn(1, L, generator=torch.Generator().manual_seed(0))
    samples[0, 20 * hop + 340:] += torch.sin(torch.arange(L - 20 * hop - 340) * 2 * torch.pi * 1000 / 16000)
    feats = pt.ClusterTargets(hop).features(samples, frames)[0]  # (frames, 40)
    assert feats.shape == (frames, 40)
    energy = feats.logsumexp(-1)
    jump = int(energy.diff().argmax()) + 1
    assert jump in (19, 20, 21), f"the tone shows in row {jump}, expected ~20 (frame of its onset)"


def test_masked_cluster_prediction_loss_is_cross_entropy_on_hidden_frames():
    config = pt.encoder_config(args_for("x", "y"))
    torch.manual_seed(0)
    model = pt.MaskedClusterPrediction(config, num_clusters=8).eval()
    samples = torch.randn(2, 16000)
    T = int(model.encoder.output_lengths(torch.tensor(16000)))
    hidden = torch.zeros(2, T, dtype=torch.bool)
    hidden[:, 3:8] = True
    targets = torch.randint(0, 8, (2, T))
    loss, _ = model(samples, torch.ones(2, 16000, dtype=torch.long), hidden, targets)
    states = model.encoder(samples, mask_time_indices=hidden).last_hidden_state
    manual = F.cross_entropy(model.head(states)[hidden], targets[hidden], reduction="sum")
    assert abs(loss.item() - manual.item()) < 1e-4 * manual.item(), (loss.item(), manual.item())


# ------------------------------------------------------------------------------------------- the loops
@pytest.mark.parametrize("objective", pt.OBJECTIVES)
def test_pretrain_runs_saves_the_encoder_and_resumes_exactly(tmp_path, objective):
    corpus = write_corpus(tmp_path / "c")
    torch.set_num_threads(1)
    pt.pretrain(args_for(corpus, tmp_path / "full", "--objective", objective))
    full = metrics(tmp_path / "full")
    assert [r["step"] for r in full] == [1, 2, 3, 4] and all(np.isfinite(r["loss"]) for r in full)
    # Interrupted after step 2 (its checkpoint), then resumed: steps 3 and 4 are the same numbers.
    pt.pretrain(args_for(corpus, tmp_path / "cut", "--objective", objective, "--max-minutes", "1e-9"))
    assert [r["step"] for r in metrics(tmp_path / "cut")] == [1]
    with pytest.raises(ValueError, match="already holds checkpoints"):
        pt.pretrain(args_for(corpus, tmp_path / "cut", "--objective", objective))
    pt.pretrain(args_for(corpus, tmp_path / "cut", "--objective", objective, "--resume"))
    resumed = metrics(tmp_path / "cut")
    for a, b in zip(full[1:], resumed[1:]):
        assert abs(a["loss"] - b["loss"]) < 1e-5 * abs(a["loss"]), (a, b)
    encoder = Wav2Vec2Model.from_pretrained(tmp_path / "full" / "encoder")
    assert encoder.config.hidden_size == tr.PRESETS["tiny"]()[0]["hidden_size"]


def test_pretrain_refuses_bad_arguments(tmp_path):
    for flags, message in ((["--steps", "0"], "--steps"), (["--mask-prob", "0"], "--mask-prob"),
                           (["--lr", "nan"], "--lr"), (["--max-samples", "100"], "--max-samples")):
        args = pt_cli.build_parser().parse_args(["--corpus", "c", "--out", str(tmp_path / "o"), *flags])
        with pytest.raises(ValueError, match=message):
            pt_cli.check_args(args)


# ---------------------------------------------------------------------------- fine-tuning from it
@pytest.fixture(scope="module")
def tone_corpus(tmp_path_factory):
    """16 utterances of tone bursts and a tokenizer (the loop's mechanics, not recognition)."""
    folder = tmp_path_factory.mktemp("tones")
    (folder / "train.tsv").write_text("".join(write_tone_corpus(folder, count=16, max_digits=3)))
    return folder


def fine_tune(corpus, out, *extra) -> SpeechEncoderDecoderModel:
    torch.set_num_threads(1)
    code = train_cli.main(["--preset", "tiny", "--train-manifest", str(corpus / "train.tsv"), "--tokenizer",
                    str(corpus / "tokenizer"), "--out", str(out), "--steps", "2", "--batch-size", "4",
                    "--save-every", "2", "--quiet", *extra])
    assert code == 0
    return SpeechEncoderDecoderModel.from_pretrained(os.path.join(out, "final"))


def test_encoder_init_loads_every_weight_and_refuses_another_shape(tmp_path, tone_corpus):
    torch.manual_seed(1)
    pretrained = Wav2Vec2Model(pt.encoder_config(args_for("x", "y")))
    pretrained.save_pretrained(tmp_path / "enc")
    # Frozen: after two steps the encoder is still exactly the pretrained one, and the decoder has moved.
    frozen = fine_tune(tone_corpus, tmp_path / "frozen", "--encoder-init", str(tmp_path / "enc"), "--freeze-encoder")
    ours, theirs = frozen.encoder.state_dict(), pretrained.state_dict()
    assert set(ours) == set(theirs)
    worst = max((ours[k] - theirs[k]).abs().max().item() for k in theirs)
    assert worst == 0.0, f"encoder weights differ by {worst} after --encoder-init --freeze-encoder"
    assert frozen.config.encoder.mask_time_prob == tr.PRESETS["tiny"]()[0]["mask_time_prob"], "preset's SpecAugment"
    # Not frozen: the same start, and the encoder moves too.
    tuned = fine_tune(tone_corpus, tmp_path / "tuned", "--encoder-init", str(tmp_path / "enc"))
    moved = max((a - b).abs().max().item() for a, b in zip(tuned.encoder.parameters(), pretrained.parameters()))
    assert moved > 0, "two fine-tuning steps changed no encoder weight"

    other = pt.encoder_config(args_for("x", "y"))
    other.num_hidden_layers = 2
    Wav2Vec2Model(other).save_pretrained(tmp_path / "small")
    with pytest.raises(ValueError, match="num_hidden_layers 2 != 4"):
        tr.load_encoder_weights(tr.preset_model("tiny", Tokenizer.from_pretrained(tone_corpus / "tokenizer")),
                                str(tmp_path / "small"))
    assert train_cli.main(["--encoder-init", str(tmp_path / "enc"), "--init", "x", "--out", str(tmp_path / "o"),
                    "--quiet"]) != 0, "--encoder-init without --preset must be refused"
