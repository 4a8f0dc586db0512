"""Standard CNN architectures as ONNX models with seeded random weights.

Each function returns an ``onnx.ModelProto`` with one input ``input`` (N, C, S, S) and one
output ``output`` (N, num_classes), the batch dim symbolic ("N") unless ``batch`` is an int,
laid out node for node as PyTorch's ONNX exporter writes the torchvision (or original paper)
network in eval mode. They are test and benchmark workloads: the weights are random (seeded
He-normal, BN statistics consistent with the activations), not trained.

    >>> from cyconv import zoo
    >>> model = zoo.resnet18(input_size=112)
    >>> zoo.flops(model, (1, 3, 112, 112)) / 1e9       # doctest: +SKIP
    0.59...

``ZOO`` maps names to the builders; ``DEFAULT_INPUT`` gives each one's paper input side.
"""
from __future__ import annotations

from .alexnet import alexnet
from .cifar import cifar_bn, cifar_cnn
from .densenet import densenet121
from .flops import flops
from .googlenet import googlenet
from .lenet import lenet5
from .mobilenet import mobilenet_v2
from .nin import nin
from .resnet import resnet18, resnet50
from .squeezenet import squeezenet1_1
from .vgg import vgg11, vgg16

ZOO = {
    "lenet5": lenet5,
    "cifar_cnn": cifar_cnn,
    "cifar_bn": cifar_bn,
    "nin": nin,
    "alexnet": alexnet,
    "vgg11": vgg11,
    "vgg16": vgg16,
    "resnet18": resnet18,
    "resnet50": resnet50,
    "mobilenet_v2": mobilenet_v2,
    "googlenet": googlenet,
    "densenet121": densenet121,
    "squeezenet1_1": squeezenet1_1,
}

# Input channels and side each builder defaults to.
DEFAULT_INPUT = {name: (3, 224) for name in ZOO}
DEFAULT_INPUT.update(lenet5=(1, 32), cifar_cnn=(3, 32), cifar_bn=(3, 32), nin=(3, 32))

__all__ = ["ZOO", "DEFAULT_INPUT", "flops", *ZOO]
