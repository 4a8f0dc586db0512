"""fc_to_conv on the acceptance nets and on hand-built heads: native outputs kept, dense
outputs on larger images agree between cyconv and ONNX Runtime, unconvertible heads named."""
import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import cyconv
from cyconv import zoo
from cyconv.converters import fc_to_conv
from cyconv.mtcnn import DATA_DIR


def mtcnn(name):
    return onnx.load(os.path.join(DATA_DIR, f"mtcnn_{name}.onnx"))


# name -> (builder, native (C, S), larger side for the dense run)
NETS = {
    "lenet5": (zoo.lenet5, (1, 32), 64),
    "cifar_cnn": (zoo.cifar_cnn, (3, 32), 52),
    "nin": (zoo.nin, (3, 32), 47),
    "alexnet": (zoo.alexnet, (3, 224), 256),
    "rnet": (lambda: mtcnn("rnet"), (3, 24), 57),
    "onet": (lambda: mtcnn("onet"), (3, 48), 83),
}


def native_then_dense(engines, model, channels, side, big, rng, batch=2, check=True):
    """Convert; check native outputs (N,K)->(N,K,1,1) equal; run densely on both engines."""
    converted = fc_to_conv(model)
    if check:   # (fc_to_conv checks a weightless copy; this is the full model, bytes included)
        onnx.checker.check_model(converted, full_check=True)
    dims = converted.graph.input[0].type.tensor_type.shape.dim
    assert dims[2].dim_param and dims[3].dim_param, "height/width must become symbolic"

    session = engines.cy(converted)
    x = rng.standard_normal((batch, channels, side, side), dtype=np.float32)
    want = engines.cy(model).run(None, {"input": x})
    got = session.run(None, {"input": x})
    for g, w in zip(got, want):
        assert g.shape == (*w.shape, 1, 1)
    engines.check([g.reshape(w.shape) for g, w in zip(got, want)], want, "native size")

    x = rng.standard_normal((1, channels, big, big), dtype=np.float32)
    dense = session.run(None, {"input": x})
    engines.check(dense, engines.ort(converted).run(None, {"input": x}), "dense vs ORT")
    return converted, dense


@pytest.mark.parametrize("name", sorted(NETS))
def test_acceptance_nets_convert_keep_outputs_and_slide(engines, rng, name):
    build, (channels, side), big = NETS[name]
    small = side < 200
    _, dense = native_then_dense(engines, build(), channels, side, big, rng,
                                 batch=2 if small else 1, check=small)
    assert dense[0].shape[2] > 1 and dense[0].shape[3] > 1


def test_vgg16_slides_one_step(engines, rng):
    # Expensive on 2 cores (15 GFLOP per 224 image): one modest dense size, 256 -> 2x2 windows.
    _, dense = native_then_dense(engines, zoo.vgg16(), 3, 224, 256, rng, batch=1, check=False)
    assert dense[0].shape == (1, 1000, 2, 2)


def test_global_pool_head_becomes_a_sliding_window(engines, rng):
    """GoogLeNet: GlobalAveragePool -> Flatten -> Dropout -> Gemm."""
    model = zoo.googlenet(input_size=64, num_classes=10)
    converted, dense = native_then_dense(engines, model, 3, 64, 96, rng)
    pools = [n for n in converted.graph.node if n.op_type == "AveragePool"]
    assert not any(n.op_type.startswith("Global") for n in converted.graph.node)
    assert [a.ints for a in pools[-1].attribute if a.name == "kernel_shape"] == [[2, 2]]
    assert dense[0].shape == (1, 10, 2, 2)


def test_mtcnn_transpose_is_folded_and_shape_chain_removed():
    converted = fc_to_conv(mtcnn("onet"))
    ops = {n.op_type for n in converted.graph.node}
    assert ops == {"Conv", "PRelu", "MaxPool", "Softmax"}
    first_fc = next(n for n in converted.graph.node if n.output[0] == "/dense5/Gemm_output_0")
    weight = next(t for t in converted.graph.initializer if t.name == first_fc.input[1])
    assert list(weight.dims) == [256, 128, 3, 3]
    slope = next(t for t in converted.graph.initializer
                 if t.name.startswith("prelu5.weight"))
    assert list(slope.dims) == [256, 1, 1]


