"""Trained models in use: text in, predictions out, batched by length, returned in the input's order."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from PIL import Image

from s2s.config import CaptionEvalConfig, EvalConfig, LanguageModelEvalConfig
from s2s.data.batching import batch_indices, collate, collate_labelled, collate_tagged
from s2s.data.images import image_tensor
from s2s.errors import UsageError
from s2s.models import (
    Classifier,
    ClassifierEnsemble,
    EncoderDecoder,
    LanguageModel,
    Reading,
    Tagger,
    autocast,
)
from s2s.search import Hypothesis, Sampling, max_lengths, search
from s2s.tokenizer import BOS, Tokenizer, TokenizerPair


@dataclass
class Translation:
    text: str
    hypothesis: Hypothesis
    source_pieces: list[str]
    target_pieces: list[str]


class Translator:
    def __init__(
        self,
        model: EncoderDecoder,
        tokenizers: TokenizerPair,
        eval_config: EvalConfig,
        device: torch.device = torch.device("cpu"),
        autocast_dtype: torch.dtype | None = None,
    ):
        self.model = model.to(device)
        self.tokenizers, self.config, self.device = tokenizers, eval_config, device
        self.autocast_dtype = autocast_dtype

    @torch.no_grad()  # not inference_mode: autocast keeps its weight casts across decoding steps only under no_grad
    def translate(
        self,
        sentences: list[str],
        beam_size: int | None = None,
        nbest: int = 1,
        alpha: float | None = None,
        attention: bool = False,
        sampling: Sampling | None = None,
    ) -> list[list[Translation]]:
        """The ``nbest`` translations of each sentence, in input order (with ``sampling``: ``nbest`` samples)."""
        if attention and not self.has_attention:
            raise UsageError("this model has no attention to show (its recipe's model.decoder.attention is none)")
        beam_size = beam_size or max(self.config.beam_size, nbest)  # the recipe's, widened to the n-best
        alpha = self.config.length_penalty if alpha is None else alpha
        self.model.eval()  # the trainer shares this model and may have left it in training mode
        ids = self.tokenizers.src.encode(sentences)
        results: list[list[Translation] | None] = [None] * len(sentences)
        for chunk in batch_indices([len(s) for s in ids], self.config.batch_size, by_tokens=False, rng=None):
            batch = collate([ids[i] for i in chunk], None, chunk)
            src = batch.src.to(self.device)
            limit = max_lengths(batch.src_lengths, self.config.max_length_ratio)
            with autocast(self.device, self.autocast_dtype):
                memory = self.model.encode(src, batch.src_lengths)
                hyps = search(self.model, memory, limit, beam_size, alpha, nbest, attention, sampling)
            # one call detokenises the whole chunk: SentencePiece's per-call cost is most of a short sentence's
            texts = iter(self.tokenizers.tgt.decode([h.tokens for options in hyps for h in options]))
            for i, options in zip(chunk, hyps, strict=True):
                results[i] = [self.present(ids[i], h, next(texts)) for h in options]
        return results

    @property
    def has_attention(self) -> bool:
        return self.model.attends

    def present(self, source_ids: list[int], hyp: Hypothesis, text: str) -> Translation:
        return Translation(text, hyp, self.tokenizers.src.pieces(source_ids), self.tokenizers.tgt.pieces(hyp.tokens))

    def best(self, sentences: list[str], **options) -> list[str]:
        return [options_[0].text for options_ in self.translate(sentences, **options)]


@dataclass
class Prediction:
    label: str
    probability: float
    probabilities: dict[str, float]  # every label's probability


class TextClassifier:
    """Texts → labels with probabilities, batched by length, in input order."""

    def __init__(
        self,
        model: Classifier | ClassifierEnsemble,
        tokenizer: Tokenizer,
        labels: list[str],
        max_length: int,
        batch_size: int,
        device: torch.device = torch.device("cpu"),
        autocast_dtype: torch.dtype | None = None,
    ):
        self.model = model.to(device)
        self.tokenizer, self.labels, self.max_length, self.batch_size = tokenizer, labels, max_length, batch_size
        self.device, self.autocast_dtype = device, autocast_dtype

    def encode(self, texts: list[str]) -> list[list[int]]:
        """Token ids, truncated to the recipe's ``data.max_length`` as in training."""
        return [ids[: self.max_length] for ids in self.tokenizer.encode(texts)]

    @torch.inference_mode()
    def probabilities(self, ids: list[list[int]]) -> torch.Tensor:
        """[N, L] label probabilities of already encoded texts."""
        self.model.eval()
        out = torch.empty(len(ids), len(self.labels))
        for chunk in batch_indices([len(t) for t in ids], self.batch_size, by_tokens=False, rng=None):
            batch = collate_labelled([ids[i] for i in chunk], None, chunk)
            with autocast(self.device, self.autocast_dtype):
                logits, _ = self.model.classify(batch.src.to(self.device), batch.src_lengths)
            out[chunk] = logits.softmax(-1).cpu()
        return out

    def classify(self, texts: list[str]) -> list[Prediction]:
        probabilities = self.probabilities(self.encode(texts))
        predictions = []
        for row in probabilities.tolist():
            best = max(range(len(row)), key=row.__getitem__)
            predictions.append(Prediction(self.labels[best], row[best], dict(zip(self.labels, row, strict=True))))
        return predictions


