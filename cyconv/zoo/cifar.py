"""CIFAR-10 CNNs in PyTorch layout (NCHW).

``cifar_cnn``: the classic one (Keras' ``cifar10_cnn`` example)

    input 3x32x32
    conv 3x3 pad 1, 32, relu  -> 32x32x32
    conv 3x3, 32, relu        -> 32x30x30
    max pool 2                -> 32x15x15, dropout 0.25
    conv 3x3 pad 1, 64, relu  -> 64x15x15
    conv 3x3, 64, relu        -> 64x13x13
    max pool 2                -> 64x6x6,   dropout 0.25
    flatten, fc 2304 -> 512, relu, dropout 0.5, fc 512 -> num_classes
"""
from ._builder import NetBuilder


def cifar_cnn(batch="N", seed=0, num_classes=10, input_size=32, opset=17):
    """CIFAR-10 CNN as an ONNX model.

    Parameters
    ----------
    batch : str or int
        Batch dimension ("N": dynamic).
    seed : int
        Weight seed.
    num_classes : int
        Output width.
    input_size : int
        Side of the square RGB input (>= 14).
    opset : int
        ONNX opset.

    Returns
    -------
    onnx.ModelProto
        Input ``input`` (N, 3, S, S), output ``output`` (N, num_classes).
    """
    b = NetBuilder("cifar_cnn", seed, opset, batch)
    x = b.input("input", (3, input_size, input_size))
    for width in (32, 64):
        x = b.conv_relu(x, width, 3, pad=1)
        x = b.conv_relu(x, width, 3)
        x = b.dropout(b.maxpool(x, 2), 0.25)
    x = b.relu(b.gemm(b.flatten(x), 512))
    return b.build(b.gemm(b.dropout(x, 0.5), num_classes, gain=1.0))


def cifar_bn(batch="N", seed=0, num_classes=10, input_size=32, opset=17):
    """The CIFAR-style CNN of issue 4, [conv-bn-relu-pool] x 2 - fc - relu - dropout - fc -
    softmax, as PyTorch's exporter writes it without folding BatchNorm::

        input 3x32x32
        conv 3x3 pad 1, 32 (no bias), BN, relu, max pool 2  -> 32x16x16
        conv 3x3 pad 1, 64 (no bias), BN, relu, max pool 2  -> 64x8x8
        flatten, fc 4096 -> 512, relu, dropout 0.5, fc 512 -> num_classes, softmax

    Parameters and returns as :func:`cifar_cnn` (``input_size``: a multiple of 4, >= 8);
    the output is class probabilities.
    """
    b = NetBuilder("cifar_bn", seed, opset, batch)
    x = b.input("input", (3, input_size, input_size))
    for width in (32, 64):
        x = b.maxpool(b.conv_bn_relu(x, width, 3, pad=1), 2)
    x = b.relu(b.gemm(b.flatten(x), 512))
    return b.build(b.softmax(b.gemm(b.dropout(x, 0.5), num_classes, gain=1.0)))
