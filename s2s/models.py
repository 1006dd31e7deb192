"""Models compose modules and expose one contract to training, and (sequence models) to search.

Training: ``model(batch) → loss``. Search: ``encode`` once, then ``initial_state`` / ``step`` /
``reorder_state``; the decoding state is a value, never an attribute of the model.
"""

from __future__ import annotations

import math
from functools import partial
from itertools import chain, count, repeat
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from s2s.config import (
    PRETRAINED_BACKBONES,
    CaptionModelConfig,
    ClassifierModelConfig,
    DecoderConfig,
    EncoderConfig,
    ImageEncoderConfig,
    LanguageModelConfig,
    ModelConfig,
    TaggerModelConfig,
    missing_weights,
)
from s2s.data.batching import NO_TAG, Batch, LabelBatch, TagBatch, TextBatch
from s2s.errors import RecipeError
from s2s.loss import projected_cross_entropy
from s2s.modules.decoders import DecoderState, Memory, RNNDecoder
from s2s.modules.dropout import Dropout
from s2s.modules.efficientnet import FEATURES as EFFICIENTNET_FEATURES
from s2s.modules.efficientnet import last_blocks, pretrained_efficientnet
from s2s.modules.encoders import RNNEncoder, set_forget_bias
from s2s.modules.heads import ClassifierHead, Pooling
from s2s.modules.image_encoders import FixedPart, ImageEncoder, compact_resnet, grid_cells, torchvision_backbone
from s2s.modules.recurrence import reuse_weight_casts
from s2s.modules.recurrent_stack import Hidden, RecurrentStack, detached, join_rows, select_rows
from s2s.tokenizer import PAD


class Seq2Seq(nn.Module):
    """An encoder (of sentences, or of images) and a decoder language model conditioned on its encoding."""

    def __init__(self, encoder: RNNEncoder | ImageEncoder, decoder: RNNDecoder):
        super().__init__()
        self.encoder, self.decoder = encoder, decoder

    def encode(self, src: torch.Tensor, src_lengths: torch.Tensor | None = None) -> Memory:
        """src [B, S] ids with their lengths, or images [B, 3, H, W] → what the decoder attends to."""
        return self.decoder.memory(self.encoder(src, src_lengths))

    def initial_state(self, memory: Memory) -> DecoderState:
        return self.decoder.initial_state(memory)

    def step(
        self, prev: torch.Tensor, state: DecoderState, memory: Memory
    ) -> tuple[torch.Tensor, DecoderState, torch.Tensor | None]:
        """prev [B] ids → next-token logits [B, V] (in the autocast dtype; search normalises them), the next
        state, attention weights [B, S]."""
        logits, state, weights = self.decoder(prev.unsqueeze(1), state, memory)
        return logits[:, 0], state, None if weights is None else weights[:, 0]

    def reorder_state(self, state: DecoderState, order: torch.Tensor) -> DecoderState:
        return self.decoder.reorder_state(state, order)

    @property
    def attends(self) -> bool:
        """Whether search can show which source positions (or grid cells) each output step read."""
        return self.decoder.attention is not None

    def search_in_kernels(self, memory: Memory, limit, beam_size, alpha, nbest, attention):
        """The whole search in the compiled kernels, where they cover the decoder (see ``RNNDecoder``), else None."""
        return self.decoder.search_in_kernels(memory, limit, beam_size, alpha, nbest, attention)

    def decoding(self):
        """Held around a whole search: the weights cannot change, so each is cast to the decoding dtype once."""
        return reuse_weight_casts()

    def forward(self, batch: Batch, label_smoothing: float = 0.0) -> torch.Tensor:
        """Teacher forcing → the mean label-smoothed cross-entropy per target token (in training, with the decoder's
        ``attention_penalty``, plus the attention term over the same count). Padding never reaches the output
        layer, and the output layer and the loss are one fused step (``s2s.loss``)."""
        memory = self.encode(batch.src, batch.src_lengths)
        outputs, _, weights = self.decoder.attentional(batch.tgt_in, self.initial_state(memory), memory)  # [B, T, H]
        real = batch.tgt_out.ne(PAD)  # [B, T]
        hidden = self.decoder.dropout(outputs[real])  # [N, H]
        loss = projected_cross_entropy(hidden, self.decoder.output, batch.tgt_out[real], label_smoothing)
        if self.decoder.attention_penalty and self.training:  # a training objective: validation scores the words
            loss = loss + self.decoder.attention_penalty * attention_shortfall(weights, real, memory.mask)
        return loss / real.sum().clamp(min=1)


