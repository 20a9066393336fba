//! `GpuExecutor`: one pass over the same `Graph` as the CPU executor, no per-architecture code.
//!
//! - Pipelines are created once per kernel at executor creation; weights are uploaded once per model.
//! - A `Plan` holds, for one input size, every node's activation and gradient buffer and the forward
//!   pass's bind groups; plans are pooled and reused across calls (a live `GpuPass` owns its plan, so
//!   a second pass never overwrites the first one's activations).
//! - Every node's activation stays on the GPU, so the backward (input gradients only) needs no second
//!   forward; the guided and deconvolution backwards differ only in the ReLU masks.
//! - Gradient fan-out (residual adds, concat inputs, flatten) is summed without atomics: each backward
//!   kernel gathers, and either writes (first contribution) or adds (later ones), in submission order.
//! - Readback is `map_async` awaited through a small future: the async core runs unchanged in the
//!   browser; natively `Executor` blocks on it with pollster.

use super::depthwise_forward;
use super::device::Gpu;
use crate::error::{Error, Result};
use crate::exec::ReluRule;
#[cfg(not(target_arch = "wasm32"))]
use crate::exec::{Executor, Pass};
use crate::fail;
use crate::feature_map::FeatureMap;
use crate::graph::shapes::Chw;
use crate::graph::{Graph, NodeId, Op};
use crate::kernels::Conv2dGeom;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use wgpu::util::DeviceExt;

const WORKGROUP: u32 = 64;
const MAX_POOLED_PLANS: usize = 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum K {
    ConvF,
    ConvB,
    ConvF4x4,
    ConvB4x4,
    /// Implicit GEMM (ungrouped convs) forward and input gradient, block shape `GEMM_BLOCKS[i]`,
    /// adding to the output if `true`.
    GemmF(usize, bool),
    GemmB(usize, bool),
    DwB(bool),
    /// The depthwise forward for `depthwise_forward::SHAPES[i]`.
    DwF(usize),
    LinF,
    LinB,
    MaxF,
    MaxB,
    AvgF,
    AvgB,
    ReluF,
    ReluB,
    Add,
    Copy,
}

/// The GEMM kernels' block shapes, (M4, PX, WG): 4 * M4 channels x PX pixels per invocation, WG
/// invocations per workgroup. One shader module each (`shaders`); `gemm_block` picks one per conv.
/// No 16 channels x 8 pixels (32 vec4 accumulators): faster once compiled on both software adapters
/// (lavapipe 14x14 1x1 convs 5.2 -> 6.5-7.5 GFLOP per CPU-second), but SwiftShader took 53-57 s to
/// compile its pipelines (EfficientNet-Lite0's first Grad-CAM in Chromium; 1.6 s with 8 x 4).
const GEMM_BLOCKS: [(usize, usize, usize); 12] = [(1, 4, 64), (1, 4, 16), (1, 2, 16), (1, 1, 16), (2, 4, 64), (2, 4, 16), (2, 2, 16), (2, 1, 16), (4, 4, 64), (4, 4, 16), (4, 2, 16), (4, 1, 16)];

/// Shader modules before the GEMM ones (`shaders`).
const FIXED_MODULES: usize = 5;

/// Every kernel as (kernel, shader module index, entry point).
fn kernel_list() -> Vec<(K, usize, &'static str)> {
    let mut list = vec![
        (K::ConvF, 0, "forward1x4"),
        (K::ConvB, 0, "backward1x4"),
        (K::ConvF4x4, 0, "forward4x4"),
        (K::ConvB4x4, 0, "backward4x4"),
        (K::LinF, 1, "forward"),
        (K::LinB, 1, "backward"),
        (K::MaxF, 2, "max_forward"),
        (K::MaxB, 2, "max_backward"),
        (K::AvgF, 2, "avg_forward"),
        (K::AvgB, 2, "avg_backward"),
        (K::ReluF, 3, "relu_forward"),
        (K::ReluB, 3, "relu_backward"),
        (K::Add, 3, "add"),
        (K::Copy, 3, "copy"),
        (K::DwB(false), 4, "backward"),
        (K::DwB(true), 4, "backward_acc"),
    ];
    for i in 0..GEMM_BLOCKS.len() {
        list.push((K::GemmF(i, false), FIXED_MODULES + i, "forward"));
        list.push((K::GemmF(i, true), FIXED_MODULES + i, "forward_acc"));
        list.push((K::GemmB(i, false), FIXED_MODULES + i, "backward"));
        list.push((K::GemmB(i, true), FIXED_MODULES + i, "backward_acc"));
    }
    for i in 0..depthwise_forward::SHAPES.len() {
        list.push((K::DwF(i), FIXED_MODULES + GEMM_BLOCKS.len() + i, "forward"));
    }
    list
}

impl K {
    /// Five bindings (layout 0: uniform, three read, one read-write) or four (layout 1).
    fn wide(self) -> bool {
        !matches!(self, K::MaxF | K::MaxB | K::AvgF | K::AvgB | K::ReluF | K::ReluB | K::Add | K::Copy)
    }
}

const GEMM_SRC: &str = include_str!("shaders/conv_gemm.wgsl");
/// The parameters and bindings the convolution shaders share, prepended to each.
const CONV_PARAMS: &str = include_str!("shaders/conv_params.wgsl");

/// The shader modules, (label, source): `FIXED_MODULES`, then the GEMM module once per block shape,
/// its M4 and PX prepended as constants.
fn shaders() -> Vec<(String, String)> {
    let fixed = [
        ("conv", include_str!("shaders/conv.wgsl")),
        ("linear", include_str!("shaders/linear.wgsl")),
        ("pool", include_str!("shaders/pool.wgsl")),
        ("eltwise", include_str!("shaders/eltwise.wgsl")),
        ("depthwise", include_str!("shaders/depthwise.wgsl")),
    ];
    // The depthwise kernel's marked lines run once per row of its 4-row strip.
    let mut out: Vec<(String, String)> = fixed
        .iter()
        .map(|(l, s)| {
            let s = if *l == "depthwise" { unroll(s, 4, 1) } else { s.to_string() };
            (l.to_string(), if matches!(*l, "conv" | "depthwise") { format!("{CONV_PARAMS}{s}") } else { s })
        })
        .collect();
    for (m4, px, wg) in GEMM_BLOCKS {
        let consts = format!("const M4: u32 = {m4}u;\nconst PX: u32 = {px}u;\nconst WG: u32 = {wg}u;\n");
        out.push((format!("conv_gemm_{}x{px}_{wg}", 4 * m4), consts + CONV_PARAMS + &unroll(GEMM_SRC, px, m4)));
    }
    for (k, s) in depthwise_forward::SHAPES {
        out.push((format!("depthwise_forward_{k}x{k}_{s}"), format!("{CONV_PARAMS}{}", depthwise_forward::shader(k, s))));
    }
    out
}

