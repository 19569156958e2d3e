//! Ground truth must be visible in the pixels.

use crate::*;
use image::{Rgb, RgbImage};
use proptest::prelude::*;
use retina_records::{Laterality, LesionType};
use std::collections::BTreeSet;

const W: u32 = 768;
const H: u32 = 512;

fn luma(p: &Rgb<u8>) -> f32 {
    0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32
}

/// Pixels whose centre satisfies `keep`.
fn pixels(img: &RgbImage, keep: impl Fn(f32, f32) -> bool) -> Vec<Rgb<u8>> {
    img.enumerate_pixels()
        .filter(|(x, y, _)| keep(*x as f32, *y as f32))
        .map(|(_, _, p)| *p)
        .collect()
}

fn mean(v: &[Rgb<u8>], f: impl Fn(&Rgb<u8>) -> f32) -> f32 {
    assert!(!v.is_empty(), "no pixels selected");
    v.iter().map(f).sum::<f32>() / v.len() as f32
}

fn median(mut v: Vec<f32>) -> f32 {
    assert!(!v.is_empty(), "no pixels selected");
    v.sort_by(f32::total_cmp);
    v[v.len() / 2]
}

fn dist(x: f32, y: f32, c: (f32, f32)) -> f32 {
    ((x - c.0).powi(2) + (y - c.1).powi(2)).sqrt()
}

fn in_fov(t: &GroundTruth, x: f32, y: f32) -> bool {
    dist(x, y, t.fov_center) < t.fov_radius * 0.97
}

#[test]
fn disc_is_brighter_than_its_surroundings_and_cup_paler_than_rim() {
    for seed in [1, 2, 3] {
        let (img, t) = render(&SceneSpec {
            cup_to_disc: 0.45,
            ..SceneSpec::normal(W, H, Laterality::Right, seed)
        });
        let r = t.disc_radius;
        let disc = pixels(&img, |x, y| dist(x, y, t.disc_center) < 0.85 * r);
        let around = pixels(&img, |x, y| {
            let d = dist(x, y, t.disc_center);
            d > 1.6 * r && d < 2.6 * r && in_fov(&t, x, y)
        });
        let (ld, la) = (mean(&disc, luma), mean(&around, luma));
        assert!(ld > la * 1.3, "seed {seed}: disc {ld} vs surroundings {la}");

        // Cup: the inner part of the cup; rim: the annulus between cup and disc margin.
        let cup_r = t.cup_to_disc * r;
        let cup = pixels(&img, |x, y| dist(x, y, t.disc_center) < 0.5 * cup_r);
        let rim = pixels(&img, |x, y| {
            let d = dist(x, y, t.disc_center);
            d > cup_r + 0.35 * (r - cup_r) && d < 0.85 * r
        });
        let lc = median(cup.iter().map(luma).collect());
        let lr = median(rim.iter().map(luma).collect());
        assert!(lc > lr + 8.0, "seed {seed}: cup {lc} vs rim {lr}");
        // Paler: less saturated (blue closer to red).
        let sat = |p: &Rgb<u8>| (p[0] as f32 - p[2] as f32) / (p[0] as f32 + 1.0);
        let sc = median(cup.iter().map(sat).collect());
        let sr = median(rim.iter().map(sat).collect());
        assert!(sc < sr, "seed {seed}: cup saturation {sc} vs rim {sr}");
    }
}

#[test]
fn fovea_is_darker_than_the_fundus_and_outside_is_black() {
    let (img, t) = render(&SceneSpec::normal(W, H, Laterality::Left, 9));
    let dd = 2.0 * t.disc_radius;
    let fundus = pixels(&img, |x, y| in_fov(&t, x, y));
    let fovea = pixels(&img, |x, y| {
        let d = dist(x, y, t.fovea);
        d < 0.2 * dd && d > 0.05 * dd
    });
    let (lf, lm) = (mean(&fovea, luma), mean(&fundus, luma));
    assert!(lf < 0.85 * lm, "fovea {lf} vs fundus {lm}");

    let outside = pixels(&img, |x, y| dist(x, y, t.fov_center) > t.fov_radius + 3.0);
    assert!(outside.len() > 10_000);
    let max = outside.iter().flat_map(|p| p.0).max().unwrap_or(255);
    let avg = mean(&outside, luma);
    assert!(max <= 12, "background max {max}");
    assert!(avg < 6.0, "background mean {avg}");
    // A little noise, not flat black.
    assert!(outside.iter().any(|p| p[0] != outside[0][0]));
}

