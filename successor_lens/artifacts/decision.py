"""`tune`'s result for a reader who is not a specialist: what the recommended edit changes, by how
much, with what risk, in plain words and one chart (the atlas's decision page, and the lines the
command prints). Everything here reads the held-out split: the numbers the search never saw."""

from __future__ import annotations

import shlex
from pathlib import Path

from successor_lens.artifacts.html import IMAGES, Raw, esc, h2, img, page, para, table
from successor_lens.filenames import CHOSEN_EDIT, DECISION_HTML, PARETO_PNG, TUNE
from successor_lens.nulls import fmt_p
from successor_lens.probes.tune_config import GOALS, SIGNIFICANCE

HELD_KPIS = ("accuracy", "accuracy_in_task", "error_rate", "answer_logprob", "corpus_loss", "kl", "top1_changed", "side_accuracy")


def decision_name(goal: str) -> str:
    """The page of one goal (goals are a fixed set, so the name is safe as a path)."""
    if goal not in GOALS:
        raise ValueError(f"not a tune goal: {goal!r}")
    return DECISION_HTML.replace(".html", f"-{goal}.html")


def pareto_name(goal: str) -> str:
    decision_name(goal)  # checks the goal
    return f"{IMAGES}/{PARETO_PNG.removesuffix('.png')}-{goal}.png"


def chosen_by(doc: dict) -> str:
    """The measure that chose the recommended edit: the search ranks by accuracy gain, then by the
    answer's log-probability (`tune._rank`), so an edit with no accuracy gain was chosen by the latter."""
    chosen = doc.get("chosen")
    return "answer_logprob" if chosen and chosen["gain"] == 0 else "gain"


def tune_points(doc: dict) -> dict:
    """The chart's data: (KL, the measure that chose) of every search candidate and of the null's,
    the Pareto front's indexes, the recommended point, the KL budget and the measure's name."""
    measure = chosen_by(doc)

    def pt(r: dict) -> list[float]:
        y = r["gain"] if measure == "gain" else GOALS[doc["goal"]] * r["kpis"]["answer_logprob"]["delta"]
        return [r["kpis"]["kl"]["after"], y]
    return {"candidates": [pt(r) for r in doc["candidates"]], "null": [pt(r) for r in doc["null_candidates"]], "pareto": doc["pareto"],
            "chosen": pt(doc["chosen"]) if doc.get("chosen") else None, "max_kl": doc["config"]["max_kl"], "measure": measure}


def tune_entry(doc: dict) -> dict:
    """What the atlas keeps of a tune.json: the decision, its held-out evidence and the chart's points."""
    held = doc["held_out"]
    return {"goal": doc["goal"], "config": doc["config"], "wall_s": doc.get("wall_s"), "splits": doc["splits"],
            "evidence": doc["evidence"], "null_evidence": doc["null_evidence"],
            "chosen": {"description": doc["chosen"]["description"], "edits": doc["chosen"]["edits"]} if doc.get("chosen") else None,
            "held_out": {"chosen": {k: held["chosen"]["kpis"][k] for k in (*HELD_KPIS, "gain")} if held["chosen"] else None,
                         "null": {"description": held["null"]["description"], "gain": held["null"]["kpis"]["gain"]} if held["null"] else None,
                         "vs_null": held["vs_null"], "better_than_null": held["better_than_null"]},
            "points": tune_points(doc), "page": decision_name(doc["goal"]), "image": pareto_name(doc["goal"]),
            "replay": (doc.get("provenance") or {}).get("replay")}


def _pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.0f}%"


def _pts(v) -> str:
    return "n/a" if v is None else f"{100 * v:+.0f} points"


def _interval(k: dict, scale: float = 100.0, unit: str = " points") -> str:
    lo, hi = k["ci95"]
    if lo is None:
        return "no interval (no units)"
    return f"95% interval {scale * lo:+.{0 if scale == 100 else 3}f} to {scale * hi:+.{0 if scale == 100 else 3}f}{unit}, p {fmt_p(k['p'])}"


def holds(ab: dict) -> bool:
    """A positive change that both tests call real: its bootstrap interval excludes 0 and its
    permutation p is below `SIGNIFICANCE` (with a few dozen binary units the two can disagree)."""
    return bool(ab["excludes_zero"] and (ab["delta"] or 0) > 0 and ab["p"] is not None and ab["p"] < SIGNIFICANCE)


def nothing_to_measure(entry: dict) -> str | None:
    """Why the held-out split cannot show the edit working, or None: the unedited model continues
    no held-out list correctly and the edit leaves it so (every accuracy gain is 0; the search then
    chose by the answer's log-probability alone, which a user never sees)."""
    k = entry["held_out"]["chosen"]
    if entry["chosen"] is None or k is None:
        return None
    acc = k["accuracy"]
    if acc["before"] == 0 and not acc["delta"]:
        return (f"the unedited model continues {_pct(acc['before'])} of the held-out lists correctly and the best edit leaves it at "
                f"{_pct(acc['after'])}, so there is no gain to measure (the search's best, {entry['chosen']['description']}, only moved "
                "the answer's log-probability)")
    return None


