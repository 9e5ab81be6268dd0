"""Speech2Text2 decoder parity against transformers 4.50.3, through committed reference outputs.

transformers 5.x no longer has Speech2Text2, so tests/make_speech2text2_fixtures.py ran the reference once (see
its docstring for what each fixture holds). Every expected value below comes from that run, none from our code;
the checks shared with the other decoders are tests/decoder_parity.py's, with that run as the reference.
"""

import json
import os
import shutil
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from minispeechseq.files.checkpoint import load_state_dict
from minispeechseq.decoders.speech2text2 import Speech2Text2Cache, Speech2Text2ForCausalLM
from minispeechseq.layers import sinusoids
from minispeechseq.weights_convert import speech2text2 as speech2text2_convert
from tests.decoder_parity import (
    DecoderCase,
    cached_steps,
    check_attentions,
    check_backends_agree,
    check_cached_steps,
    check_logits,
    check_loss,
)
from tests.utils import ATOL_FP32, assert_close

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "speech2text2")
IO = load_file(os.path.join(FIXTURES, "decoder_io.safetensors"))
IMPLS = ("eager", "sdpa")


def load(name: str = "decoder", impl: str = "eager") -> Speech2Text2ForCausalLM:
    return Speech2Text2ForCausalLM.from_pretrained(os.path.join(FIXTURES, name), attn_implementation=impl)


def full(model, ids_key="input_ids", mask_key="attention_mask", enc_key="encoder_hidden_states", **kw):
    with torch.no_grad():
        return model(IO[ids_key], IO[mask_key], IO[enc_key], IO["encoder_attention_mask"], **kw)


def reference(impl: str, encoder: bool = True, **kw) -> SimpleNamespace:
    """What transformers 4.50.3 returned for the fixture's inputs (its eager run; the same for every backend)."""
    return SimpleNamespace(logits=IO["logits"] if encoder else IO["logits_no_encoder"], hidden_states=None,
                           attentions=[IO[f"attentions.{i}"] for i in range(2)],
                           cross_attentions=[IO[f"cross_attentions.{i}"] for i in range(2)], loss=IO["loss"])


CASE = DecoderCase(
    name="speech2text2", load=lambda impl: load("decoder", impl), layers=2, reference=reference,
    inputs=lambda: (IO["input_ids"], IO["attention_mask"], IO["encoder_hidden_states"], IO["encoder_attention_mask"]),
    reference_steps=lambda impl: IO["logits_step"],
)


@pytest.mark.parametrize("impl", IMPLS)
def test_full_forward_matches_transformers(impl):
    check_logits(CASE, impl)


@pytest.mark.parametrize("impl", IMPLS)
def test_cached_steps_match_full_forward_and_transformers(impl):
    check_cached_steps(CASE, impl)


@pytest.mark.parametrize("impl", IMPLS)
def test_left_padding_positions_skip_pads_with_and_without_cache(impl):
    """Pads get no position and real tokens count on from the real tokens before them, also across cached steps.
    transformers 4.x's cached steps count from the past length instead (a bug): we match its full forward."""
    model = load(impl=impl)
    real = IO["attention_mask_left"].bool()  # a pad query row attends to nothing real: its logits mean nothing
    ours_full = full(model, "input_ids_left", "attention_mask_left").logits
    assert_close(ours_full[real], IO["logits_left"][real], ATOL_FP32, f"left-padded full forward ({impl})")
    ours_step = cached_steps(model, IO["input_ids_left"], IO["attention_mask_left"], IO["encoder_hidden_states"],
                             IO["encoder_attention_mask"])
    assert_close(ours_step[real], IO["logits_left"][real], ATOL_FP32, f"left-padded cached steps ({impl})")
    # The reference's own cached run really differs there (so the comparison above is the meaningful one).
    assert (IO["logits_left_step"][1, 3:] - IO["logits_left"][1, 3:]).abs().max() > 1e-3


def test_cache_reorder_keeps_padding_counts():
    model = load()
    ids, mask = IO["input_ids_left"], IO["attention_mask_left"]
    enc, enc_mask = IO["encoder_hidden_states"], IO["encoder_attention_mask"]
    cache = model.new_cache()
    flip = torch.tensor([1, 0])
    with torch.no_grad():
        model(ids[:, :4], mask[:, :4], enc, enc_mask, cache=cache)
        cache.reorder(flip, cross=True)
        step = model(ids[flip, 4:5], mask[flip, :5], enc[flip], enc_mask[flip], cache=cache).logits
    assert isinstance(cache, Speech2Text2Cache)
    assert_close(step[:, 0], IO["logits_left"][flip, 4], ATOL_FP32, "step after reordering the cache")


