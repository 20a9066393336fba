#!/usr/bin/env python3
"""Reference fixtures for every torchvision image-classification family, computed by PyTorch.

For each family a NARROW network with torchvision's own classes and module names (so its state-dict
keys are exactly torchvision's) is built, randomly initialized (non-trivial batch-norm statistics,
layer-norm affine and ConvNeXt layer scale), put in eval mode and written to
tests/fixtures/families/<name>/:

  model.pth          torch.save(model.state_dict()) (zip format)
  model.onnx         the ONNX export: dynamo exporter with default settings (weights in
  [model.onnx.data]  model.onnx.data) for about half the families, the TorchScript exporter
                     (dynamo=False, opset_version=17, one file) for the others
  ref.safetensors    input (1x3xHxW), logits (1xN), for two layers (layer0 = the default Grad-CAM
                     layer, layer1 = an earlier one) the activation A (1xCxhxw) and the raw Grad-CAM
                     map of the top-1 class (h x w: alpha_k = mean_ij dy_c/dA_k, ReLU(sum_k alpha_k A_k),
                     no normalization, no resize), the input gradient dy_c/dx (1x3xHxW) and, where the
                     network's only rectifiers are nn.ReLU / nn.ReLU6 modules, the guided-backprop input
                     gradient (gradient passes iff 0 < x (< 6 for ReLU6) and the incoming gradient > 0)
  meta.json          family, expected arch name, input size, layers, exporter, ONNX tensor names,
                     the names of the tensors in ref.safetensors

tests/families.rs (state dicts) and tests/families_onnx.rs (ONNX files) compare the crate against
these files without PyTorch. The files are committed: CI has no torch.

Usage (needs torch, torchvision, onnx, onnxscript, onnxruntime, safetensors):
  python scripts/gen-family-fixtures.py                 # every family, into tests/fixtures/families
  python scripts/gen-family-fixtures.py --only resnet18,densenet
  python scripts/gen-family-fixtures.py --list          # names and parameter counts, writes nothing
  python scripts/gen-family-fixtures.py --default-model [--assets assets] [--out target/default-model]
      EfficientNet-Lite0 (assets/models/efficientnet-lite0.pth, fetched by scripts/setup.sh) as a zip
      .pth and an ONNX export of a PyTorch module written from docs' facts (TF SAME padding, BN eps
      1e-3, ReLU6); compares that module's top-5 on assets/samples with the CLI's. Nothing committed.
"""

import argparse
import importlib
import contextlib
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import warnings
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
tv_convnext = importlib.import_module("torchvision.models.convnext")
tv_densenet = importlib.import_module("torchvision.models.densenet")
tv_efficientnet = importlib.import_module("torchvision.models.efficientnet")
tv_googlenet = importlib.import_module("torchvision.models.googlenet")
tv_inception = importlib.import_module("torchvision.models.inception")
tv_mnasnet = importlib.import_module("torchvision.models.mnasnet")
tv_mobilenetv2 = importlib.import_module("torchvision.models.mobilenetv2")
tv_mobilenetv3 = importlib.import_module("torchvision.models.mobilenetv3")
tv_regnet = importlib.import_module("torchvision.models.regnet")
tv_resnet = importlib.import_module("torchvision.models.resnet")
tv_shufflenetv2 = importlib.import_module("torchvision.models.shufflenetv2")
tv_squeezenet = importlib.import_module("torchvision.models.squeezenet")
tv_vgg = importlib.import_module("torchvision.models.vgg")
from torchvision.ops.misc import Conv2dNormActivation

REPO = Path(__file__).resolve().parent.parent
NUM_CLASSES = 10

warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", category=UserWarning)
warnings.filterwarnings("ignore", category=DeprecationWarning)
warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)


# --------------------------------------------------------------------------------------------
# Narrow builders. Every one uses torchvision's classes (or subclasses that only change widths), so
# the module paths and state-dict keys are torchvision's.
# --------------------------------------------------------------------------------------------


