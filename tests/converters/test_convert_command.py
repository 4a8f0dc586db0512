"""``cyconv convert fc2conv IN OUT``: writes a model that slides, reports the window; errors are
messages, not tracebacks."""
import numpy as np
import onnx

from cyconv import zoo
from cyconv.cli import main


def test_convert_writes_a_dense_model(tmp_path, capsys, engines, rng):
    src, dst = tmp_path / "lenet.onnx", tmp_path / "lenet_dense.onnx"
    onnx.save(zoo.lenet5(), src)
    assert main(["convert", "fc2conv", str(src), str(dst)]) == 0
    out = capsys.readouterr().out
    assert "window 32x32, stride 4x4" in out and "dense map == explicit crops" in out
    converted = onnx.load(dst)
    x = rng.standard_normal((1, 1, 40, 44), dtype=np.float32)
    assert engines.cy(converted).run(None, {"input": x})[0].shape == (1, 10, 3, 4)


def test_convert_lists_why_a_net_only_approximates(tmp_path, capsys):
    src = tmp_path / "cifar.onnx"
    onnx.save(zoo.cifar_cnn(), src)
    assert main(["convert", "fc2conv", str(src), str(tmp_path / "out.onnx")]) == 0
    out = capsys.readouterr().out
    assert "approximates" in out and "pads 1,1" in out


def test_convert_errors_are_messages(tmp_path, capsys):
    model = zoo.lenet5()
    for d in model.graph.input[0].type.tensor_type.shape.dim[2:]:
        d.Clear()
        d.dim_param = "side"
    src = tmp_path / "symbolic.onnx"
    onnx.save(model, src)
    assert main(["convert", "fc2conv", str(src), str(tmp_path / "out.onnx")]) == 2
    assert "--input-shape" in capsys.readouterr().err
    assert main(["convert", "fc2conv", str(src), str(tmp_path / "out.onnx"),
                 "--input-shape", "1x32x32"]) == 0
