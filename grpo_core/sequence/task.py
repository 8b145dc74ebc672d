"""The enumerable sequence task: every response of every context is listed, so expectations are sums.

A response is a sequence over A content tokens 0..A-1 and the end token A, of at most L tokens:
k < L content tokens followed by the end token (|y| = k + 1), or L content tokens cut off at L
(|y| = L, truncated). There are N = sum_{k<L} A^k + A^L of them per context (1,093 for A = 3,
L = 6), listed once in a :class:`Responses` table shared by every context.

An autoregressive policy whose input is (context, position, previous token) has a next-token
distribution that depends on those three alone, so its whole behaviour is a table
logp_table (C, L, A + 1, A + 1) [context, position, previous token (A = start), next token], and

    log pi(y | c) = sum_{t < |y|} logp_table[c, t, y_{t-1}, y_t] = (logp_table[c].flatten() @ M)[y]

with M (L (A+1)^2, N) the 0/1 incidence of table entries in responses. Sampling, exact metrics
and the loss all read that one table.

Verifier: each context has a hidden answer token a_c. With answer_rule="first" a response is
correct when its first content token is a_c (answer, then free text); with "last" when its last
content token is (text, then answer). Either way the rest of the response is free, so a policy
can be right or wrong at any length from 2 to L - 1. A truncated response has no answer: wrong.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch

from .config import SeqTaskConfig


@dataclass(frozen=True)
class Responses:
    """Every response of length at most L over A content tokens, in one padded table.

    tokens (N, L) int64 (padding: the end token), length (N,) |y| tokens including the end token,
    truncated (N,) bool, content (N,) content tokens, token_index (N, L) flat index
    t (A+1)^2 + prev (A+1) + token of each token into a context's table (0 at padding),
    mask (N, L) bool real tokens, incidence (L (A+1)^2, N) float32 the matrix M above.
    """

    alphabet_size: int
    max_length: int
    tokens: torch.Tensor
    length: torch.Tensor
    truncated: torch.Tensor
    content: torch.Tensor
    token_index: torch.Tensor
    mask: torch.Tensor
    incidence: torch.Tensor

    @property
    def n(self) -> int:
        return self.tokens.shape[0]

    @property
    def end_token(self) -> int:
        return self.alphabet_size

    @property
    def table_size(self) -> int:
        """Entries of one context's table: L x (A + 1) previous tokens x (A + 1) next tokens."""
        v = self.alphabet_size + 1
        return self.max_length * v * v

    def text(self, n: int) -> str:
        """A response as letters, '.' for the end token and '…' for a cut-off one."""
        k = int(self.content[n])
        body = "".join("abcdefgh"[int(t)] for t in self.tokens[n, :k])
        return body + ("…" if bool(self.truncated[n]) else ".")


def enumerate_responses(alphabet_size: int, max_length: int) -> Responses:
    """List every response, shortest first, each length in lexicographic order."""
    a, big_l = alphabet_size, max_length
    end, v = a, a + 1
    rows, lengths, truncated, content = [], [], [], []
    for k in range(big_l + 1):
        for body in itertools.product(range(a), repeat=k):
            cut = k == big_l
            seq = list(body) if cut else list(body) + [end]
            rows.append(seq + [end] * (big_l - len(seq)))
            lengths.append(len(seq))
            truncated.append(cut)
            content.append(k)
    tokens = torch.tensor(rows, dtype=torch.long)
    length = torch.tensor(lengths)
    mask = torch.arange(big_l) < length.unsqueeze(1)
    prev = torch.cat([torch.full((len(rows), 1), a), tokens[:, :-1]], dim=1)   # start token = a
    token_index = (torch.arange(big_l) * v * v + prev * v + tokens) * mask
    incidence = torch.zeros(big_l * v * v, len(rows))
    cols = torch.arange(len(rows)).unsqueeze(1).expand_as(token_index)
    incidence.index_put_((token_index[mask], cols[mask]), torch.ones(int(mask.sum())), accumulate=True)
    return Responses(a, big_l, tokens, length, torch.tensor(truncated), torch.tensor(content),
                     token_index, mask, incidence)


@dataclass(frozen=True)
class SeqTask:
    """A drawn instance of the task. Tensors are never modified in place.

    contexts (C, D) embeddings; answer (C,) the hidden answer token; demo_accuracy (C,) how often
    the demonstrations are right; correct (C, N) float 0/1 verifier of every response;
    demo_probs (C, N) the exact distribution demonstrations are drawn from.
    """

    config: SeqTaskConfig
    responses: Responses
    contexts: torch.Tensor
    answer: torch.Tensor
    demo_accuracy: torch.Tensor
    correct: torch.Tensor
    demo_probs: torch.Tensor

    @property
    def n_contexts(self) -> int:
        return self.contexts.shape[0]


def verify(responses: Responses, answer: torch.Tensor, rule: str) -> torch.Tensor:
    """(C, N) float: 1 where response n answers a_c (first or last content token), 0 otherwise;
    empty and truncated responses are wrong."""
    k = responses.content
    pos = torch.zeros_like(k) if rule == "first" else (k - 1).clamp_min(0)
    said = responses.tokens.gather(1, pos.unsqueeze(1)).squeeze(1)          # (N,)
    answered = (k >= 1) & ~responses.truncated
    return ((said.unsqueeze(0) == answer.unsqueeze(1)) & answered).to(torch.get_default_dtype())


def demo_distribution(responses: Responses, answer: torch.Tensor, accuracy: torch.Tensor,
                      rule: str) -> torch.Tensor:
    """(C, N) exact probabilities of the demonstrations: a content length k ~ U{1..L-1}, then the
    end token; the answer slot holds a_c with probability accuracy_c, else one of the other A - 1
    tokens uniformly; every other content token is uniform over A. Never truncated."""
    a, big_l = responses.alphabet_size, responses.max_length
    k = responses.content.to(torch.get_default_dtype())
    right = verify(responses, answer, rule)                                 # (C, N)
    slot = right * accuracy.unsqueeze(1) + (1 - right) * ((1 - accuracy) / (a - 1)).unsqueeze(1)
    finished = (responses.content >= 1) & ~responses.truncated
    probs = slot * (1.0 / (big_l - 1)) * a ** -(k - 1).clamp_min(0)
    return probs * finished


def make_task(cfg: SeqTaskConfig = SeqTaskConfig()) -> SeqTask:
    """Draw the task from its own generator."""
    gen = torch.Generator().manual_seed(cfg.seed)
    responses = enumerate_responses(cfg.alphabet_size, cfg.max_length)
    contexts = torch.randn(cfg.n_contexts, cfg.context_dim, generator=gen)
    answer = torch.randint(0, cfg.alphabet_size, (cfg.n_contexts,), generator=gen)
    u = 0.5 + 0.5 * torch.rand(cfg.n_contexts, generator=gen)
    accuracy = 1 - cfg.difficulty * u
    correct = verify(responses, answer, cfg.answer_rule)
    demo = demo_distribution(responses, answer, accuracy, cfg.answer_rule)
    return SeqTask(cfg, responses, contexts, answer, accuracy, correct, demo)
