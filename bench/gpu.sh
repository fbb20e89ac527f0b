#!/usr/bin/env bash
# The GPU check, in one script for a machine with CUDA (under 8 minutes): the CUDA tests, then the
# trainer bench (ours vs sae-lens's SAETrainer) in bf16 autocast and in fp32, activations/s and
# peak memory; prints one table at the end. Run from the repository root with the venv active:
#     bash bench/gpu.sh [STEPS]
set -uo pipefail
cd "$(dirname "$0")/.."
STEPS="${1:-50}"
export WANDB_MODE=disabled HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
if ! python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "bench/gpu.sh: torch sees no CUDA device: run it on a GPU machine (python -c 'import torch; print(torch.cuda.is_available())')" >&2
  exit 2
fi
LOG="$(mktemp -d)"
python -c "import torch; print(f'device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}')" | tee "$LOG/device"

timeout 240 python -m pytest -q -p no:cacheprovider tests/test_sae_train.py -k cuda > "$LOG/tests" 2>&1
TESTS_RC=$?
tail -1 "$LOG/tests"
for P in bf16 fp32; do
  timeout 120 python bench/train.py --device cuda --precision "$P" --steps "$STEPS" > "$LOG/train-$P" 2>&1 || echo "bench/train.py --precision $P failed: see $LOG/train-$P" >&2
done

python - "$LOG" "$TESTS_RC" <<'PY'
import re, sys
from pathlib import Path
log, rc = Path(sys.argv[1]), int(sys.argv[2])
print()
print(f"{'precision':<10}{'trainer':<34}{'act/s':>10}{'peak MiB':>10}{'final FVU':>11}")
for p in ("bf16", "fp32"):
    text = (log / f"train-{p}").read_text() if (log / f"train-{p}").exists() else ""
    rows = [l for l in text.splitlines() if l.startswith(("successor-lens (", "sae-lens SAETrainer"))]
    if not rows:
        print(f"{p:<10}{'(bench failed, see ' + str(log / ('train-' + p)) + ')':<34}")
    for line in rows:
        name, numbers = line[:34].strip(), line[34:].split()
        act, fvu, mem = numbers[0], numbers[1], numbers[2]
        print(f"{p:<10}{name:<34}{act:>10}{mem:>10}{fvu:>11}")
    limit = [l for l in text.splitlines() if "of the limit" in l]
    if limit:
        print(f"{'':<10}{limit[0].strip()}")
tests = (log / "tests").read_text().strip().splitlines()
print(f"CUDA tests (tests/test_sae_train.py -k cuda): {tests[-1] if tests else 'no output'} (exit {rc})")
PY
