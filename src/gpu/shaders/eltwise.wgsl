// Element-wise ops: ReLU/ReLU6 forward and backward (PyTorch's tie rule: no gradient at x == 0 or
// x == 6; rule 1, guided: also only where the incoming gradient is positive; rule 2, deconvolution:
// wherever the incoming gradient is positive, whatever x), residual add, and a strided
// copy that serves flatten, concat (both directions) and gradient fan-out sums.

struct Params { len: u32, mode: u32, rule: u32, acc: u32, src_off: u32, dst_off: u32, _p0: u32, _p1: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> dst: array<f32>;

// a = x, dst = y; mode 0 ReLU, 1 ReLU6.
@compute @workgroup_size(64)
fn relu_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 64u;
    if (i >= p.len) { return; }
    var v = max(a[i], 0.0);
    if (p.mode == 1u) { v = min(v, 6.0); }
    dst[i] = v;
}

// a = grad of the output, b = x, dst = grad of x.
@compute @workgroup_size(64)
fn relu_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 64u;
    if (i >= p.len) { return; }
    let g = a[i];
    let v = b[i];
    var ok = 0.0 < v && (p.mode == 0u || v < 6.0);
    if (p.rule == 1u) { ok = ok && g > 0.0; }
    if (p.rule == 2u) { ok = g > 0.0; }
    var r = 0.0;
    if (ok) { r = g; }
    if (p.acc != 0u) { dst[i] += r; } else { dst[i] = r; }
}

// dst = a + b, then (mode 1) a ReLU or (mode 2) a ReLU6 where the executor fused the activation
// node that follows the sum into it.
@compute @workgroup_size(64)
fn add(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 64u;
    if (i >= p.len) { return; }
    var v = a[i] + b[i];
    if (p.mode == 1u) { v = max(v, 0.0); }
    if (p.mode == 2u) { v = clamp(v, 0.0, 6.0); }
    dst[i] = v;
}

// dst[dst_off + i] = (acc ? dst[dst_off + i] : 0) + a[src_off + i]. (b is bound to a dummy buffer.)
@compute @workgroup_size(64)
fn copy(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 64u;
    if (i >= p.len) { return; }
    let v = a[p.src_off + i];
    if (p.acc != 0u) { dst[p.dst_off + i] += v; } else { dst[p.dst_off + i] = v; }
}
