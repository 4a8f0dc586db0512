"""Shift-and-stitch and explicit crops: finer strides from a dense net, checked against crops."""
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import cyconv
from cyconv import zoo
from cyconv.converters import crop_windows, fc_to_conv, receptive_field, shift_and_stitch


def stride32_net(seed=0):
    """No-padding net of total stride 32 on 64x64 crops (each FC window a whole crop):
    5x (conv 2x2 stride 2 + ReLU) -> 2x2 map -> Flatten -> Gemm(6)."""
    rng = np.random.default_rng(seed)
    nodes, inits, x, c = [], [], "input", 2
    for k in range(5):
        w = rng.standard_normal((4, c, 2, 2)).astype(np.float32) * 0.5
        inits.append(numpy_helper.from_array(w, f"w{k}"))
        nodes += [helper.make_node("Conv", [x, f"w{k}"], [f"c{k}"], kernel_shape=[2, 2],
                                   strides=[2, 2]),
                  helper.make_node("Relu", [f"c{k}"], [f"r{k}"])]
        x, c = f"r{k}", 4
    fc = rng.standard_normal((6, 16)).astype(np.float32)
    inits.append(numpy_helper.from_array(fc, "fc"))
    nodes += [helper.make_node("Flatten", [x], ["flat"]),
              helper.make_node("Gemm", ["flat", "fc"], ["output"], transB=1)]
    graph = helper.make_graph(
        nodes, "stride32",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 2, 64, 64])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 6])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def crops_output(engines, model, images, rf, stride):
    windows = crop_windows(images, rf, stride)                   # (N, gy, gx, C, h, w)
    n, gy, gx = windows.shape[:3]
    flat = np.ascontiguousarray(windows.reshape(n * gy * gx, *windows.shape[3:]))
    return engines.cy(model).run(None, {"input": flat})[0].reshape(n, gy, gx, -1) \
        .transpose(0, 3, 1, 2)


@pytest.mark.parametrize("factor,stride", [(2, (16, 16)), ((4, 2), (8, 16))])
def test_stride32_net_reaches_finer_strides(engines, rng, factor, stride):
    model = stride32_net()
    converted = fc_to_conv(model)
    rf = receptive_field(converted)
    assert (rf.stride, rf.size, rf.native, rf.exact) == ((32, 32), (64, 64), (64, 64), True)
    x = rng.standard_normal((2, 2, 130, 150), dtype=np.float32)
    (fine,) = shift_and_stitch(engines.cy(converted), x, rf, factor)
    want = crops_output(engines, model, x, rf, stride)
    assert fine.shape == want.shape == (2, 6, (130 - 64) // stride[0] + 1,
                                        (150 - 64) // stride[1] + 1)
    np.testing.assert_allclose(fine, want, rtol=1e-4, atol=1e-5)


def test_lenet5_every_pixel_position(engines, rng):
    """Factor 4 on LeNet-5's stride 4: the classifier at every pixel offset (33x33 crops)."""
    model = zoo.lenet5()
    converted = fc_to_conv(model)
    rf = receptive_field(converted)
    x = rng.standard_normal((1, 1, 64, 64), dtype=np.float32)
    session = engines.cy(converted)
    (fine,) = shift_and_stitch(lambda t: session.run(None, {"input": t}), x, rf, 4)
    assert fine.shape == (1, 10, 33, 33)
    np.testing.assert_allclose(fine, crops_output(engines, model, x, rf, 1), rtol=1e-4,
                               atol=1e-6)
    # Factor 1 is the plain dense map.
    (plain,) = shift_and_stitch(session, x, rf, 1)
    np.testing.assert_array_equal(plain, session.run(None, {"input": x})[0])


def test_crop_windows_are_views_of_the_right_pixels(rng):
    rf = receptive_field(fc_to_conv(zoo.lenet5()))
    x = rng.standard_normal((2, 1, 40, 45), dtype=np.float32)
    windows = crop_windows(x, rf)
    assert windows.shape == (2, 3, 4, 1, 32, 32) and rf.grid(40, 45) == (3, 4)
    np.testing.assert_array_equal(windows[1, 2, 3], x[1, :, 8:40, 12:44])
    assert np.shares_memory(windows, x)


def test_bad_factor_and_small_images_are_refused(rng):
    rf = receptive_field(fc_to_conv(zoo.lenet5()))
    x = rng.standard_normal((1, 1, 40, 40), dtype=np.float32)
    with pytest.raises(cyconv.ModelError, match="must divide the stride"):
        shift_and_stitch(lambda t: [t], x, rf, 3)
    with pytest.raises(cyconv.InputError, match="smaller than the native crop"):
        shift_and_stitch(lambda t: [t], x[:, :, :20], rf, 2)
    with pytest.raises(cyconv.InputError):
        crop_windows(x[:, :, :20], rf)
