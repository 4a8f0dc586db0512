"""The exceptions cyconv raises on purpose.

Every one derives from :class:`CyconvError`; the ones that describe bad user data also derive
from :class:`ValueError` so that code written for ONNX Runtime's ``except ValueError`` still works.
"""


class CyconvError(Exception):
    """Base of every error cyconv raises on purpose."""


class ModelError(CyconvError, ValueError):
    """The model is invalid, truncated or unsafe (e.g. external data outside its folder)."""


class UnsupportedOpError(ModelError):
    """The model uses operators cyconv does not implement; the message names all of them."""

    def __init__(self, unsupported):
        # unsupported: iterable of (domain, op_type, opset) triples
        self.unsupported = sorted(set(unsupported))
        names = ", ".join(
            f"{(d + '.') if d else ''}{op} (opset {v})" for d, op, v in self.unsupported)
        super().__init__(f"unsupported operators: {names}")


class InputError(CyconvError, ValueError):
    """A bad feed: missing or unknown input name, wrong rank, shape or dtype."""
