//! The fundus image stage: image bytes in, a prepared image plus measured facts out.
//!
//! This crate owns decoding (with size limits), finding the circular field of view, cropping to
//! it and padding to a square (so every output is centred the same way), the measurements that
//! ground captions ([`retina_records::ImageFacts`]: quality metrics, optic disc, vessel density,
//! fractal dimension, lesion-candidate counts, perceptual hash), resizing and encoding. It does no
//! file or network I/O. Entry point: [`prepare`]. Methods, thresholds and limits are documented
//! in `docs/measurements.md` and in [`thresholds`].

#![warn(missing_docs)]

use fast_image_resize as fr;
use retina_records::ImageFacts;
use serde::{Deserialize, Serialize};

mod decode;
pub mod dedup;
mod fov;
mod measure;
mod plane;
mod tortuosity;

#[cfg(test)]
mod testimg;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_stage;

/// Image encoding of the prepared output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputFormat {
    /// Baseline JPEG (RGB, 4:2:0 as the `image` crate encodes it).
    #[default]
    Jpeg,
    /// Lossless PNG (fast compression).
    Png,
}

impl OutputFormat {
    /// File extension without the dot: `jpg` or `png`.
    pub fn extension(&self) -> &'static str {
        match self {
            OutputFormat::Jpeg => "jpg",
            OutputFormat::Png => "png",
        }
    }

    /// MIME type: `image/jpeg` or `image/png`.
    pub fn mime(&self) -> &'static str {
        match self {
            OutputFormat::Jpeg => "image/jpeg",
            OutputFormat::Png => "image/png",
        }
    }
}

/// How [`prepare`] shapes its output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PrepareConfig {
    /// Side of the square output in pixels (default 1024; 16 to 8192).
    pub target_size: u32,
    /// Output encoding (default JPEG).
    pub output_format: OutputFormat,
    /// JPEG quality 1-100 (default 90); ignored for PNG.
    pub jpeg_quality: u8,
    /// Largest decoded frame in pixels (default 80 MP); larger images are refused from their
    /// header, before any pixel buffer is allocated (decompression bombs).
    pub max_pixels: u64,
    /// Black border kept around the field circle, as a fraction of its radius (default 0.02;
    /// 0 to 0.5).
    pub margin: f32,
}

impl Default for PrepareConfig {
    fn default() -> Self {
        PrepareConfig {
            target_size: 1024,
            output_format: OutputFormat::Jpeg,
            jpeg_quality: 90,
            max_pixels: 80_000_000,
            margin: 0.02,
        }
    }
}

impl PrepareConfig {
    /// Checks the ranges documented on each field.
    pub fn validate(&self) -> Result<(), PrepareError> {
        if !(16..=8192).contains(&self.target_size) {
            return Err(PrepareError::InvalidConfig(format!(
                "target_size {} is outside 16-8192",
                self.target_size
            )));
        }
        if !(1..=100).contains(&self.jpeg_quality) {
            return Err(PrepareError::InvalidConfig(format!(
                "jpeg_quality {} is outside 1-100",
                self.jpeg_quality
            )));
        }
        if self.max_pixels == 0 {
            return Err(PrepareError::InvalidConfig("max_pixels is 0".into()));
        }
        if !(self.margin.is_finite() && (0.0..=0.5).contains(&self.margin)) {
            return Err(PrepareError::InvalidConfig(format!(
                "margin {} is outside 0-0.5",
                self.margin
            )));
        }
        Ok(())
    }
}

/// A prepared image: encoded bytes and what was measured on it.
#[derive(Debug, Clone, PartialEq)]
pub struct PreparedImage {
    /// The encoded square image.
    pub bytes: Vec<u8>,
    /// How `bytes` are encoded.
    pub format: OutputFormat,
    /// Sizes, quality metrics and measurements.
    pub facts: ImageFacts,
}

