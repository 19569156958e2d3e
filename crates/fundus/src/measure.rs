//! Measurements on the prepared (cropped, square, padded) image.
//!
//! Everything except sharpness runs on a working copy of at most [`WORK_SIZE`] pixels; all
//! sizes are relative to the field-of-view radius `r` in working pixels so results do not depend
//! on the working scale. See `docs/measurements.md` for methods and limits.

use crate::plane::{Component, Plane, SummedArea, components, median_and_sigma};
use crate::thresholds::*;
use retina_records::{Centring, DiscEstimate, DiscSide, Measured, QualityGrade, QualityMetrics};

/// Longest side of the measurement working copy.
pub(crate) const WORK_SIZE: u32 = 320;

/// Where the field lies in an image of the prepared geometry.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Geometry {
    /// Field centre and radius, pixels (pixel centres at integers).
    pub cx: f32,
    pub cy: f32,
    pub r: f32,
    /// The part of the image that came from the photograph (the rest is black padding):
    /// `[x0, x1) x [y0, y1)`.
    pub valid: (usize, usize, usize, usize),
}

impl Geometry {
    /// Same geometry in an image scaled by `s`.
    pub fn scaled(&self, s: f32) -> Geometry {
        let (x0, y0, x1, y1) = self.valid;
        let sc = |v: usize| (v as f32 * s).round().max(0.0) as usize;
        Geometry {
            cx: (self.cx + 0.5) * s - 0.5,
            cy: (self.cy + 0.5) * s - 0.5,
            r: self.r * s,
            valid: (sc(x0), sc(y0), sc(x1), sc(y1)),
        }
    }

    /// Pixels within `fraction * r` of the centre, inside the photograph and at least `inset`
    /// pixels from the padding.
    fn mask(&self, w: usize, h: usize, fraction: f32, inset: usize) -> Vec<bool> {
        let (x0, y0, x1, y1) = self.valid;
        let (x0, y0) = (x0 + inset, y0 + inset);
        let (x1, y1) = (x1.saturating_sub(inset), y1.saturating_sub(inset));
        let r2 = (self.r * fraction).powi(2);
        let mut m = vec![false; w * h];
        // Row by row: each row of the disc is one run, so only its ends need computing.
        for (y, row) in m.chunks_exact_mut(w.max(1)).enumerate() {
            let dy2 = (y as f32 - self.cy).powi(2);
            if y < y0 || y >= y1 || dy2 > r2 {
                continue;
            }
            let half = (r2 - dy2).sqrt();
            let xa = ((self.cx - half).ceil().max(0.0) as usize).max(x0);
            let xb = (((self.cx + half).floor() + 1.0).max(0.0) as usize)
                .min(x1)
                .min(w);
            if let Some(run) = row.get_mut(xa..xb.max(xa)) {
                run.fill(true);
            }
        }
        m
    }
}

/// Everything measured, before it is folded into `ImageFacts`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Measurements {
    pub quality: QualityMetrics,
    pub disc: Option<DiscEstimate>,
    pub centring: Option<Centring>,
    pub vessel_density: Option<Measured<f32>>,
    pub tortuosity: Option<Measured<f32>>,
    pub fractal_dimension: Option<Measured<f32>>,
    pub cup_to_disc_ratio: Option<Measured<f32>>,
    pub bright_lesion_candidates: Option<Measured<u32>>,
    pub dark_lesion_candidates: Option<Measured<u32>>,
    pub perceptual_hash: u64,
}

/// An RGB8 image of the prepared geometry, with where its field lies.
pub(crate) struct View<'a> {
    pub rgb: &'a [u8],
    pub w: usize,
    pub h: usize,
    pub geom: Geometry,
}

/// Measures the working copy `work`; sharpness comes from the green channel of `output` (the
/// output-scale image).
pub(crate) fn measure(work: &View<'_>, output: &View<'_>) -> Measurements {
    let (w, h, g) = (work.w, work.h, &work.geom);
    let work = work.rgb;
    let lum = Plane::from_rgb(work, w, h, |r, gr, b| 0.299 * r + 0.587 * gr + 0.114 * b);
    let green = Plane::from_rgb(work, w, h, |_, gr, _| gr);
    let field = g.mask(w, h, 0.95, 1);

    let sharpness = laplacian_variance(output.rgb, output.w, output.h, &output.geom);
    let quality = quality(&lum, &field, g, sharpness);

    let disc = find_disc(work, w, h, g);
    let (disc_estimate, centring, cup) = match &disc {
        Some(d) => {
            let dx = (d.x - g.cx) / g.r;
            let dy = (d.y - g.cy) / g.r;
            let side = if dx.abs() < DISC_CENTRE_BAND {
                DiscSide::Centre
            } else if dx < 0.0 {
                DiscSide::Left
            } else {
                DiscSide::Right
            };
            let centring = if dx.hypot(dy) < DISC_CENTRED_WITHIN {
                Centring::Disc
            } else {
                Centring::Macula
            };
            let estimate = DiscEstimate {
                x: ((d.x + 0.5) / w as f32).clamp(0.0, 1.0),
                y: ((d.y + 0.5) / h as f32).clamp(0.0, 1.0),
                diameter: (d.radius / g.r).clamp(0.0, 1.0),
                side,
                confidence: d.confidence,
            };
            (Some(estimate), Some(centring), d.cup_to_disc)
        }
        None => (None, None, None),
    };

    let vessels = vessels_and_lesions(&green, g, disc.as_ref());
    let perceptual_hash = perceptual_hash(&lum);

    Measurements {
        quality,
        disc: disc_estimate,
        centring,
        vessel_density: vessels.density,
        tortuosity: vessels.tortuosity,
        fractal_dimension: vessels.fractal,
        cup_to_disc_ratio: cup,
        bright_lesion_candidates: vessels.bright,
        dark_lesion_candidates: vessels.dark,
        perceptual_hash,
    }
}

