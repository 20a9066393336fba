// Direct 2-D convolution (cross-correlation, PyTorch layout) with folded bias, any groups (depthwise
// included) and asymmetric padding (TF SAME puts the odd pixel bottom/right), and its input gradient
// as a gather (one invocation per input element: no atomics).

struct Params {
    cin: u32, h: u32, w: u32, cout: u32,
    oh: u32, ow: u32, kh: u32, kw: u32,
    sh: u32, sw: u32, pad_top: u32, pad_left: u32,
    groups: u32, acc: u32, _p0: u32, _p1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read> wt: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> dst: array<f32>;

// One invocation per output element (co, oy, ox).
@compute @workgroup_size(64)
fn forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 64u;
    if (i >= p.cout * p.oh * p.ow) { return; }
    let ox = i % p.ow;
    let oy = (i / p.ow) % p.oh;
    let co = i / (p.ow * p.oh);
    let cpg = p.cin / p.groups;
    let opg = p.cout / p.groups;
    let ci0 = (co / opg) * cpg;
    let iy0 = i32(oy * p.sh) - i32(p.pad_top);
    let ix0 = i32(ox * p.sw) - i32(p.pad_left);
    let ky0 = u32(max(-iy0, 0));
    let ky1 = u32(clamp(i32(p.h) - iy0, 0, i32(p.kh)));
    let kx0 = u32(max(-ix0, 0));
    let kx1 = u32(clamp(i32(p.w) - ix0, 0, i32(p.kw)));
    var s = 0.0;
    for (var c = 0u; c < cpg; c++) {
        let xb = (ci0 + c) * p.h * p.w;
        let wb = (co * cpg + c) * p.kh * p.kw;
        for (var ky = ky0; ky < ky1; ky++) {
            let xr = xb + u32(iy0 + i32(ky)) * p.w;
            let wr = wb + ky * p.kw;
            for (var kx = kx0; kx < kx1; kx++) {
                s += src[xr + u32(ix0 + i32(kx))] * wt[wr + kx];
            }
        }
    }
    dst[i] = s + bias[co];
}

// dx[ci, y, x] = sum over the outputs (co, oy, ox) whose window reads (y, x) of g * w.
// src = grad of the output, dst = grad of the input (added to when acc != 0).
@compute @workgroup_size(64)
fn backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 64u;
    if (i >= p.cin * p.h * p.w) { return; }
    let x = i % p.w;
    let y = (i / p.w) % p.h;
    let ci = i / (p.w * p.h);
    let cpg = p.cin / p.groups;
    let opg = p.cout / p.groups;
    let gi = ci / cpg;
    let cl = ci % cpg;
    let ty0 = i32(y + p.pad_top);
    let tx0 = i32(x + p.pad_left);
    var s = 0.0;
    for (var ky = 0u; ky < p.kh; ky++) {
        let ty = ty0 - i32(ky);
        if (ty < 0 || (u32(ty) % p.sh) != 0u) { continue; }
        let oy = u32(ty) / p.sh;
        if (oy >= p.oh) { continue; }
        for (var kx = 0u; kx < p.kw; kx++) {
            let tx = tx0 - i32(kx);
            if (tx < 0 || (u32(tx) % p.sw) != 0u) { continue; }
            let ox = u32(tx) / p.sw;
            if (ox >= p.ow) { continue; }
            for (var co = gi * opg; co < (gi + 1u) * opg; co++) {
                s += src[(co * p.oh + oy) * p.ow + ox] * wt[((co * cpg + cl) * p.kh + ky) * p.kw + kx];
            }
        }
    }
    if (p.acc != 0u) { dst[i] += s; } else { dst[i] = s; }
}