def attention_shortfall(weights: torch.Tensor, real: torch.Tensor, source_mask: torch.Tensor) -> torch.Tensor:
    """Σ over sequences and real source positions of (1 − the attention a position received over the real target
    steps)²: Show, Attend and Tell's doubly stochastic penalty (Xu et al. 2015, eq. 14). weights [B, T, S];
    real [B, T] and source_mask [B, S], True at real positions."""
    received = (weights.float() * real.unsqueeze(-1)).sum(1)  # [B, S]
    return ((1.0 - received).square() * source_mask).sum()


class Classifier(nn.Module):
    """Many-to-one: encoder → pooling → classifier head."""

    def __init__(self, encoder: RNNEncoder, pooling: Pooling, head: ClassifierHead):
        super().__init__()
        self.encoder, self.pooling, self.head = encoder, pooling, head

    def classify(self, src: torch.Tensor, src_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """src [B, S] ids → logits [B, L] (fp32) and the pooling's attention weights [B, S] (or None)."""
        pooled, weights = self.pooling(self.encoder(src, src_lengths))
        return self.head(pooled).float(), weights

    def forward(self, batch: LabelBatch, label_smoothing: float = 0.0) -> torch.Tensor:
        """The mean label-smoothed cross-entropy per text."""
        logits, _ = self.classify(batch.src, batch.src_lengths)
        return F.cross_entropy(logits, batch.labels, label_smoothing=label_smoothing)


class Ensemble(nn.Module):
    """Models initialised apart and trained side by side on the same batches, predicting together (an ensemble:
    Hansen & Salamon 1990; Lee et al. 2015 found different starting weights a better source of useful disagreement
    than different samples of the data). The training loss is the members' mean loss, so each member's gradient is
    its own loss's, scaled by 1/members (which Adam's step size does not see); only the trainer's gradient clipping,
    over all members at once, ties their steps together."""

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, batch, label_smoothing: float = 0.0) -> torch.Tensor:
        """The members' mean loss, each on its share of the batch (``shares``)."""
        shares = self.shares(batch)
        return torch.stack([m(share, label_smoothing) for m, share in zip(self.members, shares, strict=True)]).mean()

    def shares(self, batch) -> list:
        """What each member trains on: the whole batch."""
        return [batch] * len(self.members)


def mean_weights(weights: tuple[torch.Tensor | None, ...]) -> torch.Tensor | None:
    """The members' mean attention or pooling weights, or None for members without them."""
    return None if weights[0] is None else torch.stack(weights).mean(0)


