"""SqueezeNet 1.1 (Iandola et al., 2016; the v1.1 revision), torchvision layout.

    conv 3x3 s2, 64, relu; max pool 3 s2 (ceil)        -> 64 x ~S/4
    fire(16, 64, 64) x2;   max pool 3 s2 (ceil)        -> 128
    fire(32, 128, 128) x2; max pool 3 s2 (ceil)        -> 256
    fire(48, 192, 192) x2; fire(64, 256, 256) x2       -> 512
    dropout 0.5, conv 1x1 num_classes, relu, global average pool, flatten

Fire(s, e1, e3): squeeze conv 1x1 s + relu, then Concat(expand 1x1 e1 + relu,
expand 3x3 p1 e3 + relu). All convs have biases.
"""
from ._builder import NetBuilder

# (squeeze, expand1x1, expand3x3) or "M" (max pool 3 s2, ceil_mode)
FEATURES = ((16, 64, 64), (16, 64, 64), "M", (32, 128, 128), (32, 128, 128), "M",
            (48, 192, 192), (48, 192, 192), (64, 256, 256), (64, 256, 256))


def _fire(b, x, squeeze, e1, e3):
    s = b.conv_relu(x, squeeze, 1)
    return b.concat([b.conv_relu(s, e1, 1), b.conv_relu(s, e3, 3, pad=1)])


def squeezenet1_1(batch="N", seed=0, num_classes=1000, input_size=224, opset=17):
    """SqueezeNet 1.1 as an ONNX model.

    Parameters
    ----------
    batch : str or int
        Batch dimension ("N": dynamic).
    seed : int
        Weight seed.
    num_classes : int
        Output width.
    input_size : int
        Side of the square input (>= 33).
    opset : int
        ONNX opset.

    Returns
    -------
    onnx.ModelProto
        Input ``input`` (N, 3, S, S), output ``output`` (N, num_classes).
    """
    b = NetBuilder("squeezenet1_1", seed, opset, batch)
    x = b.input("input", (3, input_size, input_size))
    x = b.maxpool(b.conv_relu(x, 64, 3, stride=2), 3, 2, ceil_mode=True)
    for item in FEATURES:
        x = b.maxpool(x, 3, 2, ceil_mode=True) if item == "M" else _fire(b, x, *item)
    x = b.conv_relu(b.dropout(x), num_classes, 1)
    return b.build(b.flatten(b.global_avgpool(x)))
