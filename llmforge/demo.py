"""The demo: sample WARCs with planted ground truth -> data job -> token shards -> pretraining ->
Hugging Face export -> a sample (`llmforge demo`, `bash infra/demo.sh`).

Its two configs ship inside the package (`llmforge/configs/`), so an installed llmforge runs
it without the source tree. Imports stay stdlib at the top: the packages load when it runs.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Callable

DATA_CONFIG = "data_demo.yaml"
TRAIN_CONFIG = "pretrain_demo.yaml"
SAMPLE_PROMPT = "The city"


def packaged_config(name: str) -> Path:
    """A config file shipped in the package (`llmforge/configs/<name>`)."""
    return Path(str(resources.files("llmforge") / "configs" / name))


def run_demo(workdir: str | Path = "runs/demo", files: int = 4, docs: int = 400,
             data_config: str | Path | None = None, train_config: str | Path | None = None,
             skip_train: bool = False, log: Callable[[str], None] = print) -> None:
    """Write `files` sample WARCs of `docs` article pages each under `workdir`, run the data job
    on them (`data_config`, default the packaged data_demo.yaml) and, unless `skip_train`,
    pretrain on its shards (`train_config`, default pretrain_demo.yaml), export and sample."""
    from dataproc.config import DataJobConfig
    from dataproc.pipeline import run_data_job
    from dataproc.synthetic.ground_truth import GroundTruth
    from dataproc.synthetic.sample_warc import write_sample_warc
    from llmforge.common.config import load_config

    work = Path(workdir).resolve()
    warcs = work / "warc"
    warcs.mkdir(parents=True, exist_ok=True)
    blocked: set[str] = set()
    paths = []
    for i in range(files):
        path = warcs / f"sample-{i:02d}.warc.gz"
        truth_path = warcs / f"sample-{i:02d}.truth.json"
        if not truth_path.exists():
            write_sample_warc(path, n_docs=docs, seed=i).to_json(truth_path)
        paths.append(str(path))
        blocked.update(GroundTruth.from_json(truth_path).blocked_domains)
    # The planted spam domain is not on any public list: block it the way a user adds a list.
    blocklist = work / "blocklist.txt"
    blocklist.write_text("".join(f"{d}\n" for d in sorted(blocked)))
    config = Path(data_config) if data_config is not None else packaged_config(DATA_CONFIG)
    cfg = load_config(DataJobConfig, config, {
        "input.paths": paths,
        "output.path": str(work / "output"),
        "stages.url_filter.blocklist_paths": [str(blocklist)],
    })
    log(f"demo: {files} sample WARC files in {warcs}, config {config}")
    run_data_job(cfg)
    if skip_train:
        return

    from training.checkpoint import latest_checkpoint
    from training.config import PretrainConfig
    from training.export import export_hf
    from training.generate import SamplingParams, complete_from_checkpoint
    from training.trainer import run_dir, run_pretrain

    shards = work / "output" / "shards"
    config = Path(train_config) if train_config is not None else packaged_config(TRAIN_CONFIG)
    train_cfg = load_config(PretrainConfig, config, {"data.shards": str(shards), "run.storage_path": str(work / "train")})
    log(f"demo: pretraining on {shards}, config {config}")
    run_pretrain(train_cfg)
    hf = work / "hf"
    ckpt = latest_checkpoint(run_dir(train_cfg))
    export_hf(ckpt, hf, overwrite=True)
    log(f"demo: exported the trained model to {hf} (transformers.AutoModelForCausalLM.from_pretrained)")
    log(f"demo: a sample (llmforge train sample {run_dir(train_cfg)} --prompt '{SAMPLE_PROMPT}'):")
    text, = complete_from_checkpoint(ckpt, [SAMPLE_PROMPT], SamplingParams(max_new_tokens=40, temperature=0.8))
    log(f"--- {SAMPLE_PROMPT!r}\n{SAMPLE_PROMPT}{text}")
