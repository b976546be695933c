"""Autocast helpers: the few computations that must stay in fp32 whatever the autocast around them."""

from __future__ import annotations

import contextlib

import torch


def autocast_off(device: torch.device):
    """A context with autocast disabled on `device` (a no-op where autocast does not exist, e.g. meta)."""
    if torch.amp.is_autocast_available(device.type):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()
