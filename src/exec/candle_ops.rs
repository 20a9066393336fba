//! The graph's layers as candle custom ops whose backward gives the input gradient only.
//!
//! candle 0.11.1's own conv and matmul backward always build the weight gradient too (hundreds of MB
//! for VGG's first linear layer), split depthwise convs into one conv per channel, and cannot
//! backprop a max pool whose kernel differs from its stride. Explanations never need weight
//! gradients, so each op here wraps a plain kernel from `crate::kernels` forward and backward.
//!
//! Two things make one forward pass serve every method: a conv carries the ReLU/ReLU6 that follows it
//! (fused: applied while its output is in cache, and masked from its output in the backward), and
//! every ReLU's backward reads a `RuleFlag` shared by the pass, so Grad-CAM's plain backward, guided
//! backpropagation and deconvolution walk the same recorded graph.

use crate::graph::{Activation, Affine, Attention, AvgPool, ChannelNorm, Conv, Linear, MaxPool};
use crate::kernels::{self, Clamp, Kept, PoolGeom, ReluRule};
use crate::profile;
use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor};
use std::borrow::Cow;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

/// The [`ReluRule`] the ReLUs of a recorded graph backprop by right now. Set by the executor around
/// one backward walk; read by every ReLU op's `bwd`.
#[derive(Clone, Default)]
pub struct RuleFlag(Arc<AtomicU8>);

impl RuleFlag {
    pub fn set(&self, rule: ReluRule) {
        self.0.store(rule as u8, Ordering::Relaxed);
    }

    pub fn get(&self) -> ReluRule {
        match self.0.load(Ordering::Relaxed) {
            1 => ReluRule::Guided,
            2 => ReluRule::Deconv,
            _ => ReluRule::Plain,
        }
    }
}

/// The ReLU/ReLU6 backward from the op's *output* `y` (0 < y, and y < 6 for ReLU6, is where the
/// gradient passes: PyTorch's rule at the kinks), under `rule`.
fn relu_backward(y: &Tensor, grad: &Tensor, clamp: Clamp, rule: ReluRule) -> CResult<Vec<f32>> {
    with_slice(y, |y| with_slice(grad, |g| kernels::relu_output_grad(y, g, clamp, rule)))?
}

type CResult<T> = candle_core::Result<T>;

/// The f32 data of a storage as one contiguous slice.
fn as_slice<'a>(s: &'a CpuStorage, l: &Layout) -> CResult<Cow<'a, [f32]>> {
    let CpuStorage::F32(v) = s else { bail!("gradcam ops compute in f32 only") };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(Cow::Borrowed(&v[a..b])),
        None => bail!("gradcam ops expect contiguous tensors"),
    }
}

/// A tensor's data as a contiguous Vec (gradients may arrive broadcast or strided).
/// Runs `f` on a tensor's f32 data, borrowed when it is contiguous (the usual case), copied otherwise.
fn with_slice<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> CResult<R> {
    {
        let (storage, layout) = t.storage_and_layout();
        if let (candle_core::Storage::Cpu(CpuStorage::F32(v)), Some((a, b))) = (&*storage, layout.contiguous_offsets()) {
            return Ok(f(&v[a..b]));
        }
    }
    Ok(f(&to_vec(t)?))
}

/// a + b for two tensors of one shape, by [`kernels::elementwise::add`] (split across our threads,
/// not candle's).
pub fn add(a: &Tensor, b: &Tensor) -> CResult<Tensor> {
    if a.shape() != b.shape() {
        bail!("add of shapes {:?} and {:?}: the shapes must be equal", a.dims(), b.dims());
    }
    let sum = with_slice(a, |x| with_slice(b, |y| kernels::elementwise::add(x, y)))??;
    Tensor::from_vec(sum, a.shape(), a.device())
}

fn to_vec(t: &Tensor) -> CResult<Vec<f32>> {
    t.flatten_all()?.to_vec1::<f32>()
}

