"""Corpus scores from sacreBLEU's object API, each with its reproducibility signature."""

from __future__ import annotations

from sacrebleu.metrics import BLEU, CHRF


def score_corpus(hypotheses: list[str], references: list[str]) -> dict:
    """BLEU, chrF and exact match of detokenised hypotheses against one reference each."""
    bleu, chrf = BLEU(), CHRF()
    bleu_score = bleu.corpus_score(hypotheses, [references])
    chrf_score = chrf.corpus_score(hypotheses, [references])
    exact = sum(h.strip() == r.strip() for h, r in zip(hypotheses, references, strict=True))
    return {
        "bleu": round(bleu_score.score, 2),
        "chrf": round(chrf_score.score, 2),
        "exact_match": round(100.0 * exact / max(1, len(references)), 2),
        "signature": {"bleu": str(bleu.get_signature()), "chrf": str(chrf.get_signature())},
        "n_sentences": len(references),
    }
