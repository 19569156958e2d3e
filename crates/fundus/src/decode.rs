//! Decoding with limits: guess the format from the content, refuse oversized frames from the
//! header alone, refuse truncated JPEG/PNG files, and convert every colour type to RGB8.

use crate::PrepareError;
use image::{DynamicImage, ImageDecoder, ImageError, ImageFormat, ImageReader, RgbImage};
use std::io::Cursor;

/// Bytes per pixel the limit allows for (RGBA, 16 bits per channel: the largest decoded form).
const MAX_BYTES_PER_PIXEL: u64 = 8;

/// Decodes `bytes` to RGB8, refusing frames over `max_pixels` before any pixel is allocated.
#[cfg(test)]
pub(crate) fn decode_rgb8(bytes: &[u8], max_pixels: u64) -> Result<RgbImage, PrepareError> {
    decode(bytes, max_pixels, None).map(|d| d.rgb)
}

/// A decoded frame, possibly at reduced scale.
#[derive(Debug)]
pub(crate) struct Decoded {
    /// The pixels, EXIF orientation applied.
    pub rgb: RgbImage,
    /// Width and height of the full-size frame as displayed (orientation applied).
    pub original: (u32, u32),
}

impl Decoded {
    /// Whether the frame was decoded below full size.
    pub fn is_reduced(&self) -> bool {
        self.rgb.dimensions() != self.original
    }
}

/// Decodes `bytes`; with `min_short_side`, a JPEG may come out at 1/2, 1/4 or 1/8 scale (the
/// largest reduction whose shorter side still holds `min_short_side` pixels), decoded in the
/// DCT domain by libjpeg-turbo when the `turbojpeg` feature is on. Anything libjpeg-turbo
/// refuses (CMYK, corrupt data) falls back to the full-size path, whose errors are the rejects.
pub(crate) fn decode(
    bytes: &[u8],
    max_pixels: u64,
    min_short_side: Option<u32>,
) -> Result<Decoded, PrepareError> {
    if bytes.is_empty() {
        return Err(PrepareError::Empty);
    }
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| PrepareError::Decode(format!("reading header: {e}")))?;
    let format = reader.format().ok_or(PrepareError::Unsupported)?;
    check_complete(format, bytes)?;

    let mut reader = reader;
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(max_pixels.saturating_mul(MAX_BYTES_PER_PIXEL));
    reader.limits(limits);
    let mut decoder = reader.into_decoder().map_err(map_image_error)?;
    let (width, height) = decoder.dimensions();
    let pixels = u64::from(width) * u64::from(height);
    if pixels > max_pixels {
        return Err(PrepareError::TooLarge {
            width,
            height,
            limit: max_pixels,
        });
    }
    if pixels == 0 {
        return Err(PrepareError::Decode(format!(
            "image has no pixels ({width}x{height})"
        )));
    }
    if decoder.total_bytes() > max_pixels.saturating_mul(MAX_BYTES_PER_PIXEL) {
        return Err(PrepareError::TooLarge {
            width,
            height,
            limit: max_pixels,
        });
    }
    // Camera JPEGs may carry an EXIF rotation; the disc side (a laterality hint) needs the
    // image as displayed. A broken orientation tag is not worth rejecting the image for.
    let orientation = decoder.orientation().ok();
    let displayed = |(w, h): (u32, u32)| {
        use image::metadata::Orientation as O;
        match orientation {
            Some(O::Rotate90 | O::Rotate270 | O::Rotate90FlipH | O::Rotate270FlipH) => (h, w),
            _ => (w, h),
        }
    };
    #[cfg(feature = "turbojpeg")]
    if format == ImageFormat::Jpeg
        && let Some(min_side) = min_short_side
        && let Some(rgb) = turbo::decode_scaled(bytes, width, height, min_side)
    {
        let mut image = DynamicImage::ImageRgb8(rgb);
        if let Some(o) = orientation {
            image.apply_orientation(o);
        }
        return Ok(Decoded {
            rgb: image.into_rgb8(),
            original: displayed((width, height)),
        });
    }
    #[cfg(not(feature = "turbojpeg"))]
    let _ = min_short_side;
    let mut image = DynamicImage::from_decoder(decoder).map_err(|e| match e {
        ImageError::Limits(_) => PrepareError::TooLarge {
            width,
            height,
            limit: max_pixels,
        },
        other => map_image_error(other),
    })?;
    if let Some(o) = orientation {
        image.apply_orientation(o);
    }
    Ok(Decoded {
        rgb: to_rgb8(image),
        original: displayed((width, height)),
    })
}

/// Denominator of the reduced-scale decode: the largest of 1, 2, 4, 8 that keeps the shorter
/// side at `min_short_side` pixels or more.
#[cfg_attr(not(feature = "turbojpeg"), allow(dead_code))]
pub(crate) fn scale_denominator(width: u32, height: u32, min_short_side: u32) -> u32 {
    let short = width.min(height);
    [8u32, 4, 2]
        .into_iter()
        .find(|d| short.div_ceil(*d) >= min_short_side)
        .unwrap_or(1)
}

