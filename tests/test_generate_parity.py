"""Full-model generation parity: our SpeechEncoderDecoderModel, loaded from a tiny transformers checkpoint
written with save_pretrained, generates exactly transformers' tokens (greedy, beams, sampling).

The decoding loop itself is tested in isolation in test_generation_search.py (transformers' own modules behind
our protocol); here the logits come from our modules, so this checks the whole path end to end.
"""

import pytest
import torch

from minispeechseq import SpeechEncoderDecoderModel
from tests.test_generation_search import EOS, assert_tokens, audio, build
from tests.utils import assert_close

SEQ_SCORE_ATOL = 1e-4


@pytest.fixture(scope="module", params=["gpt2", "bert"])
def pair(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(request.param)
    hf, _ = build(request.param, seed=2, tmp_path=folder)
    ours = SpeechEncoderDecoderModel.from_pretrained(folder, attn_implementation="eager").eval()
    return request.param, hf, ours


def bert_padding_fix(name, ref, pad):
    """transformers' beam search pads finished rows with EOS when pad_token_id is 0 (BERT): see
    test_generation_search.test_bert_pad_zero. Map that fill back to pad before comparing."""
    if name != "bert":
        return ref
    after_eos = (ref == EOS).int().cumsum(1) - (ref == EOS).int() > 0
    return ref.masked_fill(after_eos, pad)


def test_greedy(pair):
    name, hf, ours = pair
    x, mask = audio(2, 0)
    assert_tokens(ours.generate(x, attention_mask=mask, max_new_tokens=12),
                  hf.generate(x, attention_mask=mask, max_new_tokens=12), f"{name} greedy")


@pytest.mark.parametrize("early_stopping", [True, False, "never"])
def test_beam_search(pair, early_stopping):
    name, hf, ours = pair
    x, mask = audio(2, 1)
    kw = {"num_beams": 3, "num_return_sequences": 2, "max_new_tokens": 12, "length_penalty": 0.8, "early_stopping": early_stopping}
    ref = hf.generate(x, attention_mask=mask, return_dict_in_generate=True, output_scores=True, **kw)
    got = ours.generate(x, attention_mask=mask, return_dict=True, **kw)
    assert_tokens(got.sequences, bert_padding_fix(name, ref.sequences, ours.config.pad_token_id), f"{name} beams {kw}")
    assert_close(got.sequences_scores, ref.sequences_scores, SEQ_SCORE_ATOL, f"{name} sequences_scores")


def test_sampling(pair):
    name, hf, ours = pair
    x, mask = audio(2, 2)
    kw = {"do_sample": True, "temperature": 0.8, "top_k": 6, "top_p": 0.9, "max_new_tokens": 12, "num_return_sequences": 2}
    torch.manual_seed(5)
    ref = hf.generate(x, attention_mask=mask, **kw)
    torch.manual_seed(5)
    assert_tokens(ours.generate(x, attention_mask=mask, **kw), ref, f"{name} sampling")
