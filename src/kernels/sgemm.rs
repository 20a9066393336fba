//! The f32 matrix product of the wasm32 build: `c = start + a * b` (zero, c itself, or a value per row).
//!
//! The `gemm` crate's simd128 kernel keeps a 12x4 tile of C in 12 registers, plus 3 of A and 1 of B:
//! all 16 that V8 gives wasm on x86-64, one of which it keeps as a scratch register, so it spills.
//! This one keeps a 4x8 tile (8 accumulators, 2 vectors of B, 1 splat of A, 1 product: 12 registers;
//! 6x8 and 5x8 tiles spilled) and is blocked the classic way
//! (Goto & van de Geijn): B is packed in blocks of `KC` rows x `NC` columns (in L2); the kernel walks
//! a `KC` x `NR` micro-panel of B (in L1) against `MR` x `KC` strips of A. A is read in place, by its
//! rows (packing it was a tenth of ResNet-18's time); only a ragged last strip is packed, in blocks
//! of `MC` x `KC`, and a transposed A, in blocks of `MC_TRANSPOSED` x `KC`.
//! Packing pads edges with zeros, so the kernel never branches; whole tiles go straight into C, edge
//! tiles through a small buffer.
//!
//! Natively the crate keeps using `gemm` (AVX2/AVX-512 kernels); this module still builds and is
//! tested there through its portable kernel, which LLVM vectorises.

use super::activation::Clamp;
use super::MatRef;
use core::mem::MaybeUninit;
use core::ops::Range;

/// The B operand as the packing reads it: one row segment at a time. A plain matrix is one source;
/// a conv's im2col matrix is another, computed row by row and never stored whole (`conv.rs`).
pub(crate) trait RowSource {
    /// `dst = B[k, cols]`.
    fn row(&self, k: usize, cols: Range<usize>, dst: &mut [f32]);

    /// B's storage and row stride where B is stored row-major: packing then reads it directly,
    /// without a trip through a row buffer.
    fn stored(&self) -> Option<(&[f32], usize)> {
        None
    }
}

impl RowSource for MatRef<'_> {
    fn row(&self, k: usize, cols: Range<usize>, dst: &mut [f32]) {
        if self.trans {
            dst.iter_mut().zip(cols).for_each(|(d, j)| *d = self.data[j * self.ld + k]);
        } else {
            dst.copy_from_slice(&self.data[k * self.ld + cols.start..][..cols.len()]);
        }
    }

    fn stored(&self) -> Option<(&[f32], usize)> {
        (!self.trans).then_some((self.data, self.ld))
    }
}

/// Rows of C per kernel call (splats of packed A).
const MR: usize = 4;
/// Columns of C per kernel call (two 4-lane vectors of packed B).
const NR: usize = 8;
/// Depth of one packed block: a B micro-panel is KC x NR x 4 bytes = 8 KB (L1).
const KC: usize = 256;
/// Rows of A per packed block: MC x KC x 4 bytes = 120 KB (L2).
const MC: usize = 128;
/// Rows of a transposed A per packed block: each depth step is then a contiguous run of 2 KB to
/// pack (ResNet-18's Grad-CAM and Guided Grad-CAM took 0.96x and 0.98x the time of blocks of `MC`
/// rows, on a core with 2 MB of L2).
const MC_TRANSPOSED: usize = 4 * MC;
/// Columns of B per packed block: KC x NC x 4 bytes = 512 KB (L2).
const NC: usize = 512;

/// Whether this kernel is the one to use: at least one full tile, and B read along its rows (the
/// convs' products). A product with fewer than MR rows (a linear layer on one image: 1 x 1000 x
/// 1280, B transposed) would waste most of each tile and gather B across rows.
pub(crate) fn suits(m: usize, n: usize, b_trans: bool) -> bool {
    m >= MR && n >= NR && !b_trans
}

/// Sizes `buf` to `len` without clearing it: packing writes every element (padding included), so a
/// memset first would be one more pass over up to half a megabyte per block.
fn reuse(buf: &mut Vec<f32>, len: usize) {
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
    buf.truncate(len);
}

/// Floats from one packed strip of A to the next: a strip's `MR * kc`, and a cache line more, so
/// that the strips' lines at one depth step fall into different cache sets.
fn strip_len(kc: usize) -> usize {
    MR * kc + 16
}