fn quality(lum: &Plane, field: &[bool], g: &Geometry, sharpness: f32) -> QualityMetrics {
    let (mut n, mut sum, mut sum2) = (0.0f64, 0.0f64, 0.0f64);
    for (v, m) in lum.data.iter().zip(field) {
        if *m {
            let v = f64::from(*v) / 255.0;
            n += 1.0;
            sum += v;
            sum2 += v * v;
        }
    }
    let mean = if n > 0.0 { sum / n } else { 0.0 };
    let var = if n > 0.0 {
        (sum2 / n - mean * mean).max(0.0)
    } else {
        0.0
    };
    let brightness = mean as f32;
    let contrast = var.sqrt() as f32;

    // Illumination: spread of the means of an 8x8 grid of cells over the field.
    let cells = 8usize;
    let side = 2.0 * g.r / cells as f32;
    let (x_start, y_start) = (g.cx - g.r, g.cy - g.r);
    let mut means = Vec::new();
    for cy in 0..cells {
        for cx in 0..cells {
            let xa = (x_start + cx as f32 * side).max(0.0) as usize;
            let xb = ((x_start + (cx + 1) as f32 * side).max(0.0) as usize).min(lum.w);
            let ya = (y_start + cy as f32 * side).max(0.0) as usize;
            let yb = ((y_start + (cy + 1) as f32 * side).max(0.0) as usize).min(lum.h);
            let (mut s, mut c, mut total) = (0.0f64, 0usize, 0usize);
            for y in ya..yb {
                for x in xa..xb {
                    total += 1;
                    if field.get(y * lum.w + x).copied().unwrap_or(false) {
                        s += f64::from(lum.get(x, y));
                        c += 1;
                    }
                }
            }
            if total > 0 && c * 2 >= total {
                means.push(s / c as f64);
            }
        }
    }
    let illumination_uniformity = if means.len() >= 4 {
        let m = means.iter().sum::<f64>() / means.len() as f64;
        let sd = (means.iter().map(|v| (v - m).powi(2)).sum::<f64>() / means.len() as f64).sqrt();
        if m > 0.0 {
            (1.0 - sd / m).clamp(0.0, 1.0) as f32
        } else {
            0.0
        }
    } else {
        0.0
    };

    let grade = grade(brightness, contrast, sharpness, illumination_uniformity);
    QualityMetrics {
        brightness,
        contrast,
        sharpness,
        illumination_uniformity,
        grade,
    }
}

/// Applies the documented thresholds of [`crate::thresholds`].
pub(crate) fn grade(
    brightness: f32,
    contrast: f32,
    sharpness: f32,
    uniformity: f32,
) -> QualityGrade {
    if !(BRIGHTNESS_REJECT_BELOW..=BRIGHTNESS_REJECT_ABOVE).contains(&brightness)
        || contrast < CONTRAST_REJECT_BELOW
        || sharpness < SHARPNESS_REJECT_BELOW
        || uniformity < UNIFORMITY_REJECT_BELOW
    {
        QualityGrade::Reject
    } else if !(BRIGHTNESS_GOOD_FROM..=BRIGHTNESS_GOOD_UP_TO).contains(&brightness)
        || sharpness < SHARPNESS_GOOD_FROM
        || uniformity < UNIFORMITY_GOOD_FROM
    {
        QualityGrade::Usable
    } else {
        QualityGrade::Good
    }
}

/// Pixels whose Laplacian sums are taken in 32 bits: 1024 × 1020² < 2³¹.
const LAPLACIAN_CHUNK: usize = 1024;

