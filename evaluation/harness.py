"""lm-evaluation-harness adapter: our models as an `lm_eval` `LM` named "llmforge", so any harness
task runs on an llmforge checkpoint, run directory or Hugging Face directory.

    lm_eval --model llmforge --model_args pretrained=runs/pretrain,batch_tokens=8192 \\
            --tasks NAME --include_path TASKDIR        (after `import evaluation.harness`)
    lm_eval.simple_evaluate(model="llmforge", model_args={"pretrained": PATH}, tasks=[...])

The three request types go through the same code as `llmforge eval`:

  loglikelihood          `evaluation.scoring.loglikelihood` over every request at once (sorted
                         by length, a shared context run once for all its continuations), the
                         pairs tokenised by `evaluation.multiple_choice.encode_pairs`: the
                         harness's `_encode_pair` with `<|endoftext|>` before every context, as
                         documents started in pretraining. So a task scores the same token ids,
                         hence the same choices, under `llmforge eval mc` and under the harness.
  loglikelihood_rolling  `<|endoftext|>` + the text, `evaluation.scoring.rolling_token_logprobs`
                         (windows of the model's context, each token scored once), summed.
  generate_until         `training.generate.generate` on `<|endoftext|>` + the context (plain
                         text, no chat template), greedy unless the request asks to sample,
                         at most `max_gen_toks` tokens, cut at the first `until` string; it
                         stops early at `<|endoftext|>` and at any `until` string that is one
                         token. A context too long for the window keeps its last tokens.

Only this module imports `lm_eval`; the rest of `evaluation` runs without it.
"""
from __future__ import annotations

import importlib
from typing import Any, Sequence

from lm_eval.api.model import LM
from lm_eval.api.registry import register_model

from llmforge.common.errors import UserError

# The built-in models' lazy registry entries first: lm_eval fills an empty registry on first use,
# so a registry holding only "llmforge" would hide "hf" and the rest.
importlib.import_module("lm_eval.models")

DEFAULT_MAX_GEN_TOKS = 256
DEFAULT_GEN_BATCH = 16


