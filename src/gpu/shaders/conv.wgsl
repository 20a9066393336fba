// Direct 2-D convolution (cross-correlation, PyTorch layout) with folded bias, any groups (depthwise
// included) and asymmetric padding (TF SAME puts the odd pixel bottom/right), and its input gradient
// as a gather (one invocation per input element: no atomics).

// Params p, src and dst: conv_params.wgsl, prepended by the executor.
@group(0) @binding(2) var<storage, read> wt: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;

// One output channel x four consecutive outputs of a row (co, oy, ox .. ox + 3) per invocation: each
// weight is loaded once for four pixels. Any groups (depthwise included); the 4 x 4 kernel below
// takes the convs whose filters come in fours.
@compute @workgroup_size(64)
fn forward1x4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 64u;
    let plane = p.oh * p.ow;
    let qw = (p.ow + 3u) / 4u;
    if (i >= p.cout * p.oh * qw) { return; }
    let ox = (i % qw) * 4u;
    let oy = (i / qw) % p.oh;
    let co = i / (qw * p.oh);
    let cpg = p.cin / p.groups;
    let opg = p.cout / p.groups;
    let ci0 = (co / opg) * cpg;
    let iy0 = i32(oy * p.sh) - i32(p.pad_top);
    let ky0 = u32(max(-iy0, 0));
    let ky1 = u32(clamp(i32(p.h) - iy0, 0, i32(p.kh)));
    let ix0 = i32(ox * p.sw) - i32(p.pad_left);
    let sw = i32(p.sw);
    let wmax = i32(p.w) - 1;
    var s = vec4<f32>(0.0);
    for (var c = 0u; c < cpg; c++) {
        let xb = (ci0 + c) * p.h * p.w;
        let wb = (co * cpg + c) * p.kh * p.kw;
        for (var ky = ky0; ky < ky1; ky++) {
            let xr = xb + u32(iy0 + i32(ky)) * p.w;
            let wr = wb + ky * p.kw;
            for (var kx = 0u; kx < p.kw; kx++) {
                // Input columns of the four pixels at this tap; padding reads as zero.
                let x = vec4<i32>(ix0 + i32(kx)) + vec4<i32>(0, sw, 2 * sw, 3 * sw);
                let inside = (x >= vec4<i32>(0)) & (x <= vec4<i32>(wmax));
                let xc = vec4<u32>(clamp(x, vec4<i32>(0), vec4<i32>(wmax)));
                let v = vec4<f32>(src[xr + xc.x], src[xr + xc.y], src[xr + xc.z], src[xr + xc.w]);
                s += select(vec4<f32>(0.0), v, inside) * wt[wr + kx];
            }
        }
    }
    s = activate4(s + vec4<f32>(bias[co]));
    let o = co * plane + oy * p.ow + ox;
    for (var j = 0u; j < 4u; j++) {
        if (ox + j < p.ow) { dst[o + j] = s[j]; }
    }
}

// dx[ci, y, x .. x + 3] = sum over the outputs (co, oy, ox) whose windows read those pixels of g * w,
// one input channel x four consecutive pixels of a row per invocation (a gather: no atomics).
// src = grad of the output, dst = grad of the input (added to when acc != 0).
@compute @workgroup_size(64)
fn backward1x4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 64u;
    let plane = p.h * p.w;
    let qw = (p.w + 3u) / 4u;
    if (i >= p.cin * p.h * qw) { return; }
    let x = (i % qw) * 4u;
    let y = (i / qw) % p.h;
    let ci = i / (qw * p.h);
    let cpg = p.cin / p.groups;
    let opg = p.cout / p.groups;
    let gi = ci / cpg;
    let cl = ci % cpg;
    let ty0 = i32(y + p.pad_top);
    let owmax = i32(p.ow) - 1;
    var s = vec4<f32>(0.0);
    for (var ky = 0u; ky < p.kh; ky++) {
        let ty = ty0 - i32(ky);
        if (ty < 0 || (u32(ty) % p.sh) != 0u) { continue; }
        let oy = u32(ty) / p.sh;
        if (oy >= p.oh) { continue; }
        for (var kx = 0u; kx < p.kw; kx++) {
            // Pixel j reads output column (x + j + pad_left - kx) / sw where that divides exactly.
            let t = vec4<i32>(i32(x + p.pad_left) - i32(kx)) + vec4<i32>(0, 1, 2, 3);
            let sw = i32(p.sw);
            let o = t / vec4<i32>(sw);
            let ok = (t >= vec4<i32>(0)) & ((t % vec4<i32>(sw)) == vec4<i32>(0)) & (o <= vec4<i32>(owmax));
            if (!any(ok)) { continue; }
            let oc = vec4<u32>(clamp(o, vec4<i32>(0), vec4<i32>(owmax)));
            for (var co = gi * opg; co < (gi + 1u) * opg; co++) {
                let row = (co * p.oh + oy) * p.ow;
                let g = vec4<f32>(src[row + oc.x], src[row + oc.y], src[row + oc.z], src[row + oc.w]);
                s += select(vec4<f32>(0.0), g, ok) * wt[((co * cpg + cl) * p.kh + ky) * p.kw + kx];
            }
        }
    }
    let o = ci * plane + y * p.w + x;
    for (var j = 0u; j < 4u; j++) {
        if (x + j < p.w) {
            if (p.acc != 0u) { dst[o + j] += s[j]; } else { dst[o + j] = s[j]; }
        }
    }
}

