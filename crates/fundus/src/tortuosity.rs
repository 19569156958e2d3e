//! Vessel tortuosity from the vessel map: the distance metric (arc length over chord length,
//! minus one) of the skeleton's segments between branch points.
//!
//! Method: thin the binary vessel map to a one-pixel skeleton (Zhang-Suen), delete branch
//! pixels (more than two skeleton neighbours) so the skeleton falls apart into simple paths,
//! trace each path from one end to the other (paths spanning at least [`MIN_CHORD`] × r), and
//! measure `arc / chord - 1` in windows of [`WINDOW`] × r arc length, half overlapping. The arc
//! length is measured along the path sampled every [`SAMPLE_STEP`] pixels, so the staircase of
//! a pixel path does not read as tortuosity (a straight line at 22.5° would otherwise measure
//! 8 % longer than its chord). The result is the median over all windows.

use crate::plane::components;

/// Shortest chord of a counted segment, as a fraction of the field radius.
const MIN_CHORD: f32 = 0.08;
/// Path samples used for the arc length are this many pixels apart along the path.
const SAMPLE_STEP: usize = 3;
/// Arc length of the measuring windows, as a fraction of the field radius.
const WINDOW: f32 = 0.2;
/// Fewest counted paths for an estimate.
const MIN_SEGMENTS: usize = 4;

/// Tortuosity estimate and its confidence, or `None` when too few segments qualify.
pub(crate) fn tortuosity(map: &[bool], w: usize, h: usize, r: f32) -> Option<(f32, f32)> {
    if w < 3 || h < 3 || map.len() != w * h {
        return None;
    }
    let mut skel = map.to_vec();
    thin(&mut skel, w, h);
    // Branch points split the skeleton into simple paths. A branch is where three or more
    // arms leave (crossing number: off-to-on changes around the 8 neighbours); counting
    // neighbours instead would cut every staircase step of a thinned line. `thin` cleared the
    // frame border, so only interior pixels can be set.
    let tables = Tables::get();
    let mut branch = Vec::new();
    for y in 1..h - 1 {
        for x in 1..w - 1 {
            let i = y * w + x;
            if skel[i] && tables.crossings[usize::from(neighbours(&skel, i, w))] >= 3 {
                branch.push(i);
            }
        }
    }
    for i in branch {
        skel[i] = false;
    }
    let (comps, labels) = components(&skel, w, h);
    let min_chord = MIN_CHORD * r;
    // Members of each component in raster order, as one flat list (a counting sort by label).
    let mut offsets = vec![0usize; comps.len() + 1];
    for l in labels.iter().filter(|l| **l > 0) {
        offsets[*l as usize] += 1;
    }
    for k in 1..offsets.len() {
        offsets[k] += offsets[k - 1];
    }
    let mut members = vec![0usize; offsets[comps.len()]];
    let mut fill = offsets.clone();
    for (i, l) in labels.iter().enumerate() {
        if *l > 0 {
            let slot = &mut fill[*l as usize - 1];
            members[*slot] = i;
            *slot += 1;
        }
    }
    // Windows of a fixed arc length along every path: tortuosity at the scale of a vessel's
    // bends, so the wide sweep of the arcades around the macula does not count as tortuous.
    let window = ((WINDOW * r).round() as usize).max(4 * SAMPLE_STEP);
    let mut values: Vec<f32> = Vec::new();
    let mut paths = 0usize;
    let mut seen = vec![false; w * h];
    let mut samples: Vec<(f32, f32)> = Vec::new();
    for (k, c) in comps.iter().enumerate() {
        let members = &members[offsets[k]..offsets[k + 1]];
        let extent = (c.bbox_w().max(c.bbox_h())) as f32;
        if extent < min_chord || members.len() < window {
            continue;
        }
        let Some(path) = trace(&skel, members, w, h, &mut seen) else {
            continue;
        };
        paths += 1;
        measure_windows(&path, w, window, &mut samples, &mut values);
    }
    estimate(paths, values)
}

