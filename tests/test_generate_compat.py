"""Code written for transformers' `generate` runs unchanged on ours (issue 16, item 2): decoder prompts, reused
encoder outputs, the `inputs=` keyword, the output extras of return_dict_in_generate, compute_transition_scores
and beam sampling. Each is compared with transformers on the same tiny checkpoint (written by transformers'
save_pretrained, loaded by ours): tokens exactly, scores and attentions within the tolerances below.

Also the attention-backend bug of the halves (item 3): a model loaded with eager attention says so in its
encoder and decoder too, and a pair rebuilt from them stays eager.
"""

import pytest
import torch

from minispeechseq import SpeechEncoderDecoderModel
from tests.test_generation_search import EOS, START, assert_tokens, audio, build
from tests.utils import assert_close

# make_lively's weights (std 0.6) give logits in the tens, so fp32 sums in another order differ by a few 1e-5
# (measured up to 3.4e-5): forward logits and sequence scores are compared at 1e-4.
SCORE_ATOL = 1e-4
# Hidden states and step scores: differences relative to the largest finite magnitude (measured up to 1.1e-5).
SCALED_RTOL = 3e-5


def assert_close_scaled(got: torch.Tensor, ref: torch.Tensor, what: str) -> float:
    """|got - ref| <= SCALED_RTOL * max |ref| over the finite entries (the same entries must be finite)."""
    finite = torch.isfinite(ref)
    assert got.shape == ref.shape and torch.equal(torch.isfinite(got), finite), f"{what}: shapes or -inf differ"
    scale = max(1.0, ref[finite].abs().max().item()) if finite.any() else 1.0
    return assert_close(got[finite], ref[finite], SCALED_RTOL * scale, f"{what} (scale {scale:.1f})")


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gpt2")
    hf, _ = build("gpt2", seed=2, tmp_path=folder)
    hf.set_attn_implementation("eager")  # the only backend that returns attention weights, on both sides
    ours = SpeechEncoderDecoderModel.from_pretrained(folder, attn_implementation="eager").eval()
    return hf, ours