fn dims4(l: &Layout) -> CResult<(usize, usize, usize, usize)> {
    l.shape().dims4()
}

fn grad_like(data: Vec<f32>, like: &Tensor) -> CResult<Option<Tensor>> {
    Ok(Some(Tensor::from_vec(data, like.shape(), like.device())?))
}

/// A short label for profiles: "conv dw3x3/s2", "conv 1x1", "conv 7x7/s2".
pub fn conv_kind(c: &Conv) -> String {
    let dw = if c.groups > 1 && c.groups == c.cin { "dw" } else { "" };
    let s = if c.stride.0 > 1 { format!("/s{}", c.stride.0) } else { String::new() };
    format!("conv {dw}{}x{}{s}", c.kh, c.kw)
}

/// Conv with frozen (batch-norm folded) weights, optionally followed by a fused ReLU/ReLU6.
pub struct ConvOp {
    conv: Arc<Conv>,
    act: Option<(Clamp, RuleFlag)>,
    kept: Option<Arc<Kept>>,
}

impl ConvOp {
    pub fn new(conv: Arc<Conv>) -> ConvOp {
        ConvOp { conv, act: None, kept: None }
    }

    /// The conv and the ReLU/ReLU6 that reads it, as one op.
    pub fn fused(conv: Arc<Conv>, clamp: Clamp, rule: RuleFlag) -> ConvOp {
        ConvOp { conv, act: Some((clamp, rule)), kept: None }
    }

    /// Where the kernels may keep this conv's transformed weights between calls.
    pub fn keeping(mut self, kept: Arc<Kept>) -> ConvOp {
        self.kept = Some(kept);
        self
    }
}

impl CustomOp1 for ConvOp {
    fn name(&self) -> &'static str {
        if self.act.is_some() {
            "gradcam-conv2d-relu"
        } else {
            "gradcam-conv2d"
        }
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> CResult<(CpuStorage, Shape)> {
        let (n, c, h, w) = dims4(l)?;
        if c != self.conv.cin {
            bail!("conv expects {} channels, got {c}", self.conv.cin);
        }
        let g = self.conv.geom(n, h, w);
        let act = self.act.as_ref().map(|a| a.0);
        let x = as_slice(s, l)?;
        let y = profile::time(|| conv_kind(&self.conv), || kernels::conv2d_forward_act(&x, &self.conv.weight, Some(&self.conv.bias), &g, act, self.kept.as_deref()));
        Ok((CpuStorage::F32(y), Shape::from((n, g.cout, g.out_h(), g.out_w()))))
    }

    fn bwd(&self, arg: &Tensor, res: &Tensor, grad: &Tensor) -> CResult<Option<Tensor>> {
        let (n, _, h, w) = arg.dims4()?;
        let g = self.conv.geom(n, h, w);
        let gx = profile::time(
            || format!("bwd {}", conv_kind(&self.conv)),
            || -> CResult<Vec<f32>> {
                let (w, kept) = (&self.conv.weight, self.kept.as_deref());
                match &self.act {
                    // The ReLU's backward goes into the conv's: applied as its kernels read the gradient.
                    Some((clamp, rule)) => with_slice(res, |y| {
                        let gate = kernels::ReluGate { y, clamp: *clamp, rule: rule.get() };
                        with_slice(grad, |gy| kernels::conv2d_input_grad_gated(gy, w, &g, kept, gate))
                    })?,
                    None => with_slice(grad, |gy| kernels::conv2d_input_grad(gy, w, &g, kept)),
                }
            },
        )?;
        grad_like(gx, arg)
    }
}

/// Fully connected layer with frozen weights, on (n, in_features).
pub struct LinearOp(pub Arc<Linear>);