class ClassifierEnsemble(Ensemble):
    """Classifiers whose mean label probabilities are the prediction. With ``split_batches`` each member trains on
    its own rows of each batch, so members also differ in the groups and order they meet the examples in, as models
    trained apart do."""

    def __init__(self, members: list[nn.Module], split_batches: bool = False):
        super().__init__(members)
        self.split_batches = split_batches

    def shares(self, batch) -> list:
        if not self.split_batches:
            return super().shares(batch)
        count, rows = len(self.members), len(batch.indices)
        # member k: rows k, k + count, …; a batch of fewer rows than members gives each member one row, in turn
        return [batch.rows(torch.arange(k, max(rows, count), count) % rows) for k in range(count)]

    def classify(self, src: torch.Tensor, src_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """src [B, S] ids → the log of the members' mean label probabilities [B, L] (so a softmax of it gives that
        mean) and the members' mean pooling weights [B, S] (or None)."""
        logits, weights = zip(*(member.classify(src, src_lengths) for member in self.members), strict=True)
        probabilities = torch.stack([row.softmax(-1) for row in logits]).mean(0)
        return probabilities.log(), mean_weights(weights)


class EnsembleMemory(NamedTuple):
    """Each member's encoding of the same inputs."""

    parts: tuple[Memory, ...]

    @property
    def mask(self) -> torch.Tensor:
        return self.parts[0].mask

    def select(self, rows: torch.Tensor) -> EnsembleMemory:
        return EnsembleMemory(tuple(part.select(rows) for part in self.parts))


class Seq2SeqEnsemble(Ensemble):
    """Encoder-decoders that search together: each step's next-token distribution is the mean of the members'
    (the ensemble decoding of Sutskever et al. 2014 and of Show and Tell). Search sees one model with the same
    interface as ``Seq2Seq``; its state and memory hold every member's. Captioners share a backbone that does not
    train (``build_captioner``), so a picture's feature grid serves them all."""

    def encode(self, src: torch.Tensor, src_lengths: torch.Tensor | None = None) -> EnsembleMemory:
        src = shared_features(self.members, src)
        return EnsembleMemory(tuple(member.encode(src, src_lengths) for member in self.members))

    @property
    def attends(self) -> bool:
        return self.members[0].attends

    def initial_state(self, memory: EnsembleMemory) -> tuple[DecoderState, ...]:
        return tuple(m.initial_state(part) for m, part in zip(self.members, memory.parts, strict=True))

    def step(
        self, prev: torch.Tensor, state: tuple[DecoderState, ...], memory: EnsembleMemory
    ) -> tuple[torch.Tensor, tuple[DecoderState, ...], torch.Tensor | None]:
        """prev [B] ids → the log of the members' mean next-token probabilities [B, V] (fp32), the next states, the
        members' mean attention weights [B, S]."""
        steps = [m.step(prev, s, part) for m, s, part in zip(self.members, state, memory.parts, strict=True)]
        logits, states, weights = zip(*steps, strict=True)
        log_probs = torch.stack([torch.log_softmax(row.float(), dim=-1) for row in logits])  # [N, B, V]
        return log_probs.logsumexp(0) - math.log(len(self.members)), states, mean_weights(weights)

    def reorder_state(self, state: tuple[DecoderState, ...], order: torch.Tensor) -> tuple[DecoderState, ...]:
        return tuple(m.reorder_state(s, order) for m, s in zip(self.members, state, strict=True))

    def decoding(self):
        return reuse_weight_casts()


def shared_features(members: nn.ModuleList, src: torch.Tensor) -> torch.Tensor:
    """Pictures → the feature grids of the backbone every member shares (one that does not train), computed once
    rather than once per member; anything else as it is."""
    encoders = [member.encoder for member in members]
    first = encoders[0]
    if not isinstance(first, ImageEncoder) or src.size(1) != 3 or first.backbone_trains:
        return src
    if any(encoder.backbone is not first.backbone for encoder in encoders):
        return src
    return first.features(src)


class Tagger(nn.Module):
    """Synchronised many-to-many: a tag for every word. Each word is its embedding joined to a vector of its
    spelling (the final states of a character-level RNN), so a word never seen in training is still read; the
    encoder reads the sentence both ways, and the head scores every word's state."""

    def __init__(self, encoder: RNNEncoder, characters: RNNEncoder | None, head: ClassifierHead):
        super().__init__()
        self.encoder, self.characters, self.head = encoder, characters, head

    def tag(self, batch: TagBatch) -> torch.Tensor:
        """→ logits [B, S, L] (fp32) of every word's tag; padding positions hold whatever the head makes of zeros."""
        lengths = batch.src_lengths.to(batch.src.device)
        words = self.encoder.embed(self.encoder.drop_words(batch.src))  # [B, S, E]
        if self.characters is not None:
            real = batch.char_lengths > 0  # [B, S]
            spelled = self.characters(batch.chars[real], batch.char_lengths[real]).summary  # [N, 2H]
            vectors = words.new_zeros(*words.shape[:2], spelled.size(-1))  # [B, S, 2H]
            vectors[real] = spelled.to(words.dtype)
            words = torch.cat([words, vectors], dim=-1)
        return self.head(self.encoder.encode(words, lengths).states).float()

    def forward(self, batch: TagBatch, label_smoothing: float = 0.0) -> torch.Tensor:
        """The mean label-smoothed cross-entropy per word."""
        logits = self.tag(batch)  # [B, S, L]
        return F.cross_entropy(
            logits.flatten(0, 1), batch.tags.flatten(), ignore_index=NO_TAG, label_smoothing=label_smoothing
        )


class Reading(NamedTuple):
    """A language model's "encoding": the state after reading a prompt, one row per prompt. There is nothing to
    attend to (``mask`` [B, 0]); search starts from this state."""

    hidden: Hidden
    mask: torch.Tensor  # [B, 0]

    def select(self, rows: torch.Tensor) -> Reading:
        return Reading(select_rows(self.hidden, rows), self.mask[rows])

    @staticmethod
    def joined(readings: list[Reading]) -> Reading:
        """The readings' rows, one after another."""
        return Reading(join_rows([r.hidden for r in readings]), torch.cat([r.mask for r in readings]))


class LanguageModel(nn.Module):
    """The recurrent decoder with nothing to condition on (char-rnn): embeddings → stacked GRU/LSTM → next-token
    logits. It trains on documents from a zero state, or on segments of streams with the state carried from each
    segment to the next (``TextBatch.carry``); it generates through ``s2s.search`` from the state after a prompt."""

    def __init__(self, vocab_size: int, config: LanguageModelConfig):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, config.embedding_size, padding_idx=PAD)
        self.rnn = RecurrentStack(config.embedding_size, config.hidden_size, config.layers, config.cell, config.dropout)
        set_forget_bias(self.rnn, config.forget_bias)
        self.dropout = Dropout(config.dropout)
        self.output = nn.Linear(config.hidden_size, vocab_size)
        if config.tie_embeddings:
            self.output.weight = self.embed.weight
            with torch.no_grad():  # at the output layer's scale (see RNNDecoder)
                self.embed.weight.normal_(0.0, config.hidden_size**-0.5)
                self.embed.weight[PAD].zero_()

    def run(self, inputs: torch.Tensor, state: Hidden) -> tuple[torch.Tensor, Hidden]:
        """inputs [B, T] ids, the state before them → outputs [B, T, H] and the state after them."""
        return self.rnn(self.dropout(self.embed(inputs)), state)

    def forward(self, batch: TextBatch, label_smoothing: float = 0.0) -> torch.Tensor:
        """The mean cross-entropy per target token; a stream segment starts from the state its streams' last
        segment ended in, and leaves its own final state there."""
        carry = batch.carry
        state = None if carry is None or batch.first else carry.hidden
        if state is None:
            state = self.rnn.zero_state(batch.inputs.size(0), batch.inputs)
        outputs, state = self.run(batch.inputs, state)
        if carry is not None:
            carry.hidden = detached(state)
        real = batch.targets.ne(PAD)
        hidden = self.dropout(outputs[real])
        loss = projected_cross_entropy(hidden, self.output, batch.targets[real], label_smoothing)
        return loss / real.sum().clamp(min=1)

    # the search interface (s2s.search): a prompt is read once, then one token per step
    def read(self, prefix: torch.Tensor) -> Reading:
        """prefix [B, P] ids (BOS and all of a prompt but its last token; P may be 0) → the state after them."""
        state = self.rnn.zero_state(prefix.size(0), prefix)
        if prefix.size(1):
            _, state = self.run(prefix, state)
        return Reading(state, prefix.new_zeros(prefix.size(0), 0, dtype=torch.bool))

    def initial_state(self, memory: Reading) -> Hidden:
        return memory.hidden

    def step(self, prev: torch.Tensor, state: Hidden, memory: Reading) -> tuple[torch.Tensor, Hidden, None]:
        outputs, state = self.run(prev.unsqueeze(1), state)
        return self.output(outputs[:, 0]), state, None

    def reorder_state(self, state: Hidden, order: torch.Tensor) -> Hidden:
        return select_rows(state, order)

    def decoding(self):
        return reuse_weight_casts()


