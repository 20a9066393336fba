//! The WebGPU conv kernels against the CPU kernels, shape by shape, forward and input gradient:
//! awkward shapes (channel counts that are not multiples of 4 or of the kernels' 8- and 16-channel blocks,
//! strides 2 and 4, asymmetric and zero padding, 1x1, 5x5, 7x7 and 11x11 filters, depthwise and other
//! grouped convs, planes smaller than a workgroup and odd sizes). Each must agree to 1e-4 of the
//! largest CPU value (f32 sums in a different order, not different maths: a wrong tap or channel is
//! off by far more). Runs on whatever adapter wgpu finds; without one it prints a note and passes,
//! unless GRADCAM_REQUIRE_GPU=1.
#![cfg(feature = "webgpu")]
#![cfg(not(target_arch = "wasm32"))]

use gradcam_wasm::gpu::lab::{Act, ConvLab};
use gradcam_wasm::kernels::{conv2d_forward, conv2d_input_grad, Conv2dGeom, Tuning};
use gradcam_wasm::synthetic::Rng;

const TOL: f64 = 1e-4;

fn lab() -> Option<ConvLab> {
    match ConvLab::new() {
        Ok(l) => Some(l),
        Err(e) => {
            assert!(std::env::var("GRADCAM_REQUIRE_GPU").as_deref() != Ok("1"), "GRADCAM_REQUIRE_GPU=1 but no WebGPU adapter: {e}");
            eprintln!("note: skipping the WebGPU kernel tests ({e})");
            None
        }
    }
}

/// max |gpu - cpu| / max |cpu|.
fn rel_err(gpu: &[f32], cpu: &[f32]) -> f64 {
    assert_eq!(gpu.len(), cpu.len());
    let scale = cpu.iter().fold(0.0f64, |m, v| m.max(v.abs() as f64)).max(1e-30);
    gpu.iter().zip(cpu).fold(0.0f64, |m, (a, b)| m.max((*a as f64 - *b as f64).abs() / scale))
}

/// (cin, cout, k, stride, (top, bottom, left, right), groups, h, w).
type Case = (usize, usize, usize, usize, (usize, usize, usize, usize), usize, usize, usize);

fn geom(&(cin, cout, k, s, (t, b, l, r), groups, h, w): &Case) -> Conv2dGeom {
    Conv2dGeom { n: 1, cin, h, w, cout, kh: k, kw: k, stride_h: s, stride_w: s, pad_top: t, pad_bottom: b, pad_left: l, pad_right: r, groups }
}

fn check(lab: &ConvLab, cases: &[Case]) {
    check_with(lab, cases, Act::None);
}

/// The CPU's activation `act` after the conv.
fn activate(y: &mut [f32], act: Act) {
    for v in y {
        *v = match act {
            Act::None => *v,
            Act::Relu => v.max(0.0),
            Act::Relu6 => v.clamp(0.0, 6.0),
        };
    }
}

/// Forward (followed by `act`, the fused ReLU / ReLU6) and input gradient of each case against the CPU.
fn check_with(lab: &ConvLab, cases: &[Case], act: Act) {
    // Direct CPU convolutions: Winograd rounds differently (checked in tests/winograd.rs).
    let tuning = Tuning { winograd: false, ..Default::default() };
    for (i, case) in cases.iter().enumerate() {
        let g = geom(case);
        let mut rng = Rng::new(11 + i as u64);
        // Larger inputs under an activation, so that ReLU6's upper bound is reached too.
        let x = rng.vec(g.cin * g.h * g.w, if act == Act::None { 1.0 } else { 6.0 });
        let w = rng.vec(g.cout * (g.cin / g.groups) * g.kh * g.kw, 0.5);
        let b = rng.vec(g.cout, 0.5);
        let gy = rng.vec(g.cout * g.out_h() * g.out_w(), 1.0);
        let (mut want_y, want_dx) = gradcam_wasm::kernels::tuning::scoped(tuning, || (conv2d_forward(&x, &w, Some(&b), &g), conv2d_input_grad(&gy, &w, &g, None)));
        activate(&mut want_y, act);
        let y = lab.forward(&g, &x, &w, &b, act, 1).unwrap().output;
        let dx = lab.input_grad(&g, &gy, &w, 1).unwrap().output;
        let (ey, edx) = (rel_err(&y, &want_y), rel_err(&dx, &want_dx));
        if act == Act::Relu6 {
            assert!(want_y.contains(&6.0) && want_y.contains(&0.0), "{case:?}: both of ReLU6's bounds reached");
        }
        println!("{case:?} {act:?}: forward {ey:.1e}, input gradient {edx:.1e}");
        assert!(ey <= TOL, "{case:?}: forward off by {ey:.2e}");
        assert!(edx <= TOL, "{case:?}: input gradient off by {edx:.2e}");
    }
}