/// Why an image could not be prepared. [`PrepareError::code`] gives a stable machine code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrepareError {
    /// The input has no bytes.
    #[error("image file is empty")]
    Empty,
    /// The bytes are not a decodable image of a supported format (corrupt, truncated, mislabelled).
    #[error("cannot decode image: {0}")]
    Decode(String),
    /// The format is not recognised or not enabled (only JPEG, PNG, TIFF, BMP and PNM are).
    #[error("unsupported image format")]
    Unsupported,
    /// The frame is larger than `max_pixels`.
    #[error("image is {width}x{height}, over the limit of {limit} pixels")]
    TooLarge {
        /// Declared width.
        width: u32,
        /// Declared height.
        height: u32,
        /// The configured pixel limit.
        limit: u64,
    },
    /// No circular field of view was found (black or blank frame, not a fundus photograph).
    #[error("no circular field of view found")]
    NoFieldOfView,
    /// Encoding the output failed.
    #[error("cannot encode output: {0}")]
    Encode(String),
    /// The configuration is out of range.
    #[error("invalid image configuration: {0}")]
    InvalidConfig(String),
    /// Resizing failed (should not happen; reported rather than panicking).
    #[error("cannot resize image: {0}")]
    Resize(String),
}

impl PrepareError {
    /// Stable code for reject records: `image.empty`, `image.decode`, `image.unsupported`,
    /// `image.too_large`, `image.no_field_of_view`, `image.encode`, `image.config`,
    /// `image.resize`.
    pub fn code(&self) -> &'static str {
        match self {
            PrepareError::Empty => "image.empty",
            PrepareError::Decode(_) => "image.decode",
            PrepareError::Unsupported => "image.unsupported",
            PrepareError::TooLarge { .. } => "image.too_large",
            PrepareError::NoFieldOfView => "image.no_field_of_view",
            PrepareError::Encode(_) => "image.encode",
            PrepareError::InvalidConfig(_) => "image.config",
            PrepareError::Resize(_) => "image.resize",
        }
    }
}

/// Thresholds and method parameters of the measurements, all documented with their units.
///
/// Lengths ending in `_RADIUS`/`_WITHIN`/`_BAND` are fractions of the field-of-view radius, so
/// they hold at any working scale. The quality thresholds were set on synthetic renders and a
/// reading of the literature, not fitted to a graded dataset: treat the measured grade as a
/// hint below a dataset's own quality label (which takes precedence, see `Labels::quality`).
pub mod thresholds {
    /// Mean field luminance (0-1) below which an image is graded reject (too dark to read).
    pub const BRIGHTNESS_REJECT_BELOW: f32 = 0.06;
    /// Mean field luminance (0-1) above which an image is graded reject (washed out).
    pub const BRIGHTNESS_REJECT_ABOVE: f32 = 0.92;
    /// Lowest mean field luminance (0-1) of a good image; between this and the reject threshold
    /// it is usable.
    pub const BRIGHTNESS_GOOD_FROM: f32 = 0.12;
    /// Highest mean field luminance (0-1) of a good image.
    pub const BRIGHTNESS_GOOD_UP_TO: f32 = 0.8;
    /// Luminance standard deviation (0-1) below which the field is featureless: reject.
    pub const CONTRAST_REJECT_BELOW: f32 = 0.015;
    /// Variance of the green Laplacian (0-255 scale, output resolution) below which the image
    /// is too blurred to read: reject.
    pub const SHARPNESS_REJECT_BELOW: f32 = 1.0;
    /// Variance of the green Laplacian from which an image counts as sharp (good).
    pub const SHARPNESS_GOOD_FROM: f32 = 4.0;
    /// Illumination uniformity (0-1) below which the image is graded reject.
    pub const UNIFORMITY_REJECT_BELOW: f32 = 0.35;
    /// Illumination uniformity (0-1) from which an image can be good.
    pub const UNIFORMITY_GOOD_FROM: f32 = 0.6;

    /// Least relative prominence of the smoothed disc maximum over its surround (`peak / local
    /// mean - 1`) for a disc to be reported.
    pub const DISC_MIN_PROMINENCE: f32 = 0.08;
    /// A disc whose centre is within this horizontal distance of the field centre is on the
    /// `Centre` side.
    pub const DISC_CENTRE_BAND: f32 = 0.15;
    /// A disc within this distance of the field centre makes the image disc-centred.
    pub const DISC_CENTRED_WITHIN: f32 = 0.3;

