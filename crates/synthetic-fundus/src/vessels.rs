//! The retinal vessel tree: four arcades of an artery and a vein each (superotemporal,
//! inferotemporal, superonasal, inferonasal) leave the disc, steer through waypoints that curve
//! the temporal arcades around the macula, and branch recursively with tapering widths (Murray's
//! law at each fork) and gentle random curvature. Small papillomacular and nasal vessels fill in.
//! Vessels stop at the foveal avascular zone and at the edge of the field of view.

use crate::DrawnLesion;
use crate::noise::{chance, gauss, pick, uni};
use crate::scene::Geometry;
use rand_chacha::ChaCha8Rng;
use retina_records::LesionType;
use std::collections::VecDeque;
use std::f32::consts::PI;

/// Upper bound on segments, so no spec can make rendering slow.
const MAX_SEGMENTS: usize = 40_000;
/// Deepest branching level.
const MAX_DEPTH: u8 = 4;

/// Artery or vein: they differ in colour, width and central light reflex.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VesselClass {
    Artery,
    Vein,
}

/// One straight piece of a vessel with linearly varying width (full widths, pixels).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Segment {
    pub a: (f32, f32),
    pub b: (f32, f32),
    pub wa: f32,
    pub wb: f32,
    pub class: VesselClass,
    /// Opacity multiplier (fine new vessels are fainter).
    pub strength: f32,
}

impl Segment {
    /// Bounding box `(x0, y0, x1, y1)` including the half width and one pixel of anti-aliasing.
    pub fn bbox(&self) -> (f32, f32, f32, f32) {
        let pad = self.wa.max(self.wb) * 0.5 + 1.0;
        (
            self.a.0.min(self.b.0) - pad,
            self.a.1.min(self.b.1) - pad,
            self.a.0.max(self.b.0) + pad,
            self.a.1.max(self.b.1) + pad,
        )
    }

    /// Distance from `p` to the segment's centre line and the half width there.
    #[inline]
    pub fn distance(&self, p: (f32, f32)) -> (f32, f32) {
        let abx = self.b.0 - self.a.0;
        let aby = self.b.1 - self.a.1;
        let apx = p.0 - self.a.0;
        let apy = p.1 - self.a.1;
        let len2 = abx * abx + aby * aby;
        let t = if len2 > 1e-9 {
            ((apx * abx + apy * aby) / len2).clamp(0.0, 1.0)
        } else {
            0.0
        };
        let dx = apx - t * abx;
        let dy = apy - t * aby;
        (
            (dx * dx + dy * dy).sqrt(),
            0.5 * (self.wa + (self.wb - self.wa) * t),
        )
    }
}

/// The grown tree.
pub(crate) struct Tree {
    pub segments: Vec<Segment>,
    /// How many leading segments belong to the main arcades (for placing lesions near them).
    pub main_segments: usize,
    /// Venous beading sections drawn, as ground truth (canonical coordinates).
    pub beading: Vec<DrawnLesion>,
}

/// An arcade's route (waypoints in disc diameters, `u` temporal and `v` down), its width scale,
/// and whether it runs temporally around the macula.
type Arcade = (&'static [(f32, f32)], f32, bool);

/// A vessel waiting to grow.
struct Sprout {
    pos: (f32, f32),
    heading: f32,
    width: f32,
    class: VesselClass,
    depth: u8,
    /// Waypoints (canonical pixels) to steer through, for the main arcades.
    waypoints: Vec<(f32, f32)>,
    /// The arcade runs beside the macula: its inner branches are small.
    temporal: bool,
    /// A small vessel that runs towards the fovea (papillomacular, or an arcade's inner branch);
    /// other branches run outwards, away from the disc.
    toward_fovea: bool,
    beaded: bool,
}

struct Grower<'a> {
    geom: &'a Geometry,
    rng: &'a mut ChaCha8Rng,
    segments: Vec<Segment>,
    pending: VecDeque<Sprout>,
    beading: Vec<DrawnLesion>,
    step: f32,
    min_width: f32,
}

