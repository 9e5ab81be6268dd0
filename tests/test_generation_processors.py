"""Each logit processor equals transformers' processor on random logits and token histories, plus
GenerationConfig file round trips and argument errors."""

import json

import pytest
import torch
from transformers.generation import logits_process as hf

from minispeechseq.generation import (
    ForceToken,
    GenerationConfig,
    MinLength,
    NoBadWords,
    NoRepeatNGram,
    RepetitionPenalty,
    SuppressTokens,
    Temperature,
    TopK,
    TopP,
    build_processors,
)
from tests.utils import ATOL_FP32, assert_close

V = 30


def random_case(seed: int, rows: int = 6, length: int = 9, vocab: int = V):
    g = torch.Generator().manual_seed(seed)
    # A small id range so that repeats and n-gram matches actually happen.
    ids = torch.randint(0, 8, (rows, length), generator=g)
    scores = torch.randn(rows, vocab, generator=g) * 3
    return ids, scores


def check(ours, ref, seed, what, **case):
    ids, scores = random_case(seed, **case)
    expected = ref(ids, scores.clone())
    got = ours(ids, scores.clone())
    # -inf must sit at the same places; finite values must agree.
    assert torch.equal(torch.isinf(got), torch.isinf(expected)), f"{what}: -inf at different places (seed {seed})"
    finite = ~torch.isinf(expected)
    assert_close(got[finite], expected[finite], ATOL_FP32, f"{what} (seed {seed})")


SEEDS = [0, 1, 2, 3]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("penalty", [0.7, 1.3, 2.0])
def test_repetition_penalty(seed, penalty):
    check(RepetitionPenalty(penalty), hf.RepetitionPenaltyLogitsProcessor(penalty), seed, "repetition penalty")


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n", [1, 2, 3])
def test_no_repeat_ngram(seed, n):
    check(NoRepeatNGram(n), hf.NoRepeatNGramLogitsProcessor(n), seed, f"no-repeat {n}-gram")
    check(NoRepeatNGram(n), hf.NoRepeatNGramLogitsProcessor(n), seed, f"no-repeat {n}-gram, short", length=2)


@pytest.mark.parametrize("seed", SEEDS)
def test_bad_words(seed):
    words = [[3], [1, 2], [4, 5, 6], [7], [2]]  # [2] is an EOS id: transformers drops it, so must we
    check(NoBadWords(words, [2, 9]), hf.NoBadWordsLogitsProcessor(words, [2, 9]), seed, "bad words")


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("min_length", [5, 9, 10])
def test_min_length(seed, min_length):
    check(MinLength(min_length, [2, 5]), hf.MinLengthLogitsProcessor(min_length, [2, 5]), seed, "min length")


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("length", [1, 2])
def test_forced_bos(seed, length):
    check(ForceToken(7, at_length=1), hf.ForcedBOSTokenLogitsProcessor(7), seed, "forced BOS", length=length)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("length", [8, 9])
def test_forced_eos(seed, length):
    ref = hf.ForcedEOSTokenLogitsProcessor(max_length=10, eos_token_id=[4, 6])
    check(ForceToken([4, 6], at_length=9), ref, seed, "forced EOS", length=length)


@pytest.mark.parametrize("seed", SEEDS)
def test_suppress_tokens(seed):
    check(SuppressTokens([0, 3, 29]), hf.SuppressTokensLogitsProcessor([0, 3, 29]), seed, "suppress")


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("t", [0.3, 1.7])
def test_temperature(seed, t):
    check(Temperature(t), hf.TemperatureLogitsWarper(t), seed, "temperature")


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("k", [1, 4, 50])
def test_top_k(seed, k):
    check(TopK(k), hf.TopKLogitsWarper(k), seed, f"top-k {k}")


def test_top_k_keeps_ties():
    scores = torch.tensor([[1.0, 3.0, 2.0, 2.0, 0.0]])
    kept = ~torch.isinf(TopK(2)(None, scores))
    assert kept.tolist() == [[False, True, True, True, False]], "both tokens tied with the 2nd best must stay"


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("p", [0.1, 0.5, 0.9, 1.0])
def test_top_p(seed, p):
    check(TopP(p), hf.TopPLogitsWarper(p), seed, f"top-p {p}")


