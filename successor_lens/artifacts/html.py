"""Static HTML for the atlas: pages formatted from the atlas document alone, no network.

Every string that comes from a tokenizer or a file goes through `esc` or `tok` (HTML-escaped, with
control characters shown as escapes); cells are escaped unless wrapped in `Raw`. A Content-Security-
Policy forbids every script but the one a page names by its sha256 (the latent index's filters,
`latent_pages.SCRIPT`), so even a missed escape could not run code.
"""

from __future__ import annotations

import base64
import hashlib
import html
import re
from collections.abc import Sequence

from successor_lens.artifacts.plain import GLOSSARY, fit_warnings, flagged, head_sentence, plain_sentences, weights_words, which_head_rows
from successor_lens.filenames import (
    ARITHMETIC_PNG,
    ATLAS_JSON,
    ATLAS_SCHEMA,
    HEADS_COPYING_PNG,
    HEADS_PNG,
    IMAGES,
    INCONTEXT_PNG,
    INDEX,
    OFFSET_PNG,
    PROBE_PNG,
    REPORT,
    REPORT_HTML,
    ROLES_PNG,
    RUN_SETTINGS,
    WILD_PNG,
)
from successor_lens.paper import ARITHMETIC, HEADLINES, WILD_TEXT

CSP = "default-src 'none'; img-src 'self' file: data:; style-src 'unsafe-inline'"
STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1100px;padding:0 1em;color:#222;font-size:15px}
table{border-collapse:collapse;margin:.5em 0 1em;max-width:100%}th,td{border:1px solid #ccc;padding:2px 8px;text-align:right;overflow-wrap:break-word}
th{background:#f3f3f3}abbr[title]{text-decoration:underline dotted;cursor:help}.plain p{font-size:16px;line-height:1.45;margin:.4em 0}td.l,th.l{text-align:left}th[data-sort]{cursor:pointer;text-decoration:underline dotted}
code.tok{background:#eef;padding:0 3px;white-space:pre-wrap;overflow-wrap:anywhere}
img{max-width:100%;border:1px solid #ddd;margin:.3em 0}.note{color:#555}.ok{color:#060}.bad{color:#a00}
nav a,.keys a{margin-right:1em}.ctx{font-family:ui-monospace,monospace;white-space:pre-wrap;overflow-wrap:anywhere;font-size:90%}
.ctx span{border-radius:2px}.ctx .q{outline:1px solid #c60}.a1{background:rgb(255 140 0 / 11%)}.a2{background:rgb(255 140 0 / 22%)}.a3{background:rgb(255 140 0 / 33%)}.a4{background:rgb(255 140 0 / 44%)}.a5{background:rgb(255 140 0 / 55%)}.a6{background:rgb(255 140 0 / 66%)}.a7{background:rgb(255 140 0 / 77%)}.a8{background:rgb(255 140 0 / 88%)}.a9{background:rgb(255 140 0 / 99%)}td.ctx,td>.ctx{text-align:left;display:block}svg.hist{max-width:100%;height:auto}
.filters label{margin-right:1em}pre{white-space:pre-wrap;overflow-wrap:anywhere}
"""
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class Raw(str):
    """A cell that is already safe HTML (built here from escaped parts)."""


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def visible(text: str) -> str:
    """Control characters as escapes (a newline shows as \\n)."""
    return _CONTROL.sub(lambda m: {"\n": "\\n", "\t": "\\t", "\r": "\\r"}.get(m.group(), f"\\x{ord(m.group()):02x}"), text)


def tok(text: str | None) -> Raw:
    """A token shown as text: control characters as escapes, then HTML-escaped."""
    if text is None:
        return Raw("&ndash;")
    return Raw(f'<code class="tok">{esc(visible(text))}</code>')


def context_html(a: dict, effects: list | None = None) -> Raw:
    """A corpus context with the latent's value behind each token (orange, darker = larger; the
    qualifying token outlined); on hover each token's value and, given `effects`, the latent's
    direct effect there on the next token's logit."""
    top = max(max(a["values"], default=0.0), 1e-12)
    effects = effects or [None] * len(a["tokens"])
    spans = []
    for i, (t, v, e) in enumerate(zip(a["tokens"], a["values"], effects)):
        level = round(9 * max(v, 0.0) / top)
        cls = f"a{level}" + (" q" if i == a["qualifying_token_index"] else "")
        tip = "0" if v == 0 else f"{v:.3f}" + ("" if e is None else f" | {e:+.3f}")
        spans.append(f'<span class="{cls}" title="{tip}">{esc(visible(t))}</span>')
    return Raw('<span class="ctx">' + "".join(spans) + "</span>")


def link(href: str, text, id_: str | None = None) -> Raw:
    anchor = f' id="{esc(id_)}"' if id_ else ""
    return Raw(f'<a{anchor} href="{esc(href)}">{text if isinstance(text, Raw) else esc(text)}</a>')


def cell(value) -> str:
    if isinstance(value, Raw):
        return value
    if isinstance(value, float):
        return "nan" if value != value else f"{value:.3f}"
    return esc("" if value is None else value)


def term(text: str) -> Raw:
    """A technical term with its one-sentence definition as a tooltip (`plain.GLOSSARY`), or the text."""
    definition = GLOSSARY.get(text)
    return Raw(f'<abbr title="{esc(definition)}">{esc(text)}</abbr>' if definition else esc(text))


def table(header: list, rows: list[list], left: int = 1) -> Raw:
    """An HTML table; the first `left` columns are left-aligned; header terms carry their definition."""
    cls = lambda i: ' class="l"' if i < left else ""  # noqa: E731
    head = "".join(f"<th{cls(i)}>{cell(term(h) if isinstance(h, str) else h)}</th>" for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(f"<td{cls(i)}>{cell(c)}</td>" for i, c in enumerate(row)) + "</tr>" for row in rows)
    return Raw(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")


def img(src: str, alt: str) -> Raw:
    return Raw(f'<img src="{esc(src)}" alt="{esc(alt)}">')


def page(title: str, body: Sequence[str], root: str = "", nav: bool = True, script: str | None = None) -> str:
    """A whole document; `root` is the relative path back to the atlas folder (`nav`: the atlas's
    links). `script`, when given, runs at the end of the body and is the one script the page's
    Content-Security-Policy allows (by its sha256)."""
    bar = (f'<nav>{link(root + INDEX, "atlas index")}{link(root + REPORT_HTML, "report")}{link(root + ATLAS_JSON, ATLAS_JSON)}'
           f'{link(root + REPORT, REPORT)}</nav>' if nav else "")
    csp = CSP + (f"; script-src '{script_hash(script)}'" if script else "")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">"
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">'
        f"<title>{esc(title)}</title><style>{STYLE}</style></head>\n<body>{bar}<h1>{esc(title)}</h1>\n"
        + "\n".join(body) + (f"\n<script>{script}</script>" if script else "") + "\n</body></html>\n"
    )


def script_hash(script: str) -> str:
    """The CSP source that allows exactly this inline script."""
    return "sha256-" + base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()


def h2(text: str) -> Raw:
    return Raw(f"<h2>{esc(text)}</h2>")


def para(text: str, cls: str = "") -> Raw:
    return Raw(f'<p class="{cls}">{esc(text)}</p>' if cls else f"<p>{esc(text)}</p>")


def latent_href(sae_id: str, index: int, root: str = "") -> str:
    return f"{root}latents/{sae_id}/{index}.html"


# --- pages -------------------------------------------------------------------------------------


def index_page(atlas: dict, summary: list[str]) -> str:
    model = atlas["model"]
    prov = atlas["provenance"]
    body: list[str] = []
    s = atlas.get("summary")
    if s and "above_null" in s:  # a whole run's verdicts: what they say, in plain words, first
        body += [h2("What this model does with ordinal tokens"), Raw('<div class="plain">' + "".join(f"<p>{esc(x)}</p>" for x in plain_sentences(s)) + "</div>")]
    rows = which_head_rows(atlas)
    if rows:
        pages = {p["head"] for p in atlas["heads"]["pages"]}
        body += [h2("Which head does what"),
                 table(["head", "what it does", "succession", "copying", "chance"],
                       [[link(f"heads/{r[0]}.html", r[0]) if r[0] in pages else r[0], *r[1:]] for r in rows], left=2),
                 para("the top heads by OV succession score and the head the in-context tests chose; hover a column's name for what it "
                      "measures.", "note")]
    body += [h2("Summary"), Raw("<ul>" + "".join(f'<li class="bad">{esc(line)}</li>' if "NOT above its null" in line else f"<li>{esc(line)}</li>"
                                                for line in summary) + "</ul>"),
            para(f"model {model['name']} ({model['n_layers']} layers x {model['n_heads']} heads, d_model {model['d_model']}); "
                 f"weights: {weights_words(prov.get('weight_processing'))}; source: {prov.get('source')}; successor-lens {prov.get('version')}", "note")]
    heads = atlas["heads"]
    if heads:
        body += [h2("Succession heads (OV circuit)"), img(f"{IMAGES}/{HEADS_PNG}", "layer x head succession heatmap"),
                 table(["head", "succession", "copying (control)"],
                       [[link(f"heads/{t['head']}.html", t["head"]) if any(p["head"] == t["head"] for p in heads["pages"]) else t["head"],
                         t["succession"], t["copying"]] for t in heads["top_heads"]]),
                 para(f"paper's successor-head bar: > {heads['successor_bar']}; "
                      + ("passed." if heads["passes_bar"] else f"no head passes it (best {heads['best_head']}). The successor behaviour of this model is weak by this score."),
                      "ok" if heads["passes_bar"] else "bad"),
                 img(f"{IMAGES}/{HEADS_COPYING_PNG}", "layer x head copying heatmap")]
    body.append(h2("Dictionaries"))
    rows, warnings = [], []
    for d in atlas["saes"]:
        m = d.get("metrics") or {}
        found = sum(1 for v in d["classes"].values() if v)
        spliced = m.get("spliced") or {}
        name = link(d["export"]["pages"][0], d["id"]) if d.get("export") else d["id"]
        rows.append([name, d["hook_name"], d["architecture"], d["d_sae"], (m.get("trained_on") or {}).get("data", "not recorded"), m.get("l0"),
                     flagged(m.get("fvu"), 0.0, 1.0), m.get("dead_frac"),
                     flagged(spliced["loss_recovered"], 0.0, 1.0) if spliced.get("loss_recovered") is not None else "n/a (not in context)",
                     f"{found}/10"])
        warnings += [f"{d['id']}: {w}" for w in fit_warnings(m.get("fvu"), spliced.get("loss_recovered"))]
    body.append(table(["dictionary (every latent)", "hook", "arch", "d_sae", "trained on", "L0", "FVU", "dead", "loss recovered (spliced in)",
                       "mod-10 classes"], rows, left=5))
    body += [para(w, "bad") for w in warnings]
    body.append(para("L0, FVU and dead fraction here are measured on the dictionary's training data; each dictionary's own page gives "
                     "them on the corpus the latent pages show.", "note"))
    body += [h2("mod-10 class x latent overview"),
             para("Latents are assigned to a class here by selectivity alone (the share of their activation on one class). Which "
                  "classes are above their null is the per-class test's, in the summary; on a tokenizer that splits numbers into "
                  "digits, a number's class is written in its last token, so a clean diagonal here is not evidence by itself.", "note")]
    for d in atlas["saes"]:
        cls_rows = [[c, Raw(" ".join(link(latent_href(d["id"], l), l) if _has_page(d, l) else esc(l) for l in ls)) if ls else "none",
                     (d.get("mining") or {}).get("modal_coverage", {}).get(c)] for c, ls in d["classes"].items()]
        body += [Raw(f"<h3>{esc(d['id'])}</h3>"), table(["class (index mod 10)", "latents", "modal coverage"], cls_rows),
                 img(d["image"], f"class x latent heatmap of {d['id']}")]
        if d.get("export"):
            ex = d["export"]
            body.append(Raw(f"<p>{link(ex['pages'][0], 'every latent, searchable')} ({ex['latents']}, {ex['live']} live on {esc(ex['dataset'])}; "
                            f"{len(d['latents'])} with a page of their own); Neuronpedia / SAEDashboard export: "
                            f"{link(ex['folder'] + '/' + RUN_SETTINGS, ex['folder'] + '/')}</p>"))
    if atlas.get("probes"):
        body += probe_sections(atlas["probes"])
    if atlas.get("wild"):
        body += wild_sections(atlas["wild"])
    if atlas.get("roles"):
        body += roles_sections(atlas["roles"])
    for edit in atlas.get("edits") or []:
        body += [h2(f"Edit: {edit['name']}"),
                 para("; ".join(describe_edit(e) for e in edit["spec"]["edits"]), "note"),
                 table(["KPI", "before", "after", "delta"], [[r["metric"], r["before"], r["after"], r["delta"]] for r in edit["kpis"]])]
    if atlas.get("tunes"):
        body.append(h2("Automated edits (tune): decisions"))
        body.append(Raw("<ul>" + "".join(f"<li>{link(t['page'], t['goal'])}: "
                                          f"{esc(t['chosen']['description'] if t['chosen'] else 'nothing recommended')}</li>"
                                          for t in atlas["tunes"]) + "</ul>"))
    body += [h2("Files"), Raw("<ul>" + "".join(f"<li>{link(f, f)}</li>" for f in (ATLAS_JSON, ATLAS_SCHEMA, REPORT)) + "</ul>")]
    return page(f"successor-lens atlas: {model['name']}", body)


def _has_page(d: dict, latent: int) -> bool:
    return any(r["index"] == latent for r in d["latents"])


def probe_sections(probes: dict) -> list[str]:
    p, e = probes["probe_mlp0"], probes["probe_embed"]
    rows = [[t, p["n_items"][t], p["accuracy"][t], e["accuracy"].get(t), p["shuffled_label_control"][t]] for t in p["accuracy"]]
    cos = probes["probe_feature_cosine"]
    arith = probes["arithmetic"]
    tasks = list(arith["SAE features"]["per_task"])
    arows = [[t] + [arith[n]["per_task"].get(t) for n in arith] for t in tasks] + [["overall"] + [arith[n]["overall"] for n in arith]]
    return [
        h2("Linear probes: index mod 10, leave one task out"),
        table(["held-out task", "items", "MLP0 probe", "embedding probe", "shuffled-label control"], rows),
        img(f"{IMAGES}/{PROBE_PNG}", "probe accuracy per held-out task"),
        para(f"probe / SAE-feature cosine: mean {cell(cos['mean'])}; random directions {cell(cos['random_baseline'])}; "
             f"mismatched classes {cell(cos['mismatched_class_baseline'])}; class-mean directions {cell(cos.get('class_mean_directions'))} "
             f"(paper: {HEADLINES['probe_feature_cosine'].paper})"),
        h2(f"Vector arithmetic through {probes['head']}"),
        table(["task"] + list(arith), arows),
        img(f"{IMAGES}/{ARITHMETIC_PNG}", "arithmetic success, features vs controls"),
        para("paper: " + ", ".join(f"{k} {v}" for k, v in ARITHMETIC.items())),
        img(f"{IMAGES}/{OFFSET_PNG}", "offset profile of the probe head"),
    ]


EDIT_FIELDS = {"ablate_head": ("mode",), "scale_head": ("factor",), "add_feature": ("feature", "scale", "positions"),
               "subtract_feature": ("feature", "scale", "positions")}


def describe_edit(e: dict) -> str:
    fields = ", ".join(f"{k} {e[k]}" for k in EDIT_FIELDS.get(str(e.get("kind")), ()) if e.get(k) is not None)
    return f"{e.get('kind')} L{e.get('layer')}H{e.get('head')}" + (f" ({fields})" if fields else "")


def wild_sections(wild: dict) -> list[str]:
    heads = wild["heads"]
    cats = list(heads[0]["category_shares"]) if heads else []
    rows = [[h["head"], h["mean_delta_loss"], len(h["top_positions"]), h["head_wins"]] + [h["category_shares"][c] for c in cats] for h in heads]
    examples = [[h["head"], tok(r["token"]), tok(r["target"]), Raw(" ".join(tok(a) for a in r["attended"])), r["delta_loss"], r["category"]]
                for h in heads for r in h["top_positions"][:5]]
    ic = wild["in_context"]
    return [
        h2("In the wild: where the heads help on natural text"),
        para("mean-ablation of each head's output, direct path only; positions where it helps most, classified by the rules in probes/wild.py. "
             f"Paper ({WILD_TEXT}).", "note"),
        table(["head", "mean d loss", "positions", "succession wins"] + cats, rows),
        img(f"{IMAGES}/{WILD_PNG}", "category shares per head"),
        table(["head", "token", "next token", "attended", "d loss", "category"], examples, left=4),
        h2("In-context succession prompts: direct logit attribution"),
        para("model top-1 accuracy over the vocabulary / among the task's items: "
             + ", ".join(f"{t} {a:.2f}/{ic['accuracy_in_task'][t]:.2f}" for t, a in ic["accuracy"].items())),
        table(["head", "DLA on the answer", "OV succession score"], [[r["head"], r["dla"], r["ov_succession"]] for r in ic["ranking"]]),
        img(f"{IMAGES}/{INCONTEXT_PNG}", "layer x head DLA heatmap"),
    ]


def roles_sections(roles: dict) -> list[str]:
    """Every head's roles in plain words (only those above their nulls), and the heads that carry
    in-context succession by activation patching."""
    heads = roles.get("heads") or {}
    with_role = [[name, h["words"].split(": ", 1)[1]] for name, h in heads.items() if "no role above" not in h["words"]]
    nulls = roles.get("nulls") or {}
    body: list[str] = [h2("Every head's roles (the roles command)"),
            para("roles read on the residual each head reads; a role is listed only when it is above its null ("
                 + "; ".join(f"{k}: {v}" for k, v in nulls.items()) + f"). {len(heads) - len(with_role)} of {len(heads)} heads have no role "
                 "above its null.", "note"),
            table(["head", "roles"], with_role, left=2)]
    patching = roles.get("patching")
    if patching:
        carriers = roles.get("carriers") or []
        body += [h2("Where in-context succession happens"),
                 para(f"activation patching on {patching['n_pairs']} succession prompts: each head's output at the last position taken "
                      f"from a prompt with other items; the share of the answer's margin ({patching['total_logit_diff']:.2f} logits) it "
                      f"removes ({patching['test']}). For the heads that remove most: their OV map on the residual they read in context."),
                 table(["head", "patching effect", "above its null", "OV succession on what it reads", "chance", "OV copying", "reads the last item"],
                       [[c["head"], c["effect"], "yes" if c["above"] else "no", c["succession"], c["chance"], c["copying"], c["reads_last_item"]]
                        for c in carriers]),
                 img(f"{IMAGES}/{ROLES_PNG}", "layer x head patching effect")]
    return body


def head_page(record: dict, heads: dict | None = None, summary: dict | None = None) -> str:
    """A head's page: one sentence on what it does (against chance), then its scores beside each task's chance."""
    chance = (heads or {}).get("chance") or {}
    overall = (heads or {}).get("null")
    body: list[str] = [Raw(f'<div class="plain"><p>{esc(head_sentence(record, overall or 0.0, record["head"] in ((heads or {}).get("above_chance") or ()), summary))}</p></div>'),
            para(f"succession {record['succession']:.3f}, copying {record['copying']:.3f}"
                 + (f", chance {overall:.3f}" if overall is not None else "")),
            h2("Per-task succession score"),
            table(["task", "succession", "chance"], [[t, v, chance.get(t)] for t, v in record["per_task"].items()]),
            h2("OV circuit: input token -> output"),
            para("top_in_task: the task token with the highest OV logit (what the score counts); top vocabulary: over all tokens.", "note")]
    for task, rows in record["ov_map"].items():
        body += [Raw(f"<h3>{esc(task)}</h3>"),
                 table(["input", "successor", "top in task", "correct", "top vocabulary"],
                       [[tok(r["input"]), tok(r["successor"]), tok(r["top_in_task"]), "yes" if r["correct"] else "no",
                         Raw(" ".join(tok(t) for t in r["top_vocab"]))] for r in rows], left=5)]
    body += [h2("Offset profile"), img("../" + record["image"], f"offset profile of {record['head']}")]
    return page(f"head {record['head']}", body, root="../")
