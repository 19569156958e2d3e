//! End-to-end tests of `prepare` on synthetic fundus photographs (the shared `synthetic-fundus`
//! generator, with exact ground truth) and on the crate's own simple drawing.

use crate::testimg;
use crate::*;
use image::{ImageBuffer, Luma, Rgb, RgbImage};
use proptest::prelude::*;
use retina_records::{DiscSide, Laterality, QualityGrade};
use synthetic_fundus::{GroundTruth, SceneSpec, render};

fn cfg(target: u32) -> PrepareConfig {
    PrepareConfig {
        target_size: target,
        ..PrepareConfig::default()
    }
}

fn jpeg(img: &RgbImage) -> Vec<u8> {
    testimg::encode(img, true)
}

fn png(img: &RgbImage) -> Vec<u8> {
    testimg::encode(img, false)
}

fn scene(w: u32, h: u32, lat: Laterality, seed: u64) -> SceneSpec {
    SceneSpec::normal(w, h, lat, seed)
}

/// Where a point of the original lands in the output, given the field found and the config.
fn to_output(field: &Field, margin: f32, target: u32, p: (f32, f32)) -> (f32, f32) {
    let half = field.r * (1.0 + margin);
    let s = target as f32 / (2.0 * half);
    (
        (p.0 + 0.5 - (field.cx + 0.5 - half)) * s - 0.5,
        (p.1 + 0.5 - (field.cy + 0.5 - half)) * s - 0.5,
    )
}

fn field_of(img: &RgbImage) -> Field {
    locate_field(img).unwrap()
}

#[test]
fn field_of_view_is_found_within_a_few_pixels() {
    // 3:2 frames clip the field at top and bottom for some seeds; the square frame does not.
    for (w, h, lat, seed) in [
        (768, 512, Laterality::Right, 1),
        (768, 512, Laterality::Left, 2),
        (900, 600, Laterality::Right, 3),
        (600, 600, Laterality::Left, 4),
    ] {
        let (img, t) = render(&scene(w, h, lat, seed));
        let f = field_of(&img);
        let tol = 3.0 + 0.01 * t.fov_radius;
        assert!(
            (f.cx - t.fov_center.0).abs() <= tol && (f.cy - t.fov_center.1).abs() <= tol,
            "centre {:?} vs truth {:?}",
            (f.cx, f.cy),
            t.fov_center
        );
        assert!(
            (f.r - t.fov_radius).abs() <= tol,
            "radius {} vs {}",
            f.r,
            t.fov_radius
        );
        assert!(f.fov_fraction > 0.3 && f.fov_fraction <= 1.0);
    }
}

#[test]
fn a_field_clipped_at_top_and_bottom_is_found() {
    let spec = testimg::Spec {
        radius_frac: 0.6,
        ..testimg::Spec::normal(768, 512, true, 3)
    };
    let (img, t) = testimg::render(&spec);
    let f = field_of(&img);
    assert!((f.cx - t.fov_center.0).abs() < 3.0, "{f:?} {t:?}");
    assert!((f.cy - t.fov_center.1).abs() < 3.0, "{f:?} {t:?}");
    assert!((f.r - t.fov_radius).abs() < 3.0, "{f:?} {t:?}");
    let p = prepare(&jpeg(&img), &cfg(256)).unwrap();
    // Clipped, so less of the circle and more of the frame is field than for an inscribed one.
    assert!(p.facts.fov_fraction > 0.6, "{}", p.facts.fov_fraction);
}

#[test]
fn output_is_square_and_the_field_is_centred() {
    for (lat, seed) in [(Laterality::Right, 5), (Laterality::Left, 6)] {
        let (img, _) = render(&scene(768, 512, lat, seed));
        let config = cfg(384);
        let p = prepare(&jpeg(&img), &config).unwrap();
        let out = image::load_from_memory(&p.bytes).unwrap().into_rgb8();
        assert_eq!(out.dimensions(), (384, 384));
        let f = field_of(&out);
        let centre = 384.0 / 2.0 - 0.5;
        let expected_r = 384.0 / (2.0 * (1.0 + config.margin));
        assert!(
            (f.cx - centre).abs() < 2.0 && (f.cy - centre).abs() < 2.0,
            "{f:?}"
        );
        assert!((f.r - expected_r).abs() < 3.0, "{f:?} vs {expected_r}");
    }
}

