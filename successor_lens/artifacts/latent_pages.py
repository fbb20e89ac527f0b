"""Every latent's page and each dictionary's searchable index, formatted from the atlas document and
the Neuronpedia export (read back from disk), as static files that open from disk.

One small script (`SCRIPT`) filters and sorts the index and gives the latent pages keyboard
previous / next; the pages' Content-Security-Policy allows that script by its sha256 and nothing
else (no other script, no network). Everything works without it but the filters and the keys.
"""

from __future__ import annotations

from successor_lens.artifacts.html import Raw, context_html, esc, h2, img, link, page, para, table, tok, visible
from successor_lens.artifacts.plain import fit_warnings, flagged
from successor_lens.filenames import INDEX

MAX_LATENT_PAGES = 16384
"""The most latent pages one dictionary gets (`AtlasConfig.latents`' ceiling): beyond, a page each
would make the atlas too large to open from disk, and the index says how many have none."""

SCRIPT = """(function(){var d=document;
d.addEventListener('keydown',function(e){var t=e.target&&e.target.tagName;if(t==='INPUT'||t==='SELECT'||e.altKey||e.ctrlKey||e.metaKey)return;
var id=(e.key==='ArrowLeft'||e.key==='k')?'prev':(e.key==='ArrowRight'||e.key==='j')?'next':null;var a=id&&d.getElementById(id);if(a&&a.href){location.href=a.href;}});
var t=d.getElementById('latents');if(!t)return;var body=t.tBodies[0],rows=Array.prototype.slice.call(body.rows);
var q=d.getElementById('q'),c=d.getElementById('cls'),m=d.getElementById('dmin'),live=d.getElementById('live'),n=d.getElementById('shown');
function apply(){var s=q.value.trim().toLowerCase(),k=0,lo=parseFloat(m.value)||0;rows.forEach(function(r){var den=parseFloat(r.getAttribute('data-density'));
var ok=(!s||r.getAttribute('data-text').indexOf(s)>=0||r.getAttribute('data-index')===s)&&(c.value==='any'||r.getAttribute('data-class')===c.value)
&&den>=lo&&(!live.checked||den>0);r.style.display=ok?'':'none';if(ok)k++;});n.textContent=String(k);}
[q,c,m,live].forEach(function(e){e.addEventListener('input',apply);e.addEventListener('change',apply);});
Array.prototype.forEach.call(t.tHead.rows[0].cells,function(th){var key=th.getAttribute('data-sort');if(!key)return;th.tabIndex=0;
function sort(){var up=th.getAttribute('data-dir')!=='asc';th.setAttribute('data-dir',up?'asc':'desc');rows.sort(function(a,b){
var x=a.getAttribute('data-'+key),y=b.getAttribute('data-'+key),nx=parseFloat(x),ny=parseFloat(y);
var v=(isNaN(nx)||isNaN(ny))?(x<y?-1:x>y?1:0):nx-ny;return up?v:-v;});rows.forEach(function(r){body.appendChild(r);});}
th.addEventListener('click',sort);th.addEventListener('keydown',function(e){if(e.key==='Enter')sort();});});
if(location.hash.indexOf('#q=')===0){q.value=decodeURIComponent(location.hash.slice(3));}apply();})();"""
def svg_bars(heights: list[float], centres: list[float], xlabel: str, ylabel: str, width: int = 520, height: int = 150) -> Raw:
    """A bar chart as inline SVG (no image file, no script): each bar's range and count on hover."""
    if not heights:
        return para("no activations on these windows.", "note")
    pad_l, pad_b, pad_t = 44, 30, 8
    w, h = width - pad_l - 6, height - pad_b - pad_t
    top = max(max(heights), 1e-12)
    step = (centres[1] - centres[0]) if len(centres) > 1 else 1.0
    bar_w = w / len(heights)
    bars = "".join(
        f'<rect x="{pad_l + i * bar_w:.1f}" y="{pad_t + h * (1 - v / top):.1f}" width="{max(bar_w - 1, 1):.1f}" height="{h * v / top:.1f}" fill="#4c72b0">'
        f"<title>{c - step / 2:.3g} to {c + step / 2:.3g}: {v:.0f}</title></rect>" for i, (v, c) in enumerate(zip(heights, centres)))
    lo, hi = centres[0] - step / 2, centres[-1] + step / 2
    axis = (f'<line x1="{pad_l}" y1="{pad_t + h}" x2="{pad_l + w}" y2="{pad_t + h}" stroke="#555"/>'
            f'<text x="{pad_l}" y="{height - 14}" font-size="11">{lo:.3g}</text>'
            f'<text x="{pad_l + w}" y="{height - 14}" font-size="11" text-anchor="end">{hi:.3g}</text>'
            f'<text x="{pad_l + w / 2}" y="{height - 2}" font-size="11" text-anchor="middle">{esc(xlabel)}</text>'
            f'<text x="{pad_l - 4}" y="{pad_t + 10}" font-size="11" text-anchor="end">{top:.0f}</text>'
            f'<text x="{pad_l - 4}" y="{pad_t + h}" font-size="11" text-anchor="end">0</text>'
            f'<text x="10" y="{pad_t + h / 2}" font-size="11" text-anchor="middle" transform="rotate(-90 10 {pad_t + h / 2})">{esc(ylabel)}</text>')
    return Raw(f'<svg class="hist" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="{esc(xlabel)} histogram">'
               f"{bars}{axis}</svg>")