def _as_int(name: str, value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise UserError(f"llmforge model_args {name}={value!r}: expected an integer") from None


@register_model("llmforge")
class LLMForgeLM(LM):
    """`pretrained`: an llmforge checkpoint, run directory (its latest checkpoint) or HF
    directory with tokenizer.json. `batch_tokens` bounds each scoring forward (rows x longest
    row); `batch_size` (the harness's option) is the number of prompts generated together;
    `max_gen_toks` is the default generation budget of requests that name none."""

    def __init__(self, pretrained: str | None = None, batch_tokens: int = 8192, device: str | None = None,
                 batch_size: Any = None, max_batch_size: Any = None, max_gen_toks: int = DEFAULT_MAX_GEN_TOKS,
                 threads: int | None = None, **unused: Any):
        super().__init__()
        if pretrained is None:
            raise UserError("llmforge model_args: pretrained=PATH (a checkpoint, run or HF directory) is required")
        if unused:
            raise UserError(f"llmforge model_args: unknown option(s) {', '.join(sorted(unused))} (known: pretrained, "
                            f"batch_tokens, device, batch_size, max_gen_toks, threads)")
        import contextlib
        import sys

        import torch
        from tokenizers import Tokenizer

        from llmforge.shard_format import EOS_TOKEN
        from training.sources import resolve_model

        if threads is not None:
            torch.set_num_threads(_as_int("threads", threads))
        self.batch_tokens = _as_int("batch_tokens", batch_tokens)
        if self.batch_tokens <= 0:
            raise UserError(f"llmforge model_args batch_tokens={batch_tokens}: must be > 0")
        self.max_gen_toks = _as_int("max_gen_toks", max_gen_toks)
        self.gen_batch = (_as_int("batch_size", batch_size) if batch_size not in (None, "auto")
                          and not str(batch_size).startswith("auto") else DEFAULT_GEN_BATCH)
        device = str(device or "cpu")
        source = resolve_model(pretrained)
        if source.kind != "causal_lm":
            raise UserError(f"llmforge model_args pretrained={pretrained}: a {source.kind} model has no "
                            f"language-model head")
        if source.tokenizer_path is None:
            raise UserError(f"llmforge model_args pretrained={pretrained}: no tokenizer.json next to the weights")
        self.tokenizer = Tokenizer.from_file(str(source.tokenizer_path))
        end_id = self.tokenizer.token_to_id(EOS_TOKEN)
        if end_id is None:
            raise UserError(f"{source.tokenizer_path}: the tokenizer has no {EOS_TOKEN} token to start texts with")
        self.end_id = end_id
        self.pad_id = self.tokenizer.token_to_id("<|pad|>")
        self.pad_id = end_id if self.pad_id is None else self.pad_id
        with contextlib.redirect_stdout(sys.stderr):  # DeepSpeed's checkpoint reader talks on stdout
            self.model = source.build(device=device)
        self.source = source
        self._device = device
        self.window = source.config.max_seq_len

    @property
    def tokenizer_name(self) -> str:
        return str(self.source.tokenizer_path)

    # ---------------------------------------------------------------------- log-likelihood

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        from evaluation.multiple_choice import encode_pairs
        from evaluation.scoring import loglikelihood

        pairs = [tuple(r.args) for r in requests]
        encoded = encode_pairs(self.tokenizer, self.end_id, pairs)
        for (context, continuation), (_, cont) in zip(pairs, encoded):
            if len(cont) > self.window:
                raise UserError(f"a continuation of {len(cont)} tokens ({continuation!r:.60}) is longer than the "
                                f"model's window of {self.window}; it cannot be scored")
        scores = loglikelihood(self.model, encoded, batch_tokens=self.batch_tokens, pad_id=self.pad_id)
        out = []
        for pair, s in zip(pairs, scores):
            out.append((s.logprob, s.greedy))
            self.cache_hook.add_partial("loglikelihood", pair, (s.logprob, s.greedy))
        return out

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        from evaluation.scoring import rolling_token_logprobs

        out = []
        for r in requests:
            (text,) = r.args
            ids = [self.end_id] + list(self.tokenizer.encode(text, add_special_tokens=False).ids)
            total = float(rolling_token_logprobs(self.model, ids).double().sum()) if len(ids) > 1 else 0.0
            out.append(total)
            self.cache_hook.add_partial("loglikelihood_rolling", (text,), total)
        return out

    # ---------------------------------------------------------------------- generation

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        groups: dict[str, list[int]] = {}
        kwargs_of: dict[str, dict[str, Any]] = {}
        for i, r in enumerate(requests):
            kwargs = dict(r.args[1] or {})
            key = repr(sorted(kwargs.items(), key=lambda kv: kv[0]))
            groups.setdefault(key, []).append(i)
            kwargs_of[key] = kwargs
        out: list[str | None] = [None] * len(requests)
        for key, positions in groups.items():
            texts = self._generate([requests[i].args[0] for i in positions], kwargs_of[key], positions)
            for i, text in zip(positions, texts):
                out[i] = text
                self.cache_hook.add_partial("generate_until", requests[i].args, text)
        return out  # type: ignore[return-value]

    def _generate(self, contexts: Sequence[str], kwargs: dict[str, Any], keys: Sequence[int]) -> list[str]:
        from training.batch_generate import row_seed
        from training.generate import SamplingParams, generate

        kwargs = dict(kwargs)
        until = kwargs.pop("until", None) or []
        until = [until] if isinstance(until, str) else list(until)
        max_gen = _as_int("max_gen_toks", kwargs.pop("max_gen_toks", self.max_gen_toks))
        max_gen = max(1, min(max_gen, self.window))
        do_sample = bool(kwargs.pop("do_sample", False))
        temperature = float(kwargs.pop("temperature", 0.0) or 0.0)
        if not do_sample:
            temperature = 0.0
        elif temperature == 0.0:
            temperature = 1.0
        top_p = float(kwargs.pop("top_p", 1.0) or 1.0)
        top_k = kwargs.pop("top_k", None)
        seed = _as_int("seed", kwargs.pop("seed", 0) or 0)
        # One-token `until` strings end a row as soon as it emits them (the text is cut there anyway).
        stops = {self.end_id}
        for s in until:
            ids = self.tokenizer.encode(s, add_special_tokens=False).ids
            if len(ids) == 1 and self.tokenizer.decode(ids, skip_special_tokens=False) == s:
                stops.add(ids[0])
        params = SamplingParams(max_new_tokens=max_gen, temperature=temperature, top_p=top_p,
                                top_k=int(top_k) if top_k else None, stop_token_ids=sorted(stops), seed=seed)
        keep = self.window - max_gen + 1  # prompt tokens that fit with every new token but the last
        prompts = []
        for c in contexts:
            ids = [self.end_id] + list(self.tokenizer.encode(c, add_special_tokens=False).ids)
            prompts.append(ids[-keep:])
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        texts: list[str] = [""] * len(prompts)
        for start in range(0, len(order), self.gen_batch):
            rows = order[start:start + self.gen_batch]
            seeds = [row_seed(seed, keys[i]) for i in rows] if temperature > 0 else None
            for i, g in zip(rows, generate(self.model, [prompts[i] for i in rows], params, pad_id=self.pad_id,
                                           row_seeds=seeds)):
                text = self.tokenizer.decode(g.tokens, skip_special_tokens=True)
                for s in until:
                    if s:
                        text = text.split(s)[0]
                texts[i] = text
        return texts
