"""Pages that need real images say plainly when they show generated ones (issue 25): a visible note, and text
that does not claim what a generated pattern cannot show (an object that stays recognisable)."""
import re
from pathlib import Path

import nbformat
import pytest

from stabkit import robustness
from stabkit.data import cifar_files
from stabkit.report.page import example_note

REPO = Path(__file__).resolve().parents[1]
#: Pages that draw example images, CIFAR-10 when it is found, generated patterns otherwise.
EXAMPLE_PAGES = ("diffeomorphisms", "probe_masking", "probe_patch_shuffle", "probe_resolution")


def test_example_note_warns_only_for_generated_images():
    real = example_note(False, "Examples: CIFAR-10 test images; the object stays recognisable.", "other")
    assert real == "Examples: CIFAR-10 test images; the object stays recognisable."
    gen = example_note(True, "the object stays recognisable", "Only colours remain.")
    assert gen.startswith("```{warning}") and "not CIFAR-10" in gen and "STABKIT_DATA" in gen
    assert gen.rstrip().endswith("Only colours remain.") and "recognisable" not in gen
    with pytest.raises(TypeError, match="generated"):
        example_note("generated", "a", "b")


def test_example_images_say_they_are_generated_without_cifar(tmp_path, monkeypatch):
    monkeypatch.setenv("STABKIT_DATA", str(tmp_path / "nothing"))
    monkeypatch.setenv("STABKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(cifar_files, "shared_data_dir", lambda: None)
    images, source = robustness.example_images(3)
    assert images.shape == (3, 3, 32, 32) and source == robustness.GENERATED_EXAMPLES


@pytest.mark.parametrize("name", EXAMPLE_PAGES)
def test_example_pages_render_the_note_and_claim_nothing_fixed(name):
    nb = nbformat.read(REPO / "notebooks" / f"{name}.ipynb", as_version=4)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert 'glue("example_note", example_note(' in code, f"{name}: glue the examples' note"
    assert re.search(r"\{glue:md\}\s+example_note\s*\n:format: myst", text), f"{name}: render example_note"
    assert not re.search(r"recogni[sz]", text), f"{name}: the fixed text claims an object stays recognisable"
    captions = [c.metadata.get("mystnb", {}).get("figure", {}).get("caption", "") for c in nb.cells]
    assert not any(re.match(r"(Two|Three) test images", cap) for cap in captions), \
        f"{name}: a caption calls the examples test images whatever they are"
