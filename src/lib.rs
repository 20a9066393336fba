//! gradcam-wasm: visual explanations (Grad-CAM and its family) of convolutional image classifiers,
//! computed with candle on the CPU, natively or in the browser.
//!
//! - `weights`: weight files in, f32 tensors by name out; `onnx`: ONNX classifiers imported as a graph.
//! - `graph`: the network as one graph of named layers; `arch` builds it per architecture.
//! - `kernels`: plain f32 compute kernels; `exec` runs the graph on them (candle custom ops).
//! - `methods`: explanation methods over feature maps and gradients, executor-agnostic.
//! - `imaging`: preprocessing, mapping maps back onto the image, colormaps, overlays.
//! - `loading`: what users say about their model besides its bytes (labels, input size, normalization).
//! - `budget`: the cumulative memory budget of one load or one explanation.
//! - `eval`: the paper's evaluations of a map (faithfulness curves, boxes, the pointing game).
//! - `explainer`: the API that ties them together; `wasm` (wasm32 only) exposes it to JavaScript,
//!   and `wasm_threads` starts the threaded build's pool.

pub mod arch;
pub mod budget;
pub mod cancel;
pub mod clock;
pub mod error;
pub mod eval;
pub mod exec;
pub mod explainer;
pub mod feature_map;
#[cfg(feature = "webgpu")]
pub mod gpu;
pub mod graph;
pub mod imaging;
pub mod kernels;
pub mod labels;
pub mod loading;
pub mod methods;
pub mod onnx;
pub mod profile;
pub mod schema;
pub mod synthetic;
pub mod tape;
#[cfg(target_arch = "wasm32")]
pub mod trap;
#[cfg(target_arch = "wasm32")]
pub mod wasm;
#[cfg(target_arch = "wasm32")]
pub mod wasm_threads;
pub mod weights;

pub use arch::Arch;
pub use error::{Error, Result};
pub use explainer::{ExplainOptions, Explainer, Explanation, Model, Normalization, Target};
pub use feature_map::{FeatureMap, Map};
pub use methods::Method;