impl CustomOp1 for LinearOp {
    fn name(&self) -> &'static str {
        "gradcam-linear"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> CResult<(CpuStorage, Shape)> {
        let (n, f) = l.shape().dims2()?;
        let lin = &self.0;
        if f != lin.in_features {
            bail!("linear expects {} features, got {f}", lin.in_features);
        }
        let y = kernels::linear_forward(&as_slice(s, l)?, n, &lin.weight, lin.out_features, lin.in_features, Some(&lin.bias));
        Ok((CpuStorage::F32(y), Shape::from((n, lin.out_features))))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> CResult<Option<Tensor>> {
        let n = arg.dims2()?.0;
        let lin = &self.0;
        let gx = profile::time(|| "bwd linear".into(), || -> CResult<Vec<f32>> { with_slice(grad, |gy| kernels::linear_input_grad(gy, n, &lin.weight, lin.out_features, lin.in_features)) })?;
        grad_like(gx, arg)
    }
}

/// ReLU or ReLU6 with PyTorch's backward (no gradient at the kinks), or the guided or deconvolution
/// rule when the pass's `RuleFlag` says so.
pub struct ReluOp {
    pub clamp: Clamp,
    pub rule: RuleFlag,
}

impl CustomOp1 for ReluOp {
    fn name(&self) -> &'static str {
        "gradcam-relu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> CResult<(CpuStorage, Shape)> {
        let mut y = as_slice(s, l)?.into_owned();
        profile::time(|| "relu".into(), || kernels::clamp_in_place(&mut y, self.clamp));
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, res: &Tensor, grad: &Tensor) -> CResult<Option<Tensor>> {
        let gx = profile::time(|| "bwd relu".into(), || relu_backward(res, grad, self.clamp, self.rule.get()))?;
        grad_like(gx, arg)
    }
}

fn pool_geom(m: &MaxPool, n: usize, c: usize, h: usize, w: usize) -> PoolGeom {
    PoolGeom { n, c, h, w, kh: m.kernel, kw: m.kernel, stride_h: m.stride, stride_w: m.stride, pad_h: m.padding, pad_w: m.padding, ceil_mode: m.ceil_mode }
}

/// Max pool of any kernel, stride, padding and ceil mode. The forward only takes maxima (separable,
/// vectorised); the backward, asked for by guided methods only, finds each window's argmax in the
/// input, which candle keeps on the tape anyway, and scatters the gradient there.
pub struct MaxPoolOp(pub MaxPool);

