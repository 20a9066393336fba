// The input gradient of depthwise convolutions (one filter per channel), four input rows per
// invocation: a column of 4 pixels reads each output-gradient row it needs once per tap column and
// feeds it to every pixel it reaches, so a 3x3 stride-1 conv loads 18 values for 36 multiply-adds
// instead of 36. Neighbouring invocations take neighbouring columns (coalesced / vector loads); a
// workgroup is one channel, so the weights are uniform loads. (The forward runs on conv.wgsl's
// `forward1x4`: on lavapipe the same row reuse there, with its per-row tap test, measured slower.)
// PyTorch layout: wt = (c, kh, kw). The executor unrolls the `//@j` lines over the 4 rows (see
// conv_gemm.wgsl).

// Params p, src and dst: conv_params.wgsl, prepended by the executor.
@group(0) @binding(2) var<storage, read> wt: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;

fn pixel(lid: vec3<u32>, wg: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return lid.x + 64u * (wg.x + wg.z * nwg.x);
}

// src = grad of y, dst = grad of x (added to by `backward_acc`). As in conv_gemm.wgsl's backward, a
// workgroup takes one channel and one residue class (y + pad_top) % sh = ry, (x + pad_left) % sw = rx
// (workgroup_id.y = channel * sh * sw + class), whose pixels are reached by the taps ky = ry + a * sh
// from output row Y - a, Y = (y + pad_top - ry) / sh; an invocation takes 4 consecutive rows of the class.
fn backward_into(lid: vec3<u32>, wg: vec3<u32>, nwg: vec3<u32>, add: bool) {
    let classes = p.sh * p.sw;
    let c = wg.y / classes;
    let cls = wg.y % classes;
    let ry = cls / p.sw;
    let rx = cls % p.sw;
    let y0 = (ry + p.sh - p.pad_top % p.sh) % p.sh;
    let x0 = (rx + p.sw - p.pad_left % p.sw) % p.sw;
    let ny = select(0u, (p.h - y0 + p.sh - 1u) / p.sh, p.h > y0);
    let nx = select(0u, (p.w - x0 + p.sw - 1u) / p.sw, p.w > x0);
    let n = ((ny + 3u) / 4u) * nx;
    // No early return where the class is empty (see conv_gemm.wgsl): every store is skipped then.
    let nxd = max(nx, 1u);
    let i = pixel(lid, wg, nwg);
    let ic = min(i, max(n, 1u) - 1u);
    let s = (ic / nxd) * 4u; // first class row of this invocation
    let x = x0 + (ic % nxd) * p.sw;
    let xx = i32((x + p.pad_left - rx) / p.sw);
    let yy = i32((y0 + s * p.sh + p.pad_top - ry) / p.sh);
    // Taps of this class per axis.
    let na = select(0u, (p.kh - ry + p.sh - 1u) / p.sh, p.kh > ry);
    let base = c * p.oh * p.ow;
    let wb = c * p.kh * p.kw;
    //@j var acc{j} = 0.0;
    let amax = max(i32(na), 1) - 1;
    for (var kx = rx; kx < p.kw; kx += p.sw) {
        let ox = xx - i32((kx - rx) / p.sw);
        let col_ok = ox >= 0 && ox < i32(p.ow);
        // Output rows yy - (na - 1) + u feed class row r through tap a = r + na - 1 - u (when below
        // na: a weight of zero otherwise, no branch).
        for (var u = 0u; u < na + 3u; u++) {
            let oy = yy - i32(na) + 1 + i32(u);
            let ok = col_ok && oy >= 0 && oy < i32(p.oh);
            let g = select(0.0, src[base + select(0u, u32(oy) * p.ow + u32(ox), ok)], ok);
            //@j let a{j} = i32({j}u + na) - 1 - i32(u);
            //@j let w{j} = select(0.0, wt[wb + (ry + u32(clamp(a{j}, 0, amax)) * p.sh) * p.kw + kx], a{j} >= 0 && a{j} < i32(na));
            //@j acc{j} = fma(g, w{j}, acc{j});
        }
    }
    let plane = p.h * p.w;
    //@j if (i < n && s + {j}u < ny) { put(c * plane + (y0 + (s + {j}u) * p.sh) * p.w + x, acc{j}, add); }
}

fn put(d: u32, v: f32, add: bool) {
    if (add) { dst[d] += v; } else { dst[d] = v; }
}

// Writing dst, and adding to it (see conv_gemm.wgsl's entry points).
@compute @workgroup_size(64)
fn backward(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    backward_into(lid, wg, nwg, false);
}

@compute @workgroup_size(64)
fn backward_acc(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    backward_into(lid, wg, nwg, true);
}
