// Max pool (kernel/stride/padding, ceil mode; padding never wins; ties go to the first element in
// row-major order, as the CPU kernel) and PyTorch's adaptive average pool, with their input gradients
// as gathers: each input element recomputes the argmax of every window that covers it.

struct Params {
    c: u32, h: u32, w: u32, oh: u32,
    ow: u32, k: u32, s: u32, pad: u32,
    acc: u32, neg_inf: u32, _p0: u32, _p1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read> aux: array<f32>;
@group(0) @binding(3) var<storage, read_write> dst: array<f32>;

fn lo(o: u32, len: u32) -> u32 { return min(u32(max(i32(o * p.s) - i32(p.pad), 0)), len); }
fn hi(o: u32, len: u32) -> u32 { return max(min(u32(max(i32(o * p.s + p.k) - i32(p.pad), 0)), len), lo(o, len)); }

// Plane-relative index of the window's first maximum in `src`, or -1 for an empty window.
fn argmax_src(base: u32, oy: u32, ox: u32) -> i32 {
    var best = -1;
    var bv = 0.0;
    for (var y = lo(oy, p.h); y < hi(oy, p.h); y++) {
        for (var x = lo(ox, p.w); x < hi(ox, p.w); x++) {
            let v = src[base + y * p.w + x];
            if (best < 0 || v > bv) { best = i32(y * p.w + x); bv = v; }
        }
    }
    return best;
}

fn argmax_aux(base: u32, oy: u32, ox: u32) -> i32 {
    var best = -1;
    var bv = 0.0;
    for (var y = lo(oy, p.h); y < hi(oy, p.h); y++) {
        for (var x = lo(ox, p.w); x < hi(ox, p.w); x++) {
            let v = aux[base + y * p.w + x];
            if (best < 0 || v > bv) { best = i32(y * p.w + x); bv = v; }
        }
    }
    return best;
}

// src = x, dst = y. (aux is bound to a dummy buffer.)
@compute @workgroup_size(64)
fn max_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 64u;
    if (i >= p.c * p.oh * p.ow) { return; }
    let ox = i % p.ow;
    let oy = (i / p.ow) % p.oh;
    let ch = i / (p.ow * p.oh);
    let base = ch * p.h * p.w;
    let a = argmax_src(base, oy, ox);
    if (a < 0) { dst[i] = bitcast<f32>(p.neg_inf); } else { dst[i] = src[base + u32(a)]; }
}

// src = grad of the output, aux = x, dst = grad of x.
@compute @workgroup_size(64)
fn max_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 64u;
    if (i >= p.c * p.h * p.w) { return; }
    let x = i % p.w;
    let y = (i / p.w) % p.h;
    let ch = i / (p.w * p.h);
    let base = ch * p.h * p.w;
    let me = i32(y * p.w + x);
    // Windows [o*s - pad, o*s + k - pad) containing y: o*s <= y + pad < o*s + k.
    var oy0 = 0u;
    if (y + p.pad >= p.k) { oy0 = (y + p.pad - p.k) / p.s + 1u; }
    let oy1 = min((y + p.pad) / p.s + 1u, p.oh);
    var ox0 = 0u;
    if (x + p.pad >= p.k) { ox0 = (x + p.pad - p.k) / p.s + 1u; }
    let ox1 = min((x + p.pad) / p.s + 1u, p.ow);
    var s = 0.0;
    for (var oy = oy0; oy < oy1; oy++) {
        for (var ox = ox0; ox < ox1; ox++) {
            if (argmax_aux(base, oy, ox) == me) { s += src[(ch * p.oh + oy) * p.ow + ox]; }
        }
    }
    if (p.acc != 0u) { dst[i] += s; } else { dst[i] = s; }
}

// PyTorch's adaptive bin: floor(o*len/out) .. ceil((o+1)*len/out).
fn bin_lo(o: u32, len: u32, out: u32) -> u32 { return (o * len) / out; }
fn bin_hi(o: u32, len: u32, out: u32) -> u32 { return ((o + 1u) * len + out - 1u) / out; }

@compute @workgroup_size(64)
fn avg_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 64u;
    if (i >= p.c * p.oh * p.ow) { return; }
    let ox = i % p.ow;
    let oy = (i / p.ow) % p.oh;
    let ch = i / (p.ow * p.oh);
    let base = ch * p.h * p.w;
    let y0 = bin_lo(oy, p.h, p.oh);
    let y1 = bin_hi(oy, p.h, p.oh);
    let x0 = bin_lo(ox, p.w, p.ow);
    let x1 = bin_hi(ox, p.w, p.ow);
    var s = 0.0;
    for (var y = y0; y < y1; y++) {
        var r = 0.0;
        for (var x = x0; x < x1; x++) { r += src[base + y * p.w + x]; }
        s += r;
    }
    dst[i] = s / f32((y1 - y0) * (x1 - x0));
}

// src = grad of the output, dst = grad of the input.
@compute @workgroup_size(64)
fn avg_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 64u;
    if (i >= p.c * p.h * p.w) { return; }
    let x = i % p.w;
    let y = (i / p.w) % p.h;
    let ch = i / (p.w * p.h);
    var s = 0.0;
    for (var oy = 0u; oy < p.oh; oy++) {
        let y0 = bin_lo(oy, p.h, p.oh);
        let y1 = bin_hi(oy, p.h, p.oh);
        if (y < y0 || y >= y1) { continue; }
        for (var ox = 0u; ox < p.ow; ox++) {
            let x0 = bin_lo(ox, p.w, p.ow);
            let x1 = bin_hi(ox, p.w, p.ow);
            if (x < x0 || x >= x1) { continue; }
            s += src[(ch * p.oh + oy) * p.ow + ox] / f32((y1 - y0) * (x1 - x0));
        }
    }
    if (p.acc != 0u) { dst[i] += s; } else { dst[i] = s; }
}
