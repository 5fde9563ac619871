"""Layer 5: Module, Parameter, Buffer and the layers the nets are built from.

    module.py     Module (parameters, buffers, sub-modules found by attribute; state_dict,
                  load_state_dict, to, train/eval), Parameter, Buffer
    layers.py     Conv2d, ConvTranspose2d, MaxPool2d, MaxUnpool2d, AdaptiveAvgPool2d, Upsample,
                  BatchNorm2d, ReLU, Sigmoid, Softmax, Dropout, Sequential
    attention.py  SqueezeExcitation, NonLocal2d

``import minifcn.nn as nn`` gives them all, as ``torch.nn`` does.
"""
from .attention import NonLocal2d, SqueezeExcitation
from .layers import (AdaptiveAvgPool2d, BatchNorm2d, Conv2d, ConvTranspose2d, Dropout, MaxPool2d,
                     MaxUnpool2d, ReLU, Sequential, Sigmoid, Softmax, Upsample)
from .module import Buffer, Module, Parameter

__all__ = ["Module", "Parameter", "Buffer", "Conv2d", "ConvTranspose2d", "MaxPool2d",
           "MaxUnpool2d", "AdaptiveAvgPool2d", "Upsample", "BatchNorm2d", "ReLU", "Sigmoid",
           "Softmax", "Dropout", "Sequential", "SqueezeExcitation", "NonLocal2d"]
