"""The classic CIFAR-10 CNN (Keras' ``cifar10_cnn`` example), in PyTorch layout (NCHW).

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