/// Appends `arc / chord - 1` of each window of `window` pixels along `path` (half overlapping),
/// the arc measured through samples every [`SAMPLE_STEP`] pixels; `samples` is scratch.
fn measure_windows(
    path: &[usize],
    w: usize,
    window: usize,
    samples: &mut Vec<(f32, f32)>,
    values: &mut Vec<f32>,
) {
    let at = |i: usize| ((i % w) as f32, (i / w) as f32);
    let mut start = 0;
    while start + window <= path.len() {
        let piece = &path[start..start + window];
        samples.clear();
        samples.extend(
            piece
                .iter()
                .step_by(SAMPLE_STEP)
                .chain(piece.last())
                .map(|i| at(*i)),
        );
        let arc: f32 = samples
            .windows(2)
            .map(|p| (p[1].0 - p[0].0).hypot(p[1].1 - p[0].1))
            .sum();
        if let (Some(a), Some(b)) = (samples.first(), samples.last()) {
            let chord = (b.0 - a.0).hypot(b.1 - a.1);
            if chord > 0.0 {
                values.push((arc / chord - 1.0).max(0.0));
            }
        }
        start += window / 2;
    }
}

/// The median window value and its confidence, or `None` with too few paths or windows.
fn estimate(paths: usize, mut values: Vec<f32>) -> Option<(f32, f32)> {
    if paths < MIN_SEGMENTS || values.len() < 2 * MIN_SEGMENTS {
        return None;
    }
    // The median: a spur or a loop left by the vessel map gives a few wild windows.
    let mid = values.len() / 2;
    let value = *values.select_nth_unstable_by(mid, f32::total_cmp).1;
    // More measured vessel length, more trust; capped because the vessel map itself is an
    // estimate (gaps and spurs change the paths).
    let confidence = (0.5 * (values.len() as f32 / 40.0).min(1.0)).max(0.2);
    value.is_finite().then_some((value, confidence))
}

/// The 8 neighbours of interior pixel `i` as a bit mask: bit k is P(k+2) of Zhang and Suen,
/// clockwise from north (P2 north, P3 north-east, ..., P9 north-west).
#[inline]
fn neighbours(map: &[bool], i: usize, w: usize) -> u8 {
    u8::from(map[i - w])
        | u8::from(map[i - w + 1]) << 1
        | u8::from(map[i + 1]) << 2
        | u8::from(map[i + w + 1]) << 3
        | u8::from(map[i + w]) << 4
        | u8::from(map[i + w - 1]) << 5
        | u8::from(map[i - 1]) << 6
        | u8::from(map[i - w - 1]) << 7
}

/// Per-neighbourhood decisions, computed once: thinning and branch detection look each pixel's
/// 8-neighbour mask up instead of counting it out.
struct Tables {
    /// Off-to-on changes going once around the neighbours (the crossing number).
    crossings: [u8; 256],
    /// Whether Zhang-Suen removes the pixel, per sub-pass.
    remove: [[bool; 256]; 2],
}

impl Tables {
    fn get() -> &'static Tables {
        static TABLES: std::sync::OnceLock<Tables> = std::sync::OnceLock::new();
        TABLES.get_or_init(|| {
            let mut t = Tables {
                crossings: [0; 256],
                remove: [[false; 256]; 2],
            };
            for m in 0..256usize {
                let p: [bool; 8] = std::array::from_fn(|k| m >> k & 1 == 1);
                let a = (0..8).filter(|k| !p[*k] && p[(k + 1) % 8]).count();
                t.crossings[m] = a as u8;
                let b = p.iter().filter(|v| **v).count();
                let (n, e, s, wst) = (p[0], p[2], p[4], p[6]);
                let thinnable = (2..=6).contains(&b) && a == 1;
                t.remove[0][m] = thinnable && !(e && s && (n || wst));
                t.remove[1][m] = thinnable && !(n && wst && (e || s));
            }
            t
        })
    }
}

