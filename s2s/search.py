"""Greedy search, sampling and beam search over any model with ``initial_state`` / ``step`` / ``reorder_state``,
starting from the ``Memory`` its ``encode`` made (of sentences, of images, or a language model's reading of a
prompt: search does not care). Greedy search and sampling are one loop that differs in how it picks each token.

All are batched over inputs (and, for beam search, over beams: rows are sentence-major, B × K), keep no state
on the model, and force EOS at each sentence's maximum length. Hypotheses are ranked by the sum of token
log-probabilities (EOS included) divided by the GNMT length penalty ((5 + length) / 6) ** alpha.

A model may make greedy and beam search itself, faster (``search_in_kernels``: the input-fed GRU decoder does, in
the compiled CPU kernels); these loops are then its reference, and ``search`` asks it first.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

import torch

from s2s.tokenizer import BOS, EOS, PAD


class Memory(Protocol):
    """What a model's ``encode`` returns, as search sees it: one row per input."""

    mask: torch.Tensor  # [B, S] True at the positions attention may read

    def select(self, rows: torch.Tensor) -> Memory: ...  # the rows of the inputs still being decoded


class Decoder(Protocol):
    """The model interface search decodes through; the decoding state is a value it passes back and forth."""

    def initial_state(self, memory: Memory): ...
    def step(self, prev: torch.Tensor, state, memory: Memory) -> tuple[torch.Tensor, object, torch.Tensor | None]: ...
    def reorder_state(self, state, order: torch.Tensor): ...
    def decoding(self) -> AbstractContextManager: ...  # held around a whole search: the weights do not change


@dataclass
class Hypothesis:
    tokens: list[int]  # without BOS and EOS
    score: float  # sum of log-probabilities, EOS included
    normalized: float  # score / length penalty: what beam search ranks by
    attention: torch.Tensor | None  # [len(tokens) + 1, S] weights of each output step (EOS last)


def length_penalty(length: torch.Tensor | int, alpha: float):
    return ((5.0 + length) / 6.0) ** alpha


def max_lengths(src_lengths: torch.Tensor, ratio: float) -> torch.Tensor:
    """The longest output allowed for each source, EOS included: ratio × source length + 10."""
    return (src_lengths.float() * ratio).long() + 10


