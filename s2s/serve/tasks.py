"""What each kind of run answers over HTTP: the request schema of its endpoint, the batch function the batcher runs
(a list of items from any number of requests → one result per item) and the options that decide which requests
can share a batch. The command-line presentation stays in ``s2s.shell``; these return plain JSON values."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, model_validator

from s2s.data.tagged import split_words


class TextsRequest(BaseModel):
    """Texts to answer, and which loaded model answers them (default: the first of the endpoint's kind)."""

    model_config = ConfigDict(extra="forbid")

    texts: list[str] = Field(min_length=1)
    model: str | None = None


class TranslateRequest(TextsRequest):
    beam: int | None = Field(None, ge=1, le=32)  # default: the recipe's eval.beam_size
    nbest: int = Field(1, ge=1, le=32)
    alpha: float | None = Field(None, ge=0)  # default: the recipe's eval.length_penalty

    @model_validator(mode="after")
    def _nbest_within_beam(self) -> TranslateRequest:
        if self.beam is not None and self.nbest > self.beam:
            raise ValueError(f"nbest {self.nbest} is larger than beam {self.beam}")
        return self


class TagRequest(TextsRequest):
    pretokenized: bool = False  # words are separated by spaces already


@dataclass(frozen=True)
class Endpoint:
    path: str
    request: type[TextsRequest]
    options: Callable[[TextsRequest], tuple]  # what must be equal for texts to be answered in one call
    answer: Callable[[object, list[str], tuple], list]  # predictor, texts, options → one JSON value per text


def translations(translator, texts: list[str], options: tuple) -> list:
    beam, nbest, alpha = options
    found = translator.translate(texts, beam_size=beam, nbest=nbest, alpha=alpha)
    return [[{"text": t.text, "score": round(t.hypothesis.normalized, 4)} for t in options_] for options_ in found]


def labels(classifier, texts: list[str], options: tuple) -> list:
    return [
        {"label": p.label, "probability": round(p.probability, 4), "probabilities": p.probabilities}
        for p in classifier.classify(texts)
    ]


def tags(tagger, texts: list[str], options: tuple) -> list:
    (pretokenized,) = options
    sentences = [text.split() if pretokenized else split_words(text) for text in texts]
    return [
        [{"word": w, "tag": t.tag, "probability": round(t.probability, 4)} for w, t in zip(words, found, strict=True)]
        for words, found in zip(sentences, tagger.tag(sentences), strict=True)
    ]


ENDPOINTS = {
    "translation": Endpoint("/translate", TranslateRequest, lambda r: (r.beam, r.nbest, r.alpha), translations),
    "classification": Endpoint("/classify", TextsRequest, lambda r: (), labels),
    "tagging": Endpoint("/tag", TagRequest, lambda r: (r.pretokenized,), tags),
}
