"""Models of the Learn2Perturb and PNIL papers, taking [0, 1] pixel inputs."""

from fastnoise.models._parts import CIFAR10_MEAN, CIFAR10_STD, MNIST_MEAN, MNIST_STD
from fastnoise.models.registry import MODEL_NAMES, build
from fastnoise.models.resnet11 import resnet11
from fastnoise.models.resnet_v1 import resnet_v1
from fastnoise.models.resnet_v2 import resnet_v2_18
from fastnoise.models.small_cnn import small_cnn
from fastnoise.nn.groups import noise_modules, noise_parameters, weight_parameters

__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "MNIST_MEAN",
    "MNIST_STD",
    "MODEL_NAMES",
    "build",
    "noise_modules",
    "noise_parameters",
    "resnet11",
    "resnet_v1",
    "resnet_v2_18",
    "small_cnn",
    "weight_parameters",
]
