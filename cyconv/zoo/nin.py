"""Network in Network (Lin, Chen & Yan, 2014), the CIFAR-10 model of the paper's Caffe release.

Three "mlpconv" blocks (a spatial conv followed by two 1x1 convs, all ReLU), pooled with the
Caffe ceil-mode rule; the head is a 1x1 conv to ``num_classes`` maps and a global average
pool instead of fully connected layers::

    input 3x32x32
    conv 5x5 p2 192, cccp 1x1 160, cccp 1x1 96   -> 96x32x32
    max pool 3 s2 (ceil)                         -> 96x16x16, dropout 0.5
    conv 5x5 p2 192, cccp 1x1 192, cccp 1x1 192  -> 192x16x16
    avg pool 3 s2 (ceil)                         -> 192x8x8,  dropout 0.5
    conv 3x3 p1 192, cccp 1x1 192, cccp 1x1 C    -> Cx8x8
    global average pool, flatten                 -> C

The ceil-mode average pool has windows that run past the input's edge; their divisor is the
number of samples inside (PyTorch's and ONNX's rule with no padding): a useful edge case.
"""
from ._builder import NetBuilder


def _mlpconv(b, x, widths, k, pad):
    x = b.conv_relu(x, widths[0], k, pad=pad)
    for w in widths[1:]:
        x = b.conv_relu(x, w, 1)
    return x


def nin(batch="N", seed=0, num_classes=10, input_size=32, opset=17):
    """Network in Network as an ONNX model.

    Parameters
    ----------
    batch : str or int
        Batch dimension ("N": dynamic).
    seed : int
        Weight seed.
    num_classes : int
        Output width (the last 1x1 conv's channels).
    input_size : int
        Side of the square RGB input (>= 8).
    opset : int
        ONNX opset.

    Returns
    -------
    onnx.ModelProto
        Input ``input`` (N, 3, S, S), output ``output`` (N, num_classes).
    """
    b = NetBuilder("nin", seed, opset, batch)
    x = b.input("input", (3, input_size, input_size))
    x = _mlpconv(b, x, (192, 160, 96), 5, 2)
    x = b.dropout(b.maxpool(x, 3, 2, ceil_mode=True))
    x = _mlpconv(b, x, (192, 192, 192), 5, 2)
    x = b.dropout(b.avgpool(x, 3, 2, ceil_mode=True))
    x = _mlpconv(b, x, (192, 192, num_classes), 3, 1)
    return b.build(b.flatten(b.global_avgpool(x)))