def force_eos(logits: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Only EOS stays possible in ``rows`` (a bool mask over rows): those hypotheses end now. Callers normalise
    before forcing, so a forced EOS still costs its real log-probability."""
    if not bool(rows.any()):
        return logits
    only_eos = torch.full_like(logits, float("-inf"))
    only_eos[:, EOS] = logits[:, EOS]
    return torch.where(rows[:, None], only_eos, logits)


def most_likely(log_probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy search's choice: the most probable token of each row, with its log-probability."""
    return log_probs.max(-1)


@dataclass(frozen=True)
class Sampling:
    """Draw each next token from the model's distribution instead of taking the most likely one: sharpened
    (temperature below 1) or flattened (above 1), cut to the ``top_k`` most likely tokens (ties with the k-th kept)
    and to the smallest set of most likely tokens whose probability reaches ``top_p`` (nucleus sampling, Holtzman
    et al. 2020). Temperature 0 is greedy search. A ``seed`` makes the draws repeatable."""

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None

    def __post_init__(self):
        if self.temperature < 0:
            raise ValueError(f"temperature: must be 0 or more, not {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k: must be at least 1, not {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(f"top_p: must be in (0, 1], not {self.top_p}")

    def chooser(self, device: torch.device):
        """What picks each step's tokens: ``most_likely`` at temperature 0, else a seeded draw."""
        if self.temperature == 0:
            return most_likely
        generator = torch.Generator(device)
        if self.seed is None:
            generator.seed()
        else:
            generator.manual_seed(self.seed)

        def draw(log_probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            scaled = log_probs.float() / self.temperature
            scaled[:, [PAD, BOS]] = float("-inf")  # never outputs (a forced EOS is still drawn: it is all there is)
            allowed = restrict(scaled, self.top_k, self.top_p)
            token = torch.multinomial(allowed.softmax(-1), 1, generator=generator)[:, 0]
            return log_probs.gather(1, token[:, None])[:, 0], token

        return draw


def draw_from(probabilities: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One token per row of ``probabilities`` [B, V] (rows need not sum to exactly 1), drawn by inverting each
    row's cumulative distribution at a uniform point: exact like ``torch.multinomial``, and many times faster on a
    CPU, where multinomial costs about as much as a decoder step for a few hundred rows of a 3,000-token
    vocabulary. A token of probability 0 is never drawn: the draw is the first token whose cumulative mass
    exceeds the point, and the point stays strictly below the row's total. (``Sampling`` keeps multinomial: its
    seeded texts are documented, and it draws a few rows at a time.)"""
    cumulative = probabilities.float().cumsum(-1)
    total = cumulative[:, -1:]
    point = torch.rand(total.shape, generator=generator, device=total.device) * total
    point = torch.minimum(point, total.nextafter(torch.zeros_like(total)))
    return torch.searchsorted(cumulative, point, right=True)[:, 0]


def restrict(logits: torch.Tensor, top_k: int | None, top_p: float | None) -> torch.Tensor:
    """``logits`` [B, V] with every token outside the top-k and outside the top-p nucleus set to -inf."""
    if top_k is not None and top_k < logits.size(-1):
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1:
        ranked, order = logits.sort(dim=-1, descending=True)
        probabilities = ranked.softmax(-1)
        above = probabilities.cumsum(-1) - probabilities  # the mass of the tokens ranked above each one
        drop_ranked = above >= top_p  # the most likely token is always kept (nothing is above it)
        logits = logits.masked_fill(torch.zeros_like(drop_ranked).scatter(1, order, drop_ranked), float("-inf"))
    return logits


# no_grad rather than inference_mode: under inference_mode autocast casts the weights again at every step,
# under no_grad it casts each once per search (its cache keeps casts of leaf tensors that require grad)
@torch.no_grad()
def greedy_search(
    model: Decoder,
    memory: Memory,
    limit: torch.Tensor,
    attention: bool = False,
    choose=most_likely,
    start: torch.Tensor | None = None,
    emit=None,
) -> list[Hypothesis]:
    """One path per input, all inputs at once (``memory`` is the model's encoding of the batch; ``limit`` [B] as
    max_lengths): at each step ``choose`` (log-probabilities [B, V] → their scores and tokens [B]) picks a token,
    the most probable one by default, a drawn one when sampling. The first input token is BOS, or ``start`` [B]
    (a language model goes on from the last token of its prompt). ``emit(rows, tokens)``, if given, is told each
    step's tokens of the inputs still running (to stream them). An output that has ended leaves the batch: it
    costs nothing more."""
    batch, max_len, device = memory.mask.size(0), int(limit.max()), memory.mask.device
    state = model.initial_state(memory)
    running = torch.arange(batch, device=device)  # the original position of each row still decoding
    limit = limit.to(device)
    prev = torch.full((batch,), BOS, dtype=torch.long, device=device) if start is None else start.to(device)
    scores = torch.zeros(batch, device=device)
    tokens = torch.full((batch, max_len), PAD, dtype=torch.long, device=device)
    weights = torch.zeros(batch, max_len, memory.mask.size(1), device=device) if attention else None
    for t in range(max_len):
        logits, state, step_weights = model.step(prev, state, memory)
        best, prev = choose(force_eos(torch.log_softmax(logits, dim=-1), limit == t + 1))
        scores[running] += best.float()
        tokens[running, t] = prev
        if emit is not None:
            emit(running.tolist(), prev.tolist())
        if weights is not None:
            weights[running, t] = step_weights.float()
        ended = prev == EOS
        if bool(ended.any()):
            going = (~ended).nonzero().squeeze(1)
            if going.numel() == 0:
                break
            running, prev, limit = running[going], prev[going], limit[going]
            state, memory = model.reorder_state(state, going), memory.select(going)
    rows = tokens.tolist()
    return [
        make_hypothesis(rows[b], float(scores[b]), 0.0, None if weights is None else weights[b]) for b in range(batch)
    ]


def sample_search(
    model: Decoder,
    memory: Memory,
    limit: torch.Tensor,
    sampling: Sampling,
    count: int = 1,
    attention: bool = False,
    start: torch.Tensor | None = None,
    emit=None,
) -> list[list[Hypothesis]]:
    """``count`` samples of each input, drawn side by side (each input's rows repeated ``count`` times; ``emit``
    is told rows of that expanded batch), in the order drawn."""
    batch = memory.mask.size(0)
    rows = torch.arange(batch, device=memory.mask.device).repeat_interleave(count)
    found = greedy_search(
        model,
        memory.select(rows),
        limit.to(rows.device)[rows],
        attention,
        sampling.chooser(memory.mask.device),
        None if start is None else start.to(rows.device)[rows],
        emit,
    )
    return [found[b * count : (b + 1) * count] for b in range(batch)]


def search(
    model: Decoder,
    memory: Memory,
    limit: torch.Tensor,
    beam_size: int,
    alpha: float,
    nbest: int,
    attention: bool = False,
    sampling: Sampling | None = None,
    start: torch.Tensor | None = None,
    emit=None,
) -> list[list[Hypothesis]]:
    """The ``nbest`` hypotheses of each input: greedy search when one best of a beam of one is asked for; with
    ``sampling``, ``nbest`` samples (``beam_size`` and ``alpha`` do not apply). ``start`` and ``emit``: as
    ``greedy_search``; beam search starts from BOS and does not stream."""
    with model.decoding():
        if sampling is not None:
            return sample_search(model, memory, limit, sampling, nbest, attention, start, emit)
        if start is None and emit is None:
            found = compiled_search(model, memory, limit, beam_size, alpha, nbest, attention)
            if found is not None:
                return found
        if beam_size == 1 and nbest == 1:
            return [[h] for h in greedy_search(model, memory, limit, attention, start=start, emit=emit)]
        if start is not None or emit is not None:
            raise ValueError("beam search starts from BOS and does not stream: give start and emit to greedy search")
        return beam_search(model, memory, limit, beam_size, alpha, nbest, attention)


def compiled_search(
    model: Decoder, memory: Memory, limit: torch.Tensor, beam_size: int, alpha: float, nbest: int, attention: bool
) -> list[list[Hypothesis]] | None:
    """The search that ``search`` would make, made by the model's compiled kernels where it offers them for this
    batch (``search_in_kernels``: the input-fed GRU decoder on the CPU), else None. Same rules, same hypotheses:
    greedy search is a beam of one there."""
    if nbest > beam_size:
        raise ValueError(f"nbest ({nbest}) cannot exceed the beam size ({beam_size})")
    offered = getattr(model, "search_in_kernels", None)
    found = None if offered is None else offered(memory, limit, beam_size, alpha, nbest, attention)
    if found is None:
        return None
    tokens, scores, weights = found
    greedy = beam_size == 1  # greedy search ranks by the plain sum of log-probabilities
    alpha, rows, sums = 0.0 if greedy else alpha, tokens.tolist(), scores.tolist()
    return [
        [make_hypothesis(rows[b][j], sums[b][j], alpha, weights[b, j] if attention else None) for j in range(nbest)]
        for b in range(len(rows))
    ]


def make_hypothesis(row: list[int], score: float, alpha: float, weights: torch.Tensor | None) -> Hypothesis:
    tokens = []
    for token in row:
        if token in (EOS, PAD):
            break
        if token != BOS:
            tokens.append(token)
    length = len(tokens) + 1
    attention = None if weights is None else weights[:length].float().cpu()
    return Hypothesis(tokens, score, score / length_penalty(length, alpha), attention)


@torch.no_grad()
def beam_search(
    model: Decoder,
    memory: Memory,
    limit: torch.Tensor,
    beam_size: int,
    alpha: float = 0.0,
    nbest: int = 1,
    attention: bool = False,
) -> list[list[Hypothesis]]:
    """The ``nbest`` best of ``beam_size`` hypotheses for each sentence, best first.

    At each step every live beam proposes its continuations; of the top 2K candidates of a sentence, those
    ending in EOS within the first K join the sentence's K finished slots, and the best K others live on.
    A sentence is done when its K finished slots are full or it reaches its length limit.
    """
    if nbest > beam_size:
        raise ValueError(f"nbest ({nbest}) cannot exceed the beam size ({beam_size})")
    batch, k, device = memory.mask.size(0), beam_size, memory.mask.device
    rows = torch.arange(batch, device=device).repeat_interleave(k)  # [B·K] sentence of each row
    # the decoder state has K rows per sentence; the memory stays one per sentence (the model reads it per source)
    state = model.reorder_state(model.initial_state(memory), rows)
    beams = BeamState.start(limit.to(device), k, memory.mask.size(1), attention)
    for t in range(int(limit.max())):
        logits, state, step_weights = model.step(beams.last_tokens(), state, memory)
        order = beams.advance(logits, step_weights, t, alpha)
        state = model.reorder_state(state, order)
        going = beams.set_aside_finished()
        if going is not None:  # some sentences are done: decode only the others from now on
            sentences, going_rows = going
            if sentences.numel() == 0:
                break
            state, memory = model.reorder_state(state, going_rows), memory.select(sentences)
    return beams.results(nbest, alpha)


class BeamState:
    """The tensors of a batched beam search over the sentences still running: live beams [A, K] and the K best
    finished hypotheses [A, K] of each. Finished sentences are set aside so that they cost nothing more."""

    def __init__(self, **tensors):
        self.__dict__.update(tensors)

    @classmethod
    def start(cls, limit, k, src_len, attention):
        batch, max_len, device = limit.size(0), int(limit.max()), limit.device
        live_scores = torch.zeros(batch, k, device=device)
        live_scores[:, 1:] = float("-inf")  # all beams start equal: keep only the first
        return cls(
            k=k,
            batch=batch,
            width=max_len + 1,
            ids=torch.arange(batch, device=device),  # the original position of each running sentence
            limit=limit,
            set_aside=[],
            live_scores=live_scores,
            live_tokens=torch.full((batch * k, 1), BOS, dtype=torch.long, device=device),
            live_attention=torch.zeros(batch * k, 0, src_len, device=device) if attention else None,
            done_norm=torch.full((batch, k), float("-inf"), device=device),
            done_raw=torch.full((batch, k), float("-inf"), device=device),
            done_tokens=torch.full((batch, k, max_len + 1), PAD, dtype=torch.long, device=device),
            done_attention=torch.zeros(batch, k, max_len, src_len, device=device) if attention else None,
            done=torch.zeros(batch, dtype=torch.bool, device=device),
        )

    PER_SENTENCE = ("ids", "limit", "live_scores", "done_norm", "done_raw", "done_tokens", "done_attention", "done")
    PER_ROW = ("live_tokens", "live_attention")

    def set_aside_finished(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Move finished sentences out of the running set; return the sentences [A'] and the rows [A'·K] that go
        on, or None if all do."""
        if not bool(self.done.any()):
            return None
        self.set_aside.append(self.select(self.done.nonzero().squeeze(1)))
        going = (~self.done).nonzero().squeeze(1)  # [A']
        rows = (going[:, None] * self.k + torch.arange(self.k, device=going.device)).view(-1)  # [A'·K]
        for name in self.PER_SENTENCE:
            if getattr(self, name) is not None:
                setattr(self, name, getattr(self, name)[going])
        for name in self.PER_ROW:
            if getattr(self, name) is not None:
                setattr(self, name, getattr(self, name)[rows])
        return going, rows

    def select(self, sentences: torch.Tensor) -> dict:
        return {
            name: getattr(self, name)[sentences]
            for name in ("ids", "done_tokens", "done_raw", "done_attention")
            if getattr(self, name) is not None
        }

    def last_tokens(self) -> torch.Tensor:
        return self.live_tokens[:, -1]

    def advance(self, logits, step_weights, t, alpha) -> torch.Tensor:
        """Extend, rank, retire finished hypotheses; return the row order for the model state."""
        batch, k = self.live_scores.size(0), self.k
        at_limit = self.limit == t + 1  # [A]
        rows_at_limit = at_limit.repeat_interleave(k)
        if logits.size(-1) < 2 * k:
            raise ValueError(f"a beam of {k} needs a vocabulary of at least {2 * k} tokens")
        log_probs = torch.log_softmax(logits, dim=-1)  # faster on the CPU than logsumexp alone
        # a sentence's best 2K candidates are among the best 2K of each of its beams: rank those only
        beam_best, beam_tokens = force_eos(log_probs, rows_at_limit).topk(2 * k, dim=-1)  # [B·K, 2K]
        beam_best = beam_best.float()  # scores add up in fp32 whatever the logits' dtype
        candidates = (self.live_scores.view(-1, 1) + beam_best).view(batch, 2 * k * k)  # [B, K·2K]
        top_scores, top_ids = candidates.topk(2 * k, dim=1)  # [B, 2K]
        source_rows = torch.arange(batch, device=top_ids.device)[:, None] * k + top_ids // (2 * k)  # [B, 2K]
        tokens = beam_tokens.view(batch, 2 * k * k).gather(1, top_ids)
        history = torch.cat([self.live_tokens[source_rows.view(-1)], tokens.view(-1, 1)], 1)  # [B·2K, t+2]
        history_attention = None
        if self.live_attention is not None:
            history_attention = torch.cat([self.live_attention, step_weights.float().unsqueeze(1)], 1)
            history_attention = history_attention[source_rows.view(-1)]  # [B·2K, t+1, S]
        rank = torch.arange(2 * k, device=tokens.device)
        ending = (tokens == EOS) & (rank < k) & top_scores.isfinite()  # done sentences were set aside
        self.retire(ending, top_scores, history, history_attention, t, alpha)
        # the best K candidates that do not end live on (a stable sort keeps their rank order)
        keep = (rank + (tokens == EOS).long() * 2 * k).argsort(dim=1)[:, :k]  # [B, K]
        self.live_scores = top_scores.gather(1, keep)
        order = source_rows.gather(1, keep).view(-1)  # [B·K]
        self.live_tokens = torch.cat([self.live_tokens[order], tokens.gather(1, keep).view(-1, 1)], 1)
        if self.live_attention is not None:
            self.live_attention = torch.cat([self.live_attention[order], step_weights.float()[order].unsqueeze(1)], 1)
        self.done = self.done_norm[:, -1].isfinite() | at_limit  # K finished, or out of length
        return order

    def retire(self, ending, top_scores, history, history_attention, t, alpha) -> None:
        """Merge the candidates that end now into each sentence's K best finished hypotheses."""
        batch, k = self.live_scores.size(0), self.k
        norm = (top_scores / length_penalty(t + 1, alpha)).masked_fill(~ending, float("-inf"))  # [B, 2K]
        raw = top_scores.masked_fill(~ending, float("-inf"))
        padded = torch.full((batch * 2 * k, self.width), PAD, dtype=torch.long, device=history.device)
        padded[:, : history.size(1)] = history
        padded[~ending.view(-1)] = PAD  # a slot left without a hypothesis (score -inf) reads as an empty one
        all_norm = torch.cat([self.done_norm, norm], 1)  # [B, 3K]
        self.done_norm, best = all_norm.topk(k, dim=1)  # [B, K]
        self.done_raw = torch.cat([self.done_raw, raw], 1).gather(1, best)
        all_tokens = torch.cat([self.done_tokens, padded.view(batch, 2 * k, -1)], 1)  # [B, 3K, W]
        self.done_tokens = all_tokens.gather(1, best[..., None].expand(-1, -1, self.width))
        if history_attention is not None:
            grown = self.done_attention.new_zeros(batch * 2 * k, *self.done_attention.shape[2:])
            grown[:, : history_attention.size(1)] = history_attention
            grown[~ending.view(-1)] = 0.0
            all_attention = torch.cat([self.done_attention, grown.view(batch, 2 * k, *grown.shape[1:])], 1)
            index = best[..., None, None].expand(-1, -1, *all_attention.shape[2:])
            self.done_attention = all_attention.gather(1, index)

    def results(self, nbest: int, alpha: float) -> list[list[Hypothesis]]:
        """The ``nbest`` hypotheses of every sentence, in the original order."""
        parts = [*self.set_aside, self.select(torch.arange(self.ids.numel(), device=self.ids.device))]
        out: list[list[Hypothesis] | None] = [None] * self.batch
        for part in parts:
            tokens, raw = part["done_tokens"].tolist(), part["done_raw"].tolist()
            for row, b in enumerate(part["ids"].tolist()):
                weights = part.get("done_attention")
                out[b] = [
                    make_hypothesis(tokens[row][j], raw[row][j], alpha, None if weights is None else weights[row, j])
                    for j in range(nbest)
                ]
        return out