/// Packs rows `rows` x depth `ks` of A into MR-row micro-panels, k-major, zero-padded to MR rows,
/// one every [`strip_len`] floats. Profiled, the packing was a quarter of ResNet-18's conv time when
/// done element by element through `at`; these loops read each source row (or, transposed, each
/// depth step) as one contiguous run.
fn pack_a(a: &MatRef, rows: Range<usize>, ks: Range<usize>, out: &mut Vec<f32>) {
    let (mc, kc) = (rows.len(), ks.len());
    let sl = strip_len(kc);
    reuse(out, mc.div_ceil(MR) * sl);
    if a.trans {
        // A(i, k) = data[k * ld + i]: depth step by depth step, each one contiguous run of the
        // storage, its values four by four into the strips.
        let ragged = mc % MR;
        for (p, k) in ks.enumerate() {
            let src = &a.data[k * a.ld + rows.start..][..mc];
            for (strip, four) in out.chunks_exact_mut(sl).zip(src.chunks_exact(MR)) {
                let four: &[f32; MR] = four.try_into().expect("whole strips");
                strip[p * MR..][..MR].copy_from_slice(four); // a fixed-size copy: no memcpy call
            }
            if ragged > 0 {
                let dst = &mut out[mc / MR * sl + p * MR..][..MR];
                dst[..ragged].copy_from_slice(&src[mc - ragged..]);
                dst[ragged..].fill(0.0);
            }
        }
        return;
    }
    for (s, strip) in out.chunks_exact_mut(sl).enumerate() {
        let strip = &mut strip[..MR * kc];
        let i0 = rows.start + s * MR;
        let live = MR.min(rows.end - i0);
        if live == MR {
            // Four rows interleaved: one contiguous read per row, one 4-wide write per depth step.
            let row = |r: usize| &a.data[(i0 + r) * a.ld + ks.start..][..kc];
            let (r0, r1, r2, r3) = (row(0), row(1), row(2), row(3));
            for (p, dst) in strip.chunks_exact_mut(MR).enumerate() {
                dst.copy_from_slice(&[r0[p], r1[p], r2[p], r3[p]]);
            }
        } else {
            strip.fill(0.0);
            for r in 0..live {
                let src = &a.data[(i0 + r) * a.ld + ks.start..][..kc];
                strip[r..].iter_mut().step_by(MR).zip(src).for_each(|(d, &v)| *d = v);
            }
        }
    }
}

/// Packs depth `ks` x columns `cols` of B into NR-column micro-panels, k-major, zero-padded to NR.
/// A stored B's rows go straight into the panels; any other source's through `row` (L1-sized).
fn pack_b(b: &impl RowSource, ks: Range<usize>, cols: Range<usize>, out: &mut Vec<f32>, row: &mut Vec<f32>) {
    let (kc, nc) = (ks.len(), cols.len());
    reuse(out, nc.div_ceil(NR) * NR * kc);
    row.resize(nc, 0.0);
    for (p, k) in ks.enumerate() {
        let src = match b.stored() {
            Some((data, ld)) => &data[k * ld + cols.start..][..nc],
            None => {
                b.row(k, cols.clone(), &mut row[..nc]);
                &row[..nc]
            }
        };
        into_panels(src, p, kc, out);
    }
}

/// Row `p` of B's block (`src`, its columns) into the panels of `out` (each `kc` rows deep): whole
/// panels as fixed-size copies, a ragged last one padded with zeros.
fn into_panels(src: &[f32], p: usize, kc: usize, out: &mut [f32]) {
    let whole = src.len() / NR;
    for (panel, seg) in out.chunks_exact_mut(NR * kc).zip(src.chunks_exact(NR)) {
        let seg: &[f32; NR] = seg.try_into().expect("whole panels");
        panel[p * NR..][..NR].copy_from_slice(seg);
    }
    let tail = &src[whole * NR..];
    if !tail.is_empty() {
        let dst = &mut out[(whole * kc + p) * NR..][..NR];
        dst[..tail.len()].copy_from_slice(tail);
        dst[tail.len()..].fill(0.0);
    }
}