def alexnet():
    m = torchvision.models.AlexNet(num_classes=NUM_CLASSES, dropout=0.5)
    c = [8, 16, 16, 16, 16]
    m.features = nn.Sequential(
        nn.Conv2d(3, c[0], kernel_size=11, stride=4, padding=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(c[0], c[1], kernel_size=5, padding=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(c[1], c[2], kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(c[2], c[3], kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(c[3], c[4], kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
    )
    hidden = 16
    m.classifier = nn.Sequential(
        nn.Dropout(p=0.5),
        nn.Linear(c[4] * 6 * 6, hidden),
        nn.ReLU(inplace=True),
        nn.Dropout(p=0.5),
        nn.Linear(hidden, hidden),
        nn.ReLU(inplace=True),
        nn.Linear(hidden, NUM_CLASSES),
    )
    return m


def vgg11(batch_norm):
    cfg = [8, "M", 8, "M", 16, 16, "M", 16, 16, "M", 16, 16, "M"]  # torchvision's "A" layout, narrow
    m = tv_vgg.VGG(tv_vgg.make_layers(cfg, batch_norm=batch_norm), num_classes=NUM_CLASSES)
    hidden = 16
    m.classifier = nn.Sequential(
        nn.Linear(16 * 7 * 7, hidden),
        nn.ReLU(True),
        nn.Dropout(p=0.5),
        nn.Linear(hidden, hidden),
        nn.ReLU(True),
        nn.Dropout(p=0.5),
        nn.Linear(hidden, NUM_CLASSES),
    )
    return m


class NarrowResNet(tv_resnet.ResNet):
    """torchvision's ResNet.__init__ with the stem and stage widths as arguments (64, 128, 256, 512
    there). `forward` and `_make_layer` are torchvision's."""

    def __init__(self, block, layers, widths, groups=1, width_per_group=64, num_classes=NUM_CLASSES):
        nn.Module.__init__(self)
        self._norm_layer = nn.BatchNorm2d
        self.inplanes = widths[0]
        self.dilation = 1
        self.groups = groups
        self.base_width = width_per_group
        self.conv1 = nn.Conv2d(3, self.inplanes, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, widths[0], layers[0])
        self.layer2 = self._make_layer(block, widths[1], layers[1], stride=2)
        self.layer3 = self._make_layer(block, widths[2], layers[2], stride=2)
        self.layer4 = self._make_layer(block, widths[3], layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(widths[3] * block.expansion, num_classes)


def resnet18():
    return NarrowResNet(tv_resnet.BasicBlock, [2, 2, 2, 2], [4, 8, 12, 16])


def resnet50():
    # ResNet-50's depths [3, 4, 6, 3] with bottlenecks (stride on the 3x3 conv, v1.5).
    return NarrowResNet(tv_resnet.Bottleneck, [3, 4, 6, 3], [4, 4, 8, 8])


def resnext():
    # Bottleneck width = int(planes * width_per_group / 64) * groups = planes * 2 here (ResNeXt50_32x4d: 32 * 4).
    return NarrowResNet(tv_resnet.Bottleneck, [1, 2, 1, 1], [4, 8, 8, 16], groups=4, width_per_group=32)


def wide_resnet():
    # Wide ResNet-50-2: width_per_group 128, i.e. bottlenecks twice as wide as planes.
    return NarrowResNet(tv_resnet.Bottleneck, [1, 1, 2, 1], [4, 4, 8, 8], width_per_group=128)


def squeezenet(version):
    m = tv_squeezenet.SqueezeNet(version=version, num_classes=NUM_CLASSES)
    Fire = tv_squeezenet.Fire
    # The stems keep torchvision's widths (96 7x7 filters in 1.0, 64 3x3 in 1.1: they name the version),
    # the Fire modules are narrow.
    if version == "1_0":
        feats = [
            nn.Conv2d(3, 96, kernel_size=7, stride=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
            Fire(96, 4, 8, 8), Fire(16, 4, 8, 8), Fire(16, 4, 12, 12),
            nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
            Fire(24, 4, 12, 12), Fire(24, 6, 12, 12), Fire(24, 6, 16, 16), Fire(32, 8, 16, 16),
            nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
            Fire(32, 8, 16, 16),
        ]
    else:
        feats = [
            nn.Conv2d(3, 64, kernel_size=3, stride=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
            Fire(64, 4, 8, 8), Fire(16, 4, 8, 8),
            nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
            Fire(16, 4, 12, 12), Fire(24, 4, 12, 12),
            nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
            Fire(24, 6, 12, 12), Fire(24, 6, 16, 16), Fire(32, 8, 16, 16), Fire(32, 8, 16, 16),
        ]
    m.features = nn.Sequential(*feats)
    m.classifier[1] = nn.Conv2d(32, NUM_CLASSES, kernel_size=1)
    return m


def densenet():
    return tv_densenet.DenseNet(growth_rate=4, block_config=(2, 2, 3, 2), num_init_features=8, bn_size=2, num_classes=NUM_CLASSES)


def _scaled(div):
    """A conv block that divides every channel count but the image's 3 by `div`: the Inception
    blocks' internal widths are written in their constructors, and every concatenation's width
    stays the sum of its branches."""

    def s(c):
        return c if c == 3 else max(1, c // div)

    def make(cin, cout, **kw):
        return tv_inception.BasicConv2d(s(cin), s(cout), **kw)

    return make, s


def googlenet():
    conv, s = _scaled(16)
    blocks = [conv, partial(tv_googlenet.Inception, conv_block=conv), tv_googlenet.InceptionAux]
    m = tv_googlenet.GoogLeNet(num_classes=NUM_CLASSES, aux_logits=False, transform_input=False, init_weights=True, blocks=blocks)
    m.fc = nn.Linear(s(1024), NUM_CLASSES)
    return m


def inception_v3():
    conv, s = _scaled(32)
    blocks = [
        conv,
        partial(tv_inception.InceptionA, conv_block=conv),
        partial(tv_inception.InceptionB, conv_block=conv),
        partial(tv_inception.InceptionC, conv_block=conv),
        partial(tv_inception.InceptionD, conv_block=conv),
        partial(tv_inception.InceptionE, conv_block=conv),
        tv_inception.InceptionAux,
    ]
    m = tv_inception.Inception3(num_classes=NUM_CLASSES, aux_logits=False, transform_input=False, inception_blocks=blocks, init_weights=True)
    m.fc = nn.Linear(s(2048), NUM_CLASSES)
    return m


def mobilenet_v2():
    # torchvision's 7 stages (17 blocks, its strides), narrow; expansion 2 instead of 6.
    # [expansion t, channels c, repeats n, stride s]; torchvision's: [1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 3, 2],
    # [6, 64, 4, 2], [6, 96, 3, 1], [6, 160, 3, 2], [6, 320, 1, 1].
    setting = [[1, 8, 1, 1], [2, 8, 2, 2], [2, 8, 3, 2], [2, 8, 4, 2], [2, 16, 3, 1], [2, 16, 3, 2], [2, 16, 1, 1]]
    m = tv_mobilenetv2.MobileNetV2(num_classes=NUM_CLASSES, width_mult=1.0, inverted_residual_setting=setting, round_nearest=8)
    # The head conv is 1280 wide whatever the width: make it narrow too.
    last = 32
    m.features[18] = Conv2dNormActivation(16, last, kernel_size=1, norm_layer=nn.BatchNorm2d, activation_layer=nn.ReLU6)
    m.last_channel = last
    m.classifier[1] = nn.Linear(last, NUM_CLASSES)
    return m


def mobilenet_v3(arch):
    # torchvision's block tables (kernels, squeeze-excite, activations, strides; block 0 without an
    # expand conv), narrow channels and expansions.
    B = partial(tv_mobilenetv3.InvertedResidualConfig, width_mult=1.0)
    if arch == "mobilenet_v3_large":
        setting = [
            B(8, 3, 8, 8, False, "RE", 1, 1),
            B(8, 3, 16, 8, False, "RE", 2, 1),
            B(8, 3, 16, 8, False, "RE", 1, 1),
            B(8, 5, 16, 8, True, "RE", 2, 1),
            B(8, 5, 16, 8, True, "RE", 1, 1),
            B(8, 5, 16, 8, True, "RE", 1, 1),
            B(8, 3, 16, 8, False, "HS", 2, 1),
            B(8, 3, 16, 8, False, "HS", 1, 1),
            B(8, 3, 16, 8, False, "HS", 1, 1),
            B(8, 3, 16, 8, False, "HS", 1, 1),
            B(8, 3, 16, 16, True, "HS", 1, 1),
            B(16, 3, 24, 16, True, "HS", 1, 1),
            B(16, 5, 24, 16, True, "HS", 2, 1),
            B(16, 5, 24, 16, True, "HS", 1, 1),
            B(16, 5, 24, 16, True, "HS", 1, 1),
        ]
    else:
        setting = [
            B(8, 3, 8, 8, True, "RE", 2, 1),
            B(8, 3, 16, 8, False, "RE", 2, 1),
            B(8, 3, 16, 8, False, "RE", 1, 1),
            B(8, 5, 16, 8, True, "HS", 2, 1),
            B(8, 5, 16, 8, True, "HS", 1, 1),
            B(8, 5, 16, 8, True, "HS", 1, 1),
            B(8, 5, 16, 16, True, "HS", 1, 1),
            B(16, 5, 24, 16, True, "HS", 1, 1),
            B(16, 5, 24, 16, True, "HS", 2, 1),
            B(16, 5, 24, 16, True, "HS", 1, 1),
            B(16, 5, 24, 16, True, "HS", 1, 1),
        ]
    return tv_mobilenetv3.MobileNetV3(setting, 16, num_classes=NUM_CLASSES)


def efficientnet_b0():
    # B0's stages (kernels, strides, depths 1, 2, 2, 3, 3, 4, 1), narrow channels, expansion 2 instead of 6.
    MB = partial(tv_efficientnet.MBConvConfig, width_mult=1.0, depth_mult=1.0)
    setting = [
        MB(1, 3, 1, 8, 8, 1),
        MB(2, 3, 2, 8, 8, 2),
        MB(2, 5, 2, 8, 8, 2),
        MB(2, 3, 2, 8, 8, 3),
        MB(2, 5, 1, 8, 16, 3),
        MB(2, 5, 2, 16, 16, 4),
        MB(2, 3, 1, 16, 16, 1),
    ]
    return tv_efficientnet.EfficientNet(setting, dropout=0.2, num_classes=NUM_CLASSES)


def efficientnet_v2():
    # V2-S's stage layout (3 fused-MBConv stages, 3 MBConv stages with squeeze-excite), fewer
    # blocks, narrow, smaller expansions; BN eps 1e-3 as in torchvision's efficientnet_v2_* builders.
    Fu, MB = tv_efficientnet.FusedMBConvConfig, tv_efficientnet.MBConvConfig
    setting = [
        Fu(1, 3, 1, 8, 8, 1),
        Fu(2, 3, 2, 8, 8, 2),
        Fu(2, 3, 2, 8, 8, 2),
        MB(2, 3, 2, 8, 16, 2, 1.0, 1.0),
        MB(2, 3, 1, 16, 16, 2, 1.0, 1.0),
        MB(2, 3, 2, 16, 24, 2, 1.0, 1.0),
    ]
    return tv_efficientnet.EfficientNet(setting, dropout=0.2, num_classes=NUM_CLASSES, norm_layer=partial(nn.BatchNorm2d, eps=1e-3), last_channel=32)


def regnet(se):
    bp = tv_regnet.BlockParams(
        depths=[1, 1, 2, 1],
        widths=[8, 16, 24, 32],
        group_widths=[4, 8, 8, 8],
        bottleneck_multipliers=[1.0, 1.0, 1.0, 1.0],
        strides=[2, 2, 2, 2],
        se_ratio=0.25 if se else None,
    )
    return tv_regnet.RegNet(bp, num_classes=NUM_CLASSES, stem_width=8, norm_layer=partial(nn.BatchNorm2d, eps=1e-05, momentum=0.1))


def shufflenet_v2():
    return tv_shufflenetv2.ShuffleNetV2([2, 3, 2], [8, 16, 32, 48, 64], num_classes=NUM_CLASSES)


@contextlib.contextmanager
def _patched(module, name, value):
    old = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, old)


def mnasnet():
    # torchvision's stacks (kernels, strides, expansions, repeats), narrow depths; the head conv
    # (1280 wide whatever alpha) made narrow too.
    with _patched(tv_mnasnet, "_get_depths", lambda alpha: [8, 8, 8, 8, 8, 8, 8, 16]):
        m = tv_mnasnet.MNASNet(1.0, num_classes=NUM_CLASSES)
    last = 32
    m.layers[14] = nn.Conv2d(16, last, 1, padding=0, stride=1, bias=False)
    m.layers[15] = nn.BatchNorm2d(last, momentum=1 - 0.9997)
    m.classifier[1] = nn.Linear(last, NUM_CLASSES)
    return m


def convnext():
    C = tv_convnext.CNBlockConfig
    setting = [C(8, 16, 1), C(16, 16, 1), C(16, 24, 2), C(24, None, 1)]
    return tv_convnext.ConvNeXt(setting, stochastic_depth_prob=0.0, num_classes=NUM_CLASSES)


# name, builder, arch our detector should report, input (H, W), [default layer, earlier layer], exporter.
# Inputs are small (the fixtures are committed): 2x2 or 2x3 maps at the default layer, larger ones at
# the earlier layer; Inception v3 needs 107 pixels for a 2x2 map, AlexNet, DenseNet and ConvNeXt 64.
# AlexNet and VGG take the dynamo exporter: the TorchScript one refuses their adaptive average pool
# when the output size (6x6, 7x7) does not divide the input's (only 224x224 inputs would do). The
# dynamo exporter's files carry ~1 KB of metadata per node, so the deepest nets take TorchScript.
FAMILIES = [
    ("alexnet", alexnet, "alexnet", (64, 64), ["features.11", "features.7"], "dynamo"),
    ("vgg11", partial(vgg11, False), "vgg11", (48, 48), ["features.19", "features.9"], "dynamo"),
    ("vgg11_bn", partial(vgg11, True), "vgg11_bn", (48, 64), ["features.27", "features.13"], "dynamo"),
    ("resnet18", resnet18, "resnet", (48, 64), ["layer4", "layer3"], "dynamo"),
    ("resnet50", resnet50, "resnet", (48, 48), ["layer4", "layer2"], "torchscript"),
    ("resnext", resnext, "resnet", (48, 48), ["layer4", "layer3.0"], "dynamo"),
    ("wide_resnet", wide_resnet, "resnet", (48, 48), ["layer4", "layer3"], "torchscript"),
    ("squeezenet1_0", partial(squeezenet, "1_0"), "squeezenet1_0", (48, 48), ["features.12", "features.9"], "torchscript"),
    ("squeezenet1_1", partial(squeezenet, "1_1"), "squeezenet1_1", (48, 64), ["features.12", "features.7"], "dynamo"),
    ("densenet", densenet, "densenet", (64, 64), ["relu", "features.denseblock3"], "dynamo"),
    ("googlenet", googlenet, "googlenet", (48, 80), ["inception5b", "inception4e"], "torchscript"),
    ("inception_v3", inception_v3, "inception_v3", (107, 115), ["Mixed_7c", "Mixed_6e"], "torchscript"),
    ("mobilenet_v2", mobilenet_v2, "mobilenet_v2", (48, 64), ["features.18", "features.13"], "torchscript"),
    ("mobilenet_v3_large", partial(mobilenet_v3, "mobilenet_v3_large"), "mobilenet_v3", (48, 48), ["features.16", "features.12"], "torchscript"),
    ("mobilenet_v3_small", partial(mobilenet_v3, "mobilenet_v3_small"), "mobilenet_v3", (48, 64), ["features.12", "features.8"], "dynamo"),
    ("efficientnet_b0", efficientnet_b0, "efficientnet", (48, 48), ["features.8", "features.5"], "torchscript"),
    ("efficientnet_v2", efficientnet_v2, "efficientnet_v2", (48, 64), ["features.7", "features.4"], "torchscript"),
    ("regnet_x", partial(regnet, False), "regnet", (48, 48), ["trunk_output.block4", "trunk_output.block3"], "torchscript"),
    ("regnet_y", partial(regnet, True), "regnet", (48, 64), ["trunk_output.block4", "trunk_output.block2"], "dynamo"),
    ("shufflenet_v2", shufflenet_v2, "shufflenet_v2", (48, 48), ["conv5", "stage3"], "dynamo"),
    ("mnasnet", mnasnet, "mnasnet", (48, 48), ["layers.16", "layers.11"], "torchscript"),
    ("convnext", convnext, "convnext", (64, 64), ["features.7", "features.5"], "dynamo"),
]


# --------------------------------------------------------------------------------------------
# Initialization
# --------------------------------------------------------------------------------------------


def randomize(model, gen):
    """Random weights that keep activations O(1) through a deep narrow net, and non-trivial
    normalization parameters: BN running_mean ~ U(-0.5, 0.5), running_var ~ U(0.5, 2),
    weight ~ U(0.5, 1.5), bias ~ U(-0.3, 0.3); layer norms' affine likewise; ConvNeXt's layer
    scale ~ U(0.2, 1)."""

    def u(shape, lo, hi):
        return torch.rand(shape, generator=gen) * (hi - lo) + lo

    with torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, nn.Conv2d):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * math.sqrt(2.0 / fan_in))
                if m.bias is not None:
                    m.bias.copy_(u(m.bias.shape, -0.2, 0.2))
            elif isinstance(m, nn.Linear):
                fan_in = m.weight.shape[1]
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * math.sqrt(1.0 / fan_in))
                if m.bias is not None:
                    m.bias.copy_(u(m.bias.shape, -0.2, 0.2))
            elif isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(u(m.running_mean.shape, -0.5, 0.5))
                m.running_var.copy_(u(m.running_var.shape, 0.5, 2.0))
                m.weight.copy_(u(m.weight.shape, 0.5, 1.5))
                m.bias.copy_(u(m.bias.shape, -0.3, 0.3))
                m.num_batches_tracked.fill_(1000)
            elif isinstance(m, nn.LayerNorm):
                if m.weight is not None:
                    m.weight.copy_(u(m.weight.shape, 0.5, 1.5))
                    m.bias.copy_(u(m.bias.shape, -0.3, 0.3))
            if isinstance(m, tv_convnext.CNBlock):
                m.layer_scale.copy_(u(m.layer_scale.shape, 0.2, 1.0))
    model.eval()
    # In-place activations would overwrite the tensors the hooks hand out.
    for m in model.modules():
        if hasattr(m, "inplace"):
            m.inplace = False
    return model


class _Stop(Exception):
    pass


def rescale(model, x):
    """LSUV-style: walks the convs and linears in execution order and scales each one's weight and
    bias so that its output has unit standard deviation on `x` (random inputs), so that no family's
    activations explode or vanish with depth whatever its normalization statistics."""
    order = []
    hooks = [m.register_forward_hook(lambda m, i, o: order.append(m)) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    seen = set()
    for m in order:
        if id(m) in seen:
            continue
        seen.add(id(m))
        stat = {}

        def hook(_m, _i, o):
            stat["std"] = float(o.std())
            raise _Stop  # nothing after this module matters now

        h = m.register_forward_hook(hook)
        try:
            with torch.no_grad():
                model(x)
        except _Stop:
            pass
        finally:
            h.remove()
        std = stat.get("std", 1.0)
        if std > 0:
            with torch.no_grad():
                m.weight.div_(std)
                if m.bias is not None:
                    m.bias.div_(std)
    return model


def seed_of(name):
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "little")


# --------------------------------------------------------------------------------------------
# PyTorch references: activations, Grad-CAM, input gradients (plain and guided)
# --------------------------------------------------------------------------------------------


def activation_and_gradient(model, x, layer, cls):
    """The layer's output A (the input of whatever follows it) and dy_cls/dA."""
    if layer == "relu":
        # DenseNet: forward() applies a functional ReLU to `features` (ending at norm5), then pools.
        a = F.relu(model.features(x)).detach().requires_grad_(True)
        y = model.classifier(torch.flatten(F.adaptive_avg_pool2d(a, (1, 1)), 1))
    else:
        store = {}

        def hook(_m, _i, out):
            leaf = out.detach().requires_grad_(True)
            store["a"] = leaf
            return leaf.clone()  # in-place ops after the layer must not touch A

        handle = model.get_submodule(layer).register_forward_hook(hook)
        try:
            y = model(x)
        finally:
            handle.remove()
        a = store["a"]
    (g,) = torch.autograd.grad(y[0, cls], a)
    return a.detach(), g


def grad_cam(a, g):
    alpha = g.mean(dim=(2, 3), keepdim=True)
    return F.relu((alpha * a).sum(dim=1))[0]


class _GuidedReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, upper):
        ctx.save_for_backward(x)
        ctx.upper = upper
        return x.clamp(min=0) if upper is None else x.clamp(0, upper)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        keep = (x > 0) & (grad > 0)
        if ctx.upper is not None:
            keep &= x < ctx.upper
        return grad * keep, None


class _Rectifiers(torch.overrides.TorchFunctionMode):
    """Records calls of rectifiers and smooth nonlinearities that are not nn.ReLU / nn.ReLU6 modules."""

    NAMES = {"relu", "relu_", "relu6", "hardtanh", "hardtanh_", "sigmoid", "silu", "gelu", "hardswish", "hardsigmoid", "tanh", "elu", "leaky_relu", "softplus", "mish"}

    def __init__(self):
        super().__init__()
        self.seen = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in self.NAMES:
            self.seen.add(name)
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def guided(model):
    """Swaps every nn.ReLU / nn.ReLU6 module's forward for the guided rule."""
    patched = []
    for m in model.modules():
        if type(m) is nn.ReLU:
            upper = None
        elif type(m) is nn.ReLU6:
            upper = 6.0
        else:
            continue
        m.forward = (lambda up: (lambda x: _GuidedReLU.apply(x, up)))(upper)
        patched.append(m)
    try:
        yield len(patched)
    finally:
        for m in patched:
            del m.forward


def references(model, x, layers):
    with torch.no_grad():
        logits = model(x)
    cls = int(logits[0].argmax())
    out = {"input": x, "logits": logits}
    for i, layer in enumerate(layers):
        a, g = activation_and_gradient(model, x, layer, cls)
        out[f"layer{i}.activation"] = a
        out[f"layer{i}.cam"] = grad_cam(a, g)
    xg = x.clone().requires_grad_(True)
    (out["input_gradient"],) = torch.autograd.grad(model(xg)[0, cls], xg)
    # Guided backprop only where every rectifier is a ReLU/ReLU6 module (else torch's hook-based
    # tools silently mix plain and guided units, and so would the reference).
    with guided(model) as n, _Rectifiers() as seen:
        xg = x.clone().requires_grad_(True)
        y = model(xg)
        others = seen.seen
    if n > 0 and not others:
        (out["guided_input_gradient"],) = torch.autograd.grad(y[0, cls], xg)
        note = f"guided reference: {n} ReLU/ReLU6 modules and no other nonlinearity"
    else:
        note = f"no guided reference: {n} ReLU/ReLU6 modules, other nonlinearities {sorted(others)}"
    return cls, {k: v.detach().contiguous().float() for k, v in out.items()}, note


# --------------------------------------------------------------------------------------------
# ONNX
# --------------------------------------------------------------------------------------------


def export_onnx(model, x, path, exporter):
    path = Path(path)
    for p in (path, Path(str(path) + ".data")):
        if p.exists():
            p.unlink()
    if exporter == "dynamo":
        with contextlib.redirect_stdout(sys.stderr):
            torch.onnx.export(model, (x,), str(path), dynamo=True)
    else:
        torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=17)


def onnx_tensor_names(path, layers, acts, exporter):
    """For each layer, the ONNX tensor holding its output: among the float tensors whose values equal
    the layer's activation, the last one produced inside the module's scope (TorchScript node names /
    dynamo `namespace` metadata), else the first one produced. Also returns onnxruntime's logits."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(path))
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {vi.name: vi for vi in list(inferred.graph.value_info) + list(inferred.graph.output)}
    produced = []  # (tensor name, node)
    for node in model.graph.node:
        for o in node.output:
            vi = types.get(o)
            if vi is not None and vi.type.tensor_type.elem_type == onnx.TensorProto.FLOAT:
                produced.append((o, node))
    outputs = [o.name for o in model.graph.output]
    extra = [n for n, _ in produced if n not in outputs]
    for n in extra:
        model.graph.output.append(types[n])
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feed = {sess.get_inputs()[0].name: acts["input"].numpy()}
    names = [o.name for o in sess.get_outputs()]
    values = dict(zip(names, sess.run(None, feed)))
    logits = values[outputs[0]]

    def scope_of(node):
        ns = ""
        for p in node.metadata_props:
            if p.key == "namespace":
                ns = p.value
        return node.name, ns

    found = []
    for i, layer in enumerate(layers):
        ref = acts[f"layer{i}.activation"].numpy()
        scale = float(np.abs(ref).max()) or 1.0
        matches = []
        for name, node in produced:
            v = values.get(name)
            if v is not None and v.shape == ref.shape and float(np.abs(v - ref).max()) <= 1e-4 * scale:
                matches.append((name, node))
        if not matches:
            found.append(None)
            print(f"    ONNX: no tensor equals {layer}'s output")
            continue
        parts = layer.split(".")
        ts_prefix = "/" + "/".join(".".join(parts[: k + 1]) for k in range(len(parts))) + "/"
        in_scope = []
        for name, node in matches:
            nname, ns = scope_of(node)
            # namespace: ": torchvision...ResNet/layer4: torch.nn...Sequential/layer4.1: ...BasicBlock/..."
            ns_paths = [seg.split(":")[0].strip() for seg in ns.split("/")[1:]]
            if nname.startswith(ts_prefix) or layer in ns_paths:
                in_scope.append(name)
        pick = in_scope[-1] if in_scope else matches[0][0]
        found.append(pick)
    return found, logits


# --------------------------------------------------------------------------------------------
# Writing one family
# --------------------------------------------------------------------------------------------


def save_refs(path, tensors, meta):
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata={"generator": "scripts/gen-family-fixtures.py", "family": meta})


def generate(name, builder, arch, size, layers, exporter, out_root):
    h, w = size
    # A map that is all zero (ReLU of a negative sum) would test little: the next seed then.
    for attempt in range(8):
        seed = seed_of(name) + attempt
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        model = randomize(builder(), gen)
        rescale(model, torch.randn(4, 3, h, w, generator=gen))
        x = torch.randn(1, 3, h, w, generator=gen)
        cls, refs, note = references(model, x, layers)
        empty = [layer for i, layer in enumerate(layers) if float(refs[f"layer{i}.cam"].max()) <= 0]
        if not empty:
            break
        print(f"  {name}: seed {seed} gives an all-zero Grad-CAM map at {empty}; trying the next seed")
    params = sum(t.numel() for t in model.state_dict().values() if t.dtype.is_floating_point)
    logits = refs["logits"][0]
    print(f"  {name}: {params} parameters, input {h}x{w}, top-1 class {cls}, logits in [{logits.min():.3f}, {logits.max():.3f}]")
    for i, layer in enumerate(layers):
        a, cam = refs[f"layer{i}.activation"], refs[f"layer{i}.cam"]
        print(f"    {layer}: activation {tuple(a.shape[1:])} max {a.abs().max():.3g}, cam {tuple(cam.shape)} max {cam.max():.3g}, nonzero {int((cam > 0).sum())}/{cam.numel()}")
        if float(cam.max()) <= 0:
            print(f"    WARNING: the Grad-CAM map at {layer} is all zero")
    print(f"    {note}")

    d = Path(out_root) / name
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    torch.save(model.state_dict(), d / "model.pth")
    export_onnx(model, x, d / "model.onnx", exporter)
    onnx_names, ort_logits = onnx_tensor_names(d / "model.onnx", layers, refs, exporter)
    err = float(np.abs(ort_logits - refs["logits"].numpy()).max() / np.abs(refs["logits"].numpy()).max())
    print(f"    ONNX ({exporter}): onnxruntime logits max relative error {err:.2e}; layer tensors {onnx_names}")
    if err > 1e-4:
        print(f"    WARNING: onnxruntime disagrees with torch by {err:.2e}")
    data = d / "model.onnx.data"
    meta = {
        "family": name,
        "arch": arch,
        "input": {"height": h, "width": w},
        "num_classes": NUM_CLASSES,
        "top1": cls,
        "layers": [
            {"name": layer, "role": "default" if i == 0 else "earlier", "key": f"layer{i}", "onnx_tensor": onnx_names[i]}
            for i, layer in enumerate(layers)
        ],
        "default_layer": layers[0],
        "exporter": "dynamo" if exporter == "dynamo" else "torchscript (dynamo=False, opset_version=17)",
        "onnx_external_data": "model.onnx.data" if data.exists() else None,
        "guided": "guided_input_gradient" in refs,
        "onnxruntime_logits_rel_error": err,
        "tensors": {
            "input": "input: 1x3xHxW float32, network input (already normalized)",
            "logits": "logits: 1xN",
            "layerI.activation": "output of layers[I] for the input: 1xCxhxw",
            "layerI.cam": "raw Grad-CAM of the top-1 class at layers[I]: relu(sum_k mean_ij(dy/dA_k) A_k), h x w",
            "input_gradient": "dy_top1/dx: 1x3xHxW",
            "guided_input_gradient": "guided backprop dy_top1/dx (only when guided is true): 1x3xHxW",
        },
        "parameters": params,
        "seed": seed,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
    }
    (d / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    save_refs(d / "ref.safetensors", refs, name)
    sizes = {p.name: p.stat().st_size for p in sorted(d.iterdir())}
    print("    files: " + ", ".join(f"{k} {v / 1024:.0f} KB" for k, v in sizes.items()))
    return sum(sizes.values())


# --------------------------------------------------------------------------------------------
# The default model: EfficientNet-Lite0 (see /work/shared/notes/default-model.md)
# --------------------------------------------------------------------------------------------


class SameConv(nn.Conv2d):
    """TensorFlow "SAME" padding: out = ceil(n / s), the extra pixel after (bottom/right)."""

    def forward(self, x):
        ih, iw = x.shape[-2:]
        kh, kw = self.kernel_size
        sh, sw = self.stride
        ph = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pw = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        if ph or pw:
            x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class LiteBlock(nn.Module):
    def __init__(self, cin, cout, expand, k, stride):
        super().__init__()
        hidden = cin * expand
        if expand != 1:
            self._expand_conv = nn.Conv2d(cin, hidden, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(hidden, eps=1e-3)
        self._depthwise_conv = SameConv(hidden, hidden, k, stride=stride, groups=hidden, bias=False)
        self._bn1 = nn.BatchNorm2d(hidden, eps=1e-3)
        self._project_conv = nn.Conv2d(hidden, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, eps=1e-3)
        self.residual = stride == 1 and cin == cout
        self.expand = expand

    def forward(self, x):
        y = x
        if self.expand != 1:
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.residual else y


class EfficientNetLite0(nn.Module):
    STAGES = [(1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3), (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1)]

    def __init__(self, num_classes=1000):
        super().__init__()
        self._conv_stem = SameConv(3, 32, 3, stride=2, bias=False)
        self._bn0 = nn.BatchNorm2d(32, eps=1e-3)
        blocks, cin = [], 32
        for expand, k, stride, cout, repeats in self.STAGES:
            for r in range(repeats):
                blocks.append(LiteBlock(cin, cout, expand, k, stride if r == 0 else 1))
                cin = cout
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(320, 1280, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(1280, eps=1e-3)
        self._fc = nn.Linear(1280, num_classes)

    def forward(self, x):
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for b in self._blocks:
            x = b(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return self._fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def lite0_input(path, size=224, resize=256):
    """The evaluation crop as torchvision's tensor transforms do it: Resize(256) (shorter side to 256,
    the longer one int(256 * long / short), bilinear, antialiased), CenterCrop(224) (origin
    int(round((size - crop) / 2))), then (x - 127) / 128."""
    from PIL import Image

    img = Image.open(path).convert("RGB")
    t = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float()[None]
    h, w = t.shape[-2:]
    if h <= w:
        nh, nw = resize, int(resize * w / h)
    else:
        nh, nw = int(resize * h / w), resize
    t = F.interpolate(t, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)
    top, left = int(round((nh - size) / 2)), int(round((nw - size) / 2))
    t = t[..., top : top + size, left : left + size]
    return (t - 127.0) / 128.0


def default_model(assets, out):
    src = Path(assets) / "models" / "efficientnet-lite0.pth"
    if not src.exists():
        sys.exit(f"{src} is missing: run scripts/setup.sh (or scripts/fetch-assets.sh assets) first")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sd = torch.load(src, map_location="cpu", weights_only=False)
    sd = {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    model = EfficientNetLite0()
    missing, unexpected = model.load_state_dict(sd, strict=False)
    print(f"loaded {src}: {len(sd)} tensors; missing {missing}, unexpected {unexpected}")
    if missing or unexpected:
        sys.exit("the module does not match the file's keys")
    model.eval()
    pth = out / "efficientnet-lite0.pth"
    torch.save(model.state_dict(), pth)
    print(f"wrote {pth} (zip format, {pth.stat().st_size / 1e6:.1f} MB)")
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    for exporter in ("dynamo", "torchscript"):
        path = out / f"efficientnet-lite0.{exporter}.onnx"
        export_onnx(model, x, path, exporter)
        import onnxruntime as ort

        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
        with torch.no_grad():
            want = model(x).numpy()
        print(f"wrote {path} ({exporter}); onnxruntime vs torch logits: max relative error {np.abs(got - want).max() / np.abs(want).max():.2e}")

    samples = Path(assets) / "samples"
    photos = sorted(p for p in samples.glob("*") if p.suffix in (".png", ".jpg")) if samples.exists() else []
    if not photos:
        print(f"no photos under {samples}: skipping the top-5 comparison (scripts/setup.sh fetches them)")
        return
    labels = json.loads((REPO / "assets" / "imagenet_classes.json").read_text())
    cli = find_cli()
    agree = 0
    for p in photos:
        with torch.no_grad():
            logits = model(lite0_input(p))[0]
        top = torch.topk(logits, 5)
        mine = [(int(i), float(v)) for v, i in zip(top.values, top.indices)]
        line = ", ".join(f"{i} {labels[i]} {v:.3f}" for i, v in mine)
        print(f"{p.name}: torch top-5 {line}")
        if cli is None:
            continue
        res = subprocess.run([str(cli), "explain", str(p), "--model", str(src), "--json"], capture_output=True, text=True)
        if res.returncode != 0:
            print(f"  CLI failed: {res.stderr.strip()}")
            continue
        theirs = [(e["class"], e["logit"]) for e in json.loads(res.stdout)["top5"]]
        same = [i for i, _ in mine] == [i for i, _ in theirs]
        diff = max(abs(a - b) for (_, a), (_, b) in zip(mine, theirs))
        agree += same
        print(f"  CLI   top-5 {', '.join(f'{i} {labels[i]} {v:.3f}' for i, v in theirs)}; same order: {same}; max logit difference {diff:.1e}")
    if cli is not None:
        print(f"top-5 identical on {agree} of {len(photos)} photos")


def find_cli():
    for p in (REPO / "target" / "release" / "gradcam", REPO / "target" / "debug" / "gradcam"):
        if p.exists():
            return p
    print("no target/{release,debug}/gradcam: build it with `cargo build --release --bin gradcam` to compare with the CLI")
    return None


# --------------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", help="comma-separated family names")
    ap.add_argument("--out", default=None, help="output root (default tests/fixtures/families; --default-model: target/default-model)")
    ap.add_argument("--list", action="store_true", help="print the families and their parameter counts")
    ap.add_argument("--default-model", action="store_true", help="EfficientNet-Lite0: zip .pth, ONNX export, top-5 against the CLI")
    ap.add_argument("--assets", default=str(REPO / "assets"))
    args = ap.parse_args()
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

    if args.default_model:
        default_model(args.assets, args.out or REPO / "target" / "default-model")
        return
    only = set(args.only.split(",")) if args.only else None
    fams = [f for f in FAMILIES if only is None or f[0] in only]
    if only and len(fams) != len(only):
        sys.exit(f"unknown families: {sorted(only - {f[0] for f in FAMILIES})}; known: {[f[0] for f in FAMILIES]}")
    if args.list:
        for name, builder, arch, size, layers, exporter in fams:
            torch.manual_seed(0)
            m = builder()
            n = sum(t.numel() for t in m.state_dict().values() if t.dtype.is_floating_point)
            print(f"{name:20} {arch:16} {n:8} params ({n * 4 / 1024:.0f} KB)  input {size}  layers {layers}  {exporter}")
        return
    out = Path(args.out or REPO / "tests" / "fixtures" / "families")
    total = 0
    for fam in fams:
        total += generate(*fam, out)
    all_bytes = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"written: {total / 1e6:.2f} MB; {out} holds {all_bytes / 1e6:.2f} MB in all")


if __name__ == "__main__":
    main()
