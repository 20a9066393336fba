#!/usr/bin/env python3
"""Writes the fixtures of tests/zip_pth.rs into tests/fixtures/zip_pth/ with real torch.

CI has no torch, so the outputs are committed; rerun this only to change them (the tests compare
against expected.safetensors, written here from the same tensors, so both stay in sync).

    /opt/torchenv/bin/python scripts/gen-zip-pth-fixtures.py

Files (all small; a few KB each):
  tiny_f32.pth, tiny_f16.pth, tiny_bf16.pth  torch.save(model.state_dict()) of a conv+bn+linear
                                             net, in each float dtype (num_batches_tracked stays
                                             int64, as torch writes it)
  checkpoint.pth         {'epoch': 3, 'state_dict': sd, 'best_acc': 0.5}
  data_parallel.pth      nn.DataParallel(model).state_dict(): every key starts with 'module.'
  views.pth              tensors that are views of one storage (transposed, sliced with an
                         offset, strided) beside the base tensor
  no_crc.pth             tiny f32 state dict written with torch.serialization.set_crc32_options(False)
  whole_model.pth        torch.save(model): a pickled nn.Module, which the reader must refuse
  no_tensors.pth         torch.save({'epoch': 3, 'lr': 0.1}): nothing to load
  legacy_checkpoint.pth  the checkpoint in the legacy (pre-1.6) format
  legacy_whole_model.pth the pickled module in the legacy format
  expected.safetensors   every tensor the readers must return, as f32: '<fixture>/<key>'

With --real DIR it writes, instead, real-size files that are not committed (tens of MB), for the
test `real_torchvision_files` (run it with GRADCAM_ZIP_PTH_DIR=DIR):
  resnet18.pth             torchvision resnet18 (random init, seeded), torch.save(state_dict)
  resnet18_f16.pth         the same in float16
  resnet18_checkpoint.pth  {'epoch': 90, 'model_state_dict': DataParallel(model).state_dict()}
  resnet18_expected.safetensors  the f32 and f16 tensors: 'f32/<key>', 'f16/<key>'
"""
import json
import os
import struct
import sys

import torch
import torch.nn as nn

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "zip_pth")


def tiny_model():
    """Conv + BatchNorm (with running stats moved off their defaults) + Linear, seeded."""
    torch.manual_seed(1234)
    m = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 3),
    )
    m.train()
    with torch.no_grad():
        m(torch.randn(2, 3, 5, 5))  # updates running_mean/var and num_batches_tracked
    return m.eval()


def views():
    """A base tensor and views of its storage: the saved file holds one storage for all four."""
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6) / 8 - 1
    return {
        "base": base,
        "transposed": base.t(),  # stride (1, 6)
        "rows_1_3": base[1:3],  # storage offset 6
        "every_other_col": base[:, ::2],  # stride (6, 2)
    }


def save(obj, name, **kw):
    path = os.path.join(OUT, name)
    torch.save(obj, path, **kw)
    return path


def write_safetensors(tensors, path):
    """Minimal safetensors writer (F32 only), so that the script needs only torch."""
    header, data = {}, b""
    for name, t in tensors.items():
        raw = t.detach().to(torch.float32).contiguous().numpy().astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + data)


def float_items(sd):
    return {k: v for k, v in sd.items() if v.is_floating_point()}


def main():
    os.makedirs(OUT, exist_ok=True)
    model = tiny_model()
    sd = model.state_dict()
    expected = {}

    for tag, dtype in [("f32", torch.float32), ("f16", torch.float16), ("bf16", torch.bfloat16)]:
        sd_t = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in sd.items()}
        save(sd_t, f"tiny_{tag}.pth")
        # f16/bf16 -> f32 is exact: the expected values are the stored ones.
        expected.update({f"tiny_{tag}/{k}": v for k, v in float_items(sd_t).items()})

    save({"epoch": 3, "state_dict": sd, "best_acc": 0.5}, "checkpoint.pth")
    save(nn.DataParallel(model).state_dict(), "data_parallel.pth")
    v = views()
    save(v, "views.pth")
    expected.update({f"views/{k}": t for k, t in v.items()})

    torch.serialization.set_crc32_options(False)
    save(sd, "no_crc.pth")
    torch.serialization.set_crc32_options(True)

    save(model, "whole_model.pth")
    save({"epoch": 3, "lr": 0.1}, "no_tensors.pth")
    save({"epoch": 3, "state_dict": sd, "best_acc": 0.5}, "legacy_checkpoint.pth", _use_new_zipfile_serialization=False)
    save(model, "legacy_whole_model.pth", _use_new_zipfile_serialization=False)

    write_safetensors(expected, os.path.join(OUT, "expected.safetensors"))
    total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
    print(f"wrote {len(os.listdir(OUT))} files, {total} bytes, to {os.path.normpath(OUT)}")


def real(out):
    """A real-size network (11.7M parameters), not committed: see the module docstring."""
    import torchvision

    os.makedirs(out, exist_ok=True)
    torch.manual_seed(7)
    model = torchvision.models.resnet18(weights=None)
    model.train()
    with torch.no_grad():
        model(torch.randn(2, 3, 64, 64))  # running stats off their defaults
    sd = model.eval().state_dict()
    sd16 = {k: (v.half() if v.is_floating_point() else v) for k, v in sd.items()}
    torch.save(sd, os.path.join(out, "resnet18.pth"))
    torch.save(sd16, os.path.join(out, "resnet18_f16.pth"))
    torch.save({"epoch": 90, "model_state_dict": nn.DataParallel(model).state_dict()}, os.path.join(out, "resnet18_checkpoint.pth"))
    expected = {f"f32/{k}": v for k, v in float_items(sd).items()}
    expected.update({f"f16/{k}": v for k, v in float_items(sd16).items()})
    write_safetensors(expected, os.path.join(out, "resnet18_expected.safetensors"))
    print(f"wrote resnet18 files to {out}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--real"] and len(sys.argv) == 3:
        real(sys.argv[2])
    else:
        main()