#[test]
fn ungrouped_convs_match_the_cpu() {
    let Some(lab) = lab() else { return };
    check(
        &lab,
        &[
            (3, 32, 3, 2, (0, 1, 0, 1), 1, 17, 23),  // a TF SAME stem: odd pixel bottom/right
            (3, 5, 3, 1, (1, 1, 1, 1), 1, 9, 7),     // 5 filters: one partial block of 8
            (13, 4, 1, 1, (0, 0, 0, 0), 1, 6, 11),   // 1x1, 4 filters (the 4-channel blocks)
            (9, 19, 1, 2, (0, 0, 0, 0), 1, 15, 13),  // strided 1x1 (a ResNet downsample)
            (7, 12, 7, 2, (3, 3, 3, 3), 1, 21, 19),  // a 7x7/2 stem
            (6, 10, 5, 1, (2, 2, 2, 2), 1, 5, 4),    // a plane smaller than the filter's reach
            (16, 24, 3, 1, (1, 1, 1, 1), 1, 30, 31), // several workgroups per plane
            (5, 8, 11, 4, (2, 2, 2, 2), 1, 35, 33),  // AlexNet's 11x11/4
            (10, 3, 3, 3, (0, 2, 1, 0), 1, 11, 10),  // stride 3, uneven padding, 3 input channels
            (130, 9, 3, 1, (1, 1, 1, 1), 1, 3, 3),   // many channels, a 3x3 plane
            (6, 10, 1, 1, (1, 0, 2, 1), 1, 5, 6),    // stride 1, padding >= the filter (not run flipped)
            (40, 36, 3, 1, (1, 1, 1, 1), 1, 56, 20), // 4 pixels per invocation, 64-wide workgroups
        ],
    );
}

#[test]
fn grouped_and_depthwise_convs_match_the_cpu() {
    let Some(lab) = lab() else { return };
    check(
        &lab,
        &[
            (12, 12, 3, 1, (1, 1, 1, 1), 12, 9, 10),  // depthwise 3x3
            (7, 7, 3, 2, (0, 1, 0, 1), 7, 13, 15),    // depthwise 3x3/2, TF SAME
            (5, 5, 5, 2, (1, 2, 1, 2), 5, 11, 12),    // depthwise 5x5/2
            (6, 6, 5, 1, (2, 2, 2, 2), 6, 3, 70),     // depthwise, 3 rows (a partial 4-row strip), wide
            (4, 4, 7, 1, (3, 3, 3, 3), 4, 14, 14),    // depthwise 7x7 (ConvNeXt)
            (3, 3, 1, 1, (0, 0, 0, 0), 3, 5, 6),      // depthwise 1x1
            (8, 12, 3, 2, (1, 1, 1, 1), 4, 10, 9),    // grouped, 2 -> 3 channels per group
            (16, 16, 3, 1, (1, 1, 1, 1), 2, 8, 8),    // grouped, 8 per group
            (20, 20, 5, 1, (2, 2, 2, 2), 20, 14, 14), // depthwise 5x5: 4x4 output tiles past the plane's edge
            (33, 33, 3, 1, (1, 1, 1, 1), 33, 7, 7),   // 7x7 planes: a workgroup spans channels
            (10, 10, 3, 2, (0, 1, 0, 1), 10, 2, 3),   // stride 2 on a 2x3 plane: one partial tile
            (9, 9, 5, 2, (2, 2, 2, 2), 9, 29, 30),    // 5x5/2, several tiles per row and column
            (5, 5, 3, 1, (0, 0, 0, 0), 5, 3, 3),      // no padding, a 1x1 output
            (6, 6, 3, 3, (1, 1, 1, 1), 6, 10, 11),    // stride 3: the direct kernel
        ],
    );
}

