//! `ConvLab`: one convolution on the GPU outside any graph, with the kernels and weight layouts the
//! executor uses for that shape. For the kernel-level parity tests (awkward shapes against the CPU
//! kernels) and the per-shape benchmark (`bench --gpu-conv-shapes`). Native only: it blocks.

use super::device::Gpu;
pub use super::executor::Act;
use super::executor::{conv_block, Kernels};
use crate::clock::now_ms;
use crate::error::{Error, Result};
use crate::kernels::Conv2dGeom;
use wgpu::util::DeviceExt;

pub struct ConvLab {
    gpu: Gpu,
    kernels: Kernels,
}

/// A conv's output and the time per launch.
pub struct LabRun {
    pub output: Vec<f32>,
    /// Milliseconds per launch over the timed launches (submitted together, then waited for).
    pub ms: f64,
    /// CPU milliseconds this process spent per launch, all threads (a software adapter's work; on a
    /// shared machine steadier than `ms`), where the OS tells (Linux).
    pub cpu_ms: Option<f64>,
}

/// User + system CPU milliseconds of this process so far, all threads (Linux: /proc/self/stat, 10 ms ticks).
pub fn process_cpu_ms() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th overall.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks * 10.0)
}

impl ConvLab {
    /// The default adapter and the executor's kernels.
    pub fn new() -> Result<ConvLab> {
        pollster::block_on(async {
            let gpu = Gpu::request().await?;
            let kernels = Kernels::new(&gpu).await?;
            Ok(ConvLab { gpu, kernels })
        })
    }

    pub fn adapter_info(&self) -> &wgpu::AdapterInfo {
        &self.gpu.info
    }

    /// y = act(conv(x) + bias) for one image (`g.n` must be 1); `reps` timed launches after one untimed.
    pub fn forward(&self, g: &Conv2dGeom, x: &[f32], weight: &[f32], bias: &[f32], act: Act, reps: usize) -> Result<LabRun> {
        check(g, x.len(), g.cin * g.h * g.w, "input")?;
        let block = conv_block(&self.gpu, &self.kernels, "lab", g, weight, bias)?;
        let src = self.input(x);
        let dst = self.output(g.cout * g.out_h() * g.out_w());
        let d = self.kernels.conv_forward(&self.gpu, g, &block, &src, &dst, act);
        self.run(&d, &dst, g.cout * g.out_h() * g.out_w(), reps)
    }

    /// dx for dy = `gy` (`g.n` must be 1); `reps` timed launches after one untimed.
    pub fn input_grad(&self, g: &Conv2dGeom, gy: &[f32], weight: &[f32], reps: usize) -> Result<LabRun> {
        check(g, gy.len(), g.cout * g.out_h() * g.out_w(), "output gradient")?;
        let block = conv_block(&self.gpu, &self.kernels, "lab", g, weight, &[])?;
        let src = self.input(gy);
        let dst = self.output(g.cin * g.h * g.w);
        let d = self.kernels.conv_backward(&self.gpu, g, &block, &src, &dst, false);
        self.run(&d, &dst, g.cin * g.h * g.w, reps)
    }

    /// `onto` + dx, by the input gradient's accumulating launch (the one a backward walk runs where a
    /// value feeds several layers); one launch, read back, untimed.
    pub fn input_grad_onto(&self, g: &Conv2dGeom, gy: &[f32], weight: &[f32], onto: &[f32]) -> Result<Vec<f32>> {
        check(g, gy.len(), g.cout * g.out_h() * g.out_w(), "output gradient")?;
        check(g, onto.len(), g.cin * g.h * g.w, "gradient to add to")?;
        let block = conv_block(&self.gpu, &self.kernels, "lab", g, weight, &[])?;
        let src = self.input(gy);
        let usage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC;
        let onto_data: &[f32] = if onto.is_empty() { &[0.0] } else { onto };
        let dst = self.gpu.device.create_buffer_init(&wgpu::util::BufferInitDescriptor { label: Some("lab accumulator"), contents: bytemuck::cast_slice(onto_data), usage });
        let d = self.kernels.conv_backward(&self.gpu, g, &block, &src, &dst, true);
        Ok(self.run(&d, &dst, onto.len(), 0)?.output)
    }

    fn input(&self, data: &[f32]) -> wgpu::Buffer {
        let data: &[f32] = if data.is_empty() { &[0.0] } else { data };
        self.gpu.device.create_buffer_init(&wgpu::util::BufferInitDescriptor { label: Some("lab input"), contents: bytemuck::cast_slice(data), usage: wgpu::BufferUsages::STORAGE })
    }

    fn output(&self, floats: usize) -> wgpu::Buffer {
        let usage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC;
        self.gpu.device.create_buffer(&wgpu::BufferDescriptor { label: Some("lab output"), size: (floats.max(1) * 4) as u64, usage, mapped_at_creation: false })
    }

    /// One launch read back, then `reps` launches timed.
    fn run(&self, d: &super::executor::Dispatch, dst: &wgpu::Buffer, n: usize, reps: usize) -> Result<LabRun> {
        let device = &self.gpu.device;
        let size = (n.max(1) * 4) as u64;
        let staging =
            device.create_buffer(&wgpu::BufferDescriptor { label: Some("lab readback"), size, usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST, mapped_at_creation: false });
        let mut encoder = device.create_command_encoder(&Default::default());
        self.kernels.encode(&mut encoder, &[d]);
        encoder.copy_buffer_to_buffer(dst, 0, &staging, 0, size);
        self.gpu.queue.submit([encoder.finish()]);
        staging.slice(..).map_async(wgpu::MapMode::Read, |_| {});
        self.gpu.poll_wait();
        let output = {
            let view = staging.slice(..).get_mapped_range().map_err(|e| Error::Internal(format!("webgpu: readback failed: {e:?}")))?;
            bytemuck::cast_slice::<u8, f32>(&view)[..n].to_vec()
        };
        staging.unmap();
        self.gpu.check()?;
        let (t, cpu) = (now_ms(), process_cpu_ms());
        let mut encoder = device.create_command_encoder(&Default::default());
        self.kernels.encode(&mut encoder, &vec![d; reps]);
        self.gpu.queue.submit([encoder.finish()]);
        self.gpu.poll_wait();
        let reps = reps.max(1) as f64;
        let ms = (now_ms() - t) / reps;
        let cpu_ms = process_cpu_ms().zip(cpu).map(|(b, a)| (b - a) / reps);
        self.gpu.check()?;
        Ok(LabRun { output, ms, cpu_ms })
    }
}

fn check(g: &Conv2dGeom, len: usize, want: usize, what: &str) -> Result<()> {
    if g.n != 1 || len != want {
        return Err(Error::Input(format!("conv lab: one image of {want} {what} values expected, got n = {} and {len} values", g.n)));
    }
    Ok(())
}
