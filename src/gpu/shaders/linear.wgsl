// Fully connected layer, PyTorch layout weight (out, in), and its transposed product for the input gradient.
// A weight larger than one binding is split into row blocks: this dispatch handles rows row0 .. row0 + rows.

struct Params { in_f: u32, rows: u32, acc: u32, row0: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read> wt: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> dst: array<f32>;

@compute @workgroup_size(64)
fn forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let o = gid.x + gid.y * nwg.x * 64u;
    if (o >= p.rows) { return; }
    let wb = o * p.in_f;
    var s = 0.0;
    for (var k = 0u; k < p.in_f; k++) { s += src[k] * wt[wb + k]; }
    dst[p.row0 + o] = s + bias[o];
}

// dx[k] = sum_o g[o] w[o, k] over this block's rows; src = g, dst = dx.
@compute @workgroup_size(64)
fn backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let k = gid.x + gid.y * nwg.x * 64u;
    if (k >= p.in_f) { return; }
    var s = 0.0;
    for (var o = 0u; o < p.rows; o++) { s += src[p.row0 + o] * wt[o * p.in_f + k]; }
    if (p.acc != 0u) { dst[k] += s; } else { dst[k] = s; }
}
