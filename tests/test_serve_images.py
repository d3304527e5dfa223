"""The image demo's API through FastAPI's TestClient: a digits classifier's top-k against torch,
a faces model identifying people against an ORL gallery, and every refusal with its status code."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from image_models import digits_export, digits_run, faces_export, faces_run, huge_png, split_folders
from PIL import Image

from nnlab.errors import NnlabError
from nnlab.inference.faces.embed import list_images
from nnlab.inference.faces.gallery import build_gallery
from nnlab.inference.models.image import ImagePreprocessing, load_image_model, validation_images
from nnlab.runs.run import Run
from nnlab.runs.trained import load_trained
from nnlab.serve.app import create_app
from nnlab.serve.images import MAX_IMAGE_BYTES


def png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def post(client: TestClient, url: str, body: bytes, kind: str = "image/png"):
    r = client.post(url, content=body, headers={"content-type": kind})
    return r.status_code, r.json()


@pytest.fixture(scope="module")
def digits_client() -> TestClient:
    return TestClient(create_app(digits_export()))


@pytest.fixture(scope="module")
def faces(tmp_path_factory, shared_data):
    model = load_image_model(faces_export())
    folders = split_folders(faces_run())
    gallery_dir = build_gallery(model, folders["enrol"]).save(tmp_path_factory.mktemp("g") / "gallery")
    return TestClient(create_app(faces_export(), gallery=gallery_dir)), folders, model


def test_classifier_top_k_matches_torch(digits_client):
    run = Run.open(digits_run())
    images = validation_images(run, 5)
    model = load_trained(run)
    prep = ImagePreprocessing.from_config(run.config.data)
    for image in images:
        status, body = post(digits_client, "/api/predict?top_k=3", png(image))
        assert status == 200, body
        with torch.no_grad():
            probs = torch.softmax(model(torch.from_numpy(prep.to_input([image]))), 1)[0].numpy()
        top = np.argsort(-probs)[:3]
        assert [p["label"] for p in body["predictions"]] == [run.classes()[i] for i in top]
        np.testing.assert_allclose([p["probability"] for p in body["predictions"]], probs[top], atol=1e-5)
    health = digits_client.get("/api/health").json()
    assert health["task"] == "classifier" and health["backend"] == "onnxruntime"
    assert digits_client.get("/api/classes").json()["classes"] == run.classes()
    page = digits_client.get("/")
    assert page.status_code == 200 and "images.js" in page.text and "default-src 'self'" in \
        page.headers["content-security-policy"]
    # no identify route on a classifier
    assert post(digits_client, "/api/identify", png(images[0]))[0] == 404


def test_refusals_have_a_status_and_a_message(digits_client, tmp_path):
    image = png(validation_images(Run.open(digits_run()), 1)[0])
    status, body = post(digits_client, "/api/predict", image, "text/plain")
    assert status == 415 and "Content-Type 'text/plain'" in body["detail"]
    status, body = post(digits_client, "/api/predict", b"", "image/png")
    assert status == 422 and "empty" in body["detail"]
    status, body = post(digits_client, "/api/predict", b"\x89PNG\r\n\x1a\ngarbage" * 10)
    assert status == 422 and "cannot read image upload" in body["detail"]
    assert "BytesIO" not in body["detail"] and " at 0x" not in body["detail"]  # no repr of a file object
    status, body = post(digits_client, "/api/predict", image[: len(image) // 2])  # truncated
    assert status == 422 and "cannot read image" in body["detail"]
    status, body = post(digits_client, "/api/predict", huge_png(tmp_path / "h.png").read_bytes())
    assert status == 413 and "at most 16,000,000 pixels" in body["detail"]
    status, body = post(digits_client, "/api/predict", b"\0" * (MAX_IMAGE_BYTES + 1))
    assert status == 413 and "too large" in body["detail"]
    for k in (0, 11):
        status, body = post(digits_client, f"/api/predict?top_k={k}", image)
        assert status == 422 and "top_k" in body["detail"]
    status, body = post(digits_client, "/api/predict?top_k=abc", image)  # before: FastAPI's list of dicts
    assert status == 422 and body["detail"] == "top_k: Input should be a valid integer, unable to parse string " \
        "as an integer (got 'abc')", body
    # a browser gives a PGM no image type: octet-stream is accepted
    buf = io.BytesIO()
    Image.fromarray(validation_images(Run.open(digits_run()), 1)[0]).save(buf, format="PPM")
    assert post(digits_client, "/api/predict", buf.getvalue(), "application/octet-stream")[0] == 200


def test_identify_enrolled_people_and_strangers(faces):
    client, folders, model = faces
    probes, impostors = list_images([folders["probes"]]), list_images([folders["impostors"]])
    threshold = model.threshold()
    answers = []
    for path, label in list(zip(probes.paths, probes.labels, strict=True))[::3] + \
            list(zip(impostors.paths, impostors.labels, strict=True))[::10]:
        status, body = post(client, "/api/identify", path.read_bytes(), "image/x-portable-graymap")
        assert status == 200, body
        assert body["threshold"] == pytest.approx(threshold)
        assert body["accepted"] == (body["similarity"] >= threshold)
        assert body["identity"] == (body["best"] if body["accepted"] else "unknown")
        answers.append((label, body))
    genuine = [(lab, b) for lab, b in answers if lab in probes.labels]
    strangers = [b for lab, b in answers if lab not in probes.labels]
    assert len(genuine) == 30 and len(strangers) == 30
    assert np.mean([b["best"] == lab for lab, b in genuine]) >= 0.6
    assert np.mean([b["identity"] == "unknown" for b in strangers]) >= 0.9
    health = client.get("/api/health").json()
    assert health["task"] == "embedding" and health["gallery"]["people"] == 10
    assert health["gallery"]["search"] == "numpy"
    assert sorted(client.get("/api/classes").json()["classes"]) == sorted(set(probes.labels))
    assert post(client, "/api/predict", probes.paths[0].read_bytes())[0] == 404
    assert post(client, "/api/identify", b"not an image", "image/jpeg")[0] == 422


def test_gallery_flag_must_fit_the_model(faces, tmp_path):
    with pytest.raises(NnlabError, match="--gallery GALLERY"):
        create_app(faces_export())
    with pytest.raises(NnlabError, match="--gallery is for embedding models"):
        create_app(digits_export(), gallery=tmp_path)
