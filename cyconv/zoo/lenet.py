"""LeNet-5 (LeCun et al., 1998), the 32x32 grey-scale digit network.

    input 1x32x32
    C1  conv 5x5, 6          -> 6x28x28,  tanh
    S2  avg pool 2x2 s2      -> 6x14x14
    C3  conv 5x5, 16         -> 16x10x10, tanh
    S4  avg pool 2x2 s2      -> 16x5x5
    C5  fc 400 -> 120, tanh     (a 5x5 conv on 5x5 maps in the paper: the same map)
    F6  fc 120 -> 84, tanh
    out fc 84 -> num_classes

The paper's subsampling layers had a trainable coefficient and bias; the common modern
reading (and PyTorch ports) is a plain 2x2 average, kept here. Tanh stands for the paper's
scaled tanh ``1.7159 tanh(2x/3)``, whose constants a trained network absorbs into its weights.
"""
from ._builder import NetBuilder


def lenet5(batch="N", seed=0, num_classes=10, input_size=32, in_channels=1, opset=17):
    """LeNet-5 as an ONNX model.

    Parameters
    ----------
    batch : str or int
        Batch dimension of input and output ("N": dynamic).
    seed : int
        Weight seed.
    num_classes : int
        Width of the output layer.
    input_size : int
        Side of the square input (>= 16 so that S4 is non-empty).
    in_channels : int
        Image channels (1 for MNIST-style digits).
    opset : int
        ONNX opset.

    Returns
    -------
    onnx.ModelProto
        Input ``input`` (N, in_channels, S, S), output ``output`` (N, num_classes).
    """
    b = NetBuilder("lenet5", seed, opset, batch)
    x = b.input("input", (in_channels, input_size, input_size))
    x = b.avgpool(b.tanh(b.conv(x, 6, 5, gain=1.0)), 2)
    x = b.avgpool(b.tanh(b.conv(x, 16, 5, gain=1.0)), 2)
    x = b.flatten(x)
    x = b.tanh(b.gemm(x, 120, gain=1.0))
    x = b.tanh(b.gemm(x, 84, gain=1.0))
    return b.build(b.gemm(x, num_classes, gain=1.0))