/// Grows the vessel tree. `beaded_veins` (0-2) temporal veins get venous beading.
pub(crate) fn grow(geom: &Geometry, rng: &mut ChaCha8Rng, beaded_veins: usize) -> Tree {
    let dd = geom.dd;
    let mut grower = Grower {
        geom,
        rng,
        segments: Vec::new(),
        pending: VecDeque::new(),
        beading: Vec::new(),
        step: (0.035 * dd).max(1.0),
        min_width: (0.007 * dd).max(0.7),
    };
    if !(dd.is_finite() && dd > 2.0) {
        return Tree {
            segments: Vec::new(),
            main_segments: 0,
            beading: Vec::new(),
        };
    }

    // Arcade routes in disc diameters from the disc centre (u temporal, v down); the temporal
    // ones arch about 2 DD above and below the fovea.
    let arcades: [Arcade; 4] = [
        (
            &[
                (0.1, -0.5),
                (0.5, -1.15),
                (1.3, -1.7),
                (2.5, -1.9),
                (3.6, -1.65),
                (4.6, -1.1),
                (5.5, -0.5),
            ],
            1.0,
            true,
        ),
        (
            &[
                (0.1, 0.55),
                (0.5, 1.3),
                (1.3, 1.95),
                (2.5, 2.2),
                (3.6, 1.9),
                (4.6, 1.3),
                (5.5, 0.7),
            ],
            1.0,
            true,
        ),
        (
            &[
                (-0.1, -0.5),
                (-0.45, -1.2),
                (-1.0, -2.0),
                (-1.6, -3.0),
                (-2.2, -4.0),
            ],
            0.85,
            false,
        ),
        (
            &[
                (-0.1, 0.5),
                (-0.45, 1.25),
                (-1.0, 2.1),
                (-1.6, 3.1),
                (-2.2, 4.1),
            ],
            0.85,
            false,
        ),
    ];

    let mut sprouts = Vec::new();
    for (index, (route, scale, temporal)) in arcades.iter().enumerate() {
        for class in [VesselClass::Artery, VesselClass::Vein] {
            let (width_dd, outward) = match class {
                VesselClass::Artery => (0.056, 0.0),
                VesselClass::Vein => (0.076, 0.14),
            };
            let rng = &mut *grower.rng;
            let sign_v = if route.first().is_some_and(|p| p.1 < 0.0) {
                -1.0
            } else {
                1.0
            };
            let waypoints: Vec<(f32, f32)> = route
                .iter()
                .enumerate()
                .map(|(k, &(u, v))| {
                    // The first waypoint stays close; later ones wander more.
                    let spread = if k == 0 { 0.05 } else { 0.12 };
                    geom.at_disc_offset(
                        u + gauss(rng) * spread,
                        v + sign_v * outward * (k.min(2) as f32 * 0.5) + gauss(rng) * spread,
                    )
                })
                .collect();
            // Trunks emerge from the nasal side of the cup.
            let nasal = if class == VesselClass::Vein {
                0.24
            } else {
                0.08
            };
            let start = (
                geom.disc_center.0
                    + nasal * geom.disc_radius
                    + gauss(rng) * 0.04 * geom.disc_radius,
                geom.disc_center.1 + sign_v * 0.02 * geom.disc_radius,
            );
            let heading = waypoints
                .first()
                .map_or(0.0, |w| (w.1 - start.1).atan2(w.0 - start.0));
            let beaded = class == VesselClass::Vein && *temporal && index < beaded_veins;
            sprouts.push(Sprout {
                pos: start,
                heading,
                width: width_dd * scale * dd * uni(rng, 0.92, 1.08),
                class,
                depth: 0,
                waypoints,
                temporal: *temporal,
                toward_fovea: false,
                beaded,
            });
        }
    }
    for sprout in sprouts {
        grower.walk(sprout);
    }
    let main_segments = grower.segments.len();

    // Small papillomacular vessels towards the fovea, and small nasal radial vessels.
    let pm = pick(grower.rng, 2, 3);
    for k in 0..pm {
        let rng = &mut *grower.rng;
        let v = uni(rng, -0.45, 0.45) * geom.disc_radius;
        let start = (
            geom.disc_center.0 - 0.85 * geom.disc_radius,
            geom.disc_center.1 + v,
        );
        let to_fovea = (geom.fovea.1 - start.1).atan2(geom.fovea.0 - start.0);
        grower.pending.push_back(Sprout {
            pos: start,
            heading: to_fovea + uni(rng, -0.45, 0.45),
            width: uni(rng, 0.015, 0.024) * dd,
            class: if k % 2 == 0 {
                VesselClass::Artery
            } else {
                VesselClass::Vein
            },
            depth: 2,
            waypoints: Vec::new(),
            temporal: false,
            toward_fovea: true,
            beaded: false,
        });
    }
    for k in 0..2 {
        let rng = &mut *grower.rng;
        let start = (
            geom.disc_center.0 + 0.8 * geom.disc_radius,
            geom.disc_center.1 + uni(rng, -0.3, 0.3) * geom.disc_radius,
        );
        grower.pending.push_back(Sprout {
            pos: start,
            heading: uni(rng, -0.4, 0.4),
            width: uni(rng, 0.025, 0.035) * dd,
            class: if k == 0 {
                VesselClass::Artery
            } else {
                VesselClass::Vein
            },
            depth: 2,
            waypoints: Vec::new(),
            temporal: false,
            toward_fovea: false,
            beaded: false,
        });
    }

    while let Some(sprout) = grower.pending.pop_front() {
        if grower.segments.len() >= MAX_SEGMENTS {
            break;
        }
        grower.walk(sprout);
    }

    Tree {
        segments: grower.segments,
        main_segments,
        beading: grower.beading,
    }
}

