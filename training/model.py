"""A Llama-style decoder: RMSNorm, rotary embeddings, SwiGLU MLP, grouped-query attention via
`scaled_dot_product_attention`, optionally tied input/output embeddings.

Module and parameter names follow Hugging Face `LlamaForCausalLM` (`model.layers.N.self_attn.
q_proj`, ...) and so does the rotary layout (rotate-half, not interleaved), so export is a
rename-free copy of the state dict. Read it top to bottom in one sitting, like nanoGPT.
"""
from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from llmforge.common.config import StrictModel


class ModelConfig(StrictModel):
    """Shape of the decoder. `preset` fills every field not given explicitly."""

    preset: Literal["tiny", "124m", "350m", "1b"] | None = Field(
        default=None, description="named shape; explicit fields override it")
    vocab_size: int = Field(default=32000, gt=0)
    dim: int = Field(default=768, gt=0, description="hidden size")
    n_layers: int = Field(default=12, gt=0)
    n_heads: int = Field(default=12, gt=0)
    n_kv_heads: int | None = Field(default=None, gt=0, description="grouped-query heads; None = n_heads")
    ffn_dim: int | None = Field(default=None, gt=0, description="SwiGLU hidden size; None = 8/3 dim rounded up to 256")
    max_seq_len: int = Field(default=1024, gt=0)
    rope_theta: float = Field(default=10000.0, gt=0)
    norm_eps: float = Field(default=1e-5, gt=0)
    tie_embeddings: bool = True
    init_std: float = Field(default=0.02, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data):
        if isinstance(data, dict) and data.get("preset"):
            preset = PRESETS.get(data["preset"])
            if preset is not None:
                data = {**preset, **data}
        return data

    @model_validator(mode="after")
    def _heads_divide(self) -> "ModelConfig":
        if self.dim % self.n_heads:
            raise ValueError(f"dim {self.dim} is not divisible by n_heads {self.n_heads}")
        if (self.dim // self.n_heads) % 2:
            raise ValueError(f"head dim {self.dim // self.n_heads} must be even for rotary embeddings")
        if self.n_heads % self.kv_heads:
            raise ValueError(f"n_heads {self.n_heads} is not a multiple of n_kv_heads {self.kv_heads}")
        return self

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def hidden_dim(self) -> int:
        if self.ffn_dim:
            return self.ffn_dim
        return 256 * math.ceil(int(8 * self.dim / 3) / 256)  # Llama's SwiGLU sizing


# Shapes: tiny for tests; 124m/350m are GPT-2 small/medium widths and depths (parameter counts
# depend on the vocabulary: 124m has ~110M at a 32k vocab, tied); 1b is Llama-3.2-1B's body.
PRESETS: dict[str, dict] = {
    "tiny": dict(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=256, ffn_dim=192),
    "124m": dict(dim=768, n_layers=12, n_heads=12, max_seq_len=1024),
    "350m": dict(dim=1024, n_layers=24, n_heads=16, max_seq_len=1024),
    "1b": dict(dim=2048, n_layers=16, n_heads=32, n_kv_heads=8, ffn_dim=8192, max_seq_len=2048,
               rope_theta=500000.0),
}


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalise in fp32 whatever the activation dtype: bf16 sums of squares lose too much.
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)