def _linked(sae: dict, latent: int, pages: set[int]) -> Raw | int:
    """A latent id, linked to its page when it has one (pages beside each other in latents/ID/)."""
    return link(f"{latent}.html", latent) if latent in pages else latent


def _logit_table(pos_str, pos_values, neg_str, neg_values) -> Raw:
    n = min(len(pos_str), len(neg_str))
    return table(["promoted", "logit", "suppressed", "logit"], [[tok(pos_str[i]), pos_values[i], tok(neg_str[i]), neg_values[i]] for i in range(n)], left=0)


def latent_page(sae: dict, r: dict, exported: tuple[dict, dict] | None, pages: set[int], prev: int | None, nxt: int | None) -> str:
    """One latent: its corpus view (top contexts without repeats, quantile groups, histogram, logits;
    each token's value and next-token logit effect on hover), its mod-10 class on the task items,
    the analysed head's OV logits, and its neighbours, all linked."""
    sid, l = sae["id"], r["index"]
    nav = Raw('<p class="keys">' + " ".join([
        str(link(INDEX, f"all {sae['d_sae']} latents of {sid}")),
        link(f"{prev}.html", Raw(f"&larr; latent {prev}"), "prev") if prev is not None else "",
        link(f"{nxt}.html", Raw(f"latent {nxt} &rarr;"), "next") if nxt is not None else "",
        '<span class="note">keys: &larr; / &rarr; (or k / j)</span>']) + "</p>")
    cls = r["mod10_class"]
    body: list[str] = [nav, para(f"mod-10 class: {cls if cls is not None else 'none'} (best class {r['best_class']}, selectivity "
                                 f"{r['selectivity']:.2f}; chance 0.10); fires on {r['frac_nonzero']:.1%} of the task items, max {r['maxActApprox']:.3f}")]
    if exported:
        body += corpus_sections(sae, *exported, with_head=bool(r["logit_head"]))
    if r["logit_head"]:
        body += [h2(f"Logits through {r['logit_head']}'s OV circuit (decoder direction -> OV -> unembedding)"),
                 _logit_table(r["pos_str"], r["pos_values"], r["neg_str"], r["neg_values"])]
    body += [h2("Mean activation per class (index mod 10) over the task items"), table(["class"] + list(range(10)), [["mean"] + r["class_profile"]]),
             h2("Activation histogram over the task items (non-zero)"), img("../../" + r["image"], f"activation histogram of latent {l} over the items"),
             h2("Top activating task items"),
             table(["token", "task", "index", "activation"], [[tok(a["tokens"][0]), a["task"], a["item_index"], a["values"][0]] for a in r["activations"]], left=2),
             h2("Decoder-direction neighbours"),
             table(["latent", "cosine"], [[_linked(sae, i, pages), c] for i, c in zip(r["decoder_neighbours"]["indices"], r["decoder_neighbours"]["cosines"])])]
    if exported and exported[0]["correlated_features_indices"]:
        f = exported[0]
        body += [h2("Latents that fire with it on the corpus"),
                 table(["latent", "pearson", "cosine"], [[_linked(sae, i, pages), p, c] for i, p, c in
                                                          zip(f["correlated_features_indices"], f["correlated_features_pearson"], f["correlated_features_l1"])])]
    return page(f"{sid} latent {l}", body, root="../../", script=SCRIPT)


