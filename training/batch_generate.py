"""Batched generation on Ray Data: prompts in, completions with token ids and log-probs out.

One component for evaluation, RL rollouts and synthetic data:

    generate_texts(model, chat_tokenizer, prompts, options)    in process, no Ray
    Generator(model_path, options)                              Ray Data `map_batches` callable
    generate_dataset(model_path, ds, options)                   ds -> ds with the output columns
    run_generate(model_path, prompts_path, output_dir, options) JSONL file -> parquet + results.json
    text_generator(model_path, options, use_ray)                (prompts, keys) -> rows, model loaded once

A prompt is a plain string (one user turn in the chat template, after `options.system` if set)
or a message list ({role, content}); with `chat_template=False` a string continued as plain
text after `<|endoftext|>`, as `complete_texts` does. Generation stops at the template's end
token unless `sampling.stop_token_ids` names others.

Each output row keeps every input column and adds `completion` (text, special tokens
dropped), `completion_ids` (including the stop token that ended it), `logprobs` (one per id),
`finish_reason` ("stop", "length", or "prompt_too_long": prompt + max_new_tokens does not fit
`max_seq_len`; such a row has an empty completion and is never dropped), `prompt_tokens` and
`completion_tokens`.

Padding: each call takes `sort_window` x `batch_size` prompts, sorts them by length, cuts model
batches of `batch_size` from that order and puts the rows back in their original order.

Reproducibility: greedy decoding is batch-independent (left padding decodes each row as if
alone). Sampled rows draw from per-row random streams keyed by (`sampling.seed`, the row's
key): `prompt_index` when the dataset has that column (run_generate adds it: the prompt's
position in the file), else a hash of the prompt, so identical prompts without a
`prompt_index` get identical samples. A row's tokens therefore do not depend on batch size,
concurrency or the other rows, up to float rounding at near-ties.
"""
from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from pydantic import Field

from llmforge.common.config import StrictModel
from llmforge.common.errors import UserError
from training.generate import SamplingParams

if TYPE_CHECKING:
    import pyarrow as pa
    import ray.data

KEY_COLUMN = "prompt_index"
OUTPUT_COLUMNS = ("completion", "completion_ids", "logprobs", "finish_reason", "prompt_tokens", "completion_tokens")
RESULTS_FILE = "results.json"
GENERATIONS_DIR = "generations"
ROWS_PER_FILE = 100_000
# Options that change what is generated; the rest (resources, batching) change only how fast.
OUTPUT_OPTIONS = ("sampling", "system", "chat_template")


class GenerateOptions(StrictModel):
    sampling: SamplingParams = Field(default_factory=SamplingParams,
                                     description="stop_token_ids empty = the chat template's end token")
    batch_size: int = Field(default=16, gt=0, description="prompts per model call")
    sort_window: int = Field(default=4, gt=0, description="model batches sorted by prompt length together")
    concurrency: int = Field(default=1, gt=0, description="model actors")
    num_cpus: float = Field(default=1.0, gt=0, description="CPUs per actor")
    num_gpus: float | None = Field(default=None, ge=0, description="GPUs per actor; None = 1 on cuda, else 0")
    system: str | None = Field(default=None, description="system turn before each plain-string prompt")
    chat_template: bool = Field(default=True, description="False = continue plain text after <|endoftext|>")
    device: str = "cpu"

    @property
    def gpus_per_actor(self) -> float:
        if self.num_gpus is not None:
            return self.num_gpus
        return 1.0 if self.device.startswith("cuda") else 0.0


# ------------------------------------------------------------------------------ in process


def encode_prompt(chat_tokenizer, prompt: str | Sequence[dict[str, Any]], options: GenerateOptions) -> list[int]:
    """The ids generation continues: the chat template with the assistant header, or
    `<|endoftext|>` + the text when `options.chat_template` is False."""
    from training.chat import as_messages

    if options.chat_template:
        return chat_tokenizer.prompt_ids(as_messages(prompt, options.system))
    if not isinstance(prompt, str):
        raise UserError("a message-list prompt needs the chat template (chat_template=False takes plain text)")
    return [chat_tokenizer.end_id] + list(chat_tokenizer.tokenizer.encode(prompt, add_special_tokens=False).ids)


