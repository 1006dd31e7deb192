"""Corpus scores from sacreBLEU's object API, each with its reproducibility signature. sacreBLEU is imported where a
score is computed: the commands that only answer (translate, caption, serve) never load it."""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass


def score_corpus(hypotheses: list[str], references: list[str]) -> dict:
    """BLEU, chrF and exact match of detokenised hypotheses against one reference each."""
    from sacrebleu.metrics import BLEU, CHRF

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


LENGTH_BUCKETS = ((1, 10), (11, 20), (21, None))  # source words: the buckets of the long-sentence claims


def bleu_by_length(sources: list[str], hypotheses: list[str], references: list[str]) -> list[dict]:
    """Corpus BLEU of the sentences whose source has 1–10, 11–20 and more than 20 words (whitespace-separated),
    each with its sentence count: where a claim about long sentences can be checked. An empty bucket has BLEU None."""
    from sacrebleu.metrics import BLEU

    words, buckets = [len(s.split()) for s in sources], []
    for low, high in LENGTH_BUCKETS:
        rows = [i for i, n in enumerate(words) if low <= n and (high is None or n <= high)]
        score = BLEU().corpus_score([hypotheses[i] for i in rows], [[references[i] for i in rows]]) if rows else None
        name = f"{low}-{high}" if high else f">{low - 1}"
        buckets.append({"words": name, "sentences": len(rows), "bleu": round(score.score, 2) if score else None})
    return buckets


def token_accuracy(hypotheses: list[list[int]], references: list[list[int]]) -> float:
    """The share of reference tokens (EOS left out) that the hypothesis has at the same position, in percent: a
    sequence task's per-token score beside its exact match."""
    pairs = zip(hypotheses, references, strict=True)
    right = sum(h == r for hyp, ref in pairs for h, r in zip(hyp, ref, strict=False))  # a short hypothesis misses
    return round(100.0 * right / max(1, sum(map(len, references))), 2)


PUNCTUATION = re.compile(r"[^\w\s]+")
CAPTION_SETTING = "lowercased, punctuation removed"  # what the conventional caption BLEU scores (coco-caption's)


def caption_scores(hypotheses: list[str], references: list[list[str]]) -> dict:
    """Corpus BLEU-1 … BLEU-4 against every reference caption of each image (images may have different numbers
    of references: sacreBLEU's ``nrefs:var``), in two settings: ``bleu1``…``bleu4`` the conventional one for
    captions (lowercased, punctuation removed from hypotheses and references alike, as coco-caption scores), and
    ``cased_bleu1``… the captions as given (mixed case, punctuation as tokens); each with its signature."""
    plain = [strip_punctuation(h) for h in hypotheses], [[strip_punctuation(r) for r in refs] for refs in references]
    scores = {**bleu_orders(*plain, lowercase=True), "cider": cider_d(hypotheses, references)}
    scores["setting"] = CAPTION_SETTING
    cased = bleu_orders(hypotheses, references, lowercase=False)
    scores.update({f"cased_{key}": value for key, value in cased.items()})
    scores["n_images"] = len(hypotheses)
    return scores


NGRAM_ORDERS = (1, 2, 3, 4)
LENGTH_SIGMA = 6.0  # CIDEr-D's σ: the length difference at which the reward falls to e^-0.5 of itself
SCALE = 10.0  # CIDEr-D's customary factor, so that scores read like coco-caption's


def caption_words(text: str) -> list[str]:
    """The words that CIDEr-D compares: lowercased, punctuation removed (as the caption BLEU compares them)."""
    return strip_punctuation(text).lower().split()


def ngram_counts(words: list[str]) -> list[Counter]:
    return [Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1)) for n in NGRAM_ORDERS]


@dataclass
class Vector:
    """A caption's tf-idf vector for each n-gram order, with its norm and length in words."""

    weights: list[dict[tuple[str, ...], float]]
    norms: list[float]
    length: int


