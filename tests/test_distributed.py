"""Data-parallel training on torch.distributed (gloo, CPU): two processes equal one process with the
same global batch, for the sparse TopK path with AuxK and for sae-lens's own L1 path; `train
--nproc 2` through torchrun; a rank killed mid-run stops the job with a clear message and
`--resume` completes it to the same dictionary."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from successor_lens.sae_train.batches import ShuffledBatches
from successor_lens.sae_train.distributed import Dist
from successor_lens.sae_train.shards import ShardedActivations
from successor_lens.sae_train.train_config import TrainConfig
from successor_lens.sae_train.trainer import make_sae, train

pytestmark = pytest.mark.slow  # torchrun with several processes

CONFIGS = {
    "topk+auxk": TrainConfig(arch="topk", d_sae=64, k=4, steps=30, batch_size=64, dead_after_steps=2, lr=3e-3, seed=3),
    "standard": TrainConfig(arch="standard", d_sae=48, steps=25, batch_size=64, l1_coefficient=0.5, lr=3e-3, seed=1),
}


def data() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randn(700, 24, generator=g) @ torch.randn(24, 24, generator=g) + 3.0  # an offset mean, as real activations have


def _rank(rank: int, world: int, port: int, name: str, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist = Dist.from_env("cpu")
    cfg = CONFIGS[name]
    sae = make_sae(cfg, 24)
    train(cfg, sae, ShuffledBatches(data(), cfg.batch_size, cfg.seed), progress=False, dist=dist)
    if dist.main:
        save_file({k: v.contiguous() for k, v in sae.state_dict().items()}, out)
    torch.distributed.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("name", list(CONFIGS))
def test_two_gloo_processes_equal_one_process_with_the_same_global_batch(name, tmp_path):
    cfg = CONFIGS[name]
    one = make_sae(cfg, 24)
    train(cfg, one, ShuffledBatches(data(), cfg.batch_size, cfg.seed), progress=False)
    out = tmp_path / "two.safetensors"
    torch.multiprocessing.spawn(_rank, args=(2, free_port(), name, str(out)), nprocs=2)
    two = load_file(out)
    fresh = make_sae(cfg, 24).state_dict()
    for key, value in one.state_dict().items():
        assert (value - fresh[key]).abs().max() > 1e-3 or key == "threshold"  # it trained
        assert torch.allclose(two[key], value, atol=1e-5, rtol=0), (key, (two[key] - value).abs().max())


def test_a_batch_that_does_not_split_over_the_ranks_is_refused():
    with pytest.raises(Exception, match="does not split into 3 equal parts"):
        Dist(0, 3).check_batch(64)


# --- the CLI under torchrun ------------------------------------------------------------------------

ARGS = ["train", "--model", "planted-gpt2", "--d-sae", "256", "--k", "8", "--batch-size", "64", "--checkpoint-every", "10"]
CODE = "import sys; from successor_lens.cli.main import main; sys.exit(main(sys.argv[1:]))"


def cli(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CODE, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def weights(out: Path) -> dict[str, torch.Tensor]:
    (folder,) = [p for p in out.glob("sae-*") if p.is_dir()]
    return load_file(folder / "sae_weights.safetensors")


def rank_pids(parent: int, rank: int) -> list[int]:
    """Descendants of `parent` whose environment says RANK=`rank` (torchrun's workers)."""
    found = []
    for pid in map(int, filter(str.isdigit, os.listdir("/proc"))):
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in env and _descends(pid, parent):
            found.append(pid)
    return found


def _descends(pid: int, parent: int) -> bool:
    while pid > 1:
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            return False
        if pid == parent:
            return True
    return False


def test_train_nproc_2_equals_one_process_and_a_killed_rank_resumes_to_the_same_dictionary(tmp_path):
    steps = ["--steps", "400"]
    one = cli(*ARGS, *steps, "--out", str(tmp_path / "one"))
    assert one.wait(600) == 0, one.stderr.read()[-3000:]
    reference = weights(tmp_path / "one")

    two = cli(*ARGS, "--steps", "40", "--nproc", "2", "--out", str(tmp_path / "two"))
    out, err = two.communicate(timeout=600)
    assert two.returncode == 0, err[-3000:]
    assert "launching 2 processes: torchrun" in out
    short = cli(*ARGS, "--steps", "40", "--out", str(tmp_path / "short"))
    assert short.wait(600) == 0
    for key, value in weights(tmp_path / "short").items():
        assert torch.allclose(weights(tmp_path / "two")[key], value, atol=1e-5, rtol=0), key

    killed = cli(*ARGS, *steps, "--nproc", "2", "--out", str(tmp_path / "killed"))
    checkpoints = tmp_path / "killed" / "checkpoints"
    end = time.monotonic() + 300
    while not list(checkpoints.rglob("ckpt_*.safetensors")):
        assert killed.poll() is None, killed.communicate()
        assert time.monotonic() < end, "no checkpoint appeared"
        time.sleep(0.01)
    (victim,) = rank_pids(killed.pid, 1)
    os.kill(victim, signal.SIGKILL)
    out, err = killed.communicate(timeout=300)
    assert killed.returncode != 0
    assert "a training process failed" in err and "rerun the same command with --resume" in err
    assert not list((tmp_path / "killed").glob("sae-*"))  # no dictionary from a broken job
    resumed = cli(*ARGS, *steps, "--nproc", "2", "--resume", "--out", str(tmp_path / "killed"))
    out, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err[-3000:]
    assert "resumed from step" in out
    for key, value in weights(tmp_path / "killed").items():
        assert torch.allclose(value, reference[key], atol=1e-5, rtol=0), key


# --- the harvest split across ranks ------------------------------------------------------------------


def _harvest_rank(rank: int, world: int, port: int, corpus: str, out: str) -> None:
    from successor_lens.models.loading import load_model
    from successor_lens.sae_train.harvest import harvest

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist = Dist.from_env("cpu")
    harvest(load_model("planted-gpt2"), ["mlp0", "blocks.1.hook_resid_post"], "corpus", Path(out), corpus=corpus, dist=dist)
    torch.distributed.destroy_process_group()


def test_a_corpus_harvest_split_across_two_ranks_equals_one_process(tmp_path):
    from successor_lens.models.loading import load_model
    from successor_lens.sae_train.harvest import corpus_batches, harvest

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(f"Item {i}: on day {i % 7} we counted {i}, {i + 1} and {i + 2}, then went on." for i in range(400)) + "\n")
    model = load_model("planted-gpt2")
    one = harvest(model, ["mlp0", "blocks.1.hook_resid_post"], "corpus", tmp_path / "one", corpus=str(corpus))
    from successor_lens.corpus import stream_texts

    assert sum(1 for _ in corpus_batches(model, stream_texts(str(corpus)), ["mlp0"])) >= 4  # several batches for each rank
    torch.multiprocessing.spawn(_harvest_rank, args=(2, free_port(), str(corpus), str(tmp_path / "two")), nprocs=2)
    two = {site: ShardedActivations(tmp_path / "two" / "activations" / f"{site}-corpus") for site in one}
    for site, acts in one.items():
        assert two[site].meta["data_sha256"] == acts.meta["data_sha256"] and two[site].meta["n_rows"] == acts.meta["n_rows"], site
        assert torch.equal(torch.cat(list(two[site].chunks())), torch.cat(list(acts.chunks()))), site
    assert not [p for p in (tmp_path / "two" / "activations").iterdir() if p.name.startswith(".")]  # no staging left
