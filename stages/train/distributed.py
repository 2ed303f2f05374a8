"""DistributedDataParallel for a channels_last TSN without DDP's "Grad strides do not match bucket view strides".

DDP lays each parameter's gradient slot in its all-reduce bucket with the parameter's strides, and
warns (then copies every gradient, every step, into its slot) when a gradient arrives with other
strides. A weight with size-1 dimensions, the 1x1 convolutions that make up a third of ResNet-50,
has two equally valid stride sets for one memory layout: [O, I, 1, 1] is (I, 1, 1, 1) contiguous or
(I, 1, I, I) channels_last. Which one a convolution's backward returns depends on the input's layout
and the library (cuDNN, oneDNN, the CPU fallback), and autograd's layout contract ignores size-1
dimensions, so it lets the mismatch through (pytorch/pytorch#47163). `keep_grad_strides` gives each
such parameter a gradient hook that hands autograd the gradient with the parameter's own strides:
a view when only size-1 dimensions differ (no copy), a copy otherwise.
"""

from __future__ import annotations

import torch
from torch import nn


def same_layout_but_size_one(grad: torch.Tensor, parameter: torch.Tensor) -> bool:
    """Whether the strides differ only on size-1 dimensions, where they address no memory."""
    return all(a == b or size == 1 for a, b, size in zip(grad.stride(), parameter.stride(), grad.shape))


def stride_hook(parameter: nn.Parameter):
    """A gradient hook returning the gradient with `parameter`'s strides."""

    def hook(grad: torch.Tensor) -> torch.Tensor:
        if grad.stride() == parameter.stride():
            return grad
        if same_layout_but_size_one(grad, parameter):
            return grad.as_strided(grad.shape, parameter.stride())
        return torch.empty_strided(parameter.shape, parameter.stride(), dtype=grad.dtype, device=grad.device).copy_(grad)

    return hook


def keep_grad_strides(model: nn.Module) -> list:
    """Hook every trainable parameter that has a size-1 dimension; returns the hook handles."""
    return [
        parameter.register_hook(stride_hook(parameter))
        for parameter in model.parameters()
        if parameter.requires_grad and parameter.dim() > 1 and 1 in parameter.shape
    ]


def wrap_distributed(model: nn.Module, device: torch.device) -> nn.parallel.DistributedDataParallel:
    """DDP around `model` (already in its final memory format), its gradients arriving in the bucket layout."""
    keep_grad_strides(model)
    return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
