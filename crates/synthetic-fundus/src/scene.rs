//! Scene planning: turns a [`SceneSpec`] into geometry, colours, a vessel tree and lesion shapes,
//! all in a canonical right-eye orientation (temporal = towards smaller x). Left eyes are drawn
//! as the mirror image at the end of rasterising.

use crate::lesions::{self, Paint};
use crate::noise::{self, uni};
use crate::vessels::{self, Segment};
use crate::{DrawnLesion, SceneSpec};
use retina_records::Laterality;

/// Random streams, one per purpose (see [`noise::stream`]).
pub(crate) const STREAM_FRAME: u64 = 0;
pub(crate) const STREAM_KINDS: u64 = 1;
pub(crate) const STREAM_VESSELS: u64 = 2;
pub(crate) const STREAM_LESIONS: u64 = 3;

/// Where things are, in canonical (right-eye) pixel coordinates.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Geometry {
    pub width: u32,
    pub height: u32,
    pub fov_center: (f32, f32),
    pub fov_radius: f32,
    pub disc_center: (f32, f32),
    /// Mean disc radius; drawn with horizontal radius `0.94 r` and vertical `1.06 r`.
    pub disc_radius: f32,
    /// Disc diameter, the unit of fundus distances.
    pub dd: f32,
    pub fovea: (f32, f32),
    pub cup_center: (f32, f32),
    /// Vertical cup-to-disc ratio.
    pub cdr: f32,
}

impl Geometry {
    pub fn disc_rh(&self) -> f32 {
        self.disc_radius * 0.94
    }
    pub fn disc_rv(&self) -> f32 {
        self.disc_radius * 1.06
    }
    pub fn cup_rv(&self) -> f32 {
        self.disc_rv() * self.cdr
    }
    pub fn cup_rh(&self) -> f32 {
        // Healthy cups are round to slightly wide; a glaucomatous cup grows vertically first.
        let ratio = if self.cdr > 0.65 { 0.9 } else { 1.0 };
        (self.disc_rh() * self.cdr * ratio).min(self.disc_rh() * 0.9)
    }
    /// Distance from the field-of-view centre, as a fraction of its radius.
    pub fn rho(&self, x: f32, y: f32) -> f32 {
        let dx = x - self.fov_center.0;
        let dy = y - self.fov_center.1;
        (dx * dx + dy * dy).sqrt() / self.fov_radius.max(1e-3)
    }
    /// Canonical pixel position of a point given in disc diameters from the disc centre,
    /// `u` towards temporal and `v` downwards.
    pub fn at_disc_offset(&self, u: f32, v: f32) -> (f32, f32) {
        (
            self.disc_center.0 - u * self.dd,
            self.disc_center.1 + v * self.dd,
        )
    }
}

/// Per-image colour and illumination.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Palette {
    /// Fundus colour at full illumination (sRGB, 0-1).
    pub fundus: [f32; 3],
    pub disc_rim: [f32; 3],
    pub cup: [f32; 3],
    pub exposure: f32,
    /// Vignetting: illumination = 1 - strength * (mix * rho^2 + (1 - mix) * rho^4).
    pub vignette_strength: f32,
    pub vignette_mix: f32,
    pub illum_center: (f32, f32),
    /// How strongly the macula darkens (0-1).
    pub macula_strength: f32,
}

/// Everything needed to paint one picture.
pub(crate) struct Scene {
    pub geom: Geometry,
    pub palette: Palette,
    pub segments: Vec<Segment>,
    /// In paint order.
    pub paints: Vec<Paint>,
    /// Ground truth lesions in canonical coordinates.
    pub drawn: Vec<DrawnLesion>,
    pub laterality: Laterality,
    pub seed: u64,
}

impl Scene {
    /// Plans a scene; never fails (degenerate frames give a scene with nothing visible).
    pub fn plan(spec: &SceneSpec) -> Scene {
        Scene::plan_with(spec, 1.0)
    }

    /// Plans a scene keeping the main arcades and the first `vessel_keep` (0-1) share of the
    /// other vessel segments, in growth order (so the tree stays connected, only less branched).
    pub fn plan_with(spec: &SceneSpec, vessel_keep: f32) -> Scene {
        Scene::plan_tortuous(spec, vessel_keep, 0.0)
    }

