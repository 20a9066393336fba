#!/usr/bin/env python3
"""Writes torchvision MobileNetV3, EfficientNet (B0-B7, V2), RegNet (X, Y) and ConvNeXt models with
random non-trivial weights (batch-norm statistics, conv biases, layer scales) as safetensors, with a
fixed random input, torch's logits and the input gradient of logit 3 (float64, and float32 to show
how well-conditioned it is), for the crate to compare against:

    /opt/torchenv/bin/python scripts/verify-families-b.py OUT_DIR [--full]
    FAMILIES_B_TORCH_DIR=OUT_DIR cargo test --test families_b -- --nocapture torch

--full adds one full-size model of each family. Needs torch, torchvision, safetensors (not in CI).
"""
import sys
from functools import partial
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn
from torchvision import models
from torchvision.models import convnext as tv_convnext
from torchvision.models import efficientnet as tv_eff
from torchvision.models import mobilenetv3 as tv_mnv3
from torchvision.models import regnet as tv_regnet


def randomize(model: nn.Module, seed: int) -> nn.Module:
    """Random batch-norm gammas and betas, then running statistics measured on random inputs (so
    that eval-mode folding is far from the identity while activations stay O(1) through deep nets);
    3% of channels get a variance of 1e-3 with gamma scaled to keep their output (at eps 1e-3), so
    that the batch-norm eps changes the logits visibly. Random biases, layer norms, layer scales and
    linear weights of unit gain, so that a missed bias or scale shows in the logits."""
    g = torch.Generator().manual_seed(seed)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm2d, nn.LayerNorm)):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
            if isinstance(m, nn.Linear):  # torchvision's tiny head inits would leave the logits to the biases
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) / m.in_features**0.5)
            if isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None:
                scale = 0.01 if isinstance(m, nn.Linear) and m.out_features in (10, 1000) else 0.1
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * scale)
            if isinstance(m, tv_convnext.CNBlock):
                m.layer_scale.copy_(torch.rand(m.layer_scale.shape, generator=g) * 0.9 + 0.1)
        if bns:
            for m in bns:
                m.reset_running_stats()
                m.momentum = None  # cumulative average over the calibration batches
            model.train()
            for _ in range(2):
                model(torch.randn(4, 3, 160, 160, generator=g))
        for m in bns:
            tiny = torch.rand(m.num_features, generator=g) < 0.03
            m.weight[tiny] *= (1e-3 / (m.running_var[tiny] + m.eps)).sqrt()
            m.running_var[tiny] = 1e-3
    return model.eval()


def efficientnet_v2_narrow():
    fused, mb = tv_eff.FusedMBConvConfig, tv_eff.MBConvConfig
    setting = [fused(1, 3, 1, 8, 8, 2), fused(4, 3, 2, 8, 16, 2), fused(4, 3, 2, 16, 24, 2),
               mb(4, 3, 2, 24, 32, 2), mb(6, 3, 1, 32, 40, 2), mb(6, 3, 2, 40, 48, 2), mb(6, 3, 1, 48, 56, 1)]
    return tv_eff.EfficientNet(setting, 0.2, last_channel=128, num_classes=10, norm_layer=partial(nn.BatchNorm2d, eps=1e-3))


def efficientnet_narrow(arch: str, depth: float, eps: float):
    setting, last = tv_eff._efficientnet_conf(arch, width_mult=0.25, depth_mult=depth)
    return tv_eff.EfficientNet(setting, 0.2, last_channel=last, num_classes=10, norm_layer=partial(nn.BatchNorm2d, eps=eps))


def mobilenet_v3_narrow(arch: str):
    setting, last = tv_mnv3._mobilenet_v3_conf(arch, width_mult=0.5)
    return tv_mnv3.MobileNetV3(setting, last, num_classes=10)


def regnet_narrow(se):
    params = tv_regnet.BlockParams.from_init_params(depth=7, w_0=16, w_a=8.0, w_m=2.0, group_width=8, se_ratio=se)
    return tv_regnet.RegNet(params, num_classes=10, stem_width=16)


def convnext_narrow():
    cfg = tv_convnext.CNBlockConfig
    return tv_convnext.ConvNeXt([cfg(16, 32, 1), cfg(32, 48, 1), cfg(48, 64, 2), cfg(64, None, 1)], num_classes=10)


NARROW = {
    "mobilenet_v3_large-narrow": lambda: mobilenet_v3_narrow("mobilenet_v3_large"),
    "mobilenet_v3_small-narrow": lambda: mobilenet_v3_narrow("mobilenet_v3_small"),
    "efficientnet_b0-narrow": lambda: efficientnet_narrow("efficientnet_b0", 1.0, 1e-5),
    "efficientnet_b5-narrow": lambda: efficientnet_narrow("efficientnet_b5", 2.2, 1e-3),
    "efficientnet_v2-narrow": efficientnet_v2_narrow,
    "regnet_x-narrow": lambda: regnet_narrow(None),
    "regnet_y-narrow": lambda: regnet_narrow(0.25),
    "convnext-narrow": convnext_narrow,
}
FULL = {
    "mobilenet_v3_large": models.mobilenet_v3_large,
    "mobilenet_v3_small": models.mobilenet_v3_small,
    "efficientnet_b0": models.efficientnet_b0,
    "efficientnet_v2_s": models.efficientnet_v2_s,
    "regnet_x_400mf": models.regnet_x_400mf,
    "regnet_y_400mf": models.regnet_y_400mf,
    "convnext_tiny": models.convnext_tiny,
}


def main():
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    todo = dict(NARROW, **(FULL if "--full" in sys.argv else {}))
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    np.save(out / "input.npy", x.numpy())
    for i, (name, make) in enumerate(todo.items()):
        torch.manual_seed(i)
        model = randomize(make(), 1000 + i)
        with torch.no_grad():
            logits = model(x)
        # d logit 3 / d input through the whole network, in float32 and float64: random ReLU nets can
        # be ill-conditioned enough that torch's own float32 gradient is off by percent; the crate's
        # must be no further from float64 than torch's float32 is (or within 1e-3).
        grads = {}
        for dtype in (torch.float32, torch.float64):
            xg = x.to(dtype).clone().requires_grad_(True)
            model.to(dtype)(xg)[0, 3].backward()
            grads[dtype] = xg.grad.float().numpy()
        model.float()
        state = {k: v.contiguous() for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
        save_file(state, out / f"{name}.safetensors")
        np.save(out / f"{name}.logits.npy", logits.numpy().astype(np.float32))
        np.save(out / f"{name}.grad3.npy", grads[torch.float64])
        np.save(out / f"{name}.grad3_f32.npy", grads[torch.float32])
        print(f"{name}: {sum(v.numel() for v in state.values())} parameters, logits[:4] {logits[0, :4].tolist()}")


if __name__ == "__main__":
    main()