/// Expands conv_gemm.wgsl's marked lines: `//@j LINE` once per j < `px`, `//@m LINE` per m < `m4`,
/// `//@jm LINE` per (j, m), with {j} and {m} replaced; other lines as they are.
fn unroll(src: &str, px: usize, m4: usize) -> String {
    let mut out = String::with_capacity(src.len() * 2);
    for line in src.lines() {
        let indent = &line[..line.len() - line.trim_start().len()];
        let t = line.trim_start();
        let (js, ms, body) = if let Some(b) = t.strip_prefix("//@jm ") {
            (px, m4, b)
        } else if let Some(b) = t.strip_prefix("//@j ") {
            (px, 1, b)
        } else if let Some(b) = t.strip_prefix("//@m ") {
            (1, m4, b)
        } else {
            out.push_str(line);
            out.push('\n');
            continue;
        };
        for j in 0..js {
            for m in 0..ms {
                out.push_str(indent);
                out.push_str(&body.replace("{j}", &j.to_string()).replace("{m}", &m.to_string()));
                out.push('\n');
            }
        }
    }
    out
}

/// The GEMM block for `channels` output channels (input channels for the input gradient) over
/// `pixels` pixels: 16 channels unless there are at most 8 (then 8, or 4 for at most 4; 16 channels
/// per invocation measured 1.25-1.3x the GFLOP/s of 8 on lavapipe, one input load per 16 multiply-adds);
/// then the most pixels per invocation (more multiply-adds per load) and the largest workgroup that still leave 3/4 of the pixel slots busy.
/// Returns (index into `GEMM_BLOCKS`, pixel slots per workgroup).
fn gemm_block(channels: usize, pixels: usize) -> (usize, usize) {
    let m4 = if channels <= 4 {
        1
    } else if channels <= 8 {
        2
    } else {
        4
    };
    let busy = |slots: usize| 4 * pixels >= 3 * pixels.div_ceil(slots) * slots;
    let mine = || GEMM_BLOCKS.iter().enumerate().filter(|(_, b)| b.0 == m4);
    let (i, b) = mine().find(|(_, b)| busy(b.1 * b.2)).or_else(|| mine().next_back()).unwrap_or((0, &GEMM_BLOCKS[0]));
    (i, b.1 * b.2)
}

pub(super) struct Kernels {
    modules: Vec<wgpu::ShaderModule>,
    /// [uniform, read, read, read, read_write] and [uniform, read, read, read_write].
    layouts: [wgpu::BindGroupLayout; 2],
    pipeline_layouts: Vec<wgpu::PipelineLayout>,
    /// Pipelines are created on first use: a model needs a few of the GEMM variants, and a software
    /// adapter compiles each pipeline to machine code (SwiftShader: about 0.1 s each).
    pipelines: Mutex<HashMap<K, wgpu::ComputePipeline>>,
    /// Every conv on the direct kernels (`set_direct_convs`).
    direct_convs: bool,
}

impl Kernels {
    pub(super) async fn new(gpu: &Gpu) -> Result<Kernels> {
        let device = &gpu.device;
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let layout = |n: u32| {
            let entries: Vec<wgpu::BindGroupLayoutEntry> = (0..n)
                .map(|b| wgpu::BindGroupLayoutEntry {
                    binding: b,
                    visibility: wgpu::ShaderStages::COMPUTE,
                    ty: wgpu::BindingType::Buffer {
                        ty: if b == 0 { wgpu::BufferBindingType::Uniform } else { wgpu::BufferBindingType::Storage { read_only: b + 1 < n } },
                        has_dynamic_offset: false,
                        min_binding_size: None,
                    },
                    count: None,
                })
                .collect();
            device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor { label: None, entries: &entries })
        };
        let layouts = [layout(5), layout(4)];
        let pipeline_layouts: Vec<wgpu::PipelineLayout> =
            layouts.iter().map(|l| device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor { label: None, bind_group_layouts: &[Some(l)], immediate_size: 0 })).collect();
        let modules: Vec<wgpu::ShaderModule> =
            shaders().into_iter().map(|(name, src)| device.create_shader_module(wgpu::ShaderModuleDescriptor { label: Some(&name), source: wgpu::ShaderSource::Wgsl(src.into()) })).collect();
        if let Some(e) = scope.pop().await {
            return Err(Error::Internal(format!("webgpu: shader compilation failed: {e}")));
        }
        let direct_convs = DIRECT_CONVS.load(std::sync::atomic::Ordering::Relaxed);
        Ok(Kernels { modules, layouts, pipeline_layouts, pipelines: Mutex::new(HashMap::new()), direct_convs })
    }

    /// `k`'s pipeline, created on first use (an invalid one is reported by the device's error handler
    /// and fails the call that runs it, see `Gpu::check`).
    fn pipeline(&self, gpu: &Gpu, k: K) -> wgpu::ComputePipeline {
        let mut cache = match self.pipelines.lock() {
            Ok(c) => c,
            Err(p) => p.into_inner(),
        };
        cache
            .entry(k)
            .or_insert_with(|| {
                let (module, entry) = kernel_list().into_iter().find(|e| e.0 == k).map_or((0, "forward1x4"), |e| (e.1, e.2));
                gpu.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some(entry),
                    layout: Some(&self.pipeline_layouts[if k.wide() { 0 } else { 1 }]),
                    module: &self.modules[module],
                    entry_point: Some(entry),
                    compilation_options: Default::default(),
                    cache: None,
                })
            })
            .clone()
    }

    /// Records `dispatches`, in order, in one compute pass.
    pub(super) fn encode(&self, encoder: &mut wgpu::CommandEncoder, dispatches: &[&Dispatch]) {
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: None, timestamp_writes: None });
        for d in dispatches {
            pass.set_pipeline(&d.pipeline);
            pass.set_bind_group(0, &d.bind_group, &[]);
            pass.dispatch_workgroups(d.groups.0, d.groups.1, d.groups.2);
        }
    }
}

/// One recorded kernel launch.
pub(super) struct Dispatch {
    /// Read by the native profile only.
    #[cfg_attr(target_arch = "wasm32", allow(dead_code))]
    kernel: K,
    pipeline: wgpu::ComputePipeline,
    bind_group: wgpu::BindGroup,
    groups: (u32, u32, u32),
}

impl Kernels {
    /// A launch of `kernel` on `groups` workgroups with `params` (u32 fields) and `buffers` in binding order.
    fn launch(&self, gpu: &Gpu, kernel: K, params: &[u32], buffers: &[&wgpu::Buffer], groups: (u32, u32, u32)) -> Dispatch {
        let mut p = params.to_vec();
        p.resize(params.len().div_ceil(4).max(1) * 4, 0);
        let uniform = gpu.device.create_buffer_init(&wgpu::util::BufferInitDescriptor { label: None, contents: bytemuck::cast_slice(&p), usage: wgpu::BufferUsages::UNIFORM });
        let mut entries = vec![wgpu::BindGroupEntry { binding: 0, resource: uniform.as_entire_binding() }];
        for (i, b) in buffers.iter().enumerate() {
            entries.push(wgpu::BindGroupEntry { binding: i as u32 + 1, resource: b.as_entire_binding() });
        }
        let layout = &self.layouts[if kernel.wide() { 0 } else { 1 }];
        let bind_group = gpu.device.create_bind_group(&wgpu::BindGroupDescriptor { label: None, layout, entries: &entries });
        Dispatch { kernel, pipeline: self.pipeline(gpu, kernel), bind_group, groups }
    }

    /// A launch over `count` invocations, one per element: workgroups along x, what exceeds the
    /// per-dimension limit along y (the element kernels' indexing).
    fn launch_flat(&self, gpu: &Gpu, kernel: K, params: &[u32], buffers: &[&wgpu::Buffer], count: usize) -> Dispatch {
        let groups = (count as u32).div_ceil(WORKGROUP).max(1);
        let x = groups.min(gpu.limits.max_compute_workgroups_per_dimension.max(1));
        self.launch(gpu, kernel, params, buffers, (x, groups.div_ceil(x), 1))
    }

