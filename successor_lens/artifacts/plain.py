"""What a run found, in plain sentences for a reader who is not an interpretability researcher.

Every sentence is generated from a verdict in summary.json (`summary.build_summary`): a finding is
stated only when its verdict is above its null, and a verdict that is not above says so in its
own words; nothing here computes or judges anything the verdicts do not. The technical lines
(`summary["lines"]`) keep every figure beside its null and the paper's."""

from __future__ import annotations

from typing import Any

from successor_lens.nulls import ALPHA
from successor_lens.paper import SUCCESSOR_BAR
from successor_lens.probes.scan import READOUT_BAR

LIST_EXAMPLE = '"Monday, Tuesday," or "3, 4,"'


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def ov_sentence(s: dict[str, Any]) -> str:
    """The OV scan: is there a head whose OV circuit maps an ordinal token to the next one?"""
    above, head = s["above_null"]["best_score"], s["best_head"]
    if not s.get("readout_validated", True):
        return (f"The OV scan cannot tell whether {s['model']} has a successor head: no head even copies tokens through its OV circuit "
                f"(best copying score {s['copying_best']:.2f}; the readout needs {READOUT_BAR}), so the scan shows nothing either way.")
    if above and s["passes_successor_bar"]:
        return (f"{head} is a successor head by its OV circuit: given an ordinal token (a number, a day, a month, a letter), it most "
                f"often promotes the next one ({_pct(s['best_score'])} of pairs, chance {_pct(s['best_score_null'])}), as the paper's "
                "successor heads do.")
    if above:
        return (f"{head} promotes the next ordinal token through its OV circuit more often than chance ({_pct(s['best_score'])} of pairs, "
                f"chance {_pct(s['best_score_null'])}), but less often than the paper's bar for a successor head ({SUCCESSOR_BAR:.0%}).")
    return (f"No head promotes the next ordinal token through its OV circuit more often than chance: the best, {head}, does for "
            f"{_pct(s['best_score'])} of pairs, where chance is {_pct(s['best_score_null'])}.")


def underpowered(s: dict[str, Any]) -> bool:
    """Whether the ablation verdict is NOT above only because its test cannot reach alpha (too few
    other heads to draw: its line says so, `nulls.value_vs_draws`)."""
    return not s["above_null"]["ablation_loss_rise"] and any(line.startswith("ablating") and "cannot reach" in line
                                                             for line in s.get("lines", []))


def context_sentence(s: dict[str, Any]) -> str:
    """The in-context test: does removing the analysis head hurt continuing a list?"""
    head = s.get("ablation_head") or s["analysis_head"]
    if s.get("ablation_loss_rise") is None:
        return f"Whether {head} matters for continuing lists such as {LIST_EXAMPLE} was not measured in this run (no prompt fits the model)."
    if underpowered(s):
        return (f"This run cannot tell whether {head} matters more than other heads for continuing lists such as {LIST_EXAMPLE}: the "
                f"model has too few other heads for the test to reach alpha {ALPHA} (the summary gives the rise and its p).")
    if s["above_null"]["ablation_loss_rise"]:
        return (f"In context, {head} carries succession: removing it makes the model worse at continuing lists such as {LIST_EXAMPLE} "
                "(the right answer becomes less likely), more than removing any of the other heads tested does.")
    return (f"Removing {head} does not hurt continuing lists such as {LIST_EXAMPLE} more than removing a typical other head does, "
            "so this run does not single out a head for succession in context.")


def mlp0_sentence(s: dict[str, Any]) -> str:
    """The mining and the probe: does the first MLP layer's output encode position mod 10? Each
    verdict adds its clause: the above ones as findings, the others as what was not found."""
    a = s["above_null"]
    found, missing = [], []
    if a["classes_found"]:
        found.append(f"sparse dictionaries trained on its output have latents for {s['classes_found']:.0f} of the 10 classes on average, "
                     f"where untrained dictionaries and shuffled labels have {s['classes_found_null']:.0f}")
    else:
        missing.append("the sparse dictionaries have no more latents for single classes than untrained dictionaries or shuffled labels")
    if a["modal_coverage"]:
        found.append(f"their latents cover each class's tokens better than chance ({s['modal_coverage']:.2f} vs {s['modal_coverage_null']:.2f})")
    else:
        missing.append("their latents cover each class's tokens no better than chance")
    if a["probe_accuracy"]:
        found.append(f"a linear probe reads the class on tasks it never saw ({_pct(s['probe_accuracy'])}, chance {_pct(s['probe_accuracy_null'])})")
    else:
        missing.append("a linear probe reads the class no better than with shuffled labels")
    if not found:
        return "The first MLP layer's output shows no abstract 'position modulo 10' here: " + "; ".join(missing) + "."
    return ("The first MLP layer writes an abstract 'position modulo 10' into ordinal tokens (the same for \"3\", \"13\", \"third\" and "
            "\"March\"): " + "; ".join(found) + (f"; but {'; and '.join(missing)}" if missing else "") + ".")


