//! Rasterising a planned scene: fundus colour with vignetting and choroidal texture, macula and
//! fovea, optic disc and cup, anti-aliased vessels, lesions, the circular field of view on a
//! near-black background, and sensor noise. Runs in parallel over bands of rows; every value
//! depends only on the scene and the pixel, so the bytes do not depend on scheduling.

use crate::lesions::smoothstep;
use crate::noise::{ValueNoise, hash2, mix64, signed};
use crate::scene::Scene;
use crate::vessels::VesselClass;
use crate::{DrawnLesion, GroundTruth, Rendered};
use image::{GrayImage, RgbImage};
use rayon::prelude::*;
use retina_records::Laterality;

/// Rows per parallel band.
const BAND: usize = 16;

/// How much a fully covered vessel pixel removes of each channel: arteries lighter red,
/// veins darker (haemoglobin absorbs green most).
const ARTERY_ABSORB: [f32; 3] = [0.15, 0.50, 0.45];
const VEIN_ABSORB: [f32; 3] = [0.42, 0.77, 0.65];

/// Noise layers of one scene.
struct Textures {
    /// Uneven illumination, about a third of the field across.
    low: ValueNoise,
    /// Choroidal mottling, two scales.
    mid: ValueNoise,
    fine: ValueNoise,
    /// Fluffy texture of cotton-wool spots.
    fluff: ValueNoise,
    grain_seed: u64,
}