#[test]
fn width_and_height_are_recorded_in_order() {
    let (img, _) = render(&scene(720, 480, Laterality::Right, 7));
    let p = prepare(&jpeg(&img), &cfg(256)).unwrap();
    assert_eq!(
        (p.facts.original_width, p.facts.original_height),
        (720, 480)
    );
    assert_eq!((p.facts.output_width, p.facts.output_height), (256, 256));
    assert_eq!(p.format, OutputFormat::Jpeg);
    assert_eq!(&p.bytes[..2], &[0xFF, 0xD8]);
}

fn check_disc(t: &GroundTruth, facts: &ImageFacts, field: &Field, target: u32) {
    let d = facts.disc.expect("disc found");
    let (tx, ty) = to_output(field, 0.02, target, t.disc_center);
    let (mx, my) = (d.x * target as f32 - 0.5, d.y * target as f32 - 0.5);
    let s = target as f32 / (2.0 * field.r * 1.02);
    let disc_r = t.disc_radius * s;
    assert!(
        (mx - tx).hypot(my - ty) <= disc_r,
        "disc at {:?}, truth {:?} (radius {disc_r})",
        (mx, my),
        (tx, ty)
    );
    let truth_diameter = t.disc_radius / t.fov_radius;
    assert!(
        (d.diameter - truth_diameter).abs() < 0.35 * truth_diameter,
        "diameter {} vs {truth_diameter}",
        d.diameter
    );
    let expected_side = if t.disc_center.0 > t.fov_center.0 {
        DiscSide::Right
    } else {
        DiscSide::Left
    };
    assert_eq!(d.side, expected_side);
    assert!(d.confidence > 0.3);
}

#[test]
fn disc_is_found_near_the_true_disc_for_both_eyes() {
    for (lat, seed) in [
        (Laterality::Right, 11),
        (Laterality::Left, 12),
        (Laterality::Right, 13),
        (Laterality::Left, 14),
    ] {
        let (img, t) = render(&scene(768, 512, lat, seed));
        let p = prepare(&jpeg(&img), &cfg(512)).unwrap();
        check_disc(&t, &p.facts, &field_of(&img), 512);
        assert!(p.facts.centring.is_some());
    }
}

#[test]
fn disc_is_found_in_diseased_eyes_too() {
    for spec in [
        SceneSpec {
            dr_grade: 4,
            ..scene(768, 512, Laterality::Left, 15)
        },
        SceneSpec {
            amd: true,
            ..scene(768, 512, Laterality::Right, 16)
        },
        SceneSpec {
            glaucoma: true,
            cup_to_disc: 0.8,
            ..scene(768, 512, Laterality::Right, 17)
        },
    ] {
        let (img, t) = render(&spec);
        let p = prepare(&jpeg(&img), &cfg(512)).unwrap();
        check_disc(&t, &p.facts, &field_of(&img), 512);
    }
}

#[test]
fn cup_to_disc_estimate_follows_the_drawn_ratio() {
    let mut last = 0.0;
    for (cdr, seed) in [(0.3, 21), (0.5, 22), (0.75, 23)] {
        let spec = SceneSpec {
            cup_to_disc: cdr,
            ..scene(768, 512, Laterality::Right, seed)
        };
        let (img, t) = render(&spec);
        let p = prepare(&jpeg(&img), &cfg(512)).unwrap();
        let m = p.facts.cup_to_disc_ratio.expect("cup measured");
        assert!(
            m.confidence <= 0.3,
            "cup estimate must admit low confidence"
        );
        assert!(
            (m.value - t.cup_to_disc).abs() < 0.2,
            "cdr {} vs {}",
            m.value,
            t.cup_to_disc
        );
        assert!(m.value > last, "cdr should grow with the drawn ratio");
        last = m.value;
    }
}