def test_attentions_and_loss_match_transformers():
    check_attentions(CASE)
    check_loss(CASE, IO["labels"], "eager")


def test_without_encoder_states_is_a_plain_lm():
    check_logits(CASE, "eager", encoder=False)


@pytest.mark.parametrize("impl", IMPLS)
def test_cross_attention_hidden_size(impl):
    model = load("decoder_kv24", impl)
    assert model.layers[0].cross_attn.k_proj.in_features == 24
    logits = full(model, enc_key="encoder_hidden_states_24").logits
    assert_close(logits, IO["logits_kv24"], ATOL_FP32, f"logits with a 24-wide encoder ({impl})")


def test_eager_and_sdpa_agree():
    check_backends_agree(CASE)


def test_logits_to_keep():
    model = load()
    assert_close(full(model, logits_to_keep=1).logits, IO["logits"][:, -1:], ATOL_FP32, "last-position logits")


def test_stored_position_table_is_checked_not_loaded():
    stored = load_state_dict(os.path.join(FIXTURES, "decoder"))["model.decoder.embed_positions.weights"]
    ours = sinusoids(torch.arange(stored.shape[0]), 32, 1)
    assert_close(ours, stored, ATOL_FP32, "computed sinusoid table vs the stored one")
    model = load()
    assert any("embed_positions.weights (66 rows) matches" in note for note in model.load_report.notes)
    model.config.pad_token_id = 0  # another padding row: the stored table no longer fits the formula
    with pytest.raises(ValueError, match="differs from the sinusoidal positions"):
        speech2text2_convert.to_ours(load_state_dict(os.path.join(FIXTURES, "decoder")), model.config)


def test_save_round_trip(tmp_path):
    model = load()
    model.save_pretrained(tmp_path)
    again = Speech2Text2ForCausalLM.from_pretrained(tmp_path, attn_implementation="eager")
    assert_close(full(again).logits, IO["logits"], ATOL_FP32, "logits after our save + load")
    saved = load_state_dict(tmp_path)
    reference = load_state_dict(os.path.join(FIXTURES, "decoder"))
    assert sorted(saved) == sorted(reference), "we write transformers' Speech2Text2ForCausalLM key names"


def test_missing_weight_is_named(tmp_path):
    from safetensors.torch import save_file

    state = load_state_dict(os.path.join(FIXTURES, "decoder"))
    del state["model.decoder.layers.1.fc2.weight"]
    save_file(state, str(tmp_path / "model.safetensors"))
    shutil.copy(os.path.join(FIXTURES, "decoder", "config.json"), tmp_path / "config.json")
    with pytest.raises(ValueError, match=r"layers\.1\.fc2\.weight"):
        Speech2Text2ForCausalLM.from_pretrained(tmp_path)


def test_decoder_part_of_a_speech_encoder_decoder_checkpoint():
    """The `decoder.` sub-dict of transformers' SpeechEncoderDecoderModel (fixture generate/) loads with our
    converter and, fed transformers' encoder output, gives its logits."""
    from minispeechseq.decoders.speech2text2 import Speech2Text2Config

    folder = os.path.join(FIXTURES, "generate")
    io = load_file(os.path.join(FIXTURES, "generate_io.safetensors"))
    state = load_state_dict(folder)
    with open(os.path.join(folder, "config.json")) as f:
        config = Speech2Text2Config.from_dict(json.load(f)["decoder"])
    model = Speech2Text2ForCausalLM(config).eval()
    decoder_state = {k.removeprefix("decoder."): v for k, v in state.items() if k.startswith("decoder.")}
    ours, _ = speech2text2_convert.to_ours(decoder_state, config)
    model.load_state_dict(ours)
    enc = io["encoder_last_hidden_state"]  # transformers 4.50.3 returns it after enc_to_dec_proj (24 -> 32)
    # wav2vec2's frame mask: conv kernels (10, 8), strides (5, 4) -> 2000 samples give 98 frames, 1500 give 73.
    frames = torch.tensor([98, 73])
    enc_mask = (torch.arange(enc.shape[1])[None] < frames[:, None]).long()
    assert enc.shape[1] == 98
    ids = io["generated_ids"]
    with torch.no_grad():
        logits = model(ids, ids.ne(1).long(), enc, enc_mask).logits
    assert_close(logits, io["logits"], ATOL_FP32, "decoder logits inside the speech encoder-decoder")
    # Greedy decoding picked each next token as the argmax of these logits.
    assert torch.equal(logits[:, :-1].argmax(-1), ids[:, 1:])