// As `forward1x4`, for a block of four output channels (co .. co + 3, same group) x four consecutive
// outputs of a row (ox .. ox + 3): each weight is loaded once for four pixels and each input value
// once for four filters, a quarter of the loads per multiply-add of 4 channels x 1 pixel (lavapipe:
// forward passes 1.7-1.8x faster). Used when cout / groups is a
// multiple of 4 (not for depthwise). Outputs past the row's end are computed from zeros, not stored.
@compute @workgroup_size(64)
fn forward4x4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 64u;
    let plane = p.oh * p.ow;
    let qw = (p.ow + 3u) / 4u;
    if (i >= (p.cout / 4u) * p.oh * qw) { return; }
    let ox = (i % qw) * 4u;
    let oy = (i / qw) % p.oh;
    let co = (i / (qw * p.oh)) * 4u;
    let cpg = p.cin / p.groups;
    let opg = p.cout / p.groups;
    let ci0 = (co / opg) * cpg;
    let iy0 = i32(oy * p.sh) - i32(p.pad_top);
    let ky0 = u32(max(-iy0, 0));
    let ky1 = u32(clamp(i32(p.h) - iy0, 0, i32(p.kh)));
    // Input column of pixel j at tap kx: ix0 + j * sw + kx.
    let ix0 = i32(ox * p.sw) - i32(p.pad_left);
    let sw = i32(p.sw);
    let wmax = i32(p.w) - 1;
    let fstride = cpg * p.kh * p.kw;
    var s0 = vec4<f32>(0.0);
    var s1 = vec4<f32>(0.0);
    var s2 = vec4<f32>(0.0);
    var s3 = vec4<f32>(0.0);
    for (var c = 0u; c < cpg; c++) {
        let xb = (ci0 + c) * p.h * p.w;
        let wb = (co * cpg + c) * p.kh * p.kw;
        for (var ky = ky0; ky < ky1; ky++) {
            let xr = xb + u32(iy0 + i32(ky)) * p.w;
            let wr = wb + ky * p.kw;
            for (var kx = 0u; kx < p.kw; kx++) {
                let wi = wr + kx;
                let f = vec4<f32>(wt[wi], wt[wi + fstride], wt[wi + 2u * fstride], wt[wi + 3u * fstride]);
                let x0 = ix0 + i32(kx);
                let x1 = x0 + sw;
                let x2 = x1 + sw;
                let x3 = x2 + sw;
                // Padding reads as zero: clamp the index, then select.
                s0 += select(0.0, src[xr + u32(clamp(x0, 0, wmax))], x0 >= 0 && x0 <= wmax) * f;
                s1 += select(0.0, src[xr + u32(clamp(x1, 0, wmax))], x1 >= 0 && x1 <= wmax) * f;
                s2 += select(0.0, src[xr + u32(clamp(x2, 0, wmax))], x2 >= 0 && x2 <= wmax) * f;
                s3 += select(0.0, src[xr + u32(clamp(x3, 0, wmax))], x3 >= 0 && x3 <= wmax) * f;
            }
        }
    }
    let b = vec4<f32>(bias[co], bias[co + 1u], bias[co + 2u], bias[co + 3u]);
    let o = co * plane + oy * p.ow + ox;
    let px = array<vec4<f32>, 4>(activate4(s0 + b), activate4(s1 + b), activate4(s2 + b), activate4(s3 + b));
    for (var j = 0u; j < 4u; j++) {
        if (ox + j < p.ow) {
            let v = px[j];
            dst[o + j] = v.x;
            dst[o + j + plane] = v.y;
            dst[o + j + 2u * plane] = v.z;
            dst[o + j + 3u * plane] = v.w;
        }
    }
}

