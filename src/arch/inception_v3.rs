//! torchvision Inception v3 (input 299): a BasicConv2d stem, Mixed_5b ..= Mixed_7c (InceptionA to E),
//! global average pool, dropout, fc. Widths and kernel shapes (1x7, 7x1, 1x3, 3x1) come from the
//! file; stride-1 convs pad k / 2 per axis, stride-2 convs and three stem convs do not pad.
//!
//! Pretrained torchvision Inception v3 runs with `transform_input=True`, which the state dict cannot
//! tell: as for GoogLeNet (see googlenet.rs) the graph starts at `Conv2d_1a_3x3`.

use super::googlenet::{basic_conv, drop_auxiliary};
use crate::error::Result;
use crate::graph::{AvgPool, Graph, GraphBuilder, NodeId};
use crate::weights::WeightMap;

#[derive(Clone, Copy)]
enum Kind {
    A,
    B,
    C,
    D,
    E,
}

const MIXED: [(&str, Kind); 11] = [
    ("Mixed_5b", Kind::A),
    ("Mixed_5c", Kind::A),
    ("Mixed_5d", Kind::A),
    ("Mixed_6a", Kind::B),
    ("Mixed_6b", Kind::C),
    ("Mixed_6c", Kind::C),
    ("Mixed_6d", Kind::C),
    ("Mixed_6e", Kind::C),
    ("Mixed_7a", Kind::D),
    ("Mixed_7b", Kind::E),
    ("Mixed_7c", Kind::E),
];

/// Whether a state dict's keys are this family's.
pub fn matches(weights: &WeightMap) -> bool {
    weights.contains("Conv2d_1a_3x3.conv.weight") && weights.contains("Mixed_5b.branch1x1.conv.weight")
}

pub fn build(weights: &WeightMap) -> Result<Graph> {
    drop_auxiliary(weights, &["AuxLogits."])?;
    let mut b = GraphBuilder::new(weights);
    let input = b.input();
    let x = basic_conv(&mut b, "Conv2d_1a_3x3", input, 2, false)?;
    let x = basic_conv(&mut b, "Conv2d_2a_3x3", x, 1, false)?;
    let x = basic_conv(&mut b, "Conv2d_2b_3x3", x, 1, true)?;
    let x = b.max_pool("maxpool1", x, 3, 2, 0, false);
    let x = basic_conv(&mut b, "Conv2d_3b_1x1", x, 1, false)?;
    let x = basic_conv(&mut b, "Conv2d_4a_3x3", x, 1, false)?;
    let mut x = b.max_pool("maxpool2", x, 3, 2, 0, false);
    for (name, kind) in MIXED {
        let branches = match kind {
            Kind::A => inception_a(&mut b, name, x)?,
            Kind::B => inception_b(&mut b, name, x)?,
            Kind::C => inception_c(&mut b, name, x)?,
            Kind::D => inception_d(&mut b, name, x)?,
            Kind::E => inception_e(&mut b, name, x)?,
        };
        x = b.concat(&format!("{name}.cat"), &branches);
        b.alias(x, name);
    }
    let x = b.adaptive_avg_pool("avgpool", x, 1, 1);
    let x = b.flatten("flatten", x);
    b.alias(x, "dropout");
    b.linear("fc", x)?;
    b.finish()
}

/// A chain of stride-1, size-keeping BasicConv2d blocks `{name}.{branch}_{suffix}`.
fn chain(b: &mut GraphBuilder, name: &str, branch: &str, suffixes: &[&str], x: NodeId) -> Result<NodeId> {
    suffixes.iter().try_fold(x, |y, s| basic_conv(b, &format!("{name}.{branch}_{s}"), y, 1, true))
}

