"""op_type -> OpSpec: the one table the importer and the executor consult.

Each op family file in ``cyconv/ops/`` registers its operators here with :func:`register`.
An operator is described by a *builder*, called once per node when a session is created
("prepare once, run many", as ncnn's ``create_pipeline``)::

    @register("LeakyRelu", reference=leaky_relu_reference)
    def LeakyRelu(node, *, alpha=0.01):          # kwargs = ONNX attribute names, spec defaults
        alpha = float(alpha)                      # validate / normalise attributes at load
        def run(ctx, x):                          # one positional arg per ONNX input
            return kernels.leaky_relu(x, alpha, ctx.n_threads)
        return run

* ``node`` is a :class:`NodeContext`: the model's opset for the op's domain, the inputs that
  are constant at load (initializers / folded constants: prepack weights from them), counts of
  inputs and outputs, and ``node.error(msg)`` to raise a ModelError naming the node.
* The builder raises ``node.error(...)`` (a ModelError) for bad attributes, at load time.
  An attribute it does not accept as a keyword becomes a ModelError naming it.
* ``run(ctx, *inputs)`` receives numpy arrays (``None`` for an omitted optional input in the
  middle; trailing omitted inputs are not passed) and returns one array or a tuple of arrays
  (one per output the op produces). ``ctx.n_threads`` is the thread budget of the kernel.
  ``run`` must not keep references to its inputs and must not write into them.
* Constants a builder has fully captured: a builder that prepared a load-time constant input
  into a form of its own (packed weights, a Winograd transform, a scaled bias) and whose
  ``run`` never reads that input again declares it with :func:`consumes`::

      run = consumes(run, 1, 2)       # sets run.consumed_inputs = (1, 2)

  ``run`` then receives ``None`` in place of those inputs (trailing ones are not passed, so
  give them defaults), and the session stops holding the original array when no other node
  and no graph output reads it: the weights exist once at run time, in the builder's form.
  Declare an index only when ``node.const(index)`` is not None and ``run`` needs nothing
  from that input for any value of the other inputs it accepts; a builder that could not
  prepare (weights computed at run time, a dtype its kernel does not take) declares nothing.
  :func:`consumed_inputs` is how the session and :func:`call_op` read (and check) it.
* Native steps: ``run.native(in_shapes, n_threads)`` (optional, see :func:`natively`)
  prepares the op for the input shapes ``in_shapes`` (one per positional argument of
  ``run``, None where ``run`` gets None) as a ``cyconv.kernels.native.NativeOp``, or returns
  None when it cannot (the session then runs the graph in Python). ``run.native = ALIAS``
  marks a view op (Flatten, Reshape, ...): its output is its first input under another
  shape; ``run.native = SHAPE_ONLY`` an op whose output depends on its inputs' shapes only
  (Shape, Size): a native plan evaluates it once, when it is made, as it does any step whose
  inputs are all known then (constants, or such results: a Shape -> Gather -> Concat chain
  feeding a Reshape). A session whose every step has a native form (or is evaluated so)
  runs the graph as one C loop.
* ``node.hints``: model-wide facts a builder cannot see from its own node, computed once
  per load by the functions op modules register with :func:`model_hint` (each takes the
  optimized Graph and returns a dict; NodeContext.hints is their union). Conv uses it to
  know whether all of a model's small-plane Winograd weights fit a cache budget together.
* ``reference`` is the numpy oracle of the op (``cyconv/ops/<family>.py``): the definition every
  fast kernel is tested against.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

from ..errors import CyconvError, ModelError


@dataclass(frozen=True)
class OpSpec:
    op_type: str
    build: Callable
    reference: Optional[Callable] = None
    domain: str = ""
    # Opset range whose semantics the builder implements (it may branch on node.opset inside).
    min_opset: int = 1
    max_opset: int = 10_000


@dataclass
class NodeContext:
    """What a builder may know about its node at load time."""
    op_type: str
    name: str
    opset: int
    consts: tuple = ()          # per input: numpy array if constant at load, else None
    num_inputs: int = 0
    num_outputs: int = 1
    input_names: tuple = ()
    output_names: tuple = ()
    # static shapes from shape inference when known: per input a tuple of int|str|None, or None
    input_shapes: tuple = field(default_factory=tuple)
    # model-wide facts (model_hints): empty where no graph is at hand (call_op, folding)
    hints: dict = field(default_factory=dict)

    def error(self, message: str) -> ModelError:
        """A ModelError that names this node; use as ``raise node.error("...")``."""
        return ModelError(f"{self.op_type} node {self.name!r}: {message}")

    def const(self, index: int):
        """The constant value of input ``index`` or None (missing or computed at run time)."""
        return self.consts[index] if index < len(self.consts) else None


@dataclass
class RunContext:
    """What a kernel may know at run time."""
    n_threads: int = 1


OPS: dict = {}
MODEL_HINTS: list = []


def model_hint(fn: Callable) -> Callable:
    """Decorator: register ``fn(graph) -> dict`` of model-wide facts for builders
    (``node.hints``); it must not modify the graph."""
    MODEL_HINTS.append(fn)
    return fn


def model_hints(graph) -> dict:
    """The union of every registered model hint for ``graph``."""
    hints = {}
    for fn in MODEL_HINTS:
        hints.update(fn(graph))
    return hints


def register(op_type: str, *, reference: Optional[Callable] = None, domain: str = "",
             min_opset: int = 1, max_opset: int = 10_000):
    """Decorator: ``@register("Relu", reference=relu_reference)`` on a builder function."""
    def decorate(build):
        key = (domain, op_type)
        if key in OPS:
            raise RuntimeError(f"operator {domain or 'ai.onnx'}::{op_type} registered twice")
        OPS[key] = OpSpec(op_type, build, reference, domain, min_opset, max_opset)
        return build
    return decorate


def consumes(run: Callable, *indices: int) -> Callable:
    """Declare that ``run`` no longer needs the load-time constant inputs ``indices``.

    Parameters
    ----------
    run : callable
        The closure a builder returns.
    *indices : int
        Input positions whose constants the builder has captured (module docstring).

    Returns
    -------
    run : the same callable, with ``consumed_inputs`` set
    """
    run.consumed_inputs = tuple(sorted(set(indices)))
    return run


# ``run.native`` of a view op: the output is input 0's buffer under the shape ``run`` gives it.
ALIAS = "alias"
# ``run.native`` of an op whose output depends only on its inputs' shapes.
SHAPE_ONLY = "shape only"


def natively(run: Callable, native) -> Callable:
    """Attach ``native(in_shapes, n_threads) -> NativeOp | None`` (or :data:`ALIAS`) to
    ``run``; returns ``run``."""
    run.native = native
    return run


def consumed_inputs(run: Callable, node: NodeContext) -> frozenset:
    """The input indices ``run`` declared consumed, checked against what ``node`` knew.

    Raises
    ------
    CyconvError
        When an index was not a load-time constant of ``node``: the run would get ``None``
        for a value computed at run time (a builder bug, reported at load).
    """
    indices = frozenset(getattr(run, "consumed_inputs", ()))
    bad = sorted(i for i in indices if not 0 <= i < node.num_inputs or node.const(i) is None)
    if bad:
        raise CyconvError(f"internal error: {node.op_type} node {node.name!r} declares inputs "
                          f"{bad} consumed, but they are not constants at load")
    return indices


def lookup(domain: str, op_type: str, opset: int) -> Optional[OpSpec]:
    if domain == "ai.onnx":
        domain = ""
    spec = OPS.get((domain, op_type))
    if spec is None or not (spec.min_opset <= opset <= spec.max_opset):
        return None
    return spec


def call_op(op_type: str, inputs, attrs=None, *, opset: int = 21, n_threads: int = 1,
            const_inputs=None, num_outputs: int = 1, domain: str = ""):
    """Build and run one operator on numpy inputs (for tests and ``backend.run_node``).

    ``const_inputs``: indices of ``inputs`` the builder should see as load-time constants
    (default: none, which exercises the run-time path).
    """
    from .. import ops  # noqa: F401  (registers the operators on first use)
    spec = lookup(domain, op_type, opset)
    if spec is None:
        raise KeyError(f"no operator {op_type} at opset {opset}")
    const_inputs = set(const_inputs or ())
    consts = tuple(x if i in const_inputs else None for i, x in enumerate(inputs))
    node = NodeContext(op_type, op_type, opset, consts, len(inputs), num_outputs,
                       tuple(f"in{i}" for i in range(len(inputs))),
                       tuple(f"out{i}" for i in range(num_outputs)))
    run = build_with_attrs(spec, node, attrs or {})
    # as the session does: a consumed constant is not passed again
    consumed = consumed_inputs(run, node)
    args = [None if i in consumed else x for i, x in enumerate(inputs)]
    while args and args[-1] is None and len(args) - 1 in consumed:
        args.pop()
    return run(RunContext(n_threads), *args)


def build_with_attrs(spec: OpSpec, node: NodeContext, attrs: dict):
    """Call the builder, turning an unexpected attribute into a ModelError that names it."""
    try:
        return spec.build(node, **attrs)
    except TypeError as exc:
        if "unexpected keyword argument" in str(exc):
            raise node.error(f"unsupported attribute ({exc})") from None
        raise
