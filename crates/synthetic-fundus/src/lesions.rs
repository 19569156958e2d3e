//! Which lesions a label supports, and where and how they are drawn.
//!
//! Kinds come from their own random stream of the seed, so [`planned_kinds`] (the public
//! `lesions_for`) and the renderer always agree. Placement avoids the disc, the foveal reflex,
//! other lesions and (when possible) vessels, so each lesion's centre shows the lesion itself.

use crate::noise::{self, chance, gauss, pick, uni};
use crate::scene::{Geometry, STREAM_KINDS};
use crate::vessels::{Segment, VesselClass};
use crate::{DrawnLesion, SceneSpec};
use rand_chacha::ChaCha8Rng;
use retina_records::LesionType;
use std::f32::consts::PI;

/// Lesion kinds drawn for a spec, in vocabulary order.
pub(crate) fn planned_kinds(spec: &SceneSpec) -> Vec<LesionType> {
    use LesionType::*;
    let mut rng = noise::stream(spec.seed, STREAM_KINDS);
    let mut kinds = Vec::new();
    // Draw every coin in a fixed order whatever the grade, so the stream stays aligned.
    let coins: [f32; 6] = std::array::from_fn(|_| rand::Rng::random::<f32>(&mut rng));
    let [he, cws, vb, ma, prh, _spare] = coins;
    match spec.dr_grade.min(4) {
        0 => {}
        1 => kinds.push(Microaneurysm),
        2 => {
            kinds.extend([Microaneurysm, IntraretinalHaemorrhage]);
            if he < 0.7 {
                kinds.push(HardExudate);
            }
            if cws < 0.45 {
                kinds.push(CottonWoolSpot);
            }
        }
        3 => {
            kinds.extend([Microaneurysm, IntraretinalHaemorrhage]);
            if he < 0.75 {
                kinds.push(HardExudate);
            }
            if cws < 0.7 {
                kinds.push(CottonWoolSpot);
            }
            if vb < 0.5 {
                kinds.push(VenousBeading);
            }
        }
        _ => {
            kinds.extend([IntraretinalHaemorrhage, Neovascularisation]);
            if ma < 0.9 {
                kinds.push(Microaneurysm);
            }
            if he < 0.6 {
                kinds.push(HardExudate);
            }
            if cws < 0.5 {
                kinds.push(CottonWoolSpot);
            }
            if prh < 0.4 {
                kinds.push(PreretinalHaemorrhage);
            }
        }
    }
    if spec.amd {
        kinds.push(Drusen);
    }
    kinds.sort();
    kinds.dedup();
    kinds
}

/// How many temporal veins get venous beading (1 or 2 when the kind is planned).
pub(crate) fn beaded_veins(spec: &SceneSpec, kinds: &[LesionType]) -> usize {
    if kinds.contains(&LesionType::VenousBeading) {
        1 + (noise::mix64(spec.seed ^ 0xbead) & 1) as usize
    } else {
        0
    }
}

/// One elliptical piece of a lesion (canonical coordinates).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Part {
    pub center: (f32, f32),
    /// Semi-axes, pixels.
    pub a: f32,
    pub b: f32,
    pub cos: f32,
    pub sin: f32,
    /// Rows above this are cut off (the fluid level of a preretinal haemorrhage).
    pub flat_top: Option<f32>,
}

impl Part {
    fn round(center: (f32, f32), r: f32) -> Part {
        Part::ellipse(center, r, r, 0.0)
    }
    fn ellipse(center: (f32, f32), a: f32, b: f32, angle: f32) -> Part {
        Part {
            center,
            a: a.max(0.5),
            b: b.max(0.5),
            cos: angle.cos(),
            sin: angle.sin(),
            flat_top: None,
        }
    }
}

/// How one lesion is painted: the union of its parts blended towards a colour.
#[derive(Debug, Clone)]
pub(crate) struct Paint {
    pub parts: Vec<Part>,
    /// Colour at full illumination.
    pub color: [f32; 3],
    pub alpha: f32,
    /// Fraction of the normalised radius over which the edge fades (0 sharp, 1 all soft).
    pub feather: f32,
    /// Fluffy texture strength (0 none).
    pub texture: f32,
    /// How much the colour follows the local illumination (0 absolute, 1 fully).
    pub follow: f32,
    /// `(x0, y0, x1, y1)` pixels.
    pub bbox: (f32, f32, f32, f32),
}

