// Ungrouped convolutions as implicit GEMM: out[co, pixel] = sum over k = (ci, ky, kx) of
// W[k, co] * patch[k, pixel], and the input gradient dx[ci, pixel] = sum over k = (co, ky, kx) of
// W'[k, ci] * gy-patch[k, pixel].
//
// A workgroup is WG * PX pixels x one block of 4 * M4 channels (workgroup_id.y); each invocation
// computes PX pixels (WG apart) for all 4 * M4 channels of the block, held in M4 * PX vec4 registers. Per k it loads one
// patch value (neighbouring invocations read neighbouring pixels: coalesced on a GPU, one vector load
// on SIMD software adapters) and M4 vec4 weights whose address is the same for the whole workgroup
// (a broadcast: one scalar load on some software adapters, the uniform/constant path on GPUs). The weights
// are stored for this (see `GemmWeights` in executor.rs): [k][channel], channels padded to 8, so a
// block's weights for one k are M4 adjacent vec4s. Bounds and padding are decided once per tap
// (ky, kx), outside the loop over channels. M4, PX and WG (the workgroup size: 16 for small planes)
// are prepended by the executor.

struct Params {
    cin: u32, h: u32, w: u32, cout: u32,
    oh: u32, ow: u32, kh: u32, kw: u32,
    sh: u32, sw: u32, pad_top: u32, pad_left: u32,
    groups: u32, acc: u32, no_bias: u32, _p1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read> wt: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> bias: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> dst: array<f32>;

// src = x, dst = y; wt = W as [(ci * kh + ky) * kw + kx][cout padded to 8], bias padded to 8 (not
// read when no_bias != 0); dst added to by `forward_acc`. The executor also runs stride-1 input
// gradients here, as the convolution of gy with the flipped, transposed filters.
// Invocation lid takes pixels base + lid + WG * j, j < PX, of the workgroup's WG * PX (pixel groups
// along x, z carrying what exceeds the per-dimension limit).
fn forward_into(lid: vec3<u32>, wg: vec3<u32>, nwg: vec3<u32>, add: bool) {
    let plane = p.oh * p.ow;
    let base = (wg.x + wg.z * nwg.x) * WG * PX + lid.x;
    let hw = p.h * p.w;
    let kk = p.kh * p.kw;
    let row = ((p.cout + 7u) / 8u) * 2u; // vec4s per k
    let cb = wg.y * M4;
    // Lanes past the plane compute its last pixel and store nothing (no early return: the loops
    // below stay uniform).
    var iy0: array<i32, PX>;
    var ix0: array<i32, PX>;
    for (var j = 0u; j < PX; j++) {
        let pc = min(base + WG * j, plane - 1u);
        iy0[j] = i32((pc / p.ow) * p.sh) - i32(p.pad_top);
        ix0[j] = i32((pc % p.ow) * p.sw) - i32(p.pad_left);
    }
    var acc: array<vec4<f32>, M4 * PX>;
    for (var ky = 0u; ky < p.kh; ky++) {
        for (var kx = 0u; kx < p.kw; kx++) {
            var off: array<u32, PX>;
            var ok: array<bool, PX>;
            for (var j = 0u; j < PX; j++) {
                let iy = iy0[j] + i32(ky);
                let ix = ix0[j] + i32(kx);
                ok[j] = iy >= 0 && iy < i32(p.h) && ix >= 0 && ix < i32(p.w);
                off[j] = select(0u, u32(iy) * p.w + u32(ix), ok[j]);
            }
            var wi = (ky * p.kw + kx) * row + cb;
            var xi = 0u;
            for (var c = 0u; c < p.cin; c++) {
                var f: array<vec4<f32>, M4>;
                for (var m = 0u; m < M4; m++) { f[m] = wt[wi + m]; }
                for (var j = 0u; j < PX; j++) {
                    let v = vec4<f32>(select(0.0, src[xi + off[j]], ok[j]));
                    for (var m = 0u; m < M4; m++) { acc[j * M4 + m] = fma(v, f[m], acc[j * M4 + m]); }
                }
                wi += kk * row;
                xi += hw;
            }
        }
    }
    for (var j = 0u; j < PX; j++) {
        let px = base + WG * j;
        if (px < plane) {
            for (var m = 0u; m < M4; m++) {
                let v = acc[j * M4 + m] + select(bias[cb + m], vec4<f32>(0.0), p.no_bias != 0u);
                let co = (cb + m) * 4u;
                for (var i = 0u; i < 4u; i++) {
                    if (co + i < p.cout) {
                        let d = (co + i) * plane + px;
                        if (add) { dst[d] += v[i]; } else { dst[d] = v[i]; }
                    }
                }
            }
        }
    }
}

// src = grad of y, dst = grad of x (added to by `backward_acc`); wt = W as [(co * kh + ky) * kw + kx][cin
// padded to 8]. Input pixel (y, x) gets gy[co, oy, ox] * W[co, ci, ky, kx] where y + pad_top = oy * sh + ky,
// and likewise for x. A workgroup takes pixels of one residue class (y + pad_top) % sh = ry,
// (x + pad_left) % sw = rx (workgroup_id.y = class * blocks + channel block), so the taps that can reach
// them, ky = ry, ry + sh, ..., are the same for every invocation and none is skipped per lane.
fn backward_into(lid: vec3<u32>, wg: vec3<u32>, nwg: vec3<u32>, add: bool) {
    let blocks = (p.cin + 4u * M4 - 1u) / (4u * M4);
    let cls = wg.y / blocks;
    let cb = (wg.y % blocks) * M4;
    let ry = cls / p.sw;
    let rx = cls % p.sw;
    // The class's first row / column and its size.
    let y0 = (ry + p.sh - p.pad_top % p.sh) % p.sh;
    let x0 = (rx + p.sw - p.pad_left % p.sw) % p.sw;
    let ny = select(0u, (p.h - y0 + p.sh - 1u) / p.sh, p.h > y0);
    let nx = select(0u, (p.w - x0 + p.sw - 1u) / p.sw, p.w > x0);
    let n = ny * nx;
    let base = (wg.x + wg.z * nwg.x) * WG * PX + lid.x;
    // No early return where the class is empty (n = 0; every store below is skipped then): on
    // software adapters code after a return runs masked, every load checked per lane.
    let last = max(n, 1u) - 1u;
    let nxd = max(nx, 1u);
    // Output row / column reached through tap ky = ry + a * sh is yy - a (exact division).
    var yy: array<i32, PX>;
    var xx: array<i32, PX>;
    for (var j = 0u; j < PX; j++) {
        let ic = min(base + WG * j, last);
        yy[j] = i32((y0 + (ic / nxd) * p.sh + p.pad_top - ry) / p.sh);
        xx[j] = i32((x0 + (ic % nxd) * p.sw + p.pad_left - rx) / p.sw);
    }
    let oplane = p.oh * p.ow;
    let kk = p.kh * p.kw;
    let row = ((p.cin + 7u) / 8u) * 2u;
    var acc: array<vec4<f32>, M4 * PX>;
    // Taps of this class per axis.
    let na = select(0u, (p.kh - ry + p.sh - 1u) / p.sh, p.kh > ry);
    let nb = select(0u, (p.kw - rx + p.sw - 1u) / p.sw, p.kw > rx);
    for (var a = 0u; a < na; a++) {
        let ky = ry + a * p.sh;
        for (var b = 0u; b < nb; b++) {
            let kx = rx + b * p.sw;
            var off: array<u32, PX>;
            var ok: array<bool, PX>;
            for (var j = 0u; j < PX; j++) {
                let oy = yy[j] - i32(a);
                let ox = xx[j] - i32(b);
                ok[j] = oy >= 0 && oy < i32(p.oh) && ox >= 0 && ox < i32(p.ow);
                off[j] = select(0u, u32(oy) * p.ow + u32(ox), ok[j]);
            }
            var wi = (ky * p.kw + kx) * row + cb;
            var gi = 0u;
            for (var co = 0u; co < p.cout; co++) {
                var f: array<vec4<f32>, M4>;
                for (var m = 0u; m < M4; m++) { f[m] = wt[wi + m]; }
                for (var j = 0u; j < PX; j++) {
                    let g = vec4<f32>(select(0.0, src[gi + off[j]], ok[j]));
                    for (var m = 0u; m < M4; m++) { acc[j * M4 + m] = fma(g, f[m], acc[j * M4 + m]); }
                }
                wi += kk * row;
                gi += oplane;
            }
        }
    }
    let plane = p.h * p.w;
    for (var j = 0u; j < PX; j++) {
        let i = base + WG * j;
        if (i < n) {
            let o = (y0 + (i / nxd) * p.sh) * p.w + x0 + (i % nxd) * p.sw;
            for (var m = 0u; m < M4; m++) {
                let ci = (cb + m) * 4u;
                for (var k = 0u; k < 4u; k++) {
                    if (ci + k < p.cin) {
                        let d = (ci + k) * plane + o;
                        if (add) { dst[d] += acc[j * M4 + m][k]; } else { dst[d] = acc[j * M4 + m][k]; }
                    }
                }
            }
        }
    }
}

// Each kernel comes twice: writing dst, and adding to it (gradient fan-out). A kernel that never
// reads dst ran about twice as fast on lavapipe, so the read stays out of the writing variant.
@compute @workgroup_size(WG)
fn forward(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    forward_into(lid, wg, nwg, false);
}

@compute @workgroup_size(WG)
fn forward_acc(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    forward_into(lid, wg, nwg, true);
}

@compute @workgroup_size(WG)
fn backward(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    backward_into(lid, wg, nwg, false);
}

@compute @workgroup_size(WG)
fn backward_acc(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    backward_into(lid, wg, nwg, true);
}