/// A block of C: its rows, each cut to the block's columns. Column splits across threads hand
/// each thread its own segment of every row, so no two threads ever hold the same element.
type Rows<'r, 'c> = &'r mut [&'c mut [f32]];

/// What C's sums start from: `C = start + A * B`.
#[derive(Clone, Copy)]
pub(crate) enum Start<'a> {
    /// Zero: C is overwritten.
    Zero,
    /// C itself: the product accumulates onto it.
    C,
    /// `row[i]` for every column of row i (a conv's bias): C is overwritten, and no pass before
    /// the product has to fill it.
    Rows(&'a [f32]),
}

/// How a tile of sums goes into C: `Set` (C = sums), `Add` (C += sums), `Onto(v)` (C's row r =
/// v[r] + sums, v starting at the tile's first row).
#[derive(Clone, Copy)]
enum Store<'a> {
    Set,
    Add,
    Onto(&'a [f32]),
}

/// A kernel's 4 x 8 accumulators, in the registers' layout.
#[cfg(target_arch = "wasm32")]
type Acc = [[core::arch::wasm32::v128; 2]; MR];
#[cfg(not(target_arch = "wasm32"))]
type Acc = [[f32; NR]; MR];

/// Puts a whole tile into rows `0..MR` of `c`, columns `j..j + NR`, as `how` says.
#[cfg(target_arch = "wasm32")]
#[inline(always)]
fn store_tile(acc: Acc, c: Rows, j: usize, how: Store) {
    use core::arch::wasm32::*;
    for (r, (row, [mut lo, mut hi])) in c.iter_mut().zip(acc).enumerate() {
        let dst = &mut row[j..j + NR];
        // SAFETY: `dst` holds exactly NR = 8 floats; v128_load/store accept unaligned addresses.
        unsafe {
            let (dlo, dhi) = (dst.as_mut_ptr() as *mut v128, dst.as_mut_ptr().add(4) as *mut v128);
            let base = match how {
                Store::Set => None,
                Store::Add => Some((v128_load(dlo), v128_load(dhi))),
                Store::Onto(v) => Some((f32x4_splat(v[r]), f32x4_splat(v[r]))),
            };
            if let Some((blo, bhi)) = base {
                lo = f32x4_add(blo, lo);
                hi = f32x4_add(bhi, hi);
            }
            v128_store(dlo, lo);
            v128_store(dhi, hi);
        }
    }
}

#[cfg(not(target_arch = "wasm32"))]
fn store_tile(acc: Acc, c: Rows, j: usize, how: Store) {
    write_edge(acc, c, j, (MR, NR), how);
}

/// The accumulators as plain rows, for an edge tile.
#[cfg(target_arch = "wasm32")]
fn to_rows(acc: Acc) -> [[f32; NR]; MR] {
    use core::arch::wasm32::*;
    acc.map(|[lo, hi]| {
        let lane = |v: v128, i: usize| match i {
            0 => f32x4_extract_lane::<0>(v),
            1 => f32x4_extract_lane::<1>(v),
            2 => f32x4_extract_lane::<2>(v),
            _ => f32x4_extract_lane::<3>(v),
        };
        core::array::from_fn(|c| if c < 4 { lane(lo, c) } else { lane(hi, c - 4) })
    })
}

#[cfg(not(target_arch = "wasm32"))]
fn to_rows(acc: Acc) -> [[f32; NR]; MR] {
    acc
}

/// `sum_p A(r, p) * b[p * NR..][..NR]` over `kc` steps for rows `r < MR`, A(r, p) at
/// `a[r * rs + p * ps]`: a packed strip (`rs = 1, ps = MR`), or A read in place (rows
/// `rs = lda, ps = 1`; transposed `rs = 1, ps = lda`); one splat per row and step.
#[inline(always)]
fn kernel(kc: usize, a: &[f32], strides: (usize, usize), b: &[f32]) -> Acc {
    kernel_vectors::<2>(kc, a, strides, b)
}