#[test]
fn vessel_density_is_plausible_and_needs_vessels() {
    let (img, t) = render(&scene(768, 512, Laterality::Left, 31));
    let p = prepare(&jpeg(&img), &cfg(512)).unwrap();
    let vd = p.facts.vessel_density.unwrap().value;
    assert!((0.03..0.2).contains(&vd), "density {vd}");
    assert!(
        vd < 2.5 * t.vessel_fraction && vd > 0.5 * t.vessel_fraction,
        "density {vd} vs truth {}",
        t.vessel_fraction
    );
    let fd = p.facts.fractal_dimension.unwrap().value;
    assert!((1.1..1.9).contains(&fd), "fractal dimension {fd}");

    let blank = testimg::Spec {
        vessels: false,
        ..testimg::Spec::normal(768, 512, true, 32)
    };
    let (img, _) = testimg::render(&blank);
    let q = prepare(&jpeg(&img), &cfg(512)).unwrap();
    let blank_vd = q.facts.vessel_density.unwrap().value;
    assert!(
        blank_vd < 0.01 && blank_vd < vd,
        "blank field density {blank_vd}"
    );
    assert!(q.facts.fractal_dimension.is_none());
}

#[test]
fn lesion_candidates_are_higher_for_severe_retinopathy() {
    let count = |grade: u8| -> u32 {
        (0..3u64)
            .map(|seed| {
                let lat = if seed % 2 == 0 {
                    Laterality::Left
                } else {
                    Laterality::Right
                };
                let spec = SceneSpec {
                    dr_grade: grade,
                    ..scene(768, 512, lat, 40 + seed + u64::from(grade) * 10)
                };
                let (img, _) = render(&spec);
                let f = prepare(&jpeg(&img), &cfg(512)).unwrap().facts;
                f.dark_lesion_candidates.unwrap().value + f.bright_lesion_candidates.unwrap().value
            })
            .sum()
    };
    let (g0, g3, g4) = (count(0), count(3), count(4));
    assert!(
        g3 > g0 && g4 > g0,
        "grade 0: {g0}, grade 3: {g3}, grade 4: {g4}"
    );
}

#[test]
fn blur_lowers_sharpness_and_darkening_lowers_brightness() {
    let (img, _) = render(&scene(768, 512, Laterality::Right, 51));
    let base = prepare(&png(&img), &cfg(512)).unwrap().facts.quality;
    let blurred = testimg::blur(&img, 3);
    let b = prepare(&png(&blurred), &cfg(512)).unwrap().facts.quality;
    assert!(
        b.sharpness < 0.5 * base.sharpness,
        "{} vs {}",
        b.sharpness,
        base.sharpness
    );
    let mut dark = img.clone();
    for p in dark.pixels_mut() {
        for c in p.0.iter_mut() {
            *c /= 2;
        }
    }
    let d = prepare(&png(&dark), &cfg(512)).unwrap().facts.quality;
    assert!(
        d.brightness < 0.6 * base.brightness,
        "{} vs {}",
        d.brightness,
        base.brightness
    );
    assert!(base.grade <= QualityGrade::Usable);
    assert!((0.0..=1.0).contains(&base.illumination_uniformity));
}

#[test]
fn a_very_dark_featureless_field_is_graded_reject() {
    let spec = testimg::Spec {
        gain: 0.12,
        vessels: false,
        ..testimg::Spec::normal(384, 256, true, 52)
    };
    let (img, _) = testimg::render(&spec);
    let p = prepare(&png(&img), &cfg(256)).unwrap();
    assert_eq!(
        p.facts.quality.grade,
        QualityGrade::Reject,
        "{:?}",
        p.facts.quality
    );
}

#[test]
fn perceptual_hash_survives_reencoding_and_separates_images() {
    let (a, _) = render(&scene(768, 512, Laterality::Right, 61));
    let (b, _) = render(&scene(768, 512, Laterality::Left, 62));
    let ha = prepare(&png(&a), &cfg(256)).unwrap().facts.perceptual_hash;
    let ha2 = prepare(&jpeg(&a), &cfg(256)).unwrap().facts.perceptual_hash;
    let hb = prepare(&png(&b), &cfg(256)).unwrap().facts.perceptual_hash;
    assert!((ha ^ ha2).count_ones() <= 4, "{ha:016x} {ha2:016x}");
    assert!((ha ^ hb).count_ones() >= 10, "{ha:016x} {hb:016x}");
}

