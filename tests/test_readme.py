"""The front door: README.md stays short, its links lead somewhere, its example runs, and every
page in docs/ can be reached from it."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _links(text):
    """Relative link targets of Markdown links and images (and <img src>), without #anchors."""
    targets = re.findall(r"\]\(([^)\s]+)\)", text) + re.findall(r'<img src="([^"]+)"', text)
    return [t.split("#")[0] for t in targets if not re.match(r"[a-z]+:", t) and t.split("#")[0]]


def test_readme_is_a_front_door_of_at_most_150_lines():
    assert len(README.splitlines()) <= 150


def test_readme_has_the_two_setup_commands_verbatim():
    assert "pip install -e . && python -m minifcn.train" in README
    assert 'pip install -e ".[test]" && python -m pytest' in README


def test_every_relative_link_of_the_readme_and_docs_exists():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    missing = [f"{page.relative_to(ROOT)} -> {target}" for page in pages
               for target in _links(page.read_text(encoding="utf-8"))
               if not (page.parent / target).exists()]
    assert not missing, f"broken links: {missing}"


def test_every_docs_page_is_linked_from_the_readme_or_the_docs_index():
    linked = {(ROOT / t).resolve() for t in _links(README)}
    index = ROOT / "docs" / "README.md"
    linked |= {(index.parent / t).resolve() for t in _links(index.read_text(encoding="utf-8"))}
    orphans = [p.name for p in (ROOT / "docs").glob("*.md")
               if p.resolve() not in linked and p != index]
    assert not orphans, f"docs pages nobody links to: {orphans}"


def test_the_readme_shows_a_committed_picture():
    images = [t for t in _links(README) if t.endswith((".png", ".jpg", ".svg"))]
    assert images and all(t.startswith("docs/") and (ROOT / t).is_file() for t in images)


def test_every_command_in_the_commands_table_exists():
    import importlib.util

    modules = set(re.findall(r"`python -m (minifcn[\w.]*)", README))
    assert {"minifcn.train", "minifcn.evaluate", "minifcn.predict", "minifcn.gradcheck",
            "minifcn.models", "minifcn.experiments.skip_architectures"} <= modules
    for name in modules:
        assert importlib.util.find_spec(name) is not None, name


@pytest.mark.slow
def test_the_readme_example_runs(tmp_path):
    blocks = re.findall(r"```python\n(.*?)```", README, flags=re.S)
    assert blocks, "the README has no python example"
    done = subprocess.run([sys.executable, "-c", blocks[0]], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    loss = float(re.search(r"loss (\d+\.\d+)", done.stdout).group(1))
    assert 0 < loss < 1.55  # log(5) = 1.609 at the start (zero score layers); 4 steps lower it