    /// Radius of the square structuring element of the vessel black top-hat (vessels narrower
    /// than twice this are detected).
    pub const VESSEL_SE_RADIUS: f32 = 0.025;
    /// Least relative darkness (`(closing - green) / closing`) of a vessel pixel.
    pub const VESSEL_MIN_CONTRAST: f32 = 0.04;
    /// Vessel threshold above the field's median top-hat, in robust standard deviations.
    pub const VESSEL_NOISE_SIGMAS: f32 = 3.0;
    /// A vessel component must hold at least one pixel this many robust standard deviations
    /// above the median (hysteresis).
    pub const VESSEL_STRONG_SIGMAS: f32 = 8.0;
    /// Smallest kept vessel component, as a fraction of `r²`.
    pub const VESSEL_MIN_AREA: f32 = 0.0002;
    /// Structuring element radius of the dark-lesion top-hat (blot haemorrhages fit inside).
    pub const DARK_LESION_SE_RADIUS: f32 = 0.05;
    /// Least relative darkness of a dark-lesion pixel.
    pub const DARK_LESION_MIN_CONTRAST: f32 = 0.08;
    /// Dark-lesion threshold above the field's median coarse black top-hat, in robust standard
    /// deviations.
    pub const DARK_NOISE_SIGMAS: f32 = 5.0;
    /// Structuring element radius of the bright-lesion white top-hat.
    pub const BRIGHT_LESION_SE_RADIUS: f32 = 0.03;
    /// Least relative brightness (`(green - opening) / opening`) of a bright-lesion pixel.
    pub const BRIGHT_LESION_MIN_CONTRAST: f32 = 0.08;
    /// Bright-lesion threshold above the field's median white top-hat, in robust standard
    /// deviations.
    pub const BRIGHT_NOISE_SIGMAS: f32 = 4.0;
    /// Largest lesion candidate, as an equivalent radius.
    pub const LESION_MAX_RADIUS: f32 = 0.06;
}

/// Longest side of the copy the field of view is searched on.
const FOV_WORK_SIZE: u32 = 384;

