"""Full-model generation parity: our SpeechEncoderDecoderModel, loaded from a tiny transformers checkpoint
written with save_pretrained, generates exactly transformers' tokens (greedy, beams, sampling).

The decoding loop itself is tested in isolation in test_generation_search.py (transformers' own modules behind
our protocol); here the logits come from our modules, so this checks the whole path end to end.

Coverage: every encoder (wav2vec2 base layout, the large pre-LN layout with an attention mask, HuBERT) with every
decoder (BERT, GPT-2, BART, mBART with its forced language token) runs greedy, one beam setting and seeded
sampling on a padded batch; hubert+bart and wav2vec2-large+mbart run the whole settings grid (beams 2/3/5, length
penalties 0.5/1/2, each early_stopping mode, num_return_sequences > 1, n-gram blocking, repetition penalty,
min/forced tokens). sequences_scores agree within SEQ_SCORE_ATOL. Speech2Text2, which transformers 5 cannot
build, is in test_generate_speech2text2.py (a transformers 4.50.3 fixture).

Known transformers bug, compared around: with pad id 0 (BERT) its beam search fills finished rows with EOS
(`bert_padding_fix`); ours fills them with pad.
"""

import pytest
import torch
import transformers

from minispeechseq import SpeechEncoderDecoderModel
from tests.test_generation_search import (
    BEAM_CASES,
    EOS,
    PAD,
    START,
    V,
    assert_tokens,
    audio,
    build,
)
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


# ================================================================================ every encoder x decoder pair
# Tiny transformers models for every pair: 3 encoder layouts x 4 decoders. Vocabulary V=12 and `make_lively`
# weights (see test_generation_search.py) so that the tokens depend on the audio and beams end at varied lengths.
ENCODERS = ("wav2vec2", "wav2vec2-large", "hubert")
DECODERS = ("bert", "gpt2", "bart", "mbart")
ALL_PAIRS = [(e, d) for e in ENCODERS for d in DECODERS]
# Build seed per pair, chosen so that transformers' greedy output differs between the 3 utterances of the
# matrix's batch, some of them end before max_new_tokens, and the beams end at several lengths (seed 0 leaves
# e.g. hubert+bert saying token 1 forever, which would check nothing). test_every_pair re-checks the first two.
BUILD_SEED = {
    ("wav2vec2", "bert"): 4, ("wav2vec2", "gpt2"): 3, ("wav2vec2", "bart"): 2, ("wav2vec2", "mbart"): 0,
    ("wav2vec2-large", "bert"): 2, ("wav2vec2-large", "gpt2"): 0, ("wav2vec2-large", "bart"): 4,
    ("wav2vec2-large", "mbart"): 4, ("hubert", "bert"): 2, ("hubert", "gpt2"): 4, ("hubert", "bart"): 1,
    ("hubert", "mbart"): 3,
}
LANG = 7  # mBART's forced target-language token (a stand-in for e.g. en_XX)


def encoder_config(kind: str):
    common = {
        "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 24,
        "conv_dim": (8, 8), "conv_stride": (5, 4), "conv_kernel": (10, 8), "num_conv_pos_embeddings": 8,
        "num_conv_pos_embedding_groups": 2, "vocab_size": V,
    }
    if kind == "wav2vec2":  # base layout: group-norm feature encoder, post-LN transformer
        return transformers.Wav2Vec2Config(feat_extract_norm="group", **common)
    if kind == "wav2vec2-large":  # large / XLS-R layout: layer-norm feature encoder, pre-LN ("stable") transformer
        return transformers.Wav2Vec2Config(feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True, **common)
    if kind == "hubert":
        return transformers.HubertConfig(feat_extract_norm="group", **common)
    raise ValueError(kind)


