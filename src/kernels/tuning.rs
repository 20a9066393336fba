//! The kernels' switches, for A/B timings (`scripts/wasm-bench.sh`) and accuracy comparisons in the
//! tests. They are a value the executor carries (`CpuExecutor::with_tuning`), not process-wide flags:
//! the executor runs its kernels inside `scoped`, so two executors with different tunings (two tests
//! on parallel threads) never see each other's.

use std::cell::Cell;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tuning {
    /// 3x3 stride-1 convs by Winograd where it is cheaper (else every conv is im2col + GEMM).
    pub winograd: bool,
    /// Keep F(2x2)'s transformed weights between calls within the model's budget (else transform per call).
    pub keep_transformed_weights: bool,
    /// Our GEMM reads A in place where it can (else it always packs A).
    pub a_in_place: bool,
    /// In wasm32, send products through the `gemm` crate instead of our own kernel.
    pub gemm_crate_on_wasm: bool,
    /// Ungrouped convs with small output planes take a batch's images as the columns of one product
    /// (else one product per image).
    pub batch_columns: bool,
}

impl Tuning {
    pub const DEFAULT: Tuning = Tuning { winograd: true, keep_transformed_weights: true, a_in_place: true, gemm_crate_on_wasm: false, batch_columns: true };
}

impl Default for Tuning {
    fn default() -> Tuning {
        Tuning::DEFAULT
    }
}

thread_local! {
    static CURRENT: Cell<Tuning> = const { Cell::new(Tuning::DEFAULT) };
}

/// The tuning of the executor running on this thread now.
pub fn current() -> Tuning {
    CURRENT.with(Cell::get)
}

/// Runs `f` with `tuning` as the current one, restoring the previous one after (also on a panic).
pub fn scoped<R>(tuning: Tuning, f: impl FnOnce() -> R) -> R {
    struct Restore(Tuning);
    impl Drop for Restore {
        fn drop(&mut self) {
            CURRENT.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(CURRENT.with(|c| c.replace(tuning)));
    f()
}
