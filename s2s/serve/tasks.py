"""What each kind of run answers over HTTP: the request schema of its endpoint, the inputs a request brings (checked
against the limits), the options that decide which inputs can share a search, and the batch function the batcher
runs (inputs from any number of requests → one result per input). The command-line presentation stays in
``s2s.shell``; these return plain JSON values."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, model_validator

from s2s.data.tagged import split_words
from s2s.errors import UsageError
from s2s.serve.limits import Limits, Refused, check_chars, check_texts, decode_images


class ModelRequest(BaseModel):
    """Which loaded model answers (default: the first of the endpoint's kind)."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = None


class TextsRequest(ModelRequest):
    texts: list[str] = Field(min_length=1)


class SearchOptions(BaseModel):
    beam: int | None = Field(None, ge=1, le=32)  # default: the recipe's eval.beam_size
    nbest: int = Field(1, ge=1, le=32)
    alpha: float | None = Field(None, ge=0)  # default: the recipe's eval.length_penalty

    @model_validator(mode="after")
    def _nbest_within_beam(self) -> SearchOptions:
        if self.beam is not None and self.nbest > self.beam:
            raise ValueError(f"nbest {self.nbest} is larger than beam {self.beam}")
        return self


class TranslateRequest(TextsRequest, SearchOptions):
    attention: bool = False  # the best translation's attention weights, target piece by source piece


class CaptionRequest(ModelRequest, SearchOptions):
    images: list[str] = Field(min_length=1)  # image files in base64, or data: URLs


class TagRequest(TextsRequest):
    pretokenized: bool = False  # words are separated by spaces already


class GenerateRequest(ModelRequest):
    prompt: str = ""
    max_length: int | None = Field(None, ge=1)  # tokens; default: the recipe's eval.generate.max_length
    temperature: float | None = Field(None, ge=0)  # 0: greedy; defaults: the recipe's eval.generate
    top_k: int | None = Field(None, ge=1)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = None  # a seeded request is drawn on its own, so that it gives the same text every time
    num: int = Field(1, ge=1, le=16)  # texts drawn after the prompt
    stream: bool = False  # server-sent events, a text piece at a time


@dataclass(frozen=True)
class Endpoint:
    path: str
    request: type[ModelRequest]
    inputs: Callable[[ModelRequest, object, Limits], list]  # request, predictor, limits → its inputs (or Refused)
    options: Callable[[ModelRequest], tuple]  # what must be equal for inputs to be answered in one call
    answer: Callable[[object, list, tuple], list]  # predictor, inputs, options → one JSON value per input
    example: Callable[[], dict]  # a request body, answered as the warm-up before the server says it is ready


def texts(request: TextsRequest, predictor, limits: Limits) -> list[str]:
    check_texts(request.texts, limits)
    return request.texts


def sentences(request: TranslateRequest, translator, limits: Limits) -> list[str]:
    if request.attention and not translator.has_attention:
        raise Refused(422, "attention: this model has no attention to show (its model.decoder.attention is none)")
    return texts(request, translator, limits)


def images(request: CaptionRequest, predictor, limits: Limits) -> list:
    return decode_images(request.images, limits)


def translations(translator, texts: list[str], options: tuple) -> list:
    beam, nbest, alpha, attention = options
    found = translator.translate(texts, beam_size=beam, nbest=nbest, alpha=alpha, attention=attention)
    return [[ranked(t, attention and rank == 0) for rank, t in enumerate(options_)] for options_ in found]


def ranked(found, attention: bool = False) -> dict:
    """A translation or caption with its score (and, for the best translation, the attention it was asked for)."""
    answer = {"text": found.text, "score": round(found.hypothesis.normalized, 4)}
    if attention:
        weights = found.hypothesis.attention[:, : len(found.source_pieces)]
        answer["attention"] = {
            "source": found.source_pieces,
            "target": [*found.target_pieces, "</s>"],
            "weights": [[round(w, 3) for w in row] for row in weights.tolist()],
        }
    return answer


def captions(captioner, pictures: list, options: tuple) -> list:
    beam, nbest, alpha = options
    return [[ranked(c) for c in found] for found in captioner.caption(pictures, beam, nbest, alpha)]


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


def search_options(request) -> tuple:
    return request.beam, request.nbest, request.alpha


@dataclass(frozen=True)
class Prompt:
    """One text to generate: what it follows, how long it may grow, and where its pieces go as they come
    (``out(text)``, called in the batcher's worker thread)."""

    text: str
    max_length: int
    out: Callable[[str], None] | None = None


def prompts(request: GenerateRequest, generator, limits: Limits) -> list[Prompt]:
    """The request's prompts (one per text to draw), checked: the prompt's length and characters, the length."""
    check_chars(request.prompt, limits, "prompt")
    try:
        generator.prompt_ids(request.prompt, field="prompt")
    except UsageError as error:
        raise Refused(422, str(error)) from None
    max_length = request.max_length or generator.config.generate.max_length
    if max_length > limits.max_generate:
        raise Refused(413, f"max_length: {max_length:,} tokens, more than the limit of {limits.max_generate:,}")
    return [Prompt(request.prompt, max_length) for _ in range(request.num)]


def generation_options(request: GenerateRequest) -> tuple:
    """Unseeded requests with equal sampling settings are drawn together; a seeded one alone (its identity in the
    options), since the draws of a batch depend on what else is in it."""
    alone = id(request) if request.seed is not None else None
    return request.temperature, request.top_k, request.top_p, request.seed, alone


def generated(generator, prompts_: list[Prompt], options: tuple) -> list[str]:
    from s2s.inference import TextIncrements

    temperature, top_k, top_p, seed, _ = options
    sampling = generator.sampling(temperature, top_k, top_p, seed)

    def give(row: int, text: str) -> None:
        if prompts_[row].out is not None:
            prompts_[row].out(text)

    streaming = any(p.out is not None for p in prompts_)
    emit = TextIncrements(generator.tokenizer, len(prompts_), give).emit if streaming else None
    return generator.generate_each([p.text for p in prompts_], [p.max_length for p in prompts_], sampling, emit)


def gray_picture() -> dict:
    """A request with one small gray PNG (the captioning warm-up)."""
    import base64
    import io

    from PIL import Image

    png = io.BytesIO()
    Image.new("RGB", (64, 64), (128, 128, 128)).save(png, format="PNG")
    return {"images": [base64.b64encode(png.getvalue()).decode("ascii")]}


def sentence() -> dict:
    return {"texts": ["warm up"]}


ENDPOINTS = {
    "translation": Endpoint(
        "/translate", TranslateRequest, sentences, lambda r: (*search_options(r), r.attention), translations, sentence
    ),
    "captioning": Endpoint("/caption", CaptionRequest, images, search_options, captions, gray_picture),
    "classification": Endpoint("/classify", TextsRequest, texts, lambda r: (), labels, sentence),
    "tagging": Endpoint("/tag", TagRequest, texts, lambda r: (r.pretokenized,), tags, sentence),
    "language_model": Endpoint(
        "/generate", GenerateRequest, prompts, generation_options, generated, lambda: {"max_length": 8}
    ),
}