/// Variance of the 4-neighbour Laplacian of the green channel (0-255 scale) inside 0.9 r.
///
/// Integer arithmetic (the Laplacian of 8-bit values and its square sum fit `i64` exactly), one
/// run per row: the same value as summing in `f64`. The green bytes of the circle's column span
/// are gathered once per row into three rotating contiguous rows, so the Laplacian runs on plain
/// arrays (vectorised) and each row is read once.
fn laplacian_variance(rgb: &[u8], w: usize, h: usize, g: &Geometry) -> f32 {
    if w < 3 || h < 3 || rgb.len() < w * h * 3 {
        return 0.0;
    }
    let (x0, y0, x1, y1) = g.valid;
    let r2 = (g.r * 0.9).powi(2);
    // Columns any row's run can touch (with its two neighbours), gathered for every row.
    let span = |y: usize| -> Option<(usize, usize)> {
        let dy2 = (y as f32 - g.cy).powi(2);
        if dy2 > r2 {
            return None;
        }
        let half = (r2 - dy2).sqrt();
        let xa = ((g.cx - half).ceil().max(0.0) as usize).max(x0 + 1).max(1);
        let xb = ((g.cx + half).floor().max(0.0) as usize + 1)
            .min(x1.saturating_sub(1))
            .min(w - 1);
        (xb > xa).then_some((xa, xb))
    };
    let ys = (y0 + 1).max(1)..y1.min(h - 1).saturating_sub(1);
    let Some((ga, gb)) = ys
        .clone()
        .filter_map(span)
        .reduce(|(a, b), (c, d)| (a.min(c), b.max(d)))
    else {
        return 0.0;
    };
    // Gathered columns: ga-1 ..= gb (gb <= w - 1).
    let (ga, gb) = (ga - 1, gb + 1);
    let stride = 3 * w;
    let gather = |yy: usize, out: &mut Vec<i16>| {
        out.clear();
        let row = &rgb[yy * stride + 3 * ga..yy * stride + 3 * gb];
        out.extend(row.chunks_exact(3).map(|p| i16::from(p[1])));
    };
    let (mut up, mut mid, mut down) = (Vec::new(), Vec::new(), Vec::new());
    let (mut n, mut sum, mut sum2) = (0i64, 0i64, 0i64);
    // Row index held in `mid` (rows mid-1 and mid+1 are in `up` and `down`), if any.
    let mut held: Option<usize> = None;
    for y in ys {
        let Some((xa, xb)) = span(y) else {
            continue;
        };
        match held {
            Some(p) if p + 1 == y => {
                std::mem::swap(&mut up, &mut mid);
                std::mem::swap(&mut mid, &mut down);
                gather(y + 1, &mut down);
            }
            _ => {
                gather(y - 1, &mut up);
                gather(y, &mut mid);
                gather(y + 1, &mut down);
            }
        }
        held = Some(y);
        let (k, o) = (xb - xa, xa - ga);
        let (left, centre, right) = (
            &mid[o - 1..o - 1 + k],
            &mid[o..o + k],
            &mid[o + 1..o + 1 + k],
        );
        let (above, below) = (&up[o..o + k], &down[o..o + k]);
        // |lap| <= 1020 fits i16, and the sums of a chunk of LAPLACIAN_CHUNK fit i32, so the
        // inner loop runs on 16- and 32-bit lanes (multiply-add pairs) and stays exact.
        let chunks = centre
            .chunks(LAPLACIAN_CHUNK)
            .zip(left.chunks(LAPLACIAN_CHUNK))
            .zip(right.chunks(LAPLACIAN_CHUNK))
            .zip(above.chunks(LAPLACIAN_CHUNK))
            .zip(below.chunks(LAPLACIAN_CHUNK));
        for ((((cc, lc), rc), uc), dc) in chunks {
            let (mut rs, mut rs2) = (0i32, 0i32);
            for ((((c, l), r), u), d) in cc.iter().zip(lc).zip(rc).zip(uc).zip(dc) {
                let lap = 4 * c - l - r - u - d;
                rs += i32::from(lap);
                rs2 += i32::from(lap) * i32::from(lap);
            }
            sum += i64::from(rs);
            sum2 += i64::from(rs2);
        }
        n += k as i64;
    }
    if n < 1 {
        return 0.0;
    }
    let (n, sum, sum2) = (n as f64, sum as f64, sum2 as f64);
    let mean = sum / n;
    (sum2 / n - mean * mean).max(0.0) as f32
}

/// The optic disc in working pixels.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Disc {
    pub x: f32,
    pub y: f32,
    pub radius: f32,
    pub confidence: f32,
    pub cup_to_disc: Option<Measured<f32>>,
}