/// Wraps an angle to `(-PI, PI]`.
fn wrap(a: f32) -> f32 {
    let mut a = a % (2.0 * PI);
    if a > PI {
        a -= 2.0 * PI;
    } else if a <= -PI {
        a += 2.0 * PI;
    }
    a
}

impl Grower<'_> {
    fn walk(&mut self, sprout: Sprout) {
        let geom = self.geom;
        let dd = geom.dd;
        let step = self.step;
        // Vessels aimed at the fovea stop short of it, at the edge of the avascular zone, instead
        // of circling it.
        let faz = if sprout.toward_fovea {
            uni(self.rng, 0.3, 0.55) * dd
        } else {
            0.25 * dd
        };
        let main = sprout.depth == 0;
        let mut pos = sprout.pos;
        let mut heading = sprout.heading;
        let mut width = sprout.width;
        let mut kappa = 0.0f32;
        let mut waypoint = 0usize;
        let mut length = 0.0f32;
        let taper = if main { 0.9975 } else { 0.986 };
        let mut next_branch = if main {
            uni(self.rng, 0.4, 0.9) * dd
        } else {
            (uni(self.rng, 16.0, 32.0) * width).max(0.35 * dd)
        };
        let max_steps = ((4.0 * geom.fov_radius) / step) as usize + 16;
        // Venous beading: width swells and narrows with a period of about 0.25 DD between
        // 1.2 and 3.5 DD along the vein.
        let bead_from = 1.2 * dd;
        let bead_to = 3.5 * dd;
        let bead_period = 0.25 * dd;
        let mut bead_mid: Option<(f32, f32)> = None;
        let drawn_width = |w: f32, len: f32| {
            if sprout.beaded && len > bead_from && len < bead_to {
                w * (1.0 + 0.38 * (2.0 * PI * (len - bead_from) / bead_period).sin())
            } else {
                w
            }
        };

        for _ in 0..max_steps {
            if self.segments.len() >= MAX_SEGMENTS {
                break;
            }
            // Steering: main vessels head for their next waypoint; branches drift with slowly
            // varying curvature.
            if let Some(&target) = sprout.waypoints.get(waypoint) {
                let dx = target.0 - pos.0;
                let dy = target.1 - pos.1;
                if (dx * dx + dy * dy).sqrt() < 0.35 * dd {
                    waypoint += 1;
                }
                let desired = dy.atan2(dx);
                heading += (wrap(desired - heading) * 0.25).clamp(-0.09, 0.09);
                heading += gauss(self.rng) * 0.02;
            } else {
                // Branches fan out from the disc, or converge on the fovea.
                let target = if sprout.toward_fovea {
                    (geom.fovea.1 - pos.1).atan2(geom.fovea.0 - pos.0)
                } else {
                    (pos.1 - geom.disc_center.1).atan2(pos.0 - geom.disc_center.0)
                };
                kappa = (kappa + gauss(self.rng) * 0.01).clamp(-0.035, 0.035);
                heading += kappa + 0.05 * wrap(target - heading) + gauss(self.rng) * 0.012;
            }
            // Larger vessels curve away from the macula; none enters the avascular zone.
            let fx = pos.0 - geom.fovea.0;
            let fy = pos.1 - geom.fovea.1;
            let df = (fx * fx + fy * fy).sqrt();
            let avoid = if width > 0.02 * dd {
                1.2 * dd
            } else {
                0.5 * dd
            };
            if !sprout.toward_fovea && df < avoid && df > 1e-3 {
                let to_fovea = (-fy).atan2(-fx);
                let diff = wrap(to_fovea - heading);
                // Only a vessel heading towards the fovea turns, and it turns away from it.
                if diff.abs() < PI * 0.5 {
                    heading -= diff.signum() * 0.12 * (1.0 - df / avoid);
                }
            }

            let next = (pos.0 + step * heading.cos(), pos.1 + step * heading.sin());
            let next_width = width * taper;
            let len_next = length + step;
            self.segments.push(Segment {
                a: pos,
                b: next,
                wa: drawn_width(width, length),
                wb: drawn_width(next_width, len_next),
                class: sprout.class,
                strength: 1.0,
            });
            if sprout.beaded && bead_mid.is_none() && len_next >= 0.5 * (bead_from + bead_to) {
                bead_mid = Some(next);
            }
            pos = next;
            width = next_width;
            length = len_next;

            if length >= next_branch {
                let child = self.branch_width(width, &sprout, pos, heading);
                if let Some((child_width, side, inner)) = child {
                    // Murray's law: parent^3 = child^3 + continuing^3.
                    width = (width.powi(3) - child_width.powi(3)).max(0.0).cbrt();
                    let angle = uni(self.rng, 0.5, 1.15) * side;
                    if sprout.depth < MAX_DEPTH && child_width >= self.min_width {
                        self.pending.push_back(Sprout {
                            pos,
                            heading: heading + angle,
                            width: child_width,
                            class: sprout.class,
                            depth: sprout.depth + 1,
                            waypoints: Vec::new(),
                            temporal: false,
                            toward_fovea: sprout.toward_fovea || (sprout.temporal && inner),
                            beaded: false,
                        });
                    }
                    // The parent bends a little away from its branch.
                    heading -= angle * 0.15;
                }
                next_branch += if main {
                    uni(self.rng, 0.5, 1.1) * dd
                } else {
                    (uni(self.rng, 16.0, 32.0) * width).max(0.35 * dd)
                };
            }

            let rho = geom.rho(pos.0, pos.1);
            let out_of_waypoints = waypoint >= sprout.waypoints.len();
            if rho > 1.0 + width / geom.fov_radius.max(1.0)
                || width < self.min_width
                || df < faz
                || (out_of_waypoints && !main && length > 5.0 * dd)
            {
                break;
            }
        }
        if let Some(mid) = bead_mid {
            self.beading.push(DrawnLesion {
                kind: LesionType::VenousBeading,
                x: mid.0,
                y: mid.1,
                radius: 0.5 * (bead_to - bead_from),
            });
        }
    }

    /// Width, side (+1 / -1 turn) and whether the branch is on the fovea's side, or `None` to
    /// skip this fork.
    fn branch_width(
        &mut self,
        width: f32,
        sprout: &Sprout,
        pos: (f32, f32),
        heading: f32,
    ) -> Option<(f32, f32, bool)> {
        let side = if chance(self.rng, 0.5) { 1.0 } else { -1.0 };
        // Which side the fovea is on: cross product of heading and the vector to the fovea.
        let fx = self.geom.fovea.0 - pos.0;
        let fy = self.geom.fovea.1 - pos.1;
        let cross = heading.cos() * fy - heading.sin() * fx;
        let inner = cross.signum() == side;
        let fraction = if sprout.temporal && inner {
            uni(self.rng, 0.3, 0.5)
        } else {
            uni(self.rng, 0.45, 0.78)
        };
        let child = width * fraction;
        if child < self.min_width {
            return None;
        }
        Some((child, side, inner))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::noise::stream;

    fn geometry() -> Geometry {
        Geometry {
            width: 1536,
            height: 1024,
            fov_center: (767.5, 511.5),
            fov_radius: 540.0,
            disc_center: (1000.0, 480.0),
            disc_radius: 78.0,
            dd: 156.0,
            fovea: (610.0, 510.0),
            cup_center: (995.0, 480.0),
            cdr: 0.3,
        }
    }

    #[test]
    fn tree_stays_in_the_field_and_out_of_the_fovea() {
        let geom = geometry();
        let tree = grow(&geom, &mut stream(3, 2), 0);
        assert!(tree.segments.len() > 200, "{}", tree.segments.len());
        for s in &tree.segments {
            // Segment ends stay inside the field (plus one step and a width of slack).
            assert!(geom.rho(s.a.0, s.a.1) < 1.1, "{s:?}");
            let (d, _) = s.distance(geom.fovea);
            assert!(d > 0.15 * geom.dd, "vessel at {d} px from the fovea");
            assert!(s.wa > 0.0 && s.wb > 0.0 && s.wa < 0.1 * geom.dd);
        }
    }

    #[test]
    fn veins_are_wider_than_arteries_at_the_disc() {
        let geom = geometry();
        let tree = grow(&geom, &mut stream(4, 2), 0);
        let first = |class| {
            tree.segments
                .iter()
                .filter(|s| s.class == class)
                .map(|s| s.wa)
                .fold(0.0f32, f32::max)
        };
        assert!(first(VesselClass::Vein) > first(VesselClass::Artery) * 1.15);
    }

    #[test]
    fn beading_is_reported_per_beaded_vein() {
        let geom = geometry();
        let tree = grow(&geom, &mut stream(5, 2), 2);
        assert_eq!(tree.beading.len(), 2);
        assert!(grow(&geom, &mut stream(5, 2), 0).beading.is_empty());
    }

    #[test]
    fn degenerate_geometry_grows_nothing() {
        let mut geom = geometry();
        geom.dd = 0.5;
        assert!(grow(&geom, &mut stream(1, 2), 0).segments.is_empty());
        geom.dd = f32::NAN;
        assert!(grow(&geom, &mut stream(1, 2), 0).segments.is_empty());
    }

    #[test]
    fn wrap_keeps_angles_in_range() {
        for k in -20..20 {
            let a = wrap(k as f32 * 0.9);
            assert!(a > -PI - 1e-5 && a <= PI + 1e-5, "{a}");
        }
    }
}