impl CustomOp1 for MaxPoolOp {
    fn name(&self) -> &'static str {
        "gradcam-maxpool2d"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> CResult<(CpuStorage, Shape)> {
        let (n, c, h, w) = dims4(l)?;
        let g = pool_geom(&self.0, n, c, h, w);
        let y = profile::time(|| "maxpool".into(), || -> CResult<_> { Ok(kernels::max_pool2d_forward(&as_slice(s, l)?, &g)) })?;
        Ok((CpuStorage::F32(y), Shape::from((n, c, g.out_h(), g.out_w()))))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> CResult<Option<Tensor>> {
        let (n, c, h, w) = arg.dims4()?;
        let g = pool_geom(&self.0, n, c, h, w);
        let gx = profile::time(
            || "bwd maxpool".into(),
            || -> CResult<Vec<f32>> {
                let (_, argmax) = with_slice(arg, |x| kernels::max_pool2d_forward_argmax(x, &g))?;
                with_slice(grad, |gy| kernels::max_pool2d_input_grad_argmax(&argmax, gy, &g))
            },
        )?;
        grad_like(gx, arg)
    }
}

/// PyTorch's adaptive average pool (bins may overlap when sizes do not divide).
pub struct AdaptiveAvgPoolOp {
    pub out_h: usize,
    pub out_w: usize,
}

impl CustomOp1 for AdaptiveAvgPoolOp {
    fn name(&self) -> &'static str {
        "gradcam-adaptive-avgpool2d"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> CResult<(CpuStorage, Shape)> {
        let (n, c, h, w) = dims4(l)?;
        let y = kernels::adaptive_avg_pool2d_forward(&as_slice(s, l)?, n, c, h, w, self.out_h, self.out_w);
        Ok((CpuStorage::F32(y), Shape::from((n, c, self.out_h, self.out_w))))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> CResult<Option<Tensor>> {
        let (n, c, h, w) = arg.dims4()?;
        grad_like(with_slice(grad, |gy| kernels::adaptive_avg_pool2d_input_grad(gy, n, c, h, w, self.out_h, self.out_w))?, arg)
    }
}

/// The spatial size of an (n, c, ...) tensor: the product of the dims after the channels (1 for a
/// feature vector).
fn plane_of(shape: &Shape) -> CResult<usize> {
    let d = shape.dims();
    if d.len() < 2 {
        bail!("gradcam ops expect (n, c, ...) tensors, got {:?}", d);
    }
    Ok(d[2..].iter().product())
}

/// A smooth activation (no guided rule); backward is g * f'(x).
pub struct ActOp(pub Activation);

impl CustomOp1 for ActOp {
    fn name(&self) -> &'static str {
        "gradcam-activation"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> CResult<(CpuStorage, Shape)> {
        Ok((CpuStorage::F32(kernels::elementwise::activation_forward(&as_slice(s, l)?, self.0)), l.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> CResult<Option<Tensor>> {
        let gx = with_slice(arg, |x| with_slice(grad, |g| kernels::elementwise::activation_input_grad(x, g, self.0)))??;
        grad_like(gx, arg)
    }
}

pub struct AvgPoolOp(pub AvgPool);

impl AvgPoolOp {
    fn geom(&self, n: usize, c: usize, h: usize, w: usize) -> PoolGeom {
        let a = &self.0;
        PoolGeom { n, c, h, w, kh: a.kernel.0, kw: a.kernel.1, stride_h: a.stride.0, stride_w: a.stride.1, pad_h: a.padding.0, pad_w: a.padding.1, ceil_mode: a.ceil_mode }
    }
}

impl CustomOp1 for AvgPoolOp {
    fn name(&self) -> &'static str {
        "gradcam-avgpool2d"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> CResult<(CpuStorage, Shape)> {
        let (n, c, h, w) = dims4(l)?;
        let g = self.geom(n, c, h, w);
        let y = kernels::avg_pool2d_forward(&as_slice(s, l)?, &g, self.0.count_include_pad);
        Ok((CpuStorage::F32(y), Shape::from((n, c, g.out_h(), g.out_w()))))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> CResult<Option<Tensor>> {
        let (n, c, h, w) = arg.dims4()?;
        let g = self.geom(n, c, h, w);
        grad_like(with_slice(grad, |gy| kernels::avg_pool2d_input_grad(gy, &g, self.0.count_include_pad))?, arg)
    }
}

/// Per-channel x * scale + shift.
pub struct AffineOp(pub Arc<Affine>);

impl CustomOp1 for AffineOp {
    fn name(&self) -> &'static str {
        "gradcam-affine"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> CResult<(CpuStorage, Shape)> {
        let y = kernels::elementwise::affine_forward(&as_slice(s, l)?, &self.0.scale, &self.0.shift, plane_of(l.shape())?);
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> CResult<Option<Tensor>> {
        let plane = plane_of(arg.shape())?;
        grad_like(with_slice(grad, |g| kernels::elementwise::affine_input_grad(g, &self.0.scale, plane))?, arg)
    }
}

/// Layer norm over each pixel's channels.
pub struct ChannelNormOp(pub Arc<ChannelNorm>);

impl CustomOp1 for ChannelNormOp {
    fn name(&self) -> &'static str {
        "gradcam-channel-norm"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> CResult<(CpuStorage, Shape)> {
        let n = &self.0;
        let y = kernels::elementwise::channel_norm_forward(&as_slice(s, l)?, &n.weight, &n.bias, plane_of(l.shape())?, n.eps);
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> CResult<Option<Tensor>> {
        let (n, plane) = (&self.0, plane_of(arg.shape())?);
        let gx = with_slice(arg, |x| with_slice(grad, |g| kernels::elementwise::channel_norm_input_grad(x, g, &n.weight, plane, n.eps)))??;
        grad_like(gx, arg)
    }
}

/// Multi-head self-attention over the tokens of an (n, C, 1, T) map.
pub struct SelfAttentionOp(pub Arc<Attention>);

impl CustomOp1 for SelfAttentionOp {
    fn name(&self) -> &'static str {
        "gradcam-self-attention"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> CResult<(CpuStorage, Shape)> {
        let (n, c, h, _) = dims4(l)?;
        if c != self.0.channels() || h != 1 {
            bail!("self-attention expects (n, {}, 1, T) tokens, got {:?}", self.0.channels(), l.dims());
        }
        let y = profile::time(|| "self-attention".into(), || -> CResult<_> { Ok(kernels::attention::self_attention_forward(&self.0, &as_slice(s, l)?, n)) })?;
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> CResult<Option<Tensor>> {
        let n = arg.dims4()?.0;
        let gx = profile::time(|| "bwd self-attention".into(), || with_slice(arg, |x| with_slice(grad, |g| kernels::attention::self_attention_input_grad(&self.0, x, g, n))))??;
        grad_like(gx, arg)
    }
}

/// x * y elementwise, where y has x's shape or is a C x 1 x 1 gate broadcast over each map
/// (squeeze-excitation). Its backward gives the gate's gradient as one sum per channel, without a
/// full-size gradient for the broadcast gate first.
pub struct MulOp;

/// (planes, values per plane of x, whether y is one value per plane).
fn mul_geom(x: &[usize], y: &[usize]) -> CResult<(usize, usize, bool)> {
    let &[n, c, h, w] = x else { bail!("mul expects (n, C, H, W) maps, got {x:?}") };
    match y {
        _ if y == x => Ok((n * c, h * w, false)),
        &[yn, yc, 1, 1] if (yn, yc) == (n, c) => Ok((n * c, h * w, true)),
        _ => bail!("mul of shapes {x:?} and {y:?}: only equal shapes or an (n, C, 1, 1) gate"),
    }
}

impl CustomOp2 for MulOp {
    fn name(&self) -> &'static str {
        "gradcam-mul"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> CResult<(CpuStorage, Shape)> {
        let (planes, hw, gate) = mul_geom(l1.dims(), l2.dims())?;
        let (x, y) = (as_slice(s1, l1)?, as_slice(s2, l2)?);
        let out = if gate {
            let mut out = x.into_owned();
            for (plane, &g) in out.chunks_exact_mut(hw).zip(y.iter()).take(planes) {
                plane.iter_mut().for_each(|v| *v *= g);
            }
            out
        } else {
            x.iter().zip(y.iter()).map(|(a, b)| a * b).collect()
        };
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, y: &Tensor, _res: &Tensor, grad: &Tensor) -> CResult<(Option<Tensor>, Option<Tensor>)> {
        let (planes, hw, gate) = mul_geom(x.dims(), y.dims())?;
        let (gx, gy) = with_slice(grad, |g| {
            with_slice(x, |xs| {
                with_slice(y, |ys| {
                    if gate {
                        let gx: Vec<f32> = g.chunks_exact(hw).zip(ys).flat_map(|(plane, &s)| plane.iter().map(move |v| v * s)).collect();
                        let gy: Vec<f32> = g.chunks_exact(hw).zip(xs.chunks_exact(hw)).take(planes).map(|(a, b)| a.iter().zip(b).map(|(p, q)| p * q).sum()).collect();
                        (gx, gy)
                    } else {
                        (g.iter().zip(ys).map(|(a, b)| a * b).collect(), g.iter().zip(xs).map(|(a, b)| a * b).collect())
                    }
                })
            })
        })???;
        Ok((grad_like(gx, x)?, grad_like(gy, y)?))
    }
}