def decoder_setup(kind: str):
    """transformers' decoder config, the generation ids, and the decoder's last norm (None: the head has a bias)."""
    if kind == "bert":  # pad id 0: transformers' beam search then pads with EOS (see bert_padding_fix)
        dec = transformers.BertConfig(vocab_size=V, hidden_size=24, num_hidden_layers=2, num_attention_heads=2,
                                      intermediate_size=32, max_position_embeddings=64, is_decoder=True,
                                      add_cross_attention=True, pad_token_id=0)
        return dec, {"decoder_start_token_id": START, "eos_token_id": EOS, "pad_token_id": 0}
    ids = {"decoder_start_token_id": START, "eos_token_id": EOS, "pad_token_id": PAD}
    if kind == "gpt2":
        dec = transformers.GPT2Config(vocab_size=V, n_embd=24, n_layer=2, n_head=2, n_positions=64, is_decoder=True,
                                      add_cross_attention=True, bos_token_id=START, eos_token_id=EOS, pad_token_id=PAD)
        return dec, ids
    cls = transformers.BartConfig if kind == "bart" else transformers.MBartConfig
    # encoder_layers = decoder_layers: transformers 5's BartForCausalLM sizes its cache by encoder_layers.
    dec = cls(vocab_size=V, d_model=24, decoder_layers=2, encoder_layers=2, decoder_attention_heads=2,
              encoder_attention_heads=2, decoder_ffn_dim=32, encoder_ffn_dim=32, max_position_embeddings=64,
              is_decoder=True, add_cross_attention=True, bos_token_id=0, eos_token_id=EOS, pad_token_id=PAD)
    if kind == "mbart":
        # As mBART checkpoints do: the decoder starts from EOS and the target language is forced next.
        ids = {"decoder_start_token_id": EOS, "eos_token_id": EOS, "pad_token_id": PAD, "forced_bos_token_id": LANG}
    return dec, ids


def lively(hf, kind: str, eos_boost: float = 5.0):
    """make_lively for every decoder: larger weights, then an EOS boost. Heads without a bias (GPT-2, BART, mBART
    tie the head to the embeddings) get it through the last norm's bias b: EOS's embedding += boost * b / |b|^2."""
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if p.dim() > 1 and "norm" not in name:
                p.normal_(0.0, 0.6)
        if kind == "bert":
            hf.decoder.cls.predictions.bias[EOS] += eos_boost / 2
            return
        dec = hf.decoder
        norm = {"gpt2": lambda: dec.transformer.ln_f, "bart": lambda: dec.model.decoder.layers[-1].final_layer_norm,
                "mbart": lambda: dec.model.decoder.layer_norm}[kind]()
        b = torch.randn(norm.bias.shape)
        norm.bias.copy_(b)
        dec.get_output_embeddings().weight[EOS] += eos_boost * b / b.dot(b)


def build_pair(enc: str, dec: str, folder, seed: int = 0):
    """A lively transformers model written with save_pretrained to `folder`, and ours loaded from there."""
    torch.manual_seed(seed)
    dec_config, ids = decoder_setup(dec)
    config = transformers.SpeechEncoderDecoderConfig.from_encoder_decoder_configs(encoder_config(enc), dec_config)
    for k in ("decoder_start_token_id", "eos_token_id", "pad_token_id"):
        setattr(config, k, ids[k])
    hf = transformers.SpeechEncoderDecoderModel(config=config).eval()
    lively(hf, dec)
    for k, v in ids.items():  # generation_config.json carries them (forced_bos_token_id too) to ours
        setattr(hf.generation_config, k, v)
    hf.save_pretrained(folder)
    ours = SpeechEncoderDecoderModel.from_pretrained(folder, attn_implementation="eager").eval()
    return hf, ours


_BUILT: dict = {}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """get(enc, dec) -> (hf, ours), each pair built once per module."""

    def get(enc, dec):
        if (enc, dec) not in _BUILT:
            _BUILT[enc, dec] = build_pair(enc, dec, tmp_path_factory.mktemp(f"{enc}-{dec}"), BUILD_SEED[enc, dec])
        return _BUILT[enc, dec]

    yield get
    _BUILT.clear()


def inputs(enc: str, batch: int, seed: int):
    """A padded batch. The layer-norm encoder gets the attention mask; the group-norm ones get none: their
    feature extractors return no mask (return_attention_mask=False, since group norm over zero padding already
    differs from the unpadded audio) and transformers' pipelines pass none. Padding is zeros either way."""
    x, mask = audio(batch, seed)
    return x, (mask if enc == "wav2vec2-large" else None)


def compare(hf, ours, name: str, x, mask, seed: int | None = None, **kw):
    """Token-exact comparison (and sequences_scores for beams); returns transformers' sequences."""
    beams = kw.get("num_beams", 1) > 1
    if seed is not None:
        torch.manual_seed(seed)
    ref = hf.generate(x, attention_mask=mask, return_dict_in_generate=True, output_scores=True, **kw)
    if seed is not None:
        torch.manual_seed(seed)
    got = ours.generate(x, attention_mask=mask, return_dict=True, **kw)
    expected = bert_padding_fix(name.split("+")[1], ref.sequences, ours.config.pad_token_id) if beams else ref.sequences
    assert_tokens(got.sequences, expected, f"{name} {kw}")
    if beams:
        assert_close(got.sequences_scores, ref.sequences_scores, SEQ_SCORE_ATOL, f"{name} sequences_scores {kw}")
    return ref.sequences


