"""VGG (Simonyan & Zisserman, 2015), torchvision's configurations without batch norm.

Each number is a 3x3 pad-1 conv + ReLU of that width, ``M`` a 2x2 max pool; then an adaptive
average pool to 7x7 (an AveragePool k1 s1 at 224, as PyTorch exports it), flatten (25088) and
fc 4096, relu, dropout, fc 4096, relu, dropout, fc num_classes.
"""
from ._builder import NetBuilder

CONFIGS = {
    "vgg11": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg16": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
              512, 512, 512, "M"),
}


def _vgg(cfg_name, batch, seed, num_classes, input_size, opset):
    b = NetBuilder(cfg_name, seed, opset, batch)
    x = b.input("input", (3, input_size, input_size))
    for item in CONFIGS[cfg_name]:
        x = b.maxpool(x, 2) if item == "M" else b.conv_relu(x, item, 3, pad=1)
    x = b.flatten(b.adaptive_avgpool(x, 7))
    x = b.dropout(b.relu(b.gemm(x, 4096)))
    x = b.dropout(b.relu(b.gemm(x, 4096)))
    return b.build(b.gemm(x, num_classes, gain=1.0))


def vgg16(batch="N", seed=0, num_classes=1000, input_size=224, opset=17):
    """VGG-16 (configuration D) as an ONNX model.

    Parameters
    ----------
    batch : str or int
        Batch dimension ("N": dynamic).
    seed : int
        Weight seed.
    num_classes : int
        Output width.
    input_size : int
        Side of the square input; ``input_size // 32`` must be a multiple of 7 for the
        7x7 adaptive pool to be exportable (224..255 -> 7x7).
    opset : int
        ONNX opset.

    Returns
    -------
    onnx.ModelProto
        Input ``input`` (N, 3, S, S), output ``output`` (N, num_classes); 138 M parameters.
    """
    return _vgg("vgg16", batch, seed, num_classes, input_size, opset)


def vgg11(batch="N", seed=0, num_classes=1000, input_size=224, opset=17):
    """VGG-11 (configuration A) as an ONNX model; parameters as :func:`vgg16`."""
    return _vgg("vgg11", batch, seed, num_classes, input_size, opset)