/// Decode, find the circular field of view, crop to it with a margin, pad to square (so every
/// output is centred the same way), measure, resize to `target_size` (fast_image_resize,
/// Catmull-Rom: sharper than bilinear and with less ringing than Lanczos at the black rim),
/// encode. Never panics on any input.
pub fn prepare(bytes: &[u8], config: &PrepareConfig) -> Result<PreparedImage, PrepareError> {
    config.validate()?;
    // A JPEG may be decoded at reduced scale (turbojpeg feature) while its shorter side keeps
    // target_size pixels; the field is usually about as wide as that side.
    let mut decoded = decode_guarded(bytes, config.max_pixels, Some(config.target_size))?;
    let (ow, oh) = decoded.original;
    let mut resizer = fr::Resizer::new();

    // 1. Field of view, found on a small copy.
    let mut field = locate_field(&decoded.rgb)?;
    // A field much narrower than the frame would be upsampled from the reduced decode: decode
    // again at full size rather than lose detail.
    if decoded.is_reduced() && 2.0 * field.r * (1.0 + config.margin) < config.target_size as f32 {
        decoded = decode_guarded(bytes, config.max_pixels, None)?;
        field = locate_field(&decoded.rgb)?;
    }
    let rgb = decoded.rgb;
    let (ow_dec, oh_dec) = rgb.dimensions();
    let fov_fraction = field.fov_fraction;
    // Continuous coordinates (pixel i spans [i, i+1)) of the field centre in the original.
    let ccx = field.cx + 0.5;
    let ccy = field.cy + 0.5;
    let radius = field.r;

    // 2. Square crop box around the circle; the part outside the frame becomes black padding.
    let target = config.target_size;
    let half = radius * (1.0 + config.margin);
    let (box_left, box_top) = (ccx - half, ccy - half);
    let scale = target as f32 / (2.0 * half);
    let to_dst = |v: f32| (v * scale).round().clamp(0.0, target as f32) as u32;
    let (dl, dr) = (to_dst(-box_left), to_dst(ow_dec as f32 - box_left));
    let (dt, db) = (to_dst(-box_top), to_dst(oh_dec as f32 - box_top));
    if dr <= dl || db <= dt {
        return Err(PrepareError::NoFieldOfView);
    }
    let src_l = f64::from(box_left + dl as f32 / scale).clamp(0.0, f64::from(ow_dec));
    let src_t = f64::from(box_top + dt as f32 / scale).clamp(0.0, f64::from(oh_dec));
    let src_w = f64::from((dr - dl) as f32 / scale).min(f64::from(ow_dec) - src_l);
    let src_h = f64::from((db - dt) as f32 / scale).min(f64::from(oh_dec) - src_t);
    if !(src_w > 0.0 && src_h > 0.0) {
        return Err(PrepareError::NoFieldOfView);
    }
    let mut canvas = fr::images::Image::new(target, target, fr::PixelType::U8x3);
    {
        let mut region = fr::images::CroppedImageMut::new(&mut canvas, dl, dt, dr - dl, db - dt)
            .map_err(|e| PrepareError::Resize(e.to_string()))?;
        let opts = fr::ResizeOptions::new()
            .resize_alg(fr::ResizeAlg::Convolution(fr::FilterType::CatmullRom))
            .crop(src_l, src_t, src_w, src_h);
        resizer
            .resize(&rgb, &mut region, &opts)
            .map_err(|e| PrepareError::Resize(e.to_string()))?;
    }
    drop(rgb);
    let output = canvas.into_vec();
    let out_geom = measure::Geometry {
        cx: target as f32 / 2.0 - 0.5,
        cy: target as f32 / 2.0 - 0.5,
        r: radius * scale,
        valid: (dl as usize, dt as usize, dr as usize, db as usize),
    };

    // 3. Measurements on a working copy of at most WORK_SIZE pixels.
    let ws = target.min(measure::WORK_SIZE);
    let work = if ws == target {
        output.clone()
    } else {
        let src = fr::images::ImageRef::new(target, target, &output, fr::PixelType::U8x3)
            .map_err(|e| PrepareError::Resize(e.to_string()))?;
        let mut dst = fr::images::Image::new(ws, ws, fr::PixelType::U8x3);
        let opts =
            fr::ResizeOptions::new().resize_alg(fr::ResizeAlg::Convolution(fr::FilterType::Box));
        resizer
            .resize(&src, &mut dst, &opts)
            .map_err(|e| PrepareError::Resize(e.to_string()))?;
        dst.into_vec()
    };
    let work_geom = out_geom.scaled(ws as f32 / target as f32);
    let m = measure::measure(
        &measure::View {
            rgb: &work,
            w: ws as usize,
            h: ws as usize,
            geom: work_geom,
        },
        &measure::View {
            rgb: &output,
            w: target as usize,
            h: target as usize,
            geom: out_geom,
        },
    );

    // 4. Encode.
    let bytes = encode(&output, target, config)?;
    Ok(PreparedImage {
        bytes,
        format: config.output_format,
        facts: ImageFacts {
            original_width: ow,
            original_height: oh,
            output_width: target,
            output_height: target,
            fov_fraction,
            quality: m.quality,
            disc: m.disc,
            centring: m.centring,
            vessel_density: m.vessel_density,
            tortuosity: m.tortuosity,
            fractal_dimension: m.fractal_dimension,
            cup_to_disc_ratio: m.cup_to_disc_ratio,
            bright_lesion_candidates: m.bright_lesion_candidates,
            dark_lesion_candidates: m.dark_lesion_candidates,
            perceptual_hash: m.perceptual_hash,
        },
    })
}

/// [`decode::decode`] behind `catch_unwind`: third-party decoders see untrusted bytes, and a bug
/// there must reject one image, not end a run.
fn decode_guarded(
    bytes: &[u8],
    max_pixels: u64,
    min_short_side: Option<u32>,
) -> Result<decode::Decoded, PrepareError> {
    std::panic::catch_unwind(|| decode::decode(bytes, max_pixels, min_short_side))
        .map_err(|_| PrepareError::Decode("decoder panicked on this input".into()))?
}

/// The field of view in original pixels (pixel centres at integers).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Field {
    pub cx: f32,
    pub cy: f32,
    pub r: f32,
    /// Fraction of the frame inside the circle.
    pub fov_fraction: f32,
}