def test_order_matches_transformers():
    """The whole chain, sampling included, equals transformers' processors applied in its order."""
    config = GenerationConfig(
        repetition_penalty=1.4, no_repeat_ngram_size=2, bad_words_ids=[[1, 2], [6]], min_length=12,
        forced_eos_token_id=2, suppress_tokens=[5], do_sample=True, temperature=0.7, top_k=10, top_p=0.8,
        eos_token_id=2,
    )
    chain = [
        hf.RepetitionPenaltyLogitsProcessor(1.4), hf.NoRepeatNGramLogitsProcessor(2),
        hf.NoBadWordsLogitsProcessor([[1, 2], [6]], [2]), hf.MinLengthLogitsProcessor(12, [2]),
        hf.ForcedEOSTokenLogitsProcessor(15, [2]), hf.SuppressTokensLogitsProcessor([5]),
        hf.TemperatureLogitsWarper(0.7), hf.TopKLogitsWarper(10), hf.TopPLogitsWarper(0.8),
    ]
    ours = build_processors(config, max_length=15, min_length=12)
    assert len(ours) == len(chain), f"{len(ours)} processors built, transformers' order has {len(chain)}"

    def run(ps):
        return lambda ids, s: [s := p(ids, s) for p in ps][-1]

    for seed in SEEDS:
        check(run(ours), run(chain), seed, "processor chain")


def test_generation_config_round_trip(tmp_path):
    from transformers import GenerationConfig as HFGenerationConfig

    HFGenerationConfig(num_beams=4, length_penalty=0.5, eos_token_id=[2, 3], decoder_start_token_id=1).save_pretrained(tmp_path)
    config = GenerationConfig.from_pretrained(tmp_path)
    assert (config.num_beams, config.length_penalty, config.eos_token_id) == (4, 0.5, [2, 3])
    assert "transformers_version" in config.extra, "keys we do not model must be kept"
    config.save_pretrained(tmp_path / "again")
    again = json.loads((tmp_path / "again" / "generation_config.json").read_text())
    assert again["transformers_version"] == config.extra["transformers_version"]
    assert GenerationConfig.from_pretrained(tmp_path / "again") == config
    reread = HFGenerationConfig.from_pretrained(tmp_path / "again")
    assert (reread.num_beams, reread.length_penalty) == (4, 0.5), "transformers must read what we write"
    assert GenerationConfig.from_dict(config.to_dict()) == config


def test_generation_config_file_name_both_ways(tmp_path):
    """transformers' `config_file_name=` (5.24's only name for it): several setups side by side in one folder."""
    from transformers import GenerationConfig as HFGenerationConfig

    HFGenerationConfig(num_beams=4, max_new_tokens=7).save_pretrained(tmp_path, config_file_name="beam.json")
    beam = GenerationConfig.from_pretrained(tmp_path, config_file_name="beam.json")
    assert (beam.num_beams, beam.max_new_tokens) == (4, 7)
    GenerationConfig(do_sample=True, top_k=5).save_pretrained(tmp_path, config_file_name="sample.json")
    GenerationConfig(num_beams=2).save_pretrained(tmp_path)  # the default name is still the default
    assert sorted(p.name for p in tmp_path.iterdir()) == ["beam.json", "generation_config.json", "sample.json"]
    reread = HFGenerationConfig.from_pretrained(tmp_path, config_file_name="sample.json")
    assert (reread.do_sample, reread.top_k) == (True, 5), "transformers reads the file we named"
    assert GenerationConfig.from_pretrained(tmp_path, "sample.json").top_k == 5  # positional, as transformers allows
    assert GenerationConfig.from_pretrained(tmp_path).num_beams == 2
    with pytest.raises(FileNotFoundError, match="greedy.json"):
        GenerationConfig.from_pretrained(tmp_path, config_file_name="greedy.json")


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_beamz"):
        GenerationConfig().update(num_beamz=3)
    with pytest.raises(FileNotFoundError, match="generation_config.json"):
        GenerationConfig.from_pretrained("/nonexistent-folder")
    with pytest.raises(ValueError, match="top_p"):
        TopP(1.5)
    with pytest.raises(ValueError, match="temperature"):
        Temperature(0.0)
    with pytest.raises(ValueError, match="bad_words_ids"):
        NoBadWords([[1, -2]])
