//! Synthetic colour fundus photographs with known ground truth.
//!
//! This crate owns two things:
//! - [`render`]: a deterministic generator of realistic-looking colour fundus photographs from a
//!   [`SceneSpec`] (frame size, eye, diabetic retinopathy grade, cup-to-disc ratio, AMD,
//!   glaucoma, seed), returning the picture and its [`GroundTruth`] (field of view, optic disc,
//!   fovea, every lesion drawn, vessel fraction). [`render_detailed`] also returns the vessel map.
//! - [`write_demo_datasets`]: the embedded demo data, two small datasets in the on-disk layouts of
//!   EyePACS and RFMiD, so a newcomer can build a real caption dataset with no download.
//!
//! # Orientation convention
//!
//! Pictures follow standard fundus photographs as displayed (viewer facing the patient): the optic
//! disc lies on the nasal side of the macula, so in a **right eye (OD) the disc appears to the
//! image's right of the macula**, and in a **left eye (OS) to the image's left**. A left eye is
//! the exact mirror image of the right eye rendered from the same seed. The macula (fovea) lies
//! about 2.5 disc diameters temporal to the disc centre and slightly below it.
//!
//! # Coordinates
//!
//! All positions and sizes in [`GroundTruth`] are in pixels of the returned image; pixel
//! `(i, j)` (column `i`, row `j`) has its centre at `(i as f32, j as f32)`.
//!
//! # Determinism
//!
//! The output depends only on the [`SceneSpec`]: the same spec gives byte-identical pixels on any
//! machine and any number of threads (rendering runs in parallel over row bands with rayon).

#![warn(missing_docs)]

mod demo;
mod lesions;
mod noise;
mod raster;
mod scene;
mod vessels;

#[cfg(test)]
mod tests;

use image::{GrayImage, RgbImage};
use retina_records::{Laterality, LesionType};
use serde::{Deserialize, Serialize};

pub use demo::{DemoConfig, DemoSummary, GenerateError, write_demo_datasets};

/// What to draw: the frame and the labels the picture must show.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SceneSpec {
    /// Frame width in pixels.
    pub width: u32,
    /// Frame height in pixels. Frames wider than tall (such as 3:2) may clip the circular field
    /// of view at top and bottom, as many EyePACS cameras do.
    pub height: u32,
    /// Which eye. `Unknown` draws a left or right eye chosen from the seed (reported in
    /// [`GroundTruth::laterality`]).
    pub laterality: Laterality,
    /// ICDR diabetic retinopathy grade 0-4 (values above 4 are drawn as 4).
    pub dr_grade: u8,
    /// Vertical cup-to-disc ratio to draw (clamped to 0.05-0.92; at least 0.7 when `glaucoma`).
    pub cup_to_disc: f32,
    /// Draw drusen around the macula (age-related macular degeneration).
    pub amd: bool,
    /// Draw a glaucomatous disc: a large cup (vertical CDR 0.7-0.9) with a thin rim.
    pub glaucoma: bool,
    /// Seed of every random choice in the scene.
    pub seed: u64,
}

impl SceneSpec {
    /// A healthy eye: DR grade 0, cup-to-disc ratio 0.3, no AMD, no glaucoma.
    pub fn normal(width: u32, height: u32, laterality: Laterality, seed: u64) -> Self {
        SceneSpec {
            width,
            height,
            laterality,
            dr_grade: 0,
            cup_to_disc: 0.3,
            amd: false,
            glaucoma: false,
            seed,
        }
    }
}

/// One lesion as drawn, in pixels of the returned image.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DrawnLesion {
    /// What was drawn. Flame-shaped haemorrhages of diabetic retinopathy are reported as
    /// `IntraretinalHaemorrhage`; neovascularisation, preretinal haemorrhage and venous beading
    /// are reported once per patch or beaded section.
    pub kind: LesionType,
    /// Centre column.
    pub x: f32,
    /// Centre row.
    pub y: f32,
    /// Radius of a circle around the centre that holds the lesion (semi-major axis for
    /// elongated shapes, patch radius for neovascularisation, half-length for beading).
    pub radius: f32,
}

/// What is in the picture, exactly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroundTruth {
    /// Centre of the circular field of view (may lie such that the circle is clipped).
    pub fov_center: (f32, f32),
    /// Radius of the field of view.
    pub fov_radius: f32,
    /// Centre of the optic disc.
    pub disc_center: (f32, f32),
    /// Mean radius of the optic disc (it is drawn 6% taller than wide, as discs are).
    pub disc_radius: f32,
    /// Vertical cup-to-disc ratio as drawn.
    pub cup_to_disc: f32,
    /// Centre of the fovea.
    pub fovea: (f32, f32),
    /// The eye drawn (`Left` or `Right`, never `Unknown`).
    pub laterality: Laterality,
    /// Every lesion drawn.
    pub lesions: Vec<DrawnLesion>,
    /// Vessel pixels (vessel coverage at least one half) divided by field-of-view pixels inside
    /// the frame.
    pub vessel_fraction: f32,
}

/// A rendered scene with its vessel map.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// The photograph.
    pub image: RgbImage,
    /// What is in it.
    pub truth: GroundTruth,
    /// Anti-aliased vessel coverage, 0-255 (255 = fully inside a vessel), same size as `image`.
    /// Pixels of at least 128 are what [`GroundTruth::vessel_fraction`] counts.
    pub vessel_mask: GrayImage,
}

/// Renders the scene: a fundus photograph and its ground truth. Deterministic for a spec.
pub fn render(spec: &SceneSpec) -> (RgbImage, GroundTruth) {
    let rendered = render_detailed(spec);
    (rendered.image, rendered.truth)
}

/// Renders the scene and also returns the vessel map (for testing vessel measurements).
pub fn render_detailed(spec: &SceneSpec) -> Rendered {
    let scene = scene::Scene::plan(spec);
    raster::paint(&scene)
}

/// Like [`render_detailed`] but with fewer vessels: the main arcades and the first
/// `vessel_keep` (0-1, clamped) share of the smaller branches, so tests can order images by vessel
/// density ([`GroundTruth::vessel_fraction`] reports what was drawn). `1.0` equals
/// [`render_detailed`].
pub fn render_with_vessels(spec: &SceneSpec, vessel_keep: f32) -> Rendered {
    let keep = if vessel_keep.is_finite() {
        vessel_keep.clamp(0.0, 1.0)
    } else {
        1.0
    };
    raster::paint(&scene::Scene::plan_with(spec, keep))
}

/// Like [`render_detailed`] with wavy vessels: `tortuosity` 0 draws them as grown, 1 adds waves
/// of 0.08 disc diameters amplitude every 0.6 disc diameters (capped at 4), so tests can order
/// images by vessel tortuosity.
pub fn render_with_tortuosity(spec: &SceneSpec, tortuosity: f32) -> Rendered {
    raster::paint(&scene::Scene::plan_tortuous(spec, 1.0, tortuosity))
}

/// Lesion kinds that [`render`] draws for a given spec (what the label supports), in vocabulary
/// order. Grade 0 has none of diabetic retinopathy; grade 1 microaneurysms only; grade 2 adds
/// intraretinal haemorrhages and often hard exudates or cotton-wool spots; grade 3 adds more
/// haemorrhages in all four quadrants and may show venous beading; grade 4 always has
/// neovascularisation and may have a preretinal haemorrhage; `amd` adds drusen.
///
/// Every listed kind is drawn at least once when the field of view is at least about 100 pixels
/// across.
pub fn lesions_for(spec: &SceneSpec) -> Vec<LesionType> {
    lesions::planned_kinds(spec)
}
