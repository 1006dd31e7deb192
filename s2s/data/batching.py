"""Batches of token-id pairs: bucketed by length so that little compute goes to padding.

An epoch's order is drawn from a seeded generator: examples are shuffled, sorted by length within large pools,
cut into batches (by sentence count or by a budget of padded tokens), and the batches shuffled again.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from s2s.tokenizer import BOS, EOS, PAD

POOL_BATCHES = 100  # sort this many batches' worth of examples at once: enough to bucket, still random


class ByLength:
    """Examples batched by length (mixed into a pipeline's ``Examples``, which provides ``lengths()``): shuffled
    buckets in training (with ``rng``), length-sorted batches otherwise."""

    def lengths(self) -> list[int]:
        raise NotImplementedError

    def batches(self, batch_size: int, by_tokens: bool, rng: random.Random | None) -> list[list[int]]:
        return batch_indices(self.lengths(), batch_size, by_tokens, rng)

    def state(self) -> dict:
        return {}  # each batch stands alone

    def restore(self, state: dict) -> None:
        pass


@dataclass
class Batch:
    src: torch.Tensor  # [B, S] source ids, padded with PAD
    src_lengths: torch.Tensor  # [B] (on the CPU: packing wants it there)
    tgt_in: torch.Tensor  # [B, T] BOS y1 … yn, padded
    tgt_out: torch.Tensor  # [B, T] y1 … yn EOS, padded
    indices: list[int]  # positions of these examples in their split

    @property
    def n_predictions(self) -> int:
        """Target tokens (EOS included): what the mean loss averages over."""
        return int(self.tgt_out.ne(PAD).sum())

    @property
    def n_tokens(self) -> int:
        """What training speed counts: for a sequence output the very same target tokens, as the peers report it."""
        return self.n_predictions

    def to(self, device: torch.device) -> Batch:
        return Batch(
            self.src.to(device, non_blocking=True),
            self.src_lengths,
            self.tgt_in.to(device, non_blocking=True),
            self.tgt_out.to(device, non_blocking=True),
            self.indices,
        )


@dataclass
class LabelBatch:
    """Texts and their label ids (many-to-one)."""

    src: torch.Tensor  # [B, S] ids, padded with PAD
    src_lengths: torch.Tensor  # [B] (on the CPU: packing wants it there)
    labels: torch.Tensor  # [B] label ids
    indices: list[int]

    @property
    def n_tokens(self) -> int:
        """What training speed counts: the tokens read."""
        return int(self.src_lengths.sum())

    @property
    def n_predictions(self) -> int:
        return len(self.indices)

    def to(self, device: torch.device) -> LabelBatch:
        return LabelBatch(
            self.src.to(device, non_blocking=True), self.src_lengths, self.labels.to(device), self.indices
        )

    def rows(self, rows: torch.Tensor) -> LabelBatch:
        """The batch of these rows (a 1-D index tensor on the CPU)."""
        on_device = rows.to(self.src.device)
        return LabelBatch(
            self.src[on_device], self.src_lengths[rows], self.labels[on_device], [self.indices[i] for i in rows]
        )


@dataclass
class ImageBatch:
    """Images and one caption each: the same training contract as ``Batch`` (``src`` is the images)."""

    src: torch.Tensor  # [B, 3, H, W] normalised images
    tgt_in: torch.Tensor  # [B, T] BOS y1 … yn, padded
    tgt_out: torch.Tensor  # [B, T] y1 … yn EOS, padded
    indices: list[int]
    src_lengths: None = None  # every image is whole: nothing to mask

    @property
    def n_predictions(self) -> int:
        """Caption tokens (EOS included): what the mean loss averages over."""
        return int(self.tgt_out.ne(PAD).sum())

    @property
    def n_tokens(self) -> int:
        """What training speed counts: the same caption tokens."""
        return self.n_predictions

    def to(self, device: torch.device) -> ImageBatch:
        return ImageBatch(
            self.src.to(device, non_blocking=True),
            self.tgt_in.to(device, non_blocking=True),
            self.tgt_out.to(device, non_blocking=True),
            self.indices,
        )


@dataclass
class PictureBatch:
    """Pictures (pixels or fixed feature grids) and their numbers in the training split, whose references reward
    the captions sampled for them."""

    src: torch.Tensor  # [B, …] pixels or grids
    indices: list[int]
    sampled_tokens: int = 0  # set by the objective once it has drawn the captions: what training speed counts

    @property
    def n_predictions(self) -> int:
        return len(self.indices)  # the loss is a mean over pictures

    @property
    def n_tokens(self) -> int:
        return self.sampled_tokens

    def to(self, device: torch.device) -> PictureBatch:
        return PictureBatch(self.src.to(device, non_blocking=True), self.indices)


def collate_images(images: list[torch.Tensor], captions: list[list[int]], indices: list[int]) -> ImageBatch:
    return ImageBatch(
        src=torch.stack(images),
        tgt_in=pad([[BOS, *c] for c in captions]),
        tgt_out=pad([[*c, EOS] for c in captions]),
        indices=indices,
    )


def collate_labelled(texts: list[list[int]], labels: list[int] | None, indices: list[int]) -> LabelBatch:
    """Padded ids and labels; ``labels`` may be None at inference. Texts run to hundreds of tokens, so the padded
    width is rounded up to one of a few sizes (``few_widths``)."""
    texts = [t or [EOS] for t in texts]  # an empty text still has one position to read
    return LabelBatch(
        src=pad(texts, few_widths(max(len(t) for t in texts))),
        src_lengths=torch.tensor([len(t) for t in texts], dtype=torch.long),
        labels=torch.tensor(labels if labels is not None else [0] * len(texts), dtype=torch.long),
        indices=indices,
    )


def pad(sequences: list[list[int]], width: int = 0) -> torch.Tensor:
    """[N, width] ids, PAD after each sequence; ``width`` at least the longest sequence (0: exactly that)."""
    width = max(1, width, max(len(s) for s in sequences))
    out = torch.full((len(sequences), width), PAD, dtype=torch.long)
    for row, seq in enumerate(sequences):
        out[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
    return out


def few_widths(longest: int) -> int:
    """``longest`` rounded up to one of eight sizes per doubling (at most 1/8 more). Batches of texts whose
    lengths vary widely otherwise each have their own shape, and their buffers, freed and requested again in other
    sizes, fragment the heap that s2s.allocator keeps (docs/benchmarks.md#memory-with-batches-of-many-lengths); in
    few shapes, every step reuses the blocks an earlier step of its shape freed."""
    step = 1 << max(0, longest.bit_length() - 4)  # 1 below 16, then 2, 4, 8, … within each doubling
    return -(-longest // step) * step


def collate(src: list[list[int]], tgt: list[list[int]] | None, indices: list[int]) -> Batch:
    """Padded tensors for one batch; ``tgt`` may be None at inference (targets are then empty)."""
    tgt = tgt if tgt is not None else [[] for _ in src]
    return Batch(
        src=pad([s or [EOS] for s in src]),  # an empty source still has one position to attend to
        src_lengths=torch.tensor([max(1, len(s)) for s in src], dtype=torch.long),
        tgt_in=pad([[BOS, *t] for t in tgt]),
        tgt_out=pad([[*t, EOS] for t in tgt]),
        indices=indices,
    )


def batch_indices(lengths: list[int], batch_size: int, by_tokens: bool, rng: random.Random | None) -> list[list[int]]:
    """Group example positions into batches. With ``rng`` the order is shuffled (training); without, the
    examples keep their order in length-sorted batches (inference), and callers restore the input order."""
    order = list(range(len(lengths)))
    if rng is not None:
        rng.shuffle(order)
        pool = POOL_BATCHES * (batch_size if not by_tokens else max(1, batch_size // max(1, _mean(lengths))))
        order = [
            i
            for start in range(0, len(order), pool)
            for i in sorted(order[start : start + pool], key=lengths.__getitem__)
        ]
    else:
        order.sort(key=lengths.__getitem__)
    batches = cut(order, lengths, batch_size, by_tokens)
    if rng is not None:
        rng.shuffle(batches)
    return batches


def cut(order: list[int], lengths: list[int], batch_size: int, by_tokens: bool) -> list[list[int]]:
    """Consecutive runs of ``order``: at most ``batch_size`` sentences, or padded tokens (count × longest)."""
    batches, current, longest = [], [], 0
    for i in order:
        grown = max(longest, lengths[i])
        too_big = (grown * (len(current) + 1) > batch_size) if by_tokens else len(current) >= batch_size
        if current and too_big:
            batches.append(current)
            current, grown = [], lengths[i]
        current.append(i)
        longest = grown
    if current:
        batches.append(current)
    return batches


def _mean(values: list[int]) -> int:
    return int(sum(values) / max(1, len(values)))


class Carry:
    """Where truncated backpropagation through time keeps the state between the segments of parallel streams:
    the state at the end of the last segment read (detached: gradients stop at the segment boundary). It belongs
    to the streams being read, so training and validation streams each have their own."""

    def __init__(self):
        self.hidden = None  # the model's state [L, B, H] (h and c for an LSTM), or None before the first segment


@dataclass
class TextBatch:
    """A language model's batch: inputs and, at each position, the next token; segments of parallel streams (with
    their ``carry``) or whole documents (``carry`` None, every row starts from a zero state)."""

    inputs: torch.Tensor  # [B, T] BOS (or the token before the segment) y1 … y(n-1), padded
    targets: torch.Tensor  # [B, T] y1 … yn (EOS last for a document), padded
    indices: list[int]
    carry: Carry | None = None
    first: bool = True  # the first segment of its streams: the state starts at zero

    @property
    def n_predictions(self) -> int:
        return int(self.targets.ne(PAD).sum())

    @property
    def n_tokens(self) -> int:
        """What training speed counts: the tokens predicted."""
        return self.n_predictions

    def to(self, device: torch.device) -> TextBatch:
        move = lambda t: t.to(device, non_blocking=True)  # noqa: E731
        return TextBatch(move(self.inputs), move(self.targets), self.indices, self.carry, self.first)


NO_TAG = -100  # the tag at padding positions: cross-entropy's ignore_index


@dataclass
class TagBatch:
    """Sentences as words, each word also as its characters, and one tag per word (synchronised many-to-many)."""

    src: torch.Tensor  # [B, S] word ids, padded with PAD
    src_lengths: torch.Tensor  # [B] words per sentence
    chars: torch.Tensor  # [B, S, C] character ids of each word, padded with PAD
    char_lengths: torch.Tensor  # [B, S] characters of each word, 0 at padding
    tags: torch.Tensor  # [B, S] tag ids, NO_TAG at padding
    indices: list[int]

    @property
    def n_predictions(self) -> int:
        """Words: one tag each, what the mean loss averages over."""
        return int(self.src_lengths.sum())

    @property
    def n_tokens(self) -> int:
        """What training speed counts: the same words."""
        return self.n_predictions

    def to(self, device: torch.device) -> TagBatch:
        move = lambda t: t.to(device, non_blocking=True)  # noqa: E731
        return TagBatch(
            move(self.src), self.src_lengths, move(self.chars), move(self.char_lengths), move(self.tags), self.indices
        )


def collate_tagged(
    words: list[list[int]], chars: list[list[list[int]]], tags: list[list[int]] | None, indices: list[int]
) -> TagBatch:
    """Padded tensors for one batch of sentences; ``tags`` may be None at inference."""
    width = max(1, max(len(w) for w in words))
    letters = max(1, max((len(c) for sentence in chars for c in sentence), default=1))
    char_ids = torch.full((len(words), width, letters), PAD, dtype=torch.long)
    char_lengths = torch.zeros(len(words), width, dtype=torch.long)
    for row, sentence in enumerate(chars):
        for column, word in enumerate(sentence):
            char_ids[row, column, : len(word)] = torch.tensor(word, dtype=torch.long)
            char_lengths[row, column] = len(word)
    tag_ids = torch.full((len(words), width), NO_TAG, dtype=torch.long)
    for row, sentence_tags in enumerate(tags or []):
        tag_ids[row, : len(sentence_tags)] = torch.tensor(sentence_tags, dtype=torch.long)
    return TagBatch(
        src=pad(words),
        src_lengths=torch.tensor([len(w) for w in words], dtype=torch.long),
        chars=char_ids,
        char_lengths=char_lengths,
        tags=tag_ids,
        indices=indices,
    )