def rotary_tables(head_dim: int, seq_len: int, theta: float, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin, (seq_len, head_dim), in the rotate-half layout."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim))
    angles = torch.outer(torch.arange(seq_len, device=device, dtype=torch.float32), inv_freq)
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos(), angles.sin()


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    a, b = x.chunk(2, dim=-1)
    return torch.cat([-b, a], dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: (batch, heads, seq, head_dim)."""
    return (x.float() * cos + _rotate_half(x.float()) * sin).to(x.dtype)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads, self.n_kv, self.head_dim = cfg.n_heads, cfg.kv_heads, cfg.head_dim
        self.q_proj = nn.Linear(cfg.dim, cfg.n_heads * cfg.head_dim, bias=False)
        self.k_proj = nn.Linear(cfg.dim, cfg.kv_heads * cfg.head_dim, bias=False)
        self.v_proj = nn.Linear(cfg.dim, cfg.kv_heads * cfg.head_dim, bias=False)
        self.o_proj = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.dim, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                cache: "LayerCache | None" = None, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Training: `cache` and `mask` None, plain causal attention over `x`. Decoding: the new
        keys/values are appended to `cache`, and `mask` (batch, 1, new, cached + new), True =
        attend, says which cached positions each new token sees."""
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.n_kv, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.n_kv, self.head_dim).transpose(1, 2)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if cache is not None:
            k, v = cache.append(k, v)
        gqa = self.n_kv != self.n_heads  # each kv head serves n_heads / n_kv query heads
        if mask is None:  # the causal kernels take the kv heads as they are (no copies)
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
        else:  # PyTorch documents enable_gqa for its flash and math kernels only; masks use others
            if gqa:
                k = k.repeat_interleave(self.n_heads // self.n_kv, dim=1)
                v = v.repeat_interleave(self.n_heads // self.n_kv, dim=1)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.o_proj(y.transpose(1, 2).reshape(b, t, -1))


class LayerCache:
    """One layer's keys and values, preallocated for `max_len` positions; `length` are filled."""

    def __init__(self, k: torch.Tensor, v: torch.Tensor):
        self.k, self.v, self.length = k, v, 0

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        end = self.length + k.shape[2]
        if end > self.k.shape[2]:
            raise ValueError(f"KV cache holds {self.k.shape[2]} positions; {end} needed")
        self.k[:, :, self.length:end] = k
        self.v[:, :, self.length:end] = v
        self.length = end
        return self.k[:, :, :end], self.v[:, :, :end]


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.dim, cfg.hidden_dim, bias=False)
        self.up_proj = nn.Linear(cfg.dim, cfg.hidden_dim, bias=False)
        self.down_proj = nn.Linear(cfg.hidden_dim, cfg.dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                cache: LayerCache | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, cache, mask)
        return x + self.mlp(self.post_attention_layernorm(x))


class Decoder(nn.Module):
    """The trunk (HF's `LlamaModel`): embeddings, blocks, final norm."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)


def segment_positions(segments: torch.Tensor) -> torch.Tensor:
    """Rotary positions restarting at 0 where the segment id changes (packed sequences)."""
    idx = torch.arange(segments.shape[1], device=segments.device).expand_as(segments)
    starts = torch.ones_like(segments, dtype=torch.bool)
    starts[:, 1:] = segments[:, 1:] != segments[:, :-1]
    return idx - torch.where(starts, idx, torch.zeros_like(idx)).cummax(1).values


class _Transformer(nn.Module):
    """What the causal LM and the reward model share: the trunk, the rotary tables, the init."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.model = Decoder(cfg)
        cos, sin = rotary_tables(cfg.head_dim, cfg.max_seq_len, cfg.rope_theta)
        # Not persistent: recomputed from the config, so checkpoints hold only weights.
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    def _init_weights(self) -> None:
        self.apply(self._init)
        # GPT-2/nanoGPT: residual projections scaled by 1/sqrt(2 * layers) keep activations O(1).
        for name, p in self.named_parameters():
            if name.endswith(("o_proj.weight", "down_proj.weight")):
                nn.init.normal_(p, mean=0.0, std=self.cfg.init_std / math.sqrt(2 * self.cfg.n_layers))

    def _init(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=self.cfg.init_std)

    def hidden(self, ids: torch.Tensor, segments: torch.Tensor | None = None) -> torch.Tensor:
        """Final-norm hidden states (batch, seq, dim). With `segments` (batch, seq) of segment
        ids, packed sequences attend only within their segment and restart their positions."""
        t = ids.shape[1]
        if t > self.cfg.max_seq_len:
            raise ValueError(f"sequence of {t} tokens is longer than model.max_seq_len {self.cfg.max_seq_len}")
        x = self.model.embed_tokens(ids)
        mask = None
        if segments is None:
            cos, sin = self.rope_cos[:t].to(x.dtype), self.rope_sin[:t].to(x.dtype)
        else:
            positions = segment_positions(segments)
            cos = self.rope_cos[positions].unsqueeze(1).to(x.dtype)
            sin = self.rope_sin[positions].unsqueeze(1).to(x.dtype)
            causal = torch.ones(t, t, dtype=torch.bool, device=ids.device).tril()
            mask = (causal & (segments[:, :, None] == segments[:, None, :])).unsqueeze(1)
        for block in self.model.layers:
            x = block(x, cos, sin, None, mask)
        return self.model.norm(x)


class Llama(_Transformer):
    """`forward(ids) -> logits`, or `(logits, mean loss)` when `targets` are given
    (targets < 0 are ignored). `select` (batch, seq) bool: logits only at those positions,
    (n selected, vocab) in row-major order — the LM head is the largest matmul of a small
    model, and RL scores only the completion's positions."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        self.lm_head = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        self._init_weights()

    def forward(self, ids: torch.Tensor, targets: torch.Tensor | None = None,
                segments: torch.Tensor | None = None, select: torch.Tensor | None = None):
        hidden = self.hidden(ids, segments)
        if select is not None:
            return self.lm_head(hidden[select])
        logits = self.lm_head(hidden)
        if targets is None:
            return logits
        loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)
        return logits, loss

    def new_cache(self, batch: int, max_len: int) -> list[LayerCache]:
        """Empty per-layer KV caches for decoding `batch` sequences of up to `max_len` tokens."""
        if max_len > self.cfg.max_seq_len:
            raise ValueError(f"{max_len} positions requested; model.max_seq_len is {self.cfg.max_seq_len}")
        w = self.model.embed_tokens.weight
        shape = (batch, self.cfg.kv_heads, max_len, self.cfg.head_dim)
        return [LayerCache(w.new_zeros(shape), w.new_zeros(shape)) for _ in self.model.layers]

    def forward_cached(self, ids: torch.Tensor, positions: torch.Tensor, cache: list[LayerCache],
                       mask: torch.Tensor) -> torch.Tensor:
        """Logits for `ids` (batch, new) at rotary `positions` (batch, new), attending to what
        `cache` holds plus themselves as `mask` (batch, 1, new, cached + new) allows; the new
        keys and values are appended to `cache`. Per-row positions let left-padded prompts of
        different lengths share a batch."""
        x = self.model.embed_tokens(ids)
        cos = self.rope_cos[positions].unsqueeze(1).to(x.dtype)  # (batch, 1, new, head_dim)
        sin = self.rope_sin[positions].unsqueeze(1).to(x.dtype)
        for block, layer_cache in zip(self.model.layers, cache):
            x = block(x, cos, sin, layer_cache, mask)
        return self.lm_head(self.model.norm(x))


class RewardModel(_Transformer):
    """Hugging Face's `LlamaForSequenceClassification` with one label: the trunk and a scalar
    `score` head read at each row's last real token. `forward(ids, lengths) -> (batch,)`;
    `forward(ids)` -> (batch, seq) the head at every position (PPO's critic: a value per state)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        self.score = nn.Linear(cfg.dim, 1, bias=False)
        self._init_weights()

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        values = self.score(self.hidden(ids)).squeeze(-1)
        if lengths is None:
            return values
        return values.gather(1, (lengths - 1).clamp(min=0).unsqueeze(1)).squeeze(1)


MODEL_KINDS = {"causal_lm": Llama, "reward": RewardModel}


def build_model(cfg: ModelConfig, kind: str = "causal_lm") -> nn.Module:
    if kind not in MODEL_KINDS:
        raise ValueError(f"unknown model kind {kind!r} (known: {', '.join(MODEL_KINDS)})")
    return MODEL_KINDS[kind](cfg)


def count_parameters(cfg: ModelConfig, include_embedding: bool = True) -> int:
    """Parameters of `Llama(cfg)`, computed from the shape (no model is built).
    Without the input embedding when `include_embedding` is False (a tied one still counts
    once, as the output projection)."""
    attn = cfg.dim * cfg.head_dim * (2 * cfg.n_heads + 2 * cfg.kv_heads)
    mlp = 3 * cfg.dim * cfg.hidden_dim
    body = cfg.n_layers * (attn + mlp + 2 * cfg.dim) + cfg.dim
    emb = cfg.vocab_size * cfg.dim
    head = 0 if cfg.tie_embeddings else emb
    if include_embedding:
        return body + emb + head
    return body + emb  # the output projection's matrix: tied or not, it does matmul work


def flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
    """Training FLOPs per token (forward + backward): 6N for the matmul weights plus the
    attention scores and values, 12 * layers * heads * head_dim * seq_len (PaLM appendix B;
    nanoGPT's MFU). N excludes the embedding lookup, which does no multiply-adds."""
    n = count_parameters(cfg, include_embedding=False)
    return 6.0 * n + 12.0 * cfg.n_layers * cfg.n_heads * cfg.head_dim * seq_len
