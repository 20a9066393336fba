#!/usr/bin/env python3
"""Writes full-size torchvision classifiers for the benchmarks, where torch is installed:

    python scripts/gen-bench-models.py [OUT_DIR] [--families resnet50,efficientnet_b0,...]

For each family: OUT_DIR/<name>.pth (zip state dict, as `torch.save(model.state_dict())` writes it)
and OUT_DIR/<name>.onnx + <name>.onnx.data (torch's default dynamo exporter, batch-norm fused, weights
in external data). Weights are random (nothing is downloaded: a network's speed does not depend on
its weight values). Then:

    cargo run --release --bin bench -- --models OUT_DIR        # native: forward and Grad-CAM per file

OUT_DIR defaults to target/bench-models (not committed: hundreds of MB).
"""
import argparse
import os

import torch
import torchvision

DEFAULT = "resnet50,efficientnet_b0,convnext_tiny,densenet121,mobilenet_v3_large,regnet_y_400mf,shufflenet_v2_x1_0,mnasnet1_0,googlenet,inception_v3,vit_b_16,efficientnet_v2_s,squeezenet1_1,mobilenet_v2,resnext50_32x4d,alexnet,regnet_x_400mf"


def build(name):
    kwargs = {"weights": None}
    if name in ("googlenet", "inception_v3"):
        kwargs.update(aux_logits=False, init_weights=True)
    model = getattr(torchvision.models, name)(**kwargs).eval()
    # torchvision starts ViT's head at zero: every logit would be 0 and the bench's parity check
    # (same top-1 as onnxruntime-web) would compare ties. Any zero-initialised parameter gets noise.
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1 and not p.any():
                p.normal_(0, 0.02)
    return model


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", nargs="?", default="target/bench-models")
    parser.add_argument("--families", default=DEFAULT)
    parser.add_argument("--no-onnx", action="store_true")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.manual_seed(0)
    for name in args.families.split(","):
        model = build(name)
        size = 299 if name == "inception_v3" else 224
        path = os.path.join(args.out, name)
        torch.save(model.state_dict(), path + ".pth")
        line = f"{name}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters, {os.path.getsize(path + '.pth') / 1e6:.1f} MB .pth"
        if not args.no_onnx:
            x = torch.randn(1, 3, size, size)
            torch.onnx.export(model, (x,), path + ".onnx", dynamo=True)
            data = os.path.getsize(path + ".onnx.data") if os.path.exists(path + ".onnx.data") else 0
            line += f", .onnx {os.path.getsize(path + '.onnx') / 1e6:.2f} MB + .onnx.data {data / 1e6:.1f} MB"
        print(line, flush=True)


if __name__ == "__main__":
    main()
