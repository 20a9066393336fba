#!/usr/bin/env python3
"""Writes tests/fixtures/tiny_legacy.pth: a legacy (pre-1.6) torch.save file made with the stdlib
pickle module and fake `torch` classes, laid out exactly like torch/serialization.py's
_legacy_save (magic, protocol version, sys info, state dict with persistent-id storages, storage
key list, then count + raw data per storage). No torch needed.

The expected values are asserted in tests/legacy_pth_tests.rs; keep both in sync.
"""
import collections, os, pickle, struct, sys, types

torch = types.ModuleType("torch")
torch_utils = types.ModuleType("torch._utils")
sys.modules["torch"] = torch
sys.modules["torch._utils"] = torch_utils

def _mk_storage_class(name, fmt, size):
    cls = type(name, (), {"fmt": fmt, "size": size})
    cls.__module__ = "torch"
    setattr(torch, name, cls)
    return cls

FloatStorage = _mk_storage_class("FloatStorage", "f", 4)
HalfStorage = _mk_storage_class("HalfStorage", "e", 2)
BFloat16Storage = _mk_storage_class("BFloat16Storage", "bf16", 2)
DoubleStorage = _mk_storage_class("DoubleStorage", "d", 8)
LongStorage = _mk_storage_class("LongStorage", "q", 8)

def _rebuild_tensor_v2(*a): raise NotImplementedError
def _rebuild_parameter(*a): raise NotImplementedError
for f in (_rebuild_tensor_v2, _rebuild_parameter):
    f.__module__ = "torch._utils"
    setattr(torch_utils, f.__name__, f)

class Storage:
    """A typed storage: class, key (torch uses str(_cdata)), values."""
    def __init__(self, cls, key, values, view=None):
        self.cls, self.key, self.values, self.view = cls, key, values, view
    def raw(self):
        if self.cls.fmt == "bf16":
            return b"".join(struct.pack("<f", v)[2:] for v in self.values)  # exact bf16 values only
        return struct.pack("<%d%s" % (len(self.values), self.cls.fmt), *self.values)

class Tensor:
    def __init__(self, storage, offset, size, stride):
        self.args = (storage, offset, tuple(size), tuple(stride), False, collections.OrderedDict())
    def __reduce_ex__(self, proto):
        return (_rebuild_tensor_v2, self.args)

class Parameter:
    def __init__(self, t):
        self.t = t
    def __reduce_ex__(self, proto):
        return (_rebuild_parameter, (self.t, True, collections.OrderedDict()))

class StateDict(collections.OrderedDict):
    pass

def build():
    s_a = Storage(FloatStorage, "1001", [i * 0.5 - 1.0 for i in range(6)])
    s_t = Storage(FloatStorage, "1002", [float(i) for i in range(6)])          # stored as 2x3
    s_h = Storage(HalfStorage, "1003", [0.5, -1.25, 65504.0, 2.0 ** -24])
    s_b = Storage(BFloat16Storage, "1004", [1.5, -2.0, 0.25, 3.0])
    s_d = Storage(DoubleStorage, "1005", [0.1, -1e-3, 12345.678])
    s_l = Storage(LongStorage, "1006", [7])
    s_s = Storage(FloatStorage, "1007", [42.0])
    s_e = Storage(FloatStorage, "1008", [])
    s_p = Storage(FloatStorage, "1009", [9.0, 8.0])
    s_root = Storage(FloatStorage, "1010", [10.0, 11.0, 12.0, 13.0, 14.0])
    s_view = Storage(FloatStorage, "1010", None, view=("1010v", 1, 3))   # elements 11, 12, 13
    sd = collections.OrderedDict()
    sd["a.weight"] = Tensor(s_a, 0, (2, 3), (3, 1))
    sd["a.t"] = Tensor(s_t, 0, (3, 2), (1, 3))            # transpose of [[0,1,2],[3,4,5]]
    sd["b.half"] = Tensor(s_h, 0, (4,), (1,))
    sd["b.bf16"] = Tensor(s_b, 0, (2, 2), (2, 1))
    sd["c.double"] = Tensor(s_d, 0, (3,), (1,))
    sd["d.offset"] = Tensor(s_a, 2, (2, 2), (1, 2))       # shares a.weight's storage: [[0,1],[0.5,1.5]]
    sd["bn.num_batches_tracked"] = Tensor(s_l, 0, (), ())
    sd["scalar"] = Tensor(s_s, 0, (), ())
    sd["empty"] = Tensor(s_e, 0, (0, 4), (4, 1))
    sd["p"] = Parameter(Tensor(s_p, 0, (2,), (1,)))
    sd["v.view"] = Tensor(s_view, 1, (2,), (1,))           # view [11,12,13] from offset 1: [12, 13]
    sd["bcast.row"] = Tensor(s_root, 3, (2, 2), (0, 1))    # stride-0 rows: [[13,14],[13,14]]
    out = collections.OrderedDict(sd)
    out._metadata = collections.OrderedDict([("", {"version": 1})])  # like nn.Module.state_dict()
    storages = {"1001": s_a, "1002": s_t, "1003": s_h, "1004": s_b, "1005": s_d, "1006": s_l,
                "1007": s_s, "1008": s_e, "1009": s_p, "1010": s_root}
    return out, storages

class P(pickle.Pickler):
    def __init__(self, f, seen):
        super().__init__(f, protocol=2)
        self.seen = seen
    def persistent_id(self, obj):
        if isinstance(obj, Storage):
            self.seen.setdefault(obj.key, None)
            view = None
            if obj.view is not None:
                view = obj.view
            return ("storage", obj.cls, obj.key, "cpu", 5 if obj.key == "1010" else len(obj.values), view)
        return None

def main(path):
    sd, storages = build()
    with open(path, "wb") as f:
        pickle.dump(0x1950a86a20f9469cfc6c, f, protocol=2)
        pickle.dump(1001, f, protocol=2)
        pickle.dump({"protocol_version": 1001, "little_endian": True,
                     "type_sizes": {"short": 2, "int": 4, "long": 4}}, f, protocol=2)
        seen = {}
        P(f, seen).dump(sd)
        keys = list(seen)
        pickle.dump(keys, f, protocol=2)
        for k in keys:
            st = storages[k]
            f.write(struct.pack("<q", len(st.values)))
            f.write(st.raw())
    print(f"wrote {path} ({os.path.getsize(path)} bytes)")

if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "tiny_legacy.pth"))
