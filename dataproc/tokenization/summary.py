"""`llmforge data inspect`: a human-readable summary of a shard directory with decoded samples."""
from __future__ import annotations

from dataproc.tokenization.encode import SKIP_EMPTY, SKIP_TOO_SHORT
from dataproc.tokenization.tokenizer import load_tokenizer
from llmforge import shard_format


def inspect_shards(shard_dir: str, tokenizer_path: str | None = None, samples: int = 3) -> str:
    """Summary of a shard directory (validated), plus `samples` documents spread over it,
    decoded when `tokenizer_path` is given and matches, else shown as ids."""
    reader = shard_format.open_shards(shard_dir)
    m = reader.manifest
    n_docs, n_tokens = reader.num_documents, reader.num_tokens
    lines = [
        f"token shards: {shard_dir}",
        f"  format {m['format']} v{m['format_version']}, dtype {m['dtype']}, vocab_size {m['vocab_size']}",
        f"  tokenizer sha256 {m['tokenizer_sha256']}",
        f"  config sha256    {m['config_sha256']}",
        f"  eos id {m['eos_token_id']}, bos id {m['bos_token_id']}, "
        f"document boundary id {m['document_boundary_token_id']}",
        f"  {n_docs:,} documents, {n_tokens:,} tokens in {len(reader.shards)} shards"
        + (f" ({n_tokens / n_docs:,.1f} tokens/document)" if n_docs else ""),
    ]
    counts = m.get("counts")
    if counts:
        lines.append(f"  input {counts['input_documents']:,} documents; skipped {counts[SKIP_EMPTY]:,} empty, "
                     f"{counts[SKIP_TOO_SHORT]:,} too short; truncated {counts['truncated_documents']:,} "
                     f"({counts['truncated_tokens']:,} tokens cut)")
    lines.append("shards:")
    width = max([len(s["name"]) for s in m["shards"]] + [5])
    lines.append(f"  {'name':<{width}} {'documents':>12} {'tokens':>15}  sha256")
    for s in m["shards"]:
        lines.append(f"  {s['name']:<{width}} {s['documents']:>12,} {s['tokens']:>15,}  {s['sha256'][:16]}")
    lines.append("domains:")
    width = max([len(d) for d in m["domains"]] + [6])
    lines.append(f"  {'domain':<{width}} {'documents':>12} {'tokens':>15} {'share':>7}")
    for d, c in sorted(m["domains"].items(), key=lambda kv: (-kv[1]["tokens"], kv[0])):
        share = c["tokens"] / n_tokens if n_tokens else 0.0
        lines.append(f"  {d:<{width}} {c['documents']:>12,} {c['tokens']:>15,} {share:>7.1%}")

    if samples > 0 and n_docs:
        tokenizer = None
        if tokenizer_path:
            try:
                shard_format.check_tokenizer_matches(m, tokenizer_path)
                tokenizer = load_tokenizer(tokenizer_path)[0]
            except ValueError as err:
                lines.append(f"not decoding samples: {err}")
        lines.append("samples:" if tokenizer else "samples (token ids; pass a tokenizer to decode):")
        picks = sorted({i * n_docs // samples for i in range(samples)})
        for i in picks:
            ids = reader.document(i)
            if tokenizer:
                text = tokenizer.decode(ids.tolist(), skip_special_tokens=False)
                shown = repr(text[:200]) + (" ..." if len(text) > 200 else "")
            else:
                shown = " ".join(map(str, ids[:40].tolist())) + (" ..." if len(ids) > 40 else "")
            lines.append(f"  [document {i}, {len(ids)} tokens] {shown}")
    return "\n".join(lines)