# ---------------------------------------------------------------------------------------- decoder prompts
@pytest.mark.parametrize("with_start", [True, False], ids=["prompt-with-start", "prompt-without-start"])
@pytest.mark.parametrize("kw", [{}, {"num_beams": 3, "num_return_sequences": 2}], ids=["greedy", "beams"])
def test_decoder_prompt_matches_transformers(pair, with_start, kw):
    hf, ours = pair
    x, mask = audio(2, 4)
    prompt = torch.tensor([[7, 5], [9, 4]])
    if with_start:
        prompt = torch.cat([torch.full((2, 1), START), prompt], dim=1)
    kw = {"max_new_tokens": 10, **kw}
    ref = hf.generate(x, attention_mask=mask, decoder_input_ids=prompt, **kw)
    got = ours.generate(x, attention_mask=mask, decoder_input_ids=prompt, **kw)
    assert_tokens(got, ref, f"prompt {prompt.tolist()}, {kw}")
    assert (got[:, 1:3] == prompt[:, -2:].repeat_interleave(got.shape[0] // 2, dim=0)).all(), "the prompt is kept"


def test_decoder_prompt_counts_in_max_length_not_in_max_new_tokens(pair):
    _, ours = pair
    x, mask = audio(2, 4)
    prompt = torch.tensor([[START, 7, 5, 6]] * 2)
    new = ours.generate(x, attention_mask=mask, decoder_input_ids=prompt, max_new_tokens=3, min_new_tokens=3)
    assert new.shape == (2, 7), "4 prompt tokens + 3 new ones"
    total = ours.generate(x, attention_mask=mask, decoder_input_ids=prompt, max_length=6, min_length=6)
    assert total.shape == (2, 6), "max_length counts the prompt"
    with pytest.raises(ValueError, match="leaves no room after the 4-token prompt"):
        ours.generate(x, attention_mask=mask, decoder_input_ids=prompt, max_length=4)
    with pytest.raises(ValueError, match="decoder_input_ids must be integer token ids of shape"):
        ours.generate(x, attention_mask=mask, decoder_input_ids=torch.ones(3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="outside the decoder's vocabulary"):
        ours.generate(x, attention_mask=mask, decoder_input_ids=torch.tensor([[START, 99]] * 2))


# --------------------------------------------------------------------------------- encoder outputs, inputs=
def test_encoder_outputs_are_reused_by_generate_and_forward(pair):
    hf, ours = pair
    x, mask = audio(2, 5)
    enc = ours.get_encoder()(x, attention_mask=mask)
    direct = ours.generate(x, attention_mask=mask, num_beams=2, max_new_tokens=8)
    reused = ours.generate(encoder_outputs=enc, attention_mask=mask, num_beams=2, max_new_tokens=8)
    assert_tokens(reused, direct, "generate from encoder_outputs vs from audio")
    hf_enc = hf.get_encoder()(x, attention_mask=mask)
    # Greedy here: transformers 5.24 with eager attention raises an IndexError in its mask code for
    # generate(encoder_outputs=..., attention_mask=..., num_beams=2); with SDPA its beams equal ours.
    ref = hf.generate(encoder_outputs=hf_enc, attention_mask=mask, max_new_tokens=8)
    greedy = ours.generate(encoder_outputs=enc, attention_mask=mask, max_new_tokens=8)
    assert_tokens(greedy, ref, "generate from encoder_outputs vs transformers")
    # A plain tuple whose first item is the last hidden state works too (transformers accepts tuples).
    as_tuple = ours.generate(encoder_outputs=(enc.last_hidden_state,), attention_mask=mask, num_beams=2,
                             max_new_tokens=8)
    assert_tokens(as_tuple, direct, "encoder_outputs as a tuple")

    labels = torch.tensor([[7, 5, EOS], [9, EOS, -100]])
    a = ours(x, attention_mask=mask, labels=labels)
    b = ours(encoder_outputs=enc, attention_mask=mask, labels=labels)
    c = hf(encoder_outputs=hf_enc, attention_mask=mask, labels=labels)
    assert_close(b.logits, a.logits, 0.0, "forward from encoder_outputs vs from audio")
    assert_close(b.logits, c.logits, SCORE_ATOL, "forward from encoder_outputs vs transformers")
    assert abs(b.loss.item() - c.loss.item()) <= SCORE_ATOL, f"loss {b.loss.item()} vs {c.loss.item()}"


def test_inputs_keyword_and_missing_audio(pair):
    _, ours = pair
    x, mask = audio(2, 6)
    assert_tokens(ours.generate(inputs=x, attention_mask=mask, max_new_tokens=6),
                  ours.generate(x, attention_mask=mask, max_new_tokens=6), "inputs= vs positional")
    with pytest.raises(ValueError, match="as input_values or as inputs"):
        ours.generate(x, inputs=x, max_new_tokens=6)
    with pytest.raises(ValueError, match="needs the audio"):
        ours.generate(max_new_tokens=6)
    with pytest.raises(ValueError, match="needs the audio"):
        ours(decoder_input_ids=torch.ones(1, 2, dtype=torch.long))


# ------------------------------------------------------------------------------------------ output extras
EXTRAS = {"return_dict_in_generate": True, "output_scores": True, "output_logits": True,
          "output_attentions": True, "output_hidden_states": True}


@pytest.mark.parametrize("kw", [{}, {"num_beams": 3, "num_return_sequences": 2}], ids=["greedy", "beams"])
def test_output_extras_match_transformers(pair, kw):
    hf, ours = pair
    x, mask = audio(2, 7)
    kw = {"max_new_tokens": 6, **kw, **EXTRAS}
    ref = hf.generate(x, attention_mask=mask, **kw)
    got = ours.generate(x, attention_mask=mask, **kw)
    assert_tokens(got.sequences, ref.sequences, f"sequences {kw}")
    steps = len(ref.scores)
    for name in ("scores", "logits"):
        assert len(getattr(got, name)) == steps, f"{name}: {len(getattr(got, name))} steps vs {steps}"
        for t in range(steps):
            assert_close_scaled(getattr(got, name)[t], getattr(ref, name)[t], f"{name}[{t}]")
    for t in range(steps):
        for layer in range(2):
            # transformers' q covers the step's new tokens; ours too. Keys: the cache so far.
            assert_close_scaled(got.decoder_attentions[t][layer], ref.decoder_attentions[t][layer],
                                f"decoder_attentions[{t}][{layer}]")
            assert_close_scaled(got.cross_attentions[t][layer], ref.cross_attentions[t][layer],
                                f"cross_attentions[{t}][{layer}]")
        for i in range(3):
            assert_close_scaled(got.decoder_hidden_states[t][i], ref.decoder_hidden_states[t][i],
                                f"decoder_hidden_states[{t}][{i}]")
    for layer in range(len(ref.encoder_attentions)):
        assert_close_scaled(got.encoder_attentions[layer], ref.encoder_attentions[layer], f"encoder_attentions[{layer}]")
    for i in range(len(ref.encoder_hidden_states)):
        assert_close_scaled(got.encoder_hidden_states[i], ref.encoder_hidden_states[i], f"encoder_hidden_states[{i}]")
    if "num_beams" in kw:
        assert torch.equal(got.beam_indices, ref.beam_indices), f"beam_indices\n{got.beam_indices}\n{ref.beam_indices}"
        assert_close(got.sequences_scores, ref.sequences_scores, SCORE_ATOL, "sequences_scores")


def test_extras_are_kept_only_when_asked(pair):
    _, ours = pair
    x, mask = audio(2, 7)
    out = ours.generate(x, attention_mask=mask, max_new_tokens=4, return_dict_in_generate=True)
    assert out.scores is None and out.logits is None and out.decoder_attentions is None
    assert out["sequences"] is out.sequences
    shorthand = ours.generate(x, attention_mask=mask, max_new_tokens=4, return_dict=True)
    assert shorthand.scores is not None and len(shorthand.scores) == shorthand.sequences.shape[1] - 1


def test_attentions_need_eager_and_say_so(pair):
    _, ours = pair
    x, mask = audio(1, 7)
    ours.set_attn_implementation("sdpa")
    try:
        with pytest.raises(ValueError, match="only computed by attn_implementation='eager'"):
            ours.generate(x, max_new_tokens=3, return_dict_in_generate=True, output_attentions=True)
    finally:
        ours.set_attn_implementation("eager")


# ------------------------------------------------------------------------------ compute_transition_scores
@pytest.mark.parametrize("kw", [
    {},
    {"num_beams": 3, "num_return_sequences": 3, "length_penalty": 1.3},
    {"do_sample": True, "top_k": 5, "num_return_sequences": 2},
], ids=["greedy", "beams", "sampling"])
@pytest.mark.parametrize("normalize", [False, True])
def test_compute_transition_scores_matches_transformers(pair, kw, normalize):
    hf, ours = pair
    x, mask = audio(2, 8)
    kw = {"max_new_tokens": 8, "return_dict_in_generate": True, "output_scores": True, **kw}
    torch.manual_seed(3)
    ref = hf.generate(x, attention_mask=mask, **kw)
    torch.manual_seed(3)
    got = ours.generate(x, attention_mask=mask, **kw)
    assert_tokens(got.sequences, ref.sequences, f"sequences {kw}")
    ref_t = hf.compute_transition_scores(ref.sequences, ref.scores, getattr(ref, "beam_indices", None), normalize)
    got_t = ours.compute_transition_scores(got.sequences, got.scores, got.beam_indices, normalize)
    finite = torch.isfinite(ref_t)
    assert torch.equal(torch.isfinite(got_t), finite), "the same positions are -inf"
    assert_close(got_t[finite], ref_t[finite], SCORE_ATOL, f"transition scores {kw}, normalize={normalize}")
    if "num_beams" in kw and not normalize:
        # A hypothesis' score is the sum of its transition scores over its length ** length_penalty.
        length = (got.beam_indices >= 0).sum(-1)
        rebuilt = got_t.sum(-1) / length ** kw["length_penalty"]
        assert_close(rebuilt, got.sequences_scores, SCORE_ATOL, "sum of transition scores vs sequences_scores")


# ------------------------------------------------------------------------------------------- beam sampling
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_beam_sampling_matches_transformers(pair, seed):
    hf, ours = pair
    x, mask = audio(2, 9)
    kw = {"do_sample": True, "num_beams": 3, "num_return_sequences": 2, "temperature": 1.5, "top_k": 8,
          "max_new_tokens": 10, "return_dict_in_generate": True, "output_scores": True}
    torch.manual_seed(seed)
    ref = hf.generate(x, attention_mask=mask, **kw)
    torch.manual_seed(seed)
    got = ours.generate(x, attention_mask=mask, **kw)
    assert_tokens(got.sequences, ref.sequences, f"beam sampling, seed {seed}")
    assert_close(got.sequences_scores, ref.sequences_scores, SCORE_ATOL, "beam sampling sequences_scores")


def test_beam_sampling_draws_differ_and_follow_the_generator(pair):
    _, ours = pair
    x, mask = audio(2, 9)
    kw = {"do_sample": True, "num_beams": 3, "temperature": 2.0, "min_new_tokens": 5, "max_new_tokens": 10}
    a = ours.generate(x, attention_mask=mask, generator=torch.Generator().manual_seed(1), **kw)
    b = ours.generate(x, attention_mask=mask, generator=torch.Generator().manual_seed(1), **kw)
    assert torch.equal(a, b), "the same generator state gives the same beams"
    draws = {tuple(ours.generate(x, attention_mask=mask, generator=torch.Generator().manual_seed(s), **kw)[0].tolist())
             for s in range(6)}
    assert len(draws) > 1, "beam sampling gave one result for 6 seeds: it is not sampling"


# ----------------------------------------------------------------------------- attention backend of halves
def test_attn_implementation_reaches_both_halves(pair, tmp_path):
    _, ours = pair
    assert ours.attn_implementation == ours.encoder.attn_implementation == ours.decoder.attn_implementation == "eager"
    rebuilt = SpeechEncoderDecoderModel(encoder=ours.encoder, decoder=ours.decoder).eval()
    assert rebuilt.attn_implementation == "eager"
    x, mask = audio(1, 10)
    out = rebuilt(x, decoder_input_ids=torch.tensor([[START, 7]]), output_attentions=True)
    assert out.cross_attentions is not None and out.encoder_attentions is not None
    rebuilt.set_attn_implementation("sdpa")
    assert ours.encoder.attn_implementation == ours.decoder.attn_implementation == "sdpa", "shared halves follow"
    rebuilt.set_attn_implementation("eager")
