//! The pointing game (Zhang et al., used by the Grad-CAM paper, Section 5) on grids the project
//! builds from photos of known classes: every photo is cropped to a `cell` x `cell` square, and
//! 1x2 grids (every ordered pair of photos) and 2x2 grids (every rotation of four photos in turn)
//! are fed whole to the network (an exact resize to the grid's size, no crop). For each cell, the
//! map of that cell's class (its classes summed, as one weighted target, e.g. the three cat
//! classes) must put its maximum (on the image grid; the first maximum in raster order) inside
//! the cell: a hit. A map that is flat (max = min, e.g. all zero) points nowhere: a miss.
//!
//! Photos are used only when the network's top-1 on the photo alone (the same square cell)
//! is one of the photo's classes ([`check_photos`]).

use crate::error::{Error, Result};
use crate::explainer::{ExplainOptions, Explainer, Normalization, Prediction, Target};
use crate::fail;
use crate::feature_map::Map;
use crate::imaging::preprocess::{center_crop_origin, shorter_side_size, Resize};
use crate::imaging::resize::resize_bilinear_window;
use crate::imaging::rgb::RgbImage;
use crate::methods::score::ScoreCamOptions;
use crate::methods::Method;

/// The largest cell side (a 2x2 grid of 1024 x 1024 cells is a 2048 x 2048 input).
pub const MAX_CELL: usize = 1024;

/// A photo and the classes it shows (any of them is right; together they are one target).
#[derive(Clone, Debug)]
pub struct Photo {
    pub name: String,
    pub image: RgbImage,
    pub classes: Vec<usize>,
}

#[derive(Clone, Copy, Debug)]
pub struct PointingOptions {
    /// Side of a cell in pixels (the network's input size fits best: 224 for the default model).
    pub cell: usize,
    /// Target layer is the model's default; Score-CAM keeps this many channels (None: all; the
    /// CLI uses 64 so the benchmark stays in minutes).
    pub score_cam_channels: Option<usize>,
}

impl Default for PointingOptions {
    fn default() -> Self {
        PointingOptions { cell: 224, score_cam_channels: Some(64) }
    }
}

/// One grid: `rows` x `cols` cells holding `photos` (indices into the photo list), row by row.
#[derive(Clone, Debug)]
pub struct Grid {
    pub rows: usize,
    pub cols: usize,
    pub photos: Vec<usize>,
}

/// The grids of `n` photos: every ordered pair as 1x2, and with 4 or more photos, for each start
/// i, the photos i, i+1, i+2, i+3 (mod n) as 2x2 (so with four photos each sits once in each cell).
pub fn grids(n: usize) -> Vec<Grid> {
    let mut out = Vec::new();
    for a in 0..n {
        for b in 0..n {
            if a != b {
                out.push(Grid { rows: 1, cols: 2, photos: vec![a, b] });
            }
        }
    }
    if n >= 4 {
        for i in 0..n {
            out.push(Grid { rows: 2, cols: 2, photos: (0..4).map(|k| (i + k) % n).collect() });
        }
    }
    out
}

/// A photo as a `cell` x `cell` square: its shorter side resized to `cell` (bilinear), the centre
/// kept, as the model's own resize + centre crop does (squeezing the photo instead turns the rocket
/// into a drilling platform).
pub fn cell_image(photo: &RgbImage, cell: usize) -> Result<RgbImage> {
    let (w, h) = shorter_side_size(photo.width, photo.height, cell);
    let (left, top) = center_crop_origin(w, h, cell, cell).map_err(Error::Input)?;
    let planes = resize_bilinear_window(photo, w, h, (left, top, cell, cell)).map_err(Error::Input)?;
    let n = cell * cell;
    let data = (0..n).flat_map(|p| (0..3).map(move |c| (c, p))).map(|(c, p)| planes[c * n + p].round().clamp(0.0, 255.0) as u8).collect();
    RgbImage::from_rgb(cell, cell, data).map_err(Error::Input)
}

/// The grid's image from the photos' cells.
pub fn compose(cells: &[RgbImage], grid: &Grid, cell: usize) -> Result<RgbImage> {
    let (w, h) = (grid.cols * cell, grid.rows * cell);
    let mut data = vec![0u8; w * h * 3];
    for (slot, &i) in grid.photos.iter().enumerate() {
        let src = cells.get(i).ok_or_else(|| Error::Internal(format!("grid names photo {i}")))?;
        let (ox, oy) = ((slot % grid.cols) * cell, (slot / grid.cols) * cell);
        for y in 0..cell {
            let row = &src.data[y * cell * 3..(y + 1) * cell * 3];
            data[((oy + y) * w + ox) * 3..((oy + y) * w + ox + cell) * 3].copy_from_slice(row);
        }
    }
    RgbImage::from_rgb(w, h, data).map_err(Error::Input)
}

/// Whether the map's maximum (first in raster order) lies in cell `slot` of a rows x cols grid
/// laid over the map; a flat map is a miss.
pub fn hit(map: &Map, rows: usize, cols: usize, slot: usize) -> bool {
    let (lo, hi) = (map.min(), map.max());
    if hi.is_nan() || hi <= lo || map.width == 0 || map.height == 0 {
        return false;
    }
    let Some(p) = map.data.iter().position(|&v| v == hi) else { return false };
    let (x, y) = (p % map.width, p / map.width);
    let (col, row) = (x * cols / map.width, y * rows / map.height);
    row * cols + col == slot
}