@dataclass
class Caption:
    text: str
    hypothesis: Hypothesis


class ImageCaptioner:
    """Pictures → captions, greedy or beam search, batched."""

    def __init__(
        self,
        model: EncoderDecoder,
        tokenizer: Tokenizer,
        eval_config: CaptionEvalConfig,
        image_size: int,
        device: torch.device = torch.device("cpu"),
        autocast_dtype: torch.dtype | None = None,
    ):
        self.model = model.to(device)
        self.tokenizer, self.config, self.image_size = tokenizer, eval_config, image_size
        self.device, self.autocast_dtype = device, autocast_dtype

    def caption(
        self,
        images: list[Image.Image],
        beam_size: int | None = None,
        nbest: int = 1,
        alpha: float | None = None,
        sampling: Sampling | None = None,
    ) -> list[list[Caption]]:
        """The ``nbest`` captions of each picture, in input order (with ``sampling``: ``nbest`` samples)."""
        pixels = [image_tensor(image, self.image_size) for image in images]
        return self.caption_inputs(pixels, beam_size, nbest, alpha, sampling)

    @torch.no_grad()  # not inference_mode: see Translator.translate
    def caption_inputs(
        self,
        inputs: list[torch.Tensor],
        beam_size: int | None = None,
        nbest: int = 1,
        alpha: float | None = None,
        sampling: Sampling | None = None,
    ) -> list[list[Caption]]:
        """Captions of pictures given as pixels [3, S, S] or as a fixed backbone's feature grids [C, h, w]."""
        beam_size = beam_size or self.config.beam_size
        alpha = self.config.length_penalty if alpha is None else alpha
        self.model.eval()
        results: list[list[Caption]] = []
        for start in range(0, len(inputs), self.config.batch_size):
            chunk = torch.stack(inputs[start : start + self.config.batch_size]).to(self.device)
            limit = torch.full((len(chunk),), self.config.max_length)
            with autocast(self.device, self.autocast_dtype):
                hyps = search(self.model, self.model.encode(chunk), limit, beam_size, alpha, nbest, sampling=sampling)
            for options in hyps:
                results.append([Caption(self.tokenizer.decode([h.tokens])[0], h) for h in options])
        return results


@dataclass
class WordTag:
    tag: str
    probability: float


class WordTagger:
    """Sentences given as words → one tag per word with its probability, batched by length, in input order."""

    def __init__(
        self,
        model: Tagger,
        vocabulary,  # s2s.pipelines.tagging.Vocabulary: word, character and tag ids
        batch_size: int,
        device: torch.device = torch.device("cpu"),
        autocast_dtype: torch.dtype | None = None,
    ):
        self.model = model.to(device)
        self.vocabulary, self.batch_size, self.device, self.autocast_dtype = (
            vocabulary,
            batch_size,
            device,
            autocast_dtype,
        )

    @property
    def tags(self) -> list[str]:
        return self.vocabulary.tags

    @torch.inference_mode()
    def probabilities(self, words: list[list[int]], chars: list[list[list[int]]]) -> list[torch.Tensor]:
        """[len(sentence), L] tag probabilities of each sentence, given as word and character ids."""
        self.model.eval()
        out: list[torch.Tensor | None] = [None] * len(words)
        for chunk in batch_indices([len(w) for w in words], self.batch_size, by_tokens=False, rng=None):
            batch = collate_tagged([words[i] for i in chunk], [chars[i] for i in chunk], None, chunk)
            with autocast(self.device, self.autocast_dtype):
                logits = self.model.tag(batch.to(self.device))  # [B, S, L]
            for row, i in enumerate(chunk):
                out[i] = logits[row, : len(words[i])].softmax(-1).cpu()
        return out

    def tag(self, sentences: list[list[str]]) -> list[list[WordTag]]:
        """The tag of every word of each sentence (sentences as lists of words)."""
        words, chars = self.vocabulary.encode(sentences)
        tagged = []
        for probabilities in self.probabilities(words, chars):
            best, ids = probabilities.max(-1)
            tagged.append([WordTag(self.tags[k], float(p)) for p, k in zip(best.tolist(), ids.tolist(), strict=True)])
        return tagged