/// Paints the scene into an image, mirrors it for left eyes, and reports the ground truth.
pub(crate) fn paint(scene: &Scene) -> Rendered {
    let geom = &scene.geom;
    let w = geom.width as usize;
    let h = geom.height as usize;
    let size = w.checked_mul(h).and_then(|n| n.checked_mul(3));
    // A frame too large to address is drawn empty rather than panicking.
    let (w, h) = if size.is_some() { (w, h) } else { (0, 0) };
    let seed = scene.seed;
    let dd = geom.dd.max(1.0);
    let tex = Textures {
        low: ValueNoise::new(
            geom.width,
            geom.height,
            geom.fov_radius.max(4.0) * 0.35,
            mix64(seed ^ 11),
        ),
        mid: ValueNoise::new(
            geom.width,
            geom.height,
            (dd * 0.09).max(2.0),
            mix64(seed ^ 12),
        ),
        fine: ValueNoise::new(
            geom.width,
            geom.height,
            (dd * 0.035).max(1.5),
            mix64(seed ^ 13),
        ),
        fluff: ValueNoise::new(
            geom.width,
            geom.height,
            (dd * 0.025).max(1.5),
            mix64(seed ^ 14),
        ),
        grain_seed: mix64(seed ^ 15),
    };

    // Which segments and lesions touch which band.
    let bands = h.div_ceil(BAND);
    let mut seg_bins: Vec<Vec<u32>> = vec![Vec::new(); bands];
    for (i, s) in scene.segments.iter().enumerate() {
        let (_, y0, _, y1) = s.bbox();
        for bin in band_range(y0, y1, bands) {
            if let Some(list) = seg_bins.get_mut(bin) {
                list.push(i as u32);
            }
        }
    }
    let mut paint_bins: Vec<Vec<u32>> = vec![Vec::new(); bands];
    for (i, p) in scene.paints.iter().enumerate() {
        for bin in band_range(p.bbox.1, p.bbox.3, bands) {
            if let Some(list) = paint_bins.get_mut(bin) {
                list.push(i as u32);
            }
        }
    }

    let mut rgb = vec![0u8; w * h * 3];
    let mut mask = vec![0u8; w * h];
    let (fov_px, vessel_px) = if w == 0 || h == 0 {
        (0u64, 0u64)
    } else {
        rgb.par_chunks_mut(BAND * w * 3)
            .zip(mask.par_chunks_mut(BAND * w))
            .enumerate()
            .map(|(band, (rgb_band, mask_band))| {
                let empty = Vec::new();
                paint_band(
                    scene,
                    &tex,
                    band * BAND,
                    w,
                    rgb_band,
                    mask_band,
                    seg_bins.get(band).unwrap_or(&empty),
                    paint_bins.get(band).unwrap_or(&empty),
                )
            })
            .reduce(|| (0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
    };

    let mut image = RgbImage::from_raw(w as u32, h as u32, rgb).unwrap_or_default();
    let mut vessel_mask = GrayImage::from_raw(w as u32, h as u32, mask).unwrap_or_default();
    let mirror = scene.laterality == Laterality::Left;
    if mirror {
        image::imageops::flip_horizontal_in_place(&mut image);
        image::imageops::flip_horizontal_in_place(&mut vessel_mask);
    }
    // Mirroring maps column x to (w - 1) - x.
    let fx = |x: f32| if mirror { (w as f32 - 1.0) - x } else { x };
    let truth = GroundTruth {
        fov_center: (fx(geom.fov_center.0), geom.fov_center.1),
        fov_radius: geom.fov_radius,
        disc_center: (fx(geom.disc_center.0), geom.disc_center.1),
        disc_radius: geom.disc_radius,
        cup_to_disc: geom.cdr,
        fovea: (fx(geom.fovea.0), geom.fovea.1),
        laterality: scene.laterality,
        lesions: scene
            .drawn
            .iter()
            .map(|l| DrawnLesion { x: fx(l.x), ..*l })
            .collect(),
        vessel_fraction: if fov_px > 0 {
            vessel_px as f32 / fov_px as f32
        } else {
            0.0
        },
    };
    Rendered {
        image,
        truth,
        vessel_mask,
    }
}

/// `exp(-x)` for `x >= 0`, cut to zero far out (the libm underflow path is very slow).
#[inline]
fn bump(x: f32) -> f32 {
    if x > 40.0 { 0.0 } else { (-x).exp() }
}

/// Bands overlapped by rows `y0..=y1`.
fn band_range(y0: f32, y1: f32, bands: usize) -> std::ops::Range<usize> {
    if !(y0.is_finite() && y1.is_finite()) || y1 < 0.0 {
        return 0..0;
    }
    let first = (y0.max(0.0) as usize) / BAND;
    let last = ((y1.max(0.0) as usize) / BAND + 1).min(bands);
    first.min(last)..last
}

/// Inclusive pixel range of `lo..=hi` clamped to `0..n`, or `None` when empty.
#[inline]
fn clamp_range(lo: f32, hi: f32, n: usize) -> Option<(usize, usize)> {
    if n == 0 || !(lo.is_finite() && hi.is_finite()) || hi < 0.0 || lo > (n - 1) as f32 {
        return None;
    }
    let a = lo.max(0.0).floor() as usize;
    let b = (hi.ceil().max(0.0) as usize).min(n - 1);
    (a <= b).then_some((a, b))
}

/// Working buffers of one band of rows.
struct Band<'a> {
    scene: &'a Scene,
    tex: &'a Textures,
    /// First row of the band in the frame.
    y0: usize,
    w: usize,
    rows: usize,
    /// Vessel opacity per pixel, arteries and veins.
    artery: Vec<f32>,
    vein: Vec<f32>,
    /// Vessel coverage per pixel (the vessel map).
    cover: Vec<f32>,
    /// Working colour per pixel, sRGB 0-1.
    col: Vec<[f32; 3]>,
}

/// Paints rows `y0..` of one band; returns (field-of-view pixels, vessel pixels).
#[allow(clippy::too_many_arguments)]
fn paint_band(
    scene: &Scene,
    tex: &Textures,
    y0: usize,
    w: usize,
    rgb: &mut [u8],
    mask: &mut [u8],
    segs: &[u32],
    paints: &[u32],
) -> (u64, u64) {
    let rows = mask.len() / w.max(1);
    let n = rows * w;
    let mut band = Band {
        scene,
        tex,
        y0,
        w,
        rows,
        artery: vec![0f32; n],
        vein: vec![0f32; n],
        cover: vec![0f32; n],
        col: vec![[0f32; 3]; n],
    };
    band.vessels(segs);
    band.fundus();
    band.lesions(paints);
    band.finish(rgb, mask)
}

impl Band<'_> {
    /// Vessels: anti-aliased capsules with a cylinder-like absorption profile and a central
    /// light reflex on the wider vessels (stronger on arteries).
    fn vessels(&mut self, segs: &[u32]) {
        let (scene, y0, w, rows) = (self.scene, self.y0, self.w, self.rows);
        let cover = &mut self.cover;
        for &si in segs {
            let Some(s) = scene.segments.get(si as usize) else {
                continue;
            };
            let (bx0, by0, bx1, by1) = s.bbox();
            let Some((x0, x1)) = clamp_range(bx0, bx1, w) else {
                continue;
            };
            let Some((r0, r1)) = clamp_range(by0 - y0 as f32, by1 - y0 as f32, rows) else {
                continue;
            };
            let (buffer, reflex) = match s.class {
                VesselClass::Artery => (&mut self.artery, 0.38),
                VesselClass::Vein => (&mut self.vein, 0.16),
            };
            for r in r0..=r1 {
                let y = (y0 + r) as f32;
                for x in x0..=x1 {
                    let (d, hw) = s.distance((x as f32, y));
                    let c = (hw + 0.5 - d).clamp(0.0, 1.0) * (2.0 * hw).min(1.0);
                    if c <= 0.0 {
                        continue;
                    }
                    let t = (d / hw.max(0.5)).min(1.0);
                    let body = 0.6 + 0.4 * (1.0 - t * t).max(0.0).sqrt();
                    let shine = reflex * smoothstep(2.0, 5.0, 2.0 * hw) * bump(t * t / 0.06);
                    let op = c * s.strength * body * (1.0 - shine);
                    let idx = r * w + x;
                    if let Some(v) = buffer.get_mut(idx) {
                        *v = v.max(op);
                    }
                    if let Some(v) = cover.get_mut(idx) {
                        *v = v.max(c * s.strength.min(1.0));
                    }
                }
            }
        }
    }

    /// Fundus colour, macula, disc, and the vessels over them.
    fn fundus(&mut self) {
        let (scene, tex, y0, w, rows) = (self.scene, self.tex, self.y0, self.w, self.rows);
        let geom = &scene.geom;
        let pal = &scene.palette;
        let (artery, vein, col) = (&self.artery, &self.vein, &mut self.col);
        let r_fov = geom.fov_radius;
        let (fcx, fcy) = geom.fov_center;
        let (mx, my) = geom.fovea;
        let dd = geom.dd.max(1.0);
        let mac_sigma = 1.0 * dd;
        let mac_reach = 3.0 * mac_sigma;
        let fov_sigma = 0.25 * dd;
        let reflex_sigma = (0.025 * dd).max(0.8);
        let (dcx, dcy) = geom.disc_center;
        let (ccx, ccy) = geom.cup_center;
        let (drh, drv) = (geom.disc_rh().max(0.5), geom.disc_rv().max(0.5));
        let (crh, crv) = (geom.cup_rh().max(0.3), geom.cup_rv().max(0.3));
        let disc_reach = 1.4 * drv;
        let outside2 = (r_fov + 2.0) * (r_fov + 2.0);
        for r in 0..rows {
            let y = (y0 + r) as f32;
            let (low, mid, fine) = (tex.low.row(y), tex.mid.row(y), tex.fine.row(y));
            for x in 0..w {
                let xf = x as f32;
                let idx = r * w + x;
                // Outside the field only the background is painted (step 4).
                if (xf - fcx).powi(2) + (y - fcy).powi(2) > outside2 {
                    continue;
                }
                let illum = scene.illumination(xf, y) * (1.0 + 0.06 * low.sample(xf));
                let choroid = 0.6 * mid.sample(xf) + 0.4 * fine.sample(xf);
                let mut c = [
                    pal.fundus[0] * illum * (1.0 + 0.05 * choroid),
                    pal.fundus[1] * illum * (1.0 + 0.08 * choroid),
                    pal.fundus[2] * illum * (1.0 + 0.07 * choroid),
                ];

                // Macula: darker and browner, darkest at the fovea, with a small bright reflex.
                let ux = xf - mx;
                let uy = y - my;
                if ux.abs() < mac_reach && uy.abs() < mac_reach {
                    let d2 = ux * ux + uy * uy;
                    let m = pal.macula_strength * bump(d2 / (mac_sigma * mac_sigma));
                    let f = bump(d2 / (fov_sigma * fov_sigma));
                    c[0] *= (1.0 - 0.30 * m) * (1.0 - 0.18 * f);
                    c[1] *= (1.0 - 0.24 * m) * (1.0 - 0.22 * f);
                    c[2] *= (1.0 - 0.14 * m) * (1.0 - 0.15 * f);
                    let glint = 0.22 * bump(d2 / (reflex_sigma * reflex_sigma));
                    for v in &mut c {
                        *v += glint * illum;
                    }
                }

                // Optic disc: pale yellow-orange rim, thin bright margin, paler cup.
                let mut cup_mix = 0.0;
                let vx = xf - dcx;
                let vy = y - dcy;
                if vx.abs() < disc_reach && vy.abs() < disc_reach {
                    let q = ((vx / drh).powi(2) + (vy / drv).powi(2)).sqrt();
                    let disc = 1.0 - smoothstep(0.93, 1.02, q);
                    let ring = 0.04 * bump(((q - 1.0) / 0.035).powi(2));
                    let cq = (((xf - ccx) / crh).powi(2) + ((y - ccy) / crv).powi(2)).sqrt();
                    let cup = 1.0 - smoothstep(0.72, 1.06, cq);
                    let shade = 0.78 + 0.22 * illum.min(1.2);
                    let texture = 1.0 + 0.03 * choroid;
                    // The nasal side of the rim is a little pinker than the temporal side.
                    let pink = 0.04 * (vx / drh).clamp(-1.0, 1.0);
                    let rim = [
                        pal.disc_rim[0] * shade * texture,
                        (pal.disc_rim[1] - pink) * shade * texture,
                        pal.disc_rim[2] * shade * texture,
                    ];
                    let cup_col = [pal.cup[0] * shade, pal.cup[1] * shade, pal.cup[2] * shade];
                    for k in 0..3 {
                        let disc_col = rim[k] + (cup_col[k] - rim[k]) * cup;
                        c[k] = c[k] + (disc_col - c[k]) * disc + ring * illum;
                    }
                    cup_mix = cup * disc;
                }

                // Vessels dive into the cup and look fainter there.
                let fade = 1.0 - 0.45 * cup_mix;
                let a = artery.get(idx).copied().unwrap_or(0.0) * fade;
                let v = vein.get(idx).copied().unwrap_or(0.0) * fade;
                if a > 0.0 || v > 0.0 {
                    for k in 0..3 {
                        c[k] *= (1.0 - a * ARTERY_ABSORB[k]) * (1.0 - v * VEIN_ABSORB[k]);
                    }
                }
                if let Some(slot) = col.get_mut(idx) {
                    *slot = c;
                }
            }
        }
    }

    /// Lesions, in paint order.
    fn lesions(&mut self, paints: &[u32]) {
        let (scene, tex, y0, w, rows) = (self.scene, self.tex, self.y0, self.w, self.rows);
        let col = &mut self.col;
        for &pi in paints {
            let Some(p) = scene.paints.get(pi as usize) else {
                continue;
            };
            let Some((x0, x1)) = clamp_range(p.bbox.0, p.bbox.2, w) else {
                continue;
            };
            let Some((r0, r1)) = clamp_range(p.bbox.1 - y0 as f32, p.bbox.3 - y0 as f32, rows)
            else {
                continue;
            };
            for r in r0..=r1 {
                let y = (y0 + r) as f32;
                for x in x0..=x1 {
                    let xf = x as f32;
                    let mut a = p.coverage(xf, y) * p.alpha;
                    if a <= 0.0 {
                        continue;
                    }
                    if p.texture > 0.0 {
                        a *= 1.0 - p.texture * (0.5 + 0.5 * tex.fluff.sample(xf, y));
                    }
                    let light = 1.0 - p.follow + p.follow * scene.illumination(xf, y);
                    if let Some(c) = col.get_mut(r * w + x) {
                        for (v, target) in c.iter_mut().zip(p.color) {
                            *v += (target * light - *v) * a;
                        }
                    }
                }
            }
        }
    }

    /// Field of view on a near-black background, sensor noise, quantisation, vessel map.
    /// Returns (field-of-view pixels, vessel pixels).
    fn finish(&self, rgb: &mut [u8], mask: &mut [u8]) -> (u64, u64) {
        let (scene, tex, y0, w) = (self.scene, self.tex, self.y0, self.w);
        let (col, cover) = (&self.col, &self.cover);
        let r_fov = scene.geom.fov_radius;
        let (fcx, fcy) = scene.geom.fov_center;
        let mut fov_px = 0u64;
        let mut vessel_px = 0u64;
        // Only pixels near the rim need the exact distance.
        let solid2 = (r_fov - 1.5).max(0.0).powi(2);
        let empty2 = (r_fov + 0.5).powi(2);
        let fov2 = r_fov * r_fov;
        let w = w.max(1);
        let rows_iter = rgb
            .chunks_exact_mut(w * 3)
            .zip(mask.chunks_exact_mut(w))
            .zip(col.chunks_exact(w).zip(cover.chunks_exact(w)));
        for (r, ((rgb_row, mask_row), (col_row, cover_row))) in rows_iter.enumerate() {
            let y = (y0 + r) as f32;
            let dy2 = (y - fcy).powi(2);
            let pixels = rgb_row
                .chunks_exact_mut(3)
                .zip(mask_row.iter_mut())
                .zip(col_row.iter().zip(cover_row.iter()));
            for (x, ((out, m), (c, cov))) in pixels.enumerate() {
                let d2 = (x as f32 - fcx).powi(2) + dy2;
                let inside = if d2 <= solid2 {
                    1.0
                } else if d2 >= empty2 {
                    0.0
                } else {
                    1.0 - smoothstep(r_fov - 1.5, r_fov + 0.5, d2.sqrt())
                };
                // One hash gives the grain (high bits) and the background level (low bits).
                let h = hash2(tex.grain_seed, x as u32, (y0 + r) as u32);
                let grain = signed(h);
                let bg = 0.012 + 0.008 * signed(h << 24);
                let cov = cov * inside;
                // Grain is stronger inside the field (sensor noise on the lit retina).
                let noise = grain * (0.8 + 1.2 * inside) + 0.5;
                for (o, v) in out.iter_mut().zip(c) {
                    let v = bg + (v - bg) * inside;
                    *o = (v * 255.0 + noise).clamp(0.0, 255.0) as u8;
                }
                *m = (cov * 255.0 + 0.5).clamp(0.0, 255.0) as u8;
                if d2 <= fov2 {
                    fov_px += 1;
                    if cov >= 0.5 {
                        vessel_px += 1;
                    }
                }
            }
        }
        (fov_px, vessel_px)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn band_ranges_clamp() {
        assert_eq!(band_range(-5.0, 3.0, 4), 0..1);
        assert_eq!(band_range(17.0, 40.0, 4), 1..3);
        assert_eq!(band_range(100.0, 400.0, 4), 4..4);
        assert_eq!(band_range(f32::NAN, 3.0, 4), 0..0);
        assert_eq!(band_range(-9.0, -1.0, 4), 0..0);
    }

    #[test]
    fn clamp_range_rejects_outside() {
        assert_eq!(clamp_range(-3.0, 2.2, 10), Some((0, 3)));
        assert_eq!(clamp_range(12.0, 14.0, 10), None);
        assert_eq!(clamp_range(-4.0, -1.0, 10), None);
        assert_eq!(clamp_range(8.5, 30.0, 10), Some((8, 9)));
        assert_eq!(clamp_range(0.0, 1.0, 0), None);
    }
}