    /// Like [`Scene::plan_with`], with every vessel made wavy by `tortuosity` (0 = as grown;
    /// 1 = waves of 0.08 disc diameters amplitude every 0.6 disc diameters).
    pub fn plan_tortuous(spec: &SceneSpec, vessel_keep: f32, tortuosity: f32) -> Scene {
        let mut rng = noise::stream(spec.seed, STREAM_FRAME);
        let width = spec.width;
        let height = spec.height;
        let w = width as f32;
        let h = height as f32;

        // Frames much wider than tall are EyePACS-like: the circle fills the height and is often
        // clipped at top and bottom. Squarish frames show the whole circle.
        let wide = w > 1.2 * h;
        let fov_radius = if wide {
            (h * 0.5 * uni(&mut rng, 0.98, 1.14)).min(w * 0.49)
        } else {
            w.min(h) * 0.5 * uni(&mut rng, 0.90, 0.97)
        }
        .max(0.5);
        let fov_center = (
            (w - 1.0) * 0.5 + uni(&mut rng, -0.01, 0.01) * w,
            (h - 1.0) * 0.5 + uni(&mut rng, -0.01, 0.01) * h,
        );

        let disc_radius = fov_radius * uni(&mut rng, 0.135, 0.155);
        let dd = 2.0 * disc_radius;
        // Macula-centred photograph: fovea a little temporal of the centre, disc 2.5 DD nasal
        // to it and slightly above.
        let fovea = (
            fov_center.0 - uni(&mut rng, 0.2, 0.6) * dd,
            fov_center.1 + uni(&mut rng, -0.2, 0.2) * dd,
        );
        let disc_center = (
            fovea.0 + uni(&mut rng, 2.3, 2.7) * dd,
            fovea.1 - uni(&mut rng, 0.1, 0.35) * dd,
        );
        let cdr = if spec.glaucoma {
            spec.cup_to_disc.clamp(0.7, 0.9)
        } else if spec.cup_to_disc.is_finite() {
            spec.cup_to_disc.clamp(0.05, 0.92)
        } else {
            0.3
        };
        // The cup sits slightly temporal in the disc, so the temporal rim is the thinnest (ISNT).
        let disc_rh = disc_radius * 0.94;
        let cup_shift = (disc_rh * (1.0 - cdr) * 0.2).max(0.0);
        let cup_center = (disc_center.0 - cup_shift, disc_center.1);

        let geom = Geometry {
            width,
            height,
            fov_center,
            fov_radius,
            disc_center,
            disc_radius,
            dd,
            fovea,
            cup_center,
            cdr,
        };

        let red = uni(&mut rng, 0.74, 0.88);
        let palette = Palette {
            fundus: [
                red,
                red * uni(&mut rng, 0.36, 0.50),
                red * uni(&mut rng, 0.12, 0.22),
            ],
            disc_rim: [
                uni(&mut rng, 0.92, 1.0),
                uni(&mut rng, 0.57, 0.67),
                uni(&mut rng, 0.33, 0.43),
            ],
            cup: [1.0, uni(&mut rng, 0.88, 0.94), uni(&mut rng, 0.72, 0.82)],
            exposure: uni(&mut rng, 0.86, 1.06),
            vignette_strength: uni(&mut rng, 0.45, 0.62),
            vignette_mix: uni(&mut rng, 0.2, 0.7),
            illum_center: (
                fov_center.0 + uni(&mut rng, -0.1, 0.1) * fov_radius,
                fov_center.1 + uni(&mut rng, -0.1, 0.1) * fov_radius,
            ),
            macula_strength: uni(&mut rng, 0.8, 1.0),
        };

        let laterality = match spec.laterality {
            Laterality::Left => Laterality::Left,
            Laterality::Right => Laterality::Right,
            Laterality::Unknown => {
                if noise::mix64(spec.seed) & 1 == 0 {
                    Laterality::Right
                } else {
                    Laterality::Left
                }
            }
        };

        let kinds = lesions::planned_kinds(spec);
        let mut vessel_rng = noise::stream(spec.seed, STREAM_VESSELS);
        let beaded = lesions::beaded_veins(spec, &kinds);
        let tree = vessels::grow(&geom, &mut vessel_rng, beaded);
        let mut segments = tree.segments;
        if vessel_keep < 1.0 {
            let extra = segments.len().saturating_sub(tree.main_segments) as f32;
            let keep = tree.main_segments + (extra * vessel_keep.max(0.0)).round() as usize;
            segments.truncate(keep);
        }
        if tortuosity > 0.0 && tortuosity.is_finite() {
            // One smooth displacement field for all segment ends, so joined segments stay
            // joined: a vessel running along x waves in y, and the other way round.
            let amp = 0.08 * geom.dd * tortuosity.min(4.0);
            let k = std::f32::consts::TAU / (0.6 * geom.dd).max(1.0);
            let shift = |p: (f32, f32)| (p.0 + amp * (k * p.1).sin(), p.1 + amp * (k * p.0).sin());
            for s in &mut segments {
                s.a = shift(s.a);
                s.b = shift(s.b);
            }
        }
        let mut drawn = tree.beading;

        let mut lesion_rng = noise::stream(spec.seed, STREAM_LESIONS);
        let plan = lesions::place(
            spec,
            &kinds,
            &geom,
            &segments,
            tree.main_segments,
            &mut lesion_rng,
        );
        segments.extend(plan.neo_segments);
        drawn.extend(plan.drawn);

        Scene {
            geom,
            palette,
            segments,
            paints: plan.paints,
            drawn,
            laterality,
            seed: spec.seed,
        }
    }

    /// Illumination (exposure times vignetting, no texture) at a canonical point.
    #[inline]
    pub fn illumination(&self, x: f32, y: f32) -> f32 {
        let p = &self.palette;
        let dx = x - p.illum_center.0;
        let dy = y - p.illum_center.1;
        let r2 = (dx * dx + dy * dy) / (self.geom.fov_radius * self.geom.fov_radius).max(1e-3);
        let fall = p.vignette_mix * r2 + (1.0 - p.vignette_mix) * r2 * r2;
        p.exposure * (1.0 - p.vignette_strength * fall).max(0.05)
    }
}
