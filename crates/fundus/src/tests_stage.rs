//! The acceptance tests for the image stage: disc within a tenth of the field radius,
//! vessel density ordered by the vessels drawn, duplicates robust to re-encoding and resizing,
//! one test per malformed-input case with its reject reason, EXIF orientation, colour types.

use crate::dedup::{DUPLICATE_MAX_DISTANCE, group_duplicates, hash_distance, is_duplicate};
use crate::testimg;
use crate::*;
use image::{DynamicImage, ImageBuffer, Rgb, RgbImage, Rgba};
use retina_records::{DiscSide, Laterality};
use synthetic_fundus::{SceneSpec, render, render_with_tortuosity, render_with_vessels};

fn cfg(target: u32) -> PrepareConfig {
    PrepareConfig {
        target_size: target,
        ..PrepareConfig::default()
    }
}

fn jpeg_q(img: &RgbImage, quality: u8) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality)
        .encode_image(img)
        .unwrap();
    out
}

fn png(img: &DynamicImage) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

fn field_of(img: &RgbImage) -> Field {
    locate_field(img).unwrap()
}

fn decoded(p: &PreparedImage) -> RgbImage {
    image::load_from_memory(&p.bytes).unwrap().into_rgb8()
}

#[test]
fn disc_is_found_within_a_tenth_of_the_field_radius() {
    let target = 512.0;
    for (i, (w, h)) in [(768, 512), (900, 600), (640, 640), (1200, 800)]
        .into_iter()
        .enumerate()
    {
        for lat in [Laterality::Left, Laterality::Right] {
            let spec = SceneSpec::normal(w, h, lat, 100 + i as u64);
            let (img, t) = render(&spec);
            let p = prepare(&jpeg_q(&img, 92), &cfg(512)).unwrap();
            let d = p.facts.disc.expect("disc found");
            // Truth mapped into the output: the field is centred with a known radius.
            let r_out = target / (2.0 * 1.02);
            let s = r_out / t.fov_radius;
            let tx = (t.disc_center.0 - t.fov_center.0) * s + target / 2.0;
            let ty = (t.disc_center.1 - t.fov_center.1) * s + target / 2.0;
            let err = (d.x * target - 0.5 - tx).hypot(d.y * target - 0.5 - ty);
            assert!(
                err <= 0.1 * r_out,
                "{w}x{h} {lat:?}: disc {err:.1} px off, tenth of radius {:.1}",
                0.1 * r_out
            );
        }
    }
}

#[test]
fn crop_is_centred_for_every_frame_shape() {
    for (w, h, seed) in [(768, 512, 1), (512, 768, 2), (600, 600, 3), (1000, 560, 4)] {
        let (img, _) = render(&SceneSpec::normal(w, h, Laterality::Left, 200 + seed));
        let p = prepare(&jpeg_q(&img, 92), &cfg(320)).unwrap();
        let out = decoded(&p);
        assert_eq!(out.dimensions(), (320, 320));
        let f = field_of(&out);
        let c = 320.0 / 2.0 - 0.5;
        assert!(
            (f.cx - c).abs() < 2.0 && (f.cy - c).abs() < 2.0,
            "{w}x{h}: {f:?}"
        );
        assert!((f.r - 320.0 / 2.04).abs() < 3.0, "{w}x{h}: {f:?}");
    }
}

#[test]
fn vessel_density_is_ordered_by_the_vessels_drawn() {
    for (seed, lat) in [(301, Laterality::Left), (302, Laterality::Right)] {
        let spec = SceneSpec::normal(768, 512, lat, seed);
        let mut last: Option<(f32, f32)> = None;
        for keep in [0.0, 0.35, 1.0] {
            let r = render_with_vessels(&spec, keep);
            let p = prepare(&jpeg_q(&r.image, 92), &cfg(512)).unwrap();
            let vd = p.facts.vessel_density.expect("density measured").value;
            if let Some((prev_truth, prev_vd)) = last {
                assert!(r.truth.vessel_fraction > prev_truth);
                assert!(
                    vd > prev_vd,
                    "seed {seed} keep {keep}: density {vd} not above {prev_vd}"
                );
            }
            last = Some((r.truth.vessel_fraction, vd));
        }
    }
}

