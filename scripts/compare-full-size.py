#!/usr/bin/env python3
"""Full-size torchvision models against our CLI: the check tests/families.rs runs on narrow networks,
on the real architectures (randomly initialized: no hub access needed).

For each family: build the torchvision model (random init, non-trivial batch-norm statistics, as
scripts/gen-family-fixtures.py does), write it to a temporary directory as a state dict (zip .pth, or
safetensors) or an ONNX export, write a random input as input.npy, compute PyTorch's logits and raw
Grad-CAM map of the top-1 class at the default layer, run

  gradcam explain --tensor input.npy --model FILE --layer L --json

for the default layer (and an earlier one with --earlier), and print the max relative errors
(max |ours - torch| / max |torch|) of the top-5 logits and of the map, whether the top-5 classes are
torch's, the detected architecture, and whether the CLI's default layer (no --layer) is that layer.

Needs torch, torchvision (and onnx, onnxscript for --format onnx-*; safetensors for --format
safetensors) and a built CLI (`cargo build --release --bin gradcam`; target/debug/gradcam is used if
there is no release build). Nothing is downloaded.

  python scripts/compare-full-size.py                         # every family below, zip .pth
  python scripts/compare-full-size.py --families resnet50,densenet121 --format onnx-dynamo
  python scripts/compare-full-size.py --format safetensors --earlier --keep /tmp/full
"""

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torchvision

REPO = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("gen_family_fixtures", REPO / "scripts" / "gen-family-fixtures.py")
gen = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gen)

# torchvision name -> (arch we should detect, default layer, an earlier layer, input size)
FAMILIES = {
    "alexnet": ("alexnet", "features.11", "features.7", 224),
    "vgg16": ("vgg16", "features.29", "features.22", 224),
    "vgg11_bn": ("vgg11_bn", "features.27", "features.20", 224),
    "resnet18": ("resnet18", "layer4", "layer3", 224),
    "resnet50": ("resnet50", "layer4", "layer3", 224),
    "resnet101": ("resnet", "layer4", "layer3", 224),
    "resnext50_32x4d": ("resnet", "layer4", "layer3", 224),
    "wide_resnet50_2": ("resnet", "layer4", "layer3", 224),
    "squeezenet1_0": ("squeezenet1_0", "features.12", "features.9", 224),
    "squeezenet1_1": ("squeezenet1_1", "features.12", "features.7", 224),
    "densenet121": ("densenet", "relu", "features.denseblock3", 224),
    "googlenet": ("googlenet", "inception5b", "inception4e", 224),
    "inception_v3": ("inception_v3", "Mixed_7c", "Mixed_6e", 299),
    "mobilenet_v2": ("mobilenet_v2", "features.18", "features.13", 224),
    "mobilenet_v3_large": ("mobilenet_v3", "features.16", "features.12", 224),
    "mobilenet_v3_small": ("mobilenet_v3", "features.12", "features.8", 224),
    "efficientnet_b0": ("efficientnet", "features.8", "features.5", 224),
    "efficientnet_v2_s": ("efficientnet_v2", "features.7", "features.5", 384),
    "regnet_x_400mf": ("regnet", "trunk_output.block4", "trunk_output.block3", 224),
    "regnet_y_400mf": ("regnet", "trunk_output.block4", "trunk_output.block3", 224),
    "shufflenet_v2_x1_0": ("shufflenet_v2", "conv5", "stage4", 224),
    "mnasnet1_0": ("mnasnet", "layers.16", "layers.13", 224),
    "convnext_tiny": ("convnext", "features.7", "features.5", 224),
}


def build(name):
    kw = {"weights": None}
    if name in ("googlenet", "inception_v3"):
        kw.update(aux_logits=False, init_weights=True, transform_input=False)
    return torchvision.models.get_model(name, **kw)


def find_cli(path):
    if path:
        return Path(path)
    for p in (REPO / "target" / "release" / "gradcam", REPO / "target" / "debug" / "gradcam"):
        if p.exists():
            return p
    sys.exit("no CLI: run `cargo build --release --bin gradcam` (or pass --cli PATH)")


def write_model(model, x, d, fmt):
    if fmt == "pth":
        path = d / "model.pth"
        torch.save(model.state_dict(), path)
    elif fmt == "safetensors":
        from safetensors.torch import save_file

        path = d / "model.safetensors"
        save_file({k: v.contiguous() for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}, str(path))
    else:
        path = d / "model.onnx"
        gen.export_onnx(model, x, path, "dynamo" if fmt == "onnx-dynamo" else "torchscript")
    return path