def corpus_sections(sae: dict, f: dict, extra: dict, with_head: bool = False) -> list[str]:
    """A latent's corpus view from the export."""
    ex = sae["export"]
    n_top = extra.get("n_top", len(f["activations"]))
    effects = extra.get("context_logit_effects") or [None] * len(f["activations"])
    rows = lambda acts, eff: [[a["bin_max"], context_html(a, e)] for a, e in zip(acts, eff)]  # noqa: E731
    body: list[str] = [h2(f"Top activations on the corpus ({ex['dataset']}, {ex['n_prompts_total']} windows x {ex['n_tokens_in_prompt']} tokens)"),
                       para(f"fires on {f['frac_nonzero']:.3%} of the corpus tokens; max {extra['max_activation']:.3f}. One context per window, none "
                            "repeating another's text. Hover a token: the latent's value there | its direct effect on the next token's logit.", "note")]
    if n_top:
        body.append(table(["activation", "context"], rows(f["activations"][:n_top], effects[:n_top]), left=0))
    else:
        body.append(para("never fires on these windows (dead on this corpus).", "bad"))
    groups = f["activations"][n_top:]
    if groups:
        body += [h2("Quantile groups: activations sampled across its range"),
                 para("(0, max] cut into equal intervals; contexts drawn at random from each (SAEDashboard's quantile groups); the share is the "
                      "interval's share of all its activations.", "note"),
                 table(["interval", "share", "activation", "context"],
                       [[f"{a['bin_min']:.3g} - {a['bin_max']:.3g}", a["bin_contains"], max(a["values"]), context_html(a, e)]
                        for a, e in zip(groups, effects[n_top:])], left=0)]
    body += [h2("Activation histogram on the corpus (non-zero activations)"),
             svg_bars(f["freq_hist_data_bar_heights"], f["freq_hist_data_bar_values"], "activation", "tokens"),
             h2("Direct logit effect (decoder direction -> unembedding)"), _logit_table(f["pos_str"], f["pos_values"], f["neg_str"], f["neg_values"])]
    if extra.get("head_ov") and not with_head:  # (the latent page shows the item record's, the same numbers)
        ov = extra["head_ov"]
        body += [h2(f"Through {ov['head']}'s OV circuit"), _logit_table(ov["pos_str"], ov["pos_values"], ov["neg_str"], ov["neg_values"])]
    return body


def _fit(settings: dict) -> list[str]:
    fit = settings.get("fit_on_these_windows") or {}
    spliced = fit.get("spliced") or {}
    trained = settings.get("trained_on") or {}
    same = trained.get("corpus") is not None and trained.get("corpus") == settings.get("dataset")
    words = (f"Trained on {trained.get('data', 'data this package has no record of')}: "
             + ("the corpus these pages show." if same else "not the corpus these pages show, so the fit below is measured on data it was not "
                "trained on (the training-time figures are in the atlas index)."))
    rec = spliced.get("loss_recovered")
    return [h2("Fit on the corpus these pages show"), para(words, "" if same else "bad"),
            table(["FVU", "L0", "dead", "loss clean", "loss spliced in", "loss zero-ablated", "loss recovered (spliced in)", "KL to clean", "tokens"],
                  [[flagged(fit.get("fvu"), 0.0, 1.0), fit.get("l0"), fit.get("dead_frac"), spliced.get("clean"), spliced.get("spliced"),
                    spliced.get("zero_ablated"), "n/a" if rec is None else flagged(rec, 0.0, 1.0), spliced.get("kl_spliced"), fit.get("tokens")]],
                  left=0),
            *[para(w, "bad") for w in fit_warnings(fit.get("fvu"), rec)],
            para(f"FVU, L0 and dead fraction over all {fit.get('tokens')} counted tokens; the losses over the first "
                 f"{(spliced.get('windows') or ['?'])[0]} windows.", "note")]


