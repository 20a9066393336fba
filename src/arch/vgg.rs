//! torchvision VGG (with and without batch-norm) and AlexNet: a `features` stack of convs, ReLUs and
//! max pools, an adaptive average pool, and a `classifier` of linear layers. Which indices hold convs
//! comes from the file; a pool sits wherever the index sequence skips one.

use crate::error::Result;
use crate::fail;
use crate::graph::builder::ConvSpec;
use crate::graph::{Graph, GraphBuilder};
use crate::weights::WeightMap;

#[derive(Clone, Copy, PartialEq)]
pub enum Family {
    Vgg { batch_norm: bool },
    AlexNet,
}

/// The largest layer index a key name may carry: 4 per key in the file (plus 4). Every index of a
/// `Sequential` that these builders walk belongs to a module with keys (a conv, batch-norm or
/// linear: at least 2 keys) or sits between two such (a ReLU, pool or dropout), so a real file
/// never comes near it, and the loops over indices are bounded by the file's size, whatever
/// number a key name spells (`features.999999999.weight`).
pub fn max_layer_index(weights: &WeightMap) -> usize {
    weights.names().count().saturating_mul(4).saturating_add(4)
}

/// Indices `i` with a 4-D `{prefix}.{i}.weight` (convs) or a 2-D one (linears), each at most
/// `max_layer_index`.
fn indices(weights: &WeightMap, prefix: &str, rank: usize) -> Result<Vec<usize>> {
    let limit = max_layer_index(weights);
    let mut idx = Vec::new();
    for n in weights.names() {
        let Some(digits) = n.strip_prefix(prefix).and_then(|r| r.strip_suffix(".weight")) else { continue };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let i = digits.parse::<usize>().ok().filter(|&i| i <= limit);
        let Some(i) = i else {
            return fail!(
                Weights,
                "key '{}' has layer index {}, more than a file of {} keys can hold (at most {limit}, 4 per key): the key names are corrupt",
                crate::weights::legacy_pth::short(n),
                crate::weights::legacy_pth::short(digits),
                weights.names().count()
            );
        };
        if weights.shape(n).is_some_and(|s| s.len() == rank) {
            idx.push(i);
        }
    }
    idx.sort_unstable();
    idx.dedup();
    Ok(idx)
}

/// `conv_count`: how many convs the variant has (VGG-16: 13); the positions come from the file.
pub fn build(weights: &WeightMap, family: Family, conv_count: usize) -> Result<Graph> {
    let convs = indices(weights, "features.", 4)?;
    let linears = indices(weights, "classifier.", 2)?;
    if convs.is_empty() || linears.is_empty() {
        return fail!(Weights, "no 'features.N.weight' convs or 'classifier.N.weight' linears: not a VGG/AlexNet file");
    }
    if convs.len() != conv_count {
        return fail!(Weights, "the file has {} convs under 'features.' (last: 'features.{}.weight'), this architecture has {conv_count}", convs.len(), convs[convs.len() - 1]);
    }
    let batch_norm = matches!(family, Family::Vgg { batch_norm: true });
    let (pool_k, pool_hw) = match family {
        Family::AlexNet => (3, 6),
        Family::Vgg { .. } => (2, 7),
    };
    let mut b = GraphBuilder::new(weights).require_conv_biases();
    let mut x = b.input();
    for (n, &i) in convs.iter().enumerate() {
        let k = weights.shape(&format!("features.{i}.weight")).map_or(3, |s| s[2]);
        // AlexNet's first conv is 11x11/stride 4/pad 2; every other conv pads k/2.
        let spec = if k == 11 { ConvSpec::new(4, 2) } else { ConvSpec::new(1, k / 2) };
        let bn = batch_norm.then(|| format!("features.{}", i + 1));
        x = b.conv(&format!("features.{i}"), bn.as_deref(), x, spec)?;
        let relu_at = i + 1 + batch_norm as usize;
        x = b.relu(&format!("features.{relu_at}"), x);
        let next = convs.get(n + 1).copied();
        if next.is_none_or(|nx| nx > relu_at + 1) {
            x = b.max_pool(&format!("features.{}", relu_at + 1), x, pool_k, 2, 0, false);
        }
    }
    b.alias(x, "features");
    x = b.adaptive_avg_pool("avgpool", x, pool_hw, pool_hw);
    x = b.flatten("flatten", x);
    let last = *linears.last().unwrap_or(&0);
    let mut j = 0;
    while j <= last {
        if linears.contains(&j) {
            x = b.linear(&format!("classifier.{j}"), x)?;
            if j != last {
                x = b.relu(&format!("classifier.{}", j + 1), x);
                j += 1;
            }
        } else {
            b.alias(x, &format!("classifier.{j}")); // dropout: the identity at inference
        }
        j += 1;
    }
    b.finish()
}
