//! The Grad-CAM paper's evaluations of a map, outside the methods (no method knows about them):
//!
//! - [`faithfulness`]: deletion and insertion curves with their AUC (Petsiuk et al., RISE), and the
//!   average drop / increase in confidence when only the map's region is kept (Chattopadhay et al.,
//!   Grad-CAM++). Every curve runs as batched forwards through the explainer's executor.
//! - [`localization`]: the map's box at the paper's 15% threshold, from its largest connected
//!   component (8-connected, iterative flood fill).
//! - [`pointing`]: a pointing-game benchmark built from photos of known classes, laid out as 1x2
//!   and 2x2 grids: a class's map must put its maximum in that class's cell.
//!
//! - [`road`]: ROAD, remove and debias (Rong et al. 2022): MoRF and LeRF with noisy linear imputation.

pub mod faithfulness;
pub mod localization;
pub mod pointing;
pub mod road;

pub use faithfulness::{Baseline, ConfidenceChange, Curve, CurveOptions, CurveScore, Faithfulness};
pub use localization::{bounding_box, BoundingBox, PAPER_THRESHOLD};
pub use pointing::{Photo, PointingOptions, PointingReport};
pub use road::{Road, RoadOptions};