def dictionary_page(sae: dict, pairs: list[tuple[dict, dict]], settings: dict, pages: set[int]) -> str:
    """The dictionary's index: its fit on the displayed corpus, then every latent, searchable by
    token, sortable and filterable (density, max activation, mod-10 class)."""
    ex = sae["export"]
    rows = []
    for f, extra in pairs:
        l = f["feature_index"]
        shown = list(dict.fromkeys(a["tokens"][a["qualifying_token_index"]] for a in f["activations"][: extra.get("n_top", 0)]))[:5]
        cls = extra["mod10_class"]
        text = " ".join([visible(t) for t in shown] + [visible(t) for t in f["pos_str"][:3]]).lower()
        rows.append(f'<tr data-index="{l}" data-class="{"" if cls is None else cls}" data-density="{f["frac_nonzero"]}" '
                    f'data-max="{extra["max_activation"]}" data-text="{esc(text)}"><td class="l">{_linked(sae, l, pages)}</td>'
                    f'<td>{"" if cls is None else cls}</td><td>{f["frac_nonzero"]:.4f}</td><td>{extra["max_activation"]:.3f}</td>'
                    f'<td class="l">{" ".join(tok(t) for t in shown)}</td><td class="l">{" ".join(tok(t) for t in f["pos_str"][:3])}</td></tr>')
    missing = len(pairs) - len(pages)
    controls = Raw('<p class="filters"><label>search tokens <input id="q" type="search" placeholder="e.g. Monday or 7"></label> '
                   '<label>class <select id="cls"><option value="any">any</option><option value="">none</option>'
                   + "".join(f'<option value="{c}">{c}</option>' for c in range(10)) + "</select></label> "
                   '<label>density at least <input id="dmin" type="number" min="0" max="1" step="0.001" value="0"></label> '
                   '<label><input id="live" type="checkbox"> live only</label> '
                   f'<span class="note"><span id="shown">{len(pairs)}</span> of {len(pairs)} shown; click a column to sort</span></p>')
    head = ('<thead><tr><th class="l" data-sort="index">latent</th><th data-sort="class">class</th><th data-sort="density">density</th>'
            '<th data-sort="max">max act</th><th class="l">top tokens (corpus)</th><th class="l">top direct logits</th></tr></thead>')
    body: list[str] = [Raw(f'<p>{link("../../" + INDEX, "atlas index")}</p>'),
                       para(f"{sae['hook_name']}, {sae['architecture']}, {sae['d_in']} -> {sae['d_sae']} latents; {ex['live']} fire on the corpus "
                            f"({ex['dataset']}, {ex['n_prompts_total']} windows x {ex['n_tokens_in_prompt']} tokens). Neuronpedia / SAEDashboard "
                            f"export: {ex['folder']}/."),
                       *_fit(settings)]
    if missing > 0:
        body.append(para(f"{missing} of {len(pairs)} latents have no page of their own: more than {len(pages)} pages would make the atlas too "
                         "large to open from disk (raise --latents, up to 16384); they are in this table and in the export.", "bad"))
    body += [h2("Every latent"), controls, Raw(f'<table id="latents">{head}<tbody>{"".join(rows)}</tbody></table>')]
    return page(f"{sae['id']}: every latent", body, root="../../", script=SCRIPT)
