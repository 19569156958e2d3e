//! A small fundus-like test drawing (black surround, orange field with vignetting, pale disc with
//! a cup, vessel arcades, macula, optional lesions), with its ground truth in pixels. Used until
//! the shared `synthetic-fundus` generator is available, and kept for cases it does not cover.

use image::{Rgb, RgbImage};

/// What to draw.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    pub width: u32,
    pub height: u32,
    /// Field radius as a fraction of the frame height (over 0.5 clips top and bottom).
    pub radius_frac: f32,
    /// Disc on the viewer's right (right eye) or left.
    pub disc_right: bool,
    pub dr_grade: u8,
    pub cup_to_disc: f32,
    pub vessels: bool,
    /// Multiplies the field colour.
    pub gain: f32,
    pub seed: u64,
}

impl Spec {
    pub fn normal(width: u32, height: u32, disc_right: bool, seed: u64) -> Self {
        Spec {
            width,
            height,
            radius_frac: 0.48,
            disc_right,
            dr_grade: 0,
            cup_to_disc: 0.4,
            vessels: true,
            gain: 1.0,
            seed,
        }
    }
}

/// Ground truth in pixels of the drawn frame.
#[derive(Debug, Clone, Copy)]
pub struct Truth {
    pub fov_center: (f32, f32),
    pub fov_radius: f32,
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f32 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let v = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        (v >> 40) as f32 / (1u64 << 24) as f32
    }
    fn range(&mut self, a: f32, b: f32) -> f32 {
        a + (b - a) * self.next()
    }
}

fn blend(img: &mut RgbImage, x: i64, y: i64, c: [f32; 3], alpha: f32) {
    if x < 0 || y < 0 || x >= img.width() as i64 || y >= img.height() as i64 {
        return;
    }
    let p = img.get_pixel_mut(x as u32, y as u32);
    for (v, c) in p.0.iter_mut().zip(c) {
        *v = (*v as f32 * (1.0 - alpha) + c * alpha).clamp(0.0, 255.0) as u8;
    }
}

fn stamp(
    img: &mut RgbImage,
    cx: f32,
    cy: f32,
    r: f32,
    c: [f32; 3],
    alpha: f32,
    inside: &dyn Fn(f32, f32) -> bool,
) {
    let (x0, x1) = ((cx - r - 1.0).floor() as i64, (cx + r + 1.0).ceil() as i64);
    let (y0, y1) = ((cy - r - 1.0).floor() as i64, (cy + r + 1.0).ceil() as i64);
    for y in y0..=y1 {
        for x in x0..=x1 {
            let d = (x as f32 - cx).hypot(y as f32 - cy);
            let a = (r + 0.5 - d).clamp(0.0, 1.0) * alpha;
            if a > 0.0 && inside(x as f32, y as f32) {
                blend(img, x, y, c, a);
            }
        }
    }
}