impl Paint {
    fn new(parts: Vec<Part>, color: [f32; 3], alpha: f32, feather: f32) -> Paint {
        let mut bbox = (f32::MAX, f32::MAX, f32::MIN, f32::MIN);
        for p in &parts {
            let r = p.a.max(p.b) + 2.0;
            bbox.0 = bbox.0.min(p.center.0 - r);
            bbox.1 = bbox.1.min(p.center.1 - r);
            bbox.2 = bbox.2.max(p.center.0 + r);
            bbox.3 = bbox.3.max(p.center.1 + r);
        }
        Paint {
            parts,
            color,
            alpha,
            feather,
            texture: 0.0,
            follow: 0.8,
            bbox,
        }
    }

    /// Coverage (0-1, before `alpha`) at a pixel: the most covering part.
    #[inline]
    pub fn coverage(&self, x: f32, y: f32) -> f32 {
        let mut best = 0.0f32;
        for p in &self.parts {
            let dx = x - p.center.0;
            let dy = y - p.center.1;
            let u = (dx * p.cos + dy * p.sin) / p.a;
            let v = (-dx * p.sin + dy * p.cos) / p.b;
            let q = (u * u + v * v).sqrt();
            // At least about one pixel of anti-aliasing whatever the feather.
            let soft = (0.8 / p.a.min(p.b)).max(self.feather).min(1.0);
            let mut c = 1.0 - smoothstep(1.0 - soft, 1.0 + 0.5 / p.a.min(p.b), q);
            if let Some(top) = p.flat_top {
                c *= smoothstep(top - 1.0, top + 1.0, y);
            }
            best = best.max(c);
        }
        best
    }
}

/// Hermite smoothstep.
#[inline]
pub(crate) fn smoothstep(e0: f32, e1: f32, x: f32) -> f32 {
    if e1 <= e0 {
        return if x < e0 { 0.0 } else { 1.0 };
    }
    let t = ((x - e0) / (e1 - e0)).clamp(0.0, 1.0);
    t * t * (3.0 - 2.0 * t)
}

/// Colours at full illumination (sRGB, 0-1).
const MA_COLOR: [f32; 3] = [0.50, 0.07, 0.05];
const HAEM_COLOR: [f32; 3] = [0.46, 0.06, 0.04];
const FLAME_COLOR: [f32; 3] = [0.54, 0.08, 0.05];
const EXUDATE_COLOR: [f32; 3] = [0.99, 0.88, 0.40];
const CWS_COLOR: [f32; 3] = [0.94, 0.86, 0.77];
const DRUSEN_COLOR: [f32; 3] = [0.96, 0.80, 0.46];
const PRERETINAL_COLOR: [f32; 3] = [0.36, 0.04, 0.03];

/// Coarse map of where vessels are, to keep small lesions off them.
struct Occupancy {
    cell: f32,
    cols: usize,
    rows: usize,
    cells: Vec<bool>,
}

impl Occupancy {
    fn new(geom: &Geometry, segments: &[Segment]) -> Occupancy {
        let cell = (geom.dd / 32.0).max(2.0);
        let cols = (geom.width as f32 / cell).ceil() as usize + 1;
        let rows = (geom.height as f32 / cell).ceil() as usize + 1;
        let mut cells = vec![false; cols.saturating_mul(rows)];
        for s in segments {
            let (x0, y0, x1, y1) = s.bbox();
            let i0 = (x0 / cell).floor().max(0.0) as usize;
            let j0 = (y0 / cell).floor().max(0.0) as usize;
            let i1 = ((x1 / cell).ceil().max(0.0) as usize).min(cols.saturating_sub(1));
            let j1 = ((y1 / cell).ceil().max(0.0) as usize).min(rows.saturating_sub(1));
            for j in j0..=j1 {
                for i in i0..=i1 {
                    let centre = ((i as f32 + 0.5) * cell, (j as f32 + 0.5) * cell);
                    let (d, hw) = s.distance(centre);
                    if d < hw + cell * 0.75
                        && let Some(c) = cells.get_mut(j * cols + i)
                    {
                        *c = true;
                    }
                }
            }
        }
        Occupancy {
            cell,
            cols,
            rows,
            cells,
        }
    }

