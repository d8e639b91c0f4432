"""Data sets for fastnoise: torchvision MNIST, Fashion-MNIST, CIFAR-10/100 and real-image
subsets shipped in the package ("embedded", "embedded-fashion") for offline use.

Items are ``(float32 CxHxW tensor in [0, 1], int label)``; models normalize inside.
"""

from fastnoise.data.catalog import DATASETS, DatasetInfo, dataset_info
from fastnoise.data.loaders import make_loader, sampler_of
from fastnoise.data.loading import DatasetNotFoundError, default_root, load_dataset
from fastnoise.data.tensor_dataset import ImageTensorDataset
from fastnoise.data.tensors import as_tensors, to_tensor_dataset

__all__ = [
    "DATASETS",
    "DatasetInfo",
    "DatasetNotFoundError",
    "ImageTensorDataset",
    "as_tensors",
    "dataset_info",
    "default_root",
    "load_dataset",
    "make_loader",
    "sampler_of",
    "to_tensor_dataset",
]
