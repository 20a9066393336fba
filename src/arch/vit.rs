//! torchvision's VisionTransformer (vit_b_16, vit_b_32, vit_l_16, vit_l_32, vit_h_14, and narrower
//! ones built the same way), as a graph of token maps: the tokens are a C x 1 x T map (channels =
//! hidden size, width = tokens), so layer norm is the channel norm, the MLP is 1x1 convs and the
//! residuals are plain adds. The conv patch embedding becomes tokens, the class token goes first,
//! the position embedding is added; the encoder blocks are
//! x + self_attention(ln_1(x)), then + mlp(ln_2(x)); then `encoder.ln`, token 0, `heads`.
//!
//! Grad-CAM on a token layer sees the patches as a grid (`Graph::leading_tokens`,
//! `FeatureMap::tokens_to_grid`); the default target is the last block's `ln_1`, as in
//! pytorch-grad-cam's ViT example.

use crate::error::Result;
use crate::fail;
use crate::graph::builder::ConvSpec;
use crate::graph::{Activation, Graph, GraphBuilder, NodeId};
use crate::weights::WeightMap;

/// torchvision's LayerNorm epsilon for ViTs.
const EPS: f32 = 1e-6;

/// Whether a state dict's keys are this family's.
pub fn matches(weights: &WeightMap) -> bool {
    weights.contains("class_token") && weights.contains("encoder.pos_embedding") && weights.contains("encoder.ln.weight")
}

/// The number of heads of torchvision's variants by hidden size: the file does not store it.
pub fn default_heads(hidden: usize) -> Option<usize> {
    match hidden {
        768 => Some(12),         // vit_b_16, vit_b_32
        1024 | 1280 => Some(16), // vit_l_16, vit_l_32; vit_h_14
        _ => None,
    }
}

/// The blocks `encoder.layers.encoder_layer_{i}` the file has.
fn block_count(weights: &WeightMap) -> usize {
    (0..).take_while(|i| weights.contains(&format!("encoder.layers.encoder_layer_{i}.ln_1.weight"))).count()
}

/// The name of the last block's `ln_1`: the default Grad-CAM target.
pub fn default_layer(graph: &Graph) -> String {
    let last = graph.nodes.iter().rev().find(|n| n.name.starts_with("encoder.layers.") && n.name.ends_with(".ln_1"));
    last.map_or_else(|| "encoder.layers.encoder_layer_0.ln_1".into(), |n| n.name.clone())
}

/// Builds the graph; `heads` overrides the number of attention heads (needed when the hidden size
/// is not one of torchvision's variants, see `default_heads`).
pub fn build(weights: &WeightMap, heads: Option<usize>) -> Result<Graph> {
    if weights.contains("conv_proj.conv_last.weight") {
        return fail!(Weights, "this ViT has a convolutional stem (torchvision's conv_stem_configs), which is not supported; only the patch-embedding stem (conv_proj) of vit_b_16 and its kin is");
    }
    let shape = weights.check("conv_proj.weight", &[None, Some(3), None, None])?.to_vec();
    let (hidden, patch) = (shape[0], shape[2]);
    if shape[3] != patch {
        return fail!(Weights, "tensor 'conv_proj.weight' has {}x{} patches; a ViT's patches are square", shape[2], shape[3]);
    }
    let Some(heads) = heads.or_else(|| default_heads(hidden)) else {
        return fail!(
            Weights,
            "the file does not say how many attention heads a ViT of hidden size {hidden} has (torchvision's: 768 -> 12, 1024 and 1280 -> 16); build it with arch::vit::build(weights, Some(heads))"
        );
    };
    let mut b = GraphBuilder::new(weights).require_conv_biases();
    let x = b.conv("conv_proj", None, b.input(), ConvSpec::new(patch, 0))?;
    let x = b.tokens("tokens", x);
    let x = b.prepend_token("class_token", x, "class_token")?;
    let grid = patch_grid(weights)?;
    let x = b.add_positional("encoder.pos_embedding", x, "encoder.pos_embedding", Some((grid * patch, grid * patch)))?;
    b.alias(x, "encoder.dropout");
    let blocks = block_count(weights);
    if blocks == 0 {
        return fail!(Weights, "the file has no encoder blocks (no key 'encoder.layers.encoder_layer_0.ln_1.weight')");
    }
    let mut x = x;
    for i in 0..blocks {
        x = block(&mut b, &format!("encoder.layers.encoder_layer_{i}"), x, heads)?;
    }
    b.alias(x, "encoder.layers");
    let x = b.channel_norm("encoder.ln", x, EPS)?;
    b.alias(x, "encoder");
    let x = b.class_token("encoder.class_token", x);
    let mut x = b.flatten("flatten", x);
    // With a representation size: Linear -> tanh before the head.
    if weights.contains("heads.pre_logits.weight") {
        x = b.linear("heads.pre_logits", x)?;
        x = b.act("heads.act", x, Activation::Tanh);
    }
    let y = b.linear("heads.head", x)?;
    b.alias(y, "heads");
    b.finish()
}

/// g, the side of the square grid of patches the position embedding (1, 1 + g * g, C) was made for.
fn patch_grid(weights: &WeightMap) -> Result<usize> {
    let tokens = weights.check("encoder.pos_embedding", &[Some(1), None, None])?[1];
    let patches = tokens.saturating_sub(1);
    let g = (patches as f64).sqrt().round() as usize;
    if g == 0 || g * g != patches {
        return fail!(Weights, "tensor 'encoder.pos_embedding' has {tokens} tokens, not a class token and a square grid of patches");
    }
    Ok(g)
}

/// One `EncoderBlock`: x + self_attention(ln_1(x)), then + mlp(ln_2(x)) (dropouts are aliases).
fn block(b: &mut GraphBuilder, name: &str, x: NodeId, heads: usize) -> Result<NodeId> {
    let y = b.channel_norm(&format!("{name}.ln_1"), x, EPS)?;
    let y = b.self_attention(&format!("{name}.self_attention"), y, heads)?;
    b.alias(y, &format!("{name}.dropout"));
    let x = b.add(&format!("{name}.add_1"), x, y)?;
    let y = b.channel_norm(&format!("{name}.ln_2"), x, EPS)?;
    let y = b.pointwise_linear(&format!("{name}.mlp.0"), y, None)?;
    let y = b.act(&format!("{name}.mlp.1"), y, Activation::Gelu);
    b.alias(y, &format!("{name}.mlp.2"));
    let y = b.pointwise_linear(&format!("{name}.mlp.3"), y, None)?;
    b.alias(y, &format!("{name}.mlp.4"));
    b.alias(y, &format!("{name}.mlp"));
    let out = b.add(&format!("{name}.add_2"), x, y)?;
    b.alias(out, name);
    Ok(out)
}