#[test]
fn fundus_is_orange_red_and_vignetted() {
    let (img, t) = render(&SceneSpec::normal(W, H, Laterality::Right, 4));
    let centre = pixels(&img, |x, y| dist(x, y, t.fov_center) < 0.3 * t.fov_radius);
    let edge = pixels(&img, |x, y| {
        let d = dist(x, y, t.fov_center);
        d > 0.85 * t.fov_radius && d < 0.97 * t.fov_radius
    });
    let red = mean(&centre, |p| p[0] as f32);
    let green = mean(&centre, |p| p[1] as f32);
    let blue = mean(&centre, |p| p[2] as f32);
    assert!(red > green * 1.6 && green > blue, "{red} {green} {blue}");
    assert!(mean(&edge, luma) < 0.8 * mean(&centre, luma), "vignetting");
}

#[test]
fn vessels_are_darker_in_green_and_cover_a_plausible_fraction() {
    let rendered = render_detailed(&SceneSpec::normal(W, H, Laterality::Right, 5));
    let (img, t, mask) = (&rendered.image, &rendered.truth, &rendered.vessel_mask);
    let dd = 2.0 * t.disc_radius;
    let zone = |x: f32, y: f32| {
        let d = dist(x, y, t.fov_center);
        d > 0.2 * t.fov_radius && d < 0.75 * t.fov_radius && dist(x, y, t.disc_center) > 1.5 * dd
    };
    let mut vessel = Vec::new();
    let mut background = Vec::new();
    for (x, y, p) in img.enumerate_pixels() {
        if !zone(x as f32, y as f32) {
            continue;
        }
        match mask.get_pixel(x, y)[0] {
            m if m >= 200 => vessel.push(p[1] as f32),
            0 => background.push(p[1] as f32),
            _ => {}
        }
    }
    assert!(vessel.len() > 500, "{} vessel pixels", vessel.len());
    let (gv, gb) = (
        vessel.iter().sum::<f32>() / vessel.len() as f32,
        background.iter().sum::<f32>() / background.len() as f32,
    );
    assert!(gv < 0.75 * gb, "vessel green {gv} vs background {gb}");
    assert!(
        (0.04..0.2).contains(&t.vessel_fraction),
        "vessel fraction {}",
        t.vessel_fraction
    );
}

#[test]
fn left_and_right_eyes_are_mirror_images() {
    let right = render(&SceneSpec::normal(W, H, Laterality::Right, 11));
    let left = render(&SceneSpec::normal(W, H, Laterality::Left, 11));
    // OD: disc to the image's right of the macula; OS: to the left.
    assert!(right.1.disc_center.0 > right.1.fovea.0);
    assert!(left.1.disc_center.0 < left.1.fovea.0);
    assert_eq!(right.1.laterality, Laterality::Right);
    assert_eq!(left.1.laterality, Laterality::Left);
    let mirrored = (W as f32 - 1.0) - right.1.disc_center.0;
    assert!((left.1.disc_center.0 - mirrored).abs() < 1e-3);
    assert_eq!(left.1.disc_center.1, right.1.disc_center.1);
    let flipped = image::imageops::flip_horizontal(&right.0);
    assert!(
        flipped == left.0,
        "left eye is the exact mirror of the right eye"
    );
}

#[test]
fn rendering_is_deterministic_for_a_seed() {
    let spec = SceneSpec {
        dr_grade: 4,
        amd: true,
        ..SceneSpec::normal(400, 300, Laterality::Right, 21)
    };
    let (a, ta) = render(&spec);
    let (b, tb) = render(&spec);
    assert!(a == b);
    assert_eq!(ta, tb);
    let (c, _) = render(&SceneSpec { seed: 22, ..spec });
    assert!(a != c, "another seed gives another picture");
}

