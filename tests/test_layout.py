"""The README's layout table names every module of harness/ (a newcomer walks the house from it)."""
from nanoproof.paths import REPO_ROOT


def test_readme_layout_names_every_harness_module():
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    layout = readme.split("## Layout\n", 1)[1].split("\n## ", 1)[0]
    missing = []
    for path in sorted((REPO_ROOT / "harness").rglob("*.py")):
        if path.name == "__init__.py":
            continue
        folder = path.parent.relative_to(REPO_ROOT).as_posix()
        start = "| `harness/paths.py`" if folder == "harness" else f"| `{folder}/`"
        row = next((ln for ln in layout.splitlines() if ln.startswith(start)), "")
        if f"`{path.name}`" not in row and f"`{folder}/{path.name}`" not in row:
            missing.append(path.relative_to(REPO_ROOT).as_posix())
    assert not missing, f"README.md's Layout table does not name: {', '.join(missing)}"


def test_every_picture_the_readme_shows_is_a_png_in_the_repo():
    """The README's images (made by scripts/readme_pictures.py) exist, are PNGs and are not empty."""
    import re
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", (REPO_ROOT / "README.md").read_text(encoding="utf-8"))
    assert len(links) >= 4, links
    for link in links:
        path = REPO_ROOT / link
        assert path.is_file(), f"README shows {link}, which is not in the repo (scripts/readme_pictures.py)"
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, f"{link}: not a PNG of a plot"
