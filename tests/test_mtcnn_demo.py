"""The demo job: MTCNN face detection on the bundled photo as a dense cascade, and its helpers."""
import json
import os

import numpy as np
import pytest

from cyconv.cli import main
from cyconv.imageio import read_png, write_png
from cyconv.mtcnn import DATA_DIR, MTCNN, nms, resize_area


@pytest.fixture(scope="module")
def detector():
    return MTCNN()


@pytest.fixture(scope="module")
def photo():
    return read_png(os.path.join(DATA_DIR, "astronaut.png"))[:, :, :3]


def test_resize_area_matches_explicit_averages(rng):
    image = rng.integers(0, 256, (37, 23, 3)).astype(np.float32)
    for oh, ow in [(12, 12), (20, 9), (37, 23), (50, 30)]:
        got = resize_area(image, oh, ow)
        want = np.zeros((oh, ow, 3))
        for i in range(oh):
            y0, y1 = i * 37 // oh, -(-(i + 1) * 37 // oh)
            for j in range(ow):
                x0, x1 = j * 23 // ow, -(-(j + 1) * 23 // ow)
                want[i, j] = image[y0:y1, x0:x1].mean(axis=(0, 1))
        np.testing.assert_allclose(got, want, atol=1e-3)


def test_resize_area_window_is_a_slice_of_the_full_resize(rng):
    """Tiles of the zoomed image are resized on their own; outside the image they are 0."""
    image = rng.integers(0, 256, (37, 23, 3)).astype(np.float32)
    full = np.zeros((120, 90, 3), np.float32)
    full[20:100, 20:70] = resize_area(image, 80, 50)
    for rows, cols in [((5, 17), (7, 40)), ((-3, 10), (45, 60)), ((70, 90), (-5, 5))]:
        got = resize_area(image, 80, 50, rows=rows, cols=cols)
        want = full[20 + rows[0]:20 + rows[1], 20 + cols[0]:20 + cols[1]]
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-4)


def test_nms_keeps_best_of_overlapping_boxes():
    boxes = np.array([[0, 0, 10, 10, 0.9], [1, 1, 11, 11, 0.95], [50, 50, 60, 60, 0.5]])
    assert nms(boxes, 0.5).tolist() == [1, 2]
    assert nms(boxes, 0.99).tolist() == [1, 0, 2]
    assert nms(np.zeros((0, 5)), 0.5).tolist() == []


def test_png_round_trip(tmp_path, rng):
    for shape in [(5, 7), (5, 7, 3), (4, 3, 4)]:
        image = rng.integers(0, 256, shape).astype(np.uint8)
        write_png(tmp_path / "x.png", image)
        np.testing.assert_array_equal(read_png(tmp_path / "x.png"), image)


def test_cascade_nets_are_dense_on_one_window_grid(detector):
    """PNet as shipped, RNet/ONet converted: strides 2/4/8 for windows 12/24/48."""
    assert [(s.name, s.rf.stride, s.rf.native, s.zoom) for s in detector.stages] == [
        ("PNet", (2, 2), (12, 12), 1), ("RNet", (4, 4), (24, 24), 2),
        ("ONet", (8, 8), (48, 48), 4)]
    assert detector.stages[0].rf.exact and not detector.stages[1].rf.exact


def test_detector_finds_the_one_face(detector, photo):
    boxes, landmarks = detector.detect(photo)
    # One box in all (no false positive at any score), on the face.
    assert len(boxes) == 1 and boxes[0, 4] > 0.99
    x1, y1, x2, y2 = boxes[0, :4]
    # Eileen Collins' face lies in rows 30-150, cols 160-280 of the photo.
    assert 150 <= x1 < x2 <= 290 and 25 <= y1 < y2 <= 190
    eyes = landmarks[0, :2]
    assert np.all((eyes[:, 0] > x1) & (eyes[:, 0] < x2) & (eyes[:, 1] > y1) & (eyes[:, 1] < y2))


def test_dense_maps_match_crop_by_crop_evaluation(detector, photo):
    """The replayed windows: PNet's dense map is exactly its crops; RNet/ONet approximate them
    (their first ceil-mode pool reaches one pixel past a 24/48 crop)."""
    trace = []
    detector.detect(photo[:240, 110:350], trace=trace)   # the face's surroundings: fewer windows
    rows = {r["stage"]: r for r in detector.dense_vs_crops(trace, repeat=1)}
    assert set(rows) == {"PNet", "RNet", "ONet"}
    assert all(r["windows"] > 0 and r["dense_s"] > 0 and r["crops_s"] > 0
               for r in rows.values())
    assert rows["PNet"]["max_prob_diff"] < 1e-5
    assert rows["RNet"]["max_prob_diff"] < 0.5 and rows["ONet"]["max_prob_diff"] < 0.5


def test_demo_command_prints_json_draws_and_times(tmp_path, capsys):
    out = tmp_path / "boxes.png"
    assert main(["demo", "--output", str(out), "--threads", "1", "--runs", "1"]) == 0
    text = capsys.readouterr().out
    report = json.loads(text[:text.index("\n}\n") + 2])
    assert len(report["faces"]) == 1 and report["faces"][0]["score"] > 0.9
    drawn = read_png(out)
    assert drawn.shape == (512, 512, 3)
    assert "median" in text
    assert "dense evaluation speed-up over crop-by-crop:" in text
    for stage in ("PNet", "RNet", "ONet", "total"):
        assert f"\n  {stage} " in text
