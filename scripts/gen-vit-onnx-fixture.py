"""Writes tests/fixtures/vit/model.onnx (+ model.onnx.data): the narrow VisionTransformer of
tests/fixtures/vit/ (the weights of its model.safetensors) exported with torch's dynamo exporter,
for tests/vit.rs (the logits and Grad-CAM references are the fixture's, from gen-vit-fixture.py).

    /opt/torchenv/bin/python scripts/gen-vit-onnx-fixture.py

Needs torch, torchvision, onnx, safetensors (not needed by CI: the outputs are committed).
"""

import json
import pathlib

import numpy as np
import torch
from safetensors.torch import load_file
from torchvision.models.vision_transformer import VisionTransformer

ROOT = pathlib.Path(__file__).resolve().parent.parent
DIR = ROOT / "tests/fixtures/vit"


def main():
    cfg = json.loads((DIR / "meta.json").read_text())["config"]
    model = VisionTransformer(**cfg).eval()
    model.load_state_dict(load_file(str(DIR / "model.safetensors")))
    x = torch.from_numpy(np.load(DIR / "input.npy"))[None]
    with torch.no_grad():
        logits = model(x)[0]
    want = torch.from_numpy(np.load(DIR / "logits.npy"))
    assert torch.allclose(logits, want, atol=1e-5), "the safetensors do not reproduce the fixture's logits"
    out = DIR / "model.onnx"
    for p in (out, out.with_suffix(".onnx.data")):
        p.unlink(missing_ok=True)
    torch.onnx.export(model, (x,), str(out), dynamo=True, external_data=True)
    try:
        import onnxruntime as ort

        got = ort.InferenceSession(str(out)).run(None, {ort.InferenceSession(str(out)).get_inputs()[0].name: x.numpy()})[0][0]
        print(f"{out}: onnxruntime logits max |diff| {np.abs(got - want.numpy()).max():.3g}")
    except ImportError:
        pass


if __name__ == "__main__":
    main()
