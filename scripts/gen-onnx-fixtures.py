#!/usr/bin/env python3
"""Writes the ONNX import test fixtures (tests/fixtures/onnx/), read by tests/onnx_import.rs.

Needs torch, torchvision, onnx, onnxscript and safetensors (not needed by CI: the small outputs are
committed). Run: python scripts/gen-onnx-fixtures.py

For each small network (random weights, random non-trivial batch-norm statistics):
  <name>.dynamo.onnx + <name>.dynamo.onnx.data   torch.onnx.export(dynamo=True): weights as external data
  <name>.ts.onnx                                  torch.onnx.export(dynamo=False, opset 17): one file
  <name>.ref.safetensors                          input x (1x3xHxW), logits, and for each layer in the
      metadata's "layers" the raw Grad-CAM map of the top-1 class: alpha_k = mean_ij dy_c/dA_k,
      map = ReLU(sum_k alpha_k A_k), A the module's output (a forward hook).
Plus files the importer must refuse with a clear message (see bad_files): lrn.onnx (an op it
lacks), vit.ts.onnx (a transformer).
"""
import json
import os
import sys
import warnings

import onnx

import torch
import torch.nn as nn
import torchvision
from torchvision.models.resnet import BasicBlock
from torchvision.models.mobilenetv3 import InvertedResidualConfig, MobileNetV3
from torchvision.models.convnext import CNBlockConfig, ConvNeXt
from torchvision.models.shufflenetv2 import ShuffleNetV2
from safetensors.torch import save_file

warnings.filterwarnings("ignore")
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "onnx")


class TinyResNet(nn.Module):
    """torchvision's ResNet layout (same module names) with a few channels."""

    def __init__(self, num_classes=5):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = nn.Sequential(BasicBlock(8, 8), BasicBlock(8, 8))
        down = nn.Sequential(nn.Conv2d(8, 16, 1, 2, bias=False), nn.BatchNorm2d(16))
        self.layer2 = nn.Sequential(BasicBlock(8, 16, 2, down), BasicBlock(16, 16))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def tiny_mobilenet_v3():
    b = lambda *a: InvertedResidualConfig(*a, width_mult=1.0)  # noqa: E731
    # input, kernel, expanded, out, use_se, activation, stride, dilation
    setting = [
        b(8, 3, 8, 8, True, "RE", 2, 1),
        b(8, 3, 24, 12, False, "RE", 2, 1),
        b(12, 5, 32, 12, True, "HS", 1, 1),
        b(12, 5, 40, 16, True, "HS", 2, 1),
    ]
    return MobileNetV3(setting, last_channel=32, num_classes=5)


def tiny_convnext():
    setting = [CNBlockConfig(8, 16, 1), CNBlockConfig(16, None, 2)]
    return ConvNeXt(setting, stochastic_depth_prob=0.0, layer_scale=0.5, num_classes=5)


def tiny_shufflenet():
    return ShuffleNetV2([1, 2, 1], [8, 16, 32, 48, 64], num_classes=5)


class Misc(nn.Module):
    """The other mappings: a zero pad that is TF 'SAME' for the input, SiLU, a ceil-mode average pool
    without padding in its divisor, concat, a batch-norm after a concat (an affine), clip, erf GELU,
    a constant scale, a grouped conv, leaky ReLU, ReLU6, tanh, dropout, a dilated conv, a zero pad that
    is neither symmetric nor 'SAME' before a conv, and a softmax at the end."""

    def __init__(self, num_classes=6):
        super().__init__()
        self.stem = nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(3, 8, 3, 2), nn.BatchNorm2d(8), nn.SiLU())
        self.pool = nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False)
        self.branch_a = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.LeakyReLU(0.1))
        self.branch_b = nn.Sequential(nn.Conv2d(8, 8, 1), nn.ReLU6())
        self.norm = nn.BatchNorm2d(16)
        self.clip = nn.Hardtanh(-1.0, 1.5)
        self.dilated = nn.Sequential(nn.Conv2d(16, 16, 3, padding=2, dilation=2), nn.ReLU())
        self.asymmetric = nn.Sequential(nn.ZeroPad2d((2, 0, 1, 1)), nn.Conv2d(16, 16, 3))
        self.conv = nn.Conv2d(16, 16, 3, padding=1, groups=4)
        self.gelu = nn.GELU()
        self.tanh = nn.Tanh()
        self.head = nn.Sequential(nn.Dropout(0.2), nn.Linear(16, num_classes))

    def forward(self, x):
        x = self.pool(self.stem(x))
        x = torch.cat([self.branch_a(x), self.branch_b(x)], 1)
        x = self.clip(self.norm(x))
        x = self.asymmetric(self.dilated(x))
        x = self.tanh(self.gelu(self.conv(x)) * 0.5 + x)
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)
        return torch.softmax(self.head(x), 1)