    /// A launch over `pixels` = (count, per workgroup) pixels (workgroups along x, overflow along z)
    /// times `y` blocks.
    fn launch_tiled(&self, gpu: &Gpu, kernel: K, params: &[u32], buffers: &[&wgpu::Buffer], pixels: (usize, usize), y: usize) -> Dispatch {
        let (count, per_group) = pixels;
        let groups = (count.div_ceil(per_group.max(1)) as u32).max(1);
        let x = groups.min(gpu.limits.max_compute_workgroups_per_dimension.max(1));
        self.launch(gpu, kernel, params, buffers, (x, y as u32, groups.div_ceil(x)))
    }

    /// The launch of a conv's forward, `x` -> `y`, with the kernel its shape calls for, followed by
    /// `act` (`Act::None`: the conv alone).
    pub(super) fn conv_forward(&self, gpu: &Gpu, g: &Conv2dGeom, w: &Block, x: &wgpu::Buffer, y: &wgpu::Buffer, act: Act) -> Dispatch {
        let mut params = conv_params(g, false);
        params[15] = act as u32;
        let buffers = [x, &w.weight, &w.bias, y];
        let plane = g.out_h() * g.out_w();
        let dw = depthwise_forward::shape_index(g.kh, g.kw, g.stride_h, g.stride_w);
        match (ConvPath::of(g, self.direct_convs), dw) {
            (ConvPath::Gemm, _) => {
                let (i, slots) = gemm_block(g.cout, plane);
                self.launch_tiled(gpu, K::GemmF(i, false), &params, &buffers, (plane, slots), g.cout.div_ceil(4 * GEMM_BLOCKS[i].0))
            }
            (ConvPath::Depthwise, Some(i)) => self.launch_flat(gpu, K::DwF(i), &params, &buffers, g.cout * depthwise_forward::tiles(g.out_h(), g.out_w())),
            _ => {
                let (kernel, count) = direct_forward_kernel(g);
                self.launch_flat(gpu, kernel, &params, &buffers, count)
            }
        }
    }

    /// The launch of a conv's input gradient, `gy` -> `gx` (added to `gx` when `acc`).
    pub(super) fn conv_backward(&self, gpu: &Gpu, g: &Conv2dGeom, w: &Block, gy: &wgpu::Buffer, gx: &wgpu::Buffer, acc: bool) -> Dispatch {
        let params = conv_params(g, acc);
        let weight = w.weight_t.as_ref().unwrap_or(&w.weight);
        let buffers = [gy, weight, &w.bias, gx];
        // Pixels per residue class of the strides, at most.
        let class = g.h.div_ceil(g.stride_h) * g.w.div_ceil(g.stride_w);
        let classes = g.stride_h * g.stride_w;
        match ConvPath::of(g, self.direct_convs) {
            ConvPath::Gemm if flips(g) => {
                // dx = gy convolved with the flipped, transposed filters (`weight_t`), padded by k - 1 - pad.
                let t = Conv2dGeom { cin: g.cout, h: g.out_h(), w: g.out_w(), cout: g.cin, pad_top: g.kh - 1 - g.pad_top, pad_left: g.kw - 1 - g.pad_left, ..*g };
                let mut params = conv_params(&t, acc);
                (params[4], params[5], params[14]) = (g.h as u32, g.w as u32, 1);
                let (i, slots) = gemm_block(g.cin, g.h * g.w);
                self.launch_tiled(gpu, K::GemmF(i, acc), &params, &buffers, (g.h * g.w, slots), g.cin.div_ceil(4 * GEMM_BLOCKS[i].0))
            }
            ConvPath::Gemm => {
                let (i, slots) = gemm_block(g.cin, class);
                self.launch_tiled(gpu, K::GemmB(i, acc), &params, &buffers, (class, slots), g.cin.div_ceil(4 * GEMM_BLOCKS[i].0) * classes)
            }
            ConvPath::Depthwise => match (flipped_depthwise(g), &w.weight_t) {
                // dx = gy convolved with each channel's flipped filter, padded by k - 1 - pad, on the
                // tiled forward kernel: it loads each value once per tile, the gathering `backward`
                // once per 4-row strip and tap column.
                (Some(i), Some(flipped)) => {
                    let t = Conv2dGeom { h: g.out_h(), w: g.out_w(), pad_top: g.kh - 1 - g.pad_top, pad_left: g.kw - 1 - g.pad_left, ..*g };
                    let mut params = conv_params(&t, acc);
                    (params[4], params[5], params[14]) = (g.h as u32, g.w as u32, 1);
                    self.launch_flat(gpu, K::DwF(i), &params, &[gy, flipped, &w.bias, gx], g.cin * depthwise_forward::tiles(g.h, g.w))
                }
                _ => self.launch_tiled(gpu, K::DwB(acc), &params, &buffers, (g.h.div_ceil(g.stride_h).div_ceil(4) * g.w.div_ceil(g.stride_w), 64), g.cin * classes),
            },
            ConvPath::Direct => {
                let (kernel, count) = direct_backward_kernel(g);
                self.launch_flat(gpu, kernel, &params, &buffers, count)
            }
        }
    }
}

/// Whether a GEMM conv's input gradient runs on the forward GEMM kernel, as the convolution of the
/// output gradient with the flipped filters: stride 1 and padding below the filter size (the forward
/// kernel measured about twice as fast on lavapipe as the gathering `backward`). Depends only on the
/// conv, not on the input size (stride-1 SAME padding is k - 1 in total at any size).
fn flips(g: &Conv2dGeom) -> bool {
    g.stride_h == 1 && g.stride_w == 1 && g.pad_top < g.kh && g.pad_left < g.kw
}

/// The generated forward kernel (`depthwise_forward::SHAPES`) that runs a depthwise conv's input
/// gradient with flipped filters, where it can: stride 1 and padding below the filter size, as for
/// `flips`, and a filter shape with a generated kernel.
fn flipped_depthwise(g: &Conv2dGeom) -> Option<usize> {
    depthwise_forward::shape_index(g.kh, g.kw, g.stride_h, g.stride_w).filter(|_| g.is_depthwise() && flips(g))
}

/// Which kernels run a conv: implicit GEMM when ungrouped; for one filter per channel the direct
/// forward and the depthwise input gradient; the direct kernels for other grouped convs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ConvPath {
    Gemm,
    Depthwise,
    Direct,
}

/// See `set_direct_convs`.
static DIRECT_CONVS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// For benchmarks: executors and labs created after this call (it is read once, by `Kernels::new`) run every conv on the direct kernels
/// (one invocation per 4 x 4 or 1 x 4 output block, weights in PyTorch's layout), the reference the
/// GEMM and depthwise kernels are measured against.
pub fn set_direct_convs(on: bool) {
    DIRECT_CONVS.store(on, std::sync::atomic::Ordering::Relaxed);
}

impl ConvPath {
    fn of(g: &Conv2dGeom, direct: bool) -> ConvPath {
        if direct {
            ConvPath::Direct
        } else if g.groups == 1 {
            ConvPath::Gemm
        } else if g.is_depthwise() {
            ConvPath::Depthwise
        } else {
            ConvPath::Direct
        }
    }
}

