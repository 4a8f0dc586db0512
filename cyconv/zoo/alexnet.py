"""AlexNet, torchvision's single-tower variant (Krizhevsky 2014, "One weird trick").

    input 3x224x224
    conv 11x11 s4 p2, 64, relu  -> 64x55x55,  max pool 3 s2 -> 27x27
    conv 5x5 p2, 192, relu      -> 192x27x27, max pool 3 s2 -> 13x13
    conv 3x3 p1, 384, relu
    conv 3x3 p1, 256, relu
    conv 3x3 p1, 256, relu      -> 256x13x13, max pool 3 s2 -> 6x6
    adaptive avg pool 6x6 (AveragePool k1 s1 at 224), flatten -> 9216
    dropout, fc 4096, relu, dropout, fc 4096, relu, fc num_classes
"""
from ._builder import NetBuilder


def alexnet(batch="N", seed=0, num_classes=1000, input_size=224, opset=17):
    """AlexNet as an ONNX model.

    Parameters
    ----------
    batch : str or int
        Batch dimension ("N": dynamic).
    seed : int
        Weight seed.
    num_classes : int
        Output width.
    input_size : int
        Side of the square input; the last feature map must be a multiple of 6 for the
        adaptive pool to be exportable (224 -> 6, 415 -> 12, ...).
    opset : int
        ONNX opset.

    Returns
    -------
    onnx.ModelProto
        Input ``input`` (N, 3, S, S), output ``output`` (N, num_classes).
    """
    b = NetBuilder("alexnet", seed, opset, batch)
    x = b.input("input", (3, input_size, input_size))
    x = b.maxpool(b.conv_relu(x, 64, 11, stride=4, pad=2), 3, 2)
    x = b.maxpool(b.conv_relu(x, 192, 5, pad=2), 3, 2)
    x = b.conv_relu(x, 384, 3, pad=1)
    x = b.conv_relu(x, 256, 3, pad=1)
    x = b.maxpool(b.conv_relu(x, 256, 3, pad=1), 3, 2)
    x = b.flatten(b.adaptive_avgpool(x, 6))
    x = b.relu(b.gemm(b.dropout(x), 4096))
    x = b.relu(b.gemm(b.dropout(x), 4096))
    return b.build(b.gemm(x, num_classes, gain=1.0))
