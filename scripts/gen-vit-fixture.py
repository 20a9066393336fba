"""Writes tests/fixtures/vit/: a narrow torchvision VisionTransformer (random weights) as safetensors,
an input, and torch's logits and raw Grad-CAM map at the default layer, for tests/vit.rs.

The Grad-CAM reference follows pytorch-grad-cam's ViT recipe, computed by hand: hook the last
block's ln_1 output, drop the class token from the activation A and its gradient dA, lay the
g * g patch tokens out as a C x g x g grid, alpha_c = mean of dA_c, map = ReLU(sum_c alpha_c A_c).

    /opt/torchenv/bin/python scripts/gen-vit-fixture.py            # the committed fixture
    /opt/torchenv/bin/python scripts/gen-vit-fixture.py --full DIR # full-size vit_b_16 (346 MB),
        # for `VIT_FULL_DIR=DIR cargo test --test vit -- --ignored`

Needs torch, torchvision, numpy and safetensors (not needed by CI: the outputs are committed).
"""

import argparse
import json
import math
import pathlib

import numpy as np
import torch
from safetensors.torch import save_file
from torchvision.models.vision_transformer import VisionTransformer, vit_b_16

ROOT = pathlib.Path(__file__).resolve().parent.parent


def randomize(model, gen, everything):
    """torchvision zero-initializes the head (and the class token, the attention biases): give them,
    and with `everything` every tensor, random values so that each one is exercised."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            is_norm = ".ln" in name or name.startswith("encoder.ln")
            if not everything and not (name.startswith("heads") or name == "class_token"):
                continue
            if is_norm and name.endswith("weight"):
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=gen))
            elif p.dim() >= 2 and name not in ("class_token", "encoder.pos_embedding"):
                fan_in = math.prod(p.shape[1:])
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(fan_in))
            else:
                p.copy_(0.2 * torch.randn(p.shape, generator=gen))


def grad_cam(model, x, cls):
    """Logits and pytorch-grad-cam's ViT Grad-CAM map (before resizing or normalization)."""
    blocks = model.encoder.layers
    layer = blocks[len(blocks) - 1].ln_1
    store = {}

    def hook(module, inputs, output):
        store["a"] = output
        output.register_hook(lambda g: store.__setitem__("g", g))

    handle = layer.register_forward_hook(hook)
    logits = model(x)
    handle.remove()
    logits[0, cls].backward()
    g = model.image_size // model.patch_size

    def grid(t):  # (1, 1 + g*g, C) -> (C, g, g), class token dropped
        return t[0, 1:, :].reshape(g, g, -1).permute(2, 0, 1)

    a, da = grid(store["a"]).detach(), grid(store["g"])
    alpha = da.mean(dim=(1, 2))
    cam = torch.relu((alpha[:, None, None] * a).sum(0))
    return logits[0].detach(), cam


def write(out, model, x, heads, extra):
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / "model.safetensors"))
    with torch.no_grad():
        cls = int(model(x)[0].argmax())
    logits, cam = grad_cam(model, x, cls)
    np.save(out / "input.npy", x[0].numpy().astype(np.float32))
    np.save(out / "logits.npy", logits.numpy().astype(np.float32))
    np.save(out / "gradcam.npy", cam.detach().numpy().astype(np.float32))
    meta = {"num_heads": heads, "class": cls, "image_size": model.image_size, "patch_size": model.patch_size, **extra}
    (out / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"{out}: class {cls}, logits {logits[:4].tolist()}..., map {tuple(cam.shape)} max {float(cam.max()):.4g}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--full", type=pathlib.Path, help="write a full-size vit_b_16 here instead")
    args = ap.parse_args()
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1234)
    if args.full:
        model = vit_b_16().eval()
        randomize(model, gen, everything=False)
        x = torch.randn(1, 3, 224, 224, generator=gen)
        write(args.full, model, x, 12, {"model": "vit_b_16"})
        return
    cfg = dict(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32, num_classes=10)
    model = VisionTransformer(**cfg).eval()
    randomize(model, gen, everything=True)
    x = torch.randn(1, 3, 32, 32, generator=gen)
    write(ROOT / "tests/fixtures/vit", model, x, cfg["num_heads"], {"model": "VisionTransformer", "config": cfg})
    # heads.pre_logits + tanh (representation_size), 3 heads, a 3 x 3 grid of 6-pixel patches.
    cfg = dict(image_size=18, patch_size=6, num_layers=1, num_heads=3, hidden_dim=12, mlp_dim=20, num_classes=5, representation_size=7)
    model = VisionTransformer(**cfg).eval()
    randomize(model, gen, everything=True)
    x = torch.randn(1, 3, 18, 18, generator=gen)
    write(ROOT / "tests/fixtures/vit/pre_logits", model, x, cfg["num_heads"], {"model": "VisionTransformer", "config": cfg})


if __name__ == "__main__":
    main()
