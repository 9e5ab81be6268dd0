"""How wav2vec 2.0 learns without labels (arXiv:2006.11477, section 3): `Wav2Vec2ForPreTraining`.

The encoder of wav2vec2.py is trained on audio alone by a game of hide and seek. Spans of frames are hidden
(replaced by `masked_spec_embed` after the projection), and for each hidden frame the context network must pick
the right answer, the frame's own *quantized* conv features, out of a line-up that also holds K distractors
taken from other hidden frames of the same utterance:

    samples (B, L) --feature encoder--> conv features (B, T, C) ----------------------+
                   --mask spans, transformer--> context c (B, T, D)                    |
                                                                                      v
      c --project_hid--> (B, T, P)                 quantizer: C -> G groups x V codewords each, one codeword
                                                   per group, concatenated -> q (B, T, d) --project_q--> (B, T, P)
      contrastive loss: for each masked t, cross-entropy of cos(c_t, [q_t, q_neg1 .. q_negK]) / kappa, target 0
      diversity loss:   (G V - perplexity) / (G V): low when the codebook is used evenly

The quantizer picks its codeword with a Gumbel softmax (Jang et al., arXiv:1611.01144): in training, Gumbel noise
is added to the logits, the argmax is taken (a hard one-hot choice) and the gradient flows through the soft
probabilities as if the choice were soft ("straight-through"); `temperature` sharpens them (transformers and
fairseq decay it from 2 to 0.5 during training: `set_gumbel_temperature`). In eval mode the choice is the plain
argmax. Names, outputs and semantics are transformers' (`Wav2Vec2ForPreTraining`), the helpers included:
`compute_mask_indices` and `sample_negative_indices` are its `_compute_mask_indices` / `_sample_negative_indices`,
drawing from torch's random generator instead of numpy's.

Why a top-level file: this is a model (a task head on the encoder, loaded from transformers checkpoints, exported
like ctc.py), and tutorial 13 reads it as the next step after wav2vec2.py; the recipe that trains it belongs to
training/. It takes the 16th and last top-level slot tests/test_layout.py allows.

Shape legend: B batch, L samples, T frames, C conv channels, D model width, G codevector groups, V codewords per
group, d codevector_dim, P proj_codevector_dim, K negatives.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .modeling import ModelOutput, PreTrainedModel
from .wav2vec2 import Wav2Vec2Model, sample_span_starts, spans_to_mask
from .wav2vec2_config import Wav2Vec2Config


@dataclass
class Wav2Vec2ForPreTrainingOutput(ModelOutput):
    loss: torch.Tensor | None = None  # contrastive_loss + diversity_loss_weight * diversity_loss
    projected_states: torch.Tensor | None = None  # (B, T, P): the context network's guesses
    projected_quantized_states: torch.Tensor | None = None  # (B, T, P): the targets
    codevector_perplexity: torch.Tensor | None = None  # (): exp(entropy) of the codeword use, summed over groups
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
    contrastive_loss: torch.Tensor | None = None  # summed over the masked frames, as in transformers and fairseq
    diversity_loss: torch.Tensor | None = None  # scaled by the number of masked frames, like the contrastive sum


# ------------------------------------------------------------------------------------------ the quantizer
class GumbelVectorQuantizer(nn.Module):
    """Conv features (B, T, C) -> one codeword per group, concatenated: (B, T, d); and the codebook perplexity.

    transformers' Wav2Vec2GumbelVectorQuantizer. Its codebook is stored there as (1, G V, d / G); ours is the same
    numbers as (G, V, d / G), so that `codevectors[g, v]` is codeword v of group g (weights_convert reshapes).
    """

    def __init__(self, config: Wav2Vec2Config):
        super().__init__()
        G, V = config.num_codevector_groups, config.num_codevectors_per_group
        self.groups, self.per_group = G, V
        self.codevectors = nn.Parameter(torch.empty(G, V, config.codevector_dim // G))  # (G, V, d / G)
        self.proj = nn.Linear(config.conv_dim[-1], G * V)  # one logit per codeword of every group
        self.temperature = 2.0  # a plain attribute, as in transformers: training schedules decay it

    def gumbel_noise(self, shape: torch.Size, device: torch.device) -> torch.Tensor:
        """-log(E), E ~ Exp(1): Gumbel(0, 1) noise, the same draw torch's F.gumbel_softmax makes. A method of its own
        so that a test can hand both implementations the same noise."""
        return -torch.empty(shape, device=device).exponential_().log()

    def forward(
        self, features: torch.Tensor, mask_time_indices: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        B, T, _ = features.shape
        logits = self.proj(features).view(B * T, self.groups, self.per_group).float()  # (B T, G, V)
        if self.training:
            noisy = (logits + self.gumbel_noise(logits.shape, logits.device)) / self.temperature
            soft = noisy.softmax(dim=-1)  # (B T, G, V)
            hard = F.one_hot(soft.argmax(dim=-1), self.per_group).to(soft.dtype)
            probs = hard - soft.detach() + soft  # forward: the one-hot choice; backward: the soft one's gradient
            # Perplexity of the noiseless distribution: how evenly the codewords are *meant* to be used.
            perplexity = codebook_perplexity(logits.softmax(dim=-1), mask_time_indices)
        else:
            probs = F.one_hot(logits.argmax(dim=-1), self.per_group).to(logits.dtype)  # (B T, G, V)
            perplexity = codebook_perplexity(probs, mask_time_indices)
        probs = probs.to(features.dtype)
        # Each group's probabilities pick (a mix of) its codewords: (B T, G, V) x (G, V, d/G) -> (B T, G, d/G).
        chosen = torch.einsum("ngv,gvk->ngk", probs, self.codevectors)
        return chosen.reshape(B, T, -1), perplexity  # groups concatenated: (B, T, d)


def codebook_perplexity(probs: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """exp(entropy of the average codeword distribution), per group, summed over groups: G V when every codeword
    is used equally often, G when each group always picks the same one. probs (B T, G, V); mask (B, T) averages
    over the masked frames only (transformers' `_compute_perplexity`)."""
    if mask is None:
        average = probs.mean(dim=0)  # (G, V)
    else:
        keep = mask.reshape(-1, 1, 1)  # (B T, 1, 1)
        average = torch.where(keep, probs, torch.zeros_like(probs)).sum(dim=0) / mask.sum()  # (G, V)
    entropy = -torch.xlogy(average, average).sum(dim=-1)  # (G,); xlogy: 0 log 0 = 0
    return entropy.exp().sum()


# ------------------------------------------------------------------------------------------- the model
class Wav2Vec2ForPreTraining(PreTrainedModel):
    """wav2vec2 encoder + quantizer + the two projections: transformers' Wav2Vec2ForPreTraining
    (e.g. facebook/wav2vec2-base, whose every tensor loads)."""

    config_class = Wav2Vec2Config
    checkpoint_head = "pretraining"  # checkpoints: the encoder under wav2vec2., plus quantizer / project_hid / project_q

    def __init__(self, config: Wav2Vec2Config):
        super().__init__(config)
        check_config(config)
        self.encoder = Wav2Vec2Model(config)  # initialises itself
        self.dropout_features = nn.Dropout(config.feat_quantizer_dropout)
        self.quantizer = GumbelVectorQuantizer(config)
        self.project_hid = nn.Linear(config.hidden_size, config.proj_codevector_dim)
        self.project_q = nn.Linear(config.codevector_dim, config.proj_codevector_dim)
        # transformers' init: torch's default Linear init for the projections (reset_parameters ran when built),
        # and the Gumbel logits start wide (std 1) so that the first choices are spread over the codebook.
        with torch.no_grad():
            nn.init.normal_(self.quantizer.proj.weight, 0.0, 1.0)
            nn.init.zeros_(self.quantizer.proj.bias)
            nn.init.uniform_(self.quantizer.codevectors)
        self.set_attn_implementation(self.encoder.attn_implementation)

    def set_gumbel_temperature(self, temperature: float) -> None:
        self.quantizer.temperature = temperature

    def freeze_feature_encoder(self) -> None:
        self.encoder.freeze_feature_encoder()

    @staticmethod
    def compute_contrastive_logits(
        target_features: torch.Tensor, negative_features: torch.Tensor, predicted_features: torch.Tensor,
        temperature: float = 0.1,
    ) -> torch.Tensor:
        """cos(prediction, [positive, negatives]) / temperature: (1, B, T, P) and (K, B, T, P) -> (1 + K, B, T)."""
        candidates = torch.cat([target_features, negative_features], dim=0)  # (1 + K, B, T, P)
        similarity = torch.cosine_similarity(predicted_features.float(), candidates.float(), dim=-1)
        return similarity.type_as(candidates) / temperature

    def forward(
        self,
        input_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        mask_time_indices: torch.Tensor | None = None,
        sampled_negative_indices: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> Wav2Vec2ForPreTrainingOutput:
        """mask_time_indices (B, T): the frames to hide (and to predict); sampled_negative_indices (B, T, K): for each
        frame, K rows of the flattened (B T) batch to use as distractors (`sample_negative_indices`). The loss is
        computed when sampled_negative_indices is given, and needs mask_time_indices."""
        if mask_time_indices is not None:
            mask_time_indices = mask_time_indices.to(torch.bool)
        check_forward_inputs(self, input_values, mask_time_indices, sampled_negative_indices)
        enc = self.encoder(input_values, attention_mask=attention_mask, mask_time_indices=mask_time_indices,
                           output_hidden_states=output_hidden_states, output_attentions=output_attentions)
        # transformers computes the frame-level attention mask here and then uses it for nothing: padded frames
        # count in neither the perplexity (it averages over mask_time_indices) nor the loss (only masked frames).
        predicted = self.project_hid(enc.last_hidden_state)  # (B, T, P): every frame, masked or not
        quantized, perplexity = self.quantizer(self.dropout_features(enc.extract_features), mask_time_indices)
        targets = self.project_q(quantized.to(self.project_q.weight.dtype))  # (B, T, P)

        loss = contrastive_loss = diversity_loss = None
        if sampled_negative_indices is not None:
            B, T, P = targets.shape
            K = sampled_negative_indices.shape[-1]
            # Gather the distractors from the flattened batch: (B T, P)[(B T K)] -> (B, T, K, P) -> (K, B, T, P).
            negatives = targets.reshape(B * T, P)[sampled_negative_indices.to(targets.device).long().reshape(-1)]
            negatives = negatives.view(B, T, K, P).permute(2, 0, 1, 3)
            logits = self.compute_contrastive_logits(targets[None], negatives, predicted,
                                                     self.config.contrastive_logits_temperature)  # (1 + K, B, T)
            # A distractor identical to the answer (the same codewords: common while the codebook is little used)
            # cannot be told apart from it; it is removed from the line-up rather than counted as a mistake.
            negative_is_positive = (targets[None] == negatives).all(dim=-1)  # (K, B, T)
            logits = torch.cat([logits[:1], logits[1:].masked_fill(negative_is_positive, float("-inf"))])
            # Cross-entropy with the answer at index 0, summed over the masked frames only (-100: ignored).
            answer = torch.where(mask_time_indices, 0, -100).reshape(-1)  # (B T,)
            contrastive_loss = F.cross_entropy(logits.permute(1, 2, 0).reshape(B * T, K + 1).float(), answer,
                                               ignore_index=-100, reduction="sum")
            codewords = self.config.num_codevector_groups * self.config.num_codevectors_per_group
            diversity_loss = (codewords - perplexity) / codewords * mask_time_indices.sum()
            loss = contrastive_loss + self.config.diversity_loss_weight * diversity_loss

        return Wav2Vec2ForPreTrainingOutput(
            loss=loss, projected_states=predicted, projected_quantized_states=targets,
            codevector_perplexity=perplexity, hidden_states=enc.hidden_states, attentions=enc.attentions,
            contrastive_loss=contrastive_loss, diversity_loss=diversity_loss,
        )


# ------------------------------------------------------------------------- masks and negatives, sampled
def compute_mask_indices(
    shape: tuple[int, int], mask_prob: float, mask_length: int, attention_mask: torch.Tensor | None = None,
    min_masks: int = 0, generator: torch.Generator | None = None,
) -> torch.Tensor:
    """(B, T) bool: spans of `mask_length` frames to hide, about mask_prob of each row's valid frames (spans may
    overlap), at least `min_masks` spans; `attention_mask` (B, T) frame-level, 1 = real frame, right padding.
    transformers' `_compute_mask_indices` (which returns a numpy array), with the sampler SpecAugment uses."""
    B, T = shape
    if not isinstance(mask_length, int) or mask_length < 1:
        raise ValueError(f"mask_length must be a whole number of frames, at least 1; got {mask_length!r}.")
    if mask_length > T:
        raise ValueError(f"mask_length ({mask_length}) is longer than the sequence ({T} frames); no span fits.")
    lengths = [T] * B if attention_mask is None else attention_mask.sum(-1).tolist()
    starts = sample_span_starts(lengths, T, mask_prob, mask_length, min_masks, generator)
    return spans_to_mask(starts, mask_length, T)


def sample_negative_indices(
    features_shape: tuple[int, int], num_negatives: int, mask_time_indices: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """(B, T, K) long: for every masked frame, K other masked frames of the same utterance, drawn uniformly with
    replacement (as fairseq and transformers do: K may exceed the frames available, and then some repeat),
    as indices into the flattened (B T) batch. Unmasked frames get index b T (unused by the loss).
    transformers' `_sample_negative_indices`; mask_time_indices None means every frame is masked."""
    B, T = features_shape
    if not isinstance(num_negatives, int) or num_negatives < 1:
        raise ValueError(f"num_negatives must be a whole number, at least 1; got {num_negatives!r}.")
    mask = torch.ones(B, T, dtype=torch.bool) if mask_time_indices is None else torch.as_tensor(mask_time_indices)
    mask = mask.to(torch.bool).cpu()
    indices = torch.zeros(B, T, num_negatives, dtype=torch.long)
    for b in range(B):
        positions = mask[b].nonzero().flatten()  # (n,) the masked frames of utterance b
        n = len(positions)
        if n == 1:
            raise ValueError(f"Utterance {b} of the batch has one masked frame, so it has no other masked frame to "
                             "draw negatives from; mask at least two frames per utterance (or none).")
        if n == 0:
            indices[b] = b * T
            continue
        # Draw among the n - 1 others: r in [0, n - 2], shifted past the frame itself, so each stays equally likely.
        draws = torch.randint(0, n - 1, (n, num_negatives), generator=generator)  # (n, K)
        draws += (draws >= torch.arange(n)[:, None]).long()
        indices[b, positions] = positions[draws] + b * T
        indices[b, ~mask[b]] = b * T
    return indices


# ------------------------------------------------------------------------------------------ input checks
def check_config(config: Wav2Vec2Config) -> None:
    """What the quantizer needs beyond each field's own range (an encoder alone does not use these fields)."""
    if config.codevector_dim % config.num_codevector_groups != 0:
        raise ValueError(
            f"codevector_dim ({config.codevector_dim}) must be divisible by num_codevector_groups "
            f"({config.num_codevector_groups}): each group contributes an equal slice of the codevector."
        )


def check_forward_inputs(
    model: Wav2Vec2ForPreTraining, input_values: torch.Tensor, mask_time_indices: torch.Tensor | None,
    negatives: torch.Tensor | None,
) -> None:
    """The masks and negatives handed to `forward`, checked before any work (the audio itself is checked by the
    encoder); each refusal is one sentence."""
    c = model.config
    if mask_time_indices is not None:
        if not c.apply_spec_augment:
            # Deliberate difference: transformers then leaves the "masked" frames visible, so the context network
            # sees its own targets and the task is trivial, without a word.
            raise ValueError("mask_time_indices was given but config.apply_spec_augment is False, so those frames "
                             "would not be hidden from the context network; set apply_spec_augment=True.")
        if not hasattr(model.encoder, "masked_spec_embed"):
            raise ValueError("mask_time_indices was given but this config masks nothing (mask_time_prob = "
                             "mask_feature_prob = 0), so the model has no masked_spec_embed to hide frames with; "
                             "set mask_time_prob > 0 before building the model.")
        if isinstance(input_values, torch.Tensor) and input_values.dim() in (1, 2):
            B = 1 if input_values.dim() == 1 else input_values.shape[0]
            T = int(model.encoder.output_lengths(torch.tensor(input_values.shape[-1])))
            if tuple(mask_time_indices.shape) != (B, T):
                raise ValueError(f"mask_time_indices has shape {tuple(mask_time_indices.shape)}, but the audio gives "
                                 f"{B} x {T} frames; make it with compute_mask_indices(({B}, {T}), ...).")
        if not mask_time_indices.any():
            raise ValueError("mask_time_indices hides no frame, so there is nothing to predict and the perplexity "
                             "would divide by zero; hide some frames (compute_mask_indices) or pass None.")
    if negatives is None:
        return
    if mask_time_indices is None:
        raise ValueError("sampled_negative_indices was given without mask_time_indices; the loss is computed on "
                         "the masked frames, so pass both (compute_mask_indices, then sample_negative_indices).")
    B, T = mask_time_indices.shape
    if negatives.dim() != 3 or tuple(negatives.shape[:2]) != (B, T):
        raise ValueError(f"sampled_negative_indices has shape {tuple(negatives.shape)}; expected (batch, frames, "
                         f"num_negatives) with batch {B} and frames {T}, like mask_time_indices.")
    if negatives.is_floating_point() or negatives.dtype == torch.bool:
        raise ValueError(f"sampled_negative_indices has dtype {negatives.dtype}; expected integer row indices.")
    if negatives.numel() and (negatives.min() < 0 or negatives.max() >= B * T):
        raise ValueError(f"sampled_negative_indices holds {int(negatives.min())}..{int(negatives.max())}; they index "
                         f"the flattened batch of {B} x {T} frames, so they must lie in 0..{B * T - 1}.")
