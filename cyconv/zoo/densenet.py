"""DenseNet-121 (Huang et al., 2017), torchvision layout (growth 32, bn_size 4, blocks 6-12-24-16).

    conv 7x7 s2 p3, 64 (no bias), bn, relu; max pool 3 s2 p1    -> 64 x S/4
    dense block (6 layers), transition                         -> 128 x S/8
    dense block (12), transition                               -> 256 x S/16
    dense block (24), transition                               -> 512 x S/32
    dense block (16)                                           -> 1024 x S/32
    bn, relu, global average pool, flatten, fc num_classes

Dense layer (pre-activation): Concat(all previous features) -> bn, relu, conv 1x1 (128) ->
bn, relu, conv 3x3 p1 (32). torchvision concatenates the whole list of earlier feature maps in
every layer (``torch.cat(prev_features, 1)``), so the exported graph has one Concat per layer
with a growing number of inputs (a single input for the first layer), and one more at the end
of the block. Transition: bn, relu, conv 1x1 halving channels, avg pool 2 s2. These BNs follow
a Concat, not a conv, so they cannot be folded into a conv weight by an exporter.
"""
from ._builder import NetBuilder

GROWTH, BN_SIZE, BLOCKS, INIT_FEATURES = 32, 4, (6, 12, 24, 16), 64


def _dense_block(b, x, layers):
    features = [x]
    for _ in range(layers):
        y = b.concat(features)
        y = b.conv(b.relu(b.bn(y)), BN_SIZE * GROWTH, 1, bias=False)
        y = b.conv(b.relu(b.bn(y)), GROWTH, 3, pad=1, bias=False)
        features.append(y)
    return b.concat(features)


def densenet121(batch="N", seed=0, num_classes=1000, input_size=224, opset=17):
    """DenseNet-121 as an ONNX model.

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
    b = NetBuilder("densenet121", seed, opset, batch)
    x = b.input("input", (3, input_size, input_size))
    x = b.maxpool(b.conv_bn_relu(x, INIT_FEATURES, 7, 2, 3), 3, 2, 1)
    for i, layers in enumerate(BLOCKS):
        x = _dense_block(b, x, layers)
        if i != len(BLOCKS) - 1:
            x = b.conv(b.relu(b.bn(x)), b.shape[x][0] // 2, 1, bias=False)
            x = b.avgpool(x, 2)
    x = b.relu(b.bn(x))
    x = b.flatten(b.global_avgpool(x))
    return b.build(b.gemm(x, num_classes, gain=1.0))
