"""MobileNetV2 (Sandler et al., 2018), torchvision layout at width multiplier 1.0.

    stem  conv 3x3 s2 p1, 32, bn, relu6
    inverted residual stages (t expansion, c channels, n repeats, s first stride):
          t=1 c=16 n=1 s=1 | t=6 c=24 n=2 s=2 | t=6 c=32 n=3 s=2 | t=6 c=64 n=4 s=2
          t=6 c=96 n=3 s=1 | t=6 c=160 n=3 s=2 | t=6 c=320 n=1 s=1
    conv 1x1, 1280, bn, relu6; global average pool, flatten, dropout 0.2, fc num_classes

Inverted residual: [conv1x1 expand to t*cin, bn, relu6] (absent when t = 1), depthwise conv
3x3 (group = channels, stride s), bn, relu6, conv1x1 project to c, bn (linear bottleneck);
identity added when s = 1 and cin = c. ReLU6 is exported as Clip with min/max inputs.
"""
from ._builder import NetBuilder

SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
            (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
_BRANCH_GAMMA = (0.1, 0.5)   # linear-bottleneck BN of a residual block: keeps the stream O(1)


def _inverted_residual(b, x, cout, stride, expand):
    cin = b.shape[x][0]
    hidden = cin * expand
    y = b.conv_bn_relu(x, hidden, 1, relu6=True) if expand != 1 else x
    y = b.conv_bn_relu(y, hidden, 3, stride, 1, group=hidden, relu6=True)
    residual = stride == 1 and cin == cout
    y = b.bn(b.conv(y, cout, 1, bias=False, gain=1.0),
             gamma=_BRANCH_GAMMA if residual else (0.5, 1.5))
    return b.add(x, y) if residual else y


def mobilenet_v2(batch="N", seed=0, num_classes=1000, input_size=224, opset=17):
    """MobileNetV2 as an ONNX model.

    Parameters
    ----------
    batch : str or int
        Batch dimension ("N": dynamic).
    seed : int
        Weight seed.
    num_classes : int
        Output width.
    input_size : int
        Side of the square input (>= 32).
    opset : int
        ONNX opset.

    Returns
    -------
    onnx.ModelProto
        Input ``input`` (N, 3, S, S), output ``output`` (N, num_classes).
    """
    b = NetBuilder("mobilenet_v2", seed, opset, batch)
    x = b.input("input", (3, input_size, input_size))
    x = b.conv_bn_relu(x, 32, 3, 2, 1, relu6=True)
    for t, c, n, s in SETTINGS:
        for i in range(n):
            x = _inverted_residual(b, x, c, s if i == 0 else 1, t)
    x = b.conv_bn_relu(x, 1280, 1, relu6=True)
    x = b.dropout(b.flatten(b.global_avgpool(x)), 0.2)
    return b.build(b.gemm(x, num_classes, gain=1.0))