# ---------------------------------------------------------------------------------- the matrix: every pair
# The beam setting rotates through test_generation_search.BEAM_CASES, so the 12 pairs cover all 9 of them.
@pytest.mark.parametrize("index, enc, dec", [(i, e, d) for i, (e, d) in enumerate(ALL_PAIRS)],
                         ids=[f"{e}+{d}" for e, d in ALL_PAIRS])
def test_every_pair(models, index, enc, dec):
    hf, ours = models(enc, dec)
    name = f"{enc}+{dec}"
    x, mask = inputs(enc, 3, index)
    greedy = compare(hf, ours, name, x, mask, max_new_tokens=12)
    # The comparison only means something if the model is lively (see BUILD_SEED): checked on transformers' output.
    ended = (greedy[:, 1:] == EOS).any(dim=1)
    assert len({tuple(row) for row in greedy.tolist()}) == 3 and ended.any(), (
        f"{name}: build seed {BUILD_SEED[enc, dec]} gives a dull model (greedy {greedy.tolist()}); pick another")
    num_beams, length_penalty, early_stopping = BEAM_CASES[index % len(BEAM_CASES)]
    compare(hf, ours, name, x, mask, num_beams=num_beams, length_penalty=length_penalty,
            early_stopping=early_stopping, num_return_sequences=2, max_new_tokens=12)
    compare(hf, ours, name, x, mask, seed=index, do_sample=True, temperature=0.9, top_k=8, top_p=0.95,
            num_return_sequences=2, max_new_tokens=12)


# ----------------------------------------------------------------------- the full settings grid, two pairs
# hubert + bart (group-norm encoder, no mask) and the large wav2vec2 + mbart (attention mask; start token = EOS,
# forced language token from generation_config.json) also run every setting of test_generation_search.py.
GRID_PAIRS = [("hubert", "bart"), ("wav2vec2-large", "mbart")]
GRID = (
    [("greedy", s, {}) for s in (0, 1, 2)]
    + [(f"greedy {','.join(kw)}", 3, kw) for kw in (
        {"no_repeat_ngram_size": 2}, {"repetition_penalty": 1.5}, {"min_new_tokens": 8},
        {"min_length": 6, "max_length": 10, "forced_eos_token_id": EOS}, {"forced_bos_token_id": 9},
    )]
    + [(f"beams {k},{lp},{es}", 10 + i, {"num_beams": k, "length_penalty": lp, "early_stopping": es,
                                          "num_return_sequences": k if k < 5 else 3})
       for i, (k, lp, es) in enumerate(BEAM_CASES)]
    + [(f"beams {','.join(kw)}", 4, {"num_beams": 3, "num_return_sequences": 3, **kw}) for kw in (
        {"no_repeat_ngram_size": 2}, {"repetition_penalty": 1.3, "min_new_tokens": 5},
        {"forced_eos_token_id": EOS, "max_length": 9},
    )]
    + [(f"sampling {','.join(kw) or 'plain'}", s, {"do_sample": True, "num_return_sequences": 2, **kw}) for s, kw in (
        (20, {}), (21, {"temperature": 0.7, "top_k": 5}), (22, {"top_p": 0.8, "repetition_penalty": 1.2}),
    )]
)


@pytest.mark.parametrize("enc, dec", GRID_PAIRS, ids=[f"{e}+{d}" for e, d in GRID_PAIRS])
@pytest.mark.parametrize("what, seed, kw", GRID, ids=[g[0] for g in GRID])
def test_settings_grid(models, enc, dec, what, seed, kw):
    hf, ours = models(enc, dec)
    x, mask = inputs(enc, 2, seed)
    kw = {"max_new_tokens": 12, **kw} if "max_length" not in kw else kw
    sample_seed = seed if kw.get("do_sample") else None
    compare(hf, ours, f"{enc}+{dec}", x, mask, seed=sample_seed, **kw)


@pytest.mark.parametrize("enc, dec", [("wav2vec2", "gpt2"), ("hubert", "mbart")], ids=["wav2vec2+gpt2", "hubert+mbart"])
def test_group_norm_encoder_given_a_mask_anyway(models, enc, dec):
    """A caller may still pass the mask to a group-norm encoder; both sides then mask attention and cross-attention."""
    hf, ours = models(enc, dec)
    x, mask = audio(2, 30)
    compare(hf, ours, f"{enc}+{dec}", x, mask, max_new_tokens=12)
    compare(hf, ours, f"{enc}+{dec}", x, mask, num_beams=3, num_return_sequences=2, max_new_tokens=12)
