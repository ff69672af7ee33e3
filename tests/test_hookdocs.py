from pathlib import Path

from brats_ad import hookspecs
from brats_ad.hookdocs import hook_names, render_hook_reference

DOCS = Path(__file__).resolve().parents[1] / "docs" / "hooks.md"


def test_hook_reference_is_generated_from_docstrings():
    assert DOCS.read_text() == render_hook_reference(), (
        "docs/hooks.md is stale: run `python -m brats_ad.hookdocs > docs/hooks.md`"
    )


def test_every_hook_is_documented_fully():
    text = DOCS.read_text()
    for name in hook_names():
        doc = getattr(hookspecs, name).__doc__ or ""
        assert f"## `{name}(" in text
        for required in (":param registry:", ":return:", "firstresult", "Added in version", "When it runs"):
            assert required in doc, f"{name} docstring lacks {required!r}"
