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
    for (c, members) in comps.iter().zip(&pixels) {
        let extent = (c.bbox_w().max(c.bbox_h())) as f32;
        if extent < min_chord || members.len() < window {
            continue;
        }
        let Some(path) = trace(&skel, members, w, h) else {
            continue;
        };
        paths += 1;
        let at = |i: usize| ((i % w) as f32, (i / w) as f32);
        let mut start = 0;
        while start + window <= path.len() {
            let piece = &path[start..start + window];
            let samples: Vec<(f32, f32)> = piece
                .iter()
                .step_by(SAMPLE_STEP)
                .chain(piece.last())
                .map(|i| at(*i))
                .collect();
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
fn thin(map: &mut [bool], w: usize, h: usize) {
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
}
