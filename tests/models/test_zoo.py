"""Zoo architectures through cyconv against ONNX Runtime, at batch 1 and 2, on 1 and 2 threads.

Input sides are reduced where the architecture allows (global pooling heads) to keep CI fast
on 2 cores; odd sides are chosen for the ceil-mode nets (GoogLeNet, SqueezeNet) so that their
last pooling windows hang over the edge. AlexNet and VGG-16 need 224 (their 6x6 / 7x7 adaptive
pool is only exportable when it is a whole-window pool).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import cyconv
from cyconv import zoo

# name -> input side used in the tests
SIDES = {
    "lenet5": 32,
    "cifar_cnn": 32,
    "cifar_bn": 32,
    "nin": 32,
    "alexnet": 224,
    "vgg16": 224,
    "resnet18": 112,
    "resnet50": 64,
    "mobilenet_v2": 96,
    "googlenet": 99,
    "densenet121": 64,
    "squeezenet1_1": 111,
}
THREADS = (1, 2)


@dataclass
class Case:
    name: str
    model: onnx.ModelProto
    shape: tuple            # input shape without batch
    ort: object             # onnxruntime.InferenceSession
    _cy: dict = field(default_factory=dict)

    def cy(self, threads):
        """cyconv session on ``threads`` threads, created on first use (so a model cyconv
        cannot load fails the cyconv tests only, not the ORT-only checks of the zoo)."""
        if threads not in self._cy:
            if "blob" not in self._cy:
                self._cy["blob"] = self.model.SerializeToString()
            self._cy[threads] = cyconv.InferenceSession(self._cy["blob"], threads=threads)
        return self._cy[threads]

    def feed(self, batch, seed=0):
        x = np.random.default_rng(seed).standard_normal((batch, *self.shape), dtype=np.float32)
        return {"input": x}


@pytest.fixture(scope="module", params=sorted(SIDES))
def case(request, make_ort):
    """One zoo model built at its test side, with its ORT and cyconv sessions (module-scoped:
    pytest groups the tests by model and frees each model before building the next)."""
    name = request.param
    channels = zoo.DEFAULT_INPUT[name][0]
    model = zoo.ZOO[name](input_size=SIDES[name])
    yield Case(name, model, (channels, SIDES[name], SIDES[name]), make_ort(model))


def test_registry_covers_the_brief():
    expected = {"lenet5", "cifar_cnn", "cifar_bn", "alexnet", "vgg16", "resnet18", "resnet50",
                "mobilenet_v2", "googlenet", "densenet121", "squeezenet1_1", "nin"}
    assert expected <= set(zoo.ZOO)
    # VGG-11 shares its builder with VGG-16 (only the layer table differs): its 133 M weights
    # are checked structurally below rather than run a second time.
    assert set(SIDES) | {"vgg11"} == set(zoo.ZOO), "every zoo model is tested"


def test_model_is_valid(case):
    onnx.checker.check_model(case.model, full_check=True)
    (inp,) = case.model.graph.input
    (out,) = case.model.graph.output
    assert inp.name == "input" and out.name == "output"
    assert inp.type.tensor_type.shape.dim[0].dim_param == "N"
    assert out.type.tensor_type.shape.dim[0].dim_param == "N"


def test_activations_are_sane(case):
    """Seeded weights keep the logits O(1)..O(100): neither overflow nor vanishing."""
    (y,) = case.ort.run(None, case.feed(2))
    peak = float(np.max(np.abs(y)))
    assert 1e-2 <= peak <= 1e3, f"{case.name}: max |output| {peak}"
    # Different images give different outputs (the net is not input-blind).
    assert np.max(np.abs(y[0] - y[1])) > 1e-3 * peak


@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("batch", (1, 2))
def test_matches_onnxruntime(case, batch, threads, contract):
    feed = case.feed(batch, seed=batch)
    want = case.ort.run(None, feed)
    got = case.cy(threads).run(None, feed)
    contract(got, want, f"{case.name} batch {batch} threads {threads}")


def test_thread_counts_agree(case):
    """1 and 2 threads differ at most by float rounding (summation order), not by the contract."""
    feed = case.feed(2, seed=7)
    one, = case.cy(1).run(None, feed)
    two, = case.cy(2).run(None, feed)
    scale = max(1.0, float(np.max(np.abs(one))))
    assert np.max(np.abs(one - two)) <= 1e-5 * scale


def test_seed_determines_weights():
    a, b, c = zoo.lenet5(seed=3), zoo.lenet5(seed=3), zoo.lenet5(seed=4)
    assert a.SerializeToString() == b.SerializeToString()
    assert a.graph.initializer[0].raw_data != c.graph.initializer[0].raw_data


@pytest.mark.parametrize("build,opset", [(zoo.mobilenet_v2, 11), (zoo.resnet18, 13),
                                         (zoo.googlenet, 21)])
def test_other_opsets(build, opset, contract):
    """Opset 11 writes Dropout's ratio as an attribute; every opset runs the same network."""
    model = build(input_size=64, opset=opset, num_classes=10)
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version == opset
    x = np.random.default_rng(1).standard_normal((2, 3, 64, 64), dtype=np.float32)
    want = ort.InferenceSession(model.SerializeToString(),
                                providers=["CPUExecutionProvider"]).run(None, {"input": x})
    got = cyconv.InferenceSession(model, threads=2).run(None, {"input": x})
    contract(got, want, f"{model.graph.name} opset {opset}")


