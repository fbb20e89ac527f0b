"""Issue 38's instances, run from outside as a user would: each case builds its files in a scratch
folder, runs the command in a subprocess with a time limit, and reports what happened (one line and
exit 2; a traceback; a hang; a user's file changed). Run it at two commits to get a before/after
table:

    python bench/hostile_four.py                       # this checkout
    PYTHONPATH=/path/to/old/checkout python bench/hostile_four.py   # another commit's package
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # hub_cache: tiny checkpoints without a network
LIMIT_S = 30
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
CLI = [sys.executable, "-c", "import sys; from successor_lens.cli.main import main; sys.exit(main(sys.argv[1:]))"]
ABLATE = {"name": "a", "edits": [{"kind": "scale_head", "layer": 0, "head": 1, "factor": 2.0}]}


def cli(*args: str, python: list[str] = CLI) -> tuple[str, str]:
    """(outcome, the message's first 90 characters) of one command."""
    try:
        done = subprocess.run([*python, *args], capture_output=True, text=True, timeout=LIMIT_S, env=ENV,
                              cwd=tempfile.gettempdir())  # not the checkout: PYTHONPATH picks the package
    except subprocess.TimeoutExpired:
        return f"hang (killed after {LIMIT_S} s)", ""
    err = [line for line in done.stderr.splitlines() if line.strip() and "Warning" not in line and not line.startswith("  ")]
    if "Traceback" in done.stderr:
        return f"traceback, exit {done.returncode}", (err[-1] if err else "")[:90]
    lines = [line for line in err if line.startswith("successor-lens")]
    if done.returncode == 2 and len(lines) == 1:
        return "one line, exit 2", lines[0].split("error: ", 1)[-1][:90]
    return f"exit {done.returncode}", (lines or err or [""])[-1][:90]


def checkpoint(folder: Path) -> Path:
    from hub_cache import tiny_gpt2

    model, tok = tiny_gpt2()
    model.save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    return folder


def rewrite_header(path: Path, change) -> None:
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    blob = json.dumps(change(json.loads(raw[8 : 8 + n]))).encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + raw[8 + n :])


def first_two(header: dict) -> tuple[str, str]:
    a, b = [k for k in header if k != "__metadata__"][:2]
    return a, b


def reexport(w: Path, ckpt: Path) -> tuple[str, str]:
    spec = w / "spec.json"
    spec.write_text(json.dumps(ABLATE))
    args = ("edit", "--model", str(ckpt), "--spec", str(spec), "--out", str(w / "run"), "--export-model", str(w / "exp"), "--contexts", "4", "--ctx", "32")
    cli(*args)
    config = w / "exp" / "config.json"
    config.write_text(config.read_text().replace("{", '{"a user\'s edit": 1,', 1))
    edited = config.read_bytes()
    spec.write_text(json.dumps({**ABLATE, "edits": [{**ABLATE["edits"][0], "factor": 3.0}]}))
    outcome, message = cli(*args)
    return ("user's edited config.json overwritten" if config.read_bytes() != edited else outcome), message


def linked_edits(w: Path, ckpt: Path) -> tuple[str, str]:
    (w / "users").mkdir()
    (w / "users" / "a.json").write_text("the user's file\n")
    cli("heads", "--model", str(ckpt), "--out", str(w / "run"))
    (w / "run" / "edits").symlink_to(w / "users", target_is_directory=True)
    (w / "spec.json").write_text(json.dumps(ABLATE))
    outcome, message = cli("edit", "--model", str(ckpt), "--spec", str(w / "spec.json"), "--out", str(w / "run"), "--contexts", "4", "--ctx", "32")
    changed = (w / "users" / "a.json").read_text() != "the user's file\n" or len(list((w / "users").iterdir())) != 1
    return ("written through the link into the user's folder" if changed else outcome), message


def changed_tokenizer(w: Path, ckpt: Path) -> tuple[str, str]:
    cli("heads", "--model", str(ckpt), "--out", str(w / "run"))
    doc = json.loads((ckpt / "tokenizer.json").read_text())
    vocab = doc["model"]["vocab"]
    vocab["Ġ3"], vocab["Ġ4"] = vocab["Ġ4"], vocab["Ġ3"]  # two numbers' ids swapped: another tokenizer, the same weights
    (ckpt / "tokenizer.json").write_text(json.dumps(doc))
    outcome, message = cli("heads", "--model", str(ckpt), "--out", str(w / "run"))
    return ("exit 0: the old run folder reused as cached" if outcome == "exit 0" else outcome), message