/// Median of a channel function over an annulus around a lesion.
fn local_background(img: &RgbImage, l: &DrawnLesion, f: impl Fn(&Rgb<u8>) -> f32) -> f32 {
    let (r0, r1) = (2.0 * l.radius + 2.0, 3.0 * l.radius + 5.0);
    let mut values = Vec::new();
    let (x0, x1) = ((l.x - r1).max(0.0) as u32, (l.x + r1) as u32);
    let (y0, y1) = ((l.y - r1).max(0.0) as u32, (l.y + r1) as u32);
    for y in y0..=y1.min(img.height() - 1) {
        for x in x0..=x1.min(img.width() - 1) {
            let d = dist(x as f32, y as f32, (l.x, l.y));
            if d >= r0 && d <= r1 {
                values.push(f(img.get_pixel(x, y)));
            }
        }
    }
    median(values)
}

fn centre(img: &RgbImage, l: &DrawnLesion) -> Rgb<u8> {
    *img.get_pixel(l.x.round() as u32, l.y.round() as u32)
}

#[test]
fn lesions_look_like_their_kind() {
    let mut checked = BTreeSet::new();
    for seed in 0..4 {
        let spec = SceneSpec {
            dr_grade: 3,
            ..SceneSpec::normal(1024, 683, Laterality::Right, seed)
        };
        let (img, t) = render(&spec);
        for l in &t.lesions {
            let c = centre(&img, l);
            let g = c[1] as f32;
            let bg_g = local_background(&img, l, |p| p[1] as f32);
            let bg_l = local_background(&img, l, luma);
            match l.kind {
                LesionType::HardExudate => {
                    assert!(g > bg_g + 40.0, "exudate {l:?}: green {g} vs {bg_g}");
                    assert!(c[0] as f32 > c[2] as f32 + 60.0, "exudate is yellow: {c:?}");
                    assert!(c[1] as f32 > c[2] as f32 + 40.0, "exudate is yellow: {c:?}");
                }
                LesionType::IntraretinalHaemorrhage | LesionType::Microaneurysm => {
                    assert!(luma(&c) < bg_l - 8.0, "{l:?}: luma {} vs {bg_l}", luma(&c));
                    assert!(g < bg_g, "{l:?}: green {g} vs {bg_g}");
                    assert!(c[0] as f32 > 2.5 * c[1] as f32, "dark red: {c:?}");
                }
                LesionType::CottonWoolSpot => {
                    assert!(luma(&c) > bg_l + 20.0, "{l:?}: cotton-wool spot is pale");
                    assert!(c[2] as f32 > bg_g * 0.5, "whitish: {c:?}");
                }
                _ => continue,
            }
            checked.insert(l.kind);
        }
    }
    assert!(checked.contains(&LesionType::HardExudate), "{checked:?}");
    assert!(checked.contains(&LesionType::IntraretinalHaemorrhage));
    assert!(checked.contains(&LesionType::Microaneurysm));
}

#[test]
fn drusen_are_yellow_and_glaucoma_cups_are_large() {
    let spec = SceneSpec {
        amd: true,
        glaucoma: true,
        cup_to_disc: 0.2,
        ..SceneSpec::normal(W, H, Laterality::Left, 31)
    };
    let (img, t) = render(&spec);
    assert!((0.7..=0.9).contains(&t.cup_to_disc), "{}", t.cup_to_disc);
    let drusen: Vec<_> = t
        .lesions
        .iter()
        .filter(|l| l.kind == LesionType::Drusen)
        .collect();
    assert!(drusen.len() >= 10);
    let brighter = drusen
        .iter()
        .filter(|l| centre(&img, l)[1] as f32 > local_background(&img, l, |p| p[1] as f32) + 10.0)
        .count();
    assert!(
        brighter * 10 >= drusen.len() * 8,
        "{brighter} of {}",
        drusen.len()
    );
    for l in &drusen {
        assert!(
            dist(l.x, l.y, t.fovea) < 2.0 * 2.0 * t.disc_radius,
            "drusen near the macula"
        );
    }
}

#[test]
fn lesion_kinds_follow_the_grade() {
    for seed in 0..10 {
        let spec = |grade| SceneSpec {
            dr_grade: grade,
            ..SceneSpec::normal(W, H, Laterality::Right, seed)
        };
        assert!(lesions_for(&spec(0)).iter().all(|k| !k.is_diabetic()));
        assert!(lesions_for(&spec(4)).contains(&LesionType::Neovascularisation));
        assert!(!lesions_for(&spec(4)).is_empty());
    }
}

