"""The atlas: JSON schema and round trip, hostile token strings, and the pages in headless Chromium."""

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import jsonschema
import pytest
from conftest import HOSTILE, RUN_TASKS, make_run_model, require_system_package

from successor_lens.artifacts.atlas import SCHEMA_VERSION
from successor_lens.artifacts.atlas_config import AtlasConfig
from successor_lens.artifacts.atlas_schema import SCHEMA, AtlasFormatError, load_atlas
from successor_lens.artifacts.atlas_site import write_atlas
from successor_lens.artifacts.html import script_hash
from successor_lens.artifacts.latent_pages import SCRIPT
from successor_lens.artifacts.neuronpedia import read_export
from successor_lens.features.mine_config import MineConfig
from successor_lens.runner.dictionary_atlas import atlas_for_dictionary
from successor_lens.runner.run import run_pipeline
from successor_lens.runner.run_config import RunConfig
from successor_lens.sae_train.dictionary import load_dictionary, parameters_digest, weights_digest

CONFIG = RunConfig(seeds=1, steps=150, tasks=RUN_TASKS, scan_tasks=RUN_TASKS, mine=MineConfig(null_draws=9), atlas=AtlasConfig(latents=4, corpus="succession-lists", contexts=16, context_tokens=24))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    model = make_run_model()
    result = run_pipeline(model, tmp_path_factory.mktemp("atlas-run"), CONFIG, progress=False, log=lambda _: None)
    return model, result.out / "atlas"


def pages(atlas: Path) -> list[Path]:
    return sorted(atlas.rglob("*.html"))


# --- schema -------------------------------------------------------------------------------------


def test_atlas_json_validates_against_its_schema(run):
    _, atlas = run
    doc = json.loads((atlas / "atlas.json").read_text())
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    jsonschema.validate(doc, SCHEMA, cls=jsonschema.Draft202012Validator)
    assert json.loads((atlas / "atlas.schema.json").read_text()) == SCHEMA
    assert doc["schema_version"] == SCHEMA_VERSION
    broken = json.loads(json.dumps(doc))
    del broken["saes"][0]["latents"][0]["index"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, SCHEMA, cls=jsonschema.Draft202012Validator)


def test_round_trip_rebuilds_the_same_site_from_the_json(run, tmp_path):
    _, atlas = run
    doc = load_atlas(atlas / "atlas.json")
    exports = {sae["id"]: read_export(atlas / sae["export"]["folder"]) for sae in doc["saes"]}
    write_atlas(doc, tmp_path / "again", exports=exports)
    for path in pages(atlas) + [atlas / "atlas.json", atlas / "report.md"] + sorted((atlas / "neuronpedia").rglob("*.json")):
        rel = path.relative_to(atlas)
        assert (tmp_path / "again" / rel).read_bytes() == path.read_bytes(), rel


def test_load_atlas_refuses_an_unknown_major_version(run, tmp_path):
    _, atlas = run
    doc = json.loads((atlas / "atlas.json").read_text())
    doc["schema_version"] = "2.0"
    (tmp_path / "atlas.json").write_text(json.dumps(doc))
    with pytest.raises(AtlasFormatError, match="schema version '2.0'"):
        load_atlas(tmp_path / "atlas.json")


def test_every_page_link_and_image_resolves_to_a_file(run):
    _, atlas = run
    for page in pages(atlas):
        for ref in re.findall(r'(?:src|href)="([^"]+)"', page.read_text()):
            assert (page.parent / ref).resolve().is_file(), f"{page.relative_to(atlas)} -> {ref}"


# --- hostile tokens --------------------------------------------------------------------------


class Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.text = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)

    def handle_data(self, data):
        self.text.append(data)


def test_hostile_tokens_render_as_text(run):
    _, atlas = run
    head = (atlas / "heads" / "L1H2.html").read_text()
    parsed = Collect()
    parsed.feed(head)
    text = "".join(parsed.text)
    assert "script" not in parsed.tags
    assert HOSTILE[0] in text and HOSTILE[1] in text and "bell\\x07" in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in head and "say &quot;hi&quot; &amp; bye" in head
    ours = f"<script>{SCRIPT}</script>"
    for page in pages(atlas):
        source = page.read_text()
        if ours in source:  # the one script a page may hold, allowed by its hash and nothing else
            assert f"script-src '{script_hash(SCRIPT)}'" in source and source.count(ours) == 1, page
        assert "<script" not in source.replace(ours, "").lower() and "\x07" not in source, page


