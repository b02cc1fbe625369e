"""The downstream prior: a small autoregressive transformer over a tokenizer's token grids.

Does codebook utilization matter for generation? Every tokenizer (a trained quantizer with its
encoder/decoder) gets the same prior, trained with the same budget on its training-split tokens:

- tokens: the indices of one image in raster order, a sequence of length L = h * w (times the
  number of levels for a multi-codebook quantizer, levels innermost); the vocabulary is the
  largest level codebook size V (K for a single codebook);
- model: GPT-style decoder-only transformer (pre-norm ``nn.TransformerEncoderLayer`` blocks with a
  causal mask, learned positions, a begin-of-sequence token, no dropout): p(x) = prod_t
  p(x_t | x_<t);
- training: ``steps`` Adam steps of cross-entropy on ``batch_size`` sequences drawn with
  replacement from the training tokens (a seeded generator), initialisation seeded;
- held-out NLL: -1/(N L) sum log2 p(x_t | x_<t) over the held-out sequences = bits per token; bits
  per image = L x bits per token. A model that ignores the context cannot do better than the
  entropy of the token marginal, log2(perplexity); a uniform prior scores log2 V.
- samples: ancestral sampling at temperature 1 from a seeded generator.

Settings are :class:`PriorSettings`; the experiments use the defaults with ``steps`` =
``model_options.prior_steps``. Sized for CPU: digits 8x8 with a 4x4 token grid, 2 layers of width
64, a few hundred steps. This is a measurement device for comparing tokenizers at equal budget,
not a competitive generator.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class PriorSettings:
    steps: int = 300
    layers: int = 2
    width: int = 64
    heads: int = 4
    batch_size: int = 64
    lr: float = 3e-3

    def __post_init__(self) -> None:
        for name in ("steps", "layers", "width", "heads", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: must be an integer >= 1, got {value!r}")
        if self.width % self.heads:
            raise ValueError(f"width: must be divisible by heads = {self.heads}, got {self.width}")
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) or not 0 < self.lr < math.inf:
            raise ValueError(f"lr: must be a finite number > 0, got {self.lr!r}")


class TokenPrior(nn.Module):
    """p(x_t | x_<t) over sequences of ``length`` tokens in [0, vocab)."""

    def __init__(self, vocab: int, length: int, settings: PriorSettings) -> None:
        super().__init__()
        if vocab < 1 or length < 1:
            raise ValueError(f"vocab, length: must be >= 1, got {vocab}, {length}")
        self.vocab, self.length = vocab, length
        self.embed = nn.Embedding(vocab + 1, settings.width)  # the last id is begin-of-sequence
        self.position = nn.Parameter(torch.randn(length, settings.width) * 0.02)
        layer = nn.TransformerEncoderLayer(settings.width, settings.heads, 4 * settings.width, dropout=0.0,
                                           batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, settings.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(settings.width)
        self.head = nn.Linear(settings.width, vocab)
        self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(length), persistent=False)

    def forward(self, tokens: Tensor) -> Tensor:
        """(B, L) long -> logits (B, L, vocab): position t predicts token t from tokens < t."""
        bos = torch.full((tokens.shape[0], 1), self.vocab, dtype=torch.long, device=tokens.device)
        inputs = torch.cat([bos, tokens[:, :-1]], dim=1)
        hidden = self.embed(inputs) + self.position
        hidden = self.blocks(hidden, mask=self.mask, is_causal=True)
        return self.head(self.norm(hidden))

    def empty_cache(self, count: int) -> tuple[Tensor, Tensor]:
        """Key and value buffers (layers, count, L, width) for :meth:`next_logits`."""
        keys = self.position.new_empty(len(self.blocks.layers), count, self.length, self.position.shape[1])
        return keys, torch.empty_like(keys)

    def next_logits(self, previous: Tensor, t: int, cache: tuple[Tensor, Tensor]) -> Tensor:
        """Logits (B, vocab) of position t from token t - 1 (``previous`` (B,), begin-of-sequence at
        t = 0) and ``cache``, which holds the keys and values of positions < t (written at the
        calls for 0..t-1; this call writes position t's). The same math as ``forward(tokens)[:, t]``
        (the causal mask hides the later positions), equal up to float rounding, at the cost of one
        position instead of L: ancestral sampling draws a token per position."""
        hidden = (self.embed(previous) + self.position[t])[:, None]  # (B, 1, width)
        for block, keys, values in zip(self.blocks.layers, *cache):
            hidden = _next_hidden(block, hidden, keys, values, t)
        return self.head(self.norm(hidden[:, 0]))


def _next_hidden(block: nn.TransformerEncoderLayer, hidden: Tensor, keys: Tensor, values: Tensor, t: int) -> Tensor:
    """One pre-norm block (``norm_first``, no dropout) at position t alone: (B, 1, W) -> (B, 1, W),
    attending to positions 0..t; writes position t's key and value into ``keys``/``values`` (B, L, W)."""
    attention = block.self_attn
    heads, batch = attention.num_heads, hidden.shape[0]
    query, key, value = nn.functional.linear(block.norm1(hidden), attention.in_proj_weight,
                                             attention.in_proj_bias).chunk(3, dim=-1)
    keys[:, t : t + 1], values[:, t : t + 1] = key, value

    def split(x: Tensor) -> Tensor:  # (B, n, W) -> (B, heads, n, W / heads)
        return x.reshape(batch, x.shape[1], heads, -1).transpose(1, 2)

    mixed = nn.functional.scaled_dot_product_attention(split(query), split(keys[:, : t + 1]),
                                                       split(values[:, : t + 1]))
    hidden = hidden + attention.out_proj(mixed.transpose(1, 2).reshape(batch, 1, -1))
    return hidden + block.linear2(block.activation(block.linear1(block.norm2(hidden))))


def check_tokens(tokens: Tensor, vocab: int, name: str = "tokens") -> Tensor:
    """(N, L) long tokens in [0, vocab), N >= 1; ValueError naming ``name`` otherwise."""
    if not isinstance(tokens, Tensor) or tokens.ndim != 2 or tokens.shape[0] < 1 or tokens.shape[1] < 1:
        shape = tuple(tokens.shape) if isinstance(tokens, Tensor) else type(tokens).__name__
        raise ValueError(f"{name}: expected a non-empty (N, L) tensor, got {shape}")
    if tokens.is_floating_point() or tokens.dtype == torch.bool:
        raise ValueError(f"{name}: expected integer token ids, got dtype {tokens.dtype}")
    if int(tokens.min()) < 0 or int(tokens.max()) >= vocab:
        raise ValueError(f"{name}: ids must lie in [0, {vocab}), got [{int(tokens.min())}, {int(tokens.max())}]")
    return tokens.long()


@contextlib.contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def train_prior(tokens: Tensor, vocab: int, settings: PriorSettings, seed: int,
                device: torch.device | str = "cpu") -> TokenPrior:
    """A :class:`TokenPrior` trained on ``tokens`` (N, L); deterministic for a seed on CPU."""
    device = torch.device(device)
    tokens = check_tokens(tokens, vocab).to(device)
    with _seeded(seed, device):
        model = TokenPrior(vocab, tokens.shape[1], settings).to(device)
    draw = torch.Generator(device=device).manual_seed(int(seed) % 2**63)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr, foreach=True)  # as make_optimizer
    model.train()
    with torch.enable_grad():  # callers may evaluate under no_grad
        _fit(model, tokens, vocab, settings, draw, optimizer)
    model.eval()
    return model


