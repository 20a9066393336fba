//! The depthwise forward kernel, generated per filter size and stride: each invocation computes a
//! tile of `ROWS` x `COLS` outputs of one channel, loading each input value of the tile's reach once
//! and feeding it to every output and tap it meets, with the channel's weights held in registers.
//! A 3x3 stride-1 conv then loads 36 input values for 144 multiply-adds (the 1 x 4 direct kernel:
//! 36 for 36, plus 9 weights). The loops are unrolled here, not in WGSL: software adapters keep
//! private arrays in memory (SwiftShader), and which tap feeds which output is then decided at
//! generation time, with no per-lane test. Padding is decided once per input row and once per input
//! column of the tile. Other filter shapes run on conv.wgsl's direct kernel.

use std::fmt::Write;

/// Output rows and columns per invocation.
const ROWS: usize = 4;
const COLS: usize = 4;

/// The (square filter size, stride) pairs with a generated kernel: EfficientNet's and MobileNet's
/// 3x3 and 5x5 at strides 1 and 2, ConvNeXt's 7x7.
pub(super) const SHAPES: [(usize, usize); 5] = [(3, 1), (3, 2), (5, 1), (5, 2), (7, 1)];

/// The index into `SHAPES` of a conv's kernel, if it has one.
pub(super) fn shape_index(kh: usize, kw: usize, sh: usize, sw: usize) -> Option<usize> {
    (kh == kw && sh == sw).then(|| SHAPES.iter().position(|&s| s == (kh, sh))).flatten()
}

/// Output tiles of an oh x ow plane, per channel.
pub(super) fn tiles(oh: usize, ow: usize) -> usize {
    oh.div_ceil(ROWS) * ow.div_ceil(COLS)
}

/// The WGSL of the kernel for filter size `k` and stride `s` (conv_params.wgsl is prepended by the
/// executor): entry point `forward`, one invocation per (channel, tile), 64 per workgroup, workgroups
/// along x and what exceeds the per-dimension limit along y. Bias (none where `p.no_bias`), then the
/// activation `p.act`; added to `dst` where `p.acc`. The executor also runs stride-1 input gradients
/// on it, with the filters flipped.
pub(super) fn shader(k: usize, s: usize) -> String {
    let rin = (ROWS - 1) * s + k; // input rows a tile reaches
    let cin = (COLS - 1) * s + k; // input columns
    let mut w = String::new();
    let _ = writeln!(w, "@group(0) @binding(2) var<storage, read> wt: array<f32>;");
    let _ = writeln!(w, "@group(0) @binding(3) var<storage, read> bias: array<f32>;");
    let _ = writeln!(w, "@compute @workgroup_size(64)");
    let _ = writeln!(w, "fn forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {{");
    let _ = writeln!(w, "    let tw = (p.ow + {}u) / {COLS}u;", COLS - 1);
    let _ = writeln!(w, "    let tiles = ((p.oh + {}u) / {ROWS}u) * tw;", ROWS - 1);
    let _ = writeln!(w, "    let n = tiles * p.cout;");
    let _ = writeln!(w, "    let i0 = gid.x + gid.y * nwg.x * 64u;");
    // Lanes past the end compute the last tile and store nothing (no early return: on software
    // adapters code after a divergent return runs masked).
    let _ = writeln!(w, "    let i = min(i0, max(n, 1u) - 1u);");
    let _ = writeln!(w, "    let c = i / tiles;");
    let _ = writeln!(w, "    let t = i % tiles;");
    let _ = writeln!(w, "    let ox0 = (t % tw) * {COLS}u;");
    let _ = writeln!(w, "    let oy0 = (t / tw) * {ROWS}u;");
    let _ = writeln!(w, "    let iy0 = i32(oy0 * {s}u) - i32(p.pad_top);");
    let _ = writeln!(w, "    let ix0 = i32(ox0 * {s}u) - i32(p.pad_left);");
    let _ = writeln!(w, "    let xb = c * p.h * p.w;");
    let _ = writeln!(w, "    let wb = c * {}u;", k * k);
    for t in 0..k * k {
        let _ = writeln!(w, "    let w{t} = wt[wb + {t}u];");
    }
    for q in 0..cin {
        let _ = writeln!(w, "    let cx{q} = ix0 + {q};");
        let _ = writeln!(w, "    let okx{q} = cx{q} >= 0 && cx{q} < i32(p.w);");
        let _ = writeln!(w, "    let xo{q} = select(0u, u32(cx{q}), okx{q});");
    }
    for j in 0..ROWS {
        for i in 0..COLS {
            let _ = writeln!(w, "    var a{j}_{i} = 0.0;");
        }
    }
    for r in 0..rin {
        let _ = writeln!(w, "    let y{r} = iy0 + {r};");
        let _ = writeln!(w, "    let oky{r} = y{r} >= 0 && y{r} < i32(p.h);");
        let _ = writeln!(w, "    let rb{r} = xb + select(0u, u32(y{r}), oky{r}) * p.w;");
        for q in 0..cin {
            let _ = writeln!(w, "    let v{r}_{q} = select(0.0, src[rb{r} + xo{q}], oky{r} && okx{q});");
        }
        // Output row j reads input row r through tap ky = r - j * s.
        for j in 0..ROWS {
            let Some(ky) = r.checked_sub(j * s).filter(|&ky| ky < k) else { continue };
            for i in 0..COLS {
                for kx in 0..k {
                    let _ = writeln!(w, "    a{j}_{i} = fma(v{r}_{}, w{}, a{j}_{i});", i * s + kx, ky * k + kx);
                }
            }
        }
    }
    let _ = writeln!(w, "    let b = select(bias[c], 0.0, p.no_bias != 0u);");
    let _ = writeln!(w, "    let o = c * p.oh * p.ow + oy0 * p.ow + ox0;");
    for j in 0..ROWS {
        for i in 0..COLS {
            let _ = writeln!(w, "    if (i0 < n && oy0 + {j}u < p.oh && ox0 + {i}u < p.ow) {{ put(o + {j}u * p.ow + {i}u, activate(a{j}_{i} + b)); }}");
        }
    }
    let _ = writeln!(w, "}}");
    let _ = writeln!(w, "fn put(d: u32, v: f32) {{ if (p.acc != 0u) {{ dst[d] += v; }} else {{ dst[d] = v; }} }}");
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_output_gets_every_tap_once() {
        for (k, s) in SHAPES {
            let src = shader(k, s);
            let fmas = src.lines().filter(|l| l.contains("= fma(")).count();
            assert_eq!(fmas, ROWS * COLS * k * k, "{k}x{k} /{s}");
            // The last output of the tile reads the last input row and column through the last tap.
            let last = format!("a{}_{} = fma(v{}_{}, w{}, a{}_{});", ROWS - 1, COLS - 1, (ROWS - 1) * s + k - 1, (COLS - 1) * s + k - 1, k * k - 1, ROWS - 1, COLS - 1);
            assert!(src.contains(&last), "{k}x{k} /{s}: {last}");
        }
        assert_eq!(shape_index(5, 5, 2, 2), Some(3));
        assert_eq!(shape_index(3, 5, 1, 1), None);
        assert_eq!(shape_index(3, 3, 1, 2), None);
        assert_eq!(tiles(7, 7), 4);
    }
}