#[test]
fn png_output_has_the_target_size() {
    let (img, _) = render(&scene(480, 320, Laterality::Left, 71));
    let config = PrepareConfig {
        output_format: OutputFormat::Png,
        target_size: 200,
        ..PrepareConfig::default()
    };
    let p = prepare(&jpeg(&img), &config).unwrap();
    assert_eq!(p.format, OutputFormat::Png);
    let out = image::load_from_memory_with_format(&p.bytes, image::ImageFormat::Png).unwrap();
    assert_eq!((out.width(), out.height()), (200, 200));
    assert_eq!(
        (OutputFormat::Png.extension(), OutputFormat::Png.mime()),
        ("png", "image/png")
    );
    assert_eq!(
        (OutputFormat::Jpeg.extension(), OutputFormat::Jpeg.mime()),
        ("jpg", "image/jpeg")
    );
}

#[test]
fn sixteen_bit_and_grey_images_decode() {
    let (img, _) = testimg::render(&testimg::Spec::normal(384, 256, false, 81));
    let wide: ImageBuffer<Rgb<u16>, Vec<u16>> = ImageBuffer::from_fn(384, 256, |x, y| {
        let p = img.get_pixel(x, y).0;
        Rgb([p[0] as u16 * 257, p[1] as u16 * 257, p[2] as u16 * 257])
    });
    let mut bytes = std::io::Cursor::new(Vec::new());
    wide.write_to(&mut bytes, image::ImageFormat::Png).unwrap();
    let p = prepare(bytes.get_ref(), &cfg(256)).unwrap();
    assert_eq!(p.facts.original_width, 384);
    assert_eq!(p.facts.disc.unwrap().side, DiscSide::Left);

    let grey: ImageBuffer<Luma<u8>, Vec<u8>> = image::imageops::grayscale(&img);
    for format in [
        image::ImageFormat::Png,
        image::ImageFormat::Jpeg,
        image::ImageFormat::Tiff,
        image::ImageFormat::Bmp,
        image::ImageFormat::Pnm,
    ] {
        let mut bytes = std::io::Cursor::new(Vec::new());
        grey.write_to(&mut bytes, format).unwrap();
        let p = prepare(bytes.get_ref(), &cfg(128)).unwrap_or_else(|e| panic!("{format:?}: {e}"));
        assert_eq!(p.facts.original_height, 256, "{format:?}");
    }
}

#[test]
fn zero_bytes_are_empty() {
    let e = prepare(&[], &PrepareConfig::default()).unwrap_err();
    assert_eq!(e, PrepareError::Empty);
    assert_eq!(e.code(), "image.empty");
}

#[test]
fn unknown_bytes_are_unsupported_and_garbage_after_a_magic_is_a_decode_error() {
    let e = prepare(b"hello, this is not an image", &PrepareConfig::default()).unwrap_err();
    assert_eq!(e.code(), "image.unsupported");
    let mut fake = vec![0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];
    fake.extend_from_slice(&[7u8; 64]);
    fake.extend_from_slice(b"IEND\xAE\x42\x60\x82");
    let e = prepare(&fake, &PrepareConfig::default()).unwrap_err();
    assert_eq!(e.code(), "image.decode", "{e}");
}

#[test]
fn a_black_frame_has_no_field_of_view() {
    let img = RgbImage::from_pixel(300, 200, Rgb([4, 4, 4]));
    let e = prepare(&png(&img), &PrepareConfig::default()).unwrap_err();
    assert_eq!(e, PrepareError::NoFieldOfView);
    assert_eq!(e.code(), "image.no_field_of_view");
}

