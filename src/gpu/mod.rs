//! The WebGPU executor (feature `webgpu`): the same layer graph as the CPU executor, run by WGSL compute
//! kernels through `wgpu`, natively (Vulkan/Metal/DX12, lavapipe in CI) and in the browser (WebGPU).
//!
//! - `device`: adapter, device and limits.
//! - `executor`: `GpuExecutor` / `GpuPass`. The core is async (`*_async`), as browsers require for
//!   readback; natively `GpuExecutor` also implements `crate::exec::Executor` by blocking on it.
//! - `shaders/*.wgsl`: one module per op family, forward and input-gradient entry points.

pub mod device;
pub mod executor;

pub use device::Gpu;
pub use executor::{GpuExecutor, GpuPass};