/// Orders a simple path's pixels from one end to the other; `None` for a loop or a path with a
/// stray pixel (a component that is not a simple path). `seen` is all false on entry and on
/// return (a scratch map shared by the calls).
fn trace(
    skel: &[bool],
    members: &[usize],
    w: usize,
    h: usize,
    seen: &mut [bool],
) -> Option<Vec<usize>> {
    // Skeleton neighbours of `i` other than `prev`, in raster order.
    let next_of = |i: usize, prev: Option<usize>| -> ([usize; 8], usize) {
        let (x, y) = (i % w, i / w);
        let mut out = [0usize; 8];
        let mut n = 0;
        for dy in -1isize..=1 {
            for dx in -1isize..=1 {
                if (dx, dy) == (0, 0) {
                    continue;
                }
                let (nx, ny) = (x as isize + dx, y as isize + dy);
                if nx < 0 || ny < 0 || nx as usize >= w || ny as usize >= h {
                    continue;
                }
                let j = ny as usize * w + nx as usize;
                if Some(j) != prev && skel.get(j).copied().unwrap_or(false) {
                    out[n] = j;
                    n += 1;
                }
            }
        }
        (out, n)
    };
    let start = *members.iter().find(|&&i| next_of(i, None).1 == 1)?;
    let mut path = vec![start];
    seen[start] = true;
    let mut prev = None;
    let mut cur = start;
    loop {
        let (next, n) = next_of(cur, prev);
        let mut unseen = next[..n].iter().copied().filter(|j| !seen[*j]);
        let first = unseen.clone().next();
        // Prefer the 4-neighbour step where a corner offers both (keeps the path one pixel).
        let Some(step) = unseen
            .find(|&j| j % w == cur % w || j / w == cur / w)
            .or(first)
        else {
            break;
        };
        seen[step] = true;
        path.push(step);
        prev = Some(cur);
        cur = step;
    }
    for i in &path {
        seen[*i] = false;
    }
    (path.len() * 10 >= members.len() * 9).then_some(path)
}

/// Zhang-Suen thinning in place: removes boundary pixels in two alternating sub-passes until
/// none changes, leaving an 8-connected skeleton one pixel wide.
fn thin(map: &mut [bool], w: usize, h: usize) {
    // Pixels on the frame border are dropped: the neighbourhood needs all eight neighbours.
    let mut candidates: Vec<usize> = Vec::new();
    for y in 1..h.saturating_sub(1) {
        for x in 1..w - 1 {
            if map[y * w + x] {
                candidates.push(y * w + x);
            }
        }
    }
    for (y, row) in map.chunks_exact_mut(w).enumerate() {
        if y == 0 || y + 1 == h {
            row.fill(false);
        } else {
            row[0] = false;
            row[w - 1] = false;
        }
    }
    let tables = Tables::get();
    let mut remove = Vec::new();
    loop {
        let mut changed = false;
        for pass in &tables.remove {
            remove.clear();
            remove.extend(
                candidates
                    .iter()
                    .copied()
                    .filter(|&i| map[i] && pass[usize::from(neighbours(map, i, w))]),
            );
            for &i in &remove {
                map[i] = false;
            }
            changed |= !remove.is_empty();
        }
        if !changed {
            break;
        }
        candidates.retain(|&i| map[i]);
    }
}

#[cfg(test)]
mod reference {
    //! The first, straightforward thinning, branch removal and path tracing: the fast ones must
    //! give the same answers. The windows along the traced paths are measured by the same code.
    use super::{MIN_CHORD, SAMPLE_STEP, WINDOW, estimate, measure_windows};
    use crate::plane::components;

    /// Tortuosity estimate and its confidence, or `None` when too few segments qualify.
    pub(super) fn tortuosity(map: &[bool], w: usize, h: usize, r: f32) -> Option<(f32, f32)> {
        if w < 3 || h < 3 || map.len() != w * h {
            return None;
        }
        let mut skel = map.to_vec();
        thin(&mut skel, w, h);
        // Branch points split the skeleton into simple paths. A branch is where three or more
        // arms leave (crossing number: off-to-on changes around the 8 neighbours); counting
        // neighbours instead would cut every staircase step of a thinned line.
        let branch: Vec<usize> = (0..w * h)
            .filter(|&i| {
                let (x, y) = (i % w, i / w);
                if !skel[i] || x == 0 || y == 0 || x + 1 >= w || y + 1 >= h {
                    return false;
                }
                let p = [
                    skel[i - w],
                    skel[i - w + 1],
                    skel[i + 1],
                    skel[i + w + 1],
                    skel[i + w],
                    skel[i + w - 1],
                    skel[i - 1],
                    skel[i - w - 1],
                ];
                (0..8).filter(|k| !p[*k] && p[(k + 1) % 8]).count() >= 3
            })
            .collect();
        for i in branch {
            skel[i] = false;
        }
        let (comps, labels) = components(&skel, w, h);
        let min_chord = MIN_CHORD * r;
        let mut pixels: Vec<Vec<usize>> = vec![Vec::new(); comps.len()];
        for (i, l) in labels.iter().enumerate() {
            if *l > 0
                && let Some(p) = pixels.get_mut(*l as usize - 1)
            {
                p.push(i);
            }
        }
        // Windows of a fixed arc length along every path: tortuosity at the scale of a vessel's
        // bends, so the wide sweep of the arcades around the macula does not count as tortuous.
        let window = ((WINDOW * r).round() as usize).max(4 * SAMPLE_STEP);
        let mut values: Vec<f32> = Vec::new();
        let mut paths = 0usize;
        let mut samples = Vec::new();
        for (c, members) in comps.iter().zip(&pixels) {
            let extent = (c.bbox_w().max(c.bbox_h())) as f32;
            if extent < min_chord || members.len() < window {
                continue;
            }
            let Some(path) = trace(&skel, members, w, h) else {
                continue;
            };
            paths += 1;
            measure_windows(&path, w, window, &mut samples, &mut values);
        }
        estimate(paths, values)
    }