#[test]
fn tortuosity_is_ordered_by_the_waviness_drawn() {
    for (lat, seed) in [(Laterality::Left, 61), (Laterality::Right, 62)] {
        let spec = SceneSpec::normal(900, 600, lat, seed);
        let mut last: Option<f32> = None;
        for wave in [0.0, 1.0, 2.0] {
            let r = render_with_tortuosity(&spec, wave);
            let p = prepare(&jpeg_q(&r.image, 92), &cfg(512)).unwrap();
            let t = p.facts.tortuosity.expect("tortuosity measured");
            eprintln!("seed {seed} wave {wave}: tortuosity {t:?}");
            assert!(t.confidence > 0.0 && t.confidence <= 0.6, "{t:?}");
            if let Some(prev) = last {
                assert!(
                    t.value > prev,
                    "seed {seed} wave {wave}: tortuosity {} not above {prev}",
                    t.value
                );
            }
            last = Some(t.value);
        }
    }
}

#[test]
fn a_field_without_vessels_has_no_tortuosity() {
    let spec = SceneSpec::normal(768, 512, Laterality::Left, 63);
    let r = render_with_vessels(&spec, 0.0);
    let p = prepare(&jpeg_q(&r.image, 92), &cfg(512)).unwrap();
    // The main arcades stay; what must hold is a finite, small-or-absent estimate.
    if let Some(t) = p.facts.tortuosity {
        assert!(t.value.is_finite() && t.value >= 0.0, "{t:?}");
    }
}

fn hash_of(bytes: &[u8]) -> u64 {
    prepare(bytes, &cfg(256)).unwrap().facts.perceptual_hash
}

#[test]
fn duplicates_survive_reencoding_and_resizing_but_eyes_stay_apart() {
    let mut originals = Vec::new();
    let mut copies = Vec::new();
    for (seed, lat) in [
        (401, Laterality::Left),
        (402, Laterality::Right),
        (403, Laterality::Left),
        (404, Laterality::Right),
    ] {
        let (img, _) = render(&SceneSpec::normal(1000, 666, lat, seed));
        let h = hash_of(&jpeg_q(&img, 95));
        let dyn_img = DynamicImage::ImageRgb8(img.clone());
        let variants = [
            hash_of(&png(&dyn_img)),
            hash_of(&jpeg_q(&img, 60)),
            hash_of(&jpeg_q(
                &dyn_img
                    .resize_exact(600, 400, image::imageops::FilterType::Triangle)
                    .into_rgb8(),
                85,
            )),
            hash_of(&jpeg_q(
                &dyn_img
                    .resize_exact(450, 300, image::imageops::FilterType::Lanczos3)
                    .into_rgb8(),
                75,
            )),
        ];
        for v in variants {
            assert!(
                is_duplicate(h, v),
                "seed {seed}: copy differs by {} bits",
                hash_distance(h, v)
            );
        }
        let worst = variants.iter().map(|v| hash_distance(h, *v)).max();
        eprintln!("seed {seed}: copies within {worst:?} bits");
        originals.push(h);
        copies.extend(variants);
    }
    for (i, a) in originals.iter().enumerate() {
        for b in &originals[i + 1..] {
            eprintln!("different eyes: {} bits", hash_distance(*a, *b));
            assert!(
                hash_distance(*a, *b) > DUPLICATE_MAX_DISTANCE,
                "different eyes {} bits apart",
                hash_distance(*a, *b)
            );
        }
    }
    // Grouping: the four originals are kept, every copy names its own original.
    let all: Vec<u64> = originals.iter().chain(&copies).copied().collect();
    let groups = group_duplicates(&all);
    assert_eq!(&groups[..4], &[None, None, None, None]);
    for (j, g) in groups[4..].iter().enumerate() {
        assert_eq!(*g, Some(j / 4), "copy {j}");
    }
}

// --- malformed inputs: one test per case, each asserting the reject reason ---

fn small_jpeg() -> Vec<u8> {
    let (img, _) = testimg::render(&testimg::Spec::normal(240, 160, true, 501));
    jpeg_q(&img, 90)
}

fn small_png() -> Vec<u8> {
    let (img, _) = testimg::render(&testimg::Spec::normal(240, 160, true, 502));
    png(&DynamicImage::ImageRgb8(img))
}

#[test]
fn reject_zero_byte_file() {
    let e = prepare(&[], &cfg(128)).unwrap_err();
    assert_eq!(e.code(), "image.empty");
}

