//! Shape inference for a given input size: tells early, with a readable message, when an image is
//! too small for a network, and gives every layer's (channels, height, width) for listings.

use super::{Graph, Op};
use crate::error::Result;
use crate::fail;

/// (channels, height, width) of one node's output for one image; linear outputs are (features, 1, 1).
pub type Chw = (usize, usize, usize);

pub fn pool_out(n: usize, k: usize, s: usize, p: usize, ceil: bool) -> Option<usize> {
    let span = (n + 2 * p).checked_sub(k)?;
    let mut out = if ceil { span.div_ceil(s) + 1 } else { span / s + 1 };
    // PyTorch: the last window must start inside the input (or its left padding).
    if ceil && (out - 1) * s >= n + p {
        out -= 1;
    }
    Some(out)
}

impl Graph {
    /// Output shape of every node for a 3 x h x w input.
    pub fn shapes(&self, h: usize, w: usize) -> Result<Vec<Chw>> {
        let mut shapes: Vec<Chw> = Vec::with_capacity(self.nodes.len());
        for node in &self.nodes {
            let inp = |i: usize| shapes[node.inputs[i]];
            let s = match &node.op {
                Op::Input => (3, h, w),
                Op::Conv(c) => {
                    let (ci, ih, iw) = inp(0);
                    if ci != c.cin {
                        return fail!(Input, "layer '{}' expects {} channels, got {ci}", node.name, c.cin);
                    }
                    let p = c.padding.resolve(ih, iw, c.kh, c.kw, c.stride.0, c.stride.1);
                    let (Some(oh), Some(ow)) = ((ih + p.top + p.bottom).checked_sub(c.kh).map(|v| v / c.stride.0 + 1), (iw + p.left + p.right).checked_sub(c.kw).map(|v| v / c.stride.1 + 1)) else {
                        return too_small(&node.name, h, w);
                    };
                    (c.cout, oh, ow)
                }
                Op::MaxPool(m) => {
                    let (c, ih, iw) = inp(0);
                    match (pool_out(ih, m.kernel, m.stride, m.padding, m.ceil_mode), pool_out(iw, m.kernel, m.stride, m.padding, m.ceil_mode)) {
                        (Some(oh), Some(ow)) => (c, oh, ow),
                        _ => return too_small(&node.name, h, w),
                    }
                }
                Op::AvgPool(a) => {
                    let (c, ih, iw) = inp(0);
                    match (pool_out(ih, a.kernel.0, a.stride.0, a.padding.0, a.ceil_mode), pool_out(iw, a.kernel.1, a.stride.1, a.padding.1, a.ceil_mode)) {
                        (Some(oh), Some(ow)) => (c, oh, ow),
                        _ => return too_small(&node.name, h, w),
                    }
                }
                Op::AdaptiveAvgPool { out_h, out_w } => (inp(0).0, *out_h, *out_w),
                Op::Flatten => {
                    let (c, ih, iw) = inp(0);
                    (c * ih * iw, 1, 1)
                }
                Op::Linear(l) => {
                    if inp(0).0 != l.in_features {
                        return fail!(Input, "layer '{}' expects {} features, got {}", node.name, l.in_features, inp(0).0);
                    }
                    (l.out_features, 1, 1)
                }
                Op::Relu | Op::Relu6 | Op::Act(_) => inp(0),
                Op::ChannelShuffle { groups } => {
                    if *groups == 0 || inp(0).0 % groups != 0 {
                        return fail!(Input, "layer '{}' shuffles {} channels in {groups} groups", node.name, inp(0).0);
                    }
                    inp(0)
                }
                Op::Affine(a) => {
                    if inp(0).0 != a.scale.len() {
                        return fail!(Input, "layer '{}' scales {} channels, got {}", node.name, a.scale.len(), inp(0).0);
                    }
                    inp(0)
                }
                Op::ChannelNorm(n) => {
                    if inp(0).0 != n.weight.len() {
                        return fail!(Input, "layer '{}' normalizes {} channels, got {}", node.name, n.weight.len(), inp(0).0);
                    }
                    inp(0)
                }
                Op::Slice { start, end } => {
                    let (c, ih, iw) = inp(0);
                    if start >= end || *end > c {
                        return fail!(Input, "layer '{}' takes channels {start}..{end} of {c}", node.name);
                    }
                    (end - start, ih, iw)
                }
                Op::Mul => {
                    let (a, b) = (inp(0), inp(1));
                    // The gate may be C x 1 x 1 (squeeze-excitation), broadcast over the map.
                    if a.0 != b.0 || !((b.1, b.2) == (a.1, a.2) || (b.1, b.2) == (1, 1)) {
                        return fail!(Input, "layer '{}' multiplies shapes {a:?} and {b:?}", node.name);
                    }
                    a
                }
                Op::Add => {
                    if inp(0) != inp(1) {
                        return fail!(Input, "layer '{}' adds shapes {:?} and {:?} (an image size this network cannot take; try a multiple of 32)", node.name, inp(0), inp(1));
                    }
                    inp(0)
                }
                Op::Tokens => {
                    let (c, ih, iw) = inp(0);
                    (c, 1, ih * iw)
                }
                Op::PrependToken(token) => {
                    let (c, ih, iw) = inp(0);
                    if c != token.len() || ih != 1 {
                        return fail!(Input, "layer '{}' puts a {}-channel token before a {c} x {ih} x {iw} map (it takes a C x 1 x T token sequence)", node.name, token.len());
                    }
                    (c, 1, iw + 1)
                }
                Op::AddPositional(p) => {
                    if let Some((ph, pw)) = p.input_size.filter(|&size| size != (h, w)) {
                        return fail!(Input, "this network's position embedding ('{}') fixes its input to {pw}x{ph} pixels; got a {w}x{h} input: resize or crop the image to {pw}x{ph}", node.name);
                    }
                    if inp(0) != (p.channels, 1, p.tokens) {
                        return fail!(
                            Input,
                            "layer '{}' adds a position embedding of {} tokens x {} channels to shape {:?}: the input size does not fit the embedding",
                            node.name,
                            p.tokens,
                            p.channels,
                            inp(0)
                        );
                    }
                    inp(0)
                }
                Op::SelfAttention(a) => {
                    let (c, ih, _) = inp(0);
                    if c != a.channels() || ih != 1 {
                        return fail!(Input, "layer '{}' attends over {}-channel tokens, got shape {:?}", node.name, a.channels(), inp(0));
                    }
                    inp(0)
                }
                Op::ClassToken => (inp(0).0, 1, 1),
                Op::Concat => {
                    let (_, ih, iw) = inp(0);
                    let mut c = 0;
                    for i in 0..node.inputs.len() {
                        if (inp(i).1, inp(i).2) != (ih, iw) {
                            return fail!(Input, "layer '{}' concatenates maps of different sizes", node.name);
                        }
                        c += inp(i).0;
                    }
                    (c, ih, iw)
                }
            };
            if s.1 == 0 || s.2 == 0 {
                return too_small(&node.name, h, w);
            }
            shapes.push(s);
        }
        Ok(shapes)
    }
}

fn too_small<T>(layer: &str, h: usize, w: usize) -> Result<T> {
    fail!(Input, "a {w}x{h} input is too small for this network: layer '{layer}' would have an empty output; use a larger input size (e.g. 224x224)")
}
