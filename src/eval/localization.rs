//! Localization (the Grad-CAM paper, Section 4.1): the map is binarized at 15% of its maximum and
//! the box drawn around the single largest segment. Segments are 8-connected (pixels touching at a
//! corner belong together) and found by an iterative flood fill (an explicit stack, no recursion),
//! so a map of any size is safe; the largest is the one with the most pixels (ties: the first in
//! raster order).

use crate::feature_map::Map;

/// The paper's threshold: 15% of the map's maximum.
pub const PAPER_THRESHOLD: f32 = 0.15;

/// A box on the map's grid, in pixels: columns x0..=x1, rows y0..=y1 (inclusive).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct BoundingBox {
    pub x0: usize,
    pub y0: usize,
    pub x1: usize,
    pub y1: usize,
    /// Pixels of the segment the box surrounds.
    pub pixels: usize,
}

impl BoundingBox {
    pub fn width(&self) -> usize {
        self.x1 - self.x0 + 1
    }

    pub fn height(&self) -> usize {
        self.y1 - self.y0 + 1
    }
}

/// The largest 8-connected segment of `mask` (w x h, row-major): its pixels, in the order found.
pub fn largest_component(mask: &[bool], w: usize, h: usize) -> Vec<usize> {
    let mut seen = vec![false; mask.len().min(w.saturating_mul(h))];
    let mut best: Vec<usize> = Vec::new();
    let mut stack = Vec::new();
    for start in 0..seen.len() {
        if !mask[start] || seen[start] {
            continue;
        }
        let mut segment = Vec::new();
        seen[start] = true;
        stack.push(start);
        while let Some(p) = stack.pop() {
            segment.push(p);
            let (x, y) = (p % w, p / w);
            for ny in y.saturating_sub(1)..=(y + 1).min(h - 1) {
                for nx in x.saturating_sub(1)..=(x + 1).min(w - 1) {
                    let q = ny * w + nx;
                    if mask[q] && !seen[q] {
                        seen[q] = true;
                        stack.push(q);
                    }
                }
            }
        }
        if segment.len() > best.len() {
            best = segment;
        }
    }
    best
}

/// The box around the largest segment of the map at `fraction` of its maximum (values >= fraction
/// x max are in); None when the map's maximum is not positive (nothing to localize) or not finite.
pub fn bounding_box(map: &Map, fraction: f32) -> Option<BoundingBox> {
    let peak = map.max();
    if !(peak > 0.0 && peak.is_finite()) || map.data.len() != map.width * map.height {
        return None;
    }
    let level = fraction * peak;
    let mask: Vec<bool> = map.data.iter().map(|&v| v >= level).collect();
    let segment = largest_component(&mask, map.width, map.height);
    let first = *segment.first()?;
    let mut b = BoundingBox { x0: first % map.width, y0: first / map.width, x1: first % map.width, y1: first / map.width, pixels: segment.len() };
    for &p in &segment {
        let (x, y) = (p % map.width, p / map.width);
        b.x0 = b.x0.min(x);
        b.x1 = b.x1.max(x);
        b.y0 = b.y0.min(y);
        b.y1 = b.y1.max(y);
    }
    Some(b)
}

/// Draws the box's outline, `thickness` pixels inside its edges, on RGBA bytes of a w x h image.
pub fn draw_box_rgba(rgba: &mut [u8], w: usize, h: usize, b: &BoundingBox, color: [u8; 3], thickness: usize) {
    if rgba.len() != w * h * 4 || b.x1 >= w || b.y1 >= h {
        return;
    }
    let t = thickness.max(1);
    for y in b.y0..=b.y1 {
        for x in b.x0..=b.x1 {
            let edge = x < b.x0 + t || x + t > b.x1 || y < b.y0 + t || y + t > b.y1;
            if edge {
                rgba[(y * w + x) * 4..(y * w + x) * 4 + 3].copy_from_slice(&color);
            }
        }
    }
}