fn target(classes: &[usize]) -> Target {
    match classes {
        [c] => Target::Class(*c),
        cs => Target::Weighted(cs.iter().map(|&c| (c, 1.0)).collect()),
    }
}

fn grid_options(method: Method, rows: usize, cols: usize, opts: &PointingOptions) -> ExplainOptions {
    ExplainOptions {
        method,
        resize: Some(Resize::Exact { width: cols * opts.cell, height: rows * opts.cell }),
        normalization: Normalization::Raw,
        score_cam: ScoreCamOptions { batch: None, max_channels: opts.score_cam_channels },
        ..Default::default()
    }
}

/// Each photo's top-1 on its cell alone, and whether it is one of the photo's classes.
pub fn check_photos(explainer: &mut Explainer, photos: &[Photo], opts: &PointingOptions) -> Result<Vec<(Prediction, bool)>> {
    check_cell(opts.cell)?;
    let mut out = Vec::new();
    for p in photos {
        let cell = cell_image(&p.image, opts.cell)?;
        let e = explainer.explain(&cell, &grid_options(Method::GRAD_CAM, 1, 1, opts))?;
        let top = e.top5.first().cloned().ok_or_else(|| Error::Internal("no prediction".into()))?;
        let ok = p.classes.contains(&top.class);
        out.push((top, ok));
    }
    Ok(out)
}

fn check_cell(cell: usize) -> Result<()> {
    if !(8..=MAX_CELL).contains(&cell) {
        return fail!(Option, "the pointing game's cell side must be 8 to {MAX_CELL} pixels, got {cell}");
    }
    Ok(())
}

/// One method's result.
#[derive(Clone, Debug, serde::Serialize)]
pub struct MethodScore {
    pub method: String,
    pub hits_1x2: usize,
    pub trials_1x2: usize,
    pub hits_2x2: usize,
    pub trials_2x2: usize,
    /// The first error, if the method could not run (its trials then count as misses).
    pub error: Option<String>,
    pub seconds: f64,
}

impl MethodScore {
    pub fn hits(&self) -> usize {
        self.hits_1x2 + self.hits_2x2
    }

    pub fn trials(&self) -> usize {
        self.trials_1x2 + self.trials_2x2
    }
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct PointingReport {
    /// The photos played (those whose top-1 was right), by name.
    pub photos: Vec<String>,
    pub grids_1x2: usize,
    pub grids_2x2: usize,
    pub methods: Vec<MethodScore>,
}

/// Plays the game for each method on the grids of `photos` (all of them: check them first with
/// [`check_photos`]). `progress(method name, grid done, grids)` after each grid.
pub fn pointing_game(explainer: &mut Explainer, photos: &[Photo], methods: &[Method], opts: &PointingOptions, progress: &mut dyn FnMut(&str, usize, usize)) -> Result<PointingReport> {
    check_cell(opts.cell)?;
    if photos.len() < 2 {
        return fail!(Option, "the pointing game needs at least two photos, got {}", photos.len());
    }
    let cells = photos.iter().map(|p| cell_image(&p.image, opts.cell)).collect::<Result<Vec<_>>>()?;
    let all = grids(photos.len());
    let images = all.iter().map(|g| compose(&cells, g, opts.cell)).collect::<Result<Vec<_>>>()?;
    let mut scores: Vec<MethodScore> =
        methods.iter().map(|m| MethodScore { method: m.name().to_string(), hits_1x2: 0, trials_1x2: 0, hits_2x2: 0, trials_2x2: 0, error: None, seconds: 0.0 }).collect();
    for (gi, (grid, image)) in all.iter().zip(&images).enumerate() {
        for (method, score) in methods.iter().zip(scores.iter_mut()) {
            let t0 = crate::clock::now_ms();
            let explain = grid_options(*method, grid.rows, grid.cols, opts);
            for (slot, &photo) in grid.photos.iter().enumerate() {
                let outcome = if score.error.is_some() {
                    false
                } else {
                    match explainer.explain(image, &ExplainOptions { target: target(&photos[photo].classes), ..explain.clone() }) {
                        Ok(e) => hit(&e.image_map, grid.rows, grid.cols, slot),
                        Err(err) => {
                            score.error = Some(err.to_string());
                            false
                        }
                    }
                };
                let two_by_two = grid.rows == 2;
                if two_by_two {
                    score.trials_2x2 += 1;
                    score.hits_2x2 += outcome as usize;
                } else {
                    score.trials_1x2 += 1;
                    score.hits_1x2 += outcome as usize;
                }
            }
            score.seconds += (crate::clock::now_ms() - t0) / 1000.0;
            progress(method.name(), gi + 1, all.len());
        }
    }
    Ok(PointingReport {
        photos: photos.iter().map(|p| p.name.clone()).collect(),
        grids_1x2: all.iter().filter(|g| g.rows == 1).count(),
        grids_2x2: all.iter().filter(|g| g.rows == 2).count(),
        methods: scores,
    })
}
