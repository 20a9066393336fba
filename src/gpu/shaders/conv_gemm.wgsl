// Ungrouped convolutions as implicit GEMM: out[co, pixel] = sum over k = (ci, ky, kx) of
// W[k, co] * patch[k, pixel], and the input gradient dx[ci, pixel] = sum over k = (co, ky, kx) of
// W'[k, ci] * gy-patch[k, pixel].
//
// A workgroup is WG * PX pixels x one block of 4 * M4 channels (workgroup_id.y); each invocation
// computes PX pixels (WG apart) for all 4 * M4 channels of the block, held in M4 * PX vec4 registers.
// Per k it loads PX patch values (neighbouring invocations read neighbouring pixels: coalesced on a GPU, one vector load
// on SIMD software adapters) and M4 vec4 weights whose address is the same for the whole workgroup
// (a broadcast: one scalar load on some software adapters, the uniform/constant path on GPUs). The weights
// are stored for this (see `conv_block` in executor.rs): [k][channel], channels padded to 16, so a
// block's weights for one k are M4 adjacent vec4s. Bounds and padding are decided once per tap
// (ky, kx), outside the loop over channels. M4, PX and WG (the workgroup size: 16 for small planes)
// are prepended by the executor, which also unrolls the lines marked `//@j` (once per pixel j < PX),
// `//@m` (per channel vec4 m < M4) and `//@jm` (per pair), replacing {j} and {m}: accumulators in
// named registers, not in an array that software adapters (SwiftShader) keep in memory.

// Params p, src and dst: conv_params.wgsl, prepended by the executor.
@group(0) @binding(2) var<storage, read> wt: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> bias: array<vec4<f32>>;

// Stores channels ch .. ch + 3 (those below `count`) of pixel `px` of a [count][plane] map.
fn put(px: u32, ch: u32, count: u32, plane: u32, v: vec4<f32>, add: bool) {
    for (var i = 0u; i < 4u; i++) {
        if (ch + i < count) {
            let d = (ch + i) * plane + px;
            if (add) { dst[d] += v[i]; } else { dst[d] = v[i]; }
        }
    }
}

// src = x, dst = y; wt = W as [(ci * kh + ky) * kw + kx][cout padded to 16], bias padded to 16 (not
// read when no_bias != 0); dst added to by `forward_acc`. The executor also runs stride-1 input
// gradients here, as the convolution of gy with the flipped, transposed filters.
// Invocation lid takes pixels base + lid + WG * j, j < PX, of the workgroup's WG * PX (pixel groups
// along x, z carrying what exceeds the per-dimension limit).
fn forward_into(lid: vec3<u32>, wg: vec3<u32>, nwg: vec3<u32>, add: bool) {
    let plane = p.oh * p.ow;
    let base = (wg.x + wg.z * nwg.x) * WG * PX + lid.x;
    let hw = p.h * p.w;
    let kk = p.kh * p.kw;
    let row = ((p.cout + 15u) / 16u) * 4u; // vec4s per k
    let cb = wg.y * M4;
    // Lanes past the plane compute its last pixel and store nothing (no early return: the loops
    // below stay uniform).
    //@j let pc{j} = min(base + {j}u * WG, plane - 1u);
    //@j let iy{j} = i32((pc{j} / p.ow) * p.sh) - i32(p.pad_top);
    //@j let ix{j} = i32((pc{j} % p.ow) * p.sw) - i32(p.pad_left);
    //@jm var a{j}_{m} = vec4<f32>(0.0);
    for (var ky = 0u; ky < p.kh; ky++) {
        for (var kx = 0u; kx < p.kw; kx++) {
            //@j let y{j} = iy{j} + i32(ky);
            //@j let x{j} = ix{j} + i32(kx);
            //@j let ok{j} = y{j} >= 0 && y{j} < i32(p.h) && x{j} >= 0 && x{j} < i32(p.w);
            //@j let off{j} = select(0u, u32(y{j}) * p.w + u32(x{j}), ok{j});
            var wi = (ky * p.kw + kx) * row + cb;
            var xi = 0u;
            for (var c = 0u; c < p.cin; c++) {
                //@m let f{m} = wt[wi + {m}u];
                //@j let v{j} = vec4<f32>(select(0.0, src[xi + off{j}], ok{j}));
                //@jm a{j}_{m} = fma(v{j}, f{m}, a{j}_{m});
                wi += kk * row;
                xi += hw;
            }
        }
    }
    //@m let b{m} = select(bias[cb + {m}u], vec4<f32>(0.0), p.no_bias != 0u);
    //@jm if (base + {j}u * WG < plane) { put(base + {j}u * WG, (cb + {m}u) * 4u, p.cout, plane, activate4(a{j}_{m} + b{m}), add); }
}

// src = grad of y, dst = grad of x (added to by `backward_acc`); wt = W as [(co * kh + ky) * kw + kx][cin
// padded to 16]. Input pixel (y, x) gets gy[co, oy, ox] * W[co, ci, ky, kx] where y + pad_top = oy * sh + ky,
// and likewise for x. A workgroup takes pixels of one residue class (y + pad_top) % sh = ry,
// (x + pad_left) % sw = rx (workgroup_id.y = class * blocks + channel block), so the taps that can reach
// them, ky = ry, ry + sh, ..., are the same for every invocation and none is skipped per lane.
// (Stride-1 convs run on `forward` instead, which measured faster.)
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
    //@j let ic{j} = min(base + {j}u * WG, last);
    //@j let yy{j} = i32((y0 + (ic{j} / nxd) * p.sh + p.pad_top - ry) / p.sh);
    //@j let xx{j} = i32((x0 + (ic{j} % nxd) * p.sw + p.pad_left - rx) / p.sw);
    let oplane = p.oh * p.ow;
    let kk = p.kh * p.kw;
    let row = ((p.cin + 15u) / 16u) * 4u;
    //@jm var a{j}_{m} = vec4<f32>(0.0);
    // Taps of this class per axis.
    let na = select(0u, (p.kh - ry + p.sh - 1u) / p.sh, p.kh > ry);
    let nb = select(0u, (p.kw - rx + p.sw - 1u) / p.sw, p.kw > rx);
    for (var a = 0u; a < na; a++) {
        let ky = ry + a * p.sh;
        for (var b = 0u; b < nb; b++) {
            let kx = rx + b * p.sw;
            //@j let oy{j} = yy{j} - i32(a);
            //@j let ox{j} = xx{j} - i32(b);
            //@j let ok{j} = oy{j} >= 0 && oy{j} < i32(p.oh) && ox{j} >= 0 && ox{j} < i32(p.ow);
            //@j let off{j} = select(0u, u32(oy{j}) * p.ow + u32(ox{j}), ok{j});
            var wi = (ky * p.kw + kx) * row + cb;
            var gi = 0u;
            for (var co = 0u; co < p.cout; co++) {
                //@m let f{m} = wt[wi + {m}u];
                //@j let g{j} = vec4<f32>(select(0.0, src[gi + off{j}], ok{j}));
                //@jm a{j}_{m} = fma(g{j}, f{m}, a{j}_{m});
                wi += kk * row;
                gi += oplane;
            }
        }
    }
    let plane = p.h * p.w;
    //@j let o{j} = (y0 + (min(base + {j}u * WG, last) / nxd) * p.sh) * p.w + x0 + (min(base + {j}u * WG, last) % nxd) * p.sw;
    //@jm if (base + {j}u * WG < n) { put(o{j}, (cb + {m}u) * 4u, p.cin, plane, a{j}_{m}, add); }
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