/// A conv's weights as its kernels read them. GEMM: `weight` is W as [(ci * kh + ky) * kw + kx][cout
/// padded to 16], `weight_t` as [(co * kh + ky) * kw + kx][cin padded to 16] (the taps reversed where
/// `flips`), bias padded to 16 (see conv_gemm.wgsl). Otherwise PyTorch's layout and no `weight_t`.
pub(super) fn conv_block(gpu: &Gpu, kernels: &Kernels, label: &str, g: &Conv2dGeom, weight: &[f32], bias: &[f32]) -> Result<Block> {
    let upload = |data: &[f32]| {
        let data: &[f32] = if data.is_empty() { &[0.0; 4] } else { data };
        gpu.device.create_buffer_init(&wgpu::util::BufferInitDescriptor { label: Some(label), contents: bytemuck::cast_slice(data), usage: wgpu::BufferUsages::STORAGE })
    };
    let rows = g.cout as u32;
    let mut b = bias.to_vec();
    if ConvPath::of(g, kernels.direct_convs) != ConvPath::Gemm {
        gpu.fits(&format!("the weights of '{label}'"), weight.len())?;
        b.resize(g.cout, 0.0);
        // A depthwise filter flipped: its taps in reverse order, per channel (`flipped_depthwise`).
        let kk = g.kh * g.kw;
        let flipped = (flipped_depthwise(g).is_some() && !kernels.direct_convs).then(|| weight.chunks_exact(kk).flat_map(|f| f.iter().rev().copied()).collect::<Vec<f32>>());
        return Ok(Block { weight: upload(weight), bias: upload(&b), weight_t: flipped.map(|f| upload(&f)), row0: 0, rows });
    }
    let (cin, cout, kk) = (g.cin, g.cout, g.kh * g.kw);
    let (cin8, cout8) = (cin.next_multiple_of(16), cout.next_multiple_of(16));
    gpu.fits(&format!("the weights of '{label}'"), cin8.max(cin) * cout8 * kk)?;
    let mut fwd = vec![0.0f32; cin * kk * cout8];
    let mut bwd = vec![0.0f32; cout * kk * cin8];
    // The input gradient's taps in reverse order where it runs as a forward conv (`flips`).
    let tap_t = |t: usize| if flips(g) { kk - 1 - t } else { t };
    for co in 0..cout {
        for ci in 0..cin {
            for t in 0..kk {
                let v = weight[(co * cin + ci) * kk + t];
                fwd[(ci * kk + t) * cout8 + co] = v;
                bwd[(co * kk + tap_t(t)) * cin8 + ci] = v;
            }
        }
    }
    b.resize(cout8, 0.0);
    Ok(Block { weight: upload(&fwd), bias: upload(&b), weight_t: Some(upload(&bwd)), row0: 0, rows })
}

/// Buffers and forward launches for one input size.
struct Plan {
    h: usize,
    w: usize,
    shapes: Vec<Chw>,
    acts: Vec<wgpu::Buffer>,
    grads: Vec<wgpu::Buffer>,
    forward: Vec<Dispatch>,
    /// Where a ReLU / ReLU6 node is fused into the conv or residual sum before it (its only
    /// consumer), that launch writes the activation's buffer and its own stays unwritten: (conv or sum
    /// node, index of the fused launch in `forward`, the two launches unfused), the two run instead
    /// when the node's own output is read (`Inner::forward`).
    unfused: Vec<(NodeId, usize, [Dispatch; 2])>,
    /// Backward launches by (variable node, ReLU rule), built on first use: explaining another class or
    /// image of the same size writes only the target weights and re-submits them.
    backward: Mutex<HashMap<(NodeId, ReluRule), Arc<Backward>>>,
}

/// The launches of one backward pass, and whether any of them writes the variable's gradient (if
/// none does, the target does not depend on the variable and its gradient is cleared to zero).
struct Backward {
    dispatches: Vec<Dispatch>,
    reaches_var: bool,
}

fn numel(s: Chw) -> usize {
    s.0 * s.1 * s.2
}

pub(super) struct Block {
    weight: wgpu::Buffer,
    bias: wgpu::Buffer,
    /// A second layout of a conv's weights, for its input gradient (see `conv_block`).
    weight_t: Option<wgpu::Buffer>,
    row0: u32,
    rows: u32,
}

struct Inner {
    gpu: Gpu,
    graph: Arc<Graph>,
    kernels: Kernels,
    /// Per conv / linear node, (weight, bias, first row, rows) blocks: one for a conv, as many as the
    /// binding limit needs for a large linear layer.
    weights: Vec<Vec<Block>>,
    /// Bound where a kernel has no use for a binding.
    dummy: wgpu::Buffer,
    plans: Mutex<Vec<Plan>>,
}

pub struct GpuExecutor {
    inner: Arc<Inner>,
}

impl Inner {
    fn storage(&self, label: &str, floats: usize) -> wgpu::Buffer {
        self.gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: (floats.max(1) * 4) as u64,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    }

    /// A launch of `kernel` over `count` invocations (one per element) with `params` and `buffers` in binding order.
    fn dispatch(&self, kernel: K, params: &[u32], buffers: &[&wgpu::Buffer], count: usize) -> Dispatch {
        self.kernels.launch_flat(&self.gpu, kernel, params, buffers, count)
    }

    fn weights(&self, i: NodeId) -> Result<&[Block]> {
        match self.weights.get(i) {
            Some(b) if !b.is_empty() => Ok(b),
            _ => Err(Error::Internal(format!("webgpu: no weights for node {i}"))),
        }
    }

