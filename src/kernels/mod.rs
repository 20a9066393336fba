//! Pure-Rust f32 kernels: forward passes and *input* gradients of the layers a
//! CNN classifier needs for Grad-CAM (no weight gradients are ever computed).
//!
//! Every tensor is a contiguous row-major slice (NCHW for images). Callers
//! validate shapes; the kernels only `debug_assert` lengths. Big kernels split their
//! outputs across a thread pool where the build has one ([`parallel`]); the same code
//! serves native builds, the threaded wasm build and the single-threaded one.

pub mod activation;
pub mod attention;
pub mod conv;
pub mod depthwise;
pub mod elementwise;
pub mod linear;
pub mod parallel;
pub mod pool;
mod scatter;
mod sgemm;
pub mod tuning;
pub(crate) mod winograd;

#[doc(hidden)]
pub use tuning::Tuning;
pub use winograd::{KeepBudget, Kept};

pub use activation::{clamp_in_place, mask_grad_in_place, relu_forward, relu_input_grad, relu_mask, relu_output_grad, Clamp, ReluGate, ReluRule};
pub use conv::{conv2d_forward, conv2d_forward_act, conv2d_input_grad, conv2d_input_grad_gated, Conv2dGeom};
pub use linear::{linear_forward, linear_input_grad};
pub use pool::{
    adaptive_avg_pool2d_forward, adaptive_avg_pool2d_input_grad, avg_pool2d_forward, avg_pool2d_input_grad, max_pool2d_forward, max_pool2d_forward_argmax, max_pool2d_input_grad,
    max_pool2d_input_grad_argmax, PoolGeom,
};

use core::mem::MaybeUninit;
use core::ops::Range;

/// A new output of `len` floats, not yet written, for a kernel whose parts (threads) write their own
/// outputs. A zeroed `Vec` is written in full by the calling thread before the parts start (in wasm
/// the allocator clears reused memory with one `memory.fill`): on two threads a serial step of
/// every conv, which also leaves the output's lines in the wrong core's cache.
pub(crate) fn fresh(len: usize) -> Box<[MaybeUninit<f32>]> {
    #[allow(unused_mut)]
    let mut out = Box::new_uninit_slice(len);
    // The unit tests poison it: an element that no part wrote is then a NaN against the naive kernels.
    #[cfg(test)]
    out.fill(MaybeUninit::new(f32::NAN));
    out
}

/// `part` of a [`fresh`] output zeroed, as floats: a part's first write of its own outputs, on
/// its own thread.
pub(crate) fn zeroed(part: &mut [MaybeUninit<f32>]) -> &mut [f32] {
    part.fill(MaybeUninit::new(0.0));
    // SAFETY: every element was just written.
    unsafe { as_written(part) }
}

/// `part`, all of whose elements are written, as floats.
///
/// # Safety
/// Every element of `part` is initialised.
pub(crate) unsafe fn as_written(part: &mut [MaybeUninit<f32>]) -> &mut [f32] {
    // SAFETY: `MaybeUninit<f32>` has `f32`'s layout, and the caller's promise.
    unsafe { &mut *(part as *mut [MaybeUninit<f32>] as *mut [f32]) }
}

/// A [`fresh`] output as the tensor it has become.
///
/// # Safety
/// Every element was written (each part went through [`zeroed`] before writing its own).
pub(crate) unsafe fn written(out: Box<[MaybeUninit<f32>]>) -> Vec<f32> {
    // SAFETY: the caller's.
    unsafe { out.assume_init() }.into_vec()
}

/// `a * b + c` on 4 f32 lanes: the multiply-add of the wasm32 kernels (`sgemm`, `depthwise`).
/// With relaxed SIMD (the `pkg/relaxed` build) one `f32x4.relaxed_madd`, which engines may fuse (one
/// rounding instead of two, and one instruction where the CPU has FMA); otherwise a multiply then an
/// add, bit-identical on every engine.
#[cfg(target_arch = "wasm32")]
#[inline(always)]
pub(crate) fn madd(a: core::arch::wasm32::v128, b: core::arch::wasm32::v128, c: core::arch::wasm32::v128) -> core::arch::wasm32::v128 {
    #[cfg(target_feature = "relaxed-simd")]
    return core::arch::wasm32::f32x4_relaxed_madd(a, b, c);
    #[cfg(not(target_feature = "relaxed-simd"))]
    return core::arch::wasm32::f32x4_add(core::arch::wasm32::f32x4_mul(a, b), c);
}

/// A read-only matrix operand stored row-major with leading dimension `ld`.
/// When `trans` is set the stored matrix is the *transpose* of the operand, so
/// callers can multiply by `W^T` without materialising it.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    data: &'a [f32],
    ld: usize,
    trans: bool,
}

