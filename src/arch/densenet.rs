//! torchvision DenseNet-121/161/169/201 (and any other growth rate or block configuration: layer
//! counts and widths come from the file).
//!
//! A dense layer reads the concatenation of its block's input and every earlier layer's output:
//! norm1 -> relu1 -> conv1 (1x1) -> norm2 -> relu2 -> conv2 (3x3). norm1 follows a concat, so it stays a
//! per-channel affine; norm2 directly follows conv1 and folds into it. A transition halves the size:
//! norm -> relu -> conv (1x1) -> 2x2 average pool. After `features.norm5` torchvision applies a
//! functional ReLU (named `relu`, as an ONNX export of it is: the default Grad-CAM layer) and pools.

use crate::error::Result;
use crate::fail;
use crate::graph::builder::ConvSpec;
use crate::graph::{AvgPool, Graph, GraphBuilder, NodeId};
use crate::weights::WeightMap;

/// Whether a state dict's keys are this family's (either key style, see `modern_keys`).
pub fn matches(weights: &WeightMap) -> bool {
    weights.contains("features.conv0.weight") && (weights.contains("features.denseblock1.denselayer1.conv1.weight") || weights.contains("features.denseblock1.denselayer1.conv.1.weight"))
}

pub fn build(weights: &WeightMap) -> Result<Graph> {
    match modern_keys(weights)? {
        Some(renamed) => build_from(&renamed),
        None => build_from(weights),
    }
}

fn build_from(weights: &WeightMap) -> Result<Graph> {
    let mut b = GraphBuilder::new(weights);
    let x = b.conv("features.conv0", Some("features.norm0"), b.input(), ConvSpec::new(2, 3))?;
    let x = b.relu("features.relu0", x);
    let mut x = b.max_pool("features.pool0", x, 3, 2, 1, false);
    let blocks = (1..).take_while(|i| weights.contains(&format!("features.denseblock{i}.denselayer1.conv1.weight"))).count();
    if blocks == 0 {
        return fail!(Weights, "a DenseNet needs features.denseblock1 (key features.denseblock1.denselayer1.conv1.weight)");
    }
    for i in 1..=blocks {
        x = dense_block(&mut b, &format!("features.denseblock{i}"), x)?;
        if i < blocks {
            x = transition(&mut b, &format!("features.transition{i}"), x)?;
        }
    }
    let x = b.batch_norm("features.norm5", x, 1e-5)?;
    b.alias(x, "features");
    let x = b.relu("relu", x);
    let x = b.adaptive_avg_pool("avgpool", x, 1, 1);
    let x = b.flatten("flatten", x);
    b.linear("classifier", x)?;
    b.finish()
}

/// Every layer reads the concat of the block input and all earlier outputs; the block's output is
/// the concat of all of them.
fn dense_block(b: &mut GraphBuilder, name: &str, x: NodeId) -> Result<NodeId> {
    let weights = b.weights();
    let layers = (1..).take_while(|j| weights.contains(&format!("{name}.denselayer{j}.conv1.weight"))).count();
    let mut features = vec![x];
    for j in 1..=layers {
        let layer = format!("{name}.denselayer{j}");
        let input = if features.len() == 1 { x } else { b.concat(&format!("{layer}.cat"), &features) };
        features.push(dense_layer(b, &layer, input)?);
    }
    let out = b.concat(&format!("{name}.cat"), &features);
    b.alias(out, name);
    Ok(out)
}

fn dense_layer(b: &mut GraphBuilder, name: &str, x: NodeId) -> Result<NodeId> {
    let y = b.batch_norm(&format!("{name}.norm1"), x, 1e-5)?;
    let y = b.relu(&format!("{name}.relu1"), y);
    let y = b.conv(&format!("{name}.conv1"), Some(&format!("{name}.norm2")), y, ConvSpec::new(1, 0))?;
    let y = b.relu(&format!("{name}.relu2"), y);
    let y = b.conv(&format!("{name}.conv2"), None, y, ConvSpec::new(1, 1))?;
    b.alias(y, name);
    Ok(y)
}

fn transition(b: &mut GraphBuilder, name: &str, x: NodeId) -> Result<NodeId> {
    let y = b.batch_norm(&format!("{name}.norm"), x, 1e-5)?;
    let y = b.relu(&format!("{name}.relu"), y);
    let y = b.conv(&format!("{name}.conv"), None, y, ConvSpec::new(1, 0))?;
    let pool = AvgPool { kernel: (2, 2), stride: (2, 2), padding: (0, 0), ceil_mode: false, count_include_pad: true };
    let y = b.avg_pool(&format!("{name}.pool"), y, pool);
    b.alias(y, name);
    Ok(y)
}

/// torchvision's own DenseNet checkpoints (the files its weight URLs serve) name a dense layer's
/// modules `norm.1`, `conv.2`, ... where the model's state dict says `norm1`, `conv2`; torchvision
/// renames them when it loads. The same here: a map with the model's names, or None when the file
/// already uses them.
fn modern_keys(weights: &WeightMap) -> Result<Option<WeightMap>> {
    let names: Vec<String> = weights.names().map(String::from).collect();
    if !names.iter().any(|n| legacy_layer_key(n).is_some()) {
        return Ok(None);
    }
    let mut params = Vec::with_capacity(names.len());
    for name in names {
        let shape: Vec<Option<usize>> = weights.shape(&name).unwrap_or_default().iter().map(|&d| Some(d)).collect();
        let param = weights.take(&name, &shape)?;
        params.push((legacy_layer_key(&name).unwrap_or(name), param));
    }
    Ok(Some(WeightMap::from_params(params)))
}

/// `...denselayerN.norm.1.weight` -> `...denselayerN.norm1.weight` (norm, relu, conv; 1 or 2).
fn legacy_layer_key(name: &str) -> Option<String> {
    let parts: Vec<&str> = name.split('.').collect();
    let i = parts.iter().position(|p| p.starts_with("denselayer"))?;
    let (module, index) = (*parts.get(i + 1)?, *parts.get(i + 2)?);
    if !matches!(module, "norm" | "relu" | "conv") || !matches!(index, "1" | "2") || parts.len() != i + 4 {
        return None;
    }
    let mut out: Vec<String> = parts[..=i].iter().map(|s| s.to_string()).collect();
    out.push(format!("{module}{index}"));
    out.push(parts[i + 3].to_string());
    Some(out.join("."))
}

#[cfg(test)]
mod tests {
    use super::legacy_layer_key;

    #[test]
    fn legacy_keys_are_renamed() {
        let k = legacy_layer_key("features.denseblock1.denselayer1.norm.1.running_var");
        assert_eq!(k.as_deref(), Some("features.denseblock1.denselayer1.norm1.running_var"));
        assert_eq!(legacy_layer_key("features.denseblock1.denselayer1.norm1.weight"), None);
        assert_eq!(legacy_layer_key("features.transition1.conv.weight"), None);
    }
}
