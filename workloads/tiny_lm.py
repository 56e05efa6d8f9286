"""A small decoder-only transformer with an explicit KV cache, deterministic from its seed: the
real model PD-separated inference runs (prefill on one host, decode on another), small enough for
a CPU and for a CPU emulated under TCG.

The KV cache is one tensor [layers, 2 (K, V), heads, max_seq, head_dim]; prefill fills its first
positions, each decode step appends one. Greedy decoding, so a run is reproducible bit for bit.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


class TinyLM:
    def __init__(self, layers: int = 2, d_model: int = 64, heads: int = 4, vocab: int = 256, max_seq: int = 512,
                 seed: int = 0):
        if layers < 1 or heads < 1 or d_model % heads:
            raise ValueError("layers >= 1, heads >= 1, and d_model divisible by heads")
        self.L, self.d, self.H, self.vocab, self.max_seq = layers, d_model, heads, vocab, max_seq
        self.dh = d_model // heads
        g = torch.Generator().manual_seed(seed)

        def w(*shape):
            return torch.randn(*shape, generator=g) / math.sqrt(shape[0])
        self.emb = torch.randn(vocab, d_model, generator=g) * 0.5
        self.pos = torch.randn(max_seq, d_model, generator=g) * 0.1
        self.layers = [{"q": w(d_model, d_model), "k": w(d_model, d_model), "v": w(d_model, d_model),
                        "o": w(d_model, d_model), "up": w(d_model, 4 * d_model), "down": w(4 * d_model, d_model)}
                       for _ in range(layers)]
        self.head = w(d_model, vocab) * 4  # untied and sharp: greedy output varies with the context

    def new_cache(self) -> torch.Tensor:
        return torch.zeros(self.L, 2, self.H, self.max_seq, self.dh)

    def kv_bytes(self, tokens: int) -> int:
        return self.L * 2 * self.H * tokens * self.dh * 4

    @torch.no_grad()
    def forward(self, tokens: torch.Tensor, cache: torch.Tensor, start: int) -> torch.Tensor:
        """Logits for `tokens` at positions start.. (their K and V written into the cache)."""
        T = tokens.numel()
        if start + T > self.max_seq:
            raise ValueError(f"sequence of {start + T} tokens exceeds max_seq {self.max_seq}")
        x = self.emb[tokens] + self.pos[start:start + T]
        # query i (position start+i) sees keys 0..start+i
        mask = torch.ones(T, start + T, dtype=torch.bool).tril(diagonal=start)
        for li, p in enumerate(self.layers):
            h = F.layer_norm(x, (self.d,))
            q, k, v = ((h @ p[n]).view(T, self.H, self.dh).transpose(0, 1) for n in ("q", "k", "v"))
            cache[li, 0, :, start:start + T] = k
            cache[li, 1, :, start:start + T] = v
            K, V = cache[li, 0, :, :start + T], cache[li, 1, :, :start + T]
            att = (q @ K.transpose(1, 2)) / math.sqrt(self.dh)
            att = att.masked_fill(~mask, float("-inf")).softmax(-1)
            x = x + (att @ V).transpose(0, 1).reshape(T, self.d) @ p["o"]
            x = x + F.gelu(F.layer_norm(x, (self.d,)) @ p["up"]) @ p["down"]
        return F.layer_norm(x, (self.d,)) @ self.head

    def prefill(self, prompt: torch.Tensor, cache: torch.Tensor) -> int:
        """Fill the cache for the prompt; returns the first generated token."""
        return int(self.forward(prompt, cache, 0)[-1].argmax())

    def decode(self, cache: torch.Tensor, prompt_len: int, first: int, n: int, on_token=None) -> list[int]:
        """Greedy decoding from the prefilled cache: `n` tokens, the first being prefill's."""
        out, tok = [first], first
        for i in range(n - 1):
            tok = int(self.forward(torch.tensor([tok]), cache, prompt_len + i)[-1].argmax())
            out.append(tok)
            if on_token is not None:
                on_token()
        return out

    def generate(self, prompt: torch.Tensor, n: int) -> list[int]:
        """Single-host reference: prefill and decode in one place."""
        cache = self.new_cache()
        return self.decode(cache, prompt.numel(), self.prefill(prompt, cache), n)
