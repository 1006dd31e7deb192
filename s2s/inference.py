"""A trained run, loaded for use: text in, text out, batched by length, in the input's order.

Run directory layout (written by the trainer):

    recipe.yaml          the resolved recipe: the run can be reproduced from its own folder
    tokenizer/           SentencePiece model(s)
    best.safetensors     weights with the best validation score
    last.safetensors     weights at the last checkpoint; last.state.pt holds the trainer state
    log.jsonl            one JSON object per log line / validation
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from s2s.checkpoint import load_weights
from s2s.config import EvalConfig, Recipe, load_recipe
from s2s.data.batching import batch_indices, collate
from s2s.errors import RunError
from s2s.models import Seq2Seq, build_seq2seq
from s2s.search import Hypothesis, beam_search, greedy_search, max_lengths
from s2s.tokenizer import TokenizerPair


@dataclass
class Translation:
    text: str
    hypothesis: Hypothesis
    source_pieces: list[str]
    target_pieces: list[str]


class Translator:
    def __init__(
        self,
        model: Seq2Seq,
        tokenizers: TokenizerPair,
        eval_config: EvalConfig,
        device: torch.device = torch.device("cpu"),
        autocast_dtype: torch.dtype | None = None,
    ):
        self.model = model.to(device)
        self.tokenizers, self.config, self.device = tokenizers, eval_config, device
        self.autocast_dtype = autocast_dtype

    def translate(
        self,
        sentences: list[str],
        beam_size: int | None = None,
        nbest: int = 1,
        alpha: float | None = None,
        attention: bool = False,
    ) -> list[list[Translation]]:
        """The ``nbest`` translations of each sentence, in input order."""
        beam_size = beam_size or self.config.beam_size
        alpha = self.config.length_penalty if alpha is None else alpha
        self.model.eval()  # the trainer shares this model and may have left it in training mode
        ids = self.tokenizers.src.encode(sentences)
        results: list[list[Translation] | None] = [None] * len(sentences)
        for chunk in batch_indices([len(s) for s in ids], self.config.batch_size, by_tokens=False, rng=None):
            batch = collate([ids[i] for i in chunk], None, chunk)
            src = batch.src.to(self.device)
            limit = max_lengths(batch.src_lengths, self.config.max_length_ratio)
            with torch.autocast(
                self.device.type,
                dtype=self.autocast_dtype or torch.float32,
                enabled=self.autocast_dtype is not None,
            ):
                if beam_size == 1 and nbest == 1:
                    hyps = [[h] for h in greedy_search(self.model, src, batch.src_lengths, limit, attention)]
                else:
                    hyps = beam_search(self.model, src, batch.src_lengths, limit, beam_size, alpha, nbest, attention)
            for i, options in zip(chunk, hyps, strict=True):
                results[i] = [self.present(ids[i], h) for h in options]
        return results

    def present(self, source_ids: list[int], hyp: Hypothesis) -> Translation:
        tgt = self.tokenizers.tgt
        return Translation(
            tgt.decode([hyp.tokens])[0], hyp, self.tokenizers.src.pieces(source_ids), tgt.pieces(hyp.tokens)
        )

    def best(self, sentences: list[str], **options) -> list[str]:
        return [options_[0].text for options_ in self.translate(sentences, **options)]


def require_run(run_dir: str | Path) -> Path:
    """``run_dir`` as a Path, if it is a run directory; otherwise the error a user sees."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"{run_dir}: no such run directory")
    if not (run_dir / "recipe.yaml").is_file():
        raise RunError(f"{run_dir}: not an s2s run (no recipe.yaml)")
    return run_dir


def load_run(run_dir: str | Path, checkpoint: str = "best", device: str = "cpu") -> tuple[Recipe, Translator]:
    """Recipe and translator of a finished (or running) run; errors name what is missing."""
    run_dir = require_run(run_dir)
    recipe = load_recipe(run_dir / "recipe.yaml", check_files=False)
    tokenizers = TokenizerPair.load(run_dir / "tokenizer")
    model = build_seq2seq(recipe.model, tokenizers.src.vocab_size, tokenizers.tgt.vocab_size)
    weights = run_dir / f"{checkpoint}.safetensors"
    if not weights.is_file():
        raise RunError(f"{run_dir}: no {checkpoint} checkpoint ({weights.name}); has training saved one yet?")
    load_weights(model, weights)
    return recipe, Translator(model, tokenizers, recipe.eval, torch.device(device))
