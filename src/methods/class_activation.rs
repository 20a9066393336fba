//! CAM (Zhou et al., "Learning Deep Features for Discriminative Localization"): on a network whose
//! target layer feeds global average pooling and then the linear classifier directly, the class
//! score is y_c = sum_k W[c, k] mean_ij A_k[i, j] + b_c, so the map sum_k W[c, k] A_k shows where the
//! score comes from, with no backward pass. Its weights are the classifier's row for the class (for a
//! weighted target, sum_c t_c W[c, k]).
//!
//! On such a head dy/dA_k[i, j] = W[c, k] / (H W), so Grad-CAM's alpha_k = W[c, k] / (H W) and
//! Grad-CAM = CAM / (H W) exactly: the Grad-CAM paper's claim that it generalizes CAM.

use super::cam::weighted_sum;
use super::{Grid, Method, MethodDef, Needs, Sign};
use crate::error::{Error, Result};
use crate::feature_map::{FeatureMap, Map};
use crate::graph::{Graph, NodeId, Op};

impl Method {
    pub const CAM: Method = Method(&MethodDef {
        name: "cam",
        aliases: &["classactivationmap"],
        label: "CAM",
        help: "The classifier's weights for the class weight the feature maps (only where the layer feeds global average pooling and the linear classifier); no backward pass.",
        needs: Needs { classifier_weights: true, ..Needs::NOTHING },
        grid: Grid::Layer,
        sign: Sign::Relu,
        compute: |e| Ok(cam(e.activations, e.classifier_weights()?)?.into()),
    });
}

/// sum_k w_k A_k, the weights one per channel.
pub fn cam(a: &FeatureMap, weights: &[f32]) -> Result<Map> {
    if weights.len() != a.channels {
        return Err(Error::Internal(format!("CAM: {} classifier weights for {} channels", weights.len(), a.channels)));
    }
    Ok(weighted_sum(a, weights))
}

/// The per-channel CAM weights sum_c target[c] W[c, k] of the classifier W that `layer` feeds through
/// a 1x1 global average pool (and a flatten), or an error that says why this head has none and which
/// methods work on any head.
pub fn classifier_weights(graph: &Graph, layer: NodeId, target: &[f32]) -> Result<Vec<f32>> {
    let name = graph.display_name(layer).to_string();
    let refuse = |why: String| -> Result<Vec<f32>> {
        Err(Error::Option(format!(
            "CAM needs a layer that feeds global average pooling and then the linear classifier directly; {why}. Use Grad-CAM (equal to CAM up to a constant factor on such heads), Score-CAM or Ablation-CAM, which work on any head"
        )))
    };
    let readers = |id: NodeId| -> Vec<NodeId> { (id + 1..graph.nodes.len()).filter(|&i| graph.nodes[i].inputs.contains(&id)).collect() };
    let only_reader = |id: NodeId| -> Option<NodeId> {
        match readers(id)[..] {
            [r] => Some(r),
            _ => None,
        }
    };
    let Some(pool) = only_reader(layer).filter(|&p| matches!(graph.nodes[p].op, Op::AdaptiveAvgPool { out_h: 1, out_w: 1 })) else {
        return refuse(format!("layer '{name}' is not read by a global average pool alone (pick the layer the pool reads, '{}')", graph.pooled_layer().map_or("?", |p| graph.display_name(p))));
    };
    let mut next = only_reader(pool);
    if let Some(f) = next.filter(|&f| matches!(graph.nodes[f].op, Op::Flatten)) {
        next = only_reader(f);
    }
    let Some(fc) = next else {
        return refuse("the global pool after it feeds more than one layer".into());
    };
    let Op::Linear(linear) = &graph.nodes[fc].op else {
        return refuse(format!("the global pool after it feeds a {} layer, not a linear classifier", graph.nodes[fc].op.kind()));
    };
    if fc != graph.output() {
        return refuse(format!("the linear layer '{}' after the pool is not the network's output", graph.display_name(fc)));
    }
    if target.len() != linear.out_features {
        return Err(Error::Option(format!("the target weights have {} entries, the classifier has {} classes", target.len(), linear.out_features)));
    }
    let cin = linear.in_features;
    let mut w = vec![0.0f32; cin];
    for (c, &t) in target.iter().enumerate().filter(|(_, &t)| t != 0.0) {
        w.iter_mut().zip(&linear.weight[c * cin..(c + 1) * cin]).for_each(|(wk, &v)| *wk += t * v);
    }
    Ok(w)
}