def arithmetic_sentence(s: dict[str, Any]) -> str:
    """Feature arithmetic: do those features drive the analysis head?"""
    head = s["analysis_head"]
    if s.get("arithmetic") is None:
        return f"Whether {head} reads mod-10 features was not tested: there were no mod-10 features to move (see the summary)."
    if s["above_null"]["arithmetic"]:
        return (f"{head} reads those features: moving a token's mod-10 feature to the next class makes {head} produce the next ordinal "
                f"in {_pct(s['arithmetic'])} of cases, against {_pct(s['arithmetic_random'])} for random directions.")
    return (f"Moving a token's mod-10 feature to the next class does not steer {head} toward the next ordinal more than a random "
            f"direction does ({_pct(s['arithmetic'])} vs {_pct(s['arithmetic_random'])}), so this run does not show that {head} reads them.")


def plain_sentences(s: dict[str, Any]) -> list[str]:
    """What the run found, in three to six sentences generated from summary.json's verdicts."""
    return [ov_sentence(s), context_sentence(s), mlp0_sentence(s), arithmetic_sentence(s),
            f"Each sentence rests on a test at alpha {ALPHA} against a null computed in this run; the summary below gives every figure "
            "beside its null and the paper's."]


def ov_words(succ: float, copy: float, chance: float, above: bool) -> str:
    """What a head's OV circuit does with ordinal tokens, in a few words: "promotes the next" only
    when its score is above chance by the scan's test (`summary.heads_above_chance`)."""
    scores = f"succession {_pct(succ)}, copying {_pct(copy)}, chance {_pct(chance)}"
    if above:
        return f"promotes the next ordinal token ({_pct(succ)} of pairs, chance {_pct(chance)}: above chance over all heads)"
    if copy >= READOUT_BAR:
        return f"copies its input token ({scores})"
    return f"no map of ordinal tokens above chance ({scores})"


def context_words(name: str, s: dict[str, Any] | None) -> str | None:
    """The in-context verdict's words for the head it tested, or None for other heads."""
    if not s or name != (s.get("ablation_head") or s.get("analysis_head")):
        return None
    if s.get("ablation_loss_rise") is None:
        return "the head this run analyses in context (removing it not measured)"
    if s["above_null"]["ablation_loss_rise"]:
        return "carries succession in context: removing it hurts continuing lists more than removing other heads"
    if underpowered(s):
        return "the head this run analyses in context; too few other heads to tell whether removing it hurts more than removing them"
    return "the head this run analyses in context; removing it hurts no more than removing other heads"


def head_sentence(record: dict[str, Any], chance: float, above: bool, s: dict[str, Any] | None = None) -> str:
    """One sentence opening a head's page: what its OV circuit does with ordinal tokens, against
    chance (`above`: its score's test), and the in-context verdict when this is the head it tested."""
    context = context_words(record["head"], s)
    verb = "has" if not above and record["copying"] < READOUT_BAR else ""
    return (f"{record['head']}'s OV circuit {verb + ' ' if verb else ''}{ov_words(record['succession'], record['copying'], chance, above)}"
            + (f"; it {context}" if context and not context.startswith("the head") else f"; {context}" if context else "") + ".")


def which_head_rows(atlas: dict[str, Any], n: int = 8) -> list[list[Any]]:
    """The index's "which head does what" rows: the top heads by OV succession score and the head
    the in-context tests chose, each with its roles in words (OV, in context, and the `roles`
    command's when it ran), its scores and chance."""
    heads, s = atlas.get("heads"), atlas.get("summary")
    if not heads:
        return []
    chance = heads.get("null") or 0.0
    scores = {f"L{layer}H{h}": (row[h], heads["copying"][layer][h]) for layer, row in enumerate(heads["succession"]) for h in range(len(row))}
    names = [t["head"] for t in heads["top_heads"][:n]]
    tested = (s or {}).get("ablation_head") or (s or {}).get("analysis_head")
    if tested and tested not in names and tested in scores:
        names.append(tested)
    roles = (atlas.get("roles") or {}).get("heads") or {}
    above = set(heads.get("above_chance") or ())
    rows = []
    for name in names:
        succ, copy = scores[name]
        words = [ov_words(succ, copy, chance, name in above)]
        context = context_words(name, s)
        if context:
            words.append(context)
        role = (roles.get(name) or {}).get("words", "")
        if ": " in role and "no role above" not in role:
            words.append("roles: " + role.split(": ", 1)[1])
        rows.append([name, "; ".join(words), succ, copy, chance])
    return rows