#[test]
fn drawn_kinds_are_exactly_the_planned_kinds() {
    for grade in 0..=4 {
        for seed in 0..3 {
            let spec = SceneSpec {
                dr_grade: grade,
                amd: seed == 1,
                ..SceneSpec::normal(480, 320, Laterality::Right, seed + 100 * grade as u64)
            };
            let (_, t) = render(&spec);
            let drawn: BTreeSet<LesionType> = t.lesions.iter().map(|l| l.kind).collect();
            let planned: BTreeSet<LesionType> = lesions_for(&spec).into_iter().collect();
            assert_eq!(drawn, planned, "grade {grade} seed {seed}");
            for l in &t.lesions {
                assert!(
                    dist(l.x, l.y, t.fov_center) < t.fov_radius,
                    "{l:?} inside the field"
                );
                assert!(l.x >= 0.0 && l.y >= 0.0 && l.x < 480.0 && l.y < 320.0);
            }
        }
    }
}

#[test]
fn wide_frames_are_sometimes_clipped_and_square_frames_never() {
    let clipped = (0..20)
        .filter(|&seed| {
            let (_, t) = render(&SceneSpec::normal(96, 64, Laterality::Right, seed));
            t.fov_radius > 32.0
        })
        .count();
    assert!(clipped > 0 && clipped < 20, "{clipped} of 20 clipped");
    for seed in 0..10 {
        let (_, t) = render(&SceneSpec::normal(64, 64, Laterality::Right, seed));
        assert!(t.fov_radius < 32.0);
    }
}

#[test]
fn degenerate_frames_do_not_panic() {
    for (w, h) in [(0, 0), (0, 10), (1, 1), (3, 2), (17, 5)] {
        let spec = SceneSpec {
            dr_grade: 9,
            amd: true,
            glaucoma: true,
            cup_to_disc: f32::NAN,
            ..SceneSpec::normal(w, h, Laterality::Unknown, 1)
        };
        let (img, t) = render(&spec);
        assert_eq!((img.width(), img.height()), (w, h));
        assert!(t.vessel_fraction.is_finite());
        assert_ne!(t.laterality, Laterality::Unknown);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn any_spec_renders_with_consistent_truth(
        w in 1u32..200, h in 1u32..200, grade in 0u8..8, cdr in -1.0f32..2.0,
        amd: bool, glaucoma: bool, seed: u64, side in 0u8..3,
    ) {
        let laterality = [Laterality::Left, Laterality::Right, Laterality::Unknown][side as usize];
        let spec = SceneSpec { width: w, height: h, laterality, dr_grade: grade, cup_to_disc: cdr, amd, glaucoma, seed };
        let (img, t) = render(&spec);
        prop_assert_eq!((img.width(), img.height()), (w, h));
        prop_assert!((0.0..=1.0).contains(&t.vessel_fraction));
        prop_assert!(t.cup_to_disc > 0.0 && t.cup_to_disc < 1.0);
        if glaucoma {
            prop_assert!(t.cup_to_disc >= 0.7);
        }
        prop_assert!(dist(t.disc_center.0, t.disc_center.1, t.fov_center) < t.fov_radius);
        if laterality != Laterality::Unknown {
            prop_assert_eq!(t.laterality, laterality);
        }
        // Nasal side: OD disc right of the fovea, OS left.
        match t.laterality {
            Laterality::Right => prop_assert!(t.disc_center.0 > t.fovea.0),
            _ => prop_assert!(t.disc_center.0 < t.fovea.0),
        }
    }
}

#[test]
fn fewer_vessels_lower_the_vessel_fraction() {
    let spec = SceneSpec::normal(384, 256, Laterality::Left, 91);
    let full = crate::render_detailed(&spec);
    let same = crate::render_with_vessels(&spec, 1.0);
    assert_eq!(full.image, same.image);
    let half = crate::render_with_vessels(&spec, 0.3);
    let none = crate::render_with_vessels(&spec, 0.0);
    let (f, h, n) = (
        full.truth.vessel_fraction,
        half.truth.vessel_fraction,
        none.truth.vessel_fraction,
    );
    assert!(f > h && h > n && n > 0.0, "{f} {h} {n}");
}