/// [`kernel`] for an edge panel with at most 4 live columns: only the low vector of B, so each
/// depth step costs 1 load, 4 splats and 4 multiply-adds instead of 2, 4 and 8 (through [`kernel`],
/// 256 x 49 x 256 took 6% longer and 128 x 49 x 128 9%). Same sums, same order: the live columns
/// come out bitwise as [`kernel`] would give them.
#[inline(always)]
fn kernel_4(kc: usize, a: &[f32], strides: (usize, usize), b: &[f32]) -> [[f32; NR]; MR] {
    #[cfg(target_arch = "wasm32")]
    {
        let z = core::arch::wasm32::f32x4_splat(0.0);
        to_rows(kernel_vectors::<1>(kc, a, strides, b).map(|[lo]| [lo, z]))
    }
    #[cfg(not(target_arch = "wasm32"))]
    kernel(kc, a, strides, b)
}

/// The columns `0..4 * V` of a panel, `V` 4-lane vectors of B per depth step.
#[cfg(target_arch = "wasm32")]
#[inline(always)]
fn kernel_vectors<const V: usize>(kc: usize, a: &[f32], (rs, ps): (usize, usize), b: &[f32]) -> [[core::arch::wasm32::v128; V]; MR] {
    use super::madd;
    use core::arch::wasm32::*;
    assert!(kc > 0 && a.len() > 3 * rs + (kc - 1) * ps && b.len() >= kc * NR && V * 4 <= NR);
    // SAFETY: the assert bounds every load below; v128_load accepts unaligned addresses.
    unsafe {
        let bp = b.as_ptr();
        let rows: [*const f32; MR] = core::array::from_fn(|r| a.as_ptr().add(r * rs));
        let mut acc = [[f32x4_splat(0.0); V]; MR];
        for p in 0..kc {
            let bq = bp.add(p * NR);
            let bv: [v128; V] = core::array::from_fn(|j| v128_load(bq.add(4 * j) as *const v128));
            for (row, c) in rows.iter().zip(acc.iter_mut()) {
                let ar = v128_load32_splat(row.add(p * ps) as *const u32);
                for (cj, &bj) in c.iter_mut().zip(&bv) {
                    *cj = madd(ar, bj, *cj);
                }
            }
        }
        acc
    }
}

/// The portable kernel (native unit tests): all NR columns whatever `V`, summed in the same order
/// as the wasm one.
#[cfg(not(target_arch = "wasm32"))]
fn kernel_vectors<const V: usize>(kc: usize, a: &[f32], (rs, ps): (usize, usize), b: &[f32]) -> Acc {
    let mut acc = [[0.0f32; NR]; MR];
    for (p, bp) in b.chunks_exact(NR).take(kc).enumerate() {
        for (r, cr) in acc.iter_mut().enumerate() {
            let av = a[r * rs + p * ps];
            cr.iter_mut().zip(bp).for_each(|(x, &bv)| *x += av * bv);
        }
    }
    acc
}

/// [`kernel`] for an edge panel with one live column, `col` (its `kc` values, contiguous), where A's
/// rows are adjacent in memory (A packed, or transposed in place: `rs == 1`): one load of A(0..4, p)
/// and one splat of the column per depth step, about a sixth of a full panel's instructions where
/// the panel would be 7/8 padding (49 columns: 7 x 7 planes, F(2x2) on 14 x 14). The same products
/// summed in the same order as [`kernel`]'s, so the same bits: a batch's images side by side in
/// one product (`conv.rs`) must give each image's columns exactly (rows along the depth would need
/// partial sums, which round differently; those take [`kernel_4`]).
#[cfg(target_arch = "wasm32")]
#[inline(always)]
fn kernel_1(kc: usize, a: &[f32], (rs, ps): (usize, usize), col: &[f32]) -> [f32; MR] {
    use super::madd;
    use core::arch::wasm32::*;
    assert!(kc > 0 && rs == 1 && a.len() > 3 + (kc - 1) * ps && col.len() >= kc);
    // SAFETY: the assert bounds every load: A(0..4, p) is a[p * ps..][..4], the column's p-th value col[p].
    let c = unsafe {
        let (ap, bp) = (a.as_ptr(), col.as_ptr());
        let mut c = f32x4_splat(0.0);
        for p in 0..kc {
            c = madd(v128_load(ap.add(p * ps) as *const v128), v128_load32_splat(bp.add(p) as *const u32), c);
        }
        c
    };
    [f32x4_extract_lane::<0>(c), f32x4_extract_lane::<1>(c), f32x4_extract_lane::<2>(c), f32x4_extract_lane::<3>(c)]
}

