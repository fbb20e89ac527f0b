"""Error rates of every headline verdict: false positives on random-weight models, power on a graded plant.

1. False-positive rate: the whole run (every stage but the atlas, default settings) on `--seeds`
   model seeds of each random-weight control (`random-gpt2`: GPT-2's vocabulary; `random-smollm2-135m`:
   SmolLM2's architecture and digit-splitting tokenizer). No verdict should come out "above" more
   often than alpha; each count is printed with its Clopper-Pearson 95% interval.
2. Power: the same run on the planted model with its class amplitude scaled by S among item noise
   of norm 1 (`planted.build_control(strength=S, noise=1)`), on GPT-2's tokenizer and on the
   digit-splitting one (`planted-digits`), for each S of `--strengths`. Each verdict's flip point
   (the smallest S from which it is above at every larger S) is printed beside a simple reference
   test's: nearest class mean on MLP0, fit on the other tasks, per held-out task, pooled, against
   chance (one-sided binomial at alpha), on the items whose class is not in their token.

It runs for about an hour on 2 cores with the defaults (a bench, not a test; tests/test_calibration.py
keeps a fast version). `--out FILE` writes the table as JSON too.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")

import torch  # noqa: E402
from scipy import stats  # noqa: E402

from successor_lens.nulls import ALPHA  # noqa: E402

VERDICTS = ("best_score", "ablation_loss_rise", "classes_found", "classes_found_raw", "class_latents", "modal_coverage",
            "probe_accuracy", "probe_feature_cosine", "arithmetic", "overshoot")
STAGES = ("heads", "activations", "saes", "mine", "incontext", "probes")


LINES: dict[str, list[str]] = {}
"""Each run's summary lines, by run name (written with --out)."""


def verdicts(model, folder: Path, seeds: int = 3) -> dict[str, bool]:
    """Every stage of `run` but the atlas, with the default settings; the summary's verdicts (its
    lines are kept in `LINES`)."""
    from successor_lens.runner.run_config import RunConfig
    from successor_lens.runner.stages import StageBodies
    from successor_lens.sae_train.runtime import Runtime

    bodies = StageBodies(model, folder, RunConfig(seeds=seeds), Runtime("cpu"), progress=False)
    for stage in STAGES:
        getattr(bodies, stage)()
    summary = bodies.summary()
    LINES[folder.name] = summary["lines"]
    return dict(summary["above_null"])


def reference_test(model) -> bool:
    """Nearest class mean (cosine) on MLP0 over the items whose class is not in their token, each
    non-number task classified from the other tasks' class means; pooled accuracy vs chance 0.1."""
    from successor_lens.features.class_test import unsplit_rows
    from successor_lens.features.mine_run import item_acts, item_table

    table = item_table(model)
    rows = unsplit_rows(table)
    acts = item_acts(model, table, "mlp0")[rows]
    acts = acts - acts.mean(0)
    residues = table.residues[rows]
    tasks = [table.base_tasks[int(r)] for r in rows]
    hits = n = 0
    for task in sorted(set(tasks) - {"numbers"}):
        test = torch.tensor([t == task for t in tasks])
        means = torch.stack([acts[~test & (residues == c)].mean(0) if (~test & (residues == c)).any() else torch.zeros(acts.shape[1])
                             for c in range(10)])
        sims = torch.nn.functional.normalize(acts[test], dim=-1) @ torch.nn.functional.normalize(means, dim=-1).T
        hits += int((sims.argmax(-1) == residues[test]).sum())
        n += int(test.sum())
    return bool(stats.binomtest(hits, n, 0.1, alternative="greater").pvalue <= ALPHA)


def false_positives(name: str, seeds: int, work: Path) -> dict[str, list[bool]]:
    from successor_lens.models.controls import seeded
    from successor_lens.models.loading import load_model

    out: dict[str, list[bool]] = {v: [] for v in VERDICTS}
    for seed in range(1, seeds + 1):
        start = time.perf_counter()
        model = load_model(seeded(name, seed))
        above = verdicts(model, work / f"{name}-{seed}")
        for v in VERDICTS:
            out[v].append(bool(above.get(v)))
        names = ", ".join(v for v in VERDICTS if above.get(v)) or "none"
        print(f"  {name} seed {seed}: {sum(above.values())} of {len(above)} above ({names}) ({time.perf_counter() - start:.0f} s)", flush=True)
    return out