// As `forward`, four output channels (co .. co + 3, same group) per invocation: each input value is
// loaded once for four filters. Used when cout / groups is a multiple of 4 (not for depthwise).
@compute @workgroup_size(64)
fn forward4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 64u;
    let plane = p.oh * p.ow;
    if (i >= (p.cout / 4u) * plane) { return; }
    let pix = i % plane;
    let ox = pix % p.ow;
    let oy = pix / p.ow;
    let co = (i / plane) * 4u;
    let cpg = p.cin / p.groups;
    let opg = p.cout / p.groups;
    let ci0 = (co / opg) * cpg;
    let iy0 = i32(oy * p.sh) - i32(p.pad_top);
    let ix0 = i32(ox * p.sw) - i32(p.pad_left);
    let ky0 = u32(max(-iy0, 0));
    let ky1 = u32(clamp(i32(p.h) - iy0, 0, i32(p.kh)));
    let kx0 = u32(max(-ix0, 0));
    let kx1 = u32(clamp(i32(p.w) - ix0, 0, i32(p.kw)));
    let fstride = cpg * p.kh * p.kw;
    var s = vec4<f32>(0.0);
    for (var c = 0u; c < cpg; c++) {
        let xb = (ci0 + c) * p.h * p.w;
        let wb = (co * cpg + c) * p.kh * p.kw;
        for (var ky = ky0; ky < ky1; ky++) {
            let xr = xb + u32(iy0 + i32(ky)) * p.w;
            let wr = wb + ky * p.kw;
            for (var kx = kx0; kx < kx1; kx++) {
                let v = src[xr + u32(ix0 + i32(kx))];
                let wi = wr + kx;
                s += v * vec4<f32>(wt[wi], wt[wi + fstride], wt[wi + 2u * fstride], wt[wi + 3u * fstride]);
            }
        }
    }
    dst[co * plane + pix] = s.x + bias[co];
    dst[(co + 1u) * plane + pix] = s.y + bias[co + 1u];
    dst[(co + 2u) * plane + pix] = s.z + bias[co + 2u];
    dst[(co + 3u) * plane + pix] = s.w + bias[co + 3u];
}

// As `backward`, four input channels (ci .. ci + 3, same group) per invocation: each output gradient is
// loaded once for four weights. Used when cin / groups is a multiple of 4.
@compute @workgroup_size(64)
fn backward4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 64u;
    let plane = p.h * p.w;
    if (i >= (p.cin / 4u) * plane) { return; }
    let pix = i % plane;
    let x = pix % p.w;
    let y = pix / p.w;
    let ci = (i / plane) * 4u;
    let cpg = p.cin / p.groups;
    let opg = p.cout / p.groups;
    let gi = ci / cpg;
    let cl = ci % cpg;
    let ty0 = i32(y + p.pad_top);
    let tx0 = i32(x + p.pad_left);
    let kk = p.kh * p.kw;
    var s = vec4<f32>(0.0);
    for (var ky = 0u; ky < p.kh; ky++) {
        let ty = ty0 - i32(ky);
        if (ty < 0 || (u32(ty) % p.sh) != 0u) { continue; }
        let oy = u32(ty) / p.sh;
        if (oy >= p.oh) { continue; }
        for (var kx = 0u; kx < p.kw; kx++) {
            let tx = tx0 - i32(kx);
            if (tx < 0 || (u32(tx) % p.sw) != 0u) { continue; }
            let ox = u32(tx) / p.sw;
            if (ox >= p.ow) { continue; }
            for (var co = gi * opg; co < (gi + 1u) * opg; co++) {
                let g = src[(co * p.oh + oy) * p.ow + ox];
                let wi = ((co * cpg + cl) * p.kh + ky) * p.kw + kx;
                s += g * vec4<f32>(wt[wi], wt[wi + kk], wt[wi + 2u * kk], wt[wi + 3u * kk]);
            }
        }
    }
    let o = ci * plane + pix;
    if (p.acc != 0u) {
        dst[o] += s.x;
        dst[o + plane] += s.y;
        dst[o + 2u * plane] += s.z;
        dst[o + 3u * plane] += s.w;
    } else {
        dst[o] = s.x;
        dst[o + plane] = s.y;
        dst[o + 2u * plane] = s.z;
        dst[o + 3u * plane] = s.w;
    }
}
