//! The WebGPU executor (feature `webgpu`): the same layer graph as the CPU executor, run by WGSL compute
//! kernels through `wgpu`, natively (Vulkan/Metal/DX12, lavapipe in CI) and in the browser (WebGPU).
//!
//! - `device`: adapter, device and limits; GPU errors recorded, never panics.
//! - `executor`: `GpuExecutor` / `GpuPass`. The core is async (`*_async`), as browsers require for
//!   readback; natively `GpuExecutor` also implements `crate::exec::Executor` by blocking on it.
//! - `session`: `GpuSession`, explanations on the GPU through the async core (what the browser runs).
//! - `lab`: `ConvLab`, one conv through the executor's kernels (kernel tests, per-shape benchmark).
//! - `shaders/*.wgsl`: one module per op family, forward and input-gradient entry points;
//!   `depthwise_forward`: the depthwise forward kernels, generated per filter size and stride.

mod depthwise_forward;
pub mod device;
pub mod executor;
#[cfg(not(target_arch = "wasm32"))]
pub mod lab;
pub mod session;

pub use device::Gpu;
pub use executor::{GpuExecutor, GpuPass};
pub use session::GpuSession;