/// The portable [`kernel_1`], summing in the same order.
#[cfg(not(target_arch = "wasm32"))]
fn kernel_1(kc: usize, a: &[f32], (rs, ps): (usize, usize), col: &[f32]) -> [f32; MR] {
    assert_eq!(rs, 1, "rows adjacent only");
    core::array::from_fn(|r| (0..kc).fold(0.0, |s, p| s + a[r + p * ps] * col[p]))
}

/// Puts the live `rows x cols` corner of an edge tile into `c` at column `j`, as `how` says.
fn write_edge(tile: [[f32; NR]; MR], c: Rows, j: usize, (rows, cols): (usize, usize), how: Store) {
    for (r, (dst_row, src)) in c.iter_mut().zip(tile).take(rows).enumerate() {
        let (dst, src) = (&mut dst_row[j..j + cols], &src[..cols]);
        match how {
            Store::Set => dst.copy_from_slice(src),
            Store::Add => dst.iter_mut().zip(src).for_each(|(d, s)| *d += s),
            Store::Onto(v) => dst.iter_mut().zip(src).for_each(|(d, s)| *d = v[r] + s),
        }
    }
}

/// `c[m, n] = start + a[m, k] * b[k, n]`, clamped as `act` says (a conv's ReLU: each block of C as
/// soon as its last sums are in, while it is in cache, not in a pass of its own); the caller ([`super::matmul`]) checked
/// sizes (and that a `Start::Rows` holds m values).
///
/// Big products are split across the thread pool ([`super::parallel`]) by columns (each part packs
/// its own columns of B and writes its own segment of every row of C), or, where A is the larger
/// operand, by rows ([`by_rows`]: each part reads its own rows of A and writes its own rows of C).
#[allow(clippy::too_many_arguments)]
pub(crate) fn sgemm(m: usize, n: usize, k: usize, a: MatRef, b: &(impl RowSource + Sync), c: &mut [f32], ldc: usize, start: Start, act: Option<Clamp>) {
    // SAFETY: the product writes only floats into C, so C stays initialised.
    let c = unsafe { &mut *(c as *mut [f32] as *mut [MaybeUninit<f32>]) };
    sgemm_parts(m, n, k, a, b, c, ldc, start, act, false);
}

/// [`sgemm`] into rows of a [`super::fresh`] output, which each part zeroes before its product (so
/// no `Start::C`): on return C's `m x n` elements are written.
#[allow(clippy::too_many_arguments)]
pub(crate) fn sgemm_fresh(m: usize, n: usize, k: usize, a: MatRef, b: &(impl RowSource + Sync), c: &mut [MaybeUninit<f32>], ldc: usize, start: Start, act: Option<Clamp>) {
    debug_assert!(!matches!(start, Start::C), "a fresh C has nothing to accumulate onto");
    sgemm_parts(m, n, k, a, b, c, ldc, start, act, true);
}

#[allow(clippy::too_many_arguments)]
fn sgemm_parts(m: usize, n: usize, k: usize, a: MatRef, b: &(impl RowSource + Sync), c: &mut [MaybeUninit<f32>], ldc: usize, start: Start, act: Option<Clamp>, fresh: bool) {
    if by_rows(m, n) {
        return sgemm_row_parts(m, n, k, a, b, c, ldc, start, act, fresh);
    }
    let parts = super::parallel::parts(n.div_ceil(NR), m * k * NR);
    let col_ranges = super::parallel::ranges(n, parts, NR);
    let mut segments: Vec<Vec<&mut [MaybeUninit<f32>]>> = col_ranges.iter().map(|_| Vec::with_capacity(m)).collect();
    for row in c.chunks_mut(ldc).take(m) {
        let mut rest = &mut row[..n];
        for (part, cols) in segments.iter_mut().zip(&col_ranges) {
            let (seg, tail) = rest.split_at_mut(cols.len());
            part.push(seg);
            rest = tail;
        }
    }
    let blocks: Vec<_> = segments.into_iter().zip(col_ranges).collect();
    super::parallel::for_each(blocks, |_, (segs, cols)| {
        let mut rows = part_rows(segs, fresh);
        sgemm_block(m, cols, k, a, b, &mut rows, start, act)
    });
}