    /// Orders a simple path's pixels from one end to the other; `None` for a loop or a path with a
    /// stray pixel (a component that is not a simple path).
    fn trace(skel: &[bool], members: &[usize], w: usize, h: usize) -> Option<Vec<usize>> {
        let next_of = |i: usize, prev: Option<usize>| -> Vec<usize> {
            let (x, y) = (i % w, i / w);
            let mut out = Vec::with_capacity(2);
            for dy in -1isize..=1 {
                for dx in -1isize..=1 {
                    if (dx, dy) == (0, 0) {
                        continue;
                    }
                    let (nx, ny) = (x as isize + dx, y as isize + dy);
                    if nx < 0 || ny < 0 || nx as usize >= w || ny as usize >= h {
                        continue;
                    }
                    let j = ny as usize * w + nx as usize;
                    if Some(j) != prev && skel.get(j).copied().unwrap_or(false) {
                        out.push(j);
                    }
                }
            }
            out
        };
        let start = *members.iter().find(|&&i| next_of(i, None).len() == 1)?;
        let mut path = vec![start];
        let mut seen = std::collections::HashSet::from([start]);
        let mut prev = None;
        let mut cur = start;
        loop {
            // Prefer the 4-neighbour step where a corner offers both (keeps the path one pixel).
            let next: Vec<usize> = next_of(cur, prev)
                .into_iter()
                .filter(|j| !seen.contains(j))
                .collect();
            let Some(&step) = next
                .iter()
                .find(|&&j| j % w == cur % w || j / w == cur / w)
                .or(next.first())
            else {
                break;
            };
            seen.insert(step);
            path.push(step);
            prev = Some(cur);
            cur = step;
        }
        (path.len() * 10 >= members.len() * 9).then_some(path)
    }

