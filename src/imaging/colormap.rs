//! Colormaps for heatmaps: matplotlib's turbo, jet, viridis and inferno.
//!
//! The tables are matplotlib's 256-entry lookup tables (generated data in
//! `colormap_tables.rs`, see `scripts/gen_colormaps.py`), so a heatmap looks
//! the same as `plt.imshow(cam, cmap=name)`.

use super::colormap_tables::{INFERNO, JET, TURBO, VIRIDIS};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Colormap {
    Turbo,
    Jet,
    Viridis,
    Inferno,
}

impl Colormap {
    /// Every colormap, in the order a UI should list them.
    pub const ALL: [Colormap; 4] = [Colormap::Turbo, Colormap::Jet, Colormap::Viridis, Colormap::Inferno];

    /// Parses a matplotlib name, ignoring case and surrounding spaces.
    pub fn from_name(name: &str) -> Result<Self, String> {
        let wanted = name.trim().to_ascii_lowercase();
        Self::ALL.into_iter().find(|c| c.name() == wanted).ok_or_else(|| {
            let valid: Vec<&str> = Self::ALL.iter().map(|c| c.name()).collect();
            format!("unknown colormap '{name}'; valid names: {}", valid.join(", "))
        })
    }

    /// The matplotlib name.
    pub fn name(&self) -> &'static str {
        match self {
            Colormap::Turbo => "turbo",
            Colormap::Jet => "jet",
            Colormap::Viridis => "viridis",
            Colormap::Inferno => "inferno",
        }
    }

    fn table(&self) -> &'static [[u8; 3]; 256] {
        match self {
            Colormap::Turbo => &TURBO,
            Colormap::Jet => &JET,
            Colormap::Viridis => &VIRIDIS,
            Colormap::Inferno => &INFERNO,
        }
    }

    /// Colour of `t` in [0, 1] (clamped; NaN gives the colour of 0).
    /// Entry `floor(t * 256)`, with t = 1 taking the last entry: the same
    /// binning as matplotlib, no interpolation between entries.
    pub fn color(&self, t: f32) -> [u8; 3] {
        let t = if t.is_nan() { 0.0 } else { t.clamp(0.0, 1.0) };
        let index = ((t * 256.0) as usize).min(255);
        self.table()[index]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_errors_list_valid_names() {
        for c in Colormap::ALL {
            assert_eq!(Colormap::from_name(c.name()).unwrap(), c);
        }
        assert_eq!(Colormap::from_name(" Viridis ").unwrap(), Colormap::Viridis);
        let e = Colormap::from_name("hot").unwrap_err();
        assert!(e.contains("'hot'") && e.contains("turbo, jet, viridis, inferno"), "{e}");
    }

    #[test]
    fn known_matplotlib_colours() {
        // round(255 * matplotlib's colormap(i)) for i = 0, 128, 255.
        assert_eq!(Colormap::Viridis.color(0.0), [68, 1, 84]);
        assert_eq!(Colormap::Viridis.color(1.0), [253, 231, 37]);
        assert_eq!(Colormap::Viridis.color(0.5), [33, 145, 140]);
        assert_eq!(Colormap::Inferno.color(0.0), [0, 0, 4]);
        assert_eq!(Colormap::Inferno.color(1.0), [252, 255, 164]);
        assert_eq!(Colormap::Turbo.color(0.0), [48, 18, 59]);
        assert_eq!(Colormap::Turbo.color(0.5), [164, 252, 60]);
        assert_eq!(Colormap::Turbo.color(1.0), [122, 4, 3]);
        assert_eq!(Colormap::Jet.color(0.0), [0, 0, 128]);
        assert_eq!(Colormap::Jet.color(0.25), [0, 128, 255]); // entry 64
        assert_eq!(Colormap::Jet.color(1.0), [128, 0, 0]);
    }

    #[test]
    fn clamps_and_handles_nan() {
        let c = Colormap::Jet;
        assert_eq!(c.color(-3.0), c.color(0.0));
        assert_eq!(c.color(7.0), c.color(1.0));
        assert_eq!(c.color(f32::NAN), c.color(0.0));
        // Binning: just below 1/256 is entry 0, 1/256 is entry 1.
        assert_eq!(Colormap::Viridis.color(0.0039), [68, 1, 84]);
        assert_ne!(Colormap::Viridis.color(1.0 / 256.0), [68, 1, 84]);
    }
}