    fn at(&self, x: f32, y: f32) -> bool {
        if x < 0.0 || y < 0.0 {
            return false;
        }
        let i = (x / self.cell) as usize;
        let j = (y / self.cell) as usize;
        i < self.cols
            && j < self.rows
            && self.cells.get(j * self.cols + i).copied().unwrap_or(false)
    }

    /// Whether a circle touches a vessel (centre and four rim points).
    fn hits(&self, (x, y): (f32, f32), r: f32) -> bool {
        [(0.0, 0.0), (r, 0.0), (-r, 0.0), (0.0, r), (0.0, -r)]
            .iter()
            .any(|(dx, dy)| self.at(x + dx, y + dy))
    }
}

/// Groups of lesions allowed to overlap their own kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Group {
    Solo,
    Exudates,
    Drusen,
}

struct Placer<'a> {
    geom: &'a Geometry,
    occupancy: Occupancy,
    taken: Vec<((f32, f32), f32, Group)>,
}

#[derive(Clone, Copy)]
struct Rules {
    avoid_vessels: bool,
    avoid_disc: bool,
    group: Group,
}

const SOLO: Rules = Rules {
    avoid_vessels: true,
    avoid_disc: true,
    group: Group::Solo,
};

impl Placer<'_> {
    /// Whether a circle may go at `p`.
    fn fits(&self, p: (f32, f32), r: f32, rules: Rules, strict: bool) -> bool {
        let g = self.geom;
        if !(p.0.is_finite() && p.1.is_finite()) {
            return false;
        }
        let margin = r + 2.0;
        if p.0 < margin
            || p.1 < margin
            || p.0 > g.width as f32 - 1.0 - margin
            || p.1 > g.height as f32 - 1.0 - margin
        {
            return false;
        }
        let dfov = ((p.0 - g.fov_center.0).powi(2) + (p.1 - g.fov_center.1).powi(2)).sqrt();
        if dfov > 0.93 * g.fov_radius - r {
            return false;
        }
        let dfovea = ((p.0 - g.fovea.0).powi(2) + (p.1 - g.fovea.1).powi(2)).sqrt();
        if dfovea < 0.08 * g.dd + r {
            return false;
        }
        if rules.avoid_disc {
            let ddisc = ((p.0 - g.disc_center.0).powi(2) + (p.1 - g.disc_center.1).powi(2)).sqrt();
            if ddisc < 1.25 * g.disc_radius + r {
                return false;
            }
        }
        if strict {
            if rules.avoid_vessels && self.occupancy.hits(p, r * 0.7) {
                return false;
            }
            for (c, rr, group) in &self.taken {
                let same = *group == rules.group && rules.group != Group::Solo;
                if !same && ((p.0 - c.0).powi(2) + (p.1 - c.1).powi(2)).sqrt() < r + rr + 1.5 {
                    return false;
                }
            }
        }
        true
    }

    /// Tries positions from `sample` until one fits (strict rules first, then only the hard
    /// ones), records it and returns it.
    fn place(
        &mut self,
        rng: &mut ChaCha8Rng,
        r: f32,
        rules: Rules,
        mut sample: impl FnMut(&mut ChaCha8Rng) -> (f32, f32),
    ) -> Option<(f32, f32)> {
        for attempt in 0..120 {
            let p = sample(rng);
            if self.fits(p, r, rules, attempt < 80) {
                self.taken.push((p, r, rules.group));
                return Some(p);
            }
        }
        None
    }
}

