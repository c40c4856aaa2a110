"""Every relative link in README.md and docs/*.md leads to a file that exists, and every
#anchor to a heading of its target (GitHub's slugs)."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    found: set[str] = set()
    counts: dict[str, int] = {}
    in_code = False
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_code = not in_code
        heading = re.match(r"#{1,6} (.+)", line)
        if heading and not in_code:
            slug = _slug(heading[1])
            n = counts.get(slug, 0)
            counts[slug] = n + 1
            found.add(slug if n == 0 else f"{slug}-{n}")
    return found


def _links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.DOTALL)
    text = re.sub(r"`[^`\n]*`", "", text)
    return [link for link in LINK.findall(text)
            if not re.match(r"[a-z][a-z0-9+.-]*:", link)]  # http:, https:, mailto:


def test_the_slugs_are_githubs() -> None:
    assert _slug("Choosing a model: `upscale compare`") == "choosing-a-model-upscale-compare"
    assert _slug("Many machines: Ray") == "many-machines-ray"
    assert _slug("Where outputs go, and running again") == "where-outputs-go-and-running-again"


def test_there_are_links_to_check() -> None:
    assert len(PAGES) > 5 and sum(len(_links(page)) for page in PAGES) > 20


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_relative_links_resolve(page: Path) -> None:
    broken = []
    for link in _links(page):
        path, _, anchor = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        if not target.exists():
            broken.append(f"{link}: no such file")
        elif anchor and target.suffix == ".md" and anchor not in _anchors(target):
            broken.append(f"{link}: no heading #{anchor} in {target.name}")
    assert not broken, f"{page.name}: {broken}"


def test_batch_page_lists_every_job_option_with_its_flag() -> None:
    """docs/batch.md's key table cannot drift from the options the YAML jobs take: every
    option field is a row naming its command-line flag, and every row is a real key."""
    from upscaler.config import option_fields

    text = (ROOT / "docs" / "batch.md").read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| `(\w+)` \| [^|]+ \| (.*) \|$", text, re.MULTILINE))
    fields = {f.name: f.flag for f in option_fields()}
    for name, flag in fields.items():
        assert name in rows, f"docs/batch.md has no row for {name}"
        assert f"`{flag}`" in rows[name], f"{name}: the row does not name {flag}"
    assert set(rows) - set(fields) == {"jobs", "defaults", "ray", "input", "output"}
