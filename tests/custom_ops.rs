//! Each candle custom op, forward against candle's own ops where candle has one, and its backward
//! (through candle's autograd) against finite differences of its forward.

use candle_core::{Device, Tensor, Var};
use gradcam_wasm::exec::candle_ops::{AdaptiveAvgPoolOp, ConvOp, LinearOp, MaxPoolOp, MulOp, ReluOp, RuleFlag};
use gradcam_wasm::graph::{Conv, Linear, MaxPool, Padding};
use gradcam_wasm::kernels::{Clamp, ReluRule};
use std::sync::Arc;

fn rand(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// Checks d(sum(r * op(x)))/dx from candle's backward against central differences at every
/// 7th coordinate. Values are spread so no ReLU kink or max-pool tie lies within eps.
fn check_backward(name: &str, x: Vec<f32>, shape: &[usize], op: impl Fn(&Tensor) -> Tensor) {
    let var = Var::from_vec(x.clone(), shape, &Device::Cpu).unwrap();
    let y = op(var.as_tensor());
    let r = Tensor::from_vec(rand(y.elem_count(), 77), y.shape(), &Device::Cpu).unwrap();
    let loss = |t: &Tensor| -> f64 { op(t).mul(&r).unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() as f64 };
    let grads = y.mul(&r).unwrap().sum_all().unwrap().backward().unwrap();
    let g = grads.get(var.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let eps = 1e-3f32;
    let mut worst = 0.0f64;
    for i in (0..x.len()).step_by(7) {
        let mut xp = x.clone();
        xp[i] += eps;
        let mut xm = x.clone();
        xm[i] -= eps;
        let tp = Tensor::from_vec(xp, shape, &Device::Cpu).unwrap();
        let tm = Tensor::from_vec(xm, shape, &Device::Cpu).unwrap();
        let fd = (loss(&tp) - loss(&tm)) / (2.0 * eps as f64);
        worst = worst.max((fd - g[i] as f64).abs() / (1.0 + fd.abs()));
    }
    println!("{name}: worst relative error {worst:e}");
    assert!(worst < 5e-3, "{name}: backward disagrees with finite differences ({worst})");
}

fn conv(cin: usize, cout: usize, k: usize, stride: usize, padding: Padding, groups: usize) -> Arc<Conv> {
    Arc::new(Conv { weight: rand(cout * cin / groups * k * k, 5), bias: rand(cout, 6), cin, cout, kh: k, kw: k, stride: (stride, stride), padding, groups })
}

#[test]
fn conv_op_matches_candle_conv2d_forward() {
    for (cin, cout, k, s, p, groups) in [(3, 8, 3, 1, 1, 1), (4, 6, 5, 2, 2, 1), (8, 8, 3, 2, 1, 8), (6, 6, 5, 1, 2, 6), (4, 8, 1, 1, 0, 1)] {
        let c = conv(cin, cout, k, s, Padding::Symmetric { h: p, w: p }, groups);
        let x = Tensor::from_vec(rand(2 * cin * 13 * 17, 9), (2, cin, 13, 17), &Device::Cpu).unwrap();
        let ours = x.apply_op1(ConvOp::new(c.clone())).unwrap();
        let w = Tensor::from_vec(c.weight.clone(), (cout, cin / groups, k, k), &Device::Cpu).unwrap();
        let b = Tensor::from_vec(c.bias.clone(), (1, cout, 1, 1), &Device::Cpu).unwrap();
        let theirs = x.conv2d(&w, p, s, 1, groups).unwrap().broadcast_add(&b).unwrap();
        let diff = ours.sub(&theirs).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(diff < 1e-4, "conv k{k} s{s} g{groups}: max diff {diff}");
    }
}

#[test]
fn conv_op_backward_matches_finite_differences() {
    let cases = [
        ("3x3 s1", conv(3, 4, 3, 1, Padding::Symmetric { h: 1, w: 1 }, 1)),
        ("3x3 s2 TF SAME", conv(3, 4, 3, 2, Padding::Same, 1)),
        ("5x5 s2 depthwise SAME", conv(4, 4, 5, 2, Padding::Same, 4)),
        ("3x3 s1 depthwise", conv(4, 4, 3, 1, Padding::Symmetric { h: 1, w: 1 }, 4)),
        ("1x1", conv(4, 6, 1, 1, Padding::Symmetric { h: 0, w: 0 }, 1)),
        ("7x7 s2 p3", conv(3, 2, 7, 2, Padding::Symmetric { h: 3, w: 3 }, 1)),
    ];
    for (name, c) in cases {
        let cin = c.cin;
        // Odd, non-square input: the width/height stride-2 parity differs (candle's own conv backward fails here).
        check_backward(name, rand(cin * 9 * 12, 3), &[1, cin, 9, 12], |t| t.apply_op1(ConvOp::new(c.clone())).unwrap());
    }
}

#[test]
fn linear_op_forward_and_backward() {
    let lin = Arc::new(Linear { weight: rand(5 * 12, 4), bias: rand(5, 8), in_features: 12, out_features: 5 });
    let x = Tensor::from_vec(rand(24, 2), (2, 12), &Device::Cpu).unwrap();
    let ours = x.apply_op1(LinearOp(lin.clone())).unwrap();
    let w = Tensor::from_vec(lin.weight.clone(), (5, 12), &Device::Cpu).unwrap();
    let b = Tensor::from_vec(lin.bias.clone(), (1, 5), &Device::Cpu).unwrap();
    let theirs = x.matmul(&w.t().unwrap()).unwrap().broadcast_add(&b).unwrap();
    let diff = ours.sub(&theirs).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    assert!(diff < 1e-5);
    check_backward("linear", rand(24, 2), &[2, 12], |t| t.apply_op1(LinearOp(lin.clone())).unwrap());
}

/// Values spread in steps of 0.05 (shuffled) so no two tie and none sits within eps of 0 or 6.
fn spread(n: usize, lo: f32) -> Vec<f32> {
    let v: Vec<f32> = (0..n).map(|i| lo + 0.05 * i as f32 + 0.013).collect();
    let r = rand(n, 31);
    let mut idx: Vec<usize> = (0..n).collect();
    idx.sort_by(|&a, &b| r[a].total_cmp(&r[b]));
    idx.into_iter().map(|i| v[i]).collect()
}

#[test]
fn max_pool_op_matches_candle_and_its_backward_matches_finite_differences() {
    // kernel == stride: candle's own max pool agrees.
    let x = Tensor::from_vec(spread(2 * 3 * 8 * 8, -4.0), (2, 3, 8, 8), &Device::Cpu).unwrap();
    let ours = x.apply_op1(MaxPoolOp(MaxPool { kernel: 2, stride: 2, padding: 0, ceil_mode: false })).unwrap();
    let theirs = x.max_pool2d(2).unwrap();
    assert_eq!(ours.flatten_all().unwrap().to_vec1::<f32>().unwrap(), theirs.flatten_all().unwrap().to_vec1::<f32>().unwrap());
    // 3x3/stride 2 (ResNet, padded) and ceil mode (SqueezeNet): candle has no backward for these.
    for (name, m) in [("3x3 s2 p1", MaxPool { kernel: 3, stride: 2, padding: 1, ceil_mode: false }), ("3x3 s2 ceil", MaxPool { kernel: 3, stride: 2, padding: 0, ceil_mode: true })] {
        check_backward(name, spread(2 * 11 * 14, -7.0), &[1, 2, 11, 14], |t| t.apply_op1(MaxPoolOp(m)).unwrap());
    }
}

#[test]
fn adaptive_avg_pool_op_matches_candle_and_backward() {
    let x = Tensor::from_vec(rand(3 * 14 * 14, 12), (1, 3, 14, 14), &Device::Cpu).unwrap();
    let ours = x.apply_op1(AdaptiveAvgPoolOp { out_h: 7, out_w: 7 }).unwrap();
    let theirs = x.avg_pool2d(2).unwrap();
    let diff = ours.sub(&theirs).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    assert!(diff < 1e-6);
    check_backward("adaptive 7x9 -> 3x4", rand(2 * 7 * 9, 13), &[1, 2, 7, 9], |t| t.apply_op1(AdaptiveAvgPoolOp { out_h: 3, out_w: 4 }).unwrap());
}

#[test]
fn relu_ops_forward_backward_and_guided_rule() {
    for clamp in [Clamp::Relu, Clamp::Relu6] {
        check_backward("relu", spread(120, -3.0), &[1, 2, 6, 10], |t| t.apply_op1(ReluOp { clamp, rule: RuleFlag::default() }).unwrap());
        // Fused into the conv before it: the same as the two ops in a row.
        let c = conv(3, 4, 3, 1, Padding::Symmetric { h: 1, w: 1 }, 1);
        check_backward("conv+relu", rand(3 * 7 * 8, 17), &[1, 3, 7, 8], |t| t.apply_op1(ConvOp::fused(c.clone(), clamp, RuleFlag::default())).unwrap());
    }
    // Guided: the gradient passes only where x > 0 (and x < 6 for ReLU6) AND the incoming gradient > 0.
    let x = Var::from_vec(vec![-1.0f32, 0.0, 0.5, 0.5, 5.9, 6.0, 7.0, 2.0], (8,), &Device::Cpu).unwrap();
    let r = Tensor::new(&[1.0f32, 1.0, 1.0, -1.0, 1.0, 1.0, 1.0, 0.25], &Device::Cpu).unwrap();
    let flag = RuleFlag::default();
    let y = x.as_tensor().apply_op1(ReluOp { clamp: Clamp::Relu6, rule: flag.clone() }).unwrap();
    let score = y.mul(&r).unwrap().sum_all().unwrap();
    // The same recorded op backprops plainly, guided or as deconvolution, as the pass's flag says at
    // backward time.
    let grad = |rule: ReluRule| {
        flag.set(rule);
        score.backward().unwrap().get(x.as_tensor()).unwrap().to_vec1::<f32>().unwrap()
    };
    assert_eq!(grad(ReluRule::Guided), vec![0.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.25]);
    assert_eq!(grad(ReluRule::Plain), vec![0.0, 0.0, 1.0, -1.0, 1.0, 0.0, 0.0, 0.25]);
    // Deconvolution: every positive incoming gradient, at x <= 0 and x >= 6 too.
    assert_eq!(grad(ReluRule::Deconv), vec![1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 0.25]);
}

#[test]
fn mul_op_matches_candle_and_its_backward_matches_finite_differences_for_both_inputs() {
    let x = Tensor::from_vec(rand(2 * 3 * 4 * 5, 11), (2, 3, 4, 5), &Device::Cpu).unwrap();
    for (name, y_shape) in [("mul, equal shapes", vec![2, 3, 4, 5]), ("mul, channel gate", vec![2, 3, 1, 1])] {
        let n: usize = y_shape.iter().product();
        let y = Tensor::from_vec(rand(n, 12), y_shape.as_slice(), &Device::Cpu).unwrap();
        let ours = x.apply_op2(&y, MulOp).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let candle = x.broadcast_mul(&y).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(ours, candle, "{name}: forward");
        check_backward(&format!("{name}, d/dx"), x.flatten_all().unwrap().to_vec1().unwrap(), &[2, 3, 4, 5], |t| t.apply_op2(&y, MulOp).unwrap());
        check_backward(&format!("{name}, d/dy"), y.flatten_all().unwrap().to_vec1().unwrap(), &y_shape, |t| x.apply_op2(t, MulOp).unwrap());
    }
    let wrong = Tensor::zeros((2, 3, 4, 1), candle_core::DType::F32, &Device::Cpu).unwrap();
    assert!(x.apply_op2(&wrong, MulOp).is_err(), "a gate that is neither the map's shape nor C x 1 x 1 is refused");
}