def sampling_for(chat_tokenizer, options: GenerateOptions) -> SamplingParams:
    """`options.sampling`, stopping at the template's end token when it names no stop ids."""
    if options.sampling.stop_token_ids:
        return options.sampling
    return options.sampling.model_copy(update={"stop_token_ids": [chat_tokenizer.end_id]})


def row_seed(seed: int, key: Any) -> int:
    """A row's 32-bit sampling seed from the run's seed and the row's key."""
    return int(hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()[:8], 16)


def prompt_key(prompt: Any) -> str:
    """A row key from the prompt itself (rows without a `prompt_index`)."""
    from training.chat import as_messages

    value = prompt if isinstance(prompt, str) else as_messages(prompt)
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def fits(prompt_tokens: int, max_new_tokens: int, max_seq_len: int) -> bool:
    """Room for the prompt and every new token but the last (which is never fed back)."""
    return prompt_tokens + max_new_tokens - 1 <= max_seq_len


def generate_texts(model, chat_tokenizer, prompts: Sequence[str | Sequence[dict[str, Any]]],
                   options: GenerateOptions, keys: Sequence[Any] | None = None) -> list[dict[str, Any]]:
    """One dict per prompt, in order, with the `OUTPUT_COLUMNS`. `model` is a `training.model`
    causal LM, `chat_tokenizer` a `training.chat.ChatTokenizer`; `keys` (default: positions)
    key each row's random stream when sampling."""
    from training.generate import generate

    params = sampling_for(chat_tokenizer, options)
    keys = list(range(len(prompts))) if keys is None else list(keys)
    if len(keys) != len(prompts):
        raise ValueError(f"{len(keys)} keys for {len(prompts)} prompts")
    ids = [encode_prompt(chat_tokenizer, p, options) for p in prompts]
    out: list[dict[str, Any]] = [_row("", [], [], "prompt_too_long", len(p)) for p in ids]
    ok = sorted((i for i, p in enumerate(ids) if fits(len(p), params.max_new_tokens, model.cfg.max_seq_len)),
                key=lambda i: len(ids[i]))
    for start in range(0, len(ok), options.batch_size):
        rows = ok[start:start + options.batch_size]
        seeds = [row_seed(params.seed, keys[i]) for i in rows]
        for i, g in zip(rows, generate(model, [ids[i] for i in rows], params, pad_id=chat_tokenizer.pad_id,
                                       row_seeds=seeds)):
            out[i] = _row(chat_tokenizer.decode(g.tokens), g.tokens, g.logprobs, g.finish_reason, len(ids[i]))
    return out


def _row(text: str, tokens: list[int], logprobs: list[float], reason: str, prompt_tokens: int) -> dict[str, Any]:
    return {"completion": text, "completion_ids": list(tokens), "logprobs": list(logprobs),
            "finish_reason": reason, "prompt_tokens": prompt_tokens, "completion_tokens": len(tokens)}


# ------------------------------------------------------------------------------ Ray Data


def output_types() -> dict[str, "pa.DataType"]:
    import pyarrow as pa

    return {"completion": pa.string(), "completion_ids": pa.list_(pa.int64()), "logprobs": pa.list_(pa.float64()),
            "finish_reason": pa.string(), "prompt_tokens": pa.int64(), "completion_tokens": pa.int64()}