#[test]
fn reject_truncated_jpeg() {
    let bytes = small_jpeg();
    let e = prepare(&bytes[..bytes.len() * 2 / 3], &cfg(128)).unwrap_err();
    assert_eq!(e.code(), "image.decode");
    assert!(e.to_string().contains("truncated JPEG"), "{e}");
}

#[test]
fn reject_truncated_png() {
    let bytes = small_png();
    let e = prepare(&bytes[..bytes.len() - 20], &cfg(128)).unwrap_err();
    assert_eq!(e.code(), "image.decode");
    assert!(e.to_string().contains("truncated PNG"), "{e}");
}

#[test]
fn reject_corrupt_jpeg_header() {
    let mut bytes = small_jpeg();
    // Overwrite the tables and the frame header (from the first DQT to the scan) with garbage.
    let dqt = bytes.windows(2).position(|w| w == [0xFF, 0xDB]).unwrap();
    let sos = bytes.windows(2).position(|w| w == [0xFF, 0xDA]).unwrap();
    for b in &mut bytes[dqt..sos] {
        *b = 0x5A;
    }
    let e = prepare(&bytes, &cfg(128)).unwrap_err();
    assert_eq!(e.code(), "image.decode", "{e}");
}

#[test]
fn reject_corrupt_png_data() {
    let mut bytes = small_png();
    // Damage the compressed pixel data (and so its CRC) inside IDAT.
    let idat = bytes.windows(4).position(|w| w == b"IDAT").unwrap();
    for b in &mut bytes[idat + 8..idat + 40] {
        *b ^= 0xA5;
    }
    let e = prepare(&bytes, &cfg(128)).unwrap_err();
    assert_eq!(e.code(), "image.decode", "{e}");
}

#[test]
fn reject_mislabelled_file_that_is_no_image() {
    // A download that saved an HTML error page under a .jpg name.
    let page = b"<!DOCTYPE html><html><body>403 Forbidden</body></html>";
    let e = prepare(page, &cfg(128)).unwrap_err();
    assert_eq!(e.code(), "image.unsupported");
}

#[test]
fn a_mislabelled_but_valid_image_is_decoded_by_content() {
    // PNG bytes in a file named .jpg: the format comes from the content, not the name.
    let p = prepare(&small_png(), &cfg(128)).unwrap();
    assert_eq!(p.facts.original_width, 240);
}

#[test]
fn reject_decompression_bomb_by_pixel_count() {
    let config = PrepareConfig {
        max_pixels: 240 * 160 - 1,
        ..cfg(128)
    };
    let e = prepare(&small_jpeg(), &config).unwrap_err();
    assert_eq!(e.code(), "image.too_large");
    assert!(e.to_string().contains("240x160"), "{e}");
}

#[test]
fn reject_no_field_of_view() {
    // A nearly black frame with sensor noise: nothing bright enough to be a field.
    let noisy = RgbImage::from_fn(200, 200, |x, y| Rgb([((x * 7 + y * 3) % 5) as u8; 3]));
    let e = prepare(&png(&DynamicImage::ImageRgb8(noisy)), &cfg(128)).unwrap_err();
    assert_eq!(e.code(), "image.no_field_of_view");
}

// --- EXIF orientation and colour types ---