def verdict(entry: dict) -> tuple[bool, list[str]]:
    """(ship it, the reasons), from the held-out split alone."""
    held = entry["held_out"]
    k = held["chosen"]
    if entry["chosen"] is None or k is None:
        return False, ["the search found no edit within the side-effect budget that moves succession the wanted way"]
    empty = nothing_to_measure(entry)
    if empty:
        return False, [empty]
    cfg, reasons = entry["config"], []
    if not holds(k["gain"]):
        reasons.append(f"on the held-out prompts the gain is not clear of chance ({_interval(k['gain'])})")
    if not held["better_than_null"]:
        reasons.append("it is NOT better than its null (the same search over random heads and directions) on the held-out split")
    if (k["kl"]["after"] or 0) > cfg["max_kl"]:
        reasons.append(f"held-out KL {k['kl']['after']:.3f} is over the budget {cfg['max_kl']:g}")
    if (k["corpus_loss"]["delta"] or 0) > cfg["max_loss_increase"]:
        reasons.append(f"held-out loss rise {k['corpus_loss']['delta']:.3f} is over the budget {cfg['max_loss_increase']:g}")
    return not reasons, reasons


def plain_lines(entry: dict) -> list[str]:
    """The decision in sentences (the page's text, and what `tune` prints)."""
    held, goal = entry["held_out"], entry["goal"]
    want = "raise" if GOALS[goal] > 0 else "lower"
    lines = [f"Goal: {want} how often the model continues a list correctly (\"Monday, Tuesday, Wednesday,\" -> \" Thursday\")."]
    ship, reasons = verdict(entry)
    if entry["chosen"] is None or held["chosen"] is None or nothing_to_measure(entry):
        lines.append("Recommended change: none: " + reasons[0] + ".")
        lines.append("Decision: nothing to roll out.")
        return lines
    k = held["chosen"]
    n = entry["splits"]["held_out"]
    lines += [
        f"Recommended change: {entry['chosen']['description']}.",
        f"Measured on {n['prompts']} list prompts and {n['windows']} text windows the search never saw:",
        f"- list continuation accuracy {_pct(k['accuracy']['before'])} -> {_pct(k['accuracy']['after'])} "
        f"({_pts(k['accuracy']['delta'])}; {_interval(k['accuracy'])});",
        f"- error rate {_pct(k['error_rate']['before'])} -> {_pct(k['error_rate']['after'])};",
        f"- risk to everything else: next-token loss on ordinary text {k['corpus_loss']['delta']:+.3f} nats "
        f"(budget {entry['config']['max_loss_increase']:g}), KL to the unedited model {k['kl']['after']:.3f} nats per token "
        f"(budget {entry['config']['max_kl']:g}), {_pct(k['top1_changed']['after'])} of text positions change their top prediction;",
        f"- tasks the edit did not target (copying a list, greater-than): {_pct(k['side_accuracy']['before'])} -> "
        f"{_pct(k['side_accuracy']['after'])}.",
    ]
    null, vs = held["null"], held["vs_null"]
    null_text = f"{null['description']} (held-out gain {_pts(null['gain']['delta'])})" if null else "nothing that gains"
    lines.append(f"Control: the same search over random heads {', '.join(entry['null_evidence']['heads'])} and random directions found "
                 f"{null_text}; the recommended change beats it by {_pts(vs['delta'])} ({_interval(vs)}): "
                 + ("better than its null." if held["better_than_null"] else "NOT better than its null."))
    lines.append("Decision: " + ("roll it out (every check above passes on held-out data)." if ship else "do not roll it out yet: " + "; ".join(reasons) + "."))
    return lines


def replay_command(entry: dict, run: Path | None, model_name: str) -> str:
    """The `edit` command that replays the recommended edit, pasteable as it stands: the model, the
    run folder and the dtype spelled out (the run folder's absolute path where the atlas knows it)."""
    replay = entry.get("replay") or {}
    folder = str(run) if run is not None else "RUN_FOLDER"
    spec = f"{folder}/{TUNE}/{entry['goal']}/{CHOSEN_EDIT}"
    words = ["successor-lens", "edit", "--model", replay.get("model") or model_name, "--out", folder, "--spec", spec]
    if replay.get("dtype", "fp32") != "fp32":
        words += ["--dtype", replay["dtype"]]
    return " ".join(shlex.quote(w) for w in words)


def decision_page(entry: dict, model_name: str, run: Path | None = None) -> str:
    ship, _ = verdict(entry)
    lines = plain_lines(entry)
    k = entry["held_out"]["chosen"]
    body: list[str] = [para(lines[0]), Raw(f'<p class="{"ok" if ship else "bad"}">{esc(lines[-1])}</p>')]
    body += [para(line.removeprefix("- ")) for line in lines[1:-1]]
    body += [h2("Every edit the search tried: gain against side effect"),
             img(entry["image"], "target gain against KL for every candidate edit, the null search's in grey, the recommended one starred"),
             para("Each dot is one candidate measured on the search split; grey crosses are the same search over random heads and "
                  "directions (the null); the dashed line is the side-effect budget. The vertical axis is the measure that chose the "
                  "starred edit: " + ("the accuracy gain." if entry["points"].get("measure", "gain") == "gain" else
                                      "the answer's log-probability, as no edit changed the accuracy."), "note")]
    if k:
        body += [h2("Held-out measurements (A/B against the unedited model)"),
                 table(["measure", "before", "after", "change", "95% interval", "p"],
                       [[k[m]["metric"], k[m]["before"], k[m]["after"], k[m]["delta"],
                         "n/a" if k[m]["ci95"][0] is None else f"{k[m]['ci95'][0]:+.3f} .. {k[m]['ci95'][1]:+.3f}",
                         "n/a" if k[m]["p"] is None else fmt_p(k[m]["p"])]
                        for m in HELD_KPIS])]
    if entry["chosen"] and not nothing_to_measure(entry):
        body += [para("Replay it (then ship it as a Hugging Face folder: add --export-model DIR):", "note"),
                 Raw(f"<pre><code>{esc(replay_command(entry, run, model_name))}</code></pre>")]
    return page(f"Decision: {entry['goal']} on {model_name}", body, root="")
