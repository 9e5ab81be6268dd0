"""Attention masks with holes, read as transformers reads them (issue 26, item 1).

transformers' own tests build audio masks with `random_attention_mask`: random 0/1 with the last position 1, so
0s sit between 1s. transformers takes a row's length to be its count of ones and its real samples to come first
(`_get_feature_vector_attention_mask` sums the mask); the samples under the 0s still go through the conv layers.
Ours reads such masks the same way, and only a row of 0s followed by one unbroken run of 1s is read as left
padding (moved to the right, as before: tests/test_hostile_audio.py). Here: random masks with holes against
transformers' own tiny random models, for the encoder, the pair's forward and loss, and greedy and beam `generate`
(token-exact). Tolerances are tests/utils.py's.
"""

from __future__ import annotations

import pytest
import torch
import transformers

from minispeechseq.wav2vec2 import Wav2Vec2Model
from tests.test_encoder import HF, LARGE, VARIANTS, hf_model
from tests.test_generate_parity import ALL_PAIRS, BUILD_SEED, SEQ_SCORE_ATOL, bert_padding_fix, build_pair
from tests.test_generation_search import assert_tokens
from tests.test_speech_encoder_decoder import LARGE_PAIRS, PAIRS, build_hf, load_ours
from tests.utils import ATOL_FP32, assert_close

transformers.logging.set_verbosity_error()


def mask_with_holes(batch: int, length: int, seed: int) -> torch.Tensor:
    """Random 0/1 per sample with the last sample 1, as transformers' test helper makes them; row 0 starts with
    a 1 and row 1 with a 0, so both ways a mask with holes can begin are covered."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.randint(0, 2, (batch, length), generator=g)
    mask[:, -1] = 1
    mask[0, 0] = 1
    mask[1, 0] = 0
    return mask


def test_the_random_masks_have_holes():
    mask = mask_with_holes(3, 1200, 0)
    runs = (mask[:, 1:] != mask[:, :-1]).sum(-1)  # (B,) changes between 0 and 1 along each row
    assert (runs > 2).all(), f"every row should have 0s between its 1s; changes per row: {runs.tolist()}"


# ------------------------------------------------------------------------------------------- the encoder
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_encoder_matches_transformers_with_holes(variant, tmp_path):
    arch, overrides = VARIANTS[variant]
    hf = hf_model(arch, overrides)
    hf.save_pretrained(tmp_path)
    ours = HF[arch][2].from_pretrained(tmp_path, attn_implementation="eager").eval()
    x = torch.randn(3, 1200, generator=torch.Generator().manual_seed(1))
    mask = mask_with_holes(3, 1200, seed=2)
    with torch.no_grad():
        ref = hf(x, attention_mask=mask).last_hidden_state
        out = ours(x, attention_mask=mask).last_hidden_state
        unmasked = ours(x).last_hidden_state
    diff = assert_close(out, ref, ATOL_FP32, f"{variant} last_hidden_state, mask with holes")
    print(f"\n{variant}: encoder vs transformers, mask with holes: max |diff| = {diff:.1e}")
    # The mask mattered: fewer real frames than the unmasked run, so this was no comparison of two unmasked runs.
    assert (out - unmasked).abs().max() > 1e-3, f"{variant}: the mask with holes changed nothing"


def test_left_padding_beside_a_row_with_holes(tmp_path):
    """Row 0 has holes (transformers' reading, equal to transformers); row 1 is left padding (our reading,
    equal to the same audio alone, which transformers gets wrong)."""
    hf = hf_model("wav2vec2", LARGE)
    hf.save_pretrained(tmp_path)
    ours = Wav2Vec2Model.from_pretrained(tmp_path).eval()
    x = torch.randn(2, 1200, generator=torch.Generator().manual_seed(3))
    mask = mask_with_holes(2, 1200, seed=4)
    mask[1] = 0
    mask[1, 350:] = 1
    x[1, :350] = 0.0
    with torch.no_grad():
        out = ours(x, attention_mask=mask).last_hidden_state
        ref = hf(x[:1], attention_mask=mask[:1]).last_hidden_state
        alone = ours(x[1:, 350:]).last_hidden_state
    assert_close(out[:1], ref, ATOL_FP32, "row with holes vs transformers")
    n = alone.shape[1]
    assert_close(out[1, :n], alone[0], ATOL_FP32, "left-padded row vs the same audio alone")


# ------------------------------------------------------------------------------- the pair: forward and loss
@pytest.mark.parametrize("enc_kind,dec_kind", PAIRS + LARGE_PAIRS)
def test_pair_forward_and_loss_match_transformers_with_holes(enc_kind, dec_kind, tmp_path):
    hf = build_hf(enc_kind, dec_kind).eval()
    ours = load_ours(hf, tmp_path).eval()
    g = torch.Generator().manual_seed(5)
    audio = torch.randn(2, 1600, generator=g)
    mask = mask_with_holes(2, 1600, seed=6)
    labels = torch.randint(3, 61, (2, 7), generator=g)
    labels[1, 5:] = -100
    with torch.no_grad():
        ref = hf(input_values=audio, attention_mask=mask, labels=labels)
        out = ours(audio, attention_mask=mask, labels=labels)
    name = f"{enc_kind}+{dec_kind}"
    assert_close(out.encoder_last_hidden_state, ref.encoder_last_hidden_state, ATOL_FP32, f"{name} encoder output")
    diff = assert_close(out.logits, ref.logits, ATOL_FP32, f"{name} logits, mask with holes")
    loss_diff = assert_close(out.loss, ref.loss, ATOL_FP32, f"{name} loss, mask with holes")
    print(f"\n{name}, mask with holes: max |diff| vs transformers: logits {diff:.1e}, loss {loss_diff:.1e}")


# ------------------------------------------------------------------------------ generate: greedy and beams
@pytest.mark.parametrize("enc, dec", ALL_PAIRS, ids=[f"{e}+{d}" for e, d in ALL_PAIRS])
def test_generate_matches_transformers_with_holes(enc, dec, tmp_path):
    hf, ours = build_pair(enc, dec, tmp_path, BUILD_SEED[enc, dec])
    x = torch.randn(3, 1200, generator=torch.Generator().manual_seed(7))
    mask = mask_with_holes(3, 1200, seed=8)
    name = f"{enc}+{dec}"
    with torch.no_grad():
        assert_tokens(ours.generate(x, attention_mask=mask, max_new_tokens=12),
                      hf.generate(x, attention_mask=mask, max_new_tokens=12), f"{name} greedy, mask with holes")
        kw = {"num_beams": 3, "num_return_sequences": 2, "max_new_tokens": 12}
        ref = hf.generate(x, attention_mask=mask, return_dict_in_generate=True, output_scores=True, **kw)
        got = ours.generate(x, attention_mask=mask, return_dict=True, **kw)
    assert_tokens(got.sequences, bert_padding_fix(dec, ref.sequences, ours.config.pad_token_id),
                  f"{name} beams, mask with holes")
    assert_close(got.sequences_scores, ref.sequences_scores, SEQ_SCORE_ATOL, f"{name} sequences_scores")
