//! Adapter, device and limits. The device asks for everything the adapter offers (VGG's first linear
//! layer alone is 411 MB, above WebGPU's default 128 MB binding limit); `fits` tells callers up front
//! whether a model can run, so they can pick the CPU instead.

use crate::error::{Error, Result};

pub struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub limits: wgpu::Limits,
}

impl Gpu {
    /// The default adapter (high performance preferred) and a device with its full limits.
    pub async fn request() -> Result<Gpu> {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let adapter = instance
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::HighPerformance,
                force_fallback_adapter: false,
                compatible_surface: None,
                ..Default::default()
            })
            .await
            .map_err(|e| Error::Internal(format!("webgpu: no adapter: {e}")))?;
        let limits = adapter.limits();
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor { label: Some("gradcam"), required_limits: limits.clone(), ..Default::default() })
            .await
            .map_err(|e| Error::Internal(format!("webgpu: no device: {e}")))?;
        Ok(Gpu { device, queue, info: adapter.get_info(), limits })
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
