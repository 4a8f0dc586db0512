"""Graph passes: each rewrite leaves the outputs unchanged (vs optimize=False and vs ONNX
Runtime) and does the rewrite it claims."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from cyconv.converters.onnx_import import import_proto
from cyconv.engine import passes
from cyconv.engine.session import InferenceSession

RNG = np.random.default_rng(0)


def tensor(name, shape, scale=0.5, positive=False):
    values = RNG.standard_normal(shape).astype(np.float32) * scale
    return numpy_helper.from_array(np.abs(values) + 0.5 if positive else values, name)


def model(nodes, inputs, outputs, inits, opset=17):
    graph = helper.make_graph(nodes, "t", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def fvi(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def bn_inits(prefix, c):
    return [tensor(f"{prefix}_s", [c]), tensor(f"{prefix}_b", [c]), tensor(f"{prefix}_m", [c]),
            tensor(f"{prefix}_v", [c], positive=True)]


def bn(prefix, x, y):
    return helper.make_node("BatchNormalization",
                            [x, f"{prefix}_s", f"{prefix}_b", f"{prefix}_m", f"{prefix}_v"], [y])


def check(m, feeds, expect_ops=None, absent_ops=(), atol=1e-4):
    """optimize=True == optimize=False == ORT, and the optimized graph has the expected ops."""
    data = m.SerializeToString()
    fast = InferenceSession(data)
    plain = InferenceSession(data, optimize=False)
    reference = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, feeds)
    for got, want, base in zip(fast.run(None, feeds), plain.run(None, feeds), reference):
        scale = max(1.0, float(np.abs(base).max()))
        np.testing.assert_allclose(got, base, atol=atol * scale, rtol=0)
        np.testing.assert_allclose(want, base, atol=atol * scale, rtol=0)
    ops = [n.op_type for n in fast._graph.nodes]
    for op in expect_ops or ():
        assert op in ops, (op, ops)
    for op in absent_ops:
        assert op not in ops, (op, ops)
    return fast


def conv_bn_relu(opset=17, pads=(1, 1, 1, 1)):
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=list(pads)),
             bn("bn", "c", "n"), helper.make_node("Relu", ["n"], ["y"])]
    inits = [tensor("w", [8, 3, 3, 3]), tensor("b", [8])] + bn_inits("bn", 8)
    return model(nodes, [fvi("x", ["N", 3, 10, 10])], [fvi("y", None)], inits, opset)


def test_conv_bn_relu_becomes_one_node():
    x = RNG.standard_normal((2, 3, 10, 10)).astype(np.float32)
    sess = check(conv_bn_relu(), {"x": x}, absent_ops=["BatchNormalization", "Relu"])
    assert len(sess._graph.nodes) == 1
    assert any("BatchNormalization" in f for f in sess.fusions)


def test_passes_do_not_modify_their_input():
    graph = import_proto(conv_bn_relu())
    before = [(n.op_type, list(n.inputs), list(n.outputs)) for n in graph.nodes]
    passes.optimize(graph)
    assert [(n.op_type, list(n.inputs), list(n.outputs)) for n in graph.nodes] == before


def test_bn_folds_into_following_unpadded_conv_only():
    def net(pads):
        nodes = [bn("bn", "x", "n"),
                 helper.make_node("Conv", ["n", "w"], ["y"], pads=pads, group=2)]
        inits = [tensor("w", [4, 2, 3, 3])] + bn_inits("bn", 4)
        return model(nodes, [fvi("x", [1, 4, 7, 7])], [fvi("y", None)], inits)
    x = RNG.standard_normal((1, 4, 7, 7)).astype(np.float32)
    check(net([0, 0, 0, 0]), {"x": x}, absent_ops=["BatchNormalization"])
    check(net([1, 1, 1, 1]), {"x": x}, expect_ops=["BatchNormalization"])


@pytest.mark.parametrize("trans_b", [0, 1])
def test_gemm_bn_fold(trans_b):
    nodes = [helper.make_node("Gemm", ["x", "w", "c"], ["g"], transB=trans_b, beta=0.5),
             bn("bn", "g", "y")]
    w_shape = [5, 6] if trans_b else [6, 5]
    inits = [tensor("w", w_shape), tensor("c", [5])] + bn_inits("bn", 5)
    m = model(nodes, [fvi("x", ["N", 6])], [fvi("y", None)], inits)
    check(m, {"x": RNG.standard_normal((3, 6)).astype(np.float32)},
          absent_ops=["BatchNormalization"])


@pytest.mark.parametrize("activation, extra_inits, attrs", [
    ("Relu", [], {}),
    ("LeakyRelu", [], {"alpha": 0.2}),
    ("Sigmoid", [], {}),
    ("Tanh", [], {}),
    ("HardSigmoid", [], {"alpha": 0.3, "beta": 0.4}),
    ("HardSwish", [], {}),
    ("Clip", [numpy_helper.from_array(np.float32(0), "lo"),
              numpy_helper.from_array(np.float32(6), "hi")], {}),
    ("PRelu", [tensor("slope", [8, 1, 1])], {}),
])
def test_activation_fusion_keeps_outputs(activation, extra_inits, attrs):
    extra = {"Clip": ["lo", "hi"], "PRelu": ["slope"]}.get(activation, [])
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node(activation, ["c"] + extra, ["y"], **attrs)]
    inits = [tensor("w", [8, 3, 3, 3]), tensor("b", [8])] + extra_inits
    m = model(nodes, [fvi("x", ["N", 3, 9, 9])], [fvi("y", None)], inits)
    x = RNG.standard_normal((2, 3, 9, 9)).astype(np.float32) * 3
    check(m, {"x": x})


def test_swish_pattern():
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]),
             helper.make_node("Sigmoid", ["c"], ["s"]),
             helper.make_node("Mul", ["c", "s"], ["y"])]
    m = model(nodes, [fvi("x", [1, 3, 6, 6])], [fvi("y", None)], [tensor("w", [4, 3, 1, 1])])
    check(m, {"x": RNG.standard_normal((1, 3, 6, 6)).astype(np.float32)})


def test_residual_add_then_relu():
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["x", "w2"], ["b"], pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["a", "b"], ["s"]),
             helper.make_node("Relu", ["s"], ["y"])]
    inits = [tensor("w1", [4, 4, 3, 3]), tensor("w2", [4, 4, 3, 3])]
    m = model(nodes, [fvi("x", ["N", 4, 5, 5])], [fvi("y", None)], inits)
    check(m, {"x": RNG.standard_normal((2, 4, 5, 5)).astype(np.float32)})


def test_residual_add_with_unknown_shapes_fuses():
    # every spatial dim symbolic: equality cannot be proven at load, the fused node checks
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["x", "w2"], ["b"], pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["a", "b"], ["s"]),
             helper.make_node("Relu", ["s"], ["y"])]
    inits = [tensor("w1", [4, 4, 3, 3]), tensor("w2", [4, 4, 3, 3])]
    m = model(nodes, [fvi("x", ["N", 4, "H", "W"])], [fvi("y", None)], inits)
    fast = check(m, {"x": RNG.standard_normal((2, 4, 5, 7)).astype(np.float32)},
                 absent_ops=["Add", "Relu"])
    assert sum(n.op_type == "FusedConv" for n in fast._graph.nodes) == 1


@pytest.mark.parametrize("pooled", ["conv", "other"])
def test_residual_that_broadcasts_at_run_time(pooled):
    # one side is (N, 4, 1, 1) once the sizes are known: the fused node must broadcast like
    # the Add it replaced, whichever side is the Conv
    nodes = [helper.make_node("GlobalAveragePool", ["x"], ["g"])]
    if pooled == "conv":
        nodes += [helper.make_node("Conv", ["g", "w1"], ["a"]),
                  helper.make_node("Conv", ["x", "w2"], ["b"], pads=[1, 1, 1, 1])]
    else:
        nodes += [helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]),
                  helper.make_node("Conv", ["g", "w2"], ["b"])]
    nodes += [helper.make_node("Add", ["a", "b"], ["s"]),
              helper.make_node("Sigmoid", ["s"], ["y"])]
    inits = [tensor("w1", [4, 4] + ([1, 1] if pooled == "conv" else [3, 3])),
             tensor("w2", [4, 4] + ([3, 3] if pooled == "conv" else [1, 1]))]
    m = model(nodes, [fvi("x", ["N", 4, "H", "W"])], [fvi("y", None)], inits)
    check(m, {"x": RNG.standard_normal((2, 4, 5, 6)).astype(np.float32)})


def test_broadcast_add_is_not_fused_as_residual():
    # Add of a per-channel bias must not become the Z input (its shape differs): it becomes
    # the Conv's bias instead.
    nodes = [helper.make_node("Conv", ["x", "w"], ["a"]),
             helper.make_node("Add", ["a", "bias"], ["y"])]
    inits = [tensor("w", [4, 3, 1, 1]), tensor("bias", [4, 1, 1])]
    m = model(nodes, [fvi("x", [1, 3, 4, 4])], [fvi("y", None)], inits)
    check(m, {"x": RNG.standard_normal((1, 3, 4, 4)).astype(np.float32)},
          absent_ops=["Add", "FusedConv"])


@pytest.mark.parametrize("shape", [[1, 6, 1, 1], [6, 1, 1], [1], []])
@pytest.mark.parametrize("has_bias", [False, True])
def test_per_channel_add_folds_into_conv_bias(shape, has_bias):
    # PaddlePaddle's squeeze-excitation convs: Conv without bias, Add, Relu -> one FusedConv
    conv_in = ["x", "w", "b"] if has_bias else ["x", "w"]
    nodes = [helper.make_node("Conv", conv_in, ["a"]),
             helper.make_node("Add", ["c", "a"], ["s"]),
             helper.make_node("Relu", ["s"], ["y"])]
    inits = [tensor("w", [6, 5, 1, 1]), tensor("b", [6]), tensor("c", shape)]
    m = model(nodes, [fvi("x", ["N", 5, "H", "W"])], [fvi("y", None)], inits)
    fast = check(m, {"x": RNG.standard_normal((2, 5, 3, 4)).astype(np.float32)},
                 expect_ops=["FusedConv"], absent_ops=["Add", "Relu"])
    assert any("into the bias" in line for line in fast.fusions)


@pytest.mark.parametrize("shape", [[6], [1, 1, 1, 4], [1, 6, 3, 1]])
def test_add_varying_along_other_axes_stays(shape):
    # (6,) broadcasts along W, not channels: not a bias
    nodes = [helper.make_node("Conv", ["x", "w"], ["a"]),
             helper.make_node("Add", ["a", "c"], ["y"])]
    inits = [tensor("w", [6, 5, 1, 1]), tensor("c", shape)]
    m = model(nodes, [fvi("x", [1, 5, 3, 6 if shape == [6] else 4])], [fvi("y", None)], inits)
    check(m, {"x": RNG.standard_normal((1, 5, 3, 6 if shape == [6] else 4)).astype(np.float32)},
          expect_ops=["Add"])


def hardswish_nodes(x, y, form):
    """HardSwish of x written out the way exporters do."""
    if form == "hardsigmoid":
        return [helper.make_node("HardSigmoid", [x], ["hs"], alpha=1 / 6, beta=0.5),
                helper.make_node("Mul", [x, "hs"], [y])]
    scale = [helper.make_node("Div", ["m", "six"], [y])] if form == "div" else \
        [helper.make_node("Mul", ["m", "sixth"], [y])]
    return [helper.make_node("Add", [x, "three"], ["p"]),
            helper.make_node("Clip", ["p", "zero", "six"], ["q"]),
            helper.make_node("Mul", ["q", x] if form == "mul" else [x, "q"], ["m"])] + scale


SCALARS = [numpy_helper.from_array(np.float32(v), n)
           for n, v in (("three", 3), ("zero", 0), ("six", 6), ("sixth", 1 / 6))]


@pytest.mark.parametrize("form", ["div", "mul", "hardsigmoid"])
def test_decomposed_hardswish_fuses_into_conv(form):
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1])] + \
        hardswish_nodes("c", "y", form)
    m = model(nodes, [fvi("x", ["N", 3, 7, 7])], [fvi("y", None)],
              [tensor("w", [8, 3, 3, 3]), tensor("b", [8])] + SCALARS)
    fast = check(m, {"x": RNG.standard_normal((2, 3, 7, 7)).astype(np.float32) * 4},
                 expect_ops=["FusedConv"], absent_ops=["Mul", "Clip", "Div", "HardSigmoid"])
    assert [n.attrs.get("activation") for n in fast._graph.nodes] == ["HardSwish"]


def test_decomposed_hardswish_with_a_shared_value_stays():
    # the clipped gate is also a graph output: the pattern must not swallow it
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"])] + hardswish_nodes("c", "y", "div")
    m = model(nodes, [fvi("x", [1, 3, 5, 5])], [fvi("y", None), fvi("q", None)],
              [tensor("w", [4, 3, 1, 1])] + SCALARS)
    check(m, {"x": RNG.standard_normal((1, 3, 5, 5)).astype(np.float32) * 4},
          expect_ops=["Clip", "Div"])


def test_identity_dropout_and_dead_nodes_removed():
    nodes = [helper.make_node("Identity", ["x"], ["a"]),
             helper.make_node("Dropout", ["a"], ["b"]),
             helper.make_node("Relu", ["b"], ["y"]),
             helper.make_node("Sigmoid", ["x"], ["unused"]),
             helper.make_node("Identity", ["y"], ["out"])]
    m = model(nodes, [fvi("x", [3])], [fvi("out", [3])], [])
    sess = check(m, {"x": np.array([-1, 0, 2], np.float32)})
    assert [n.op_type for n in sess._graph.nodes] == ["Relu"]


def test_static_shape_chain_folds_but_dynamic_batch_does_not():
    # y = Reshape(x, [Shape(x)[0], -1]) + the same with the static dim 1.
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Gather", ["s", "i0"], ["n"], axis=0),
             helper.make_node("Gather", ["s", "i1"], ["c"], axis=0),
             helper.make_node("Unsqueeze", ["n", "ax"], ["n1"]),
             helper.make_node("Concat", ["n1", "m1"], ["t"], axis=0),
             helper.make_node("Reshape", ["x", "t"], ["y"]),
             helper.make_node("Add", ["c", "i1"], ["z"])]
    inits = [numpy_helper.from_array(np.array(0, np.int64), "i0"),
             numpy_helper.from_array(np.array(1, np.int64), "i1"),
             numpy_helper.from_array(np.array([0], np.int64), "ax"),
             numpy_helper.from_array(np.array([-1], np.int64), "m1")]
    m = model(nodes, [fvi("x", ["N", 3, 2])],
              [fvi("y", None), helper.make_tensor_value_info("z", TensorProto.INT64, None)], inits)
    sess = check(m, {"x": RNG.standard_normal((5, 3, 2)).astype(np.float32)})
    ops = [n.op_type for n in sess._graph.nodes]
    assert "Add" not in ops            # Shape(x)[1] + 1 is a constant
    assert "Reshape" in ops and ops.count("Gather") == 1   # the batch dim stays dynamic


def test_transpose_and_reshape_chains_merge():
    nodes = [helper.make_node("Transpose", ["x"], ["a"], perm=[0, 2, 3, 1]),
             helper.make_node("Transpose", ["a"], ["b"], perm=[0, 3, 1, 2]),
             helper.make_node("Transpose", ["b"], ["c"], perm=[1, 0, 2, 3]),
             helper.make_node("Reshape", ["c", "s1"], ["d"]),
             helper.make_node("Reshape", ["d", "s2"], ["y"])]
    inits = [numpy_helper.from_array(np.array([6, -1], np.int64), "s1"),
             numpy_helper.from_array(np.array([3, 2, -1], np.int64), "s2")]
    m = model(nodes, [fvi("x", [2, 3, 4, 5])], [fvi("y", None)], inits)
    sess = check(m, {"x": RNG.standard_normal((2, 3, 4, 5)).astype(np.float32)})
    assert [n.op_type for n in sess._graph.nodes] == ["Transpose", "Reshape"]


@pytest.mark.parametrize("name, size", [("resnet18", 64), ("mobilenet_v2", 64),
                                        ("googlenet", 65), ("densenet121", 64),
                                        ("squeezenet1_1", 65)])
def test_zoo_models_optimized_match(name, size):
    from cyconv.zoo import ZOO
    m = ZOO[name](input_size=size)
    x = RNG.standard_normal((1, 3, size, size)).astype(np.float32)
    sess = check(m, {"input": x}, absent_ops=["BatchNormalization"] if name != "densenet121"
                 else ())
    assert sess.fusions


def preact_model(conv_attrs, w_shape, bn_twice=False, then_relu=True):
    nodes = [bn("bn", "x", "n"), helper.make_node("Relu", ["n"], ["r"]),
             helper.make_node("Conv", ["r", "w", "b"], ["c"], **conv_attrs)]
    outputs = [fvi("y", None)]
    if then_relu:
        nodes.append(helper.make_node("Relu", ["c"], ["y"]))
    else:
        nodes.append(helper.make_node("Identity", ["c"], ["y"]))
    if bn_twice:   # the normalised tensor is also read elsewhere: the BN must stay
        nodes.append(helper.make_node("Sigmoid", ["n"], ["other"]))
        outputs.append(fvi("other", None))
    inits = bn_inits("bn", 8) + [tensor("w", w_shape), tensor("b", [w_shape[0]])]
    return model(nodes, [fvi("x", ["N", 8, "H", "W"])], outputs, inits)


@pytest.mark.parametrize("then_relu", [True, False])
def test_bn_relu_conv1x1_becomes_preactivation_conv(then_relu):
    # DenseNet's bottleneck: BN -> Relu -> 1x1 Conv, applied while the GEMM packs x
    m = preact_model({}, [6, 8, 1, 1], then_relu=then_relu)
    fast = check(m, {"x": RNG.standard_normal((2, 8, 5, 7)).astype(np.float32)},
                 expect_ops=["PreActivationConv"],
                 absent_ops=["BatchNormalization", "Relu"])
    assert len(fast._graph.nodes) == 1


@pytest.mark.parametrize("conv_attrs,w_shape,bn_twice", [
    ({"pads": [1, 1, 1, 1]}, [6, 8, 1, 1], False),    # a padded border is 0, not relu(t)
    ({}, [6, 8, 3, 3], False),                         # not 1x1
    ({"strides": [2, 2]}, [6, 8, 1, 1], False),
    ({"group": 2}, [6, 4, 1, 1], False),
    ({}, [6, 8, 1, 1], True),                          # BN output read twice
])
def test_preactivation_needs_a_plain_1x1_conv(conv_attrs, w_shape, bn_twice):
    m = preact_model(conv_attrs, w_shape, bn_twice=bn_twice)
    check(m, {"x": RNG.standard_normal((1, 8, 6, 6)).astype(np.float32)},
          absent_ops=["PreActivationConv"])


# ----------------------------------------------------------------------------- Pad folding

def _pad_node(opset, pads, value=None, mode=None):
    """A Pad of x -> p in the form of ``opset`` (attributes before 11, inputs from 11)."""
    attrs = {} if mode is None else {"mode": mode}
    if opset < 11:
        attrs["pads"] = pads
        if value is not None:
            attrs["value"] = value
        return helper.make_node("Pad", ["x"], ["p"], **attrs), []
    inits = [numpy_helper.from_array(np.array(pads, np.int64), "pads")]
    reads = ["x", "pads"]
    if value is not None:
        inits.append(numpy_helper.from_array(np.array(value, np.float32), "value"))
        reads.append("value")
    return helper.make_node("Pad", reads, ["p"], **attrs), inits


@pytest.mark.parametrize("opset", [9, 13, 18])
@pytest.mark.parametrize("pads,reader,folds", [
    ([0, 0, 0, 0, 0, 0, 0, 0], "AveragePool", True),   # TorchScript opset 9 before avg_pool2d
    ([0, 0, 1, 0, 0, 0, 2, 1], "Conv", True),          # TF's asymmetric SAME padding
    ([0, 0, 1, 1, 0, 0, 1, 1], "AveragePool", True),   # zeros counted, as the padded values
    ([0, 0, 1, 1, 0, 0, 1, 1], "MaxPool", False),      # a zero is not MaxPool's -inf padding
    ([0, 1, 1, 1, 0, 0, 1, 1], "Conv", False),         # pads channels
])
def test_zero_pads_fold_into_the_reader(opset, pads, reader, folds):
    pad, inits = _pad_node(opset, pads)
    attrs = {"kernel_shape": [3, 3], "pads": [1, 0, 0, 1]} if reader != "Conv" else \
        {"pads": [0, 1, 1, 0], "strides": [2, 2]}
    reads = ["p", "w"] if reader == "Conv" else ["p"]
    cin = 3 + (pads[1] + pads[5] if reader == "Conv" else 0)
    if reader == "Conv":
        inits.append(tensor("w", [4, cin, 3, 3]))
    if reader == "AveragePool" and any(pads):
        attrs["count_include_pad"] = 1
    m = model([pad, helper.make_node(reader, reads, ["y"], **attrs)],
              [fvi("x", [1, 3, 9, 8])], [fvi("y", None)], inits, opset=opset)
    x = RNG.standard_normal((1, 3, 9, 8)).astype(np.float32)
    sess = check(m, {"x": x}, expect_ops=[reader], absent_ops=["Pad"] if folds else [])
    assert any("Pad" in line for line in sess.fusions) == folds


@pytest.mark.parametrize("value,mode", [(0.5, None), (None, "reflect")])
def test_pads_of_other_values_or_modes_stay(value, mode):
    pad, inits = _pad_node(13, [0, 0, 1, 1, 0, 0, 1, 1], value, mode)
    inits.append(tensor("w", [4, 3, 3, 3]))
    m = model([pad, helper.make_node("Conv", ["p", "w"], ["y"])],
              [fvi("x", [1, 3, 9, 8])], [fvi("y", None)], inits, opset=13)
    check(m, {"x": RNG.standard_normal((1, 3, 9, 8)).astype(np.float32)}, expect_ops=["Pad"])


def test_a_pad_read_twice_stays():
    pad, inits = _pad_node(13, [0, 0, 1, 1, 0, 0, 1, 1])
    inits.append(tensor("w", [4, 3, 3, 3]))
    m = model([pad, helper.make_node("Conv", ["p", "w"], ["y"]),
               helper.make_node("Relu", ["p"], ["z"])],
              [fvi("x", [1, 3, 9, 8])], [fvi("y", None), fvi("z", None)], inits, opset=13)
    check(m, {"x": RNG.standard_normal((1, 3, 9, 8)).astype(np.float32)}, expect_ops=["Pad"])


@pytest.mark.parametrize("bias_shape,a_shape,folds", [
    ([6], [2, 5], True),           # TensorFlow's Dense: MatMul + Add of a bias row
    ([1, 6], [2, 5], True),
    ([2, 6], [2, 5], False),       # a full matrix is not a bias row
    ([6], [3, 2, 5], False),       # Gemm takes rank-2 operands only
])
def test_matmul_plus_bias_row_becomes_gemm(bias_shape, a_shape, folds):
    nodes = [helper.make_node("MatMul", ["a", "w"], ["m"]),
             helper.make_node("Add", ["m", "c"], ["s"]),
             helper.make_node("Relu", ["s"], ["y"])]
    m = model(nodes, [fvi("a", a_shape)], [fvi("y", None)],
              [tensor("w", [5, 6]), tensor("c", bias_shape)])
    a = RNG.standard_normal(a_shape).astype(np.float32)
    sess = check(m, {"a": a}, expect_ops=["FusedGemm"] if folds else ["MatMul", "Add"])
    assert any("into one Gemm" in line for line in sess.fusions) == folds
