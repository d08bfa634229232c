"""README.md and docs/: every relative link resolves (file and #anchor), every page is reachable from the
README's table of contents, the README stays short, and the pages speak of the project, not of its making."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "bench" / "RESULTS.md"]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.M | re.S)
PROCESS_WORDS = re.compile(
    r"issue's author|development (session|machine)|the session that|in this session|this round|helper",
    re.I,
)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = FENCE.sub("", page.read_text())
    return {slug(m[1]) for m in re.finditer(r"^#{1,6} +(.+?) *#*$", text, re.M)}


def links(page: Path) -> list[str]:
    return LINK.findall(FENCE.sub("", page.read_text()))


def broken_links(page: Path) -> list[str]:
    """Relative links of a page whose file or heading does not exist."""
    problems = []
    for target in links(page):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            problems.append(f"{target}: no file {dest}")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            problems.append(f"{target}: no heading #{anchor} in {dest.name}")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_relative_links_resolve(page):
    assert broken_links(page) == []


def test_link_check_can_fail(tmp_path):
    (tmp_path / "other.md").write_text("# Other page\n\n## A `code` heading, with punctuation!\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n[ok](other.md#a-code-heading-with-punctuation) [ok](#page) [web](https://example.org/x)\n"
        "[gone](missing.md) [bad anchor](other.md#nowhere) ![img](fig.png)\n"
        "```\n[in code](not-a-link.md)\n```\n"
    )
    assert [p.split(":")[0] for p in broken_links(page)] == ["missing.md", "other.md#nowhere", "fig.png"]


def test_every_docs_page_is_in_the_readme_table():
    linked = {(REPO / t.partition("#")[0]).resolve() for t in links(REPO / "README.md")}
    missing = [p.name for p in sorted((REPO / "docs").glob("*.md")) if p.resolve() not in linked]
    assert missing == [], f"docs pages not linked from README.md: {missing}"


def test_readme_is_short():
    n = len((REPO / "README.md").read_text().splitlines())
    assert n <= 250, f"README.md has {n} lines; move detail into docs/"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_no_process_words(page):
    found = [m[0] for m in PROCESS_WORDS.finditer(page.read_text())]
    assert found == [], f"say what was measured, where, when and with which command, not who: {found}"


README = (REPO / "README.md").read_text()
CI = "pip install -r requirements-ci.txt enables this test"


def test_license_is_mit_with_the_projects_copyright():
    text = (REPO / "LICENSE").read_text()
    assert text.startswith("MIT License\n\nCopyright (c) 2026 the metadrop authors\n")
    assert "Permission is hereby granted, free of charge" in text and "[LICENSE](LICENSE)" in README


def bibtex(text: str) -> list[dict[str, str]]:
    """The fields of each @inproceedings entry of the README's bibtex block."""
    block = re.search(r"^```bibtex\n(.*?)^```", text, re.M | re.S)
    assert block, "no bibtex block in README.md"
    entries = re.findall(r"@inproceedings\{\w+,\n(.*?)\n\}", block[1], re.S)
    return [dict(re.findall(r"^\s*(\w+)\s*=\s*\{(.*)\},?$", e, re.M)) for e in entries]


def test_citation_cff_is_valid_and_lists_the_readmes_papers():
    """CITATION.cff parses, passes the Citation File Format 1.2.0 schema, says MIT as LICENSE does,
    and its references are the README's BibTeX entries (titles, authors in order, years)."""
    ruamel = pytest.importorskip("ruamel.yaml", reason=f"ruamel.yaml is not installed: {CI}")
    jsonschema = pytest.importorskip("jsonschema", reason=f"jsonschema is not installed: {CI}")
    pytest.importorskip("check_jsonschema", reason=f"check-jsonschema is not installed: {CI}")
    import json
    from importlib import resources

    cff = ruamel.YAML(typ="safe", pure=True).load((REPO / "CITATION.cff").read_text())
    schema_file = resources.files("check_jsonschema.builtin_schemas.vendor") / "citation-file-format.json"
    schema = json.loads(schema_file.read_text())
    assert schema["$id"].endswith("/1.2.0/schema.json") and cff["cff-version"] == "1.2.0"
    validator = jsonschema.validators.validator_for(schema)
    assert [e.message for e in validator(schema).iter_errors(cff)] == []
    assert cff["license"] == "MIT" and cff["type"] == "software"
    refs = [
        (r["title"], [f"{a['family-names']}, {a['given-names']}" for a in r["authors"]], r["year"])
        for r in cff["references"]
    ]
    bib = [(e["title"], e["author"].split(" and "), int(e["year"])) for e in bibtex(README)]
    assert len(bib) == 3 and refs == bib


def test_readme_costs_are_the_benchmarks_measurements():
    """Each CPU cell of the README's costs table is bench/RESULTS.md's 2-thread measurement (seconds,
    peak RSS in GiB), and the meta-test warning's arithmetic uses the same figure."""
    rows = re.findall(
        r"^\| 2 \| (.+?) \| (maml|metadrop) \| (train|test) \| ([\d.]+) \|(?:[^|]*\|){5} (\d+) / ",
        (REPO / "bench" / "RESULTS.md").read_text(),
        re.M,
    )
    assert len(rows) == 8
    names = {"maml": "MAML", "metadrop": "Meta-dropout"}
    for setting, model, phase, seconds, rss in rows:
        line = next(x for x in README.splitlines() if x.startswith(f"| {setting} | {names[model]} |"))
        cell = line.split(" | ")[2 if phase == "train" else 3]
        assert cell.startswith(f"{float(seconds):.2f} s, {int(rss) / 1024:.1f} GiB"), (line, seconds, rss)
    episode = next(
        float(s) for st, m, p, s, _ in rows if (st, m, p) == ("Omniglot 20-way 1-shot", "metadrop", "test")
    )
    assert f"1000 x {episode:.2f} s = {1000 * episode / 3600:.1f} h" in README
