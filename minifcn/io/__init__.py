"""Weights in and out: every file format minifcn reads or writes, in one package.

    checkpoint   .npz weights and training checkpoints (save, load, save_checkpoint, ...)
    importers    torchvision's VGG16, the PyTorch FCN port and Caffe's nets renamed into ours
    torchfile    torch.save files read without torch (torchlegacy and torchpickle beside it)
    torchwrite   torch.load-able files written without torch
    caffemodel   Caffe's binary protobuf read without Caffe (fromcaffe renames its layers)
    safetensors  Hugging Face's format, both ways
    onnx         a whole net for inference, written through the onnx package
    export       a trained model for PyTorch, ONNX or safetensors (python -m minifcn.export)
    npzfile      the checked .npz reader;  errors: one-line text
    atomic       all-or-nothing writes, and check_output: the commands' check of a file to write

Import the names below from ``minifcn.io``; the submodules are the places to read.
"""
from ..data.transforms import MEAN_RGB  # minifcn's input: RGB 0..255 minus this mean
from .atomic import atomic_path, atomic_write_bytes, atomic_write_text, check_folder, check_output
from .caffemodel import read_caffemodel
from .checkpoint import META_KEY, load, load_checkpoint, save, save_checkpoint
from .importers import (TORCHVISION_MEAN, TORCHVISION_STD, VGG16_CONV_NAMES, from_fcn_port,
                        from_torchvision_vgg16, import_weights, merge_state)
from .safetensors import load_safetensors, save_safetensors
from .torchfile import read_torch_file, read_torch_state_dict

__all__ = [
    "atomic_path", "atomic_write_bytes", "atomic_write_text", "save", "load", "save_checkpoint",
    "load_checkpoint", "read_torch_state_dict", "read_torch_file", "from_torchvision_vgg16",
    "from_fcn_port", "import_weights", "merge_state", "VGG16_CONV_NAMES", "MEAN_RGB",
    "read_caffemodel", "load_safetensors", "save_safetensors", "META_KEY", "TORCHVISION_MEAN",
    "TORCHVISION_STD", "check_output", "check_folder",
]
