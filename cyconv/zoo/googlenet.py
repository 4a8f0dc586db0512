"""GoogLeNet / Inception v1 (Szegedy et al., 2015), torchvision layout without auxiliary heads.

Every conv is torchvision's BasicConv2d: conv (no bias), bn (eps 1e-3), relu. Max pools use
ceil_mode, as in the original Caffe model::

    conv 7x7 s2 p3, 64; max pool 3 s2 (ceil)           -> 64 x S/4
    conv 1x1, 64; conv 3x3 p1, 192; max pool 3 s2 ceil -> 192 x S/8
    inception 3a, 3b; max pool 3 s2 (ceil)             -> 480 x S/16
    inception 4a .. 4e; max pool 2 s2 (ceil)           -> 832 x S/32
    inception 5a, 5b                                   -> 1024
    global average pool, flatten, dropout 0.2, fc num_classes

Inception(cin, c1, c3r, c3, c5r, c5, pp): four branches concatenated on channels:
1x1 c1 | 1x1 c3r -> 3x3 c3 | 1x1 c5r -> 3x3 c5 (torchvision keeps the 3x3 here that the paper
calls 5x5) | max pool 3 s1 p1 (ceil) -> 1x1 pp.
"""
from ._builder import NetBuilder

# (c1, c3r, c3, c5r, c5, pool_proj) for 3a 3b | 4a..4e | 5a 5b; "M" = max pool 3 s2,
# "M2" = max pool 2 s2 (both ceil_mode).
STAGES = (
    (64, 96, 128, 16, 32, 32), (128, 128, 192, 32, 96, 64), "M",
    (192, 96, 208, 16, 48, 64), (160, 112, 224, 24, 64, 64), (128, 128, 256, 24, 64, 64),
    (112, 144, 288, 32, 64, 64), (256, 160, 320, 32, 128, 128), "M2",
    (256, 160, 320, 32, 128, 128), (384, 192, 384, 48, 128, 128),
)


def _basic_conv(b, x, cout, k, stride=1, pad=0):
    return b.conv_bn_relu(x, cout, k, stride, pad, eps=1e-3)


def _inception(b, x, c1, c3r, c3, c5r, c5, pool_proj):
    b1 = _basic_conv(b, x, c1, 1)
    b2 = _basic_conv(b, _basic_conv(b, x, c3r, 1), c3, 3, pad=1)
    b3 = _basic_conv(b, _basic_conv(b, x, c5r, 1), c5, 3, pad=1)
    b4 = _basic_conv(b, b.maxpool(x, 3, 1, 1, ceil_mode=True), pool_proj, 1)
    return b.concat([b1, b2, b3, b4])


def googlenet(batch="N", seed=0, num_classes=1000, input_size=224, opset=17):
    """GoogLeNet (Inception v1, no aux heads, transform_input=False) as an ONNX model.

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
    b = NetBuilder("googlenet", seed, opset, batch)
    x = b.input("input", (3, input_size, input_size))
    x = b.maxpool(_basic_conv(b, x, 64, 7, 2, 3), 3, 2, ceil_mode=True)
    x = _basic_conv(b, _basic_conv(b, x, 64, 1), 192, 3, pad=1)
    x = b.maxpool(x, 3, 2, ceil_mode=True)
    for stage in STAGES:
        if stage == "M":
            x = b.maxpool(x, 3, 2, ceil_mode=True)
        elif stage == "M2":
            x = b.maxpool(x, 2, 2, ceil_mode=True)
        else:
            x = _inception(b, x, *stage)
    x = b.dropout(b.flatten(b.global_avgpool(x)), 0.2)
    return b.build(b.gemm(x, num_classes, gain=1.0))