/// The functional 3x3/stride-1 average pool (zero padding counted, PyTorch's default) and the
/// `branch_pool` 1x1 conv after it.
fn pool_branch(b: &mut GraphBuilder, name: &str, x: NodeId) -> Result<NodeId> {
    let pool = AvgPool { kernel: (3, 3), stride: (1, 1), padding: (1, 1), ceil_mode: false, count_include_pad: true };
    let y = b.avg_pool(&format!("{name}.avg_pool"), x, pool);
    basic_conv(b, &format!("{name}.branch_pool"), y, 1, true)
}

fn inception_a(b: &mut GraphBuilder, name: &str, x: NodeId) -> Result<Vec<NodeId>> {
    let b1 = basic_conv(b, &format!("{name}.branch1x1"), x, 1, true)?;
    let b5 = chain(b, name, "branch5x5", &["1", "2"], x)?;
    let b3 = chain(b, name, "branch3x3dbl", &["1", "2", "3"], x)?;
    Ok(vec![b1, b5, b3, pool_branch(b, name, x)?])
}

/// Grid reduction 35 -> 17: stride-2 convs without padding, and a 3x3/stride-2 max pool.
fn inception_b(b: &mut GraphBuilder, name: &str, x: NodeId) -> Result<Vec<NodeId>> {
    let b3 = basic_conv(b, &format!("{name}.branch3x3"), x, 2, false)?;
    let d = chain(b, name, "branch3x3dbl", &["1", "2"], x)?;
    let d = basic_conv(b, &format!("{name}.branch3x3dbl_3"), d, 2, false)?;
    let pool = b.max_pool(&format!("{name}.max_pool"), x, 3, 2, 0, false);
    Ok(vec![b3, d, pool])
}

fn inception_c(b: &mut GraphBuilder, name: &str, x: NodeId) -> Result<Vec<NodeId>> {
    let b1 = basic_conv(b, &format!("{name}.branch1x1"), x, 1, true)?;
    let b7 = chain(b, name, "branch7x7", &["1", "2", "3"], x)?;
    let d = chain(b, name, "branch7x7dbl", &["1", "2", "3", "4", "5"], x)?;
    Ok(vec![b1, b7, d, pool_branch(b, name, x)?])
}

/// Grid reduction 17 -> 8.
fn inception_d(b: &mut GraphBuilder, name: &str, x: NodeId) -> Result<Vec<NodeId>> {
    let b3 = basic_conv(b, &format!("{name}.branch3x3_1"), x, 1, true)?;
    let b3 = basic_conv(b, &format!("{name}.branch3x3_2"), b3, 2, false)?;
    let b7 = chain(b, name, "branch7x7x3", &["1", "2", "3"], x)?;
    let b7 = basic_conv(b, &format!("{name}.branch7x7x3_4"), b7, 2, false)?;
    let pool = b.max_pool(&format!("{name}.max_pool"), x, 3, 2, 0, false);
    Ok(vec![b3, b7, pool])
}

/// The 3x3 branches split into a 1x3 and a 3x1 conv whose outputs are concatenated.
fn inception_e(b: &mut GraphBuilder, name: &str, x: NodeId) -> Result<Vec<NodeId>> {
    let b1 = basic_conv(b, &format!("{name}.branch1x1"), x, 1, true)?;
    let s = basic_conv(b, &format!("{name}.branch3x3_1"), x, 1, true)?;
    let b3 = split_pair(b, name, "branch3x3_2", s)?;
    let d = chain(b, name, "branch3x3dbl", &["1", "2"], x)?;
    let d = split_pair(b, name, "branch3x3dbl_3", d)?;
    Ok(vec![b1, b3, d, pool_branch(b, name, x)?])
}

/// `{prefix}a` (1x3) and `{prefix}b` (3x1) on the same input, concatenated.
fn split_pair(b: &mut GraphBuilder, name: &str, prefix: &str, x: NodeId) -> Result<NodeId> {
    let a = basic_conv(b, &format!("{name}.{prefix}a"), x, 1, true)?;
    let c = basic_conv(b, &format!("{name}.{prefix}b"), x, 1, true)?;
    Ok(b.concat(&format!("{name}.{prefix}.cat"), &[a, c]))
}
