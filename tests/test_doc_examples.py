"""The code examples of transformers' SpeechEncoderDecoderModel documentation (../shared/reference/), run with
`minispeechseq` in place of `transformers` and local folders in place of hub ids.

Each example is kept as close to the documentation's text as possible; where the documentation downloads a
checkpoint or a dataset, a tiny one is written here first (by transformers itself) and a synthetic waveform
stands in for the LibriSpeech sample.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers

transformers.logging.set_verbosity_error()

WORDS = ["the", "a", "quilter", "is", "apostle", "of", "middle", "classes", "and", "we", "are", "glad", "to"]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ",", *WORDS, *"abcdefghijklmnopqrstuvwxyz"]


def speech(seconds: float = 0.5, seed: int = 0) -> np.ndarray:
    """A stand-in for ds[0]["audio"]["array"]: a chirp plus noise, float64 as datasets returns it."""
    t = np.arange(int(16000 * seconds)) / 16000
    rng = np.random.default_rng(seed)
    return np.sin(2 * np.pi * (200 + 300 * t) * t) + 0.05 * rng.standard_normal(t.size)


def tiny_encoder_config(cls=transformers.Wav2Vec2Config, **kw):
    return cls(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
               conv_dim=(16, 16), conv_kernel=(10, 3), conv_stride=(5, 2), num_conv_pos_embeddings=8,
               num_conv_pos_embedding_groups=4, **kw)


def tiny_bert_config(**kw):
    return transformers.BertConfig(vocab_size=len(VOCAB), hidden_size=24, num_hidden_layers=2, num_attention_heads=4,
                                   intermediate_size=40, max_position_embeddings=64, **kw)


def write_bert_tokenizer(folder) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    transformers.BertTokenizer(str(folder / "vocab.txt")).save_pretrained(folder)


def test_random_init_from_default_configs():
    # >>> from transformers import BertConfig, Wav2Vec2Config, SpeechEncoderDecoderConfig, SpeechEncoderDecoderModel
    from minispeechseq import BertConfig, SpeechEncoderDecoderConfig, SpeechEncoderDecoderModel, Wav2Vec2Config

    config_encoder = Wav2Vec2Config()
    config_decoder = BertConfig()
    config = SpeechEncoderDecoderConfig.from_encoder_decoder_configs(config_encoder, config_decoder)
    model = SpeechEncoderDecoderModel(config=config)

    # The full-size pair: wav2vec2-base + bert-base with cross-attention, as transformers builds it.
    with torch.device("meta"):
        ref = transformers.SpeechEncoderDecoderModel(
            config=transformers.SpeechEncoderDecoderConfig.from_encoder_decoder_configs(
                transformers.Wav2Vec2Config(), transformers.BertConfig()
            )
        )
    assert model.num_parameters() == sum(p.numel() for p in ref.parameters())
    assert model.config.decoder.is_decoder and model.config.decoder.add_cross_attention


def test_from_encoder_decoder_pretrained(tmp_path):
    torch.manual_seed(0)
    hubert_large = tiny_encoder_config(transformers.HubertConfig, do_stable_layer_norm=True,
                                       feat_extract_norm="layer", conv_bias=True)
    transformers.HubertModel(hubert_large).save_pretrained(tmp_path / "hubert-large-ll60k")
    transformers.BertForPreTraining(tiny_bert_config()).save_pretrained(tmp_path / "bert-base-uncased")

    # >>> from transformers import SpeechEncoderDecoderModel
    from minispeechseq import SpeechEncoderDecoderModel

    model = SpeechEncoderDecoderModel.from_encoder_decoder_pretrained(
        tmp_path / "hubert-large-ll60k", tmp_path / "bert-base-uncased"
    )
    assert model.config.encoder.model_type == "hubert" and model.config.decoder.model_type == "bert"
    assert model.enc_to_dec_proj is not None  # 32 -> 24


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory):
    """A 'fine-tuned' checkpoint + processor folder, written by transformers."""
    folder = tmp_path_factory.mktemp("wav2vec2-bert-finetuned")
    torch.manual_seed(0)
    config = transformers.SpeechEncoderDecoderConfig.from_encoder_decoder_configs(
        tiny_encoder_config(), tiny_bert_config()
    )
    config.decoder_start_token_id, config.pad_token_id, config.eos_token_id = 2, 0, 3
    model = transformers.SpeechEncoderDecoderModel(config=config)
    model.generation_config.decoder_start_token_id = 2
    model.generation_config.eos_token_id = 3
    model.generation_config.pad_token_id = 0
    model.generation_config.max_length = 12
    model.save_pretrained(folder)
    write_bert_tokenizer(folder)
    transformers.Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=False).save_pretrained(folder)
    return folder


def test_load_finetuned_and_generate(finetuned):
    # >>> from transformers import Wav2Vec2Processor, SpeechEncoderDecoderModel
    from minispeechseq import SpeechEncoderDecoderModel, Wav2Vec2Processor

    model = SpeechEncoderDecoderModel.from_pretrained(finetuned)
    processor = Wav2Vec2Processor.from_pretrained(finetuned)
    input_values = processor(speech(), return_tensors="pt").input_values
    generated_ids = model.generate(input_values)
    generated_text = processor.batch_decode(generated_ids, skip_special_tokens=True)[0]

    ref_model = transformers.SpeechEncoderDecoderModel.from_pretrained(finetuned)
    ref_processor = transformers.Wav2Vec2Processor.from_pretrained(finetuned)
    ref_values = ref_processor(speech(), return_tensors="pt").input_values
    ref_ids = ref_model.generate(ref_values)
    assert torch.equal(generated_ids, ref_ids), f"ours {generated_ids.tolist()} vs transformers {ref_ids.tolist()}"
    assert generated_text == ref_processor.batch_decode(ref_ids, skip_special_tokens=True)[0]


def test_training_example(tmp_path):
    torch.manual_seed(0)
    transformers.Wav2Vec2Model(tiny_encoder_config()).save_pretrained(tmp_path / "wav2vec2-base-960h")
    transformers.Wav2Vec2FeatureExtractor().save_pretrained(tmp_path / "wav2vec2-base-960h")
    transformers.BertForPreTraining(tiny_bert_config()).save_pretrained(tmp_path / "bert-base-uncased")
    write_bert_tokenizer(tmp_path / "bert-base-uncased")
    encoder_id, decoder_id = tmp_path / "wav2vec2-base-960h", tmp_path / "bert-base-uncased"

    # >>> from transformers import AutoTokenizer, AutoFeatureExtractor, SpeechEncoderDecoderModel
    from minispeechseq import AutoFeatureExtractor, AutoTokenizer, SpeechEncoderDecoderModel

    feature_extractor = AutoFeatureExtractor.from_pretrained(encoder_id)
    tokenizer = AutoTokenizer.from_pretrained(decoder_id)
    model = SpeechEncoderDecoderModel.from_encoder_decoder_pretrained(encoder_id, decoder_id)
    model.config.decoder_start_token_id = tokenizer.cls_token_id
    model.config.pad_token_id = tokenizer.pad_token_id
    input_values = feature_extractor(speech(), return_tensors="pt").input_values
    labels = tokenizer("mister quilter is the apostle of the middle classes", return_tensors="pt").input_ids
    loss = model(input_values=input_values, labels=labels).loss
    loss.backward()

    assert torch.isfinite(loss)
    no_grad = [n for n, p in model.decoder.named_parameters() if p.grad is None]
    assert not no_grad, f"decoder parameters without a gradient: {no_grad}"
    assert model.enc_to_dec_proj.weight.grad is not None