/// Brightest large blob, found as the best centre-surround contrast over positions and scales:
/// for each candidate radius `ρ` (0.05-0.22 r), the mean of a disc-weighted brightness (closed
/// to erase vessels) in a square of the disc's area against a square ring from 1.3x to 2x its
/// half side, relative to the ring. The score peaks when `ρ` matches the disc.
fn find_disc(work: &[u8], w: usize, h: usize, g: &Geometry) -> Option<Disc> {
    // The disc is pale in green and blue too, while the red channel is bright everywhere.
    // In whole numbers (20 times 0.25 R + 0.6 G + 0.15 B), so its box sums are exact in u32;
    // every score below is a ratio, the same at any scale.
    let v = Plane::from_rgb(work, w, h, |r, gr, b| 5.0 * r + 12.0 * gr + 3.0 * b);
    let field = g.mask(w, h, 0.97, 1);
    let global = mean_where(&v, &field)?;
    // Outside the field, the local field mean: filters near the rim then do not see the black
    // surround as structure.
    let filled = v.fill_unmasked_with_box_mean(&field, ((0.1 * g.r) as usize).max(2), global);
    // Closing removes the vessels that cross the disc, so it reads as one bright blob.
    let rv = ((VESSEL_SE_RADIUS * g.r).round() as usize).max(2);
    let filled = filled.close(rv);
    let sat = SummedArea::new(&filled);
    let search = g.mask(w, h, 0.85, 2);

    // Integer half sides of the inner square (same area as the disc), the gap and the ring.
    let halves = |rho: f32| {
        (
            (0.886 * rho).round().max(1.0) as isize,
            (1.3 * 0.886 * rho).round() as isize,
            (2.0 * 0.886 * rho).round() as isize,
        )
    };
    let score = |x: usize, y: usize, (a, ga, oa): (isize, isize, isize)| -> f32 {
        let (x, y) = (x as isize, y as isize);
        let square = |half: isize| sat.sum(x - half, y - half, x + half + 1, y + half + 1);
        // The ring starts a little outside the inner square so that a bright patch inside the
        // disc, measured against the rest of the disc, does not score.
        let (si, ni) = square(a);
        let (sg, ng) = square(ga);
        let (so, no) = square(oa);
        if ni < 1.0 || no - ng < 1.0 {
            return f32::NEG_INFINITY;
        }
        let inner = si / ni;
        let ring = (so - sg) / (no - ng);
        ((inner - ring) / ring.max(1.0)) as f32
    };
    let scales: Vec<f32> = (0..10).map(|k| 0.05 * g.r * 1.17f32.powi(k)).collect();
    // Coarse pass on a grid a third of the inner half side apart, and at least 4 px (the score
    // is a box mean of that size, so it changes little between grid points), then a fine pass
    // around the winner. 4 px instead of 2 at the two smallest scales halved the search; the
    // facts of 200 renders came out identical (`examples/facts_snapshot`).
    let step_of = |rho: f32| (halves(rho).0 as usize / 3).max(4);
    let consider = |best: &mut Option<(usize, usize, f32, f32)>, x: usize, y: usize, rho: f32| {
        if !search.get(y * w + x).copied().unwrap_or(false) {
            return;
        }
        let s = score(x, y, halves(rho));
        if best.is_none_or(|b| s > b.3) {
            *best = Some((x, y, rho, s));
        }
    };
    let mut best = None;
    for &rho in &scales {
        let hs = halves(rho);
        let step = step_of(rho);
        for y in (0..h).step_by(step) {
            for x in (0..w).step_by(step) {
                if !search.get(y * w + x).copied().unwrap_or(false) {
                    continue;
                }
                let s = score(x, y, hs);
                if best.is_none_or(|b: (usize, usize, f32, f32)| s > b.3) {
                    best = Some((x, y, rho, s));
                }
            }
        }
    }
    let (bx, by, brho, _) = best?;
    let reach = step_of(brho);
    for k in [0.88f32, 0.94, 1.0, 1.06, 1.12] {
        for y in by.saturating_sub(reach)..(by + reach + 1).min(h) {
            for x in bx.saturating_sub(reach)..(bx + reach + 1).min(w) {
                consider(&mut best, x, y, brho * k);
            }
        }
    }
    let (px, py, radius, prominence) = best?;
    if prominence.is_nan() || prominence < DISC_MIN_PROMINENCE {
        return None;
    }
    let (px, py) = (px as f32, py as f32);
    // The scale search favours radii a little under the true one (the ring starts outside the
    // inner square); size the disc by 16 rays to its half-contrast edge on the closed image.
    let (radius, disc_level) = {
        let a = (0.886 * radius).round().max(1.0) as isize;
        let (xi, yi) = (px as isize, py as isize);
        let (si, ni) = sat.sum(xi - a, yi - a, xi + a + 1, yi + a + 1);
        let inner = if ni > 0.0 { (si / ni) as f32 } else { 0.0 };
        let ring = inner / (1.0 + prominence);
        let level = ring + 0.5 * (inner - ring);
        let mut ds = rays(&filled, px, py, level, 0.35 * g.r);
        ds.sort_unstable_by(f32::total_cmp);
        let median = ds.get(ds.len() / 2).copied().unwrap_or(radius);
        let sized = if median >= 0.7 * radius && median <= 1.6 * radius {
            median
        } else {
            radius
        };
        (sized, level)
    };
    let confidence = ((prominence / 0.4).clamp(0.0, 1.0) * 0.9).clamp(0.0, 1.0);
    // The 3x3 box mean of the closed image, evaluated only where the cup is measured.
    let fine = |x: isize, y: isize| filled.box_mean_at(x, y, 1);
    let cup_to_disc = cup_to_disc(&fine, px, py, radius, disc_level).map(|value| Measured {
        value,
        confidence: (0.25 * confidence).clamp(0.0, 1.0),
    });
    Some(Disc {
        x: px,
        y: py,
        radius,
        confidence,
        cup_to_disc,
    })
}