/// A part's segments of C's rows as floats: zeroed first where C is fresh.
fn part_rows(segs: Vec<&mut [MaybeUninit<f32>]>, fresh: bool) -> Vec<&mut [f32]> {
    segs.into_iter()
        .map(|seg| match fresh {
            true => super::zeroed(seg),
            // SAFETY: not fresh: the caller's C, initialised.
            false => unsafe { super::as_written(seg) },
        })
        .collect()
}

/// Whether a product splits by rows of A and C instead of columns of B and C: where A is the larger
/// operand (a kept Winograd U or a conv's weights against a few columns), so that each part reads its
/// own rows of A from memory, not all of A, and packs all of the smaller B. Only where the rows make
/// whole strips: a ragged last strip would be packed in another block, and a one-column edge tile
/// then takes another kernel, summing in another order.
fn by_rows(m: usize, n: usize) -> bool {
    m > n && m.is_multiple_of(MR)
}

/// [`sgemm_parts`] split by rows: each part takes whole strips of A's and C's rows, all of B.
#[allow(clippy::too_many_arguments)]
fn sgemm_row_parts(m: usize, n: usize, k: usize, a: MatRef, b: &(impl RowSource + Sync), c: &mut [MaybeUninit<f32>], ldc: usize, start: Start, act: Option<Clamp>, fresh: bool) {
    let parts = super::parallel::parts(m / MR, n * k * MR);
    let mut rows = c.chunks_mut(ldc).take(m).map(|row| &mut row[..n]);
    let blocks: Vec<_> = super::parallel::ranges(m, parts, MR).into_iter().map(|r| (rows.by_ref().take(r.len()).collect::<Vec<_>>(), r)).collect();
    super::parallel::for_each(blocks, |_, (segs, r)| {
        let mut rows = part_rows(segs, fresh);
        let a_rows = match a.trans {
            false => MatRef { data: &a.data[r.start * a.ld..], ..a },
            true => MatRef { data: &a.data[r.start..], ..a },
        };
        let start = match start {
            Start::Rows(v) => Start::Rows(&v[r.clone()]),
            other => other,
        };
        sgemm_block(r.len(), 0..n, k, a_rows, b, &mut rows, start, act)
    });
}

