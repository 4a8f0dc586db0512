"""ResNet-18 and ResNet-50 (He et al., 2016), torchvision's v1.5 layout (stride on the 3x3 conv).

    stem   conv 7x7 s2 p3, 64, bn, relu; max pool 3 s2 p1         -> 64 x S/4
    layer1 blocks at 64  (stride 1)                                -> S/4
    layer2 blocks at 128 (first stride 2)                          -> S/8
    layer3 blocks at 256 (first stride 2)                          -> S/16
    layer4 blocks at 512 (first stride 2)                          -> S/32
    head   global average pool, flatten, fc num_classes

BasicBlock (ResNet-18, [2, 2, 2, 2]): conv3x3-bn-relu-conv3x3-bn, + identity, relu.
Bottleneck (ResNet-50, [3, 4, 6, 3], expansion 4): conv1x1-bn-relu-conv3x3(stride)-bn-relu-
conv1x1-bn, + identity, relu. The identity is conv1x1(stride)-bn when shape changes.

The last BN of each residual branch gets small scales, U(0.05, 0.35): a trained ResNet's
branches add a fraction of the stream (torchvision's ``zero_init_residual`` is the limit), and
with unit scales the stream's variance would double at every block (x2^16 for ResNet-50).
"""
from ._builder import NetBuilder

_BRANCH_GAMMA = (0.05, 0.35)


def _shortcut(b, x, cout, stride):
    if stride == 1 and b.shape[x][0] == cout:
        return x
    return b.bn(b.conv(x, cout, 1, stride, bias=False))


def _basic(b, x, width, stride):
    y = b.conv_bn_relu(x, width, 3, stride, 1)
    y = b.bn(b.conv(y, width, 3, 1, 1, bias=False), gamma=_BRANCH_GAMMA)
    return b.relu(b.add(y, _shortcut(b, x, width, stride)))


def _bottleneck(b, x, width, stride):
    y = b.conv_bn_relu(x, width, 1)
    y = b.conv_bn_relu(y, width, 3, stride, 1)
    y = b.bn(b.conv(y, width * 4, 1, bias=False), gamma=_BRANCH_GAMMA)
    return b.relu(b.add(y, _shortcut(b, x, width * 4, stride)))


def _resnet(name, block, layers, batch, seed, num_classes, input_size, opset):
    b = NetBuilder(name, seed, opset, batch)
    x = b.input("input", (3, input_size, input_size))
    x = b.maxpool(b.conv_bn_relu(x, 64, 7, 2, 3), 3, 2, 1)
    for i, (width, count) in enumerate(zip((64, 128, 256, 512), layers)):
        for j in range(count):
            x = block(b, x, width, 2 if (i > 0 and j == 0) else 1)
    x = b.flatten(b.global_avgpool(x))
    return b.build(b.gemm(x, num_classes, gain=1.0))


def resnet18(batch="N", seed=0, num_classes=1000, input_size=224, opset=17):
    """ResNet-18 as an ONNX model.

    Parameters
    ----------
    batch : str or int
        Batch dimension ("N": dynamic).
    seed : int
        Weight seed.
    num_classes : int
        Output width.
    input_size : int
        Side of the square input (>= 32; any size works thanks to the global pool).
    opset : int
        ONNX opset.

    Returns
    -------
    onnx.ModelProto
        Input ``input`` (N, 3, S, S), output ``output`` (N, num_classes).
    """
    return _resnet("resnet18", _basic, (2, 2, 2, 2), batch, seed, num_classes, input_size,
                   opset)


def resnet50(batch="N", seed=0, num_classes=1000, input_size=224, opset=17):
    """ResNet-50 as an ONNX model; parameters as :func:`resnet18`."""
    return _resnet("resnet50", _bottleneck, (3, 4, 6, 3), batch, seed, num_classes,
                   input_size, opset)
