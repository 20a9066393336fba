// The parameters and bindings every convolution shader shares (conv.wgsl, conv_gemm.wgsl,
// depthwise.wgsl): the executor prepends this file to each. Bindings 2 (weights) and 3 (bias) are
// declared by each shader, with the element type its weight layout needs.

struct Params {
    cin: u32, h: u32, w: u32, cout: u32,
    oh: u32, ow: u32, kh: u32, kw: u32,
    sh: u32, sw: u32, pad_top: u32, pad_left: u32,
    groups: u32, acc: u32, no_bias: u32, _p1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(4) var<storage, read_write> dst: array<f32>;
