//! ONNX classifiers in: an ONNX file (from `torch.onnx.export`, either exporter, or any tool that
//! writes the same standard ops) becomes the one layer graph every executor runs.
//!
//! - `proto`: the file, decoded with prost into the types `candle-onnx` generates from the ONNX
//!   schema (plus the node metadata that schema predates), after a size check.
//! - `tensors`: initializers and constants, each byte length checked against its dims and dtype
//!   before anything is allocated; external data (`<file>.onnx.data`) checked against its real length.
//! - `names`: the module path of each node (`layer4.1.relu`), read from the dynamo exporter's
//!   `namespace` metadata or the TorchScript exporter's node names.
//! - `import`: the op-by-op translation (batch-norm folded into convs, constant subgraphs folded,
//!   channels-last stretches tracked as a layout, patterns such as erf-GELU and channel shuffle
//!   recognized). An op it cannot map is an error naming the op and the node, never a guess.

mod import;
mod names;
mod proto;
mod tensors;

use crate::arch::Arch;
use crate::error::Result;
use crate::explainer::Model;
use crate::imaging::preprocess::{Normalize, Preprocess, Resize, IMAGENET_MEAN, IMAGENET_STD};

pub use proto::MAX_ONNX_BYTES;
pub use tensors::MAX_PARAMETERS;

/// Whether `bytes` look like an ONNX model (a protobuf `ModelProto` starting with its `ir_version`
/// field): a cheap sniff that tells ONNX apart from safetensors and `torch.save` files.
pub fn is_onnx(bytes: &[u8]) -> bool {
    // Field 1 (ir_version, varint): key 0x08, then a small version; then the key of another
    // ModelProto field (producer_name 0x12, producer_version 0x1a, domain 0x22, model_version 0x28,
    // doc_string 0x32, graph 0x3a, opset_import 0x42, metadata_props 0x72) and a non-zero byte (a
    // length or value; safetensors' 8-byte little-endian header size has zeros there).
    matches!(bytes, [0x08, v, key, next, ..] if (1..=20).contains(v) && [0x12, 0x1a, 0x22, 0x28, 0x32, 0x3a, 0x42, 0x72].contains(key) && *next != 0)
}

/// The external data file an ONNX file's weights live in (the `location` its initializers name,
/// relative to the .onnx file), or `None` when the weights are inside the file.
pub fn external_data_location(onnx: &[u8]) -> Result<Option<String>> {
    let model = proto::decode(onnx)?;
    tensors::external_location(model.graph.as_ref().map(|g| g.initializer.as_slice()).unwrap_or(&[]))
}

/// An imported model and what the import noticed but did not refuse (a softmax dropped at the end).
pub struct OnnxImport {
    pub model: Model,
    pub warnings: Vec<String>,
}

/// Imports an ONNX classifier; `external_data` is the `.onnx.data` file the model names, if any.
/// The whole import runs within one load budget (`budget::for_load`).
pub fn import(onnx: &[u8], external_data: Option<&[u8]>) -> Result<OnnxImport> {
    let file_bytes = onnx.len().saturating_add(external_data.map_or(0, <[u8]>::len));
    crate::budget::within(&crate::budget::for_load(file_bytes), || import_within_budget(onnx, external_data))
}

fn import_within_budget(onnx: &[u8], external_data: Option<&[u8]>) -> Result<OnnxImport> {
    let model = proto::decode(onnx)?;
    let meta = proto::decode_node_metadata(onnx)?;
    let imported = import::Importer::run(&model, &meta, external_data)?;
    let preprocess = imported.input_size.map(|(h, w)| Preprocess {
        resize: Resize::ShorterSide { size: (h.max(w) * 256).div_ceil(224), crop: Some((w, h)) },
        normalize: Normalize::MeanStd { mean: IMAGENET_MEAN, std: IMAGENET_STD },
    });
    let mut model = Model::from_graph(Arch::Onnx, imported.graph, preprocess);
    if let Some(layer) = imported.default_layer {
        model.default_layer = layer;
    }
    Ok(OnnxImport { model, warnings: imported.warnings })
}

impl Model {
    /// Imports an ONNX classifier (batch 1, 3-channel image input, logits out). `external_data` is
    /// the `.onnx.data` file when the weights live outside the `.onnx` (the dynamo exporter's
    /// default). Layers are named by their PyTorch module path where the file tells it (`layer4`,
    /// `layer4.1.conv1`), with the ONNX tensor names as aliases. The input size, when the file fixes
    /// it, becomes the crop of the evaluation transform; normalization is ImageNet mean/std.
    pub fn from_onnx(onnx: &[u8], external_data: Option<&[u8]>) -> Result<Model> {
        import(onnx, external_data).map(|i| i.model)
    }
}
