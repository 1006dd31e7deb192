"""Translation: sentence pairs → SentencePiece → encoder–decoder; validation decodes and scores with sacreBLEU."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from s2s.config import TranslationRecipe
from s2s.data.batching import Batch, ByLength, collate
from s2s.data.corpus import load_split, read_text_pair
from s2s.errors import DataError, UsageError
from s2s.files import write_text
from s2s.inference import Translation, Translator
from s2s.metrics import bleu_by_length, score_corpus, token_accuracy
from s2s.models import EncoderDecoder, build_seq2seq
from s2s.pipelines import EvalSource, Evaluation
from s2s.tokenizer import TokenizerPair, train_tokenizers


@dataclass
class Corpus(ByLength):
    """Token ids of one split, and its raw text (validation scores detokenised output against raw text)."""

    src: list[list[int]]
    tgt: list[list[int]]
    src_text: list[str]
    tgt_text: list[str]

    def __len__(self) -> int:
        return len(self.src)

    def lengths(self) -> list[int]:
        """What batching measures an example by: its longer side, with BOS or EOS."""
        return [max(len(s), len(t)) + 1 for s, t in zip(self.src, self.tgt, strict=True)]

    def batch(self, indices: list[int]) -> Batch:
        return collate([self.src[i] for i in indices], [self.tgt[i] for i in indices], indices)

    def iterate(self, batches: list[list[int]]) -> Iterator[Batch]:
        return map(self.batch, batches)

    def subset(self, rows: list[int]) -> Corpus:
        return Corpus(*([column[i] for i in rows] for column in (self.src, self.tgt, self.src_text, self.tgt_text)))


def encode(tokenizers: TokenizerPair, pairs: list[tuple[str, str]]) -> Corpus:
    src_text, tgt_text = [s for s, _ in pairs], [t for _, t in pairs]
    return Corpus(tokenizers.src.encode(src_text), tokenizers.tgt.encode(tgt_text), src_text, tgt_text)


class TranslationPipeline:
    UNIT = "sentences"
    EVAL_FILES = ("src", "ref")
    EVAL_OPTIONS = ("beam", "alpha", "plot_attention")

    def __init__(self, recipe: TranslationRecipe):
        self.recipe = recipe

    def read_splits(self, events) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        """The train and valid pairs; read before anything is written, so bad data leaves no run directory."""
        splits = load_split(self.recipe.data, "train"), load_split(self.recipe.data, "valid")
        for name, pairs in zip(("train", "valid"), splits, strict=True):
            if not pairs:
                raise DataError(f"data.{name}: the {name} split is empty")
        return splits

    def prepare_assets(self, run_dir: Path, splits, events) -> TokenizerPair:
        """The SentencePiece model(s), trained on the training pairs and saved in ``run_dir/tokenizer``."""
        return train_tokenizers(self.recipe.tokenizer, splits[0], Path(run_dir) / "tokenizer")

    def load_assets(self, run_dir: Path) -> TokenizerPair:
        return TokenizerPair.load(Path(run_dir) / "tokenizer")

    def examples(self, tokenizers: TokenizerPair, splits, events) -> tuple[Corpus, Corpus]:
        """Both splits encoded; training pairs that are empty or over ``data.max_length`` tokens dropped."""
        train_pairs, valid_pairs = splits
        train = encode(tokenizers, train_pairs)
        limit = self.recipe.data.max_length
        kept = [i for i in range(len(train)) if 0 < len(train.src[i]) <= limit and 0 < len(train.tgt[i]) <= limit]
        empty = sum(1 for s, t in zip(train.src, train.tgt, strict=True) if not s or not t)
        events.message(
            f"training pairs: {len(kept):,} kept, {empty:,} empty and "
            f"{len(train) - len(kept) - empty:,} over {limit} tokens dropped"
        )
        if not kept:
            raise DataError(
                f"data.train: no training pairs left after dropping empty ones and those over "
                f"data.max_length = {limit} tokens"
            )
        return train.subset(kept), encode(tokenizers, valid_pairs)

    def build_model(self, tokenizers: TokenizerPair) -> EncoderDecoder:
        return build_seq2seq(self.recipe.model, tokenizers.src.vocab_size, tokenizers.tgt.vocab_size)

    def predictor(
        self, model: EncoderDecoder, tokenizers: TokenizerPair, device: torch.device, dtype=None
    ) -> Translator:
        return Translator(model, tokenizers, self.recipe.eval, device, dtype)

    def predict(self, translator: Translator, valid: Corpus, count: int | None, beam_size: int | None):
        return translator.translate(valid.src_text[:count], beam_size=beam_size)

    def score(self, translator: Translator, valid: Corpus, loss: float) -> dict:
        """BLEU, chrF, exact match and token accuracy of (the first ``eval.valid_sentences`` of) the valid split."""
        config = self.recipe.eval
        translations = self.predict(translator, valid, config.valid_sentences, config.valid_beam_size)
        scores = score_corpus(best(translations), valid.tgt_text[: len(translations)])
        tokens = token_accuracy(best_tokens(translations), valid.tgt[: len(translations)])
        chosen = {k: scores[k] for k in ("bleu", "chrf", "exact_match")}
        return {**chosen, "token_accuracy": tokens, "signature": scores["signature"]["bleu"]}

    def evaluate(self, translator: Translator, source: EvalSource, options: dict, out: Path) -> Evaluation:
        """BLEU, chrF and exact match of a split or of ``--src``/``--ref`` files; hypotheses (and attention heat
        maps of the first ``plot_attention`` sentences) written under ``out``."""
        if options.get("plot_attention") and not translator.has_attention:  # refused before anything is written
            raise UsageError("--plot-attention: this model has no attention (its model.decoder.attention is none)")
        if source.split:
            pairs = load_split(self.recipe.data, source.split)
        else:
            pairs = read_text_pair(source.files["src"], source.files["ref"])
        sources, search = [s for s, _ in pairs], {"beam_size": options.get("beam"), "alpha": options.get("alpha")}
        started = time.perf_counter()
        translations = translator.translate(sources, **search)
        hypotheses, references = best(translations), [t for _, t in pairs]
        scores = {**score_corpus(hypotheses, references), "seconds": round(time.perf_counter() - started, 2)}
        reference_ids = translator.tokenizers.tgt.encode(references)
        scores["token_accuracy"] = token_accuracy(best_tokens(translations), reference_ids)
        scores["bleu_by_length"] = bleu_by_length(sources, hypotheses, references)
        scores["hypotheses"] = str(write_text(out / f"{source.name}.hyp.txt", hypotheses))
        report = [
            f"BLEU  {scores['bleu']:6.2f}  {scores['signature']['bleu']}",
            f"chrF  {scores['chrf']:6.2f}  {scores['signature']['chrf']}",
            f"exact {scores['exact_match']:6.2f}  ({scores['n_sentences']} sentences, {scores['seconds']:.1f} s)",
            f"token accuracy {scores['token_accuracy']:6.2f}",
            "BLEU by source words: "
            + "  ".join(f"{b['words']}: {b['bleu']} ({b['sentences']})" for b in scores["bleu_by_length"]),
            f"hypotheses: {scores['hypotheses']}",
        ]
        if options.get("plot_attention"):
            from s2s.pictures import save_heatmaps

            shown = translator.translate(sources[: options["plot_attention"]], **search, attention=True)
            scores["attention_plots"] = [str(p) for p in save_heatmaps(shown, out / "attention")]
            report.append(f"attention heat maps: {out / 'attention'}")
        return Evaluation(scores, report)


def best(translations: list[list[Translation]]) -> list[str]:
    return [options[0].text for options in translations]


def best_tokens(translations: list[list[Translation]]) -> list[list[int]]:
    """The token ids of each source's best translation."""
    return [options[0].hypothesis.tokens for options in translations]
