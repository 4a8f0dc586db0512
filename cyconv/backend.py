"""``onnx.backend.base.Backend`` for cyconv, so ONNX's backend test suite can drive it.

    import cyconv.backend as backend
    rep = backend.prepare(model)          # an InferenceSession underneath
    outputs = rep.run([x])                # list (graph-input order) or dict of inputs
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx.backend.base import Backend, BackendRep, namedtupledict

from .engine.session import InferenceSession


class CyconvRep(BackendRep):
    def __init__(self, session: InferenceSession):
        self.session = session
        self._input_names = [i.name for i in session.get_inputs()]
        self._output_names = [o.name for o in session.get_outputs()]

    def run(self, inputs, **kwargs):
        if isinstance(inputs, dict):
            feed = dict(inputs)
        else:
            if isinstance(inputs, np.ndarray):
                inputs = [inputs]
            feed = dict(zip(self._input_names, inputs))
        # ONNX's test data carries some tensors as TensorProto.
        feed = {k: onnx.numpy_helper.to_array(v) if isinstance(v, onnx.TensorProto) else v
                for k, v in feed.items()}
        outputs = self.session.run(None, feed)
        return namedtupledict("Outputs", self._output_names)(*outputs)


class CyconvBackend(Backend):
    @classmethod
    def is_compatible(cls, model, device="CPU", **kwargs):
        return cls.supports_device(device)

    @classmethod
    def supports_device(cls, device: str) -> bool:
        return str(device).upper().startswith("CPU")

    @classmethod
    def prepare(cls, model, device="CPU", threads=None, **kwargs):
        if not cls.supports_device(device):
            raise ValueError(f"cyconv runs on the CPU only, not {device!r}")
        return CyconvRep(InferenceSession(model, threads=threads))

    @classmethod
    def run_model(cls, model, inputs, device="CPU", **kwargs):
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def run_node(cls, node, inputs, device="CPU", outputs_info=None, **kwargs):
        """Run a single NodeProto on ``inputs`` (a list in the node's input order)."""
        inputs = [np.asarray(x) for x in inputs]
        present = [name for name in node.input if name]
        graph_inputs = [
            onnx.helper.make_tensor_value_info(
                name, onnx.helper.np_dtype_to_tensor_dtype(x.dtype), x.shape)
            for name, x in zip(present, inputs)]
        graph_outputs = [onnx.helper.make_empty_tensor_value_info(name)
                         for name in node.output if name]
        opset = kwargs.get("opset_version") or onnx.defs.onnx_opset_version()
        model = onnx.helper.make_model(
            onnx.helper.make_graph([node], "run_node", graph_inputs, graph_outputs),
            opset_imports=[onnx.helper.make_opsetid(node.domain or "", opset)])
        return cls.prepare(model, device).run(dict(zip(present, inputs)))


prepare = CyconvBackend.prepare
run_model = CyconvBackend.run_model
run_node = CyconvBackend.run_node
supports_device = CyconvBackend.supports_device
is_compatible = CyconvBackend.is_compatible
