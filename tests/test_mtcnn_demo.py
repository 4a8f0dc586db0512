"""The demo job: MTCNN face detection on the bundled astronaut photo, and its helpers."""
import json
import os

import numpy as np

from cyconv.cli import main
from cyconv.imageio import read_png, write_png
from cyconv.mtcnn import DATA_DIR, MTCNN, nms, resize_area


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


def test_detector_finds_the_one_face():
    image = read_png(os.path.join(DATA_DIR, "astronaut.png"))[:, :, :3]
    boxes, landmarks = MTCNN().detect(image)
    assert len(boxes) == 1 and boxes[0, 4] > 0.99
    x1, y1, x2, y2 = boxes[0, :4]
    # Eileen Collins' face lies in rows 30-150, cols 160-280 of the photo.
    assert 150 <= x1 < x2 <= 290 and 25 <= y1 < y2 <= 190
    eyes = landmarks[0, :2]
    assert np.all((eyes[:, 0] > x1) & (eyes[:, 0] < x2) & (eyes[:, 1] > y1) & (eyes[:, 1] < y2))


def test_demo_command_prints_json_and_draws(tmp_path, capsys):
    out = tmp_path / "boxes.png"
    assert main(["demo", "--output", str(out), "--threads", "2"]) == 0
    text = capsys.readouterr().out
    report = json.loads(text[:text.index("\n}\n") + 2])
    assert len(report["faces"]) == 1 and report["faces"][0]["score"] > 0.9
    drawn = read_png(out)
    assert drawn.shape == (512, 512, 3)
    assert "median" in text