/// Finds the field of view on a copy of at most [`FOV_WORK_SIZE`] pixels and maps it back.
pub(crate) fn locate_field(rgb: &image::RgbImage) -> Result<Field, PrepareError> {
    let (ow, oh) = rgb.dimensions();
    let s0 = (FOV_WORK_SIZE as f32 / ow.max(oh) as f32).min(1.0);
    let w0 = ((ow as f32 * s0).round() as u32).max(1);
    let h0 = ((oh as f32 * s0).round() as u32).max(1);
    let resized;
    let small: &[u8] = if (w0, h0) == (ow, oh) {
        rgb.as_raw()
    } else {
        resized = sampled_box_copy(
            rgb.as_raw(),
            ow as usize,
            oh as usize,
            w0 as usize,
            h0 as usize,
        );
        &resized
    };
    let c0 = fov::find_fov(small, w0 as usize, h0 as usize).ok_or(PrepareError::NoFieldOfView)?;
    let r2 = c0.r * c0.r;
    let inside: usize = (0..h0 as usize)
        .map(|y| {
            let (a, b) = fov::row_span(c0.cx, c0.cy, r2, y, w0 as usize);
            b - a
        })
        .sum();
    let (sx, sy) = (ow as f32 / w0 as f32, oh as f32 / h0 as f32);
    Ok(Field {
        cx: (c0.cx + 0.5) * sx - 0.5,
        cy: (c0.cy + 0.5) * sy - 0.5,
        r: c0.r * (sx + sy) / 2.0,
        fov_fraction: inside as f32 / (w0 as f32 * h0 as f32),
    })
}

/// A `w0 x h0` copy of the RGB8 image `rgb` (`ow x oh`, at least as large in each direction):
/// each output pixel is the rounded mean of a 2x2 grid of source pixels spread over its cell
/// (at the quarter and three-quarter points of each side), or of the whole cell where it is
/// narrower than 2. Reads 4 source pixels per output pixel instead of the whole cell, which is
/// ample for the field search (it smooths with a 3x3 box after). A buffer shorter than
/// `ow x oh` RGB gives a black copy.
fn sampled_box_copy(rgb: &[u8], ow: usize, oh: usize, w0: usize, h0: usize) -> Vec<u8> {
    let stride = ow * 3;
    let mut out = vec![0u8; w0 * h0 * 3];
    if rgb.len() < stride * oh || w0 == 0 || w0 > ow || h0 > oh {
        return out;
    }
    // Byte offsets of each output column's two samples (the same one twice when the cell is 1
    // wide: the mean is unchanged).
    let cols: Vec<(usize, usize)> = (0..w0)
        .map(|i| {
            let [a, b] = sample_taps(i, ow, w0);
            (3 * a, 3 * b)
        })
        .collect();
    // One pass per output row over its two source rows (the same row twice when the cell is 1
    // high), 4 samples per pixel summed in u16 and rounded: no accumulator row to clear and
    // divide.
    for (j, dst) in out.chunks_exact_mut(w0 * 3).enumerate() {
        let [ya, yb] = sample_taps(j, oh, h0);
        let (Some(ra), Some(rb)) = (
            rgb.get(ya * stride..(ya + 1) * stride),
            rgb.get(yb * stride..(yb + 1) * stride),
        ) else {
            continue;
        };
        for (d, &(o0, o1)) in dst.chunks_exact_mut(3).zip(&cols) {
            let (Some(p), Some(q), Some(u), Some(v)) = (
                ra.get(o0..o0 + 3),
                ra.get(o1..o1 + 3),
                rb.get(o0..o0 + 3),
                rb.get(o1..o1 + 3),
            ) else {
                continue;
            };
            for c in 0..3 {
                let s = u16::from(p[c]) + u16::from(q[c]) + u16::from(u[c]) + u16::from(v[c]);
                d[c] = ((s + 2) / 4) as u8;
            }
        }
    }
    out
}

