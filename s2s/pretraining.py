"""Language-model pretraining of a text encoder on the task's own training texts (Dai & Le 2015).

Before the classifier trains, its encoder learns to predict each text's next token from the states of its
left-to-right direction and each previous token from those of its right-to-left direction, one output layer per
direction, dropped afterwards. The classifier then starts from the pretrained embeddings and recurrent weights
rather than from random ones. Only the training split's texts are read, so held-out texts stay unseen; the time it
takes is the recipe's ``pretrain.max_time``, part of the ``s2s train`` command's ``train.max_time``.

Each direction reads only one side of the text, so its prediction is a real language model's; a bidirectional
encoder of several layers would feed each direction's next layer with the other direction's view of the future,
which the recipe refuses at load (s2s.config.ClassificationRecipe).
"""

from __future__ import annotations

import random
import time

import torch
from torch import nn

from s2s.config import PretrainConfig
from s2s.data.batching import LabelBatch, batch_indices, collate_labelled
from s2s.loss import projected_cross_entropy
from s2s.models import autocast
from s2s.modules.encoders import RNNEncoder
from s2s.tokenizer import PAD


class BidirectionalLanguageModel(nn.Module):
    """An encoder with an output layer per direction: the left-to-right states predict the next token, the
    right-to-left ones the previous token."""

    def __init__(self, encoder: RNNEncoder, vocab_size: int):
        super().__init__()
        self.encoder = encoder
        self.directions = len(encoder.layers[0])
        self.hidden = encoder.output_size // self.directions
        self.output = nn.ModuleList(nn.Linear(self.hidden, vocab_size) for _ in range(self.directions))

    def readings(self, batch: LabelBatch) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """For each direction: the states [B, S-1, H] that predict, and the ids [B, S-1] they predict (PAD where
        there is none: past a text's end, or a state at padding)."""
        encoded = self.encoder(batch.src, batch.src_lengths)
        states, real = encoded.states, encoded.mask  # [B, S, D × H], [B, S]
        targets = batch.src.masked_fill(~real, PAD)
        # with reverse_source the first direction reads right to left (its states are put back in text order)
        offsets = [1, -1] if not self.encoder.reverse_source else [-1, 1]
        readings = []
        for direction, offset in enumerate(offsets[: self.directions]):
            part = states[..., direction * self.hidden : (direction + 1) * self.hidden]
            if offset == 1:  # the state after reading position t predicts t + 1
                readings.append((part[:, :-1], targets[:, 1:]))
            else:  # the state after reading back to position t predicts t - 1
                readings.append((part[:, 1:], targets[:, :-1].masked_fill(~real[:, 1:], PAD)))
        return readings

    def forward(self, batch: LabelBatch) -> torch.Tensor:
        """The mean cross-entropy per predicted token, both directions together."""
        total, count = 0.0, 0
        for output, (states, predicted) in zip(self.output, self.readings(batch), strict=True):
            known = predicted.ne(PAD)
            total = total + projected_cross_entropy(states[known], output, predicted[known])
            count += int(known.sum())
        return total / max(1, count)


def pretrain_encoder(
    encoder: RNNEncoder,
    vocab_size: int,
    texts: list[list[int]],
    config: PretrainConfig,
    seed: int,
    device: torch.device,
    dtype: torch.dtype | None,
    events,
) -> BidirectionalLanguageModel:
    """Train ``encoder`` as a bidirectional language model of ``texts`` (token ids) for ``config.max_time``
    seconds or ``config.max_steps`` steps, whichever comes first; returns that model (its ``encoder`` is
    ``encoder``, trained)."""
    from s2s.train import backward_and_step  # the trainer's update, without its loop (s2s.train imports pipelines)

    model = BidirectionalLanguageModel(encoder, vocab_size).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    rng, examples = random.Random(seed), [t for t in texts if len(t) > 1]  # one token predicts nothing
    started, step, losses = time.monotonic(), 0, []
    while examples and not finished(config, step, started):
        for indices in batch_indices([len(t) for t in examples], config.batch_size, False, rng):
            batch = collate_labelled([examples[i] for i in indices], None, indices).to(device)
            with autocast(device, dtype):
                loss = model(batch)
            optimizer.zero_grad(set_to_none=True)
            backward_and_step(optimizer, scaler, loss, config.clip_norm)
            step, losses = step + 1, [*losses[-99:], loss.item()]
            events.work(
                "pretraining the encoder (seconds)",
                min(elapsed(started), int(config.max_time) - 1),
                int(config.max_time),
            )
            if finished(config, step, started):
                break
    events.work("pretraining the encoder (seconds)", int(config.max_time), int(config.max_time))
    mean = sum(losses) / max(1, len(losses))
    events.message(
        f"encoder pretrained as a language model of the training texts: {step:,} steps in "
        f"{elapsed(started)} s, loss {mean:.3f} over the last {len(losses)} steps"
    )
    return model


def elapsed(started: float) -> int:
    return int(time.monotonic() - started)


def finished(config: PretrainConfig, step: int, started: float) -> bool:
    reached = config.max_steps is not None and step >= config.max_steps
    return reached or time.monotonic() - started >= config.max_time
