//! Image side of Grad-CAM: turn a canvas image into a network input tensor,
//! and turn a class-activation map back into a picture on the original image.
//!
//! Pipeline: [`rgb::RgbImage::from_rgba`] -> [`preprocess::preprocess`]
//! (resize + crop + normalize, keeping a [`preprocess::Geometry`]) ->
//! network -> [`project::project_to_image`] (map back onto the original
//! pixels) -> [`normalize::min_max_masked`] -> [`overlay::overlay_rgba_masked`].
//!
//! Everything is plain Rust without dependencies so it builds for
//! `wasm32-unknown-unknown`. Functions return `Result<_, String>` instead of
//! panicking because a panic in wasm surfaces as an opaque "unreachable".

pub mod colormap;
mod colormap_tables;
pub mod normalize;
pub mod npy;
pub mod overlay;
pub mod preprocess;
pub mod project;
pub mod resize;
pub mod rgb;

pub use colormap::Colormap;
pub use preprocess::{Geometry, Normalize, Prepared, Preprocess, Resize};
pub use rgb::RgbImage;
