//! Adapter, device and limits. The device asks for everything the adapter offers (VGG's first linear
//! layer alone is 411 MB, above WebGPU's default 128 MB binding limit); `fits` tells callers up front
//! whether a model can run, so they can pick the CPU instead.

use crate::error::{Error, Result};
use std::sync::{Arc, Mutex};

pub struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub limits: wgpu::Limits,
    /// The first error the device reported outside a call (a validation error, a lost device). wgpu's
    /// default handler panics on these, which in wasm would trap the whole module; we record them and
    /// fail the call instead, so the caller can fall back to the CPU.
    fault: Arc<Mutex<Option<String>>>,
}

impl Gpu {
    /// The default adapter (high performance preferred) and a device with its full limits.
    pub async fn request() -> Result<Gpu> {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let adapter = instance
            .request_adapter(&wgpu::RequestAdapterOptions { power_preference: wgpu::PowerPreference::HighPerformance, force_fallback_adapter: false, compatible_surface: None, ..Default::default() })
            .await
            .map_err(|e| Error::Internal(format!("webgpu: no adapter: {e}")))?;
        let limits = adapter.limits();
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor { label: Some("gradcam"), required_limits: limits.clone(), ..Default::default() })
            .await
            .map_err(|e| Error::Internal(format!("webgpu: no device: {e}")))?;
        let fault = Arc::new(Mutex::new(None::<String>));
        let record = |fault: &Arc<Mutex<Option<String>>>, msg: String| {
            if let Ok(mut f) = fault.lock() {
                f.get_or_insert(msg);
            }
        };
        let f = fault.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| record(&f, format!("webgpu error: {e}"))));
        let f = fault.clone();
        device.set_device_lost_callback(move |reason, msg| record(&f, format!("webgpu device lost ({reason:?}): {msg}")));
        Ok(Gpu { device, queue, info: adapter.get_info(), limits, fault })
    }

    /// Fails with the device's recorded fault, if any: once a device faulted, its results are not trusted.
    pub fn check(&self) -> Result<()> {
        match self.fault.lock().map(|f| f.clone()) {
            Ok(None) => Ok(()),
            Ok(Some(msg)) => Err(Error::Internal(msg)),
            Err(_) => Err(Error::Internal("webgpu: fault record poisoned".into())),
        }
    }

    /// Destroys the device, as a driver reset or a lost GPU would: later calls fail with an error (and
    /// callers fall back to the CPU). For tests of that path.
    pub fn lose_device(&self) {
        self.device.destroy();
    }

    /// Whether the adapter is a software rasterizer (SwiftShader, lavapipe, llvmpipe, WARP): correct,
    /// but slower than our wasm CPU path, so `auto` does not pick it.
    pub fn is_software(&self) -> bool {
        let name = self.info.name.to_ascii_lowercase();
        self.info.device_type == wgpu::DeviceType::Cpu || ["swiftshader", "llvmpipe", "lavapipe", "warp", "software"].iter().any(|s| name.contains(s))
    }

    /// The largest buffer one kernel can bind, in bytes.
    pub fn max_binding(&self) -> u64 {
        self.limits.max_storage_buffer_binding_size.min(self.limits.max_buffer_size)
    }

    /// Checks that a buffer of `floats` f32 can be bound; names the layer otherwise.
    pub fn fits(&self, what: &str, floats: usize) -> Result<()> {
        let bytes = floats as u64 * 4;
        if bytes > self.max_binding() {
            return Err(Error::Input(format!(
                "webgpu: {what} needs a {:.0} MB buffer, the adapter '{}' binds at most {:.0} MB; use the CPU backend",
                bytes as f64 / 1e6,
                self.info.name,
                self.max_binding() as f64 / 1e6
            )));
        }
        Ok(())
    }

    /// Natively, drives the device until submitted work and map callbacks are done. In the browser the
    /// event loop does this, so it is a no-op there.
    pub fn poll_wait(&self) {
        #[cfg(not(target_arch = "wasm32"))]
        let _ = self.device.poll(wgpu::PollType::wait_indefinitely());
    }
}