impl<'a> MatRef<'a> {
    /// A row-major operand whose rows start `ld` elements apart.
    pub fn new(data: &'a [f32], ld: usize) -> Self {
        MatRef { data, ld, trans: false }
    }

    /// The transpose of this operand (a stride swap, no copy).
    pub fn t(self) -> Self {
        MatRef { trans: !self.trans, ..self }
    }

    /// (row stride, column stride) of the operand as gemm wants them.
    fn strides(&self) -> (isize, isize) {
        let ld = self.ld as isize;
        if self.trans {
            (1, ld)
        } else {
            (ld, 1)
        }
    }

    /// Whether a `rows x cols` operand lies inside `data`: this is the check
    /// that makes the unsafe gemm call below sound.
    fn holds(&self, rows: usize, cols: usize) -> bool {
        let (sr, sc) = if self.trans { (cols, rows) } else { (rows, cols) };
        sr == 0 || sc == 0 || (self.ld >= sc && (sr - 1) * self.ld + sc <= self.data.len())
    }
}

/// Whether an `m x n` product goes through our own kernel (`sgemm`): in wasm32 (and in unit tests,
/// which check it natively), for the convs' products. Natively `gemm`'s AVX kernels are faster, and
/// `gemm` also keeps the skinny products (a linear layer on one image).
pub(crate) fn own_gemm(m: usize, n: usize, b_trans: bool) -> bool {
    cfg!(any(target_arch = "wasm32", test)) && sgemm::suits(m, n, b_trans) && !tuning::current().gemm_crate_on_wasm
}

/// `c[m, n] = (c if accumulate) + a[m, k] * b[k, n]`, with `c` row-major and
/// rows `ldc` apart (so `c` may be a column block of a wider matrix).
///
/// Panics in every build if an operand does not fit its slice; that keeps the
/// wrapper safe, and callers with valid shapes never trigger it.
#[allow(clippy::too_many_arguments)]
pub fn matmul(m: usize, n: usize, k: usize, a: MatRef, b: MatRef, c: &mut [f32], ldc: usize, accumulate: bool) {
    if m == 0 || n == 0 {
        return;
    }
    let out = MatRef::new(c, ldc);
    assert!(out.holds(m, n), "matmul: c too small");
    if k == 0 {
        // An empty sum: leave c alone or clear it, without asking gemm about k = 0.
        if !accumulate {
            c.chunks_mut(ldc).take(m).for_each(|row| row[..n].fill(0.0));
        }
        return;
    }
    assert!(a.holds(m, k) && b.holds(k, n), "matmul: operand too small");
    if own_gemm(m, n, b.trans) {
        sgemm::sgemm(m, n, k, a, &b, c, ldc, if accumulate { sgemm::Start::C } else { sgemm::Start::Zero }, None);
        return;
    }
    let ((a_rs, a_cs), (b_rs, b_cs)) = (a.strides(), b.strides());
    // SAFETY: `holds` proved every addressed element is inside its slice; `c` is
    // a unique borrow, so it aliases neither `a` nor `b`; ldc >= n keeps the
    // written elements distinct (also across gemm's own threads).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            ldc as isize,
            accumulate,
            a.data.as_ptr(),
            a_cs,
            a_rs,
            b.data.as_ptr(),
            b_cs,
            b_rs,
            if accumulate { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            gemm_parallelism(m, n, k),
        );
    }
}

/// Where there is a pool, big products use the `gemm` crate's own split across it.
fn gemm_parallelism(m: usize, n: usize, k: usize) -> gemm::Parallelism {
    match parallel::parts(m, n.saturating_mul(k)) {
        #[cfg(any(not(target_arch = "wasm32"), feature = "threads"))]
        threads if threads > 1 => gemm::Parallelism::Rayon(threads),
        _ => gemm::Parallelism::None,
    }
}

/// Output positions `o` in `0..out_len` whose input index `o * stride + tap - pad`
/// falls inside `0..in_len`. Computing this once per tap lets inner loops run
/// over contiguous outputs with no bounds branches.
pub(crate) fn tap_range(out_len: usize, in_len: usize, stride: usize, tap: usize, pad: usize) -> Range<usize> {
    let lo = if pad > tap { (pad - tap).div_ceil(stride) } else { 0 };
    let hi = if in_len + pad > tap { (in_len + pad - tap).div_ceil(stride) } else { 0 };
    let hi = hi.min(out_len);
    lo.min(hi)..hi
}

