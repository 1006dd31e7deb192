"""Self-critical sequence training (Rennie et al. 2017): after teacher forcing, a captioner learns from its own
samples, each rewarded by how well it matches the picture's references.

Teacher forcing trains each next word given the reference's previous words; search then feeds the model its own
words and is scored by BLEU over whole captions. Here the model draws several captions per picture (with its
dropout on, as in training), each is scored by CIDEr-D (Vedantam et al. 2015) against that picture's references,
and REINFORCE raises the log-probability of the captions that scored above the others of their picture: the
baseline of a sample is the mean reward of the other samples of the same picture (Kool et al. 2019; Luo 2020),
which costs no extra greedy search and needs no learned critic.

The reward is CIDEr-D by default: its document frequencies come from the training pictures' references
(s2s.metrics.CiderD), so it favours the words that say what is particular to a picture over the words every caption
shares. Sentence BLEU-4 (s2s.metrics.SentenceBleu) rewards what corpus BLEU-4 scores: Rennie et al. found that each
reward raises its own metric most. It also teaches short captions of the words every reference shares, which its
brevity penalty against the closest of five references lets pass: the default stays CIDEr-D.
"""

from __future__ import annotations

import torch
from torch import nn

from s2s.data.batching import PictureBatch
from s2s.metrics import CiderD, SentenceBleu
from s2s.search import draw_from
from s2s.tokenizer import BOS, EOS, PAD, Tokenizer

Reward = CiderD | SentenceBleu
REWARDS = {"cider_d": CiderD, "bleu4": SentenceBleu}  # the recipe's self_critical.reward: name → scorer class


class SelfCritical(nn.Module):
    """The self-critical objective around an encoder-decoder: ``forward(batch)`` draws ``samples`` captions per
    picture and returns a loss whose gradient is REINFORCE's with the other samples' mean reward as baseline, and
    whose value is minus the samples' mean reward (what the training log shows in this stage)."""

    def __init__(
        self, model: nn.Module, reward: Reward, tokenizer: Tokenizer, samples: int, max_length: int,
        temperature: float = 1.0,
    ):  # fmt: skip
        super().__init__()
        self.model, self.reward, self.tokenizer = model, reward, tokenizer
        self.samples, self.max_length, self.temperature = samples, max_length, temperature

    def forward(self, batch: PictureBatch, label_smoothing: float = 0.0) -> torch.Tensor:
        memory = self.model.encode(batch.src)
        rows = torch.arange(len(batch.indices), device=batch.src.device).repeat_interleave(self.samples)
        tokens, log_probs = self.sample(memory.select(rows))
        batch.sampled_tokens = int(tokens.ne(PAD).sum())
        texts = self.tokenizer.decode([[t for t in row if t not in (PAD, EOS)] for row in tokens.tolist()])
        pictures = [batch.indices[row] for row in rows.tolist()]
        rewards = torch.tensor(
            [self.reward.score(text, picture) for text, picture in zip(texts, pictures, strict=True)]
        )
        rewards = rewards.view(-1, self.samples).to(log_probs.device)
        baseline = (rewards.sum(1, keepdim=True) - rewards) / (self.samples - 1)
        advantage = (rewards - baseline).flatten()
        surrogate = -(advantage * log_probs).view(-1, self.samples).sum(1).mean()
        # the value shown is −reward; the gradient is the surrogate's (whose value is near 0 by construction)
        return surrogate - surrogate.detach() - rewards.mean()

    def sample(self, memory) -> tuple[torch.Tensor, torch.Tensor]:
        """One caption drawn per row of ``memory`` from the tempered policy softmax(logits / temperature): its ids
        [R, T] (PAD after EOS) and the sum of the tempered log-probabilities of its tokens, EOS included [R],
        differentiable. A caption that has ended leaves the batch (as in greedy search), so the steps cost what the
        captions still going need."""
        rows, device = memory.mask.size(0), memory.mask.device
        state = self.model.initial_state(memory)
        running = torch.arange(rows, device=device)  # the row of each caption still being drawn
        prev = torch.full((rows,), BOS, dtype=torch.long, device=device)
        total = torch.zeros(rows, device=device)
        tokens = torch.full((rows, self.max_length), PAD, dtype=torch.long, device=device)
        for t in range(self.max_length):
            logits, state, _ = self.model.step(prev, state, memory)
            log_probs = torch.log_softmax(logits.float() / self.temperature, dim=-1)
            last = t == self.max_length - 1  # the last position ends every caption still going
            chosen = torch.full_like(prev, EOS) if last else draw_from(log_probs.detach().exp())
            total = total.index_add(0, running, log_probs.gather(1, chosen.unsqueeze(1)).squeeze(1))
            tokens[running, t] = chosen
            going = chosen.ne(EOS).nonzero().squeeze(1)
            if going.numel() == 0:
                return tokens[:, : t + 1], total
            if going.numel() < running.numel():
                running, chosen = running[going], chosen[going]
                state, memory = self.model.reorder_state(state, going), memory.select(going)
            prev = chosen
        return tokens, total
