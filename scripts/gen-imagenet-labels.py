#!/usr/bin/env python3
"""Extracts the 1000 ImageNet-1k class names from torchvision's `torchvision/models/_meta.py`
(`_IMAGENET_CATEGORIES`) into a JSON array, without importing torchvision (parsed with `ast`).

Usage: gen-imagenet-labels.py SOURCE OUT.json
  SOURCE: a torchvision wheel (.whl) or the _meta.py file itself.
Get the wheel with: python3 -m pip download torchvision --no-deps --only-binary=:all: -d DIR
"""
import ast
import json
import sys
import zipfile

MEMBER = "torchvision/models/_meta.py"
# Spot checks (ImageNet-1k indices used by the project's tests).
EXPECTED = {0: "tench", 281: "tabby", 282: "tiger cat", 285: "Egyptian cat", 657: "missile",
            967: "espresso", 999: "toilet tissue"}


def read_source(path):
    if path.endswith(".whl"):
        with zipfile.ZipFile(path) as z:
            return z.read(MEMBER).decode("utf-8")
    with open(path, encoding="utf-8") as f:
        return f.read()


def extract(source):
    tree = ast.parse(source)
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else (
            [node.target] if isinstance(node, ast.AnnAssign) else [])
        if any(isinstance(t, ast.Name) and t.id == "_IMAGENET_CATEGORIES" for t in targets):
            return ast.literal_eval(node.value)
    raise SystemExit("error: _IMAGENET_CATEGORIES not found in " + MEMBER)


def main():
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    names = extract(read_source(sys.argv[1]))
    if not (isinstance(names, list) and len(names) == 1000 and all(isinstance(n, str) and n for n in names)):
        raise SystemExit("error: expected a list of 1000 non-empty strings")
    for i, want in EXPECTED.items():
        if names[i] != want:
            raise SystemExit(f"error: class {i} is {names[i]!r}, expected {want!r}")
    with open(sys.argv[2], "w", encoding="utf-8", newline="\n") as f:
        json.dump(names, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(f"wrote {len(names)} ImageNet class names to {sys.argv[2]}")


if __name__ == "__main__":
    main()