# --- headless Chromium ---------------------------------------------------------------------------

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--enable-logging=stderr", "--v=0"]


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    require_system_package(bool(found), "headless Chromium", "apt-get install chromium")
    return found


def browse(page: Path, profile: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [chromium(), *FLAGS, f"--user-data-dir={profile}", *extra, page.as_uri()]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def console_messages(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "CONSOLE" in line or "Refused" in line]


@pytest.mark.slow
def test_every_kind_of_page_opens_from_disk_at_1280_px_without_overflow_or_console_errors(run, tmp_path):
    from browser import Browser

    _, atlas = run
    doc = json.loads((atlas / "atlas.json").read_text())
    sae = doc["saes"][0]
    kinds = {"index": atlas / "index.html", "report": atlas / "report.html", "head": atlas / doc["heads"]["pages"][0]["page"],
             "dictionary": atlas / sae["export"]["pages"][0], "latent": atlas / sae["latents"][0]["page"]}
    with Browser(tmp_path / "profile", width=1280) as browser:
        for kind, page in kinds.items():
            browser.events.clear()
            browser.open(page)
            assert browser.overflow() <= 0, (kind, browser.overflow())  # no horizontal scroll at 1280 px
            assert browser.errors() == [], (kind, browser.errors())  # no console error, CSP refusal or missing file
            broken = browser.js("Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src)")
            assert broken == [], (kind, broken)
            shrunk = browser.js("Array.from(document.images).filter(i => i.width < i.naturalWidth).map(i => i.src)")
            assert shrunk == [], (kind, shrunk)  # every figure shown at its own size, so its text at the size it was drawn


@pytest.mark.slow
def test_the_latent_index_searches_filters_and_sorts_and_latent_pages_step_by_keyboard(run, tmp_path):
    from browser import Browser

    _, atlas = run
    doc = json.loads((atlas / "atlas.json").read_text())
    sae = doc["saes"][0]
    rows = "Array.from(document.querySelectorAll('#latents tbody tr'))"
    visible = f"{rows}.filter(r => r.style.display !== 'none').map(r => r.dataset.index)"
    with Browser(tmp_path / "profile") as browser:
        browser.open(atlas / sae["export"]["pages"][0])
        every = browser.js(visible)
        assert len(every) == sae["d_sae"]
        member, cls = next((l, int(c)) for c, ls in sae["classes"].items() for l in ls)
        browser.js(f"var c = document.getElementById('cls'); c.value = '{cls}'; c.dispatchEvent(new Event('change'))")
        shown = browser.js(visible)
        assert str(member) in shown and set(shown) == {str(l) for l in sae["classes"][str(cls)]}  # exactly the class's latents
        assert browser.js("document.getElementById('shown').textContent") == str(len(shown))
        browser.js("var c = document.getElementById('cls'); c.value = 'any'; c.dispatchEvent(new Event('change'))")
        texts = browser.js(f"{rows}.map(r => [r.dataset.index, r.dataset.text])")
        token = next(piece for _, t in texts for piece in t.split(" ") if piece.strip())
        browser.js(f"var q = document.getElementById('q'); q.value = {json.dumps(token)}; q.dispatchEvent(new Event('input'))")
        assert browser.js(visible) == [i for i, t in texts if token in t or i == token]  # the rows holding the token (or that latent)
        browser.js("document.querySelector('th[data-sort=density]').click()")  # ascending, then descending
        browser.js("document.querySelector('th[data-sort=density]').click()")
        densities = browser.js(f"{rows}.map(r => parseFloat(r.dataset.density))")
        assert densities == sorted(densities, reverse=True)
        assert browser.errors() == []
        first, second = sae["latents"][0], sae["latents"][1]
        browser.open(atlas / first["page"])
        browser.key("ArrowRight", 39)
        browser.wait_for("Page.loadEventFired")
        assert browser.js("location.pathname").endswith(second["page"])
        browser.key("ArrowLeft", 37)
        browser.wait_for("Page.loadEventFired")
        assert browser.js("location.pathname").endswith(first["page"])
        assert browser.errors() == []


@pytest.mark.slow
def test_chromium_screenshot_shows_the_heatmap(run, tmp_path):
    import matplotlib.image

    _, atlas = run
    shot = tmp_path / "index.png"
    done = browse(atlas / "index.html", tmp_path / "profile", f"--screenshot={shot}", "--window-size=1200,1400")
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    pixels = (matplotlib.image.imread(shot)[..., :3] * 255).round()
    # viridis: its dark end (68, 1, 84) fills the low-score cells, its bright end (253, 231, 37) the planted head
    dark = ((abs(pixels - [68, 1, 84]) < 12).all(-1)).sum()
    bright = ((abs(pixels - [253, 231, 37]) < 12).all(-1)).sum()
    assert dark > 500 and bright > 100, (dark, bright)


# --- one dictionary alone ------------------------------------------------------------------------


def test_atlas_for_a_saved_dictionary_alone(run, tmp_path):
    model, atlas = run
    d = load_dictionary(atlas.parent / "saes" / "mlp0-s0")
    index, summary = atlas_for_dictionary(model, d, tmp_path / "one", AtlasConfig(latents=3), tasks=RUN_TASKS, scan_tasks=RUN_TASKS)
    doc = json.loads((tmp_path / "one" / "atlas" / "atlas.json").read_text())
    assert index == tmp_path / "one" / "atlas" / "index.html"
    jsonschema.validate(doc, SCHEMA, cls=jsonschema.Draft202012Validator)
    assert index.is_file() and doc["probes"] is None and len(doc["saes"]) == 1
    assert doc["saes"][0]["hook_name"] == "blocks.0.hook_mlp_out" and len(doc["saes"][0]["latents"]) == 3
    assert summary[0].startswith("top heads") and summary[1].startswith("L0-mlp_out: ") and len(summary) == 2
    weights = weights_digest(atlas.parent / "saes" / "mlp0-s0")  # the atlas names the very dictionary it describes
    assert doc["saes"][0]["mining"]["weights_sha256"] == doc["provenance"]["run_config"]["weights_sha256"] == weights
    assert doc["saes"][0]["mining"]["parameters_sha256"] == parameters_digest(d.sae)


def test_an_edit_run_in_the_folder_shows_in_the_atlas_and_report(run, tmp_path, capsys):
    from successor_lens.artifacts.atlas_site import refresh_atlas
    from successor_lens.artifacts.stage_files import write_edit
    from successor_lens.probes.edits import Edit

    model, atlas = run
    out = tmp_path / "run"
    shutil.copytree(atlas.parent, out)
    table = [{"metric": "corpus next-token loss (nats)", "before": 1.0, "after": 1.5, "delta": 0.5}]
    write_edit("ablate-L1H2", [Edit("ablate_head", 1, 2)], table, model, out, {"corpus": "test"})
    assert json.loads((out / "edits" / "ablate-L1H2.json").read_text())["name"] == "ablate-L1H2"
    # a record with a hostile name (by hand, or from a version that allowed any name) is escaped everywhere
    hostile = json.loads((out / "edits" / "ablate-L1H2.json").read_text()) | {"name": "ablate <L1H2>"}
    (out / "edits" / "ablate-L1H2.json").write_text(json.dumps(hostile))
    (out / "edits" / "unrelated.json").write_text('{"someone": "else"}')
    (out / "edits" / "broken.json").write_text("{not json")
    refresh_atlas(out)
    doc = json.loads((out / "atlas" / "atlas.json").read_text())
    assert [e["name"] for e in doc["edits"]] == ["ablate <L1H2>"]  # the two others are left out, with a notice
    assert capsys.readouterr().err.count("is not an edit record") == 2
    jsonschema.validate(doc, SCHEMA, cls=jsonschema.Draft202012Validator)
    assert doc["edits"][0]["kpis"] == table
    index = (out / "atlas" / "index.html").read_text()
    assert "Edit: ablate &lt;L1H2&gt;" in index and "corpus next-token loss (nats)" in index
    report = (out / "report.md").read_text()
    assert "## Edit ablate &lt;L1H2&gt;" in report and "<L1H2>" not in report  # Markdown renders raw HTML: escaped


def test_paths_read_back_from_atlas_json_stay_inside_the_atlas(run, tmp_path):
    from successor_lens.artifacts.atlas_site import refresh_atlas
    from successor_lens.errors import UserError

    _, atlas = run
    out = tmp_path / "run"
    shutil.copytree(atlas.parent, out)
    before = {p: p.read_bytes() for p in (out / "atlas").rglob("*") if p.is_file()}
    for field, value in (("page", "../../escaped.html"), ("image", str(tmp_path / "escaped.png"))):
        doc = json.loads((out / "atlas" / "atlas.json").read_text())
        doc["saes"][0]["latents"][0][field] = value
        (out / "atlas" / "atlas.json").write_text(json.dumps(doc))
        with pytest.raises(UserError, match="atlas (page|image) .* points outside"):
            refresh_atlas(out)
        assert not list(tmp_path.rglob("escaped*"))
        (out / "atlas" / "atlas.json").write_bytes(before[out / "atlas" / "atlas.json"])
    assert {p: p.read_bytes() for p in (out / "atlas").rglob("*") if p.is_file()} == before


def test_the_atlas_build_counts_every_file_it_shows_progress_for(run, tmp_path, monkeypatch):
    from successor_lens.artifacts import atlas_site as site

    _, atlas = run
    doc = json.loads((atlas / "atlas.json").read_text())
    seen = []

    class Bar:
        def __init__(self, total, **_):
            self.total, self.n = total, 0

        def update(self, n=1):
            self.n += n

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            seen.append((self.n, self.total))

    monkeypatch.setattr(site, "progress_bar", Bar)
    exports = {sae["id"]: read_export(atlas / sae["export"]["folder"]) for sae in doc["saes"]}
    site.write_atlas(doc, tmp_path / "atlas", exports=exports)
    assert seen and seen[0][0] == seen[0][1] > len(doc["saes"])  # the bar ends full: its total is the work done


# --- figures readable at the size they are shown ---------------------------------------------------


def test_every_figure_is_shown_at_its_own_size_with_text_of_at_least_9_px(run):
    from PIL import Image

    from successor_lens.artifacts.plots import MAX_WIDTH_PX, MIN_TEXT_KEY, MIN_TEXT_PX

    _, atlas = run
    figures = sorted((atlas / "images").glob("*.png"))
    assert len(figures) >= 5
    for path in figures:
        with Image.open(path) as im:  # the pages' column is MAX_WIDTH_PX wide: a wider image would be scaled down, its text with it
            assert im.size[0] <= MAX_WIDTH_PX and float(im.info[MIN_TEXT_KEY]) >= MIN_TEXT_PX, (path.name, im.size, im.info.get(MIN_TEXT_KEY))


def _drawn(monkeypatch) -> list:
    from successor_lens.artifacts import plots

    figures = []
    monkeypatch.setattr(plots, "save", lambda fig, path: figures.append(fig) or Path(path))
    return figures


def test_a_heatmaps_colour_scale_never_makes_a_near_chance_head_look_strong(monkeypatch):
    import torch

    from successor_lens.artifacts import plots

    figures = _drawn(monkeypatch)
    scores = torch.zeros(6, 4)
    scores[3, 2] = 0.125
    plots.head_heatmap(scores, "unused.png", "weak model", null=0.04, bar=0.5, floor=(0.5, "passes the paper's bar"))
    heat, bar = figures[0].axes
    lo, hi = heat.images[0].get_clim()
    assert (lo, hi) == (0.0, 0.5)  # up to the bar: a head at 0.125 is not drawn in the brightest colour
    assert any(abs(line.get_ydata()[0] - 0.04) < 1e-9 for line in bar.lines)  # the null drawn across the colour bar
    assert any(t.get_text().strip() == "chance" for t in bar.texts)  # and labelled
    title = heat.get_title()
    assert "no head passes the paper's bar: best 0.12, chance 0.04" in title and "chance 0.040" in title
    scores[3, 2] = 0.9  # a strong head fills its own scale and nothing says "no head"
    plots.head_heatmap(scores, "unused.png", "strong model", null=0.04, bar=0.5, floor=(0.5, "passes the paper's bar"))
    heat, _ = figures[1].axes
    assert heat.images[0].get_clim() == pytest.approx((0.0, 0.9)) and "no head" not in heat.get_title()


def test_the_copying_map_of_a_model_without_copying_heads_says_so(monkeypatch, tmp_path):
    from successor_lens.artifacts import plots

    figures = _drawn(monkeypatch)
    copying = [[0.05, 0.01], [0.02, 0.03]]
    plots.scan_figures("m", "mlp0", copying, copying, tmp_path, null=0.03)
    heat, _ = figures[1].axes
    assert heat.images[0].get_clim()[1] >= 0.5 and "no head copies" in heat.get_title() and "best 0.05, chance 0.03" in heat.get_title()


@pytest.mark.parametrize("which", ["bars", "offsets"])
def test_legends_lie_outside_the_data(monkeypatch, which):
    from successor_lens.artifacts import plots

    figures = _drawn(monkeypatch)
    if which == "bars":
        plots.grouped_bars({f"series {i}": {f"task {j}": 0.9 for j in range(12)} for i in range(6)}, "unused.png", "t", "success")
    else:
        plots.offset_plot({f"task {i}": {k: 1.0 for k in range(-5, 6)} for i in range(12)} | {"all": {k: 1.0 for k in range(-5, 6)}}, "unused.png", "t")
    fig = figures[0]
    fig.canvas.draw()
    ax = fig.axes[0]
    box, legend = ax.get_window_extent(), ax.get_legend().get_window_extent()
    assert legend.x0 >= box.x1 or legend.y1 <= box.y0  # right of the axes or below them: never over the curves


@pytest.mark.slow
def test_the_decision_page_of_a_tune_opens_in_chromium_and_shows_its_chart(run, tmp_path, monkeypatch):
    import matplotlib.image
    from browser import Browser
    from conftest import list_windows, make_wild_model

    from successor_lens.artifacts.atlas_site import refresh_atlas
    from successor_lens.artifacts.stage_files import tune_folder, write_tune
    from successor_lens.probes.incontext import Prompt
    from successor_lens.probes.tune import Evidence, TuneConfig, tune
    from successor_lens.probes.tune_data import make_splits

    _, atlas = run
    out = tmp_path / "run"
    shutil.copytree(atlas.parent, out)
    wild = make_wild_model(k=0.6)  # its copy-and-increment head L1H0 controls succession
    prompts = [Prompt("numbers", "", [11, a, a + 1, a + 2], a + 3, list(range(10))) for a in range(6) for _ in range(6)]
    search, held = make_splits(prompts, list_windows(8, 24), [], seed=0)
    doc = tune(wild, search, held, Evidence([(1, 0), (1, 1)], (1, 0)), TuneConfig("improve-succession", max_kl=5.0, max_loss_increase=5.0),
               None, None, {"m": "wild"}, log=lambda _: None)
    doc["wall_s"] = 1.0
    write_tune(doc, wild, tune_folder(out, "improve-succession"), {"corpus": "test"})
    from successor_lens.artifacts import atlas_site as site

    site_files = lambda: {p: p.read_bytes() for p in (out / "atlas").rglob("*") if p.is_file()}  # noqa: E731
    before = site_files()
    written = site.add_tune_pages(out)  # what `tune` does: its pages only
    after = site_files()
    changed = {p.relative_to(out / "atlas").as_posix() for p in after if before.get(p) != after[p]}
    assert changed == {"atlas.json", "index.html", "decision-improve-succession.html", "images/pareto-improve-succession.png"}, changed
    assert len(before) > 20 and {p.resolve() for p in written} == {out.resolve() / "atlas" / c for c in changed}

    seen = []

    class Bar:  # the atlas's progress bar counts the decision page and its chart too
        def __init__(self, total, **_):
            self.total, self.n = total, 0

        def update(self, n=1):
            self.n += n

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            seen.append((self.n, self.total))

    monkeypatch.setattr(site, "progress_bar", Bar)
    refresh_atlas(out)
    assert seen and seen[0][0] == seen[0][1]
    atlas_doc = json.loads((out / "atlas" / "atlas.json").read_text())
    jsonschema.validate(atlas_doc, SCHEMA, cls=jsonschema.Draft202012Validator)
    entry = atlas_doc["tunes"][0]
    page = out / "atlas" / entry["page"]
    assert entry["page"] in (out / "atlas" / "index.html").read_text()  # linked from the index
    text = page.read_text()
    assert "Recommended change: scale L1H0 by" in text and "Decision:" in text and "NOT better than its null" not in text
    with Browser(tmp_path / "profile", width=1280) as browser:
        browser.open(page)
        assert browser.errors() == [] and browser.overflow() <= 0
        assert browser.js("Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0).length") == 0
        shot = browser.screenshot(tmp_path / "decision.png")
    pixels = (matplotlib.image.imread(shot)[..., :3] * 255).round()
    star = ((abs(pixels - [214, 39, 40]) < 20).all(-1)).sum()  # tab:red: the recommended edit's star and the budget line
    dots = ((abs(pixels - [31, 119, 180]) < 20).all(-1)).sum()  # tab:blue: the candidates and the Pareto front
    assert star > 50 and dots > 50, (star, dots)


def test_the_class_latent_heatmap_labels_each_class_once_and_each_latent_by_index(monkeypatch):
    import torch

    from successor_lens.artifacts import plots

    figures = _drawn(monkeypatch)
    latent_class = {5: 0, 2: 0, 9: 0, 7: 1, 3: 2}
    plots.class_latent_heatmap(torch.rand(12, 10), latent_class, "unused.png", "t")
    ax = figures[0].axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["2", "5", "9", "7", "3"]  # grouped by class, index order within
    top = [c for c in ax.child_axes if c.get_xticklabels()][0]
    assert [t.get_text() for t in top.get_xticklabels()] == ["class 0", "1", "2"]
    assert sorted(line.get_xdata()[0] for line in ax.lines) == [2.5, 3.5]  # a line between classes
