//! Finding the circular field of view (FOV) of a fundus photograph.
//!
//! Method: on a small working copy, smooth `max(R, G, B)` with a 3x3 box, threshold it between
//! the dark background level and the field level, take the first and last "field" pixel of every
//! row and column (a run of [`MIN_RUN`] pixels, so specks do not count) as edge points, drop edge
//! points that lie on the frame border (the field is clipped there, e.g. at the top and bottom of
//! a 3:2 photograph), and fit a circle to the rest by least squares (Kasa), refitting twice
//! without outliers so a notch or burnt-in text does not pull the circle.

use crate::plane::components;

/// Minimum run of field pixels that counts as the field edge (working pixels).
const MIN_RUN: usize = 3;
/// Fewest edge points a fit may use.
const MIN_POINTS: usize = 12;
/// Below this 90th-percentile brightness (0-255) the frame is treated as black.
const MIN_FIELD_LEVEL: f32 = 12.0;
/// Smallest accepted radius, as a fraction of the shorter frame side.
const MIN_RADIUS_FRACTION: f32 = 0.15;
/// Fraction of field pixels the circle must contain.
const MIN_MASK_INSIDE: f32 = 0.85;
/// Fraction of the (in-frame) circle that must be field pixels.
const MIN_CIRCLE_FILLED: f32 = 0.7;

/// A circle in the pixel coordinates of the image it was found in (pixel centres at integers).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Circle {
    pub cx: f32,
    pub cy: f32,
    pub r: f32,
}

/// Finds the field of view in an RGB8 buffer of `w x h`. `None` when there is no plausible
/// circular field (black frame, no edge, or a fit that does not explain the bright region).
pub(crate) fn find_fov(rgb: &[u8], w: usize, h: usize) -> Option<Circle> {
    if w < 8 || h < 8 {
        return None;
    }
    if rgb.len() < w * h * 3 {
        return None;
    }
    // Every 3x3 mean of 8-bit values is a multiple of 1/36 (4, 6 or 9 pixels are averaged),
    // so the smoothed image is kept as exact integer keys `36 × mean`, and its value as f32 is
    // `key / 36` rounded once (the same as `sum / count` rounded once).
    let smooth = smoothed_max_keys(rgb, w, h);
    let value = |key: usize| (key as f64 / 36.0) as f32;
    // Two order statistics from a histogram of the keys.
    let mut hist = vec![0u32; MAX_KEY + 1];
    for key in &smooth {
        if let Some(c) = hist.get_mut(usize::from(*key)) {
            *c += 1;
        }
    }
    let pct = |p: f32| {
        let i = ((smooth.len() as f32 - 1.0) * p).round() as u64;
        let mut seen = 0u64;
        for (key, c) in hist.iter().enumerate() {
            seen += u64::from(*c);
            if seen > i {
                return value(key);
            }
        }
        0.0
    };
    let (low, high) = (pct(0.02), pct(0.90));
    if high < MIN_FIELD_LEVEL {
        return None;
    }
    if low > 0.5 * high {
        // No dark surround at all: the field fills the frame (a tight crop). Use the frame's
        // circumscribed circle so the whole frame is kept.
        return full_frame(w, h);
    }
    let threshold = low + (0.2 * (high - low)).max(8.0);
    // `value` grows with the key, so `value(key) > threshold` is `key >= first`.
    let first = (0..=MAX_KEY)
        .find(|k| value(*k) > threshold)
        .unwrap_or(MAX_KEY + 1);
    let bright: Vec<bool> = smooth.iter().map(|k| usize::from(*k) >= first).collect();
    // Keep the largest bright region: burnt-in text and labels in the surround are separate.
    let (comps, labels) = components(&bright, w, h);
    let largest = comps
        .iter()
        .enumerate()
        .max_by_key(|(_, c)| c.area)
        .map(|(i, _)| i as u32 + 1)?;
    let mask: Vec<bool> = labels.iter().map(|l| *l == largest).collect();
    let inside = mask.iter().filter(|m| **m).count();

    let at = |x: usize, y: usize| mask.get(y * w + x).copied().unwrap_or(false);
    let mut points: Vec<(f32, f32)> = Vec::new();
    for y in 0..h {
        if let Some(x) = first_run(w, |i| at(i, y)) {
            if x > 0 {
                points.push((x as f32 - 0.5, y as f32));
            }
            if let Some(xr) = first_run(w, |i| at(w - 1 - i, y)) {
                let xr = w - 1 - xr;
                if xr + 1 < w {
                    points.push((xr as f32 + 0.5, y as f32));
                }
            }
        }
    }
    for x in 0..w {
        if let Some(y) = first_run(h, |i| at(x, i)) {
            if y > 0 {
                points.push((x as f32, y as f32 - 0.5));
            }
            if let Some(yb) = first_run(h, |i| at(x, h - 1 - i)) {
                let yb = h - 1 - yb;
                if yb + 1 < h {
                    points.push((x as f32, yb as f32 + 0.5));
                }
            }
        }
    }
    if points.len() < MIN_POINTS {
        return if inside as f32 > 0.9 * (w * h) as f32 {
            full_frame(w, h)
        } else {
            None
        };
    }

    let mut circle = fit_circle(&points)?;
    for _ in 0..5 {
        let mut residuals: Vec<f32> = points
            .iter()
            .map(|(x, y)| ((x - circle.cx).hypot(y - circle.cy) - circle.r).abs())
            .collect();
        let mid = residuals.len() / 2;
        let (_, med, _) = residuals.select_nth_unstable_by(mid, f32::total_cmp);
        let tolerance = (3.0 * 1.4826 * *med).max(1.5);
        let kept: Vec<(f32, f32)> = points
            .iter()
            .copied()
            .filter(|(x, y)| ((x - circle.cx).hypot(y - circle.cy) - circle.r).abs() <= tolerance)
            .collect();
        if kept.len() < MIN_POINTS || kept.len() == points.len() {
            break;
        }
        points = kept;
        circle = fit_circle(&points)?;
    }

    if !circle.r.is_finite()
        || circle.r < MIN_RADIUS_FRACTION * w.min(h) as f32
        || circle.cx < 0.0
        || circle.cy < 0.0
        || circle.cx > w as f32
        || circle.cy > h as f32
    {
        return None;
    }
    // The circle must explain the bright region: most field pixels inside it, and most of it
    // (within the frame) bright.
    let (mut mask_in, mut circle_px, mut circle_filled) = (0usize, 0usize, 0usize);
    let r_out2 = (circle.r * 1.05).powi(2);
    let r_in2 = (circle.r * 0.95).powi(2);
    for (y, row) in mask.chunks_exact(w).enumerate() {
        let count = |(a, b): (usize, usize)| row[a..b].iter().filter(|m| **m).count();
        let outer = row_span(circle.cx, circle.cy, r_out2, y, w);
        mask_in += count(outer);
        let inner = row_span(circle.cx, circle.cy, r_in2, y, w);
        circle_px += inner.1 - inner.0;
        circle_filled += count(inner);
    }
    if (mask_in as f32) < MIN_MASK_INSIDE * inside as f32
        || (circle_filled as f32) < MIN_CIRCLE_FILLED * circle_px as f32
    {
        return None;
    }
    Some(circle)
}