    fn plan(&self, h: usize, w: usize) -> Result<Plan> {
        {
            let mut pool = self.plans.lock().map_err(|_| Error::Internal("webgpu: plan pool poisoned".into()))?;
            if let Some(k) = pool.iter().position(|p| p.h == h && p.w == w) {
                return Ok(pool.swap_remove(k));
            }
        }
        let g = &self.graph;
        let shapes = g.shapes(h, w)?;
        for (node, s) in g.nodes.iter().zip(&shapes) {
            self.gpu.fits(&format!("layer '{}'", node.name), numel(*s))?;
        }
        let acts: Vec<wgpu::Buffer> = g.nodes.iter().zip(&shapes).map(|(n, s)| self.storage(&n.name, numel(*s))).collect();
        let grads: Vec<wgpu::Buffer> = g.nodes.iter().zip(&shapes).map(|(n, s)| self.storage(&n.name, numel(*s))).collect();
        let mut forward = Vec::new();
        let mut unfused = Vec::new();
        let fused = fused_activations(g);
        for (i, node) in g.nodes.iter().enumerate() {
            let out = &acts[i];
            let src = |k: usize| &acts[node.inputs[k]];
            let ins = |k: usize| shapes[node.inputs[k]];
            let len = numel(shapes[i]) as u32;
            match &node.op {
                Op::Input => {}
                Op::Conv(c) => {
                    let (_, ih, iw) = ins(0);
                    let geo = c.geom(1, ih, iw);
                    let w = &self.weights(i)?[0];
                    match fused.iter().position(|f| f.0 == i) {
                        Some(k) => {
                            let (_, a, act) = fused[k];
                            let (mode, len) = ((act == Act::Relu6) as u32, numel(shapes[a]) as u32);
                            let plain = self.kernels.conv_forward(&self.gpu, &geo, w, src(0), out, Act::None);
                            let relu = self.dispatch(K::ReluF, &[len, mode, 0, 0, 0, 0], &[out, &self.dummy, &acts[a]], len as usize);
                            unfused.push((i, forward.len(), [plain, relu]));
                            forward.push(self.kernels.conv_forward(&self.gpu, &geo, w, src(0), &acts[a], act));
                        }
                        None => forward.push(self.kernels.conv_forward(&self.gpu, &geo, w, src(0), out, Act::None)),
                    }
                }
                Op::Linear(l) => {
                    for b in self.weights(i)? {
                        forward.push(self.dispatch(K::LinF, &[l.in_features as u32, b.rows, 0, b.row0], &[src(0), &b.weight, &b.bias, out], b.rows as usize));
                    }
                }
                Op::Relu | Op::Relu6 if fused.iter().any(|f| f.1 == i) => {}
                Op::Relu | Op::Relu6 => {
                    let mode = matches!(node.op, Op::Relu6) as u32;
                    forward.push(self.dispatch(K::ReluF, &[len, mode, 0, 0, 0, 0], &[src(0), &self.dummy, out], len as usize));
                }
                Op::MaxPool(_) | Op::AdaptiveAvgPool { .. } => {
                    let (kernel, p) = pool_params(&node.op, ins(0), shapes[i], false, true);
                    forward.push(self.dispatch(kernel, &p, &[src(0), &self.dummy, out], len as usize));
                }
                Op::Flatten => forward.push(self.dispatch(K::Copy, &[len, 0, 0, 0, 0, 0], &[src(0), &self.dummy, out], len as usize)),
                Op::Add => {
                    let add = |act: Act, dst: &wgpu::Buffer| self.dispatch(K::Add, &[len, act as u32, 0, 0, 0, 0], &[src(0), src(1), dst], len as usize);
                    match fused.iter().find(|f| f.0 == i) {
                        Some(&(_, a, act)) => {
                            let mode = (act == Act::Relu6) as u32;
                            let relu = self.dispatch(K::ReluF, &[len, mode, 0, 0, 0, 0], &[out, &self.dummy, &acts[a]], len as usize);
                            unfused.push((i, forward.len(), [add(Act::None, out), relu]));
                            forward.push(add(act, &acts[a]));
                        }
                        None => forward.push(add(Act::None, out)),
                    }
                }
                Op::Concat => {
                    let mut off = 0u32;
                    for k in 0..node.inputs.len() {
                        let n = numel(ins(k)) as u32;
                        forward.push(self.dispatch(K::Copy, &[n, 0, 0, 0, 0, off], &[src(k), &self.dummy, out], n as usize));
                        off += n;
                    }
                }
                other => return fail!(Internal, "webgpu: no forward kernel for '{}'", other.kind()),
            }
        }
        Ok(Plan { h, w, shapes, acts, grads, forward, unfused, backward: Mutex::new(HashMap::new()) })
    }

    fn give_back(&self, plan: Plan) {
        if let Ok(mut pool) = self.plans.lock() {
            if pool.len() < MAX_POOLED_PLANS {
                pool.push(plan);
            }
        }
    }

    fn encode(&self, encoder: &mut wgpu::CommandEncoder, dispatches: &[Dispatch]) {
        self.kernels.encode(encoder, &dispatches.iter().collect::<Vec<_>>());
    }

    /// Runs the forward pass of one 3 x h x w image on `plan` and reads back the given nodes' outputs.
    async fn forward(&self, plan: &Plan, input: &[f32], read: &[NodeId]) -> Result<Vec<Vec<f32>>> {
        self.gpu.queue.write_buffer(&plan.acts[0], 0, bytemuck::cast_slice(input));
        let mut encoder = self.gpu.device.create_command_encoder(&Default::default());
        let mut launches: Vec<&Dispatch> = Vec::with_capacity(plan.forward.len() + 2 * read.len());
        for (k, d) in plan.forward.iter().enumerate() {
            match plan.unfused.iter().find(|u| u.1 == k && read.contains(&u.0)) {
                Some(u) => launches.extend(&u.2),
                None => launches.push(d),
            }
        }
        self.kernels.encode(&mut encoder, &launches);
        let bufs: Vec<(&wgpu::Buffer, usize)> = read.iter().map(|&i| (&plan.acts[i], numel(plan.shapes[i]))).collect();
        self.read(encoder, &bufs).await
    }

    /// d(target . logits) / d(node `var`), on the activations `plan` holds.
    async fn backward(&self, plan: &Plan, var: NodeId, target: &[f32], rule: ReluRule) -> Result<Vec<f32>> {
        let g = &self.graph;
        if target.len() != g.num_classes {
            return Err(Error::Option(format!("the target weights have {} entries, the model has {} classes", target.len(), g.num_classes)));
        }
        let cached = plan.backward.lock().map_err(|_| Error::Internal("webgpu: backward cache poisoned".into()))?.get(&(var, rule)).cloned();
        let launches = match cached {
            Some(b) => b,
            None => {
                let b = Arc::new(self.backward_launches(plan, var, rule)?);
                if let Ok(mut cache) = plan.backward.lock() {
                    cache.insert((var, rule), b.clone());
                }
                b
            }
        };
        // The launches read the target from the output node's gradient buffer.
        self.gpu.queue.write_buffer(&plan.grads[g.output()], 0, bytemuck::cast_slice(target));
        let mut encoder = self.gpu.device.create_command_encoder(&Default::default());
        if !launches.reaches_var {
            encoder.clear_buffer(&plan.grads[var], 0, None);
        }
        self.encode(&mut encoder, &launches.dispatches);
        let mut r = self.read(encoder, &[(&plan.grads[var], numel(plan.shapes[var]))]).await?;
        Ok(r.pop().unwrap_or_default())
    }