// As `backward1x4`, for a block of four input channels (ci .. ci + 3, same group) x four consecutive
// pixels of a row (x .. x + 3): each output gradient is loaded once for four weights, each weight
// once for four pixels. Used when cin / groups is a multiple of 4.
@compute @workgroup_size(64)
fn backward4x4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 64u;
    let plane = p.h * p.w;
    let qw = (p.w + 3u) / 4u;
    if (i >= (p.cin / 4u) * p.h * qw) { return; }
    let x = (i % qw) * 4u;
    let y = (i / qw) % p.h;
    let ci = (i / (qw * p.h)) * 4u;
    let cpg = p.cin / p.groups;
    let opg = p.cout / p.groups;
    let gi = ci / cpg;
    let cl = ci % cpg;
    let ty0 = i32(y + p.pad_top);
    let kk = p.kh * p.kw;
    let owmax = i32(p.ow) - 1;
    var s0 = vec4<f32>(0.0);
    var s1 = vec4<f32>(0.0);
    var s2 = vec4<f32>(0.0);
    var s3 = vec4<f32>(0.0);
    for (var ky = 0u; ky < p.kh; ky++) {
        let ty = ty0 - i32(ky);
        if (ty < 0 || (u32(ty) % p.sh) != 0u) { continue; }
        let oy = u32(ty) / p.sh;
        if (oy >= p.oh) { continue; }
        for (var kx = 0u; kx < p.kw; kx++) {
            // Pixel j reads output column (x + j + pad_left - kx) / sw where that divides exactly.
            let t = vec4<i32>(i32(x + p.pad_left) - i32(kx)) + vec4<i32>(0, 1, 2, 3);
            let sw = i32(p.sw);
            let o = t / vec4<i32>(sw);
            let ok = (t >= vec4<i32>(0)) & ((t % vec4<i32>(sw)) == vec4<i32>(0)) & (o <= vec4<i32>(owmax))
                & ((vec4<u32>(x) + vec4<u32>(0u, 1u, 2u, 3u)) < vec4<u32>(p.w));
            if (!any(ok)) { continue; }
            let oc = vec4<u32>(clamp(o, vec4<i32>(0), vec4<i32>(owmax)));
            for (var co = gi * opg; co < (gi + 1u) * opg; co++) {
                let row = (co * p.oh + oy) * p.ow;
                let wi = ((co * cpg + cl) * p.kh + ky) * p.kw + kx;
                let f = vec4<f32>(wt[wi], wt[wi + kk], wt[wi + 2u * kk], wt[wi + 3u * kk]);
                s0 += select(0.0, src[row + oc.x], ok.x) * f;
                s1 += select(0.0, src[row + oc.y], ok.y) * f;
                s2 += select(0.0, src[row + oc.z], ok.z) * f;
                s3 += select(0.0, src[row + oc.w], ok.w) * f;
            }
        }
    }
    let px = array<vec4<f32>, 4>(s0, s1, s2, s3);
    for (var j = 0u; j < 4u; j++) {
        if (x + j < p.w) {
            let v = px[j];
            let o = ci * plane + y * p.w + x + j;
            if (p.acc != 0u) {
                dst[o] += v.x;
                dst[o + plane] += v.y;
                dst[o + 2u * plane] += v.z;
                dst[o + 3u * plane] += v.w;
            } else {
                dst[o] = v.x;
                dst[o + plane] = v.y;
                dst[o + 2u * plane] = v.z;
                dst[o + 3u * plane] = v.w;
            }
        }
    }
}