def build_encoder(enc: EncoderConfig, vocab_size: int, joined: int = 0) -> RNNEncoder:
    """``joined``: the size of what the caller joins to each embedding before the first layer (a tagger's spelling
    vectors)."""
    encoder = RNNEncoder(
        vocab_size,
        enc.embedding_size,
        enc.hidden_size,
        enc.layers,
        enc.cell,
        enc.bidirectional,
        enc.dropout,
        enc.reverse_source,
        enc.word_dropout,
        input_size=enc.embedding_size + joined,
    )
    set_forget_bias(encoder, enc.forget_bias)
    return encoder


def build_classifier(config: ClassifierModelConfig, vocab_size: int, n_labels: int) -> Classifier | ClassifierEnsemble:
    """One classifier, or with ``members`` > 1 an ensemble of that many, each initialised from the random stream
    in turn."""
    split = config.member_batches == "split"
    member = partial(build_member, config, vocab_size, n_labels)
    return ensemble_of(member, config.members, ClassifierEnsemble, split_batches=split)


def build_member(config: ClassifierModelConfig, vocab_size: int, n_labels: int) -> Classifier:
    encoder = build_encoder(config.encoder, vocab_size)
    head = config.head
    return Classifier(
        encoder,
        Pooling(head.pooling, encoder.output_size),
        ClassifierHead(encoder.output_size, n_labels, head.hidden_size, head.dropout),
    )