def test_input_model_is_not_modified():
    model = zoo.lenet5()
    before = model.SerializeToString()
    fc_to_conv(model)
    assert model.SerializeToString() == before


def test_accepts_path_and_bytes(tmp_path):
    path = tmp_path / "lenet.onnx"
    onnx.save(zoo.lenet5(), path)
    from_path = fc_to_conv(str(path))
    from_bytes = fc_to_conv(path.read_bytes())
    assert from_path.SerializeToString() == from_bytes.SerializeToString()


# ---------------------------------------------------------------- hand-built heads
def head_model(head, opset=17, side=8, channels=4, extra_inits=(), rng=None):
    """input (N, 3, side, side) -> 3x3 conv to ``channels`` -> ``head`` nodes -> "out".

    ``head(feature_name, F)`` returns (nodes, initializers); F = channels * (side-2)^2.
    """
    rng = rng or np.random.default_rng(1)
    w = rng.standard_normal((channels, 3, 3, 3)).astype(np.float32) * 0.3
    nodes = [helper.make_node("Conv", ["input", "cw"], ["feat"], kernel_shape=[3, 3])]
    more_nodes, inits = head("feat", channels * (side - 2) ** 2)
    graph = helper.make_graph(
        nodes + more_nodes, "head",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, side, side])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(w, "cw"), *inits, *extra_inits])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def const(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def test_matmul_bias_prelu_and_reshape_head(engines, rng):
    def head(x, f):
        k = 5
        return [
            helper.make_node("Reshape", [x, "shape"], ["flat"]),
            helper.make_node("MatMul", ["flat", "w1"], ["mm"]),
            helper.make_node("Add", ["mm", "b1"], ["biased"]),
            helper.make_node("PRelu", ["biased", "slope"], ["act"]),
            helper.make_node("Gemm", ["act", "w2", "b2"], ["out"], alpha=0.5, beta=2.0),
        ], [const("shape", np.array([0, -1], np.int64)),
            const("w1", rng.standard_normal((f, k)).astype(np.float32) * 0.1),
            const("b1", rng.standard_normal(k).astype(np.float32)),
            const("slope", rng.uniform(0, 0.5, (1, k)).astype(np.float32)),
            const("w2", rng.standard_normal((k, 3)).astype(np.float32)),
            const("b2", rng.standard_normal((1, 3)).astype(np.float32))]
    native_then_dense(engines, head_model(head), 3, 8, 13, rng)


@pytest.mark.parametrize("opset", [11, 13])
def test_softmax_stays_per_window(engines, rng, opset):
    """Below opset 13 Softmax(axis=1) flattens everything after axis 1: it must not mix the
    windows of the dense map (each window's scores still sum to 1)."""
    def head(x, f):
        return [helper.make_node("Flatten", [x], ["flat"]),
                helper.make_node("Gemm", ["flat", "w", "b"], ["logits"], transB=1),
                helper.make_node("Softmax", ["logits"], ["out"], axis=1)], \
            [const("w", rng.standard_normal((6, f)).astype(np.float32) * 0.2),
             const("b", np.zeros(6, np.float32))]
    _, (dense,) = native_then_dense(engines, head_model(head, opset=opset), 3, 8, 12, rng)
    np.testing.assert_allclose(dense.sum(axis=1), 1.0, rtol=1e-5)


def test_dropout_and_relu_between_flatten_and_fc(engines, rng):
    def head(x, f):
        return [helper.make_node("Flatten", [x], ["flat"]),
                helper.make_node("Relu", ["flat"], ["r"]),
                helper.make_node("Dropout", ["r", "ratio"], ["d"]),
                helper.make_node("Gemm", ["d", "w"], ["out"], transB=1)], \
            [const("ratio", np.array(0.5, np.float32)),
             const("w", rng.standard_normal((4, f)).astype(np.float32))]
    native_then_dense(engines, head_model(head), 3, 8, 11, rng)


@pytest.mark.parametrize("opset", [17, 18])
def test_reduce_mean_head_and_pointwise_conv_after_the_pool(engines, rng, opset):
    """ReduceMean over (H, W) (axes an attribute below opset 18, an input from 18), then a
    MobileNetV3-style 1x1 conv on the pooled vector before the classifier."""
    def head(x, f):
        c = f // 36
        axes = {"axes": [2, 3]} if opset < 18 else {}
        inputs = [x] if opset < 18 else [x, "axes"]
        return [helper.make_node("ReduceMean", inputs, ["m"], keepdims=1, **axes),
                helper.make_node("Conv", ["m", "pw"], ["p"], kernel_shape=[1, 1]),
                helper.make_node("HardSwish", ["p"], ["h"]),
                helper.make_node("Flatten", ["h"], ["flat"]),
                helper.make_node("Gemm", ["flat", "w"], ["out"], transB=1)], \
            [const("axes", np.array([2, 3], np.int64)),
             const("pw", rng.standard_normal((7, c, 1, 1)).astype(np.float32)),
             const("w", rng.standard_normal((3, 7)).astype(np.float32))]
    converted, _ = native_then_dense(engines, head_model(head, opset=opset), 3, 8, 11, rng)
    pool = next(n for n in converted.graph.node if n.op_type == "AveragePool")
    assert [list(a.ints) for a in pool.attribute if a.name == "kernel_shape"] == [[6, 6]]


def test_unconvertible_head_names_the_node():
    def head(x, f):
        return [helper.make_node("Flatten", [x], ["flat"]),
                helper.make_node("TopK", ["flat", "k"], ["out", "idx"], name="pick")], \
            [const("k", np.array([2], np.int64))]
    with pytest.raises(cyconv.ModelError, match="TopK 'pick'"):
        fc_to_conv(head_model(head))


def test_squeeze_excitation_is_refused():
    """A global pool whose result scales the feature map again has no fixed window."""
    def head(x, f):
        return [helper.make_node("GlobalAveragePool", [x], ["g"]),
                helper.make_node("Sigmoid", ["g"], ["s"]),
                helper.make_node("Mul", [x, "s"], ["scaled"], name="excite"),
                helper.make_node("Flatten", ["scaled"], ["flat"]),
                helper.make_node("Gemm", ["flat", "w"], ["out"], transB=1)], \
            [const("w", np.ones((2, f), np.float32))]
    with pytest.raises(cyconv.ModelError, match="Mul 'excite'.*global context"):
        fc_to_conv(head_model(head))


def test_weight_computed_at_run_time_is_refused():
    def head(x, f):
        return [helper.make_node("Flatten", [x], ["flat"]),
                helper.make_node("Relu", ["w"], ["w_relu"]),
                helper.make_node("Gemm", ["flat", "w_relu"], ["out"], transB=1, name="fc")], \
            [const("w", np.ones((2, f), np.float32))]
    with pytest.raises(cyconv.ModelError, match="Gemm 'fc'.*constant 2-D weight"):
        fc_to_conv(head_model(head))


def test_flattened_map_as_output_is_refused():
    def head(x, f):
        return [helper.make_node("Flatten", [x], ["out"])], []
    with pytest.raises(cyconv.ModelError, match="graph output 'out' is a flattened"):
        fc_to_conv(head_model(head))


def test_symbolic_input_needs_the_native_size(engines, rng):
    model = zoo.lenet5()
    for d, name in zip(model.graph.input[0].type.tensor_type.shape.dim[2:], "HW"):
        d.Clear()
        d.dim_param = name
    with pytest.raises(cyconv.ModelError, match="input_shape"):
        fc_to_conv(model)
    converted = fc_to_conv(model, input_shape=(1, 32, 32))
    x = rng.standard_normal((1, 1, 36, 36), dtype=np.float32)
    engines.check(engines.cy(converted).run(None, {"input": x}),
                  engines.ort(converted).run(None, {"input": x}), "dense")


def test_fully_convolutional_net_is_returned_unchanged():
    pnet = mtcnn("pnet")
    assert fc_to_conv(pnet).graph.SerializeToString() == pnet.graph.SerializeToString()
