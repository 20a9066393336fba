// The parameters and bindings every convolution shader shares (conv.wgsl, conv_gemm.wgsl,
// depthwise.wgsl): the executor prepends this file to each. Bindings 2 (weights) and 3 (bias) are
// declared by each shader, with the element type its weight layout needs.

struct Params {
    cin: u32, h: u32, w: u32, cout: u32,
    oh: u32, ow: u32, kh: u32, kw: u32,
    sh: u32, sw: u32, pad_top: u32, pad_left: u32,
    groups: u32, acc: u32, no_bias: u32, act: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(4) var<storage, read_write> dst: array<f32>;

// What a forward kernel stores: its sum, or a ReLU (act 1) or ReLU6 (act 2) of it, where the
// executor fused the activation node that follows the conv into it.
fn activate(v: f32) -> f32 {
    if (p.act == 1u) { return max(v, 0.0); }
    if (p.act == 2u) { return clamp(v, 0.0, 6.0); }
    return v;
}

fn activate4(v: vec4<f32>) -> vec4<f32> {
    if (p.act == 1u) { return max(v, vec4<f32>(0.0)); }
    if (p.act == 2u) { return clamp(v, vec4<f32>(0.0), vec4<f32>(6.0)); }
    return v;
}
