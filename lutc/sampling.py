"""Choosing the next token from the logits: greedy, or sampled with temperature, top-k, top-p and
a repetition penalty, in numpy (:class:`Sampling`, :class:`Sampler`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import InputError


@dataclass(frozen=True)
class Sampling:
    """How the next token is chosen from the last position's logits ``z``, in transformers' order:

    1. repetition penalty ``r``: ``z_t / r`` where ``z_t > 0``, else ``z_t * r``, for each token ``t``
       already in the prompt or the output (1: none);
    2. ``temperature`` ``T`` 0: greedy, ``argmax z``; else ``p = softmax(z / T)``
    3. over the ``top_k`` largest (0: all),
    4. cut to the smallest set of the likeliest tokens whose probability reaches ``top_p``,
    5. renormalized and drawn with ``np.random.default_rng(seed)`` (``None``: a fresh seed).
    """

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    seed: int | None = None

    def __post_init__(self):
        if not self.temperature >= 0:
            raise InputError(f"temperature must be >= 0 (0: greedy); got {self.temperature}")
        if self.top_k < 0:
            raise InputError(f"top_k must be >= 0 (0: all tokens); got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise InputError(f"top_p must be in (0, 1]; got {self.top_p}")
        if not self.repetition_penalty > 0:
            raise InputError(f"repetition_penalty must be > 0 (1: none); got {self.repetition_penalty}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


GREEDY = Sampling()


def penalize(logits: np.ndarray, seen: np.ndarray, penalty: float) -> np.ndarray:
    """``logits`` ``[vocab]`` (a copy) with the tokens in ``seen`` made less likely by ``penalty``."""
    out = np.array(logits, np.float64)
    tokens = np.unique(seen)
    picked = out[tokens]
    out[tokens] = np.where(picked > 0, picked / penalty, picked * penalty)
    return out


def top_k_mask(logits: np.ndarray, k: int) -> np.ndarray:
    """Whether each token is among the ``k`` largest logits (ties with the k-th kept; all where 0)."""
    if k == 0 or k >= logits.shape[-1]:
        return np.ones(logits.shape, bool)
    return logits >= np.partition(logits, -k)[-k]


def top_p_mask(probs: np.ndarray, p: float) -> np.ndarray:
    """Whether each token is in the smallest set of the likeliest whose probability reaches ``p``
    (a token is kept while the probability of the likelier ones is below ``p``; the likeliest always)."""
    order = np.argsort(-probs, kind="stable")
    before = np.cumsum(probs[order]) - probs[order]
    keep = np.zeros(probs.shape, bool)
    keep[order] = before < p
    keep[order[0]] = True
    return keep


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max())
    return shifted / shifted.sum()


def probabilities(logits: np.ndarray, sampling: Sampling) -> np.ndarray:
    """The distribution steps 2-5 of :class:`Sampling` draw from, for penalized ``logits`` ``[vocab]``
    (``temperature > 0``)."""
    scaled = np.where(top_k_mask(logits, sampling.top_k), logits / sampling.temperature, -np.inf)
    probs = softmax(scaled)
    probs = np.where(top_p_mask(probs, sampling.top_p), probs, 0.0)
    return probs / probs.sum()


def chooser(sampling: Sampling, prompt_ids: np.ndarray):
    """A :data:`lutc.decode.Choose` for ``sampling``: plain argmax where it is greedy with no
    penalty (nothing to keep), else a :class:`Sampler`."""
    if sampling.greedy and sampling.repetition_penalty == 1:
        return lambda logits: logits.argmax(axis=-1)
    return Sampler(sampling, prompt_ids)


class Sampler:
    """A :data:`lutc.decode.Choose` for :class:`Sampling`: keeps each row's tokens so far (the prompt,
    then every token it chose) for the repetition penalty, and the seeded generator."""

    def __init__(self, sampling: Sampling, prompt_ids: np.ndarray):
        self.sampling = sampling
        self.rng = np.random.default_rng(sampling.seed)
        self.seen = [list(row) for row in np.atleast_2d(np.asarray(prompt_ids, np.int64))]

    def __call__(self, logits: np.ndarray) -> np.ndarray:
        """The next token of each row from ``logits`` ``[batch, vocab]``."""
        tokens = np.array([self._choose(row, seen) for row, seen in zip(logits, self.seen, strict=True)], np.int64)
        for seen, token in zip(self.seen, tokens, strict=True):
            seen.append(int(token))
        return tokens

    def _choose(self, logits: np.ndarray, seen: list[int]) -> int:
        sampling = self.sampling
        if sampling.repetition_penalty != 1:
            logits = penalize(logits, np.array(seen, np.int64), sampling.repetition_penalty)
        if sampling.greedy:
            return int(np.argmax(logits))
        probs = probabilities(np.asarray(logits, np.float64), sampling)
        return int(self.rng.choice(probs.shape[-1], p=probs))
