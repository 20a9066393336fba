//! Decoding the file: prost, on the types `candle-onnx` generates from the ONNX schema.
//!
//! That schema (IR version 9) predates the per-node `metadata_props` (NodeProto field 9, IR 10),
//! where the dynamo exporter writes each node's module path; prost skips fields a type does not
//! declare, so those are read in a second, cheap pass with three small message types that declare
//! only the path to them (ModelProto.graph = 7, GraphProto.node = 1, NodeProto.metadata_props = 9).

use crate::error::{Error, Result};
use crate::fail;
pub use candle_onnx::onnx::{AttributeProto, ModelProto, NodeProto, StringStringEntryProto, TensorProto, ValueInfoProto};
use prost::Message;

/// The largest .onnx file decoded (protobuf itself stops at 2 GiB); external data is not counted.
pub const MAX_ONNX_BYTES: usize = 1 << 30;

fn check_size(bytes: &[u8]) -> Result<()> {
    if bytes.is_empty() {
        return fail!(Weights, "the ONNX file is empty (0 bytes)");
    }
    if bytes.len() > MAX_ONNX_BYTES {
        return fail!(
            Weights,
            "the ONNX file is {} MB, over the {} MB this importer decodes; export the weights as external data (torch.onnx.export's default) and pass the .onnx.data file beside it",
            bytes.len() >> 20,
            MAX_ONNX_BYTES >> 20
        );
    }
    Ok(())
}

pub fn decode(bytes: &[u8]) -> Result<ModelProto> {
    check_size(bytes)?;
    let model = ModelProto::decode(bytes).map_err(|e| Error::Weights(format!("not a readable ONNX file ({e}): it is truncated, damaged or not an ONNX model ({} bytes)", bytes.len())))?;
    let graph = match &model.graph {
        Some(g) if !g.node.is_empty() => g,
        _ => return fail!(Weights, "not an ONNX model: the file decodes but holds no graph nodes (is it truncated or another kind of file?)"),
    };
    if model.ir_version < 3 {
        return fail!(Weights, "ONNX IR version {} is too old (or the file is not ONNX); re-export with a current exporter", model.ir_version);
    }
    if graph.node.len() > 100_000 {
        return fail!(Weights, "the ONNX graph has {} nodes, more than this importer accepts (100000)", graph.node.len());
    }
    Ok(model)
}

#[derive(Clone, PartialEq, Message)]
struct MetaModel {
    #[prost(message, optional, tag = "7")]
    graph: Option<MetaGraph>,
}

#[derive(Clone, PartialEq, Message)]
struct MetaGraph {
    #[prost(message, repeated, tag = "1")]
    node: Vec<MetaNode>,
}

#[derive(Clone, PartialEq, Message)]
struct MetaNode {
    #[prost(message, repeated, tag = "9")]
    metadata_props: Vec<StringStringEntryProto>,
}

/// Each node's `metadata_props` (key, value), in node order (empty lists for files without them).
pub fn decode_node_metadata(bytes: &[u8]) -> Result<Vec<Vec<(String, String)>>> {
    check_size(bytes)?;
    let meta = MetaModel::decode(bytes).map_err(|e| Error::Weights(format!("not a readable ONNX file ({e}): it is truncated or damaged")))?;
    Ok(meta.graph.map(|g| g.node.into_iter().map(|n| n.metadata_props.into_iter().map(|p| (p.key, p.value)).collect()).collect()).unwrap_or_default())
}