/// The columns `[a, b)` of row `y` (in a row of `w`) within `sqrt(r2)` of `(cx, cy)`.
pub(crate) fn row_span(cx: f32, cy: f32, r2: f32, y: usize, w: usize) -> (usize, usize) {
    let rest = r2 - (y as f32 - cy).powi(2);
    if rest < 0.0 {
        return (0, 0);
    }
    let half = rest.sqrt();
    let a = (cx - half).ceil().clamp(0.0, w as f32) as usize;
    let b = ((cx + half).floor() + 1.0).clamp(0.0, w as f32) as usize;
    (a, b.max(a))
}

/// Largest key of [`smoothed_max_keys`]: 36 × 255.
const MAX_KEY: usize = 36 * 255;

/// `36 ×` the mean of `max(R, G, B)` over each pixel's 3x3 neighbourhood (clipped at the frame
/// border), exact in integers: the 3-sums along the rows, then of three rows, scaled by
/// `36 / count` (count 4, 6 or 9). Needs `w, h >= 2`.
fn smoothed_max_keys(rgb: &[u8], w: usize, h: usize) -> Vec<u16> {
    let raw: Vec<u16> = rgb
        .chunks_exact(3)
        .take(w * h)
        .map(|p| u16::from(p[0].max(p[1]).max(p[2])))
        .collect();
    if w < 2 || h < 2 || raw.len() < w * h {
        return vec![0; w * h];
    }
    let mut hsum = vec![0u16; w * h];
    for (src, dst) in raw.chunks_exact(w).zip(hsum.chunks_exact_mut(w)) {
        dst[0] = src[0] + src[1];
        dst[w - 1] = src[w - 2] + src[w - 1];
        for (d, ((a, b), c)) in dst[1..w - 1]
            .iter_mut()
            .zip(src.iter().zip(&src[1..]).zip(&src[2..]))
        {
            *d = a + b + c;
        }
    }
    let mut keys = vec![0u16; w * h];
    for (y, out) in keys.chunks_exact_mut(w).enumerate() {
        let rows = &hsum[y.saturating_sub(1) * w..(y + 2).min(h) * w];
        let ny = rows.len() / w;
        let (mid, edge) = if ny == 3 { (4, 6) } else { (6, 9) };
        let mut it = rows.chunks_exact(w);
        if let Some(first) = it.next() {
            out.copy_from_slice(first);
        }
        for row in it {
            for (o, v) in out.iter_mut().zip(row) {
                *o += v;
            }
        }
        for o in out[1..w - 1].iter_mut() {
            *o *= mid;
        }
        out[0] *= edge;
        out[w - 1] *= edge;
    }
    keys
}

fn full_frame(w: usize, h: usize) -> Option<Circle> {
    Some(Circle {
        cx: (w as f32 - 1.0) / 2.0,
        cy: (h as f32 - 1.0) / 2.0,
        r: w.max(h) as f32 / 2.0,
    })
}

