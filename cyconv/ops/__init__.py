"""Operator families: numpy references, attribute rules and the builders that bind kernels.

Importing this package registers every operator in :data:`cyconv.engine.registry.OPS`.
One file per family; each file holds the numpy reference of its ops (the oracle for tests),
the shape/attribute rules, and the ``@register`` builders that call the fast kernels.
"""
from . import (  # noqa: F401  (imported for their registrations)
    activation,
    arithmetic,
    conv,
    detection,
    indexing,
    logic,
    math,
    matmul,
    norm,
    normalization,
    pad,
    pool,
    recurrent,
    reduce,
    resize,
    shape,
    softmax,
)