class CiderD:
    """CIDEr-D (Vedantam et al. 2015, as coco-caption computes it) of candidate captions against the references of
    one picture of the corpus given at construction. Each n-gram (n = 1…4) is weighted by its inverse document
    frequency over that corpus (a picture's references are one document), so words particular to a picture count
    and words every caption shares do not; a candidate's weights are clipped by the reference's, and a Gaussian
    penalty on the length difference keeps repeats and odd lengths from paying."""

    def __init__(self, references: list[list[str]]):
        """``references``: each picture's reference captions; they are the documents of the idf."""
        self.references = [[caption_words(text) for text in refs] for refs in references]
        frequency: Counter = Counter()
        for refs in self.references:
            frequency.update({gram for words in refs for counts in ngram_counts(words) for gram in counts})
        self.frequency, self.log_documents = frequency, math.log(max(1, len(self.references)))
        self.vectors = [[self.vector(words) for words in refs] for refs in self.references]

    def vector(self, words: list[str]) -> Vector:
        weights, norms = [], []
        for counts in ngram_counts(words):
            # an n-gram in no training document gets the largest idf (as coco-caption's max(1, df))
            row = {g: c * (self.log_documents - math.log(max(1.0, self.frequency[g]))) for g, c in counts.items()}
            weights.append(row)
            norms.append(math.sqrt(sum(w * w for w in row.values())))
        return Vector(weights, norms, len(words))

    def score(self, text: str, picture: int) -> float:
        """The candidate ``text``'s CIDEr-D against the references of picture number ``picture``."""
        candidate, total = self.vector(caption_words(text)), 0.0
        references = self.vectors[picture]
        for reference in references:
            similarity = 0.0
            for mine, theirs, norm, their_norm in zip(
                candidate.weights, reference.weights, candidate.norms, reference.norms, strict=True
            ):
                if norm and their_norm:  # CIDEr-D clips the candidate's weights by the reference's
                    dot = sum(min(w, theirs.get(g, 0.0)) * theirs.get(g, 0.0) for g, w in mine.items())
                    similarity += dot / (norm * their_norm)
            gap = candidate.length - reference.length
            total += similarity / len(NGRAM_ORDERS) * math.exp(-(gap * gap) / (2 * LENGTH_SIGMA**2))
        return SCALE * total / max(1, len(references))


class SentenceBleu:
    """Sentence BLEU-4 (0…1) of candidate captions against the references of one picture of the corpus given at
    construction, on the words caption BLEU compares: n-gram matches clipped by the most any one reference has,
    the brevity penalty against the reference closest in length, and sacreBLEU's sentence-level smoothing (an
    order without a match counts as 1 / (2^k × its n-grams) for its k-th such order; orders longer than the
    candidate are left out; no word in common scores 0). The reward for captions judged by corpus BLEU-4, as
    self-critical training's BLEU-optimised runs used (Rennie et al. 2017). Written here rather than called from
    ``sacrebleu.sentence_bleu``, which counts the references' n-grams again at every call: their clipped counts are
    kept per picture, so each of the stage's many samples costs only its own n-grams (a test pins it to sacreBLEU)."""

    def __init__(self, references: list[list[str]]):
        self.clips: list[list[Counter]] = []
        self.lengths: list[list[int]] = []
        for refs in references:
            words = [caption_words(text) for text in refs]
            most = [Counter() for _ in NGRAM_ORDERS]
            for counts in map(ngram_counts, words):
                for order, order_counts in enumerate(counts):
                    most[order] |= order_counts  # the elementwise maximum over the references
            self.clips.append(most)
            self.lengths.append([len(w) for w in words])

    def score(self, text: str, picture: int) -> float:
        """The candidate ``text``'s BLEU-4 against the references of picture number ``picture``."""
        words = caption_words(text)
        if not words:
            return 0.0
        log_precision, orders, halvings = 0.0, 0, 0
        for counts, clip in zip(ngram_counts(words), self.clips[picture], strict=True):
            total = sum(counts.values())
            if total == 0:  # the candidate is shorter than this order
                break
            matched = sum(min(count, clip[gram]) for gram, count in counts.items())
            if matched == 0 and orders == 0:  # not one word in common: nothing to smooth
                return 0.0
            if matched == 0:
                halvings += 1
            log_precision += math.log(matched / total if matched else 1.0 / (2**halvings * total))
            orders += 1
        closest = min(self.lengths[picture], key=lambda length: (abs(length - len(words)), length))
        brevity = min(0.0, 1.0 - closest / len(words))
        return math.exp(brevity + log_precision / orders)