def build_tagger(config: TaggerModelConfig, n_words: int, n_chars: int, n_tags: int) -> Tagger:
    chars, enc = config.characters, config.encoder
    characters = None
    if chars.embedding_size:
        characters = RNNEncoder(
            n_chars, chars.embedding_size, chars.hidden_size, 1, chars.cell, True, enc.dropout, False
        )
    spelled = characters.output_size if characters is not None else 0
    encoder = build_encoder(enc, n_words, joined=spelled)
    head = config.head
    return Tagger(encoder, characters, ClassifierHead(encoder.output_size, n_tags, head.hidden_size, head.dropout))


EncoderDecoder = Seq2Seq | Seq2SeqEnsemble  # what search, translators and captioners work with


def build_seq2seq(config: ModelConfig, src_vocab: int, tgt_vocab: int) -> EncoderDecoder:
    """The one place where the recipe's model section becomes modules; conflicts name their recipe keys. With
    ``members`` > 1, an ensemble of that many, each initialised from the random stream in turn."""

    def member() -> Seq2Seq:
        encoder = build_encoder(config.encoder, src_vocab)
        return Seq2Seq(encoder, build_decoder(config.decoder, tgt_vocab, encoder.output_size))

    return ensemble_of(member, config.members, Seq2SeqEnsemble)


def build_captioner(config: CaptionModelConfig, vocab_size: int, image_size: int) -> EncoderDecoder:
    """A CNN image encoder and the very decoder translation uses (Show and Tell; with attention, Show, Attend
    and Tell): one model class, one search. The members of an ensemble share a backbone that does not train."""
    enc = config.encoder
    first = build_backbone(enc)
    # a backbone that trains is each member's own (built in turn); one that does not serves them all
    shared = enc.freeze and not first.tuned
    backbones = chain([first], repeat(first) if shared else (build_backbone(enc) for _ in count()))

    def member() -> Seq2Seq:
        backbone, channels, tuned, fixed = next(backbones)
        cells = grid_cells(backbone, image_size)
        encoder = ImageEncoder(backbone, channels, cells, enc.output_size, enc.dropout, enc.freeze, tuned, fixed)
        return Seq2Seq(encoder, build_decoder(config.decoder, vocab_size, encoder.output_size))

    return ensemble_of(member, config.members, Seq2SeqEnsemble)


def ensemble_of(build_member, members: int, ensemble: type[Ensemble], **options) -> nn.Module:
    """One model from ``build_member()``, or with ``members`` > 1 an ``ensemble`` of that many."""
    if members == 1:
        return build_member()
    return ensemble([build_member() for _ in range(members)], **options)


def members_of(model: nn.Module) -> list[nn.Module]:
    """The models an ensemble predicts with, or the model itself."""
    return list(model.members) if isinstance(model, Ensemble) else [model]