class Generator:
    """Ray Data `map_batches` callable (an actor: the model loads once, in the constructor).

    Takes a batch with a `prompt` column (and optionally `prompt_index`, the rows' sampling
    keys) as a pyarrow Table or a dict of numpy arrays; returns the same kind with every input
    column and the `OUTPUT_COLUMNS` (which replace input columns of the same name)."""

    def __init__(self, model_path: str, options: GenerateOptions):
        from training.sources import load_for_inference

        self.options = options
        self.model, self.tokenizer = load_for_inference(model_path, options.device)

    def __call__(self, batch):
        import numpy as np
        import pyarrow as pa

        table = isinstance(batch, pa.Table)
        columns = batch.column_names if table else list(batch)
        if "prompt" not in columns:
            raise UserError(f"generation needs a 'prompt' column; the batch has {columns}")
        prompts = batch.column("prompt").to_pylist() if table else list(batch["prompt"])
        if KEY_COLUMN in columns:
            keys = batch.column(KEY_COLUMN).to_pylist() if table else [int(k) for k in batch[KEY_COLUMN]]
        else:
            keys = [prompt_key(p) for p in prompts]
        rows = generate_texts(self.model, self.tokenizer, prompts, self.options, keys)
        if table:
            for name, type_ in output_types().items():
                values = pa.array([r[name] for r in rows], type=type_)
                if name in batch.column_names:
                    batch = batch.set_column(batch.column_names.index(name), name, values)
                else:
                    batch = batch.append_column(name, values)
            return batch
        out = dict(batch)
        for name in OUTPUT_COLUMNS:
            if name in ("prompt_tokens", "completion_tokens"):
                out[name] = np.array([r[name] for r in rows], dtype=np.int64)
            else:
                values = np.empty(len(rows), dtype=object)
                values[:] = [r[name] for r in rows]
                out[name] = values
        return out


def generate_dataset(model_path: str, ds: "ray.data.Dataset", options: GenerateOptions) -> "ray.data.Dataset":
    """`ds` (a `prompt` column, any others) with the output columns added, by
    `options.concurrency` model actors. Rows come back in `ds`'s order when its DataContext
    preserves order (`preserve_order()`), else in completion order. `model_path` must be
    readable from every node."""
    return ds.map_batches(
        Generator,
        fn_constructor_args=(str(model_path), options),
        batch_size=options.batch_size * options.sort_window,
        batch_format="pyarrow",
        concurrency=options.concurrency,
        num_cpus=options.num_cpus,
        num_gpus=options.gpus_per_actor,
    )


@contextmanager
def preserve_order() -> Iterator[None]:
    """Datasets created inside keep their rows' order through every later step (each dataset
    copies the current DataContext when it is made; the global one is restored on exit)."""
    from ray.data import DataContext

    ctx = DataContext.get_current()
    before = ctx.execution_options.preserve_order
    ctx.execution_options.preserve_order = True
    try:
        yield
    finally:
        ctx.execution_options.preserve_order = before