/// CRC-32 (IEEE), for patching PNG chunks in tests.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for b in bytes {
        crc ^= u32::from(*b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn a_huge_declared_size_is_refused_before_decoding() {
    // PPM header claiming 100000 x 100000 with almost no data.
    let mut ppm = b"P6\n100000 100000\n255\n".to_vec();
    ppm.extend_from_slice(&[0u8; 30]);
    let e = prepare(&ppm, &PrepareConfig::default()).unwrap_err();
    assert_eq!(
        e,
        PrepareError::TooLarge {
            width: 100_000,
            height: 100_000,
            limit: 80_000_000
        }
    );
    assert_eq!(e.code(), "image.too_large");

    // A real small PNG whose IHDR is patched to 60000 x 60000 (with a valid CRC).
    let mut png_bytes = png(&RgbImage::new(8, 8));
    png_bytes[16..20].copy_from_slice(&60_000u32.to_be_bytes());
    png_bytes[20..24].copy_from_slice(&60_000u32.to_be_bytes());
    let crc = crc32(&png_bytes[12..29]);
    png_bytes[29..33].copy_from_slice(&crc.to_be_bytes());
    let e = prepare(&png_bytes, &PrepareConfig::default()).unwrap_err();
    assert_eq!(e.code(), "image.too_large", "{e}");

    // The limit is the configured one.
    let (img, _) = testimg::render(&testimg::Spec::normal(300, 200, true, 1));
    let small_limit = PrepareConfig {
        max_pixels: 10_000,
        ..PrepareConfig::default()
    };
    assert_eq!(
        prepare(&png(&img), &small_limit).unwrap_err().code(),
        "image.too_large"
    );
}

#[test]
fn invalid_configs_are_refused() {
    let bad = [
        PrepareConfig {
            target_size: 0,
            ..PrepareConfig::default()
        },
        PrepareConfig {
            jpeg_quality: 0,
            ..PrepareConfig::default()
        },
        PrepareConfig {
            jpeg_quality: 101,
            ..PrepareConfig::default()
        },
        PrepareConfig {
            max_pixels: 0,
            ..PrepareConfig::default()
        },
        PrepareConfig {
            margin: f32::NAN,
            ..PrepareConfig::default()
        },
        PrepareConfig {
            margin: -0.1,
            ..PrepareConfig::default()
        },
    ];
    for c in bad {
        assert_eq!(
            prepare(b"x", &c).unwrap_err().code(),
            "image.config",
            "{c:?}"
        );
    }
    assert!(PrepareConfig::default().validate().is_ok());
}

#[test]
fn error_codes_are_stable() {
    let all = [
        (PrepareError::Empty, "image.empty"),
        (PrepareError::Decode("x".into()), "image.decode"),
        (PrepareError::Unsupported, "image.unsupported"),
        (
            PrepareError::TooLarge {
                width: 1,
                height: 2,
                limit: 3,
            },
            "image.too_large",
        ),
        (PrepareError::NoFieldOfView, "image.no_field_of_view"),
        (PrepareError::Encode("x".into()), "image.encode"),
        (PrepareError::InvalidConfig("x".into()), "image.config"),
        (PrepareError::Resize("x".into()), "image.resize"),
    ];
    for (e, code) in all {
        assert_eq!(e.code(), code);
        assert!(!e.to_string().is_empty());
    }
}

/// Small valid encodings of a drawn fundus, for the truncation properties.
fn small_valid() -> (Vec<u8>, Vec<u8>) {
    let (img, _) = testimg::render(&testimg::Spec::normal(96, 64, true, 9));
    (jpeg(&img), png(&img))
}

#[test]
fn the_small_valid_images_do_prepare() {
    let (j, p) = small_valid();
    assert!(prepare(&j, &cfg(64)).is_ok());
    assert!(prepare(&p, &cfg(64)).is_ok());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        prop_assert!(prepare(&bytes, &cfg(64)).is_err());
    }

    #[test]
    fn arbitrary_bytes_after_a_real_magic_never_panic(
        magic in 0usize..5,
        tail in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let prefix: &[u8] = match magic {
            0 => &[0xFF, 0xD8, 0xFF, 0xE0],
            1 => &[0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A],
            2 => b"II*\0",
            3 => b"BM",
            _ => b"P6\n",
        };
        let mut bytes = prefix.to_vec();
        bytes.extend_from_slice(&tail);
        prop_assert!(prepare(&bytes, &cfg(64)).is_err());
    }

    #[test]
    fn truncated_jpeg_and_png_are_errors(cut in 0.0f64..1.0, which_png: bool) {
        let (j, p) = small_valid();
        let full = if which_png { p } else { j };
        let len = ((full.len() as f64) * cut) as usize;
        let e = prepare(&full[..len.min(full.len() - 1)], &cfg(64));
        prop_assert!(e.is_err());
    }

    #[test]
    fn flipped_bytes_in_a_valid_jpeg_never_panic(pos in 0.0f64..1.0, value: u8) {
        let (j, _) = small_valid();
        let mut bytes = j.clone();
        let i = ((bytes.len() as f64) * pos) as usize % bytes.len();
        bytes[i] = value;
        // May decode (a flipped pixel) or not; it must not panic.
        let _ = prepare(&bytes, &cfg(64));
    }
}
