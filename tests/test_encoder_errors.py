"""Bad input to the speech encoders gets a ValueError (or FileNotFoundError) sentence saying what and why."""

import os

import pytest
import torch

from minispeechseq.wav2vec2 import HubertModel, Wav2Vec2Model
from minispeechseq.wav2vec2_config import HubertConfig, Wav2Vec2Config

TINY = {
    "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 20,
    "conv_dim": (8, 8), "conv_kernel": (10, 3), "conv_stride": (5, 2),
    "num_conv_pos_embeddings": 4, "num_conv_pos_embedding_groups": 2,
}


@pytest.fixture(scope="module")
def model():
    return Wav2Vec2Model(Wav2Vec2Config(**TINY)).eval()


def test_receptive_field_of_the_default_config_is_400_samples():
    # 25 ms at 16 kHz: the window of one wav2vec2 frame (paper, section 2). Computed without building the model.
    assert Wav2Vec2Model.receptive_field.fget(type("M", (), {"config": Wav2Vec2Config()})()) == 400


def test_one_dimensional_input_is_a_batch_of_one(model):
    x = torch.randn(400)
    with torch.no_grad():
        assert torch.equal(model(x).last_hidden_state, model(x[None]).last_hidden_state)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: torch.randn(1, 19), r"19 samples long, shorter than the feature encoder.s receptive field of 20"),
        (lambda: torch.zeros(1, 0), r"(empty|shorter)"),
        (lambda: torch.zeros(0), r"empty|shorter"),
        (lambda: torch.tensor([[float("nan")] * 100]), "NaN or infinite"),
        (lambda: torch.tensor([[float("inf")] * 100]), "NaN or infinite"),
        (lambda: torch.randn(1, 1, 100), r"shape \(1, 1, 100\); expected \(batch, samples\)"),
        (lambda: torch.ones(1, 100, dtype=torch.int16), "expected float samples"),
        (lambda: [0.0] * 100, "must be a torch.Tensor"),
    ],
    ids=["too_short", "empty_2d", "empty_1d", "nan", "inf", "rank3", "integers", "list"],
)
def test_bad_waveforms(model, make, match):
    with pytest.raises(ValueError, match=match):
        model(make())


def test_mask_shape_must_match(model):
    with pytest.raises(ValueError, match=r"attention_mask has shape \(2, 99\) but input_values has \(2, 100\)"):
        model(torch.randn(2, 100), attention_mask=torch.ones(2, 99))


def test_mask_leaving_too_few_samples(model):
    mask = torch.ones(2, 100, dtype=torch.long)
    mask[1, 10:] = 0
    with pytest.raises(ValueError, match="Waveform 1 of the batch has 10 valid samples"):
        model(torch.randn(2, 100), attention_mask=mask)


def test_bad_configs():
    with pytest.raises(ValueError, match="same, non-zero length"):
        Wav2Vec2Config(conv_dim=(8, 8), conv_kernel=(3,), conv_stride=(2, 2))
    with pytest.raises(ValueError, match="feat_extract_norm"):
        HubertConfig(feat_extract_norm="batch")
    with pytest.raises(ValueError, match="divisible by num_conv_pos_embedding_groups"):
        Wav2Vec2Model(Wav2Vec2Config(**dict(TINY, num_conv_pos_embedding_groups=3)))
    with pytest.raises(ValueError, match="adapter_attn_dim"):
        Wav2Vec2Model(Wav2Vec2Config(**TINY, adapter_attn_dim=8))
    with pytest.raises(ValueError, match="Activation 'mish' is not supported"):
        Wav2Vec2Model(Wav2Vec2Config(**TINY, hidden_act="mish"))


def test_checkpoint_folder_errors(tmp_path):
    Wav2Vec2Config(**TINY).save_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="has no weights"):
        Wav2Vec2Model.from_pretrained(tmp_path)
    Wav2Vec2Model(Wav2Vec2Config(**TINY)).save_pretrained(tmp_path)
    path = os.path.join(tmp_path, "model.safetensors")
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        Wav2Vec2Model.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError):
        Wav2Vec2Model.from_pretrained(os.path.join(tmp_path, "no_such_folder"))


def test_wrong_model_type(tmp_path):
    HubertConfig(**TINY).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="model_type='hubert'"):
        Wav2Vec2Model.from_pretrained(tmp_path)
    assert HubertModel.config_class is HubertConfig