class Backbone(NamedTuple):
    net: nn.Module
    channels: int  # of its feature grid
    tuned: list[nn.Module]  # modules fine-tuned in spite of ``freeze``
    fixed: FixedPart | None  # with ``tuned``: the part before them, whose grids can be cached


def build_backbone(enc: ImageEncoderConfig) -> Backbone:
    """The recipe's CNN."""
    if enc.backbone == "resnet":
        return Backbone(*compact_resnet(enc.channels, enc.blocks), [], None)
    if enc.backbone in PRETRAINED_BACKBONES:
        try:
            net = pretrained_efficientnet(enc.backbone.removeprefix("efficientnet_"))
        except ImportError:
            raise RecipeError(f"model.encoder.backbone: {missing_weights(enc.backbone)}") from None
        fixed = net.cut_before(enc.train_last) if enc.train_last else None
        tuned = last_blocks(net, enc.train_last)
        for parameter in (p for module in tuned for p in module.parameters()):
            parameter.lr_scale = enc.tuned_lr_scale  # s2s.train.make_optimizer gives them their own lr
        return Backbone(net, EFFICIENTNET_FEATURES, tuned, fixed)
    try:
        return Backbone(*torchvision_backbone(enc.backbone.removeprefix("torchvision/"), enc.pretrained), [], None)
    except ImportError:
        raise RecipeError(
            f"model.encoder.backbone: {enc.backbone} needs torchvision; install it with pip install 's2s[vision]'"
        ) from None
    except (ValueError, KeyError, OSError, RuntimeError) as error:
        raise RecipeError(f"model.encoder.backbone: cannot build {enc.backbone}: {error}") from None


def build_decoder(dec: DecoderConfig, vocab_size: int, encoder_size: int) -> RNNDecoder:
    """The recipe's decoder over an encoder of ``encoder_size``; the recipe's rules between decoder keys, and
    between the decoder and the encoder, were checked when it was loaded (s2s.config)."""
    decoder = RNNDecoder(
        vocab_size=vocab_size,
        embedding_size=dec.embedding_size,
        hidden_size=dec.hidden_size,
        layers=dec.layers,
        cell=dec.cell,
        dropout=dec.dropout,
        summary_size=encoder_size,
        attention=dec.attention,
        input_feeding=dec.input_feeding,
        every_step=dec.conditioning == "every_step",
        tie_embeddings=dec.tie_embeddings,
        attention_penalty=dec.attention_penalty,
        context_gate=dec.context_gate,
    )
    set_forget_bias(decoder, dec.forget_bias)
    return decoder


def autocast(device: torch.device, dtype: torch.dtype | None):
    """Mixed precision in ``dtype`` (bf16 or fp16) on ``device``; fp32 (no autocast) when ``dtype`` is None."""
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of a precision on ``device``; None (fp32) for bf16 where ``device`` has no native bf16
    (``bf16_fallback`` says why, for the caller to tell the user)."""
    if precision == "fp16" and device.type != "cuda":
        raise RecipeError("train.precision: fp16 needs a CUDA device; use bf16 on the CPU")
    if precision == "bf16" and bf16_fallback(device):
        return None
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def bf16_fallback(device: torch.device) -> str | None:
    """Why bf16 would run in fp32 on ``device``, or None when it runs natively. A CPU without oneDNN's bf16 support
    (AVX-512 or AMX) multiplies bf16 matrices in scalar loops, hundreds of times slower than fp32, and cannot run
    an LSTM in bf16 at all."""
    if device.type == "cpu" and not cpu_has_bf16():
        return f"bf16 runs as fp32 here: this CPU ({torch.backends.cpu.get_cpu_capability()}) has no AVX-512 or AMX"
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return "bf16 runs as fp32 here: this GPU has no bf16 support"
    return None


def cpu_has_bf16() -> bool:
    return torch.ops.mkldnn._is_mkldnn_bf16_supported()


def precision_name(dtype: torch.dtype | None) -> str:
    """The precision an autocast dtype stands for (None: fp32)."""
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "fp32")


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
