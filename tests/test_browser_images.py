"""The image demo in a real browser (Debian's Chromium via Playwright, headless, off the network):
pick an image, see the top-k of a digits classifier; pick a face, see who it is (or unknown).
Screenshots go to test-artifacts/."""

from __future__ import annotations

import numpy as np
import pytest
from browser import ARTIFACTS, CHROMIUM, SKIP_REASON, chromium_page, served
from image_models import digits_export, digits_run, faces_export, faces_run, split_folders
from PIL import Image

if not CHROMIUM.is_file():
    pytest.skip(SKIP_REASON, allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="browser test skipped: the playwright package "
                               "is not installed (pip install -e '.[dev]')")


def _png(image: np.ndarray, path, scale: int = 1):
    Image.fromarray(image).resize((image.shape[1] * scale, image.shape[0] * scale), Image.NEAREST).save(path)
    return path


def _shown(page) -> list[tuple[str, str]]:
    return page.eval_on_selector_all("#results li.filled", "els => els.map(e => "
                                     "[e.querySelector('.word').textContent, e.querySelector('.pct').textContent])")


def test_pick_an_image_and_see_the_top_3(tmp_path, browser):
    from fastapi.testclient import TestClient

    from nnlab.inference.models.image import validation_images
    from nnlab.runs.run import Run
    from nnlab.serve.app import create_app

    run = Run.open(digits_run())
    file = _png(validation_images(run, 1)[0], tmp_path / "digit.png", scale=16)
    app = create_app(digits_export())
    expected = TestClient(app).post("/api/predict?top_k=3", content=file.read_bytes(),
                                    headers={"content-type": "image/png"}).json()["predictions"]
    with served(app) as url, chromium_page(browser, url) as page:
        page.goto(url + "/")
        page.wait_for_function("document.getElementById('class-count').textContent === '(10)'")
        assert "backend: onnxruntime" in page.text_content("#backend")
        page.set_input_files("#file", str(file))
        page.wait_for_function("document.querySelectorAll('#results li.filled').length === 3", timeout=20_000)
        shown = _shown(page)
        assert [w for w, _ in shown] == [p["label"] for p in expected]
        assert [pct for _, pct in shown] == [f"{100 * p['probability']:.1f}%" for p in expected]
        assert page.text_content("#verdict") == f"It looks like {expected[0]['label']}"
        page.wait_for_function("!document.getElementById('preview').hidden")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "browser-image.png"))
        # a file that is not an image: the server's message is shown
        (tmp_path / "notes.png").write_bytes(b"not an image at all")
        page.set_input_files("#file", str(tmp_path / "notes.png"))
        page.wait_for_function("document.getElementById('status').classList.contains('error')")
        assert "422: cannot read image" in page.text_content("#status")
        assert not [p for p in page.problems if "422" not in p], page.problems


def test_pick_a_face_and_see_who_it_is(tmp_path, shared_data, browser):
    from nnlab.inference.faces.embed import list_images
    from nnlab.inference.faces.gallery import build_gallery
    from nnlab.inference.models.image import load_image_model
    from nnlab.ingest.image_files import read_image
    from nnlab.serve.app import create_app

    folders = split_folders(faces_run())
    model = load_image_model(faces_export())
    gallery = build_gallery(model, folders["enrol"])
    gallery_dir = gallery.save(tmp_path / "gallery")
    probes = list_images([folders["probes"]])
    matches = gallery.identify(model.embed([read_image(p) for p in probes.paths]), model.threshold())
    known = next(i for i, m in enumerate(matches) if m.accepted and m.best == probes.labels[i])
    face = _png(read_image(probes.paths[known]), tmp_path / "face.png")
    with served(create_app(faces_export(), gallery=gallery_dir)) as url, chromium_page(browser, url) as page:
        page.goto(url + "/")
        page.wait_for_function("document.getElementById('mode').textContent === 'faces'")
        assert "10 people enrolled" in page.text_content("#model-info")
        page.set_input_files("#file", str(face))
        page.wait_for_selector("#identity", timeout=20_000)
        assert page.text_content("#identity") == probes.labels[known]
        assert page.text_content("#verdict").startswith("This is ")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "browser-face.png"))
        assert not page.problems, page.problems