def cider_d(hypotheses: list[str], references: list[list[str]]) -> float:
    """Corpus CIDEr-D: the mean over images of each hypothesis's CIDEr-D, the idf taken over these references."""
    scorer = CiderD(references)
    return round(sum(scorer.score(h, i) for i, h in enumerate(hypotheses)) / max(1, len(hypotheses)), 3)


def strip_punctuation(text: str) -> str:
    """'A dog , running .' → 'A dog running': punctuation becomes space, so 't-shirt' and 't shirt' match."""
    return " ".join(PUNCTUATION.sub(" ", text).split())


def bleu_orders(hypotheses: list[str], references: list[list[str]], lowercase: bool) -> dict:
    """``bleu1``…``bleu4`` and the signature (the BLEU-4 one: orders 1-3 differ only in their ngram order)."""
    from sacrebleu.metrics import BLEU

    most = max((len(refs) for refs in references), default=1)
    streams = [[refs[k] if k < len(refs) else None for refs in references] for k in range(most)]
    scores: dict = {}
    for order in (1, 2, 3, 4):
        # captions often come tokenised (" ."): force scores them as given, without sacreBLEU's warning
        bleu = BLEU(max_ngram_order=order, lowercase=lowercase, force=True)
        scores[f"bleu{order}"] = round(bleu.corpus_score(hypotheses, streams).score, 2)
    scores["signature"] = str(bleu.get_signature())
    return scores


def classification_scores(gold: list[int], predicted: list[int], labels: list[str]) -> dict:
    """Accuracy and macro-F1 (in percent, like BLEU), and the confusion matrix: rows gold, columns predicted."""
    n = len(labels)
    confusion = [[0] * n for _ in range(n)]
    for g, p in zip(gold, predicted, strict=True):
        confusion[g][p] += 1
    f1s = []
    for k in range(n):
        true_pos = confusion[k][k]
        predicted_k = sum(confusion[g][k] for g in range(n))
        gold_k = sum(confusion[k])
        f1s.append(2 * true_pos / (predicted_k + gold_k) if predicted_k + gold_k else 0.0)
    correct = sum(confusion[k][k] for k in range(n))
    return {
        "accuracy": round(100.0 * correct / max(1, len(gold)), 2),
        "macro_f1": round(100.0 * sum(f1s) / max(1, n), 2),
        "confusion": confusion,
        "labels": labels,
        "n_examples": len(gold),
    }


def tagging_scores(gold: list[int], predicted: list[int], unseen: list[bool], tags: list[str]) -> dict:
    """Scores of one tag per word (percent): accuracy over words, accuracy over words unseen in training, macro-F1
    over the tags, and each tag's precision, recall, F1 and support. A gold tag the model does not know is -1: it
    counts as a miss (the caller reports which tags those were)."""
    n = len(tags)
    right = [0] * n
    guessed = [0] * n
    support = [0] * n
    for g, p in zip(gold, predicted, strict=True):
        guessed[p] += 1
        if g >= 0:
            support[g] += 1
            right[g] += g == p
    per_tag = {}
    for k, tag in enumerate(tags):
        precision = right[k] / guessed[k] if guessed[k] else 0.0
        recall = right[k] / support[k] if support[k] else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_tag[tag] = {
            "precision": round(100 * precision, 2),
            "recall": round(100 * recall, 2),
            "f1": round(100 * f1, 2),
            "support": support[k],
        }
    present = [tag for k, tag in enumerate(tags) if support[k] or guessed[k]]
    unseen_right = sum(g == p for g, p, u in zip(gold, predicted, unseen, strict=True) if u)
    return {
        "accuracy": round(100.0 * sum(right) / max(1, len(gold)), 2),
        "oov_accuracy": round(100.0 * unseen_right / max(1, sum(unseen)), 2),
        "macro_f1": round(sum(per_tag[tag]["f1"] for tag in present) / max(1, len(present)), 2),
        "per_tag": per_tag,
        "n_words": len(gold),
        "n_oov_words": sum(unseen),
    }