#[cfg(feature = "turbojpeg")]
mod turbo {
    use super::scale_denominator;
    use image::RgbImage;

    /// libjpeg-turbo's decode at 1/`d` scale (`d` from [`scale_denominator`]), RGB8; `None`
    /// when there is nothing to gain (`d` = 1), libjpeg-turbo refuses the file or it reports a
    /// frame size other than the one the image crate read.
    pub(super) fn decode_scaled(
        bytes: &[u8],
        width: u32,
        height: u32,
        min_short_side: u32,
    ) -> Option<RgbImage> {
        let d = scale_denominator(width, height, min_short_side);
        if d == 1 {
            return None;
        }
        let mut decompressor = turbojpeg::Decompressor::new().ok()?;
        let header = decompressor.read_header(bytes).ok()?;
        // CMYK/YCCK need the image crate's inversion handling; a size mismatch means the two
        // parsers disagree about the file, so let the stricter path decide.
        if matches!(
            header.colorspace,
            turbojpeg::Colorspace::CMYK | turbojpeg::Colorspace::YCCK
        ) || (header.width, header.height) != (width as usize, height as usize)
        {
            return None;
        }
        // libjpeg-turbo picks the scaling factor whose output fits the requested size:
        // ceil(w / d) x ceil(h / d) selects exactly 1/d.
        let (sw, sh) = (
            header.width.div_ceil(d as usize),
            header.height.div_ceil(d as usize),
        );
        let mut pixels = vec![0u8; 3 * sw * sh];
        let image = turbojpeg::Image {
            pixels: pixels.as_mut_slice(),
            width: sw,
            pitch: 3 * sw,
            height: sh,
            format: turbojpeg::PixelFormat::RGB,
        };
        // Warnings (corrupt data) are errors here: the fallback path then rejects the file.
        decompressor.decompress(bytes, image).ok()?;
        RgbImage::from_raw(sw as u32, sh as u32, pixels)
    }
}

/// RGB8 of any colour type; transparent pixels are composited over black, so a cut-out on a
/// transparent canvas reads as a dark surround (not whatever colour the hidden pixels hold).
pub(crate) fn to_rgb8(image: DynamicImage) -> RgbImage {
    if !image.color().has_alpha() {
        return image.into_rgb8();
    }
    let rgba = image.into_rgba8();
    let (w, h) = rgba.dimensions();
    let mut rgb = Vec::with_capacity(w as usize * h as usize * 3);
    for p in rgba.pixels() {
        let a = u16::from(p.0[3]);
        for c in &p.0[..3] {
            rgb.push(((u16::from(*c) * a + 127) / 255) as u8);
        }
    }
    // The buffer has exactly w*h*3 bytes.
    RgbImage::from_raw(w, h, rgb).unwrap_or_default()
}

fn map_image_error(e: ImageError) -> PrepareError {
    match e {
        ImageError::Unsupported(_) => PrepareError::Unsupported,
        other => PrepareError::Decode(other.to_string()),
    }
}

/// Lenient decoders fill a truncated JPEG with grey and a PNG cut after its pixel data decodes
/// fine; a file cut short is damaged either way, so require the end markers.
fn check_complete(format: ImageFormat, bytes: &[u8]) -> Result<(), PrepareError> {
    match format {
        ImageFormat::Jpeg => {
            // End of image must follow the last start of scan (thumbnails carry their own
            // markers earlier in the file; entropy-coded data cannot contain FF D9).
            let last_sos = rfind(bytes, &[0xFF, 0xDA]);
            let last_eoi = rfind(bytes, &[0xFF, 0xD9]);
            match (last_sos, last_eoi) {
                (Some(s), Some(e)) if e > s => Ok(()),
                _ => Err(PrepareError::Decode(
                    "truncated JPEG: no end-of-image marker after the last scan".into(),
                )),
            }
        }
        ImageFormat::Png => {
            // IEND has no data, so its type and CRC are always these eight bytes.
            if rfind(bytes, b"IEND\xAE\x42\x60\x82").is_some() {
                Ok(())
            } else {
                Err(PrepareError::Decode("truncated PNG: no IEND chunk".into()))
            }
        }
        _ => Ok(()),
    }
}

fn rfind(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    memchr::memmem::rfind(haystack, needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfind_finds_the_last_match() {
        assert_eq!(rfind(b"abcabc", b"bc"), Some(4));
        assert_eq!(rfind(b"ab", b"abc"), None);
        assert_eq!(rfind(b"abc", b""), None);
    }

    #[test]
    fn jpeg_without_eoi_is_truncated() {
        let bytes = [0xFF, 0xD8, 0xFF, 0xDA, 0, 1, 2];
        assert!(matches!(
            check_complete(ImageFormat::Jpeg, &bytes),
            Err(PrepareError::Decode(_))
        ));
        let ok = [0xFF, 0xD8, 0xFF, 0xDA, 0, 1, 2, 0xFF, 0xD9];
        assert!(check_complete(ImageFormat::Jpeg, &ok).is_ok());
    }
}
