#!/usr/bin/env python3
"""Writes torchvision references for tests/families_a.rs `torch_reference` (needs torch, torchvision,
safetensors; not run in CI).

For each model: random weights with non-trivial batch-norm statistics, eval mode, one random input,
a float64 forward and backward.
Files in OUT_DIR: NAME.safetensors (the state dict), NAME.input.npy, NAME.logits.npy, the default
Grad-CAM layer's activations (NAME.layer.npy), and the gradients of the top logit there
(NAME.layer_grad.npy) and at the input (NAME.input_grad.npy). Then:

    FAMILIES_A_DIR=OUT_DIR cargo test --test families_a -- --ignored --nocapture torch_reference

Usage: verify-families-a.py OUT_DIR [--full | --only-full]   (the full-size torchvision models too, or only)
"""
import os
import re
import sys

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.models as tvm
from safetensors.torch import save_file
from torchvision.models.resnet import BasicBlock, Bottleneck


def randomize(model, gen):
    """He-scaled convs (GoogLeNet and Inception v3 initialize with std 0.01 and 0.1: their deep maps
    then come out nearly constant, and max pools see near-ties that rounding flips), and batch-norms
    with non-trivial statistics."""
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            fan_in = m.weight[0].numel()
            m.weight.data = torch.randn(m.weight.shape, generator=gen) * (2.0 / fan_in) ** 0.5
        if isinstance(m, torch.nn.BatchNorm2d):
            c = m.num_features
            m.weight.data = torch.rand(c, generator=gen) + 0.5
            m.bias.data = torch.randn(c, generator=gen) * 0.2
            m.running_mean.data = torch.randn(c, generator=gen) * 0.2
            m.running_var.data = torch.rand(c, generator=gen) + 0.5


def densenet_forward(model, x):
    """DenseNet's default layer is the functional (in-place) ReLU after `features`, which no hook
    sees: its forward, written out, keeping that ReLU's output."""
    a = F.relu(model.features(x))
    a.retain_grad()
    logits = model.classifier(torch.flatten(F.adaptive_avg_pool2d(a, (1, 1)), 1))
    return logits, a


# name -> (constructor, default-layer module path (hooked), input size, forward returning (logits, layer output))
SMALL = {
    "resnet_basic_1211": (lambda: tvm.ResNet(BasicBlock, [1, 2, 1, 1], num_classes=20), "layer4", 224, None),
    "resnext_small": (lambda: tvm.ResNet(Bottleneck, [1, 1, 2, 1], groups=4, width_per_group=8, num_classes=20), "layer4", 224, None),
    "wide_resnet_small": (lambda: tvm.ResNet(Bottleneck, [1, 1, 1, 1], width_per_group=128, num_classes=20), "layer4", 160, None),
    "densenet_small": (lambda: tvm.DenseNet(growth_rate=8, block_config=(2, 2, 2, 2), num_init_features=16, num_classes=20), None, 224, densenet_forward),
    # torchvision's download-file key style (`norm.1` for `norm1`), which the loader renames.
    "densenet_small_legacy": (lambda: tvm.DenseNet(growth_rate=8, block_config=(2, 3), num_init_features=16, num_classes=20), None, 224, densenet_forward),
    "mnasnet0_5": (lambda: tvm.mnasnet0_5(num_classes=20), "layers.16", 224, None),
    "shufflenet_small": (lambda: tvm.ShuffleNetV2([2, 2, 2], [8, 16, 32, 64, 128], num_classes=20), "conv5", 224, None),
    "googlenet_160_noaux": (lambda: tvm.GoogLeNet(num_classes=20, aux_logits=False, transform_input=False, init_weights=True), "inception5b", 160, None),
}

FULL = {
    "resnet101": (lambda: tvm.resnet101(), "layer4", 224, None),
    "resnext50_32x4d": (lambda: tvm.resnext50_32x4d(), "layer4", 224, None),
    "wide_resnet50_2": (lambda: tvm.wide_resnet50_2(), "layer4", 224, None),
    "densenet121": (lambda: tvm.densenet121(), None, 224, densenet_forward),
    "densenet161": (lambda: tvm.densenet161(), None, 224, densenet_forward),
    "googlenet": (lambda: tvm.googlenet(aux_logits=True, transform_input=False, init_weights=True), "inception5b", 224, None),
    "inception_v3": (lambda: tvm.inception_v3(aux_logits=True, transform_input=False, init_weights=True), "Mixed_7c", 299, None),
    "mnasnet1_0": (lambda: tvm.mnasnet1_0(), "layers.16", 224, None),
    "mnasnet1_3": (lambda: tvm.mnasnet1_3(), "layers.16", 224, None),
    "shufflenet_v2_x1_0": (lambda: tvm.shufflenet_v2_x1_0(), "conv5", 224, None),
    "shufflenet_v2_x2_0": (lambda: tvm.shufflenet_v2_x2_0(), "conv5", 224, None),
}


def hooked_forward(model, layer, x):
    kept = {}

    def hook(module, inputs, output):
        output.retain_grad()
        kept["a"] = output

    module = model.get_submodule(layer)
    if isinstance(module, torch.nn.ReLU):
        module.inplace = False  # keep the hooked tensor out of in-place edits
    module.register_forward_hook(hook)
    logits = model(x)
    return logits, kept["a"]


def write(out, name, make, layer, size, forward, seed):
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = make()
    randomize(model, gen)
    model.eval()
    sd = {k: v.contiguous() for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    if name.endswith("_legacy"):
        sd = {re.sub(r"(denselayer\d+\.(?:norm|relu|conv))([12])\.", r"\1.\2.", k): v for k, v in sd.items()}
    save_file(sd, os.path.join(out, f"{name}.safetensors"))

    # The reference runs in float64: float32 torch itself strays from it by up to several percent of
    # the largest gradient at some elements (measured on a ResNeXt), more than this crate does.
    model.double()
    x = torch.randn(1, 3, size, size, generator=gen, dtype=torch.float64, requires_grad=True)
    if forward is None:
        forward = lambda model, x: hooked_forward(model, layer, x)
    logits, a = forward(model, x)
    logits[0, logits[0].argmax()].backward()
    np.save(os.path.join(out, f"{name}.input.npy"), x.detach().numpy().astype(np.float32))
    np.save(os.path.join(out, f"{name}.logits.npy"), logits[0].detach().numpy().astype(np.float32))
    np.save(os.path.join(out, f"{name}.layer.npy"), a[0].detach().numpy().astype(np.float32))
    np.save(os.path.join(out, f"{name}.layer_grad.npy"), a.grad[0].numpy().astype(np.float32))
    np.save(os.path.join(out, f"{name}.input_grad.npy"), x.grad[0].numpy().astype(np.float32))
    print(f"{name}: {sum(v.numel() for v in sd.values())} parameters, top logit {logits.max().item():.4f}")


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    models = {} if "--only-full" in sys.argv else dict(SMALL)
    if "--full" in sys.argv or "--only-full" in sys.argv:
        models.update(FULL)
    for i, (name, spec) in enumerate(models.items()):
        write(out, name, *spec, seed=100 + i)


if __name__ == "__main__":
    main()