/// Distance along 16 rays from `(x, y)` to the first sample below `level`.
fn rays(p: &Plane, x: f32, y: f32, level: f32, max_r: f32) -> Vec<f32> {
    (0..16)
        .map(|k| {
            let a = k as f32 * std::f32::consts::TAU / 16.0;
            let (dx, dy) = (a.cos(), a.sin());
            let mut d = 1.0;
            while d < max_r
                && p.get_clamped((x + dx * d).round() as isize, (y + dy * d).round() as isize)
                    >= level
            {
                d += 1.0;
            }
            d
        })
        .collect()
}

/// Vertical cup-to-disc ratio: Otsu split of the brightness of disc pixels (those above the
/// disc's half-contrast `level`, so background caught by an oversized radius does not count);
/// the cup is the bright class, measured as its vertical extent in a central column band.
fn cup_to_disc(
    p: &impl Fn(isize, isize) -> f32,
    cx: f32,
    cy: f32,
    rd: f32,
    level: f32,
) -> Option<f32> {
    let mut values = Vec::new();
    let (x0, x1) = ((cx - rd).floor() as isize, (cx + rd).ceil() as isize);
    let (y0, y1) = ((cy - rd).floor() as isize, (cy + rd).ceil() as isize);
    for y in y0..=y1 {
        for x in x0..=x1 {
            let v = p(x, y);
            if (x as f32 - cx).hypot(y as f32 - cy) <= rd && v >= level {
                values.push(v);
            }
        }
    }
    let t = otsu(&values)?;
    let (hi, lo): (Vec<f32>, Vec<f32>) = values.iter().partition(|v| **v > t);
    let mean = |v: &[f32]| v.iter().sum::<f32>() / v.len().max(1) as f32;
    if hi.is_empty() || lo.is_empty() || (mean(&hi) - mean(&lo)) < 0.04 * mean(&values) {
        return None;
    }
    let band = (0.3 * rd).max(1.0);
    let (mut top, mut bottom) = (f32::INFINITY, f32::NEG_INFINITY);
    for y in y0..=y1 {
        for x in ((cx - band).round() as isize)..=((cx + band).round() as isize) {
            if (x as f32 - cx).hypot(y as f32 - cy) <= rd && p(x, y) > t {
                top = top.min(y as f32);
                bottom = bottom.max(y as f32);
            }
        }
    }
    if !top.is_finite() {
        return None;
    }
    Some(((bottom - top + 1.0) / (2.0 * rd)).clamp(0.0, 1.0))
}

/// Otsu threshold of a set of values.
fn otsu(values: &[f32]) -> Option<f32> {
    if values.len() < 8 {
        return None;
    }
    let lo = values.iter().copied().fold(f32::INFINITY, f32::min);
    let hi = values.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if hi.is_nan() || lo.is_nan() || hi <= lo {
        return None;
    }
    let bins = 64usize;
    let mut hist = vec![0f64; bins];
    for v in values {
        let b = (((v - lo) / (hi - lo)) * (bins as f32 - 1.0)).round() as usize;
        if let Some(c) = hist.get_mut(b.min(bins - 1)) {
            *c += 1.0;
        }
    }
    let total: f64 = hist.iter().sum();
    let sum_all: f64 = hist.iter().enumerate().map(|(i, c)| i as f64 * c).sum();
    let (mut w0, mut s0, mut best, mut best_t) = (0.0f64, 0.0f64, -1.0f64, 0usize);
    for (i, c) in hist.iter().enumerate() {
        w0 += c;
        s0 += i as f64 * c;
        let w1 = total - w0;
        if w0 == 0.0 || w1 == 0.0 {
            continue;
        }
        let m0 = s0 / w0;
        let m1 = (sum_all - s0) / w1;
        let between = w0 * w1 * (m0 - m1).powi(2);
        if between > best {
            best = between;
            best_t = i;
        }
    }
    Some(lo + (best_t as f32 + 0.5) / (bins as f32 - 1.0) * (hi - lo))
}

fn mean_where(p: &Plane, mask: &[bool]) -> Option<f32> {
    let (mut s, mut n) = (0.0f64, 0usize);
    for (v, m) in p.data.iter().zip(mask) {
        if *m {
            s += f64::from(*v);
            n += 1;
        }
    }
    (n > 0).then(|| (s / n as f64) as f32)
}

struct VesselResult {
    density: Option<Measured<f32>>,
    tortuosity: Option<Measured<f32>>,
    fractal: Option<Measured<f32>>,
    bright: Option<Measured<u32>>,
    dark: Option<Measured<u32>>,
}