/// Inserts an EXIF APP1 segment with the given orientation right after SOI.
fn with_exif_orientation(jpeg: &[u8], orientation: u16) -> Vec<u8> {
    let mut tiff = b"MM\0\x2A\0\0\0\x08".to_vec();
    tiff.extend_from_slice(&1u16.to_be_bytes()); // one entry
    tiff.extend_from_slice(&0x0112u16.to_be_bytes()); // Orientation
    tiff.extend_from_slice(&3u16.to_be_bytes()); // SHORT
    tiff.extend_from_slice(&1u32.to_be_bytes()); // count
    tiff.extend_from_slice(&orientation.to_be_bytes());
    tiff.extend_from_slice(&[0, 0]);
    tiff.extend_from_slice(&0u32.to_be_bytes()); // no next IFD
    let mut payload = b"Exif\0\0".to_vec();
    payload.extend_from_slice(&tiff);
    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&((payload.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(&payload);
    out.extend_from_slice(&jpeg[2..]);
    out
}

#[test]
fn exif_orientation_is_honoured() {
    let (img, _) = render(&SceneSpec::normal(768, 512, Laterality::Right, 601));
    let plain = jpeg_q(&img, 92);
    let side = |p: &PreparedImage| p.facts.disc.expect("disc").side;
    let base = prepare(&plain, &cfg(256)).unwrap();
    assert_eq!(side(&base), DiscSide::Right);
    // 3: rotate 180 degrees to display, so the disc moves to the left.
    let turned = prepare(&with_exif_orientation(&plain, 3), &cfg(256)).unwrap();
    assert_eq!(side(&turned), DiscSide::Left);
    assert_eq!(
        (turned.facts.original_width, turned.facts.original_height),
        (768, 512)
    );
    // 2: mirror horizontally, the disc moves to the left too.
    let mirrored = prepare(&with_exif_orientation(&plain, 2), &cfg(256)).unwrap();
    assert_eq!(side(&mirrored), DiscSide::Left);
    // 6: rotate 90 degrees clockwise: the frame is recorded as displayed, portrait.
    let portrait = prepare(&with_exif_orientation(&plain, 6), &cfg(256)).unwrap();
    assert_eq!(
        (
            portrait.facts.original_width,
            portrait.facts.original_height
        ),
        (512, 768)
    );
    // 1 is the identity.
    let same = prepare(&with_exif_orientation(&plain, 1), &cfg(256)).unwrap();
    assert_eq!(same.facts, base.facts);
}

#[test]
fn transparent_surround_is_black_and_alpha_is_dropped() {
    let (img, t) = render(&SceneSpec::normal(600, 400, Laterality::Left, 701));
    // Outside the field: white but fully transparent (a cut-out on a transparent canvas).
    let rgba: ImageBuffer<Rgba<u8>, Vec<u8>> = ImageBuffer::from_fn(600, 400, |x, y| {
        let d = (x as f32 - t.fov_center.0).hypot(y as f32 - t.fov_center.1);
        if d > t.fov_radius {
            Rgba([255, 255, 255, 0])
        } else {
            let p = img.get_pixel(x, y).0;
            Rgba([p[0], p[1], p[2], 255])
        }
    });
    let p = prepare(&png(&DynamicImage::ImageRgba8(rgba)), &cfg(256)).unwrap();
    let out = decoded(&p);
    // The corners are the padding/surround: black, not white.
    assert!(out.get_pixel(2, 2).0.iter().all(|&c| c < 30));
    assert_eq!(p.facts.disc.unwrap().side, DiscSide::Left);
}

#[test]
fn cmyk_jpeg_is_converted_to_rgb() {
    let (img, _) = render(&SceneSpec::normal(480, 320, Laterality::Right, 801));
    // Adobe-style CMYK: c = 255 - r etc. with k = 0 (jpeg-encoder writes the inverted form that
    // decoders expect for Adobe files).
    let cmyk: Vec<u8> = img
        .pixels()
        .flat_map(|p| [255 - p.0[0], 255 - p.0[1], 255 - p.0[2], 0])
        .collect();
    let mut bytes = Vec::new();
    jpeg_encoder::Encoder::new(&mut bytes, 92)
        .encode(&cmyk, 480, 320, jpeg_encoder::ColorType::Cmyk)
        .unwrap();
    let p = prepare(&bytes, &cfg(256)).unwrap();
    let rgb = prepare(&jpeg_q(&img, 92), &cfg(256)).unwrap();
    let (a, b) = (p.facts.quality.brightness, rgb.facts.quality.brightness);
    assert!((a - b).abs() < 0.05, "CMYK brightness {a} vs RGB {b}");
    assert_eq!(p.facts.disc.unwrap().side, DiscSide::Right);
}

#[test]
fn grey_and_grey_alpha_and_sixteen_bit_rgba_are_converted() {
    let (img, _) = render(&SceneSpec::normal(480, 320, Laterality::Left, 901));
    let dynamic = DynamicImage::ImageRgb8(img);
    for (name, variant) in [
        ("luma8", DynamicImage::ImageLuma8(dynamic.to_luma8())),
        (
            "lumaA8",
            DynamicImage::ImageLumaA8(dynamic.to_luma_alpha8()),
        ),
        ("luma16", DynamicImage::ImageLuma16(dynamic.to_luma16())),
        ("rgba16", DynamicImage::ImageRgba16(dynamic.to_rgba16())),
    ] {
        let p = prepare(&png(&variant), &cfg(256)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            (p.facts.original_width, p.facts.original_height),
            (480, 320),
            "{name}"
        );
        let out = decoded(&p);
        assert_eq!(out.dimensions(), (256, 256), "{name}");
        assert!(p.facts.quality.brightness > 0.05, "{name}");
    }
}

/// Where the time goes on a 3888x2592 camera JPEG (run with `--ignored --nocapture`; timings are
/// printed, never asserted). The dev profile builds this crate at opt-level 2.
#[test]
#[ignore]
fn stage_time_breakdown() {
    use std::time::Instant;
    let (img, _) = render(&SceneSpec::normal(3888, 2592, Laterality::Left, 990));
    let bytes = jpeg_q(&img, 92);
    let config = cfg(1024);
    let time = |name: &str, f: &mut dyn FnMut()| {
        f();
        let t = Instant::now();
        for _ in 0..5 {
            f();
        }
        eprintln!("{name:<28} {:>7.1} ms", t.elapsed().as_secs_f64() * 200.0);
    };
    time("decode", &mut || {
        decode::decode_rgb8(&bytes, config.max_pixels).unwrap();
    });
    let rgb = decode::decode_rgb8(&bytes, config.max_pixels).unwrap();
    time("locate_field", &mut || {
        field_of(&rgb);
    });
    time("prepare (full stage)", &mut || {
        prepare(&bytes, &config).unwrap();
    });
    time("codec_only", &mut || {
        codec_only(&bytes, &config).unwrap();
    });
    let out = decoded(&prepare(&bytes, &config).unwrap());
    time("encode_jpeg 1024", &mut || {
        encode_jpeg(out.as_raw(), 1024, 1024, 90).unwrap();
    });
    time("image crate JPEG 1024", &mut || {
        jpeg_q(&out, 90);
    });
    let work = image::imageops::resize(&out, 512, 512, image::imageops::FilterType::Triangle);
    let geom = |side: f32| measure::Geometry {
        cx: side / 2.0 - 0.5,
        cy: side / 2.0 - 0.5,
        r: side / 2.04,
        valid: (0, 0, side as usize, side as usize),
    };
    time("measure (512 work)", &mut || {
        measure::measure(
            &measure::View {
                rgb: work.as_raw(),
                w: 512,
                h: 512,
                geom: geom(512.0),
            },
            &measure::View {
                rgb: out.as_raw(),
                w: 1024,
                h: 1024,
                geom: geom(1024.0),
            },
        );
    });
}

/// Reduced-scale (DCT-domain) decoding keeps the output: decoding a 2400x1600 JPEG at 1/2 scale
/// and resizing to 1024 wide matches the full decode resized the same way (PSNR over 38 dB).
#[test]
fn reduced_scale_decode_matches_full_decode_and_resize() {
    let spec = SceneSpec::normal(2400, 1600, Laterality::Right, 77);
    let (img, _) = render(&spec);
    let bytes = jpeg_q(&img, 92);
    let reduced = decode::decode(&bytes, 80_000_000, Some(768)).unwrap();
    let full = decode::decode(&bytes, 80_000_000, None).unwrap();
    assert_eq!(reduced.original, (2400, 1600));
    assert_eq!(full.rgb.dimensions(), (2400, 1600));
    if USES_LIBJPEG_TURBO {
        assert_eq!(reduced.rgb.dimensions(), (1200, 800), "1/2 scale expected");
    }
    let resize = |rgb: &RgbImage| {
        let mut dst =
            fast_image_resize::images::Image::new(1024, 683, fast_image_resize::PixelType::U8x3);
        let opts = fast_image_resize::ResizeOptions::new().resize_alg(
            fast_image_resize::ResizeAlg::Convolution(fast_image_resize::FilterType::CatmullRom),
        );
        fast_image_resize::Resizer::new()
            .resize(rgb, &mut dst, &opts)
            .unwrap();
        dst.into_vec()
    };
    let (a, b) = (resize(&reduced.rgb), resize(&full.rgb));
    let mse = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2))
        .sum::<f64>()
        / a.len() as f64;
    let psnr = 10.0 * (255.0f64 * 255.0 / mse.max(1e-9)).log10();
    eprintln!("reduced-scale decode PSNR {psnr:.1} dB");
    assert!(psnr > 38.0, "PSNR {psnr:.1} dB");
}