    /// Zhang-Suen thinning in place: removes boundary pixels in two alternating sub-passes until
    /// none changes, leaving an 8-connected skeleton one pixel wide.
    pub(super) fn thin(map: &mut [bool], w: usize, h: usize) {
        let mut candidates: Vec<usize> = (0..w * h)
            .filter(|&i| {
                let (x, y) = (i % w, i / w);
                map[i] && x > 0 && y > 0 && x + 1 < w && y + 1 < h
            })
            .collect();
        // Pixels on the frame border are dropped: the neighbourhood needs all eight neighbours.
        for (i, v) in map.iter_mut().enumerate() {
            let (x, y) = (i % w, i / w);
            if x == 0 || y == 0 || x + 1 == w || y + 1 == h {
                *v = false;
            }
        }
        let mut remove = Vec::new();
        loop {
            let mut changed = false;
            for pass in 0..2 {
                remove.clear();
                for &i in &candidates {
                    if !map[i] {
                        continue;
                    }
                    // P2..P9 clockwise from north.
                    let p = [
                        map[i - w],
                        map[i - w + 1],
                        map[i + 1],
                        map[i + w + 1],
                        map[i + w],
                        map[i + w - 1],
                        map[i - 1],
                        map[i - w - 1],
                    ];
                    let b = p.iter().filter(|v| **v).count();
                    if !(2..=6).contains(&b) {
                        continue;
                    }
                    let a = (0..8).filter(|k| !p[*k] && p[(k + 1) % 8]).count();
                    if a != 1 {
                        continue;
                    }
                    let (n, e, s, wst) = (p[0], p[2], p[4], p[6]);
                    let ok = if pass == 0 {
                        !(e && s && (n || wst))
                    } else {
                        !(n && wst && (e || s))
                    };
                    if ok {
                        remove.push(i);
                    }
                }
                for &i in &remove {
                    map[i] = false;
                }
                changed |= !remove.is_empty();
            }
            if !changed {
                break;
            }
            candidates.retain(|&i| map[i]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draw(w: usize, h: usize, f: impl Fn(f32) -> f32, thick: f32) -> Vec<bool> {
        let mut m = vec![false; w * h];
        for y in 0..h {
            for x in 0..w {
                let yc = f(x as f32);
                if (y as f32 - yc).abs() <= thick && x > 10 && x + 10 < w {
                    m[y * w + x] = true;
                }
            }
        }
        m
    }

    #[test]
    fn thinning_leaves_a_one_pixel_line() {
        let (w, h) = (60, 20);
        let mut m = draw(w, h, |_| 10.0, 2.0);
        thin(&mut m, w, h);
        for x in 15..45 {
            let n = (0..h).filter(|y| m[y * w + x]).count();
            assert_eq!(n, 1, "column {x}");
        }
    }

    #[test]
    fn straight_lines_measure_near_zero_and_waves_more() {
        let (w, h) = (300, 300);
        // Several parallel straight bands and several wavy ones, separately.
        let mut straight = vec![false; w * h];
        let mut wavy = vec![false; w * h];
        for k in 0..5 {
            let y0 = 30.0 + 55.0 * k as f32;
            let slope = 0.1 * k as f32;
            let s = draw(w, h, |x| y0 + slope * (x - 150.0), 1.5);
            let v = draw(w, h, |x| y0 + 3.0 * (x / 4.0).sin(), 1.5);
            for i in 0..w * h {
                straight[i] |= s[i];
                wavy[i] |= v[i];
            }
        }
        let (ts, _) = tortuosity(&straight, w, h, 150.0).unwrap();
        let (tw, c) = tortuosity(&wavy, w, h, 150.0).unwrap();
        assert!(ts < 0.03, "straight {ts}");
        // A sine of amplitude 3 and period 2π·4 is about 1.12 times its chord; the thinned
        // pixel path cuts the peaks a little.
        assert!((0.06..0.2).contains(&tw), "wavy {tw}");
        assert!(c > 0.0 && c <= 0.5);
    }

    #[test]
    fn an_empty_map_has_no_estimate() {
        assert!(tortuosity(&vec![false; 100 * 100], 100, 100, 50.0).is_none());
        assert!(tortuosity(&[], 0, 0, 50.0).is_none());
    }

    /// A pseudo-random map: `density` noise plus a few thick random walks (vessel-like paths
    /// with branches and crossings).
    fn random_map(w: usize, h: usize, density: f64, walks: usize, seed: u64) -> Vec<bool> {
        let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
        let mut next = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as f64 / (1u64 << 31) as f64
        };
        let mut m: Vec<bool> = (0..w * h).map(|_| next() < density).collect();
        for _ in 0..walks {
            let (mut x, mut y) = (next() * w as f64, next() * h as f64);
            let mut a = next() * std::f64::consts::TAU;
            let thick = 1 + (next() * 3.0) as usize;
            for _ in 0..(w + h) {
                a += (next() - 0.5) * 0.8;
                x += a.cos();
                y += a.sin();
                for dy in 0..thick {
                    for dx in 0..thick {
                        let (px, py) = (x as usize + dx, y as usize + dy);
                        if x >= 0.0 && y >= 0.0 && px < w && py < h {
                            m[py * w + px] = true;
                        }
                    }
                }
            }
        }
        m
    }

    proptest::proptest! {
        #[test]
        fn fast_thinning_and_tortuosity_match_the_reference(
            w in 3usize..90, h in 3usize..90, density in 0.0f64..0.3, walks in 0usize..12,
            seed in 0u64..100_000, r in 10.0f32..80.0,
        ) {
            let map = random_map(w, h, density, walks, seed);
            let (mut fast, mut slow) = (map.clone(), map.clone());
            thin(&mut fast, w, h);
            reference::thin(&mut slow, w, h);
            proptest::prop_assert_eq!(fast, slow);
            let got = tortuosity(&map, w, h, r);
            let want = reference::tortuosity(&map, w, h, r);
            proptest::prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn the_reference_comparison_sees_real_estimates() {
        // The property test is only meaningful if random maps often yield an estimate.
        let estimates = (0..40)
            .filter(|s| tortuosity(&random_map(200, 200, 0.0, 12, *s), 200, 200, 20.0).is_some())
            .count();
        assert!(estimates >= 10, "{estimates} of 40 maps gave an estimate");
    }
}
