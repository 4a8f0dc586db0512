"""The graph patterns that PyTorch's two ONNX exporters write for torchvision's transformer
architectures (ViT, Swin, Swin-v2, MaxViT, ConvNeXt), as small hand-built models run through
``cyconv.InferenceSession`` at batch 1 and 2 against ONNX Runtime.

benchmarks/torchvision_export_check.py checks the real exports (torch is not a test
dependency); these keep the ops those exports need working end to end, through import,
constant folding and the executor, with the batch dimension dynamic as in the exports:

* TorchScript exporter, opset 17: LayerNormalization, exact GELU as
  ``x * 0.5 * (1 + Erf(x / sqrt 2))``, Swin's shifted-window mask written into a zero tensor
  by ScatterND, MaxViT's attention scores by Einsum;
* dynamo exporter, opset 20: Gelu, LayerNormalization, Swin-v2's relative-position table read
  by GatherND.
"""
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import cyconv

ort = pytest.importorskip("onnxruntime")

F = TensorProto.FLOAT


def _model(nodes, inputs, outputs, inits, opset):
    graph = helper.make_graph(nodes, "g", inputs, outputs,
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model.SerializeToString()


def _check(blob, shape_of_batch, rtol=1e-5):
    ref = ort.InferenceSession(blob, providers=["CPUExecutionProvider"])
    sess = cyconv.InferenceSession(blob, threads=2)
    for batch in (1, 2):
        x = np.random.default_rng(batch).standard_normal(shape_of_batch(batch), np.float32)
        want = ref.run(None, {"input": x})
        got = sess.run(None, {"input": x})
        for g, w in zip(got, want, strict=True):
            assert g.shape == w.shape and g.dtype == w.dtype
            tol = rtol * max(1.0, float(np.abs(w).max()))
            assert float(np.abs(g - w).max()) <= tol


def test_vit_mlp_block_torchscript_opset17(rng):
    # [N, T, C] -> LayerNorm -> Linear -> exact GELU (Erf form) -> Linear + residual
    t, c, hid = 17, 32, 64
    inits = {"g": rng.uniform(0.5, 1.5, c).astype(np.float32),
             "b": rng.standard_normal(c).astype(np.float32) * 0.1,
             "w1": rng.standard_normal((c, hid)).astype(np.float32) * 0.2,
             "w2": rng.standard_normal((hid, c)).astype(np.float32) * 0.2,
             "sqrt2": np.array(np.sqrt(2.0), np.float32), "one": np.array(1.0, np.float32),
             "half": np.array(0.5, np.float32)}
    nodes = [
        helper.make_node("LayerNormalization", ["input", "g", "b"], ["ln"], axis=-1,
                         epsilon=1e-6),
        helper.make_node("MatMul", ["ln", "w1"], ["h"]),
        helper.make_node("Div", ["h", "sqrt2"], ["hs"]),
        helper.make_node("Erf", ["hs"], ["e"]),
        helper.make_node("Add", ["e", "one"], ["e1"]),
        helper.make_node("Mul", ["h", "e1"], ["he"]),
        helper.make_node("Mul", ["he", "half"], ["gelu"]),
        helper.make_node("MatMul", ["gelu", "w2"], ["o"]),
        helper.make_node("Add", ["o", "input"], ["output"]),
    ]
    blob = _model(nodes, [helper.make_tensor_value_info("input", F, ["N", t, c])],
                  [helper.make_tensor_value_info("output", F, ["N", t, c])], inits, 17)
    _check(blob, lambda n: (n, t, c))


def test_swin_shift_mask_scatternd_and_maxvit_einsum_opset17(rng):
    # mask = zeros[H*W]; mask[idx] = region ids (ScatterND); scores = Einsum(q, k) + mask
    hw, heads, d = 16, 2, 8
    idx = np.arange(hw, dtype=np.int64).reshape(hw, 1)
    regions = (np.arange(hw) // 5).astype(np.float32)
    inits = {"shape": np.array([hw], np.int64), "idx": idx, "regions": regions,
             "wk": rng.standard_normal((d, d)).astype(np.float32)}
    nodes = [
        helper.make_node("ConstantOfShape", ["shape"], ["zeros"],
                         value=numpy_helper.from_array(np.zeros(1, np.float32))),
        helper.make_node("ScatterND", ["zeros", "idx", "regions"], ["mask"]),
        helper.make_node("MatMul", ["input", "wk"], ["k"]),
        helper.make_node("Einsum", ["input", "k"], ["scores"],
                         equation="bhid,bhjd->bhij"),
        helper.make_node("Add", ["scores", "mask"], ["output"]),
    ]
    blob = _model(nodes, [helper.make_tensor_value_info("input", F, ["N", heads, hw, d])],
                  [helper.make_tensor_value_info("output", F, None)], inits, 17)
    _check(blob, lambda n: (n, heads, hw, d))


def test_swin_v2_gathernd_table_and_gelu_dynamo_opset20(rng):
    # bias[i, j] = table[index[i, j]] (GatherND on a constant table), added to attention
    # scores; then LayerNorm and the Gelu op of opset 20.
    n_tok, n_rel = 9, 25
    inits = {"table": rng.standard_normal((n_rel, 1)).astype(np.float32),
             "index": rng.integers(0, n_rel, (n_tok, n_tok, 1)).astype(np.int64),
             "g": np.full(n_tok, 1.25, np.float32), "b": np.full(n_tok, 0.1, np.float32),
             "bias_shape": np.array([n_tok, n_tok], np.int64)}
    nodes = [
        helper.make_node("GatherND", ["table", "index"], ["bias3"]),
        helper.make_node("Reshape", ["bias3", "bias_shape"], ["bias"]),
        helper.make_node("Add", ["input", "bias"], ["s"]),
        helper.make_node("LayerNormalization", ["s", "g", "b"], ["ln"]),
        helper.make_node("Gelu", ["ln"], ["output"]),
    ]
    blob = _model(nodes, [helper.make_tensor_value_info("input", F, ["N", n_tok, n_tok])],
                  [helper.make_tensor_value_info("output", F, ["N", n_tok, n_tok])], inits, 20)
    _check(blob, lambda n: (n, n_tok, n_tok))