/// Point at distance `lo..hi` (uniform over area) from `c`, at an angle in `a0..a1`.
fn around(rng: &mut ChaCha8Rng, c: (f32, f32), lo: f32, hi: f32, a0: f32, a1: f32) -> (f32, f32) {
    let r = (lo * lo + (hi * hi - lo * lo) * uni(rng, 0.0, 1.0))
        .max(0.0)
        .sqrt();
    let a = uni(rng, a0, a1);
    (c.0 + r * a.cos(), c.1 + r * a.sin())
}

/// The lesions of a scene.
pub(crate) struct LesionPlan {
    pub paints: Vec<Paint>,
    pub drawn: Vec<DrawnLesion>,
    /// Fine new vessels (neovascularisation), drawn in the vessel layer.
    pub neo_segments: Vec<Segment>,
}

/// Places and shapes every planned lesion.
pub(crate) fn place(
    spec: &SceneSpec,
    kinds: &[LesionType],
    geom: &Geometry,
    segments: &[Segment],
    main_segments: usize,
    rng: &mut ChaCha8Rng,
) -> LesionPlan {
    use LesionType::*;
    let mut plan = LesionPlan {
        paints: Vec::new(),
        drawn: Vec::new(),
        neo_segments: Vec::new(),
    };
    let dd = geom.dd;
    if !(dd.is_finite() && dd > 4.0) {
        return plan;
    }
    let mut placer = Placer {
        geom,
        occupancy: Occupancy::new(geom, segments),
        taken: Vec::new(),
    };
    let grade = spec.dr_grade.min(4);
    let fovea = geom.fovea;
    let record = |plan: &mut LesionPlan, kind, p: (f32, f32), radius: f32, paint: Option<Paint>| {
        plan.drawn.push(DrawnLesion {
            kind,
            x: p.0,
            y: p.1,
            radius,
        });
        if let Some(paint) = paint {
            plan.paints.push(paint);
        }
    };
    // Paint order is placement order: big and deep first, small and superficial after; the
    // preretinal haemorrhage, in front of the retina, is painted last.
    let mut preretinal: Option<Paint> = None;

    if kinds.contains(&PreretinalHaemorrhage) {
        let r = uni(rng, 0.35, 0.6) * dd;
        let rules = Rules {
            avoid_vessels: false,
            ..SOLO
        };
        // Blood settles: mostly below the fovea's level, along the arcades.
        if let Some(p) = placer.place(rng, r, rules, |rng| {
            around(rng, fovea, 1.0 * dd, 2.3 * dd, 0.15 * PI, 0.85 * PI)
        }) {
            let mut part = Part::round(p, r);
            part.flat_top = Some(p.1 - 0.3 * r);
            let mut paint = Paint::new(vec![part], PRERETINAL_COLOR, 0.94, 0.12);
            paint.texture = 0.12;
            plan.drawn.push(DrawnLesion {
                kind: PreretinalHaemorrhage,
                x: p.0,
                y: p.1 + 0.3 * r,
                radius: r,
            });
            preretinal = Some(paint);
        }
    }

    if kinds.contains(&CottonWoolSpot) {
        let n = match grade {
            2 => pick(rng, 1, 3),
            3 => pick(rng, 2, 5),
            _ => pick(rng, 1, 4),
        };
        let mid = (
            0.5 * (geom.disc_center.0 + fovea.0),
            0.5 * (geom.disc_center.1 + fovea.1),
        );
        for _ in 0..n {
            let a = uni(rng, 0.07, 0.13) * dd;
            let b = a * uni(rng, 0.55, 0.8);
            let angle = uni(rng, 0.0, PI);
            let rules = Rules {
                avoid_vessels: false,
                ..SOLO
            };
            let placed = placer.place(rng, a, rules, |rng| {
                let p = around(rng, mid, 0.0, 2.6 * dd, -PI, PI);
                let df = ((p.0 - fovea.0).powi(2) + (p.1 - fovea.1).powi(2)).sqrt();
                if df < 0.7 * dd {
                    (f32::NAN, f32::NAN)
                } else {
                    p
                }
            });
            if let Some(p) = placed {
                let mut parts = vec![Part::ellipse(p, a, b, angle)];
                for _ in 0..pick(rng, 1, 2) {
                    let off = around(rng, p, 0.2 * a, 0.5 * a, -PI, PI);
                    parts.push(Part::ellipse(off, a * 0.6, b * 0.7, uni(rng, 0.0, PI)));
                }
                let mut paint = Paint::new(parts, CWS_COLOR, 0.82, 0.75);
                paint.texture = 0.45;
                paint.follow = 0.35;
                record(&mut plan, CottonWoolSpot, p, a, Some(paint));
            }
        }
    }

    if kinds.contains(&HardExudate) {
        let clusters = match grade {
            2 => pick(rng, 1, 2),
            _ => pick(rng, 1, 3),
        };
        for _ in 0..clusters {
            let centre = around(rng, fovea, 0.6 * dd, 2.0 * dd, -PI, PI);
            let ring = chance(rng, 0.6);
            let ring_r = uni(rng, 0.25, 0.6) * dd;
            let start = uni(rng, -PI, PI);
            let span = uni(rng, 2.0, 4.7);
            let count = pick(rng, 8, 24);
            let mut placed_any = false;
            let rules = Rules {
                group: Group::Exudates,
                ..SOLO
            };
            for k in 0..count {
                let mut r = uni(rng, 0.010, 0.03) * dd;
                if chance(rng, 0.1) {
                    r *= 1.8;
                }
                let r = r.max(1.3);
                let p = if ring {
                    let a = start + span * k as f32 / count as f32 + gauss(rng) * 0.08;
                    let rr = ring_r + gauss(rng) * 0.06 * dd;
                    (centre.0 + rr * a.cos(), centre.1 + rr * a.sin())
                } else {
                    (
                        centre.0 + gauss(rng) * 0.15 * dd,
                        centre.1 + gauss(rng) * 0.15 * dd,
                    )
                };
                // Exudates that would fall on a vessel or another lesion are simply left out.
                if placer.fits(p, r, rules, true) {
                    placer.taken.push((p, r, Group::Exudates));
                    placed_any = true;
                    let mut paint = Paint::new(vec![Part::round(p, r)], EXUDATE_COLOR, 0.95, 0.25);
                    paint.follow = 0.45;
                    record(&mut plan, HardExudate, p, r, Some(paint));
                }
            }
            if !placed_any {
                let r = (0.02 * dd).max(1.3);
                if let Some(p) = placer.place(rng, r, rules, |rng| {
                    around(rng, fovea, 0.5 * dd, 2.5 * dd, -PI, PI)
                }) {
                    let mut paint = Paint::new(vec![Part::round(p, r)], EXUDATE_COLOR, 0.95, 0.25);
                    paint.follow = 0.45;
                    record(&mut plan, HardExudate, p, r, Some(paint));
                }
            }
        }
    }

    if kinds.contains(&IntraretinalHaemorrhage) {
        let n = match grade {
            2 => pick(rng, 3, 10),
            3 => pick(rng, 16, 32),
            _ => pick(rng, 6, 16),
        };
        for k in 0..n {
            // Severe NPDR (4-2-1 rule): haemorrhages in all four quadrants.
            let (a0, a1, lo, hi) = if grade == 3 {
                let q = (k % 4) as f32;
                (
                    q * 0.5 * PI - PI,
                    (q + 1.0) * 0.5 * PI - PI,
                    0.8 * dd,
                    3.5 * dd,
                )
            } else {
                (-PI, PI, 0.5 * dd, 3.2 * dd)
            };
            let flame = chance(rng, 0.3);
            let (axes, radius, color, feather) = if flame {
                let a = (uni(rng, 0.07, 0.14) * dd).max(3.0);
                let b = (a * uni(rng, 0.28, 0.4)).max(1.3);
                (Some((a, b)), a, FLAME_COLOR, 0.6)
            } else {
                let r = (uni(rng, 0.025, 0.06) * dd).max(2.0);
                (None, r * 1.4, HAEM_COLOR, 0.3)
            };
            let Some(p) = placer.place(rng, radius, SOLO, |rng| around(rng, fovea, lo, hi, a0, a1))
            else {
                continue;
            };
            let parts = match axes {
                Some((a, b)) => {
                    // Flame haemorrhages lie along the nerve fibres, roughly radial to the disc.
                    let angle = (p.1 - geom.disc_center.1).atan2(p.0 - geom.disc_center.0);
                    vec![Part::ellipse(p, a, b, angle)]
                }
                None => {
                    let r = radius / 1.4;
                    let mut parts = vec![Part::round(p, r)];
                    if chance(rng, 0.6) {
                        for _ in 0..pick(rng, 1, 3) {
                            let off = around(rng, p, 0.2 * r, 0.55 * r, -PI, PI);
                            parts.push(Part::ellipse(
                                off,
                                r * uni(rng, 0.5, 0.85),
                                r * uni(rng, 0.4, 0.7),
                                uni(rng, 0.0, PI),
                            ));
                        }
                    }
                    parts
                }
            };
            let paint = Paint::new(parts, color, 0.92, feather);
            record(&mut plan, IntraretinalHaemorrhage, p, radius, Some(paint));
        }
    }

    if kinds.contains(&Microaneurysm) {
        let n = match grade {
            1 => pick(rng, 3, 10),
            2 => pick(rng, 6, 20),
            3 => pick(rng, 12, 30),
            _ => pick(rng, 8, 24),
        };
        for _ in 0..n {
            let r = (uni(rng, 0.010, 0.018) * dd).max(1.3);
            if let Some(p) = placer.place(rng, r, SOLO, |rng| {
                around(rng, fovea, 0.3 * dd, 2.8 * dd, -PI, PI)
            }) {
                let paint = Paint::new(vec![Part::round(p, r)], MA_COLOR, 0.95, 0.55);
                record(&mut plan, Microaneurysm, p, r, Some(paint));
            }
        }
    }

    if kinds.contains(&Drusen) {
        let n = pick(rng, 20, 70);
        let rules = Rules {
            group: Group::Drusen,
            ..SOLO
        };
        for _ in 0..n {
            let mut r = uni(rng, 0.012, 0.04) * dd;
            if chance(rng, 0.15) {
                r = uni(rng, 0.04, 0.07) * dd;
            }
            let r = r.max(1.5);
            if let Some(p) = placer.place(rng, r, rules, |rng| {
                // Denser towards the fovea.
                let d = 1.7 * dd * uni(rng, 0.0, 1.0).powf(1.3);
                let a = uni(rng, -PI, PI);
                (fovea.0 + d * a.cos(), fovea.1 + d * a.sin())
            }) {
                let mut paint = Paint::new(
                    vec![Part::round(p, r)],
                    DRUSEN_COLOR,
                    uni(rng, 0.6, 0.85),
                    0.65,
                );
                paint.follow = 0.5;
                record(&mut plan, Drusen, p, r, Some(paint));
            }
        }
    }

    if kinds.contains(&Neovascularisation) {
        let patches = if chance(rng, 0.3) { 2 } else { 1 };
        for k in 0..patches {
            let patch_r = uni(rng, 0.3, 0.5) * dd;
            let disc_patch = k == 0 && chance(rng, 0.6);
            let centre = if disc_patch {
                around(rng, geom.disc_center, 0.0, 0.6 * geom.disc_radius, -PI, PI)
            } else {
                // Elsewhere: beside a main arcade 1.8-3.5 DD from the disc.
                let candidates: Vec<&Segment> = segments
                    .iter()
                    .take(main_segments)
                    .filter(|s| {
                        let d = ((s.a.0 - geom.disc_center.0).powi(2)
                            + (s.a.1 - geom.disc_center.1).powi(2))
                        .sqrt();
                        d > 1.8 * dd && d < 3.5 * dd && geom.rho(s.a.0, s.a.1) < 0.8
                    })
                    .collect();
                match candidates
                    .get(pick(rng, 0, candidates.len().saturating_sub(1) as u32) as usize)
                {
                    Some(s) => (s.a.0 + gauss(rng) * 0.1 * dd, s.a.1 + gauss(rng) * 0.1 * dd),
                    None => around(rng, geom.disc_center, 0.0, 0.6 * geom.disc_radius, -PI, PI),
                }
            };
            let segs = neovascular_tuft(rng, centre, patch_r, dd);
            if segs.is_empty() {
                continue;
            }
            plan.neo_segments.extend(segs);
            plan.drawn.push(DrawnLesion {
                kind: Neovascularisation,
                x: centre.0,
                y: centre.1,
                radius: patch_r,
            });
        }
    }

    if let Some(paint) = preretinal {
        plan.paints.push(paint);
    }
    plan
}

