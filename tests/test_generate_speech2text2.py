"""Greedy generation with the wav2vec2 + Speech2Text2 pair, token-exact with transformers 4.50.3.

transformers 5 cannot build Speech2Text2, so the reference is a fixture: tests/make_speech2text2_fixtures.py
built a SpeechEncoderDecoderModel (large-layout wav2vec2, width 24, + a Speech2Text2 decoder, width 32, joined by
transformers' enc_to_dec_proj) with transformers 4.50.3, wrote it with save_pretrained (fixtures/speech2text2/
generate/) and stored in generate_io.safetensors the padded batch it fed to `generate` and the greedy ids it
returned (8 new tokens), plus its encoder output and the teacher-forced logits on those ids.

Here ours loads that folder and must reproduce the ids. The two stage checks before it say where a mismatch
would come from: the encoder memory, then the decoder's logits.
"""

import os

import pytest
import torch
from safetensors.torch import load_file

from minispeechseq import SpeechEncoderDecoderModel
from tests.utils import ATOL_FP32, assert_close

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "speech2text2")
PAD = 1  # the fixture's pad id (its generation_config.json: start 2, eos 2, pad 1)


@pytest.fixture(scope="module")
def io():
    return load_file(os.path.join(FIXTURES, "generate_io.safetensors"))


@pytest.fixture(scope="module", params=["eager", "sdpa"])
def model(request):
    return SpeechEncoderDecoderModel.from_pretrained(os.path.join(FIXTURES, "generate"),
                                                     attn_implementation=request.param).eval()


def test_encoder_memory_matches(model, io):
    # 4.50.3 returns encoder_last_hidden_state after enc_to_dec_proj (32 wide): what cross-attention reads.
    # Padded frames (row 1 after frame 73) are not compared: neither side's output is defined there.
    with torch.no_grad():
        memory, frame_mask = model.encode(io["input_values"], io["attention_mask"])
    assert frame_mask is not None, "the layer-norm (large) wav2vec2 layout uses the attention mask"
    keep = frame_mask.bool()
    assert int(keep[1].sum()) == 73, f"1500 samples give 73 frames, got {int(keep[1].sum())}"
    assert_close(memory[keep], io["encoder_last_hidden_state"][keep], ATOL_FP32, "encoder memory (after projection)")


def test_teacher_forced_logits_match(model, io):
    ids = io["generated_ids"]
    with torch.no_grad():
        out = model(io["input_values"], attention_mask=io["attention_mask"], decoder_input_ids=ids,
                    decoder_attention_mask=ids.ne(PAD).long())
    assert_close(out.logits, io["logits"], ATOL_FP32, "logits on transformers' greedy ids")


@pytest.mark.parametrize("use_cache", [True, False], ids=["cache", "no-cache"])
def test_greedy_ids_token_exact(model, io, use_cache):
    # Ids come from the checkpoint's generation_config.json, as transformers read them (start 2, eos 2, pad 1).
    got = model.generate(io["input_values"], attention_mask=io["attention_mask"], max_new_tokens=8,
                         use_cache=use_cache)
    ref = io["generated_ids"]
    assert got.shape == ref.shape, f"shape {tuple(got.shape)} vs transformers 4.50.3 {tuple(ref.shape)}\n{got}\n{ref}"
    assert torch.equal(got, ref), f"tokens differ\nours\n{got}\ntransformers 4.50.3\n{ref}"