/// The two sample positions along one axis for output index `i` of `n0` over `n` source
/// pixels: the quarter and three-quarter points of its cell `[a, b)`, or its one pixel twice
/// when the cell is 1 wide.
fn sample_taps(i: usize, n: usize, n0: usize) -> [usize; 2] {
    let a = i * n / n0;
    let b = ((i + 1) * n / n0).max(a + 1).min(n.max(1));
    let len = b.saturating_sub(a).max(1);
    if len >= 2 {
        [a + len / 4, a + (3 * len) / 4]
    } else {
        [a, a]
    }
}

fn encode(rgb: &[u8], side: u32, config: &PrepareConfig) -> Result<Vec<u8>, PrepareError> {
    use image::ImageEncoder;
    match config.output_format {
        OutputFormat::Jpeg => encode_jpeg(rgb, side, side, config.jpeg_quality),
        OutputFormat::Png => {
            let mut out = Vec::with_capacity((side as usize * side as usize) / 2);
            image::codecs::png::PngEncoder::new_with_quality(
                &mut out,
                image::codecs::png::CompressionType::Fast,
                image::codecs::png::FilterType::Adaptive,
            )
            .write_image(rgb, side, side, image::ExtendedColorType::Rgb8)
            .map_err(|e| PrepareError::Encode(e.to_string()))?;
            Ok(out)
        }
    }
}

/// Encodes packed RGB8 pixels as a baseline JPEG, 4:2:0, with the stage's encoder: libjpeg-turbo
/// when the `turbojpeg` feature is on (the fastest measured, see docs/measurements.md), else
/// [`encode_jpeg_pure_rust`]. Public for benchmarks.
pub fn encode_jpeg(
    rgb: &[u8],
    width: u32,
    height: u32,
    quality: u8,
) -> Result<Vec<u8>, PrepareError> {
    #[cfg(feature = "turbojpeg")]
    {
        check_rgb_len(rgb, width, height)?;
        let image = turbojpeg::Image {
            pixels: rgb,
            width: width as usize,
            pitch: 3 * width as usize,
            height: height as usize,
            format: turbojpeg::PixelFormat::RGB,
        };
        let mut compressor =
            turbojpeg::Compressor::new().map_err(|e| PrepareError::Encode(e.to_string()))?;
        compressor.set_quality(i32::from(quality.clamp(1, 100)));
        compressor.set_subsamp(turbojpeg::Subsamp::Sub2x2);
        compressor
            .compress_to_vec(image)
            .map_err(|e| PrepareError::Encode(e.to_string()))
    }
    #[cfg(not(feature = "turbojpeg"))]
    encode_jpeg_pure_rust(rgb, width, height, quality)
}

fn check_rgb_len(rgb: &[u8], width: u32, height: u32) -> Result<(), PrepareError> {
    if rgb.len() != width as usize * height as usize * 3 {
        return Err(PrepareError::Encode(format!(
            "{} bytes is not {width}x{height} RGB",
            rgb.len()
        )));
    }
    Ok(())
}

/// Baseline JPEG, 4:2:0, with the pure-Rust `jpeg-encoder` crate and its AVX2 path (about 2.3x
/// faster than the image crate's encoder; no system library). Public for benchmarks.
pub fn encode_jpeg_pure_rust(
    rgb: &[u8],
    width: u32,
    height: u32,
    quality: u8,
) -> Result<Vec<u8>, PrepareError> {
    let too_big = || PrepareError::Encode(format!("{width}x{height} is over JPEG's 65535 limit"));
    let (w, h) = (
        u16::try_from(width).map_err(|_| too_big())?,
        u16::try_from(height).map_err(|_| too_big())?,
    );
    check_rgb_len(rgb, width, height)?;
    let mut out = Vec::with_capacity(rgb.len() / 8);
    let mut encoder = jpeg_encoder::Encoder::new(&mut out, quality.clamp(1, 100));
    encoder.set_sampling_factor(jpeg_encoder::SamplingFactor::F_2_2);
    encoder
        .encode(rgb, w, h, jpeg_encoder::ColorType::Rgb)
        .map_err(|e| PrepareError::Encode(e.to_string()))?;
    Ok(out)
}

/// Whether this build decodes JPEGs at reduced scale and encodes with libjpeg-turbo (the
/// `turbojpeg` cargo feature).
pub const USES_LIBJPEG_TURBO: bool = cfg!(feature = "turbojpeg");