/// `dst[i * stride] += a * src[i]`, the adjoint of [`axpy_gather`].
pub(crate) fn axpy_scatter(dst: &mut [f32], src: &[f32], stride: usize, a: f32) {
    if stride == 1 {
        dst.iter_mut().zip(src).for_each(|(d, s)| *d += a * s);
    } else {
        dst.iter_mut().step_by(stride).zip(src).for_each(|(d, s)| *d += a * s);
    }
}

#[cfg(test)]
pub(crate) mod testutil {
    /// Small deterministic generator so the tests need no dependency.
    pub struct Rng(u64);

    impl Rng {
        pub fn new(seed: u64) -> Self {
            Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
        }
        pub fn next_u64(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        /// Uniform in [-1, 1).
        pub fn uniform(&mut self) -> f32 {
            (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        }
        pub fn below(&mut self, n: usize) -> usize {
            (self.next_u64() % n as u64) as usize
        }
        pub fn vec(&mut self, len: usize) -> Vec<f32> {
            (0..len).map(|_| self.uniform()).collect()
        }
    }

    pub fn dot(a: &[f32], b: &[f32]) -> f64 {
        assert_eq!(a.len(), b.len());
        a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum()
    }

    /// Checks `analytic` = d/dx sum(r * f(x)) by central differences at 20
    /// random coordinates plus up to 10 where the analytic gradient is nonzero.
    pub fn check_grad(name: &str, f: impl Fn(&[f32]) -> Vec<f32>, x: &[f32], r: &[f32], analytic: &[f32], rng: &mut Rng) {
        assert_eq!(x.len(), analytic.len(), "{name}: gradient length");
        let eps = 1e-2f32;
        let scale = (analytic.iter().map(|g| (*g as f64).powi(2)).sum::<f64>() / analytic.len() as f64).sqrt();
        let nonzero: Vec<usize> = (0..x.len()).filter(|&i| analytic[i] != 0.0).collect();
        let mut idx: Vec<usize> = (0..20).map(|_| rng.below(x.len())).collect();
        idx.extend((0..10.min(nonzero.len())).map(|_| nonzero[rng.below(nonzero.len())]));
        for i in idx {
            let (mut xp, mut xm) = (x.to_vec(), x.to_vec());
            xp[i] += eps;
            xm[i] -= eps;
            let fd = (dot(r, &f(&xp)) - dot(r, &f(&xm))) / (xp[i] as f64 - xm[i] as f64);
            let a = analytic[i] as f64;
            let tol = 1e-2 * a.abs().max(fd.abs()) + 1e-3 * scale + 1e-6;
            assert!((a - fd).abs() <= tol, "{name}: coord {i}: analytic {a} vs finite diff {fd}");
        }
    }

    pub fn assert_close(name: &str, got: &[f32], want: &[f64], rel: f64) {
        assert_eq!(got.len(), want.len(), "{name}: length");
        let scale = want.iter().fold(1.0f64, |m, v| m.max(v.abs()));
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!((*g as f64 - w).abs() <= rel * scale, "{name}: [{i}] got {g}, want {w}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::Rng;
    use super::*;

    fn naive(m: usize, n: usize, k: usize, a: &[f32], b: &[f32]) -> Vec<f32> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            }
        }
        c
    }

    #[test]
    fn matmul_transposes_and_blocks() {
        let mut rng = Rng::new(1);
        let (m, n, k) = (5, 7, 3);
        let (a, b) = (rng.vec(m * k), rng.vec(k * n));
        let want = naive(m, n, k, &a, &b);
        let at: Vec<f32> = (0..k * m).map(|i| a[(i % m) * k + i / m]).collect();
        let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
        // Write into columns 2..9 of a 5x10 matrix that already holds ones.
        let mut c = vec![1.0; m * 10];
        matmul(m, n, k, MatRef::new(&at, m).t(), MatRef::new(&bt, k).t(), &mut c[2..], 10, true);
        for i in 0..m {
            assert_eq!(c[i * 10], 1.0);
            for j in 0..n {
                assert!((c[i * 10 + 2 + j] - 1.0 - want[i * n + j]).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn tap_range_matches_bounds_check() {
        for (out_len, in_len, stride, tap, pad) in [(5usize, 9usize, 2usize, 0usize, 1usize), (4, 8, 2, 2, 0), (3, 2, 3, 4, 2), (6, 6, 1, 2, 1), (2, 1, 1, 4, 3)] {
            let want: Vec<usize> = (0..out_len).filter(|o| (o * stride + tap).checked_sub(pad).is_some_and(|i| i < in_len)).collect();
            let got: Vec<usize> = tap_range(out_len, in_len, stride, tap, pad).collect();
            assert_eq!(got, want);
        }
    }
}