class TextGenerator:
    """A language model in use: text generated after a prompt (sampled, or greedy at temperature 0)."""

    def __init__(
        self,
        model: LanguageModel,
        tokenizer: Tokenizer,
        config: LanguageModelEvalConfig,
        device: torch.device = torch.device("cpu"),
        autocast_dtype: torch.dtype | None = None,
    ):
        self.model = model.to(device)
        self.tokenizer, self.config, self.device, self.autocast_dtype = tokenizer, config, device, autocast_dtype

    def sampling(self, temperature: float | None, top_k: int | None, top_p: float | None, seed: int | None) -> Sampling:
        """How to draw: each setting as given, else the recipe's (``eval.generate``)."""
        settings = self.config.generate
        return Sampling(
            settings.temperature if temperature is None else temperature,
            settings.top_k if top_k is None else top_k,
            settings.top_p if top_p is None else top_p,
            seed,
        )

    def prompt_ids(self, prompt: str, field: str = "--prompt") -> list[int]:
        """The prompt's token ids. Characters the model never saw in training are refused: it would read them as
        the unknown token, which training never showed it, and go on from a state that means nothing."""
        unknown = self.tokenizer.unknown([prompt])
        if unknown:
            shown = ", ".join(f"{char!r} (U+{ord(char):04X})" for char in unknown)
            raise UsageError(f"{field}: characters the model never saw in training: {shown}")
        return self.tokenizer.encode([prompt])[0] if prompt else []

    def generate(self, prompt: str, max_length: int, sampling: Sampling | None, count: int = 1, emit=None) -> list[str]:
        """``count`` texts of up to ``max_length`` tokens that follow ``prompt`` (the prompt itself not
        repeated); ``sampling`` None is greedy. ``emit(rows, tokens)``: as ``s2s.search.greedy_search``."""
        return self.generate_each([prompt] * count, [max_length] * count, sampling, emit)

    @torch.no_grad()  # not inference_mode: see Translator.translate
    def generate_each(
        self, prompts: list[str], max_lengths: list[int], sampling: Sampling | None, emit=None
    ) -> list[str]:
        """One text after each prompt, of up to its ``max_lengths`` tokens, all drawn side by side in one search
        (row i of ``emit`` is prompt i). Each distinct prompt is read once, on its own: prompts differ in length,
        and a state read across padding would not be the state after the prompt."""
        self.model.eval()
        ids = [[BOS, *self.prompt_ids(prompt)] for prompt in prompts]
        distinct = list(dict.fromkeys(prompts))
        with autocast(self.device, self.autocast_dtype):
            readings = {
                prompt: self.model.read(torch.tensor([ids[prompts.index(prompt)][:-1]], device=self.device))
                for prompt in distinct  # all of each prompt but its last token, the first step's input
            }
            memory = Reading.joined([readings[prompt] for prompt in prompts])
            start = torch.tensor([row[-1] for row in ids], device=self.device)
            limit = torch.tensor([length + 1 for length in max_lengths])  # and an EOS, forced at the end
            found = search(self.model, memory, limit, 1, 0.0, 1, sampling=sampling, start=start, emit=emit)
        return [self.tokenizer.decode([options[0].tokens])[0] for options in found]


class TextIncrements:
    """The text that each row's new tokens add, as they come from a search's ``emit``: what decoding all of the
    row's tokens so far adds to what was given before (a SentencePiece token's text depends on its neighbours, so
    tokens are not decoded one by one). ``out(row, text)`` is called with each non-empty increment."""

    def __init__(self, tokenizer: Tokenizer, rows: int, out):
        self.tokenizer, self.out = tokenizer, out
        self.tokens: list[list[int]] = [[] for _ in range(rows)]
        self.given = [""] * rows

    def emit(self, rows: list[int], tokens: list[int]) -> None:
        for row, token in zip(rows, tokens, strict=True):
            self.tokens[row].append(token)
            text = self.tokenizer.decode([self.tokens[row]])[0]
            if len(text) > len(self.given[row]) and text.startswith(self.given[row]):
                self.out(row, text[len(self.given[row]) :])
                self.given[row] = text
