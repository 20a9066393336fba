#!/usr/bin/env python3
"""The pretrained default model through every file format, where torch is installed:

    python scripts/compare-default-model-formats.py [OUT_DIR]     (default target/default-model-formats)

From assets/models/efficientnet-lite0.pth (the legacy file scripts/fetch-assets.sh fetches) it writes
- efficientnet-lite0.zip.pth: the same state dict as today's `torch.save` writes it (zip);
- efficientnet-lite0.dynamo.onnx (+ .onnx.data) and efficientnet-lite0.ts.onnx: the network exported by
  both PyTorch exporters, from an nn.Module written here from the model's published structure (TF 'SAME'
  padding, batch-norm eps 1e-3, ReLU6, no squeeze-excitation);
then explains every bundled photo with our CLI from each file and from the legacy file, and compares
the top-5 classes and the raw Grad-CAM maps (and reports how far the f16 safetensors file the tests
use lies from them). Exits non-zero on any difference.
The ONNX files get `--mean/--std` for the model's (x - 127) / 128 input (ONNX files carry no
normalization).
"""
import json
import math
import os
import subprocess
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLI = os.path.join(REPO, "target", "release", "gradcam")
# (expand, kernel, stride, out, repeats) per stage.
STAGES = [(1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3), (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1)]


class SameConv(nn.Conv2d):
    """A conv with TensorFlow 'SAME' padding: the odd pixel after (bottom/right)."""

    def forward(self, x):
        pads = []
        for n, k, s in ((x.shape[3], self.kernel_size[1], self.stride[1]), (x.shape[2], self.kernel_size[0], self.stride[0])):
            total = max((math.ceil(n / s) - 1) * s + k - n, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(x, pads))


def bn(c):
    return nn.BatchNorm2d(c, eps=1e-3)


class Block(nn.Module):
    def __init__(self, cin, expand, k, stride, cout):
        super().__init__()
        mid = cin * expand
        if expand != 1:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = bn(mid)
        self._depthwise_conv = SameConv(mid, mid, k, stride, groups=mid, bias=False)
        self._bn1 = bn(mid)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = bn(cout)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = F.relu6(self._bn0(self._expand_conv(x))) if hasattr(self, "_expand_conv") else x
        y = self._bn2(self._project_conv(F.relu6(self._bn1(self._depthwise_conv(y)))))
        return x + y if self.residual else y


class EfficientNetLite0(nn.Module):
    def __init__(self):
        super().__init__()
        self._conv_stem = SameConv(3, 32, 3, 2, bias=False)
        self._bn0 = bn(32)
        blocks, cin = [], 32
        for expand, k, stride, cout, repeats in STAGES:
            for r in range(repeats):
                blocks.append(Block(cin, expand, k, stride if r == 0 else 1, cout))
                cin = cout
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(320, 1280, 1, bias=False)
        self._bn1 = bn(1280)
        self._fc = nn.Linear(1280, 1000)

    def forward(self, x):
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for b in self._blocks:
            x = b(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return self._fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def explain(image, model, *extra):
    out = subprocess.run([CLI, "explain", image, "--model", model, "--json", "--raw", *extra], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"{model}: {out.stderr}")
    return json.loads(out.stdout)


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(REPO, "target", "default-model-formats")
    os.makedirs(out, exist_ok=True)
    legacy = os.path.join(REPO, "assets", "models", "efficientnet-lite0.pth")
    f16 = os.path.join(REPO, "assets", "models", "efficientnet-lite0.safetensors")
    sd = torch.load(legacy, map_location="cpu")
    zip_pth = os.path.join(out, "efficientnet-lite0.zip.pth")
    torch.save(sd, zip_pth)
    model = EfficientNetLite0().eval()
    model.load_state_dict(sd)
    x = torch.randn(1, 3, 224, 224)
    dynamo = os.path.join(out, "efficientnet-lite0.dynamo.onnx")
    ts = os.path.join(out, "efficientnet-lite0.ts.onnx")
    for f in (dynamo, dynamo + ".data"):
        if os.path.exists(f):
            os.remove(f)
    torch.onnx.export(model, (x,), dynamo, dynamo=True, external_data=True, verbose=False)
    torch.onnx.export(model, (x,), ts, dynamo=False, opset_version=17)
    subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "gradcam"], cwd=REPO, check=True)
    norm = ["--mean", "0.498039,0.498039,0.498039", "--std", "0.501961,0.501961,0.501961"]
    files = [("zip .pth", zip_pth, []), ("ONNX (dynamo)", dynamo, norm), ("ONNX (TorchScript)", ts, norm)]
    tolerance = {path: 1e-4 for _, path, _ in files}
    # f16 weights: the same classes, maps within a percent.
    files.append(("f16 safetensors", f16, []))
    tolerance[f16] = 1e-2
    samples = os.path.join(REPO, "assets", "samples")
    worst, failed = 0.0, []
    for photo in sorted(os.listdir(samples)):
        image = os.path.join(samples, photo)
        want = explain(image, legacy)
        top5 = [(p["class"], p["label"]) for p in want["top5"]]
        line = f"{photo}: {top5[0][1]} ({top5[0][0]})"
        for name, path, extra in files:
            got = explain(image, path, *extra)
            same = [p["class"] for p in got["top5"]] == [c for c, _ in top5]
            a, b = got["cam"]["values"], want["cam"]["values"]
            scale = max(abs(v) for v in b) or 1.0
            err = max(abs(p - q) for p, q in zip(a, b)) / scale
            worst = max(worst, err)
            line += f"; {name}: top-5 {'same' if same else 'DIFFERENT'}, map rel. error {err:.1e}"
            if not same or err > tolerance[path] or len(a) != len(b):
                failed.append(f"{photo} via {name}")
        print(line)
    print(f"largest map difference: {worst:.1e}")
    if failed:
        sys.exit(f"differs: {failed}")


if __name__ == "__main__":
    main()