    /// Builds the launches of the backward from the output to node `var` (see `Backward`).
    fn backward_launches(&self, plan: &Plan, var: NodeId, rule: ReluRule) -> Result<Backward> {
        let g = &self.graph;
        let out = g.output();
        // Nodes whose value depends on `var`: only they carry gradients.
        let mut needs = vec![false; g.nodes.len()];
        needs[var] = true;
        for i in var + 1..g.nodes.len() {
            needs[i] = g.nodes[i].inputs.iter().any(|&j| needs[j]);
        }
        let mut written = vec![false; g.nodes.len()];
        let mut dispatches = Vec::new();
        written[out] = needs[out];
        let (acts, grads, shapes) = (&plan.acts, &plan.grads, &plan.shapes);
        for i in (var + 1..=out).rev() {
            if !needs[i] || !written[i] {
                continue;
            }
            let node = &g.nodes[i];
            let gy = &grads[i];
            let mut off = 0u32;
            for &j in &node.inputs {
                let n = numel(shapes[j]) as u32;
                let acc = written[j];
                if !needs[j] {
                    off += n;
                    continue;
                }
                let gx = &grads[j];
                let d = match &node.op {
                    Op::Input => continue,
                    Op::Conv(c) => {
                        let geo = c.geom(1, shapes[j].1, shapes[j].2);
                        self.kernels.conv_backward(&self.gpu, &geo, &self.weights(i)?[0], gy, gx, acc)
                    }
                    Op::Linear(l) => {
                        let blocks = self.weights(i)?;
                        let (last, rest) = blocks.split_last().ok_or_else(|| Error::Internal("webgpu: empty linear".into()))?;
                        for (k, b) in rest.iter().enumerate() {
                            let acc = acc || k > 0;
                            dispatches.push(self.dispatch(K::LinB, &[l.in_features as u32, b.rows, acc as u32, b.row0], &[gy, &b.weight, &b.bias, gx], n as usize));
                        }
                        let acc = acc || !rest.is_empty();
                        self.dispatch(K::LinB, &[l.in_features as u32, last.rows, acc as u32, last.row0], &[gy, &last.weight, &last.bias, gx], n as usize)
                    }
                    Op::Relu | Op::Relu6 => {
                        let mode = matches!(node.op, Op::Relu6) as u32;
                        // The shader's rule codes: 0 plain, 1 guided, 2 deconvolution.
                        let code = match rule {
                            ReluRule::Plain => 0,
                            ReluRule::Guided => 1,
                            ReluRule::Deconv => 2,
                        };
                        // The mask from the ReLU's output, not its input (a fused conv leaves that
                        // unwritten): y > 0 exactly where x > 0, and y < 6 where x < 6.
                        self.dispatch(K::ReluB, &[n, mode, code, acc as u32, 0, 0], &[gy, &acts[i], gx], n as usize)
                    }
                    Op::MaxPool(_) | Op::AdaptiveAvgPool { .. } => {
                        let (kernel, p) = pool_params(&node.op, shapes[j], shapes[i], acc, false);
                        let aux = if kernel == K::MaxB { &acts[j] } else { &self.dummy };
                        self.dispatch(kernel, &p, &[gy, aux, gx], n as usize)
                    }
                    Op::Flatten | Op::Add => self.dispatch(K::Copy, &[n, 0, 0, acc as u32, 0, 0], &[gy, &self.dummy, gx], n as usize),
                    Op::Concat => self.dispatch(K::Copy, &[n, 0, 0, acc as u32, off, 0], &[gy, &self.dummy, gx], n as usize),
                    other => return fail!(Internal, "webgpu: no backward kernel for '{}'", other.kind()),
                };
                dispatches.push(d);
                written[j] = true;
                off += n;
            }
        }
        Ok(Backward { dispatches, reaches_var: written[var] })
    }

    /// Submits `encoder` plus copies of `bufs` into staging buffers, and awaits their mapping.
    async fn read(&self, mut encoder: wgpu::CommandEncoder, bufs: &[(&wgpu::Buffer, usize)]) -> Result<Vec<Vec<f32>>> {
        let device = &self.gpu.device;
        let staging: Vec<wgpu::Buffer> = bufs
            .iter()
            .map(|&(src, n)| {
                let size = (n.max(1) * 4) as u64;
                let dst =
                    device.create_buffer(&wgpu::BufferDescriptor { label: Some("readback"), size, usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST, mapped_at_creation: false });
                encoder.copy_buffer_to_buffer(src, 0, &dst, 0, size);
                dst
            })
            .collect();
        self.gpu.queue.submit([encoder.finish()]);
        let mut out = Vec::with_capacity(bufs.len());
        for (buf, &(_, n)) in staging.iter().zip(bufs) {
            let (tx, rx) = oneshot();
            buf.slice(..).map_async(wgpu::MapMode::Read, tx);
            self.gpu.poll_wait();
            rx.await.map_err(|e| Error::Internal(format!("webgpu: readback failed: {e}")))?;
            let view = buf.slice(..).get_mapped_range().map_err(|e| Error::Internal(format!("webgpu: readback failed: {e:?}")))?;
            out.push(bytemuck::cast_slice::<u8, f32>(&view)[..n].to_vec());
            drop(view);
            buf.unmap();
        }
        self.gpu.check()?;
        Ok(out)
    }
}

/// The direct forward kernel for a grouped conv and how many invocations it takes: blocks of 4 output
/// channels x 4 pixels of a row where the filters come in fours, else 1 channel x 4 pixels.
fn direct_forward_kernel(g: &Conv2dGeom) -> (K, usize) {
    let blocks_per_row = g.out_w().div_ceil(4);
    if (g.cout / g.groups).is_multiple_of(4) {
        (K::ConvF4x4, g.cout / 4 * g.out_h() * blocks_per_row)
    } else {
        (K::ConvF, g.cout * g.out_h() * blocks_per_row)
    }
}

/// The direct input-gradient kernel for a grouped conv and its invocation count: blocks of 4 input
/// channels x 4 pixels of a row where the channels of a group come in fours, else 1 channel x 4 pixels.
fn direct_backward_kernel(g: &Conv2dGeom) -> (K, usize) {
    let blocks_per_row = g.w.div_ceil(4);
    if (g.cin / g.groups).is_multiple_of(4) {
        (K::ConvB4x4, g.cin / 4 * g.h * blocks_per_row)
    } else {
        (K::ConvB, g.cin * g.h * blocks_per_row)
    }
}

/// The activation a conv kernel applies to what it stores (`Params.act`): the code of a ReLU or
/// ReLU6 node fused into the conv before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    None = 0,
    Relu = 1,
    Relu6 = 2,
}

/// The conv kernels' `Params`; the 15th and 16th fields (no_bias, act) are 0 here.
fn conv_params(g: &Conv2dGeom, acc: bool) -> Vec<u32> {
    [g.cin, g.h, g.w, g.cout, g.out_h(), g.out_w(), g.kh, g.kw, g.stride_h, g.stride_w, g.pad_top, g.pad_left, g.groups, acc as usize, 0, 0].iter().map(|&v| v as u32).collect()
}

/// (kernel, params) of a max or adaptive average pool from input shape `x` to output shape `y`.
fn pool_params(op: &Op, x: Chw, y: Chw, acc: bool, forward: bool) -> (K, Vec<u32>) {
    let (k, s, pad, kernel) = match op {
        Op::MaxPool(m) => (m.kernel, m.stride, m.padding, if forward { K::MaxF } else { K::MaxB }),
        _ => (1, 1, 0, if forward { K::AvgF } else { K::AvgB }),
    };
    let p = [x.0, x.1, x.2, y.1, y.2, k, s, pad, acc as usize].iter().map(|&v| v as u32).chain([f32::NEG_INFINITY.to_bits()]).collect();
    (kernel, p)
}

/// The ReLU / ReLU6 nodes whose work the conv or residual sum before them does (`Plan::unfused`):
/// (conv or sum, activation node, activation), where the activation is its only consumer.
fn fused_activations(graph: &Graph) -> Vec<(NodeId, NodeId, Act)> {
    let mut users = vec![0usize; graph.nodes.len()];
    for n in &graph.nodes {
        for &j in &n.inputs {
            users[j] += 1;
        }
    }
    let mut out = Vec::new();
    for (a, n) in graph.nodes.iter().enumerate() {
        let act = match n.op {
            Op::Relu => Act::Relu,
            Op::Relu6 => Act::Relu6,
            _ => continue,
        };
        if let [c] = n.inputs[..] {
            if matches!(graph.nodes[c].op, Op::Conv(_) | Op::Add) && users[c] == 1 {
                out.push((c, a, act));
            }
        }
    }
    out
}