def test_fixed_batch_and_classes(contract):
    model = zoo.squeezenet1_1(batch=3, num_classes=7, input_size=65)
    (out,) = model.graph.output
    assert [d.dim_value for d in out.type.tensor_type.shape.dim] == [3, 7]
    x = np.random.default_rng(2).standard_normal((3, 3, 65, 65), dtype=np.float32)
    want = ort.InferenceSession(model.SerializeToString(),
                                providers=["CPUExecutionProvider"]).run(None, {"input": x})
    got = cyconv.InferenceSession(model.SerializeToString(), threads=1).run(None, {"input": x})
    contract(got, want, "squeezenet1_1 batch 3")


def test_unexportable_adaptive_pool_is_refused():
    with pytest.raises(ValueError, match="adaptive pool"):
        zoo.vgg16(input_size=112)


# Published multiply-accumulate counts at 224x224 (torchvision model docs, "GFLOPS" = GMACs).
PUBLISHED_GMACS = {
    "alexnet": 0.71, "vgg16": 15.47, "resnet18": 1.81, "resnet50": 4.09,
    "mobilenet_v2": 0.30, "googlenet": 1.50, "densenet121": 2.83, "squeezenet1_1": 0.35,
}


def test_flops_match_published(case):
    if case.name not in PUBLISHED_GMACS:
        assert zoo.flops(case.model, (1, *case.shape)) > 0
        return
    model = case.model if case.shape[-1] == 224 else zoo.ZOO[case.name]()
    gflop = zoo.flops(model, (1, 3, 224, 224)) / 1e9
    assert gflop / 2 == pytest.approx(PUBLISHED_GMACS[case.name], rel=0.03)
    # Linear in the batch.
    assert zoo.flops(model, (4, 3, 224, 224)) == 4 * zoo.flops(model, (1, 3, 224, 224))


def test_vgg11_structure():
    model = zoo.vgg11()
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("Conv") == 8 and ops.count("MaxPool") == 5 and ops.count("Gemm") == 3
    assert zoo.flops(model, (1, 3, 224, 224)) / 2e9 == pytest.approx(7.61, rel=0.03)


def test_flops_counts_conv_and_gemm_exactly():
    model = zoo.lenet5()
    # C1 6*28*28*25, C3 16*10*10*150, fc 400*120 + 120*84 + 84*10 multiply-adds.
    macs = 6 * 28 * 28 * 25 + 16 * 10 * 10 * 150 + 400 * 120 + 120 * 84 + 84 * 10
    assert zoo.flops(model, (1, 1, 32, 32)) == 2 * macs


def test_flops_of_a_foreign_export():
    """PaddlePaddle's Shape -> Cast -> Reshape -> MatMul head: shapes are lost, counts are not."""
    path = f"{cyconv.__path__[0]}/data/ppocr_mobile_v2_cls.onnx"
    model = onnx.load(path)
    one = zoo.flops(model, (1, 3, 48, 192))
    assert one > 0 and zoo.flops(model, (3, 3, 48, 192)) == 3 * one


def test_session_metadata(case):
    sess = case.cy(1)
    (inp,), (out,) = sess.get_inputs(), sess.get_outputs()
    assert (inp.name, inp.shape, inp.type) == ("input", ["N", *case.shape], "tensor(float)")
    assert out.name == "output" and out.shape[0] == "N" and out.type == "tensor(float)"


@pytest.mark.parametrize("name,side", [("googlenet", 35), ("mobilenet_v2", 33),
                                       ("densenet121", 32), ("nin", 17)])
def test_every_layer_matches(name, side, divergence):
    """Each intermediate tensor on its own meets the contract (names the first bad layer)."""
    model = zoo.ZOO[name](input_size=side, num_classes=10)
    channels = zoo.DEFAULT_INPUT[name][0]
    x = np.random.default_rng(3).standard_normal((2, channels, side, side), dtype=np.float32)
    problem = divergence(model, {"input": x},
                         lambda blob, t: cyconv.InferenceSession(blob, threads=t), threads=2)
    assert problem is None, problem