/// Fine, tangled, looping new vessels within `patch_r` of `centre`.
fn neovascular_tuft(
    rng: &mut ChaCha8Rng,
    centre: (f32, f32),
    patch_r: f32,
    dd: f32,
) -> Vec<Segment> {
    let mut out = Vec::new();
    let step = (0.02 * dd).max(1.5);
    for _ in 0..pick(rng, 10, 18) {
        let mut pos = around(rng, centre, 0.0, 0.4 * patch_r, -PI, PI);
        let mut heading = uni(rng, -PI, PI);
        let mut kappa = uni(rng, -0.3, 0.3);
        let width = (uni(rng, 0.006, 0.01) * dd).max(0.9);
        for _ in 0..pick(rng, 10, 26) {
            kappa = (kappa + gauss(rng) * 0.12).clamp(-0.5, 0.5);
            heading += kappa;
            let dx = pos.0 - centre.0;
            let dy = pos.1 - centre.1;
            if (dx * dx + dy * dy).sqrt() > patch_r {
                // Turn back into the tuft.
                let back = (-dy).atan2(-dx);
                heading = back + gauss(rng) * 0.4;
            }
            let next = (pos.0 + step * heading.cos(), pos.1 + step * heading.sin());
            out.push(Segment {
                a: pos,
                b: next,
                wa: width,
                wb: width,
                class: VesselClass::Vein,
                strength: 0.85,
            });
            pos = next;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use retina_records::Laterality;

    fn spec(grade: u8, seed: u64) -> SceneSpec {
        SceneSpec {
            dr_grade: grade,
            ..SceneSpec::normal(768, 512, Laterality::Right, seed)
        }
    }

    #[test]
    fn kinds_follow_the_grade() {
        for seed in 0..40 {
            assert!(
                planned_kinds(&spec(0, seed))
                    .iter()
                    .all(|k| !k.is_diabetic())
            );
            assert_eq!(
                planned_kinds(&spec(1, seed)),
                vec![LesionType::Microaneurysm]
            );
            for grade in 2..=3 {
                let kinds = planned_kinds(&spec(grade, seed));
                assert!(kinds.iter().any(|k| k.is_moderate_dr_sign()), "{kinds:?}");
                assert!(
                    !kinds.iter().any(|k| k.is_proliferative_sign()),
                    "{kinds:?}"
                );
            }
            let four = planned_kinds(&spec(4, seed));
            assert!(four.contains(&LesionType::Neovascularisation));
            let amd = SceneSpec {
                amd: true,
                ..spec(0, seed)
            };
            assert_eq!(planned_kinds(&amd), vec![LesionType::Drusen]);
        }
    }

    #[test]
    fn kinds_are_sorted_and_unique() {
        for seed in 0..20 {
            let kinds = planned_kinds(&SceneSpec {
                amd: true,
                ..spec(4, seed)
            });
            let mut sorted = kinds.clone();
            sorted.sort();
            sorted.dedup();
            assert_eq!(kinds, sorted);
        }
    }

    #[test]
    fn smoothstep_is_monotonic_and_bounded() {
        let mut last = 0.0;
        for k in 0..=100 {
            let v = smoothstep(0.2, 0.8, k as f32 / 100.0);
            assert!((0.0..=1.0).contains(&v));
            assert!(v >= last);
            last = v;
        }
        assert_eq!(smoothstep(1.0, 1.0, 0.5), 0.0);
        assert_eq!(smoothstep(1.0, 1.0, 1.5), 1.0);
    }
}