/// Draws the scene.
pub fn render(spec: &Spec) -> (RgbImage, Truth) {
    let (w, h) = (spec.width, spec.height);
    let mut rng = Rng(spec.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let (cx, cy) = (w as f32 / 2.0, h as f32 / 2.0);
    let r = spec.radius_frac * h as f32;
    let side = if spec.disc_right { 1.0 } else { -1.0 };
    let (dx, dy) = (cx + side * 0.55 * r, cy - 0.03 * r);
    let disc_r = 0.14 * r;
    let (fx, fy) = (cx - side * 0.1 * r, cy + 0.02 * r);
    let mut img = RgbImage::new(w, h);
    for y in 0..h {
        for x in 0..w {
            let (xf, yf) = (x as f32, y as f32);
            let d = (xf - cx).hypot(yf - cy) / r;
            let p = if d <= 1.0 {
                let vig = 1.0 - 0.35 * d * d;
                let fd = (xf - fx).hypot(yf - fy) / (0.25 * r);
                let mac = 1.0 - 0.25 * (-fd * fd).exp();
                let g = spec.gain * vig * mac;
                [200.0 * g, 90.0 * g, 40.0 * g]
            } else {
                [2.0, 2.0, 2.0]
            };
            let n = rng.range(-3.0, 3.0);
            img.put_pixel(
                x,
                y,
                Rgb([
                    (p[0] + n).clamp(0.0, 255.0) as u8,
                    (p[1] + n).clamp(0.0, 255.0) as u8,
                    (p[2] + n).clamp(0.0, 255.0) as u8,
                ]),
            );
        }
    }
    let in_field = move |x: f32, y: f32| (x - cx).hypot(y - cy) <= r;
    let g = spec.gain;
    // disc and cup
    stamp(
        &mut img,
        dx,
        dy,
        disc_r,
        [245.0 * g, 190.0 * g, 120.0 * g],
        0.95,
        &in_field,
    );
    let cup_r = disc_r * spec.cup_to_disc;
    stamp(
        &mut img,
        dx,
        dy,
        cup_r,
        [255.0 * g, 230.0 * g, 190.0 * g],
        0.9,
        &in_field,
    );

    if spec.vessels {
        // Arcades leave the disc up and down and curve towards the macula; smaller ones go nasally.
        let n = 10;
        for k in 0..n {
            let base = if k % 2 == 0 { -1.0 } else { 1.0 };
            let temporal = k < 6;
            let mut ang: f32 = if temporal {
                std::f32::consts::FRAC_PI_2 * base + rng.range(-0.4, 0.4)
            } else {
                (if side > 0.0 {
                    0.0
                } else {
                    std::f32::consts::PI
                }) + base * rng.range(0.2, 1.0)
            };
            let turn = if temporal {
                side * base * rng.range(0.004, 0.008)
            } else {
                rng.range(-0.003, 0.003)
            };
            let mut width = 0.022 * r * if k < 2 { 1.0 } else { 0.7 };
            let (mut x, mut y) = (dx, dy);
            let len = r * rng.range(0.9, 1.4);
            let mut t = 0.0;
            while t < len && in_field(x, y) {
                stamp(
                    &mut img,
                    x,
                    y,
                    width / 2.0,
                    [110.0 * g, 25.0 * g, 15.0 * g],
                    0.75,
                    &in_field,
                );
                x += ang.cos();
                y += ang.sin();
                ang += turn * 400.0 / r;
                width = (width * 0.9985).max(0.006 * r);
                t += 1.0;
            }
        }
    }

    // lesions
    let grade = spec.dr_grade.min(4) as usize;
    let dark = [0usize, 6, 18, 35, 45][grade];
    let bright = [0usize, 0, 8, 16, 22][grade];
    let place = |rng: &mut Rng| loop {
        let a = rng.range(0.0, std::f32::consts::TAU);
        let d = rng.range(0.1, 0.8) * r;
        let (x, y) = (cx + d * a.cos(), cy + d * a.sin());
        if (x - dx).hypot(y - dy) > 2.5 * disc_r {
            return (x, y);
        }
    };
    for i in 0..dark {
        let (x, y) = place(&mut rng);
        let size = if i % 3 == 0 {
            rng.range(0.012, 0.022)
        } else {
            rng.range(0.005, 0.009)
        } * r;
        stamp(
            &mut img,
            x,
            y,
            size,
            [120.0 * g, 20.0 * g, 15.0 * g],
            0.85,
            &in_field,
        );
    }
    for _ in 0..bright {
        let (x, y) = place(&mut rng);
        let size = rng.range(0.006, 0.014) * r;
        stamp(
            &mut img,
            x,
            y,
            size,
            [250.0 * g, 220.0 * g, 110.0 * g],
            0.9,
            &in_field,
        );
    }

    (
        img,
        Truth {
            fov_center: (cx - 0.5, cy - 0.5),
            fov_radius: r,
        },
    )
}

/// Box blur with radius `k` (for the sharpness test).
pub fn blur(img: &RgbImage, k: u32) -> RgbImage {
    let (w, h) = img.dimensions();
    let mut out = img.clone();
    for y in 0..h {
        for x in 0..w {
            let mut s = [0u32; 3];
            let mut n = 0;
            for yy in y.saturating_sub(k)..(y + k + 1).min(h) {
                for xx in x.saturating_sub(k)..(x + k + 1).min(w) {
                    let p = img.get_pixel(xx, yy);
                    for (acc, v) in s.iter_mut().zip(p.0) {
                        *acc += v as u32;
                    }
                    n += 1;
                }
            }
            out.put_pixel(
                x,
                y,
                Rgb([(s[0] / n) as u8, (s[1] / n) as u8, (s[2] / n) as u8]),
            );
        }
    }
    out
}

/// Encodes as JPEG (quality 92) or PNG.
pub fn encode(img: &RgbImage, jpeg: bool) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    let fmt = if jpeg {
        image::ImageFormat::Jpeg
    } else {
        image::ImageFormat::Png
    };
    if jpeg {
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 92)
            .encode_image(img)
            .unwrap();
    } else {
        img.write_to(&mut out, fmt).unwrap();
    }
    out.into_inner()
}
