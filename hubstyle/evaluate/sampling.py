"""Temperature + top-p sampling as one transformers ``LogitsProcessor``: the same distribution as transformers'
``TemperatureLogitsWarper`` + ``TopPLogitsWarper`` + multinomial draw, at a fraction of the cost on a large
vocabulary.

``TopPLogitsWarper`` sorts the whole vocabulary at every step and the sampler then draws from all of it. For 64 rows
of SmolLM2's 49,152 tokens that is 172 ms + 74 ms a step on 2 EPYC cores, 40% of a sampled evaluation. The nucleus
nearly always lies among the most likely few hundred tokens, so :class:`NucleusSampler` takes the top ``candidates``
(6 ms), keeps a candidate while the probability mass before it is below ``top_p`` (the rule ``TopPLogitsWarper``
applies), sorts the whole vocabulary only for a row whose nucleus is wider than the candidates, and draws from the
nucleus with ``torch.multinomial`` (seeded by the caller's torch RNG). It returns a row that is 0 at the drawn token
and -inf elsewhere, so ``generate`` runs greedy (``do_sample=False``) and picks exactly that token.
"""

from __future__ import annotations

import torch
from transformers import LogitsProcessor

from hubstyle.errors import HubstyleError


class NucleusSampler(LogitsProcessor):
    """Draw each next token from the top-p nucleus of ``softmax(scores / temperature)``."""

    def __init__(self, temperature: float, top_p: float, candidates: int = 256):
        if temperature <= 0:
            raise HubstyleError(f"sampling needs temperature > 0, got {temperature}; or use do_sample=False")
        if not 0 < top_p <= 1:
            raise HubstyleError(f"top_p must be in (0, 1], got {top_p}")
        self.temperature, self.top_p, self.candidates = float(temperature), float(top_p), int(candidates)

    def nucleus(self, scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (token ids, their probabilities: 0 outside the nucleus) per row."""
        scores = scores.float() / self.temperature
        if self.top_p >= 1:  # no nucleus: the whole vocabulary
            ids = torch.arange(scores.shape[-1], device=scores.device).expand_as(scores)
            return ids, (scores - scores.logsumexp(-1, keepdim=True)).exp()
        k = min(self.candidates, scores.shape[-1])
        top, ids = scores.topk(k, dim=-1)
        probs = (top - scores.logsumexp(-1, keepdim=True)).exp()
        wide = probs.sum(-1) < self.top_p  # the nucleus goes past the candidates: sort the whole row
        probs = probs * _keep(probs, self.top_p)
        if k < scores.shape[-1] and wide.any():
            full, full_ids = scores[wide].sort(dim=-1, descending=True)
            full_probs = (full - scores[wide].logsumexp(-1, keepdim=True)).exp()
            kept = _keep(full_probs, self.top_p)
            width = int(kept.sum(-1).max())  # every kept token is among the first `width` of its row
            pad = max(width, k)
            top_probs = torch.zeros(scores.shape[0], pad, dtype=probs.dtype, device=probs.device)
            top_ids = torch.zeros(scores.shape[0], pad, dtype=ids.dtype, device=ids.device)
            top_probs[:, :k], top_ids[:, :k] = probs, ids
            top_probs[wide] = (full_probs * kept)[:, :pad]
            top_ids[wide] = full_ids[:, :pad]
            return top_ids, top_probs
        return ids, probs

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        ids, probs = self.nucleus(scores)
        drawn = ids.gather(1, torch.multinomial(probs, 1))
        out = torch.full_like(scores, float("-inf"))
        return out.scatter_(1, drawn, 0.0)


def _keep(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Return which of the descending ``probs`` are in the nucleus: those with less than ``top_p`` mass before them
    (the most likely token always)."""
    before = probs.cumsum(-1) - probs
    keep = before < top_p
    keep[:, 0] = True
    return keep