/// The product for columns `cols` of C, whose rows (cut to those columns) are `c`.
#[allow(clippy::too_many_arguments)]
fn sgemm_block(m: usize, block: Range<usize>, k: usize, a: MatRef, b: &impl RowSource, c: Rows, start: Start, act: Option<Clamp>) {
    let (mut packed_a, mut packed_b, mut row, mut column) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    // A transposed is packed: read in place, each depth step's four values sit a whole row of its
    // storage apart, a stride no prefetcher follows, and a cold A (Winograd's kept U) came in at half
    // the speed of the packed copy, which reads those rows as contiguous runs.
    let in_place = !a.trans && super::tuning::current().a_in_place;
    let (n, base) = (block.len(), block.start);
    for jc in (0..n).step_by(NC) {
        // Columns of this block (relative to `c`) and of B (absolute).
        let cols = jc..(jc + NC).min(n);
        let b_cols = base + cols.start..base + cols.end;
        for pc in (0..k).step_by(KC) {
            let ks = pc..(pc + KC).min(k);
            let kc = ks.len();
            // The first depth block puts the sums onto the start; later ones add.
            let how = |i0: usize| match (pc, start) {
                (0, Start::Zero) => Store::Set,
                (0, Start::Rows(v)) => Store::Onto(&v[i0..]),
                _ => Store::Add,
            };
            crate::profile::time(|| format!("  pack B {}x{}x{}", m, n, k), || pack_b(b, ks.clone(), b_cols.clone(), &mut packed_b, &mut row));
            let mc = if a.trans { MC_TRANSPOSED } else { MC };
            for ic in (0..m).step_by(mc) {
                let rows = ic..(ic + mc).min(m);
                // A is read in place in whole strips of MR rows; a ragged last strip, or a
                // transposed A, is packed.
                let in_place = in_place && rows.len() % MR == 0;
                if !in_place {
                    crate::profile::time(|| format!("  pack A {}x{}x{} {}", m, n, k, a.trans), || pack_a(&a, rows.clone(), ks.clone(), &mut packed_a));
                }
                // The strip of rows i0.., and its strides (see `kernel`).
                let strip = |i0: usize| match in_place {
                    false => (&packed_a[(i0 - rows.start) / MR * strip_len(kc)..][..MR * kc], (1, MR)),
                    true => (&a.data[i0 * a.ld + ks.start..], (a.ld, 1)),
                };
                let rows_adjacent = !in_place;
                for (jp, bpanel) in packed_b.chunks_exact(NR * kc).enumerate() {
                    let j0 = cols.start + jp * NR;
                    let live_cols = NR.min(cols.end - j0);
                    // One live column against rows adjacent in memory: kernel_1, which reads it
                    // contiguous.
                    let one_column = live_cols == 1 && rows_adjacent;
                    if one_column {
                        column.clear();
                        column.extend(bpanel.iter().step_by(NR));
                    }
                    for i0 in rows.clone().step_by(MR) {
                        let (astrip, strides) = strip(i0);
                        let live_rows = MR.min(rows.end - i0);
                        let c_rows = &mut c[i0..i0 + live_rows];
                        // A whole tile goes straight into C; an edge one element by element, from
                        // the narrowest kernel that covers its live columns.
                        match live_cols {
                            NR if live_rows == MR => store_tile(kernel(kc, astrip, strides, bpanel), c_rows, j0, how(i0)),
                            1 if one_column => {
                                let tile = kernel_1(kc, astrip, strides, &column).map(|x| [x; NR]);
                                write_edge(tile, c_rows, j0, (live_rows, 1), how(i0));
                            }
                            1..=4 => write_edge(kernel_4(kc, astrip, strides, bpanel), c_rows, j0, (live_rows, live_cols), how(i0)),
                            _ => write_edge(to_rows(kernel(kc, astrip, strides, bpanel)), c_rows, j0, (live_rows, live_cols), how(i0)),
                        }
                    }
                }
                // This block of C has its last sums: clamped now, while it is in L2.
                if let (Some(act), true) = (act, pc + KC >= k) {
                    c[rows].iter_mut().for_each(|row| super::activation::clamp_slice(&mut row[cols.clone()], act));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Element (i, j) of an operand.
    #[inline(always)]
    fn at(m: &MatRef, i: usize, j: usize) -> f32 {
        if m.trans {
            m.data[j * m.ld + i]
        } else {
            m.data[i * m.ld + j]
        }
    }

    use crate::kernels::testutil::Rng;

    #[allow(clippy::too_many_arguments)]
    fn naive(m: usize, n: usize, k: usize, a: &MatRef, b: &MatRef, c0: &[f32], ldc: usize, start: Start) -> Vec<f32> {
        let mut c = c0.to_vec();
        for i in 0..m {
            for j in 0..n {
                let s: f64 = (0..k).map(|p| at(a, i, p) as f64 * at(b, p, j) as f64).sum();
                let base = match start {
                    Start::Zero => 0.0,
                    Start::C => c[i * ldc + j] as f64,
                    Start::Rows(v) => v[i] as f64,
                };
                c[i * ldc + j] = (base + s) as f32;
            }
        }
        c
    }

    #[test]
    fn matches_naive_across_edges_blocks_and_transposes() {
        let mut rng = Rng::new(3);
        // Shapes straddle MR, NR, KC, MC and NC boundaries (and take A in place or packed); ldc > n
        // leaves untouched columns.
        for &(m, n, k) in
            &[(1, 1, 1), (5, 7, 3), (6, 8, 256), (7, 9, 257), (13, 530, 40), (121, 17, 600), (64, 49, 576), (12, 9, 300), (132, 16, 512), (12, 12, 35), (9, 3, 6), (16, 196, 70), (517, 9, 70)]
        {
            let bias = rng.vec(m);
            for (ta, tb, start) in
                [(false, false, Start::Zero), (true, false, Start::C), (false, true, Start::C), (true, true, Start::Zero), (false, false, Start::Rows(&bias)), (true, true, Start::Rows(&bias))]
            {
                let ldc = n + 3;
                let ad = rng.vec(m * k);
                let bd = rng.vec(k * n);
                let a = if ta { MatRef::new(&ad, m).t() } else { MatRef::new(&ad, k) };
                let b = if tb { MatRef::new(&bd, k).t() } else { MatRef::new(&bd, n) };
                let c0 = rng.vec(m * ldc);
                let want = naive(m, n, k, &a, &b, &c0, ldc, start);
                let mut got = c0.clone();
                sgemm(m, n, k, a, &b, &mut got, ldc, start, None);
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    let tol = 1e-5 * (k as f32).sqrt().max(1.0) * 4.0;
                    assert!((g - w).abs() <= tol, "m{m} n{n} k{k} ta{ta} tb{tb} at {i}: {g} vs {w}");
                }
            }
        }
    }

    /// A product with more rows than columns splits by rows: each part's rows of A (in place or
    /// transposed), of the start and of C give the bits of the one-part product.
    #[test]
    fn a_product_split_by_rows_is_bitwise_the_one_thread_product() {
        let mut rng = Rng::new(8);
        let (m, n, k) = (72, 21, 300);
        let (ad, bd, bias) = (rng.vec(m * k), rng.vec(k * n), rng.vec(m));
        let b = MatRef::new(&bd, n);
        assert!(by_rows(m, n));
        let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build().expect("a pool");
        for a in [MatRef::new(&ad, k), MatRef::new(&ad, m).t()] {
            for (start, act) in [(Start::Zero, None), (Start::Rows(&bias), Some(Clamp::Relu))] {
                assert_eq!(pool.install(|| crate::kernels::parallel::parts(m / MR, n * k * MR)), 3, "the product splits");
                let mut one = vec![0.0; m * n];
                let mut rows: Vec<&mut [f32]> = one.chunks_mut(n).collect();
                sgemm_block(m, 0..n, k, a, &b, &mut rows, start, act);
                let mut split = vec![0.0; m * n];
                pool.install(|| sgemm(m, n, k, a, &b, &mut split, n, start, act));
                assert!(split.iter().zip(&one).all(|(x, y)| x.to_bits() == y.to_bits()), "transposed A: {}", a.trans);
                let mut fresh = crate::kernels::fresh(m * n);
                pool.install(|| sgemm_fresh(m, n, k, a, &b, &mut fresh, n, start, act));
                // SAFETY: the product wrote its m x n elements, all of `fresh`.
                let fresh = unsafe { crate::kernels::written(fresh) };
                assert!(fresh.iter().zip(&one).all(|(x, y)| x.to_bits() == y.to_bits()), "fresh, transposed A: {}", a.trans);
            }
        }
    }

    #[test]
    fn a_split_product_is_bitwise_the_one_thread_product() {
        let mut rng = Rng::new(5);
        let (m, n, k) = (40, 530, 300);
        let (ad, bd) = (rng.vec(m * k), rng.vec(k * n));
        let (a, b) = (MatRef::new(&ad, k), MatRef::new(&bd, n));
        assert!(crate::kernels::parallel::parts(n.div_ceil(NR), m * k * NR) > 1 || crate::kernels::parallel::threads() == 1);
        let mut split = vec![0.0; m * n];
        sgemm(m, n, k, a, &b, &mut split, n, Start::Zero, None);
        let mut one = vec![0.0; m * n];
        let mut rows: Vec<&mut [f32]> = one.chunks_mut(n).collect();
        sgemm_block(m, 0..n, k, a, &b, &mut rows, Start::Zero, None);
        assert!(split.iter().zip(&one).all(|(x, y)| x.to_bits() == y.to_bits()));
        // Into a fresh C (poisoned in tests), which each part zeroes: the same bits, every element written.
        let mut fresh = crate::kernels::fresh(m * n);
        sgemm_fresh(m, n, k, a, &b, &mut fresh, n, Start::Zero, None);
        // SAFETY: the product wrote its m x n elements, all of `fresh`.
        let fresh = unsafe { crate::kernels::written(fresh) };
        assert!(fresh.iter().zip(&one).all(|(x, y)| x.to_bits() == y.to_bits()));
    }
}