def lean(change):
    def case(w: Path, ckpt: Path) -> tuple[str, str]:
        change(ckpt)
        return cli("heads", "--lean", "--model", str(ckpt), "--out", str(w / "run"))
    return case


def lying_length(ckpt: Path) -> None:
    path = ckpt / "model.safetensors"
    raw = path.read_bytes()
    path.write_bytes(struct.pack("<Q", len(raw) * 4) + raw[8:])


def offsets_past_end(ckpt: Path) -> None:
    def change(h):
        _, b = first_two(h)
        h[b]["data_offsets"] = [h[b]["data_offsets"][0], h[b]["data_offsets"][1] + 10**9]
        return h
    rewrite_header(ckpt / "model.safetensors", change)


def unknown_dtype(ckpt: Path) -> None:
    def change(h):
        h[first_two(h)[0]]["dtype"] = "F99"
        return h
    rewrite_header(ckpt / "model.safetensors", change)


def deep_index(ckpt: Path) -> None:
    (ckpt / "model.safetensors.index.json").write_text("[" * 200_000 + "]" * 200_000)


def huge_config(ckpt: Path) -> None:
    doc = json.loads((ckpt / "config.json").read_text())
    (ckpt / "config.json").write_text(json.dumps({**doc, "n_layer": 10**9}))


def dev_zero(w: Path, ckpt: Path) -> tuple[str, str]:
    (ckpt / "model.safetensors").unlink()
    (ckpt / "model.safetensors").symlink_to("/dev/zero")
    return cli("heads", "--model", str(ckpt), "--out", str(w / "run"))


def k_above(w: Path, ckpt: Path) -> tuple[str, str]:
    from successor_lens.sae_train.dictionary import save_dictionary
    from successor_lens.sae_train.train_config import TrainConfig
    from successor_lens.sae_train.trainer import make_sae

    sae = make_sae(TrainConfig(d_sae=16, k=2, steps=1, batch_size=8), 256, {"model_name": "planted-gpt2", "hook_name": "blocks.0.hook_mlp_out"})
    save_dictionary(sae, w / "sae", {"note": "bench"})
    cfg = json.loads((w / "sae" / "cfg.json").read_text())
    (w / "sae" / "cfg.json").write_text(json.dumps({**cfg, "k": 99}))
    return cli("atlas", "--sae", str(w / "sae"), "--model", "planted-gpt2", "--corpus", "succession-lists", "--out", str(w / "run"))


def enospc(w: Path, ckpt: Path) -> tuple[str, str]:
    spec = w / "spec.json"
    spec.write_text(json.dumps(ABLATE))
    args = ("edit", "--model", str(ckpt), "--spec", str(spec), "--out", str(w / "run"), "--export-model", str(w / "exp"), "--contexts", "4", "--ctx", "32")
    cli(*args)
    full = [sys.executable, "-c", "import sys, transformers; from safetensors import SafetensorError\n"
            "def full(*a, **k): raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, "
            "message: \"No space left on device\" })')\n"
            "transformers.PreTrainedModel.save_pretrained = full\n"
            "from successor_lens.cli.main import main; sys.exit(main(sys.argv[1:]))"]
    spec.write_text(json.dumps({**ABLATE, "edits": [{**ABLATE["edits"][0], "factor": 3.0}]}))
    outcome, message = cli(*args, python=full)
    record = (w / "exp" / "successor-lens-export.json").is_file()
    return (outcome + ("" if record else "; the last export's record deleted")), message


CASES = {
    "re-export over a user-edited file": reexport,
    "edits/ a link to a user's folder": linked_edits,
    "tokenizer changed, same --out": changed_tokenizer,
    "lean: header length past the end": lean(lying_length),
    "lean: offsets past the end": lean(offsets_past_end),
    "lean: unknown dtype": lean(unknown_dtype),
    "lean: index nested 200,000 deep": lean(deep_index),
    "lean: config of 10**9 layers": lean(huge_config),
    "weights linked to /dev/zero": dev_zero,
    "dictionary k 99 > d_sae 16": k_above,
    "ENOSPC during export": enospc,
}


def main() -> None:
    import successor_lens

    print(f"package: {Path(successor_lens.__file__).parent}")
    print("| case | outcome | message |\n|---|---|---|")
    for name, case in CASES.items():
        with tempfile.TemporaryDirectory() as tmp:
            w = Path(tmp)
            start = time.perf_counter()
            outcome, message = case(w, checkpoint(w / "ckpt"))
            print(f"| {name} | {outcome} ({time.perf_counter() - start:.0f} s) | {message.replace('|', '/')} |", flush=True)


if __name__ == "__main__":
    main()
