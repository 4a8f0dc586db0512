"""receptive_field: strides, windows, offsets; and the exactness claim checked against crops."""
import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import cyconv
from cyconv import zoo
from cyconv.converters import crop_windows, fc_to_conv, receptive_field
from cyconv.mtcnn import DATA_DIR


def crops_output(engines, model, images, rf, stride=None):
    """The original net on every native crop: (N, K, gy, gx) like a dense map."""
    windows = crop_windows(images, rf, stride)                  # (N, gy, gx, C, h, w)
    n, gy, gx = windows.shape[:3]
    flat = np.ascontiguousarray(windows.reshape(n * gy * gx, *windows.shape[3:]))
    out = engines.cy(model).run(None, {"input": flat})[0]       # (N*gy*gx, K)
    return out.reshape(n, gy, gx, -1).transpose(0, 3, 1, 2)


def test_lenet5_dense_map_equals_all_81_crops(engines, rng):
    model = zoo.lenet5()
    converted = fc_to_conv(model)
    rf = receptive_field(converted)
    assert (rf.stride, rf.size, rf.offset, rf.native, rf.exact) == \
        ((4, 4), (32, 32), (0, 0), (32, 32), True)
    assert receptive_field(model) == rf          # the FC original describes the same windows
    x = rng.standard_normal((2, 1, 64, 64), dtype=np.float32)
    dense = engines.cy(converted).run(None, {"input": x})[0]
    assert dense.shape == (2, 10, 9, 9) and rf.grid(64, 64) == (9, 9)
    want = crops_output(engines, model, x, rf)
    np.testing.assert_allclose(dense, want, rtol=1e-4, atol=1e-6)


def test_pnet_is_exact_at_stride_2(engines, rng):
    pnet = onnx.load(os.path.join(DATA_DIR, "mtcnn_pnet.onnx"))
    rf = receptive_field(pnet)
    assert (rf.stride, rf.size, rf.native, rf.exact) == ((2, 2), (12, 12), (12, 12), True)
    x = rng.standard_normal((1, 3, 30, 26), dtype=np.float32)
    gy, gx = rf.grid(30, 26)
    dense = engines.cy(pnet).run(None, {"input": x})[0][:, :, :gy, :gx]
    np.testing.assert_allclose(dense, crops_output(engines, pnet, x, rf), rtol=1e-4, atol=1e-6)


def test_padding_makes_the_dense_map_approximate(engines, rng):
    """cifar_cnn pads its first conv of each block: dense != crops (near the crop borders)."""
    model = zoo.cifar_cnn()
    rf = receptive_field(model)
    assert (rf.stride, rf.size, rf.offset, rf.exact) == ((4, 4), (36, 36), (-3, -3), False)
    assert any("pads 1,1" in r for r in rf.reasons)
    x = rng.standard_normal((1, 3, 48, 48), dtype=np.float32)
    dense = engines.cy(fc_to_conv(model)).run(None, {"input": x})[0]
    want = crops_output(engines, model, x, rf)
    assert dense.shape == want.shape
    assert np.max(np.abs(dense - want)) > 1e-3 * np.max(np.abs(want))


def test_ceil_mode_overhang_is_reported():
    rnet = onnx.load(os.path.join(DATA_DIR, "mtcnn_rnet.onnx"))
    rf = receptive_field(fc_to_conv(rnet))
    # 22 -> MaxPool 3/2 ceil -> 11: the last window covers rows 20..22, one past the map,
    # so each cell's window reaches one pixel beyond its 24x24 crop.
    assert (rf.stride, rf.size, rf.native, rf.exact) == ((4, 4), (25, 25), (24, 24), False)
    assert len(rf.reasons) == 1 and "ceil-mode" in rf.reasons[0] and "pool1" in rf.reasons[0]


@pytest.mark.parametrize("name,stride,size,offset", [("alexnet", 32, 355, -66),
                                                     ("nin", 4, 55, -10)])
def test_classic_nets(name, stride, size, offset):
    # AlexNet by hand: conv11/4 p2 -> (S 4, R 11, o -2); pool3/2 -> (8, 19); conv5 p2 ->
    # (8, 51, -18); pool3/2 -> (16, 67); 3x conv3 p1 -> (16, 163, -66); pool3/2 -> (32, 195);
    # FC over 6x6 -> R = 195 + 5*32 = 355.
    rf = receptive_field(zoo.ZOO[name]())
    assert (rf.stride, rf.size, rf.offset, rf.exact) == \
        ((stride, stride), (size, size), (offset, offset), False)


def graph_model(nodes, inits, opset=17):
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 1, 16, 16])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(a, n) for n, a in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def test_branches_join_windows_and_refuse_different_strides():
    w = np.ones((1, 1, 3, 3), np.float32)
    joined = graph_model([
        helper.make_node("Conv", ["input", "w"], ["a"], kernel_shape=[3, 3], pads=[1] * 4),
        helper.make_node("Conv", ["a", "w"], ["b"], kernel_shape=[3, 3], pads=[1] * 4),
        helper.make_node("Add", ["a", "b"], ["out"])], {"w": w})
    rf = receptive_field(joined)
    assert (rf.stride, rf.size, rf.offset) == ((1, 1), (5, 5), (-2, -2))
    bad = graph_model([
        helper.make_node("Conv", ["input", "w"], ["a"], kernel_shape=[3, 3], pads=[1] * 4),
        helper.make_node("Conv", ["input", "w"], ["b"], kernel_shape=[3, 3], strides=[2, 2],
                         pads=[1] * 4),
        helper.make_node("Add", ["a", "b"], ["out"], name="join")], {"w": w})
    with pytest.raises(cyconv.ModelError, match="Add 'join' joins branches with strides"):
        receptive_field(bad)


def test_resize_has_no_fixed_window():
    model = graph_model([helper.make_node("Resize", ["input", "", "scales"], ["out"],
                                          name="up")],
                        {"scales": np.array([1, 1, 2, 2], np.float32)})
    with pytest.raises(cyconv.ModelError, match="Resize 'up': no fixed receptive window"):
        receptive_field(model)