/// Index of the first position starting a run of [`MIN_RUN`] set values.
fn first_run(n: usize, set: impl Fn(usize) -> bool) -> Option<usize> {
    let mut run = 0;
    for i in 0..n {
        if set(i) {
            run += 1;
            if run >= MIN_RUN.min(n) {
                return Some(i + 1 - run);
            }
        } else {
            run = 0;
        }
    }
    None
}

/// Algebraic least-squares circle fit (Kasa): solves `x² + y² + D x + E y + F = 0`.
fn fit_circle(points: &[(f32, f32)]) -> Option<Circle> {
    if points.len() < 3 {
        return None;
    }
    // Centre the coordinates for numerical stability.
    let n = points.len() as f64;
    let mx = points.iter().map(|p| f64::from(p.0)).sum::<f64>() / n;
    let my = points.iter().map(|p| f64::from(p.1)).sum::<f64>() / n;
    let (mut suu, mut svv, mut suv, mut suuu, mut svvv, mut suvv, mut svuu) =
        (0.0f64, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    for (x, y) in points {
        let u = f64::from(*x) - mx;
        let v = f64::from(*y) - my;
        suu += u * u;
        svv += v * v;
        suv += u * v;
        suuu += u * u * u;
        svvv += v * v * v;
        suvv += u * v * v;
        svuu += v * u * u;
    }
    // Normal equations of the centred problem (Bullock's formulation).
    let a1 = suu;
    let b1 = suv;
    let c1 = 0.5 * (suuu + suvv);
    let a2 = suv;
    let b2 = svv;
    let c2 = 0.5 * (svvv + svuu);
    let det = a1 * b2 - a2 * b1;
    if det.abs() < 1e-9 {
        return None;
    }
    let uc = (c1 * b2 - c2 * b1) / det;
    let vc = (a1 * c2 - a2 * c1) / det;
    let r2 = uc * uc + vc * vc + (suu + svv) / n;
    if !(r2.is_finite() && r2 > 0.0) {
        return None;
    }
    Some(Circle {
        cx: (uc + mx) as f32,
        cy: (vc + my) as f32,
        r: r2.sqrt() as f32,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disc_image(w: usize, h: usize, cx: f32, cy: f32, r: f32) -> Vec<u8> {
        let mut v = vec![0u8; w * h * 3];
        for y in 0..h {
            for x in 0..w {
                if (x as f32 - cx).hypot(y as f32 - cy) <= r {
                    let i = (y * w + x) * 3;
                    v[i] = 180;
                    v[i + 1] = 80;
                    v[i + 2] = 40;
                }
            }
        }
        v
    }

    #[test]
    fn fits_an_exact_circle() {
        let pts: Vec<(f32, f32)> = (0..36)
            .map(|i| {
                let a = i as f32 * 10f32.to_radians();
                (50.0 + 20.0 * a.cos(), 40.0 + 20.0 * a.sin())
            })
            .collect();
        let c = fit_circle(&pts).unwrap();
        assert!((c.cx - 50.0).abs() < 1e-3 && (c.cy - 40.0).abs() < 1e-3);
        assert!((c.r - 20.0).abs() < 1e-3);
    }

    #[test]
    fn finds_a_clipped_field() {
        // A 3:2 frame whose field is cut at the top and bottom.
        let (w, h) = (300, 200);
        let img = disc_image(w, h, 150.0, 100.0, 120.0);
        let c = find_fov(&img, w, h).unwrap();
        assert!((c.cx - 150.0).abs() < 1.5, "{c:?}");
        assert!((c.cy - 100.0).abs() < 1.5, "{c:?}");
        assert!((c.r - 120.0).abs() < 1.5, "{c:?}");
    }

    #[test]
    fn ignores_a_notch_and_burnt_in_text() {
        let (w, h) = (300, 240);
        let mut img = disc_image(w, h, 140.0, 120.0, 100.0);
        // notch at the right edge
        for y in 110..130 {
            for x in 232..241 {
                let i = (y * w + x) * 3;
                img[i..i + 3].copy_from_slice(&[0, 0, 0]);
            }
        }
        // white text in the corner
        for y in 5..15 {
            for x in 260..295 {
                let i = (y * w + x) * 3;
                img[i..i + 3].copy_from_slice(&[255, 255, 255]);
            }
        }
        let c = find_fov(&img, w, h).unwrap();
        assert!((c.cx - 140.0).abs() < 1.5, "{c:?}");
        assert!((c.cy - 120.0).abs() < 1.5, "{c:?}");
        assert!((c.r - 100.0).abs() < 1.5, "{c:?}");
    }

    #[test]
    fn black_frame_has_no_field() {
        assert!(find_fov(&vec![3u8; 100 * 80 * 3], 100, 80).is_none());
        assert!(find_fov(&[0u8; 12], 2, 2).is_none());
    }

    #[test]
    fn a_full_bright_frame_keeps_the_whole_frame() {
        let c = find_fov(&vec![150u8; 100 * 80 * 3], 100, 80).unwrap();
        assert!(c.r >= 50.0);
    }
}