/// A single-use channel whose receiving end is a future (map_async's callback -> await).
fn oneshot<T: Send + 'static>() -> (impl FnOnce(T) + Send + 'static, OneshotRx<T>) {
    let shared = Arc::new(Mutex::new((None::<T>, None::<Waker>)));
    let tx_shared = shared.clone();
    let tx = move |v: T| {
        if let Ok(mut s) = tx_shared.lock() {
            s.0 = Some(v);
            if let Some(w) = s.1.take() {
                w.wake();
            }
        }
    };
    (tx, OneshotRx(shared))
}

struct OneshotRx<T>(Arc<Mutex<(Option<T>, Option<Waker>)>>);

impl<T> Future for OneshotRx<T> {
    type Output = T;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let mut s = match self.0.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        match s.0.take() {
            Some(v) => Poll::Ready(v),
            None => {
                s.1 = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

/// Whether the WGSL kernels cover an op, forward and backward; a graph with any other op runs on the CPU.
fn has_kernels(op: &Op) -> bool {
    matches!(op, Op::Input | Op::Conv(_) | Op::Linear(_) | Op::Relu | Op::Relu6 | Op::MaxPool(_) | Op::AdaptiveAvgPool { .. } | Op::Flatten | Op::Add | Op::Concat)
}

/// Whether each node's value is a C x H x W map (rank 4 on the CPU) rather than a feature vector.
fn spatial(graph: &Graph) -> Vec<bool> {
    let mut s: Vec<bool> = Vec::with_capacity(graph.nodes.len());
    for n in &graph.nodes {
        let v = match n.op {
            Op::Input => true,
            Op::Flatten | Op::Linear(_) => false,
            _ => n.inputs.first().is_some_and(|&j| s[j]),
        };
        s.push(v);
    }
    s
}

impl GpuExecutor {
    /// The default adapter, then `with_gpu`.
    pub async fn new_async(graph: Arc<Graph>) -> Result<GpuExecutor> {
        Self::with_gpu(Gpu::request().await?, graph).await
    }

    /// Compiles the kernels and uploads the weights.
    pub async fn with_gpu(gpu: Gpu, graph: Arc<Graph>) -> Result<GpuExecutor> {
        if let Some(node) = graph.nodes.iter().find(|n| !has_kernels(&n.op)) {
            return fail!(Option, "the WebGPU backend has no kernel yet for '{}' (layer '{}'); this model runs on the CPU", node.op.kind(), node.name);
        }
        let kernels = Kernels::new(&gpu).await?;
        let mut weights = Vec::with_capacity(graph.nodes.len());
        let upload = |label: &str, data: &[f32]| {
            let data: &[f32] = if data.is_empty() { &[0.0] } else { data };
            gpu.device.create_buffer_init(&wgpu::util::BufferInitDescriptor { label: Some(label), contents: bytemuck::cast_slice(data), usage: wgpu::BufferUsages::STORAGE })
        };
        for node in &graph.nodes {
            weights.push(match &node.op {
                // The layout depends only on the groups, not on the input size.
                Op::Conv(c) => vec![conv_block(&gpu, &kernels, &node.name, &c.geom(1, c.kh, c.kw), &c.weight, &c.bias)?],
                Op::Linear(l) => {
                    // Row blocks that each fit one binding (VGG's 25088 x 4096 is 411 MB).
                    gpu.fits(&format!("one row of the weights of '{}'", node.name), l.in_features)?;
                    let per_block = ((gpu.max_binding() / (l.in_features.max(1) * 4) as u64) as usize).clamp(1, l.out_features.max(1));
                    let mut bias = l.bias.clone();
                    bias.resize(l.out_features, 0.0);
                    (0..l.out_features)
                        .step_by(per_block)
                        .map(|r0| {
                            let r1 = (r0 + per_block).min(l.out_features);
                            Block {
                                weight: upload(&node.name, &l.weight[r0 * l.in_features..r1 * l.in_features]),
                                bias: upload(&node.name, &bias[r0..r1]),
                                weight_t: None,
                                row0: r0 as u32,
                                rows: (r1 - r0) as u32,
                            }
                        })
                        .collect()
                }
                _ => Vec::new(),
            });
        }
        let dummy = gpu.device.create_buffer(&wgpu::BufferDescriptor { label: Some("dummy"), size: 16, usage: wgpu::BufferUsages::STORAGE, mapped_at_creation: false });
        // In wasm, WebGPU handles are not Send: the Arc is only shared by this thread's passes.
        #[allow(clippy::arc_with_non_send_sync)]
        Ok(GpuExecutor { inner: Arc::new(Inner { gpu, graph, kernels, weights, dummy, plans: Mutex::new(Vec::new()) }) })
    }

    pub fn adapter_info(&self) -> &wgpu::AdapterInfo {
        &self.inner.gpu.info
    }

    pub fn gpu(&self) -> &Gpu {
        &self.inner.gpu
    }

    /// The forward pass of one 3 x H x W input, keeping the activations of `layer` (and every other node's, on the GPU).
    pub async fn start_async(&self, input: FeatureMap, layer: NodeId) -> Result<GpuPass> {
        let inner = &self.inner;
        let graph = &inner.graph;
        if input.channels != 3 {
            return Err(Error::Input(format!("expected a 3-channel input, got {}", input.channels)));
        }
        if layer >= graph.nodes.len() || !spatial(graph)[layer] {
            let name = graph.nodes.get(layer).map(|n| n.name.as_str()).unwrap_or("?");
            return Err(Error::Option(format!("layer '{name}' is not a spatial layer (it has no H x W map); pick a conv, pool or block")));
        }
        let plan = inner.plan(input.height, input.width)?;
        let result = inner.forward(&plan, &input.data, &[graph.output(), layer]).await;
        let mut read = match result {
            Ok(r) => r,
            Err(e) => {
                inner.give_back(plan);
                return Err(e);
            }
        };
        let (c, h, w) = plan.shapes[layer];
        let activations = FeatureMap::new(c, h, w, read.pop().unwrap_or_default());
        let logits = read.pop().unwrap_or_default();
        Ok(GpuPass { inner: inner.clone(), plan: Some(plan), layer, logits, activations })
    }

    /// Inputs per batched forward when the caller does not choose: each batch is a round trip to
    /// the device (`Executor::forward_batch`).
    pub const FORWARD_BATCH: usize = 16;

    /// Logits of `n` inputs of 3 x h x w each (row-major n x classes).
    pub async fn logits_batch_async(&self, inputs: &[f32], n: usize, h: usize, w: usize) -> Result<Vec<f32>> {
        let per = 3 * h * w;
        if inputs.len() != n * per {
            return Err(Error::Input(format!("{} values for {n} inputs of 3x{h}x{w}", inputs.len())));
        }
        let inner = &self.inner;
        let plan = inner.plan(h, w)?;
        let mut out = Vec::with_capacity(n * inner.graph.num_classes);
        for img in inputs.chunks_exact(per.max(1)).take(n) {
            match inner.forward(&plan, img, &[inner.graph.output()]).await {
                Ok(mut r) => out.extend(r.pop().unwrap_or_default()),
                Err(e) => {
                    inner.give_back(plan);
                    return Err(e);
                }
            }
        }
        inner.give_back(plan);
        Ok(out)
    }
}

pub struct GpuPass {
    inner: Arc<Inner>,
    plan: Option<Plan>,
    layer: NodeId,
    logits: Vec<f32>,
    activations: FeatureMap,
}

impl GpuPass {
    /// Class scores before softmax.
    pub fn logits(&self) -> &[f32] {
        &self.logits
    }

    /// The target layer's activations.
    pub fn activations(&self) -> &FeatureMap {
        &self.activations
    }

    fn plan(&self) -> Result<&Plan> {
        self.plan.as_ref().ok_or_else(|| Error::Internal("webgpu: pass has no plan".into()))
    }

    pub async fn layer_gradient_async(&mut self, target: &[f32]) -> Result<FeatureMap> {
        let data = self.inner.backward(self.plan()?, self.layer, target, ReluRule::Plain).await?;
        let (c, h, w) = (self.activations.channels, self.activations.height, self.activations.width);
        Ok(FeatureMap::new(c, h, w, data))
    }

    pub async fn input_gradient_async(&mut self, target: &[f32], rule: ReluRule) -> Result<FeatureMap> {
        let plan = self.plan()?;
        let (h, w) = (plan.h, plan.w);
        let data = self.inner.backward(plan, 0, target, rule).await?;
        Ok(FeatureMap::new(3, h, w, data))
    }
}

impl Drop for GpuPass {
    fn drop(&mut self) {
        if let Some(plan) = self.plan.take() {
            self.inner.give_back(plan);
        }
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl GpuExecutor {
    /// Blocking `new_async`.
    pub fn new(graph: Arc<Graph>) -> Result<GpuExecutor> {
        pollster::block_on(Self::new_async(graph))
    }
}

/// One row of `GpuExecutor::profile`: a kernel's launches in one direction of a pass.
#[cfg(not(target_arch = "wasm32"))]
pub struct ProfileRow {
    /// "forward" or "backward", and the kernel.
    pub what: String,
    pub launches: usize,
    /// Wall and CPU (this process, all threads) milliseconds per pass, summed over the launches.
    pub ms: f64,
    pub cpu_ms: f64,
}

#[cfg(not(target_arch = "wasm32"))]
impl GpuExecutor {
    /// Where a pass's time goes: one 3 x h x w forward and the plain backward to `layer`, each launch
    /// submitted alone `reps` times and waited for, summed by kernel. The last two rows are the whole
    /// forward and backward submitted together (per pass), for the launches' overhead.
    pub fn profile(&self, h: usize, w: usize, layer: NodeId, reps: usize) -> Result<Vec<ProfileRow>> {
        use super::lab::process_cpu_ms;
        let inner = &self.inner;
        let plan = inner.plan(h, w)?;
        let target = vec![1.0 / inner.graph.num_classes as f32; inner.graph.num_classes];
        pollster::block_on(inner.forward(&plan, &vec![0.5; 3 * h * w], &[inner.graph.output()]))?;
        pollster::block_on(inner.backward(&plan, layer, &target, ReluRule::Plain))?;
        let backward = inner.backward_launches(&plan, layer, ReluRule::Plain)?;
        let reps = reps.max(1);
        let time = |ds: &[&Dispatch]| -> (f64, f64) {
            let (t, c) = (crate::clock::now_ms(), process_cpu_ms().unwrap_or(0.0));
            for _ in 0..reps {
                let mut encoder = inner.gpu.device.create_command_encoder(&Default::default());
                inner.kernels.encode(&mut encoder, ds);
                inner.gpu.queue.submit([encoder.finish()]);
                inner.gpu.poll_wait();
            }
            ((crate::clock::now_ms() - t) / reps as f64, (process_cpu_ms().unwrap_or(0.0) - c) / reps as f64)
        };
        let mut rows: Vec<ProfileRow> = Vec::new();
        for (dir, ds) in [("forward", &plan.forward), ("backward", &backward.dispatches)] {
            for d in ds.iter() {
                let (ms, cpu_ms) = time(&[d]);
                let what = format!("{dir} {:?}", d.kernel);
                match rows.iter_mut().find(|r| r.what == what) {
                    Some(r) => {
                        r.launches += 1;
                        r.ms += ms;
                        r.cpu_ms += cpu_ms;
                    }
                    None => rows.push(ProfileRow { what, launches: 1, ms, cpu_ms }),
                }
            }
        }
        for (dir, ds) in [("forward", &plan.forward), ("backward", &backward.dispatches)] {
            let (ms, cpu_ms) = time(&ds.iter().collect::<Vec<_>>());
            rows.push(ProfileRow { what: format!("{dir}, all launches in one submit"), launches: ds.len(), ms, cpu_ms });
        }
        inner.give_back(plan);
        inner.gpu.check()?;
        Ok(rows)
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl Executor for GpuExecutor {
    fn name(&self) -> &'static str {
        "webgpu"
    }

    fn start(&self, input: FeatureMap, layer: NodeId) -> Result<Box<dyn Pass>> {
        Ok(Box::new(pollster::block_on(self.start_async(input, layer))?))
    }

    fn forward_batch(&self) -> usize {
        GpuExecutor::FORWARD_BATCH
    }

    fn logits_batch(&self, inputs: &[f32], n: usize, h: usize, w: usize) -> Result<Vec<f32>> {
        pollster::block_on(self.logits_batch_async(inputs, n, h, w))
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl Pass for GpuPass {
    fn logits(&self) -> &[f32] {
        &self.logits
    }

    fn activations(&self) -> &FeatureMap {
        &self.activations
    }

    fn layer_gradient(&mut self, target: &[f32]) -> Result<FeatureMap> {
        pollster::block_on(self.layer_gradient_async(target))
    }

    fn input_gradient(&mut self, target: &[f32], rule: ReluRule) -> Result<FeatureMap> {
        pollster::block_on(self.input_gradient_async(target, rule))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unroll_expands_the_marked_lines_per_pixel_and_channel_block() {
        let src = "a\n    //@j let x{j} = {j};\n  //@m f{m}\n//@jm a{j}_{m} += f{m};\nb\n";
        let want = "a\n    let x0 = 0;\n    let x1 = 1;\n  f0\n  f1\na0_0 += f0;\na0_1 += f1;\na1_0 += f0;\na1_1 += f1;\nb\n";
        assert_eq!(unroll(src, 2, 2), want);
        let gemm = unroll(GEMM_SRC, 4, 2);
        assert!(!gemm.lines().any(|l| l.trim_start().starts_with("//@")), "every marked line of conv_gemm.wgsl is expanded");
        assert!(gemm.contains("a3_1 = fma(v3, f1, a3_1);"), "the last accumulator of a 4-pixel x 2-vec4 block");
    }

    #[test]
    fn gemm_blocks_keep_three_quarters_of_the_pixel_slots_busy() {
        let block = |channels, pixels| {
            let (i, slots) = gemm_block(channels, pixels);
            (GEMM_BLOCKS[i], slots)
        };
        assert_eq!(block(64, 56 * 56), ((4, 4, 64), 256)); // 3136 of 3328 slots
        assert_eq!(block(96, 14 * 14), ((4, 4, 64), 256)); // 196 of 256
        assert_eq!(block(512, 7 * 7), ((4, 4, 16), 64)); // 49 of 64
        assert_eq!(block(3, 224 * 224), ((1, 4, 64), 256)); // at most 4 channels: blocks of 4
        assert_eq!(block(16, 3 * 3), ((4, 1, 16), 16)); // nothing keeps 3/4 busy: the smallest block
        assert_eq!(block(8, 30), ((2, 2, 16), 32)); // at most 8 channels: blocks of 8; 30 of 32
    }
}