def run_cli(cli, model_path, input_path, layer):
    cmd = [str(cli), "explain", "--tensor", str(input_path), "--model", str(model_path), "--json"]
    if layer:
        cmd += ["--layer", layer]
    t0 = time.time()
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        return None, res.stderr.strip() or res.stdout.strip(), time.time() - t0
    return json.loads(res.stdout), None, time.time() - t0


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        return float("inf")
    scale = np.abs(b).max()
    return float(np.abs(a - b).max() / scale) if scale > 0 else float(np.abs(a - b).max())


def compare(name, cli, fmt, earlier, keep):
    arch, default, before, size = FAMILIES[name]
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(gen.seed_of(name))
    model = gen.randomize(build(name), g)
    # Per-layer rescaling on a smaller input (the statistic does not depend much on the size).
    gen.rescale(model, torch.randn(1, 3, min(size, 160), min(size, 160), generator=g))
    x = torch.randn(1, 3, size, size, generator=g)
    with torch.no_grad():
        logits = model(x)[0]
    top1 = int(logits.argmax())
    d = Path(keep) / name if keep else Path(tempfile.mkdtemp(prefix=f"full-{name}-"))
    d.mkdir(parents=True, exist_ok=True)
    np.save(d / "input.npy", x.numpy().astype(np.float32))
    path = write_model(model, x, d, fmt)
    rows = []
    # Without --layer: the default layer. The CLI reports a layer by its node's own name (`layer4.1.relu`
    # for `layer4`), so the default is right iff it is the node that --layer DEFAULT names.
    chosen, err, _ = run_cli(cli, path, d / "input.npy", None)
    chosen = chosen["layer"] if chosen else None
    for layer in [default] + ([before] if earlier else []):
        a, grad = gen.activation_and_gradient(model, x, layer, top1)
        cam = gen.grad_cam(a, grad).numpy()
        out, err, secs = run_cli(cli, path, d / "input.npy", layer)
        if out is None:
            rows.append(f"{name:20} {layer:22} CLI failed: {err.splitlines()[-1] if err else '?'}")
            continue
        ours = np.array(out["cam"]["values"], np.float32).reshape(out["cam"]["height"], out["cam"]["width"])
        top5 = [p["class"] for p in out["top5"]]
        want5 = torch.topk(logits, 5).indices.tolist()
        lerr = max(abs(p["logit"] - float(logits[p["class"]])) for p in out["top5"]) / float(logits.abs().max())
        cerr = rel(ours, cam)
        notes = []
        if out.get("arch") != arch and not fmt.startswith("onnx"):
            notes.append(f"arch {out.get('arch')} (expected {arch})")
        if layer == default and chosen != out.get("layer"):
            notes.append(f"default layer is node {chosen}, {default} is node {out.get('layer')}")
        if top5 != want5:
            notes.append(f"top-5 {top5} vs torch {want5}")
        ok = lerr <= 1e-3 and cerr <= 1e-3 and not notes
        rows.append(f"{name:20} {layer:22} {'ok  ' if ok else 'FAIL'} logits {lerr:.1e}  cam {cerr:.1e} ({ours.shape[0]}x{ours.shape[1]})  {secs:.1f} s  {'; '.join(notes)}")
    if not keep:
        for p in sorted(d.iterdir()):
            p.unlink()
        d.rmdir()
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--families", help=f"comma-separated torchvision names (default: all of {', '.join(FAMILIES)})")
    ap.add_argument("--format", default="pth", choices=["pth", "safetensors", "onnx-dynamo", "onnx-torchscript"])
    ap.add_argument("--earlier", action="store_true", help="also compare an earlier layer")
    ap.add_argument("--cli", help="path of the gradcam binary")
    ap.add_argument("--keep", help="write the files under this directory and keep them")
    args = ap.parse_args()
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    names = args.families.split(",") if args.families else list(FAMILIES)
    unknown = [n for n in names if n not in FAMILIES]
    if unknown:
        sys.exit(f"unknown families {unknown}; known: {', '.join(FAMILIES)}")
    cli = find_cli(args.cli)
    print(f"CLI {cli}; format {args.format}; relative errors are max |ours - torch| / max |torch| (top-5 logits, raw Grad-CAM map)")
    failures = 0
    for n in names:
        t0 = time.time()
        try:
            rows = compare(n, cli, args.format, args.earlier, args.keep)
        except Exception as e:  # keep going: one family's export failing says nothing of the others
            rows = [f"{n:20} error: {type(e).__name__}: {e}"]
        for r in rows:
            print(r, flush=True)
            failures += " ok  " not in r
        print(f"  ({time.time() - t0:.0f} s)", flush=True)
    print(f"{failures} comparison(s) failed" if failures else "all comparisons within 1e-3")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