def text_generator(model_path: str, options: GenerateOptions, use_ray: bool = False):
    """A function `(prompts, keys) -> rows` (as `generate_texts`) for callers that generate in
    rounds, each depending on the last (self-instruct): the model loads once, in this process
    or, with `use_ray`, in `options.concurrency` long-lived `Generator` actors (each round's
    prompts split among them) placed with `options.num_cpus` / `gpus_per_actor`. Rows are the
    same either way (a row's tokens depend only on its prompt and key)."""
    if not use_ray:
        from training.sources import load_for_inference

        model, tokenizer = load_for_inference(model_path, options.device)

        def local(prompts: Sequence[Any], keys: Sequence[Any]) -> list[dict[str, Any]]:
            return generate_texts(model, tokenizer, prompts, options, keys)

        return local

    import pyarrow as pa

    from llmforge.common.ray_session import init_ray

    init_ray()
    import ray

    actor = ray.remote(Generator).options(num_cpus=options.num_cpus, num_gpus=options.gpus_per_actor)
    actors = [actor.remote(str(model_path), options) for _ in range(options.concurrency)]

    def remote(prompts: Sequence[Any], keys: Sequence[Any]) -> list[dict[str, Any]]:
        if not prompts:
            return []
        n = -(-len(prompts) // len(actors))
        calls = [a.__call__.remote(pa.table({"prompt": list(prompts[i:i + n]), KEY_COLUMN: list(keys[i:i + n])}))
                 for a, i in zip(actors, range(0, len(prompts), n))]
        return [{name: row[name] for name in OUTPUT_COLUMNS} for t in ray.get(calls) for row in t.to_pylist()]

    return remote


# ------------------------------------------------------------------------------ a prompt file


def read_prompts(path: str, options: GenerateOptions | None = None) -> tuple["pa.Table", str]:
    """The prompt file as a table (one column per field, `prompt_index` added: the prompt's
    position) and the file's sha256. Every problem is a UserError naming the file and line,
    before any model work. A file mixing string and message-list prompts gets every prompt as
    messages (one Arrow column holds one type), `options.system` applied to the strings."""
    import pyarrow as pa

    from llmforge.common import fs
    from llmforge.common.rows import iter_rows
    from training.chat import as_messages, check_messages

    options = options or GenerateOptions()

    filesystem, local = fs.resolve(path)
    if not fs.exists(filesystem, local):
        raise UserError(f"--data {path}: no such file")
    rows: list[dict[str, Any]] = []
    reserved = {KEY_COLUMN, *OUTPUT_COLUMNS}
    for _, where, row in iter_rows(path):
        if not isinstance(row, dict):
            raise UserError(f"{where}: expected a JSON object per line, got {type(row).__name__}")
        if "prompt" not in row:
            raise UserError(f"{where}: no 'prompt' field (a string, or a list of {{role, content}} messages)")
        prompt = row["prompt"]
        if isinstance(prompt, list):
            if not options.chat_template:
                raise UserError(f"{where}: a message-list prompt needs the chat template (drop --no-chat-template)")
            check_messages(prompt, where)
        elif not isinstance(prompt, str):
            raise UserError(f"{where}: 'prompt' must be a string or a list of messages, got {type(prompt).__name__}")
        clash = sorted(reserved & row.keys())
        if clash:
            raise UserError(f"{where}: field {clash[0]!r} is an output column of generation; rename it")
        rows.append({KEY_COLUMN: len(rows), **row})
    if not rows:
        raise UserError(f"--data {path}: no prompts")
    if {isinstance(r["prompt"], str) for r in rows} == {True, False}:
        rows = [{**r, "prompt": as_messages(r["prompt"], options.system)} for r in rows]
    names = list(dict.fromkeys(k for r in rows for k in r))
    columns = {}
    for name in names:
        try:
            columns[name] = pa.array([r.get(name) for r in rows])
        except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
            raise UserError(f"--data {path}: field {name!r} has values of different types across lines ({err})") \
                from None
    with filesystem.open_input_stream(local) as f:  # the file's identity for the fingerprint
        sha = hashlib.sha256(f.read()).hexdigest()
    return pa.table(columns), sha


def generating_model(model_path: str):
    """`--model` as a ModelSource that can generate: a causal LM with its tokenizer."""
    from training.sources import resolve_model

    source = resolve_model(model_path)
    if source.kind != "causal_lm":
        raise UserError(f"--model {model_path}: a {source.kind} model cannot generate text")
    if source.tokenizer_path is None:
        raise UserError(f"--model {model_path}: no tokenizer.json next to the weights")
    return source


def claim_output(output_dir: str, made_from: dict[str, Any], overwrite: bool, holds: str):
    """(Step, its finished record or None) for an output made from `made_from`: a finished one
    from the same inputs is returned for reuse; one from others is refused (ConflictError naming
    `holds`, what it holds) unless `overwrite`, which clears its marker."""
    from llmforge.common.resume import ConflictError, Step, fingerprint

    step = Step(output_dir, marker=RESULTS_FILE, fingerprint=fingerprint(made_from))
    try:
        return step, step.refuse_other()
    except ConflictError as err:
        if not overwrite:
            raise ConflictError(f"--output {output_dir} holds {holds} ({RESULTS_FILE} fingerprint "
                                f"{err.found['fingerprint']}, this run {err.expected['fingerprint']}); pass "
                                f"--overwrite to replace it", err.found, err.expected) from None
        step.filesystem.delete_file(step.marker_path)
        return step, None


def run_generate(model_path: str, prompts_path: str, output_dir: str, options: GenerateOptions | None = None,
                 overwrite: bool = False) -> dict[str, Any]:
    """Generate for every prompt of a JSONL file into `output_dir`:
    `generations/part-*.parquet` (rows in file order) and `results.json` (written last).

    A finished output made from the same model weights, tokenizer, prompt file and
    output-relevant options (`OUTPUT_OPTIONS`) is reused; one made from others is refused
    (ConflictError) unless `overwrite`. Returns results.json's record."""
    import pyarrow.parquet as pq

    from llmforge.common import fs
    from llmforge.common.ray_session import init_ray

    options = options or GenerateOptions()
    # Everything the user can get wrong is checked before Ray or the weights are touched.
    table, prompts_sha = read_prompts(prompts_path, options)
    source = generating_model(model_path)
    made_from = {"weights": source.weights_hash(), "tokenizer": source.tokenizer_sha256(), "prompts": prompts_sha,
                 "options": options.model_dump(mode="json", include=set(OUTPUT_OPTIONS))}
    step, finished = claim_output(output_dir, made_from, overwrite, "generations made from another model, "
                                  "prompt file or options")
    filesystem, root = step.filesystem, step.path
    if finished is not None:
        return {**finished, "reused": True}
    # Unfinished or replaced: only what this function writes is removed.
    if fs.exists(filesystem, step.marker_path):
        filesystem.delete_file(step.marker_path)
    out_dir = fs.join(root, GENERATIONS_DIR)
    fs.delete_dir(filesystem, out_dir)
    filesystem.create_dir(out_dir, recursive=True)

    init_ray()
    import ray.data

    window = options.batch_size * options.sort_window
    started = time.perf_counter()
    with preserve_order():
        ds = ray.data.from_arrow([table.slice(i, window) for i in range(0, table.num_rows, window)])
    result = generate_dataset(str(source.path), ds, options)
    reasons: Counter = Counter()
    totals = Counter()
    files: list[str] = []
    writer = None
    written = 0
    try:
        for batch in result.iter_batches(batch_format="pyarrow", batch_size=None):
            if writer is None or written >= ROWS_PER_FILE:
                if writer is not None:
                    writer.close()
                files.append(f"{GENERATIONS_DIR}/part-{len(files):05d}.parquet")
                writer = pq.ParquetWriter(fs.join(root, files[-1]), batch.schema, filesystem=filesystem)
                written = 0
            writer.write_table(batch)
            written += batch.num_rows
            reasons.update(batch.column("finish_reason").to_pylist())
            totals["rows"] += batch.num_rows
            totals["prompt_tokens"] += sum(batch.column("prompt_tokens").to_pylist())
            totals["completion_tokens"] += sum(batch.column("completion_tokens").to_pylist())
    finally:
        if writer is not None:
            writer.close()
    seconds = time.perf_counter() - started
    if totals["rows"] != table.num_rows:
        raise RuntimeError(f"generation returned {totals['rows']} rows for {table.num_rows} prompts")
    record = step.finish({
        "model": str(model_path), "checkpoint": str(source.path), "format": source.format, "prompts": str(prompts_path),
        "made_from": made_from, "options": options.model_dump(mode="json"), "files": files,
        "rows": totals["rows"], "finish_reasons": dict(sorted(reasons.items())),
        "prompt_tokens": totals["prompt_tokens"], "completion_tokens": totals["completion_tokens"],
        "seconds": round(seconds, 3),
        "completion_tokens_per_second": round(totals["completion_tokens"] / seconds, 2) if seconds > 0 else None,
    })
    return {**record, "reused": False}


def summary(results: dict[str, Any], output_dir: str) -> str:
    """A few lines for people: what was made (or reused), finish reasons, speed."""
    reasons = ", ".join(f"{k} {v:,}" for k, v in results["finish_reasons"].items())
    head = ("reused finished generations" if results.get("reused") else "generated") + \
        f" for {results['rows']:,} prompts -> {output_dir}"
    speed = f"{results['completion_tokens']:,} completion tokens"
    if not results.get("reused"):
        speed += f" in {results['seconds']:.1f}s ({results['completion_tokens_per_second']:,.1f} tokens/s)"
    return f"{head}\n  finish: {reasons}\n  {speed}"
