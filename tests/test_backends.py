"""The inference backend protocol: a run (torch) and its export (onnxruntime) answer the same batches with
the same probabilities, classes and input, and the doodle and image models run on them."""

from __future__ import annotations

import numpy as np
import pytest
from doodle_model import tiny_export, tiny_run
from image_models import digits_export, digits_run

from nnlab.errors import ModelError, NnlabError
from nnlab.inference.models.backends import InputSpec, OnnxBackend, TorchBackend, load_backend
from nnlab.inference.models.doodle import Preprocessing, load_doodle_model
from nnlab.inference.models.image import load_image_model
from nnlab.runs.run import Run


@pytest.mark.parametrize("run_dir, export_dir, task", [(tiny_run, tiny_export, "doodle"),
                                                        (digits_run, digits_export, "classifier")])
def test_torch_and_onnx_backends_answer_a_batch_alike(run_dir, export_dir, task):
    torch_backend, onnx_backend = load_backend(run_dir()), load_backend(export_dir())
    assert isinstance(torch_backend, TorchBackend) and isinstance(onnx_backend, OnnxBackend)
    assert (torch_backend.name, onnx_backend.name) == ("torch", "onnxruntime")
    assert torch_backend.task == onnx_backend.task == task
    assert torch_backend.classes == onnx_backend.classes == Run.open(run_dir()).classes()
    assert torch_backend.input == onnx_backend.input
    shape = [int(n) for n in torch_backend.input.shape[1:]]
    x = np.random.default_rng(0).random((5, *shape), dtype=np.float32)
    p_torch, p_onnx = torch_backend.predict_batch(x), onnx_backend.predict_batch(x)
    assert p_torch.shape == (5, len(torch_backend.classes))
    np.testing.assert_allclose(p_torch.sum(1), 1.0, atol=1e-9)
    np.testing.assert_allclose(p_torch, p_onnx, atol=1e-5)
    assert not np.allclose(p_torch[0], p_torch[1])  # the batch's rows are answered one by one


def test_the_input_spec_is_the_one_preprocessing_json_states():
    run = Run.open(tiny_run())
    prep = Preprocessing.from_config(run.config.data)
    assert InputSpec.from_config(run.config.data) == InputSpec(prep.input_name, tuple(prep.input_shape))
    assert load_backend(tiny_export()).input.shape == ("batch", prep.channels, 32, 32)


def test_doodle_and_image_models_run_on_the_backends():
    doodle = load_doodle_model(tiny_export())
    assert isinstance(doodle.runtime, OnnxBackend) and doodle.backend == "onnxruntime"
    drawing = [np.array([[0, 0], [200, 30], [90, 255]])]
    np.testing.assert_array_equal(doodle.probabilities([drawing]),
                                  doodle.runtime.predict_batch(doodle.prep.to_input([drawing])))
    image = load_image_model(digits_run())
    assert isinstance(image.runtime, TorchBackend) and image.info()["backend"] == "torch"
    digit = np.zeros((8, 8), np.uint8)
    np.testing.assert_array_equal(image.probabilities([digit]),
                                  image.runtime.predict_batch(image.prep.to_input([digit])))


def test_embeddings_are_answered_as_they_are():
    backend = load_backend(digits_run())
    embedding = TorchBackend(backend.module, "embedding", backend.classes, backend.input)
    out = np.array([[0.6, 0.8], [1.0, 0.0]], dtype=np.float32)
    assert embedding.interpret(out) is out
    np.testing.assert_allclose(backend.interpret(np.log(np.array([[1.0, 3.0]]))), [[0.25, 0.75]])


def test_what_is_not_a_model_is_refused(tmp_path):
    with pytest.raises(NnlabError, match="neither a run directory"):
        load_backend(tmp_path)
    with pytest.raises(ModelError, match="unknown task 'audio'"):
        TorchBackend(None, "audio", [], InputSpec("image", ("batch",)))