#[test]
fn fused_activations_match_the_cpu() {
    let Some(lab) = lab() else { return };
    let cases = [
        (24, 24, 3, 1, (1, 1, 1, 1), 24, 15, 9), // depthwise
        (8, 40, 1, 1, (0, 0, 0, 0), 1, 9, 7),    // GEMM, 16-channel blocks and a partial one
        (3, 6, 3, 2, (0, 1, 0, 1), 1, 13, 13),   // GEMM, 8-channel blocks
        (8, 12, 3, 1, (1, 1, 1, 1), 4, 6, 7),    // grouped: the direct 4x4 kernel
        (6, 9, 3, 1, (1, 1, 1, 1), 3, 5, 6),     // grouped: the direct 1x4 kernel
    ];
    check_with(&lab, &cases, Act::Relu6);
    check_with(&lab, &cases, Act::Relu);
}

/// The accumulating input gradient (a value that feeds several layers: its gradients are summed
/// into one buffer) adds dx onto what the buffer holds, on every kernel family: the flipped tiled
/// depthwise kernel, the gathering one (stride 2), GEMM run flipped and not, and the direct kernel.
#[test]
fn accumulated_input_gradients_add_onto_the_buffer() {
    let Some(lab) = lab() else { return };
    let cases: [Case; 6] = [
        (12, 12, 3, 1, (1, 1, 1, 1), 12, 9, 10),  // depthwise 3x3: the tiled forward kernel, flipped
        (20, 20, 5, 1, (2, 2, 2, 2), 20, 14, 14), // depthwise 5x5, flipped
        (7, 7, 3, 2, (0, 1, 0, 1), 7, 13, 15),    // depthwise 3x3/2: the gathering kernel
        (16, 24, 3, 1, (1, 1, 1, 1), 1, 30, 31),  // GEMM, flipped
        (9, 19, 1, 2, (0, 0, 0, 0), 1, 15, 13),   // GEMM, strided
        (8, 12, 3, 1, (1, 1, 1, 1), 4, 6, 7),     // grouped: the direct kernel
    ];
    let tuning = Tuning { winograd: false, ..Default::default() };
    for (i, case) in cases.iter().enumerate() {
        let g = geom(case);
        let mut rng = Rng::new(41 + i as u64);
        let w = rng.vec(g.cout * (g.cin / g.groups) * g.kh * g.kw, 0.5);
        let gy = rng.vec(g.cout * g.out_h() * g.out_w(), 1.0);
        let onto = rng.vec(g.cin * g.h * g.w, 1.0);
        let dx = gradcam_wasm::kernels::tuning::scoped(tuning, || conv2d_input_grad(&gy, &w, &g, None));
        let want: Vec<f32> = onto.iter().zip(&dx).map(|(a, b)| a + b).collect();
        let got = lab.input_grad_onto(&g, &gy, &w, &onto).unwrap();
        let e = rel_err(&got, &want);
        println!("{case:?}: accumulated input gradient {e:.1e}");
        assert!(e <= TOL, "{case:?}: accumulated input gradient off by {e:.2e}");
    }
}
