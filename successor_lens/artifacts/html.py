"""Static HTML for the atlas: pages formatted from the atlas document alone, no scripts, no network.

Every string that comes from a tokenizer or a file goes through `esc` or `tok` (HTML-escaped, with
control characters shown as escapes); cells are escaped unless wrapped in `Raw`. A Content-Security-
Policy forbids scripts outright, so even a missed escape could not run code.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence

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
    ROLES_PNG,
    RUN_SETTINGS,
    WILD_PNG,
)
from successor_lens.paper import ARITHMETIC, HEADLINES, WILD_TEXT

CSP = "default-src 'none'; img-src 'self' file: data:; style-src 'unsafe-inline'"
STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1100px;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1em}th,td{border:1px solid #ccc;padding:2px 8px;text-align:right}
th{background:#f3f3f3}td.l,th.l{text-align:left}code.tok{background:#eef;padding:0 3px;white-space:pre}
img{max-width:100%;border:1px solid #ddd;margin:.3em 0}.note{color:#555}.ok{color:#060}.bad{color:#a00}
nav a{margin-right:1em}.ctx{font-family:ui-monospace,monospace;white-space:pre;font-size:90%}
.ctx span{border-radius:2px}.ctx .q{outline:1px solid #c60}td.ctx{text-align:left}
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


def context(a: dict) -> Raw:
    """A corpus context with the latent's value behind each token (orange, darker = larger; the
    qualifying token outlined; the value on hover)."""
    top = max(max(a["values"], default=0.0), 1e-12)
    spans = []
    for i, (t, v) in enumerate(zip(a["tokens"], a["values"])):
        q = ' class="q"' if i == a["qualifying_token_index"] else ""
        spans.append(f'<span{q} style="background:rgba(255,140,0,{max(v, 0.0) / top:.2f})" title="{v:.3f}">{esc(visible(t))}</span>')
    return Raw('<span class="ctx">' + "".join(spans) + "</span>")


def link(href: str, text) -> Raw:
    return Raw(f'<a href="{esc(href)}">{text if isinstance(text, Raw) else esc(text)}</a>')


def cell(value) -> str:
    if isinstance(value, Raw):
        return value
    if isinstance(value, float):
        return "nan" if value != value else f"{value:.3f}"
    return esc("" if value is None else value)


def table(header: list, rows: list[list], left: int = 1) -> Raw:
    """An HTML table; the first `left` columns are left-aligned."""
    cls = lambda i: ' class="l"' if i < left else ""  # noqa: E731
    head = "".join(f"<th{cls(i)}>{cell(h)}</th>" for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(f"<td{cls(i)}>{cell(c)}</td>" for i, c in enumerate(row)) + "</tr>" for row in rows)
    return Raw(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")


def img(src: str, alt: str) -> Raw:
    return Raw(f'<img src="{esc(src)}" alt="{esc(alt)}">')


def page(title: str, body: Sequence[str], root: str = "", nav: bool = True) -> str:
    """A whole document; `root` is the relative path back to the atlas folder (`nav`: the atlas's links)."""
    bar = (f'<nav>{link(root + INDEX, "atlas index")}{link(root + ATLAS_JSON, ATLAS_JSON)}{link(root + REPORT, REPORT)}</nav>'
           if nav else "")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        f"<title>{esc(title)}</title><style>{STYLE}</style></head>\n<body>{bar}<h1>{esc(title)}</h1>\n"
        + "\n".join(body) + "\n</body></html>\n"
    )


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
    body: list[str] = [h2("Summary"), Raw("<ul>" + "".join(f'<li class="bad">{esc(line)}</li>' if "NOT above its null" in line else f"<li>{esc(line)}</li>"
                                                for line in summary) + "</ul>"),
            para(f"model {model['name']} ({model['n_layers']} layers x {model['n_heads']} heads, d_model {model['d_model']}); "
                 f"weights: {_processing(prov.get('weight_processing'))}; source: {prov.get('source')}; successor-lens {prov.get('version')}", "note")]
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
    rows = []
    for d in atlas["saes"]:
        m = d.get("metrics") or {}
        found = sum(1 for v in d["classes"].values() if v)
        spliced = m.get("spliced") or {}
        rows.append([d["id"], d["hook_name"], d["architecture"], d["d_sae"], m.get("l0"), m.get("fvu"), m.get("dead_frac"),
                     spliced.get("loss_recovered", "n/a (not in context)"), spliced.get("kl_spliced", ""), f"{found}/10"])
    body.append(table(["dictionary", "hook", "arch", "d_sae", "L0", "FVU", "dead", "loss recovered (spliced in)", "KL to clean",
                       "mod-10 classes"], rows, left=3))
    body.append(h2("mod-10 class x latent overview"))
    for d in atlas["saes"]:
        cls_rows = [[c, Raw(" ".join(link(latent_href(d["id"], l), l) if _has_page(d, l) else esc(l) for l in ls)) if ls else "none",
                     (d.get("mining") or {}).get("modal_coverage", {}).get(c)] for c, ls in d["classes"].items()]
        body += [Raw(f"<h3>{esc(d['id'])}</h3>"), table(["class (index mod 10)", "latents", "modal coverage"], cls_rows),
                 img(d["image"], f"class x latent heatmap of {d['id']}")]
        others = [r for r in d["latents"] if r["mod10_class"] is None]
        if others:
            body.append(Raw("<p>other latents with a page: " + " ".join(link(r["page"], r["index"]) for r in others) + "</p>"))
        if d.get("export"):
            ex = d["export"]
            body.append(Raw(f"<p>{link(ex['pages'][0], 'every latent')} ({ex['latents']}, {ex['live']} live on {esc(ex['dataset'])}; "
                            f"{len(ex['pages'])} pages) with its corpus contexts; Neuronpedia / SAEDashboard export: "
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
    body += [h2("Files"), Raw("<ul>" + "".join(f"<li>{link(f, f)}</li>" for f in (ATLAS_JSON, ATLAS_SCHEMA, REPORT)) + "</ul>")]
    return page(f"successor-lens atlas: {model['name']}", body)


def _processing(flags) -> str:
    if isinstance(flags, dict) and not any(flags.values()):
        return "unprocessed (no LayerNorm folding, no centring)"
    return str(flags)


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
    body: list[str] = [h2("Which head does what"),
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


def head_page(record: dict) -> str:
    body: list[str] = [para(f"succession {record['succession']:.3f}, copying {record['copying']:.3f}"),
            h2("Per-task succession score"), table(["task", "score"], [[t, v] for t, v in record["per_task"].items()]),
            h2("OV circuit: input token -> output"),
            para("top_in_task: the task token with the highest OV logit (what the score counts); top vocabulary: over all tokens.", "note")]
    for task, rows in record["ov_map"].items():
        body += [Raw(f"<h3>{esc(task)}</h3>"),
                 table(["input", "successor", "top in task", "correct", "top vocabulary"],
                       [[tok(r["input"]), tok(r["successor"]), tok(r["top_in_task"]), "yes" if r["correct"] else "no",
                         Raw(" ".join(tok(t) for t in r["top_vocab"]))] for r in rows], left=5)]
    body += [h2("Offset profile"), img("../" + record["image"], f"offset profile of {record['head']}")]
    return page(f"head {record['head']}", body, root="../")


def latent_page(sae: dict, r: dict, exported: tuple[dict, dict] | None = None) -> str:
    root = "../../"
    cls = r["mod10_class"]
    body: list[str] = [para(f"dictionary {sae['id']} ({sae['hook_name']}), latent {r['index']}: fires on {r['frac_nonzero']:.1%} of the items; "
                 f"max {r['maxActApprox']:.3f}"),
            para(f"mod-10 class: {cls if cls is not None else 'none'} (best class {r['best_class']}, selectivity {r['selectivity']:.2f}; chance 0.10)")]
    if exported:
        body += corpus_sections(sae, *exported)
    body += [h2("Top activating items"),
             table(["token", "task", "index", "activation"], [[tok(a["tokens"][0]), a["task"], a["item_index"], a["values"][0]] for a in r["activations"]], left=2),
             h2("Activation histogram over the items (non-zero)"), img(root + r["image"], f"activation histogram of latent {r['index']}"),
             h2("Mean activation per class (index mod 10)"), table(["class"] + list(range(10)), [["mean"] + r["class_profile"]]),
             h2("Decoder-direction neighbours"),
             table(["latent", "cosine"], [[link(latent_href(sae["id"], i, root), i) if _has_page(sae, i) else i, c]
                                          for i, c in zip(r["decoder_neighbours"]["indices"], r["decoder_neighbours"]["cosines"])])]
    if r["logit_head"]:
        n = len(r["pos_str"])
        body += [h2(f"Logit effect through {r['logit_head']} (decoder direction -> OV -> unembedding)"),
                 table(["promoted", "logit", "suppressed", "logit"],
                       [[tok(r["pos_str"][i]), r["pos_values"][i], tok(r["neg_str"][i]), r["neg_values"][i]] for i in range(n)], left=0)]
    return page(f"{sae['id']} latent {r['index']}", body, root=root)


def corpus_sections(sae: dict, f: dict, extra: dict) -> list[str]:
    """A latent's corpus view from the export: top contexts, density, direct-path logits."""
    ex = sae["export"]
    body: list[str] = [h2(f"Top contexts in the corpus ({ex['dataset']}, {ex['n_prompts_total']} windows x {ex['n_tokens_in_prompt']} tokens)"),
            para(f"density: fires on {f['frac_nonzero']:.2%} of the corpus tokens; max {extra['max_activation']:.3f}", "note")]
    if f["activations"]:
        body.append(table(["max", "context (the latent's value behind each token)"], [[a["bin_max"], context(a)] for a in f["activations"]], left=0))
    else:
        body.append(para("never fires on these windows (dead on this corpus).", "bad"))
    n = len(f["pos_str"])
    body += [h2("Direct-path logits (decoder direction -> unembedding)"),
             table(["promoted", "logit", "suppressed", "logit"],
                   [[tok(f["pos_str"][i]), f["pos_values"][i], tok(f["neg_str"][i]), f["neg_values"][i]] for i in range(n)], left=0)]
    return body


LATENTS_PER_PAGE = 256


def latents_index_page(sae: dict, pairs: list[tuple[dict, dict]], k: int) -> str:
    """Page `k` of the dictionary's every-latent index: density, top direct-path logits and the two
    top corpus contexts of each latent, highlighted."""
    root = "../../"
    ex = sae["export"]
    pages = ex["pages"]
    nav = Raw("<p>pages: " + " ".join(esc(n + 1) if n == k else link(f"all-{n}.html", n + 1) for n in range(len(pages))) + "</p>")
    rows = []
    for f, extra in pairs:
        l = f["feature_index"]
        label = link(f"{l}.html", l) if _has_page(sae, l) else l
        contexts = Raw("<br>".join(context(a) for a in f["activations"][:2])) if f["activations"] else "dead on this corpus"
        rows.append([label, extra["mod10_class"] if extra["mod10_class"] is not None else "", f["frac_nonzero"], extra["max_activation"],
                     Raw(" ".join(tok(t) for t in f["pos_str"][:3])), contexts])
    body: list[str] = [para(f"{ex['latents']} latents, {ex['live']} fire on the corpus ({ex['dataset']}, {ex['n_prompts_total']} windows x "
                 f"{ex['n_tokens_in_prompt']} tokens). Export for Neuronpedia / SAEDashboard: {ex['folder']}/.", "note"),
            nav, table(["latent", "class", "density", "max", "top logits (direct)", "top contexts"], rows, left=1), nav]
    first, last = pairs[0][0]["feature_index"], pairs[-1][0]["feature_index"]
    return page(f"{sae['id']}: latents {first}-{last}", body, root=root)