/// Vessel map by black top-hat (closing minus image) of the green channel, relative to the
/// closing and thresholded above the field's own noise level; lesion candidates are compact
/// blobs in a coarser black top-hat (dark) and in a white top-hat (bright) away from the disc.
fn vessels_and_lesions(green: &Plane, g: &Geometry, disc: Option<&Disc>) -> VesselResult {
    let (w, h) = (green.w, green.h);
    let none = VesselResult {
        density: None,
        tortuosity: None,
        fractal: None,
        bright: None,
        dark: None,
    };
    let field = g.mask(w, h, 0.97, 1);
    let Some(global) = mean_where(green, &field) else {
        return none;
    };
    if global < 4.0 {
        return none;
    }
    // The local field mean outside the field, as for the disc.
    let filled = green.fill_unmasked_with_box_mean(&field, ((0.1 * g.r) as usize).max(2), global);
    let gs = filled.box_mean(1);

    let rv = ((VESSEL_SE_RADIUS * g.r).round() as usize).max(2);
    let analysis = g.mask(w, h, 0.92, rv + 1);
    let analysis_px = analysis.iter().filter(|m| **m).count();
    if analysis_px < 100 {
        return none;
    }
    let closed = gs.close(rv);
    let rel: Vec<f32> = closed
        .data
        .iter()
        .zip(&gs.data)
        .map(|(c, v)| (c - v) / c.max(1.0))
        .collect();
    let Some((med, sigma)) = median_and_sigma(&rel, &analysis) else {
        return none;
    };
    let t = (med + VESSEL_NOISE_SIGMAS * sigma).max(VESSEL_MIN_CONTRAST);
    // Half-maximum width: a pixel belongs to a vessel only where it is at least half as dark as
    // the darkest point of the vessel nearby, not out on its blurred edges.
    let local_max = Plane {
        w,
        h,
        data: rel.clone(),
    }
    .dilate((rv / 2).max(1));
    let raw: Vec<bool> = rel
        .iter()
        .zip(&analysis)
        .zip(&local_max.data)
        .map(|((v, m), lm)| *m && *v > t && *v >= 0.5 * lm)
        .collect();
    // Hysteresis: a weak component counts only if it holds a strong pixel, so choroidal
    // texture (weak everywhere) drops out while faint vessel ends stay attached to their trunk.
    let strong_t = (med + VESSEL_STRONG_SIGMAS * sigma).max(t);
    let (comps, labels) = components(&raw, w, h);
    let mut has_strong = vec![false; comps.len()];
    for (l, v) in labels.iter().zip(&rel) {
        if *l > 0
            && *v > strong_t
            && let Some(s) = has_strong.get_mut(*l as usize - 1)
        {
            *s = true;
        }
    }
    let min_area = ((VESSEL_MIN_AREA * g.r * g.r).round() as usize).max(4);
    let keep: Vec<bool> = comps
        .iter()
        .zip(&has_strong)
        .map(|(c, s)| *s && c.area >= min_area)
        .collect();
    let vessel_map: Vec<bool> = labels
        .iter()
        .map(|l| *l > 0 && keep.get(*l as usize - 1).copied().unwrap_or(false))
        .collect();
    let vessel_px = vessel_map.iter().filter(|v| **v).count();
    let density = vessel_px as f32 / analysis_px as f32;
    // Noise-limited thresholds on a poor image make the map meaningless.
    let confidence = if t > 0.25 { 0.2 } else { 0.6 };
    let fractal = if vessel_px >= 200 {
        box_counting_dimension(&vessel_map, w, h, g).map(|value| Measured {
            value,
            confidence: 0.5,
        })
    } else {
        None
    };

    let tortuosity = if vessel_px >= 200 {
        crate::tortuosity::tortuosity(&vessel_map, w, h, g.r).map(|(value, c)| Measured {
            value,
            // A noise-limited map (see `confidence` above) makes its skeleton unreliable too.
            confidence: c.min(confidence),
        })
    } else {
        None
    };

    // Lesion candidates stay away from the disc, whose rim and vessels mimic both kinds.
    let near_disc = |c: &Component| {
        disc.is_some_and(|d| {
            let (x, y) = c.centroid();
            (x - d.x).hypot(y - d.y) < 1.6 * d.radius.max(0.1 * g.r)
        })
    };
    let max_blob = (LESION_MAX_RADIUS * g.r).powi(2) * std::f32::consts::PI;

    let rl = ((DARK_LESION_SE_RADIUS * g.r).round() as usize).max(rv + 1);
    let closed_l = gs.close(rl);
    let dark_rel: Vec<f32> = closed_l
        .data
        .iter()
        .zip(&gs.data)
        .map(|(c, v)| (c - v) / c.max(1.0))
        .collect();
    let dark = median_and_sigma(&dark_rel, &analysis).map(|(dm, ds)| {
        let dark_t = (dm + DARK_NOISE_SIGMAS * ds).max(DARK_LESION_MIN_CONTRAST);
        let map: Vec<bool> = dark_rel
            .iter()
            .zip(&analysis)
            .map(|(v, m)| *m && *v > dark_t)
            .collect();
        let (dc, dl) = components(&map, w, h);
        // A blob touching the vessel tree is most likely a piece of vessel (a crossing, a bend).
        let mut on_tree = vec![false; dc.len()];
        for ((l, vl), v) in dl.iter().zip(&labels).zip(&vessel_map) {
            if *l > 0
                && *v
                && comps
                    .get(*vl as usize - 1)
                    .is_some_and(|c| !c.is_blob() || c.area as f32 > max_blob)
                && let Some(t) = on_tree.get_mut(*l as usize - 1)
            {
                *t = true;
            }
        }
        dc.iter()
            .zip(&on_tree)
            .filter(|(c, t)| {
                !**t && c.area >= 3 && (c.area as f32) <= max_blob && c.is_blob() && !near_disc(c)
            })
            .count() as u32
    });

    let rb = ((BRIGHT_LESION_SE_RADIUS * g.r).round() as usize).max(2);
    // On the vessel-closed image, so background between two vessels does not look bright.
    let opened = closed.open(rb);
    let white: Vec<f32> = closed
        .data
        .iter()
        .zip(&opened.data)
        .map(|(v, o)| (v - o) / o.max(1.0))
        .collect();
    let bright = median_and_sigma(&white, &analysis).map(|(bm, bs)| {
        let bt = (bm + BRIGHT_NOISE_SIGMAS * bs).max(BRIGHT_LESION_MIN_CONTRAST);
        let map: Vec<bool> = white
            .iter()
            .zip(&analysis)
            .map(|(v, m)| *m && *v > bt)
            .collect();
        let (bc, _) = components(&map, w, h);
        bc.iter()
            .filter(|c| c.area >= 3 && (c.area as f32) <= max_blob && !near_disc(c))
            .count() as u32
    });

    VesselResult {
        density: Some(Measured {
            value: density,
            confidence,
        }),
        tortuosity,
        fractal,
        bright: bright.map(|value| Measured {
            value,
            confidence: 0.3,
        }),
        dark: dark.map(|value| Measured {
            value,
            confidence: 0.3,
        }),
    }
}