/// The codec-only path with the stage's own decoder, resizer and encoder: decode, resize the
/// central square to `target_size` (Catmull-Rom), encode. No field of view, no measurements, no
/// hash. The benchmarks compare [`prepare`] with it to show what the stage's own work costs.
pub fn codec_only(bytes: &[u8], config: &PrepareConfig) -> Result<Vec<u8>, PrepareError> {
    config.validate()?;
    let rgb = decode_guarded(bytes, config.max_pixels, Some(config.target_size))?.rgb;
    let (w, h) = rgb.dimensions();
    let side = w.min(h);
    let target = config.target_size;
    let mut dst = fr::images::Image::new(target, target, fr::PixelType::U8x3);
    let opts = fr::ResizeOptions::new()
        .resize_alg(fr::ResizeAlg::Convolution(fr::FilterType::CatmullRom))
        .crop(
            f64::from((w - side) / 2),
            f64::from((h - side) / 2),
            f64::from(side),
            f64::from(side),
        );
    fr::Resizer::new()
        .resize(&rgb, &mut dst, &opts)
        .map_err(|e| PrepareError::Resize(e.to_string()))?;
    encode(dst.buffer(), target, config)
}

#[cfg(test)]
mod sampled_copy_tests {
    use super::*;
    use proptest::prelude::*;

    /// The accumulator version the single-pass copy replaced: the same values are expected.
    /// It shares the sample positions ([`sample_taps`], unchanged by the rewrite) and counts a
    /// 1-wide cell's one position once, as it did.
    fn sampled_box_copy_reference(
        rgb: &[u8],
        ow: usize,
        oh: usize,
        w0: usize,
        h0: usize,
    ) -> Vec<u8> {
        let taps = |i: usize, n: usize, n0: usize| -> ([usize; 2], usize) {
            let xs = sample_taps(i, n, n0);
            (xs, if xs[0] == xs[1] { 1 } else { 2 })
        };
        let stride = ow * 3;
        let mut out = vec![0u8; w0 * h0 * 3];
        if rgb.len() < stride * oh || w0 == 0 || w0 > ow || h0 > oh {
            return out;
        }
        // Byte offsets of each output column's samples (both the same when the cell is 1 wide).
        let cols: Vec<(usize, usize)> = (0..w0)
            .map(|i| {
                let (xs, n) = taps(i, ow, w0);
                (3 * xs[0], 3 * xs[n - 1])
            })
            .collect();
        let mut acc = vec![0u16; w0 * 3];
        for (j, dst) in out.chunks_exact_mut(w0 * 3).enumerate() {
            let (ys, ny) = taps(j, oh, h0);
            acc.fill(0);
            for y in &ys[..ny] {
                let row = &rgb[y * stride..(y + 1) * stride];
                for (a, &(o0, o1)) in acc.chunks_exact_mut(3).zip(&cols) {
                    let (p, q) = (&row[o0..o0 + 3], &row[o1..o1 + 3]);
                    for c in 0..3 {
                        a[c] += u16::from(p[c]) + u16::from(q[c]);
                    }
                }
            }
            // Each sum holds 2 * ny samples (a 1-wide cell counts its one column twice).
            let n = 2 * ny as u16;
            for (o, a) in dst.iter_mut().zip(&acc) {
                *o = ((a + n / 2) / n) as u8;
            }
        }
        out
    }

    proptest! {
        #[test]
        fn single_pass_copy_matches_the_accumulator_version(
            ow in 1usize..90, oh in 1usize..70, fw in 0.05f32..1.0, fh in 0.05f32..1.0,
            seed in 0u32..1000,
        ) {
            let w0 = ((ow as f32 * fw).round() as usize).clamp(1, ow);
            let h0 = ((oh as f32 * fh).round() as usize).clamp(1, oh);
            let rgb: Vec<u8> = (0..ow * oh * 3)
                .map(|i| ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 13) as u8)
                .collect();
            prop_assert_eq!(
                sampled_box_copy(&rgb, ow, oh, w0, h0),
                sampled_box_copy_reference(&rgb, ow, oh, w0, h0)
            );
        }
    }
}