# name -> (constructor, input (height, width), layers to explain (the default layer first))
MODELS = {
    "resnet": (TinyResNet, (48, 64), ["layer2", "layer1"]),
    "mobilenet_v3": (tiny_mobilenet_v3, (64, 64), ["features", "features.3"]),
    "convnext": (tiny_convnext, (64, 64), ["features", "features.1"]),
    "shufflenet": (tiny_shufflenet, (64, 64), ["conv5", "stage2"]),
    "misc": (Misc, (40, 56), ["tanh", "branch_a", "dilated"]),
}


def randomize(model, gen):
    """Random weights scaled to keep activations near unit size, and batch-norm / layer-norm
    parameters far from the identity."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.2)
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.2)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.3)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.3)
            elif isinstance(m, nn.LayerNorm):
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.2)
        for name, p in model.named_parameters():
            if name.endswith("layer_scale"):
                p.copy_(torch.rand(p.shape, generator=gen) + 0.5)


def grad_cam(model, x, layers):
    acts = {}
    mods = dict(model.named_modules())
    hooks = [mods[n].register_forward_hook(lambda m, i, o, n=n: acts.__setitem__(n, o)) for n in layers]
    if isinstance(model, Misc):  # the logits before the final softmax
        hooks.append(model.head.register_forward_hook(lambda m, i, o: acts.__setitem__("logits", o)))
    logits = model(x)
    logits = acts.pop("logits", logits)
    for h in hooks:
        h.remove()
    c = int(logits[0].argmax())
    grads = torch.autograd.grad(logits[0, c], [acts[n] for n in layers])
    maps = {}
    for n, g in zip(layers, grads):
        a = acts[n][0]
        alpha = g[0].mean(dim=(1, 2))
        maps[n] = torch.relu((alpha[:, None, None] * a).sum(0)).detach().contiguous()
        assert maps[n].max() > 0, f"the Grad-CAM map at {n} is all zeros: pick another layer or seed"
    return logits.detach()[0].contiguous(), c, maps


def export(model, x, name):
    dyn = os.path.join(OUT, f"{name}.dynamo.onnx")
    for f in (dyn, dyn + ".data"):
        if os.path.exists(f):
            os.remove(f)
    torch.onnx.export(model, (x,), dyn, dynamo=True, external_data=True, verbose=False)
    torch.onnx.export(model, (x,), os.path.join(OUT, f"{name}.ts.onnx"), dynamo=False, opset_version=17)
    # The oldest opset the importer takes: LayerNorm and HardSwish are decomposed into plain ops there.
    torch.onnx.export(model, (x,), os.path.join(OUT, f"{name}.ts13.onnx"), dynamo=False, opset_version=13)
    assert os.path.exists(dyn + ".data"), "the dynamo export kept its weights inside the .onnx"


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(0)
    for i, (name, (ctor, (h, w), layers)) in enumerate(MODELS.items()):
        gen = torch.Generator().manual_seed(1000 + i)
        model = ctor().eval()
        randomize(model, gen)
        # Stored as float16 (half the size); the reference runs on exactly those values.
        x = torch.randn(1, 3, h, w, generator=gen).half().float()
        logits, c, maps = grad_cam(model, x, layers)
        export(model, x, name)
        tensors = {"input": x[0].half().contiguous(), "logits": logits}
        tensors.update({f"cam:{n}": m for n, m in maps.items()})
        meta = {"layers": json.dumps(layers), "class": str(c)}
        save_file(tensors, os.path.join(OUT, f"{name}.ref.safetensors"), metadata=meta)
        print(f"{name}: class {c}, logits {logits.numpy().round(3).tolist()}, maps {[tuple(m.shape) for m in maps.values()]}")
    bad_files()


def bad_files():
    """Files the importer must refuse: an op it lacks (LRN), and a transformer (token tensors)."""
    from onnx import TensorProto, helper, numpy_helper
    import numpy as np

    rng = np.random.default_rng(7)
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "features.0.weight")
    fc = numpy_helper.from_array(rng.standard_normal((5, 4)).astype(np.float32), "fc.weight")
    nodes = [
        helper.make_node("Conv", ["x", "features.0.weight"], ["c"], name="/features/features.0/Conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="/features/features.1/Relu"),
        helper.make_node("LRN", ["r"], ["n"], name="/features/features.2/LRN", size=3),
        helper.make_node("GlobalAveragePool", ["n"], ["p"], name="/avgpool/GlobalAveragePool"),
        helper.make_node("Flatten", ["p"], ["f"], name="/Flatten"),
        helper.make_node("Gemm", ["f", "fc.weight"], ["y"], name="/fc/Gemm", transB=1),
    ]
    graph = helper.make_graph(
        nodes, "lrn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])], [w, fc])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="gen-onnx-fixtures")
    onnx.checker.check_model(model)
    onnx.save(model, os.path.join(OUT, "lrn.onnx"))

    vit = torchvision.models.VisionTransformer(image_size=32, patch_size=16, num_layers=1, num_heads=2, hidden_dim=8, mlp_dim=16, num_classes=5).eval()
    torch.onnx.export(vit, (torch.randn(1, 3, 32, 32),), os.path.join(OUT, "vit.ts.onnx"), dynamo=False, opset_version=17)


if __name__ == "__main__":
    sys.exit(main())