/// Box-counting dimension over box sides 2..=64 working pixels (scaled to the field size),
/// least-squares slope of `ln N(s)` against `ln(1/s)`.
fn box_counting_dimension(map: &[bool], w: usize, h: usize, g: &Geometry) -> Option<f32> {
    let (mut xs, mut ys) = (Vec::new(), Vec::new());
    let mut s = 1usize;
    let limit = ((g.r / 4.0) as usize).max(4);
    // A pyramid: the occupied boxes of side 2s are the 2x2 ORs of those of side s, so each
    // level costs a quarter of the one before (not a pass over every pixel per box size).
    let (mut bw, mut bh) = (w, h);
    let mut boxes: Vec<bool> = map.to_vec();
    boxes.resize(w * h, false);
    while s * 2 <= limit && bw > 0 && bh > 0 {
        let (nw, nh) = (bw.div_ceil(2), bh.div_ceil(2));
        let mut next = vec![false; nw * nh];
        for (y, row) in boxes.chunks_exact(bw).enumerate() {
            let dst = &mut next[(y / 2) * nw..(y / 2 + 1) * nw];
            for (x, v) in row.iter().enumerate() {
                if *v {
                    dst[x / 2] = true;
                }
            }
        }
        (bw, bh, boxes, s) = (nw, nh, next, s * 2);
        let n = boxes.iter().filter(|b| **b).count();
        if n > 0 {
            xs.push(-(s as f64).ln());
            ys.push((n as f64).ln());
        }
    }
    if xs.len() < 3 {
        return None;
    }
    let n = xs.len() as f64;
    let mx = xs.iter().sum::<f64>() / n;
    let my = ys.iter().sum::<f64>() / n;
    let sxy: f64 = xs.iter().zip(&ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    let sxx: f64 = xs.iter().map(|x| (x - mx).powi(2)).sum();
    (sxx > 0.0).then(|| (sxy / sxx) as f32)
}

/// 64-bit DCT perceptual hash: 32x32 area-averaged luminance, 2-D DCT-II, the 8x8 lowest
/// frequencies compared with their median (DC excluded from the median), row-major, MSB first.
pub(crate) fn perceptual_hash(lum: &Plane) -> u64 {
    const N: usize = 32;
    let mut small = [[0f64; N]; N];
    for (j, row) in small.iter_mut().enumerate() {
        let (ya, yb) = (j * lum.h / N, ((j + 1) * lum.h / N).max(j * lum.h / N + 1));
        for (i, cell) in row.iter_mut().enumerate() {
            let (xa, xb) = (i * lum.w / N, ((i + 1) * lum.w / N).max(i * lum.w / N + 1));
            let (mut s, mut c) = (0.0, 0.0);
            for y in ya..yb.min(lum.h) {
                for x in xa..xb.min(lum.w) {
                    s += f64::from(lum.get(x, y));
                    c += 1.0;
                }
            }
            *cell = if c > 0.0 { s / c } else { 0.0 };
        }
    }
    let cos: Vec<Vec<f64>> = (0..8)
        .map(|u| {
            (0..N)
                .map(|x| {
                    ((2 * x + 1) as f64 * u as f64 * std::f64::consts::PI / (2 * N) as f64).cos()
                })
                .collect()
        })
        .collect();
    let mut coeffs = [0f64; 64];
    for v in 0..8 {
        for u in 0..8 {
            let (cu, cv) = (&cos[u], &cos[v]);
            let mut s = 0.0;
            for (y, row) in small.iter().enumerate() {
                let cy = cv.get(y).copied().unwrap_or(0.0);
                for (x, val) in row.iter().enumerate() {
                    s += val * cu.get(x).copied().unwrap_or(0.0) * cy;
                }
            }
            if let Some(c) = coeffs.get_mut(v * 8 + u) {
                *c = s;
            }
        }
    }
    let mut ac: Vec<f64> = coeffs.iter().skip(1).copied().collect();
    ac.sort_unstable_by(f64::total_cmp);
    let median = ac.get(ac.len() / 2).copied().unwrap_or(0.0);
    coeffs
        .iter()
        .fold(0u64, |h, c| (h << 1) | u64::from(*c > median))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grade_thresholds_order() {
        assert_eq!(grade(0.35, 0.1, 100.0, 0.9), QualityGrade::Good);
        assert_eq!(grade(0.02, 0.1, 100.0, 0.9), QualityGrade::Reject);
        assert_eq!(
            grade(
                0.35,
                0.1,
                (SHARPNESS_REJECT_BELOW + SHARPNESS_GOOD_FROM) / 2.0,
                0.9
            ),
            QualityGrade::Usable
        );
        assert_eq!(grade(0.35, 0.1, 0.0, 0.9), QualityGrade::Reject);
    }

    /// The per-pixel reference: Laplacian variance in `f64` over pixels within 0.9 r, inside
    /// the valid area and one pixel from its edges and the frame's.
    fn naive_laplacian_variance(rgb: &[u8], w: usize, h: usize, g: &Geometry) -> f32 {
        let (x0, y0, x1, y1) = g.valid;
        let r2 = (g.r * 0.9).powi(2);
        let gr = |x: usize, y: usize| f64::from(rgb[(y * w + x) * 3 + 1]);
        let (mut n, mut s, mut s2) = (0.0, 0.0, 0.0);
        for y in (y0 + 1).max(1)..y1.min(h - 1).saturating_sub(1) {
            for x in (x0 + 1).max(1)..x1.saturating_sub(1).min(w - 1) {
                if (x as f32 - g.cx).powi(2) + (y as f32 - g.cy).powi(2) > r2 {
                    continue;
                }
                let lap =
                    4.0 * gr(x, y) - gr(x - 1, y) - gr(x + 1, y) - gr(x, y - 1) - gr(x, y + 1);
                n += 1.0;
                s += lap;
                s2 += lap * lap;
            }
        }
        if n < 1.0 {
            return 0.0;
        }
        let m = s / n;
        (s2 / n - m * m).max(0.0) as f32
    }

    #[test]
    fn laplacian_variance_matches_per_pixel_reference() {
        let (w, h) = (57, 41);
        let rgb: Vec<u8> = (0..w * h * 3)
            .map(|i| ((i * 7919 + i / 5) % 253) as u8)
            .collect();
        for (cx, cy, r, valid) in [
            (28.0, 20.0, 18.0, (0, 0, w, h)),
            (28.0, 20.0, 30.0, (3, 5, 50, 38)),
            (10.0, 35.0, 12.0, (0, 0, w, h)),
            (28.0, 20.0, 0.5, (0, 0, w, h)),
        ] {
            let g = Geometry { cx, cy, r, valid };
            let (got, want) = (
                laplacian_variance(&rgb, w, h, &g),
                naive_laplacian_variance(&rgb, w, h, &g),
            );
            assert!(
                (got - want).abs() <= 1e-3 * want.max(1.0),
                "{got} vs {want}"
            );
        }
    }

    #[test]
    fn otsu_splits_two_levels() {
        let mut v = vec![10.0f32; 50];
        v.extend(vec![200.0f32; 30]);
        let t = otsu(&v).unwrap();
        assert!(t > 10.0 && t < 200.0);
        assert!(otsu(&[1.0; 20]).is_none());
    }

    #[test]
    fn phash_is_stable_and_discriminates() {
        let grad = Plane {
            w: 64,
            h: 64,
            data: (0..64 * 64).map(|i| (i % 64) as f32 * 4.0).collect(),
        };
        let other = Plane {
            w: 64,
            h: 64,
            data: (0..64 * 64).map(|i| (i / 64) as f32 * 4.0).collect(),
        };
        assert_eq!(perceptual_hash(&grad), perceptual_hash(&grad.clone()));
        assert!((perceptual_hash(&grad) ^ perceptual_hash(&other)).count_ones() > 8);
    }

    #[test]
    fn fractal_dimension_of_a_filled_square_is_two_and_of_a_line_one() {
        let (w, h) = (256, 256);
        let g = Geometry {
            cx: 127.5,
            cy: 127.5,
            r: 128.0,
            valid: (0, 0, w, h),
        };
        let full = vec![true; w * h];
        let d = box_counting_dimension(&full, w, h, &g).unwrap();
        assert!((d - 2.0).abs() < 0.05, "{d}");
        let mut line = vec![false; w * h];
        for x in 0..w {
            line[100 * w + x] = true;
        }
        let d = box_counting_dimension(&line, w, h, &g).unwrap();
        assert!((d - 1.0).abs() < 0.05, "{d}");
    }
}
