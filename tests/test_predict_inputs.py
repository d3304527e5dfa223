"""`TrainedRun.predict` counts images as a user means them: one RGBA or RGB image, stacks, lists;
shapes that are no image and an empty list are one clear error."""

from __future__ import annotations

import numpy as np
import pytest
from image_models import digits_run

import nnlab


@pytest.fixture(scope="module")
def run():
    return nnlab.load_run(digits_run())


def test_one_image_of_any_channel_count_is_one_prediction(run):
    rng = np.random.default_rng(0)
    for shape in ((112, 92), (112, 92, 1), (112, 92, 3), (112, 92, 4)):
        assert len(run.predict(rng.integers(0, 255, shape, dtype=np.uint8))) == 1, shape


def test_stacks_and_lists_give_one_prediction_each(run):
    rng = np.random.default_rng(1)
    assert len(run.predict(rng.integers(0, 255, (5, 28, 28), dtype=np.uint8))) == 5
    assert len(run.predict(rng.integers(0, 255, (5, 28, 28, 3), dtype=np.uint8))) == 5
    assert len(run.predict(rng.integers(0, 255, (5, 28, 28, 4), dtype=np.uint8))) == 5
    images = [rng.integers(0, 255, s, dtype=np.uint8) for s in ((28, 28), (40, 30, 3), (20, 20, 4))]
    assert len(run.predict(images)) == 3
    # the same image alone and in a stack gets the same answer
    one = rng.integers(0, 255, (28, 28), dtype=np.uint8)
    assert np.allclose(run.predict(one).probs[0], run.predict(np.stack([one, one])).probs[1])


def test_what_is_no_image_is_one_error(run):
    for bad in (np.zeros((2, 3, 28, 28, 1), np.uint8), np.zeros(28, np.uint8), np.zeros((0, 28, 28), np.uint8)):
        with pytest.raises(nnlab.NnlabError, match="not an image"):
            run.predict(bad)
    with pytest.raises(nnlab.NnlabError, match="no images"):
        run.predict([])


def test_checked_strokes_names_the_stroke_at_fault_after_the_one_pass_check():
    from nnlab.errors import DataError
    from nnlab.inference.models.doodle import checked_strokes

    good = [np.array([[0.0, 0.0], [10.0, 5.0]]), np.array([[3.0, 4.0]])]
    assert [a.tolist() for a in checked_strokes(good)] == [a.tolist() for a in good]
    mixed = [np.array([[0.0, 0.0, 0.0], [1.0, 1.0, 16.0]]), np.array([[5.0, 5.0]])]  # with and without time
    assert len(checked_strokes(mixed)) == 2
    for bad, words in [([good[0], np.array([[1.0, np.nan]])], "stroke 1: a coordinate is NaN"),
                       ([good[0], good[1], np.array([[2e6, 0.0]])], "stroke 2:"),
                       ([good[0], np.array([[1.0, 1.0, -5.0]])], "stroke 1:"),
                       ([np.array([[1.0, 1.0, 0.0]]), np.array([[1.0, np.inf]])], "stroke 1: a coordinate is NaN")]:
        with pytest.raises(DataError, match=words.replace("(", r"\(")):
            checked_strokes(bad)