def _fit(model: TokenPrior, tokens: Tensor, vocab: int, settings: PriorSettings, draw: torch.Generator,
         optimizer: torch.optim.Optimizer) -> None:
    device = tokens.device
    for _ in range(settings.steps):
        batch = tokens[torch.randint(0, tokens.shape[0], (settings.batch_size,), generator=draw, device=device)]
        logits = model(batch)
        loss = nn.functional.cross_entropy(logits.reshape(-1, vocab), batch.reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


@torch.no_grad()
def nll_bits_per_token(model: TokenPrior, tokens: Tensor, batch: int = 1024) -> float:
    """Held-out NLL in bits per token: -mean log2 p(x_t | x_<t) over every token of ``tokens``."""
    tokens = check_tokens(tokens, model.vocab)
    if tokens.shape[1] != model.length:
        raise ValueError(f"tokens: sequences of length {tokens.shape[1]}, the prior models {model.length}")
    device = model.position.device
    total = 0.0
    for start in range(0, tokens.shape[0], batch):
        chunk = tokens[start : start + batch].to(device)
        logits = model(chunk).double()
        total += float(nn.functional.cross_entropy(logits.reshape(-1, model.vocab), chunk.reshape(-1),
                                                   reduction="sum"))
    return total / (tokens.numel() * math.log(2.0))


@torch.no_grad()
def sample(model: TokenPrior, count: int, generator: torch.Generator) -> Tensor:
    """``count`` sequences (count, L) by ancestral sampling at temperature 1.

    Token t is drawn from the logits of position t given the tokens drawn so far, computed
    incrementally (:meth:`TokenPrior.next_logits`, a key/value cache): L token passes in all
    instead of a forward pass over the whole sequence per token (L^2).
    """
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"count: must be an integer >= 1, got {count!r}")
    device = model.position.device
    cache = model.empty_cache(count)
    tokens = torch.zeros(count, model.length, dtype=torch.long, device=device)
    previous = torch.full((count,), model.vocab, dtype=torch.long, device=device)  # begin-of-sequence
    for t in range(model.length):
        probs = torch.softmax(model.next_logits(previous, t, cache).double(), dim=-1)
        tokens[:, t] = previous = torch.multinomial(probs, 1, generator=generator).squeeze(1)
    return tokens