def power(digits: bool, strengths: list[float], work: Path) -> dict[float, dict[str, bool]]:
    from successor_lens.models.planted import build_control

    out = {}
    for s in strengths:
        start = time.perf_counter()
        model = build_control("planted-digits" if digits else "planted-gpt2", plant=True, digits=digits, strength=s, noise=1.0)
        out[s] = {**verdicts(model, work / f"{'digits' if digits else 'gpt2'}-{s}"), "reference": reference_test(model)}
        print(f"  {'digits' if digits else 'gpt2'} S={s}: " + ", ".join(k for k, v in out[s].items() if v) + f" ({time.perf_counter() - start:.0f} s)",
              flush=True)
    return out


def flip_point(curve: dict[float, dict[str, bool]], verdict: str) -> float | None:
    """The smallest strength from which the verdict is above at every larger strength (None: never)."""
    point = None
    for s in sorted(curve, reverse=True):
        if not curve[s].get(verdict):
            break
        point = s
    return point


def interval(k: int, n: int) -> str:
    ci = stats.binomtest(k, n).proportion_ci(0.95, method="exact")
    return f"{k}/{n} [{ci.low:.2f}, {ci.high:.2f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=10, help="model seeds of each random control (default 10)")
    parser.add_argument("--strengths", default="1,0.5,0.25,0.15,0.1,0.05", help="plant strengths of the power curve")
    parser.add_argument("--nulls", default="random-gpt2,random-smollm2-135m", help="random controls for the false-positive rate")
    parser.add_argument("--skip-power", action="store_true")
    parser.add_argument("--out", default=None, help="write the table as JSON here too")
    args = parser.parse_args()
    strengths = [float(s) for s in args.strengths.split(",")]
    result: dict = {"alpha": ALPHA, "false_positives": {}, "power": {}}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name in filter(None, args.nulls.split(",")):
            print(f"false positives: {name}, seeds 1..{args.seeds}", flush=True)
            result["false_positives"][name] = false_positives(name, args.seeds, work)
        if not args.skip_power:
            for digits in (False, True):
                tokenizer = "digit-splitting" if digits else "GPT-2"
                print(f"power: {tokenizer} tokenizer, strengths {strengths}", flush=True)
                result["power"][tokenizer] = power(digits, strengths, work)

    print(f"\nfalse-positive rate at alpha {ALPHA} (count of runs above / runs, exact 95% interval)")
    names = list(result["false_positives"])
    print("verdict".ljust(22) + "".join(n.ljust(26) for n in names))
    for v in VERDICTS:
        print(v.ljust(22) + "".join(interval(sum(result["false_positives"][n][v]), len(result["false_positives"][n][v])).ljust(26) for n in names))
    if result["power"]:
        print("\npower: the smallest plant strength from which each verdict is above (- : not above at strength 1)")
        tokenizers = list(result["power"])
        print("verdict".ljust(22) + "".join(t.ljust(18) for t in tokenizers))
        for v in (*VERDICTS, "reference"):
            print(v.ljust(22) + "".join(str(flip_point(result["power"][t], v) or "-").ljust(18) for t in tokenizers))
        for t in tokenizers:
            print(f"\n{t}: verdicts above per strength")
            for s, row in result["power"][t].items():
                print(f"  S={s:<5} " + " ".join("x" if row.get(v) else "." for v in (*VERDICTS, "reference")))
            print("          " + " ".join(v[0] for v in (*VERDICTS, "reference")) + "  (columns in the order above)")
    if args.out:
        Path(args.out).write_text(json.dumps({**result, "lines": LINES}, indent=1, default=str))


if __name__ == "__main__":
    sys.exit(main())