GLOSSARY = {
    "succession": "OV succession score: the share of ordinal tokens (1, Monday, March, A, first...) for which the head's OV circuit "
                  "promotes the next item of the same list more than any other item of that list.",
    "copying": "OV copying score: the same count for the token itself; a head that copies is a readout the scan can see, so a model "
               "with no copying head gives no evidence either way.",
    "chance": "The score a head would get by picking an item of the list at random: one over the list's length, per task.",
    "OV": "The output-value circuit of an attention head: what the head writes to the residual stream for a token it attends to.",
    "DLA": "Direct logit attribution: how much a head's output raises the logit of the right answer directly.",
    "in-context DLA": "Direct logit attribution on prompts such as 'Monday, Tuesday,': how much the head's output raises the right next "
                      "item directly.",
    "modal coverage": "For each mod-10 class, the share of its tokens on which the class's latents fire most; 1.0 means every token of "
                      "the class, 0.1 is what a latent that ignores classes would get.",
    "mod-10 classes": "Tokens grouped by their position in their list modulo 10 (3, 13, Wednesday and March share class 3): the "
                      "abstract feature the paper finds in the first MLP layer's output.",
    "L0": "The mean number of dictionary latents active on a token.",
    "FVU": "Fraction of variance unexplained by the dictionary's reconstruction: 0 is perfect, 1 is no better than the mean; above 1 "
           "is worse than the mean, a dictionary that does not fit.",
    "dead": "The share of latents that never fire on the data measured.",
    "loss recovered (spliced in)": "The share of the model's loss increase, from zero-ablating the site, that splicing in the dictionary's "
                                   "reconstruction removes: 1 is perfect, 0 is no better than ablation; outside 0-1 is out of range.",
    "patching effect": "The share of the answer's margin that replacing this head's output with its output on another prompt removes.",
    "above its null": f"A test at alpha {ALPHA} against a null computed in the same run (shuffled labels, untrained dictionaries, "
                      "random directions or other heads); NOT above means the run does not show it.",
}
"""Every technical term a table header or a summary line uses, in one sentence each: the atlas
shows it as a tooltip (`html.term`) and docs/atlas.md lists it."""


def fit_warnings(fvu: float | None, loss_recovered: float | None) -> list[str]:
    """A sentence for each fit figure outside its meaningful range (`GLOSSARY`'s FVU and loss recovered)."""
    out = []
    if fvu is not None and fvu > 1:
        out.append(f"FVU {fvu:.3f} is above 1: the reconstruction is worse than predicting the mean activation, so this dictionary "
                   "does not fit these activations.")
    if loss_recovered is not None and loss_recovered > 1:
        out.append(f"loss recovered {loss_recovered:.3f} is above 1 (out of range): the spliced-in reconstruction gives a lower loss than "
                   "the clean model, so the figure does not measure fit here.")
    if loss_recovered is not None and loss_recovered < 0:
        out.append(f"loss recovered {loss_recovered:.3f} is below 0 (out of range): splicing the reconstruction in is worse than "
                   "zero-ablating the site.")
    return out


def flagged(value: float | None, lo: float | None, hi: float | None) -> Any:
    """`value` as a table shows it, with "(out of range)" when it is outside [lo, hi]."""
    if value is None:
        return None
    out = (lo is not None and value < lo) or (hi is not None and value > hi)
    return f"{value:.3f} (out of range)" if out else value


PROCESSING_WORDS = {"fold_ln": "LayerNorm folded", "center_writing_weights": "writing weights centred", "center_unembed": "unembedding centred",
                    "fold_value_biases": "value biases folded", "refactor_factored_attn_matrices": "attention matrices refactored"}


def weights_words(flags: Any) -> str:
    """TransformerLens's weight processing flags (provenance's `weight_processing`) in words."""
    if not isinstance(flags, dict):
        return "processing not recorded" if flags is None else str(flags)
    done = [PROCESSING_WORDS.get(str(k), str(k)) for k, v in flags.items() if v]
    return ", ".join(done) if done else "unprocessed (no LayerNorm folding, no centring)"
