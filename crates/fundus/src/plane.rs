//! A single-channel `f32` image and the few filters the measurements need.
//!
//! Everything here works on buffers this crate allocated itself, with sizes checked at
//! construction, so row/column arithmetic stays in bounds; access goes through `get`/`chunks`,
//! except in hot loops that index only buffers sized a few lines above in the same function.

/// A single-channel image, row-major, `w * h` values.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Plane {
    pub w: usize,
    pub h: usize,
    pub data: Vec<f32>,
}

impl Plane {
    /// A plane filled with `value`.
    pub fn filled(w: usize, h: usize, value: f32) -> Self {
        Plane {
            w,
            h,
            data: vec![value; w * h],
        }
    }

    /// Builds a plane from an interleaved RGB8 buffer with a per-pixel mapping.
    pub fn from_rgb(rgb: &[u8], w: usize, h: usize, f: impl Fn(f32, f32, f32) -> f32) -> Self {
        // One exact-size collect (no capacity check per pixel), so the mapping vectorises.
        let mut data: Vec<f32> = rgb
            .chunks_exact(3)
            .take(w * h)
            .map(|px| f(f32::from(px[0]), f32::from(px[1]), f32::from(px[2])))
            .collect();
        data.resize(w * h, 0.0);
        Plane { w, h, data }
    }

    /// Value at `(x, y)`, or 0 outside.
    #[inline]
    pub fn get(&self, x: usize, y: usize) -> f32 {
        if x < self.w && y < self.h {
            self.data.get(y * self.w + x).copied().unwrap_or(0.0)
        } else {
            0.0
        }
    }

    /// Value at signed coordinates, clamped to the border.
    #[inline]
    pub fn get_clamped(&self, x: isize, y: isize) -> f32 {
        // min-then-max rather than clamp: clamp panics on an empty plane (max < min).
        let cx = x.min(self.w as isize - 1).max(0) as usize;
        let cy = y.min(self.h as isize - 1).max(0) as usize;
        self.get(cx, cy)
    }

    /// Mean of a box of radius `r` around each pixel, counting only pixels where `mask` is set
    /// (so the black outside the field does not darken the field's edge). Pixels with no masked
    /// neighbour get `fallback`. (The stage uses [`Plane::fill_unmasked_with_box_mean`]; this
    /// is its reference in tests.)
    #[cfg(test)]
    pub fn masked_box_mean(&self, mask: &[bool], r: usize, fallback: f32) -> Plane {
        self.box_mean_of(Some(mask), r, fallback)
    }

    /// This plane where `mask` is set, and elsewhere the mean of the masked pixels in a box of
    /// radius `r` (`fallback` where there are none): the same values as replacing the unmasked
    /// pixels by [`Plane::masked_box_mean`]'s, but the means are divided out only where they
    /// are used (outside a field mask, about a quarter of the plane).
    pub fn fill_unmasked_with_box_mean(&self, mask: &[bool], r: usize, fallback: f32) -> Plane {
        let mut out = self.box_mean_where(Some(mask), r, fallback, true);
        for ((o, v), m) in out.data.iter_mut().zip(&self.data).zip(mask) {
            if *m {
                *o = *v;
            }
        }
        out
    }

    /// Plain box mean of radius `r` (border pixels average over the part inside the image).
    pub fn box_mean(&self, r: usize) -> Plane {
        if r == 1 && self.w >= 3 && self.h >= 3 && self.data.len() == self.w * self.h {
            return self.box_mean_3x3();
        }
        self.box_mean_of(None, r, 0.0)
    }

    /// [`Plane::box_mean`] for `r = 1`: three-row column sums, then three of those along each
    /// row, in `f64`. Sums of at most nine 8-bit-range `f32` samples are exact in `f64` in any
    /// order, so this gives the running-sum version's values bit for bit, with less work.
    fn box_mean_3x3(&self) -> Plane {
        let (w, h) = (self.w, self.h);
        let mut data = vec![0.0f32; w * h];
        let mut col = vec![0.0f64; w];
        let rows: Vec<&[f32]> = self.data.chunks_exact(w).collect();
        for (y, out) in data.chunks_exact_mut(w).enumerate() {
            let (y0, y1) = (y.saturating_sub(1), (y + 2).min(h));
            let n_rows = (y1 - y0) as f64;
            match &rows[y0..y1] {
                [a, b, c] => {
                    for (((s, a), b), c) in col.iter_mut().zip(*a).zip(*b).zip(*c) {
                        *s = f64::from(*a) + f64::from(*b) + f64::from(*c);
                    }
                }
                [a, b] => {
                    for ((s, a), b) in col.iter_mut().zip(*a).zip(*b) {
                        *s = f64::from(*a) + f64::from(*b);
                    }
                }
                _ => {}
            }
            let n = 3.0 * n_rows;
            for ((o, l), (m, r)) in out[1..w - 1]
                .iter_mut()
                .zip(&col[..w - 2])
                .zip(col[1..w - 1].iter().zip(&col[2..]))
            {
                *o = ((l + m + r) / n) as f32;
            }
            out[0] = ((col[0] + col[1]) / (2.0 * n_rows)) as f32;
            out[w - 1] = ((col[w - 2] + col[w - 1]) / (2.0 * n_rows)) as f32;
        }
        Plane { w, h, data }
    }

    /// Separable box mean in row order (see [`box_sums`]): running column sums down the
    /// window, then windowed sums of those along each row. The running sums in f64 hold at
    /// most `w × (2r+1)` values of 24-bit precision, exact while the values span under about
    /// 29 bits of magnitude (8-bit image data and its means do), so the result does not depend
    /// on the order of the additions. A plane of 8-bit integers (the green channel) is summed
    /// in `u32` instead: the same exact sums, on lanes half as wide. Mask entries past the end
    /// of a short mask count as unset.
    fn box_mean_of(&self, mask: Option<&[bool]>, r: usize, fallback: f32) -> Plane {
        self.box_mean_where(mask, r, fallback, false)
    }

    /// [`Plane::box_mean_of`]; with `only_unmasked`, the means are computed only where `mask`
    /// is unset (the other pixels hold `fallback`).
    fn box_mean_where(
        &self,
        mask: Option<&[bool]>,
        r: usize,
        fallback: f32,
        only_unmasked: bool,
    ) -> Plane {
        let (w, h) = (self.w, self.h);
        if w == 0 || h == 0 || self.data.len() < w * h {
            return Plane::filled(w, h, fallback);
        }
        let data = self.data.get(..w * h).unwrap_or(&[]);
        // Integer sums when every running total fits u32: a row's running prefix holds up to
        // w column sums of 2r+1 samples each. The checks fold without an early exit (and use
        // casts, not `trunc`, a libm call on baseline x86-64), so they vectorise.
        let fits = |max: u64| (w as u64) * (2 * r as u64 + 1) * max <= u64::from(u32::MAX);
        let is_bytes = fits(255)
            && data
                .iter()
                .fold(true, |ok, v| ok & (f32::from(*v as u8) == *v));
        // Whole numbers to 65535 (the disc's brightness plane).
        let is_words = !is_bytes
            && fits(65535)
            && data
                .iter()
                .fold(true, |ok, v| ok & (f32::from(*v as u16) == *v));
        let data = if is_words {
            let words: Vec<u16> = data.iter().map(|v| *v as u16).collect();
            box_sums::<u16, u32>(&words, w, h, mask, r, fallback, only_unmasked)
        } else if is_bytes {
            let bytes: Vec<u8> = data.iter().map(|v| *v as u8).collect();
            box_sums::<u8, u32>(&bytes, w, h, mask, r, fallback, only_unmasked)
        } else {
            box_sums::<f32, f64>(data, w, h, mask, r, fallback, only_unmasked)
        };
        Plane { w, h, data }
    }

    /// [`Plane::box_mean`]'s value at `(x, y)` clamped to the plane (the same value as
    /// `box_mean(r).get_clamped(x, y)`), computed for that one pixel.
    pub fn box_mean_at(&self, x: isize, y: isize, r: usize) -> f32 {
        if self.w == 0 || self.h == 0 {
            return 0.0;
        }
        let cx = x.min(self.w as isize - 1).max(0) as usize;
        let cy = y.min(self.h as isize - 1).max(0) as usize;
        let (x0, x1) = (cx.saturating_sub(r), (cx + r + 1).min(self.w));
        let (y0, y1) = (cy.saturating_sub(r), (cy + r + 1).min(self.h));
        let mut s = 0.0f64;
        for row in self.data.chunks_exact(self.w).take(y1).skip(y0) {
            s += row[x0..x1].iter().map(|v| f64::from(*v)).sum::<f64>();
        }
        (s / ((x1 - x0) * (y1 - y0)) as f64) as f32
    }

    /// Grey-level dilation (`max`) with a `(2r+1)` square, separable.
    pub fn dilate(&self, r: usize) -> Plane {
        self.morph(r, true)
    }

    /// Grey-level erosion (`min`) with a `(2r+1)` square, separable.
    pub fn erode(&self, r: usize) -> Plane {
        self.morph(r, false)
    }

    /// Closing: fills dark structures narrower than the square (vessels, small haemorrhages).
    pub fn close(&self, r: usize) -> Plane {
        self.dilate(r).erode(r)
    }

    /// Opening: removes bright structures narrower than the square (exudates).
    pub fn open(&self, r: usize) -> Plane {
        self.erode(r).dilate(r)
    }

    fn morph(&self, r: usize, is_max: bool) -> Plane {
        let data = if is_max {
            morph2d::<true>(&self.data, self.w, r)
        } else {
            morph2d::<false>(&self.data, self.w, r)
        };
        Plane {
            w: self.w,
            h: self.h,
            data,
        }
    }
}

/// The sums of [`Plane::box_mean_of`] over `w * h` samples `vals`, accumulated in `T` (exact
/// for the sample type), divided in f64 at the end.
///
/// Each pass is a plain loop over a row (vectorised): a row's masked samples are added to
/// running column sums as it enters the window and subtracted (recomputed from the source) as
/// it leaves; each output row is the windowed sum of the column sums along the row, from
/// their running totals. Without a mask the counts are the clipped window's area.
fn box_sums<S, T>(
    vals: &[S],
    w: usize,
    h: usize,
    mask: Option<&[bool]>,
    r: usize,
    fallback: f32,
    only_unmasked: bool,
) -> Vec<f32>
where
    S: Copy + Into<T>,
    T: Copy
        + Default
        + From<u8>
        + Into<f64>
        + std::ops::Add<Output = T>
        + std::ops::Sub<Output = T>
        + std::ops::Mul<Output = T>
        + std::ops::AddAssign
        + std::ops::SubAssign,
{
    let zero = T::default();
    let mut col_s = vec![zero; w];
    let mut col_n = vec![zero; w];
    let mut prefix = vec![zero; w + 1];
    let mut prefix_n = vec![zero; w + 1];
    let mut data = vec![fallback; w * h];
    // A short mask counts as unset past its end: padded once so rows are plain slices.
    let padded;
    let mask = match mask {
        Some(m) if m.len() < w * h => {
            padded = [m, &vec![false; w * h - m.len()]].concat();
            Some(&padded[..])
        }
        other => other,
    };
    // Adds (`enter`) or subtracts row y's masked samples and counts.
    let update = |col_s: &mut [T], col_n: &mut [T], y: usize, enter: bool| {
        let row = &vals[y * w..(y + 1) * w];
        match mask {
            Some(m) => {
                let on = &m[y * w..(y + 1) * w];
                for (((c, n), v), o) in col_s.iter_mut().zip(col_n.iter_mut()).zip(row).zip(on) {
                    let o = T::from(u8::from(*o));
                    if enter {
                        *c += o * (*v).into();
                        *n += o;
                    } else {
                        *c -= o * (*v).into();
                        *n -= o;
                    }
                }
            }
            None => {
                for (c, v) in col_s.iter_mut().zip(row) {
                    if enter {
                        *c += (*v).into();
                    } else {
                        *c -= (*v).into();
                    }
                }
            }
        }
    };
    for y in 0..h + r {
        // Row y enters the window of output row y - r ...
        if y < h {
            update(&mut col_s, &mut col_n, y, true);
        }
        let Some(out_y) = y.checked_sub(r) else {
            continue;
        };
        // Running totals kept in registers: reading back the stored prefix would chain every
        // addition through a store-to-load round trip. Without a mask the counts are areas and
        // need no running totals.
        let mut acc = zero;
        for (p, c) in prefix[1..].iter_mut().zip(&col_s) {
            acc += *c;
            *p = acc;
        }
        if mask.is_some() {
            let mut acc_n = zero;
            for (p, c) in prefix_n[1..].iter_mut().zip(&col_n) {
                acc_n += *c;
                *p = acc_n;
            }
        }
        let rows = ((out_y + r + 1).min(h) - out_y.saturating_sub(r)) as f64;
        let out = &mut data[out_y * w..(out_y + 1) * w];
        let mean = |s: T, n: f64| -> f32 {
            let s: f64 = s.into();
            // Counts are whole numbers; 0.5 absorbs any rounding of the running sum.
            if n > 0.5 { (s / n) as f32 } else { fallback }
        };
        // Interior columns (the whole window inside the row): slices of the running totals
        // `2r + 1` apart, a loop without index arithmetic that vectorises, divisions included.
        let k = 2 * r + 1;
        let inner = w.saturating_sub(2 * r);
        if inner > 0
            && only_unmasked
            && let Some(m) = mask
        {
            // Only the unmasked pixels (a field's surround: the row's two ends, or all of a
            // row outside the field). Between the row's first and last masked pixel there is
            // usually nothing to do, which one vectorised check tells.
            let on = &m[out_y * w + r..out_y * w + r + inner];
            let first = on.iter().position(|o| *o).unwrap_or(inner);
            let last = on.iter().rposition(|o| *o).map_or(first, |l| l + 1);
            let middle_all_set = on[first..last].iter().fold(true, |a, o| a & *o);
            let (skip_from, skip_to) = if middle_all_set {
                (first, last)
            } else {
                (inner, inner)
            };
            for i in (0..skip_from).chain(skip_to..inner) {
                if !on[i] {
                    out[r + i] = mean(
                        prefix[k + i] - prefix[i],
                        (prefix_n[k + i] - prefix_n[i]).into(),
                    );
                }
            }
        } else if inner > 0 {
            let (hi, lo) = (&prefix[k..k + inner], &prefix[..inner]);
            let mid = &mut out[r..r + inner];
            if mask.is_some() {
                let (nhi, nlo) = (&prefix_n[k..k + inner], &prefix_n[..inner]);
                for ((o, (a, b)), (na, nb)) in mid
                    .iter_mut()
                    .zip(hi.iter().zip(lo))
                    .zip(nhi.iter().zip(nlo))
                {
                    *o = mean(*a - *b, (*na - *nb).into());
                }
            } else {
                let n = k as f64 * rows;
                for (o, (a, b)) in mid.iter_mut().zip(hi.iter().zip(lo)) {
                    *o = mean(*a - *b, n);
                }
            }
        }
        // The clipped windows at both ends.
        let edges = (0..r.min(w)).chain((r + inner).max(r.min(w))..w);
        for x in edges {
            let (x0, x1) = (x.saturating_sub(r), (x + r + 1).min(w));
            let n = if mask.is_some() {
                (prefix_n[x1] - prefix_n[x0]).into()
            } else {
                (x1 - x0) as f64 * rows
            };
            out[x] = mean(prefix[x1] - prefix[x0], n);
        }
        // ... and row out_y - r leaves it after that row.
        if let Some(leaving) = out_y.checked_sub(r) {
            update(&mut col_s, &mut col_n, leaving, false);
        }
    }
    data
}

/// `max` (`MAX`) or `min` of two samples, as one SIMD instruction (the planes hold no NaN).
#[inline(always)]
fn pick<const MAX: bool>(a: f32, b: f32) -> f32 {
    if MAX {
        if a > b { a } else { b }
    } else if a < b {
        a
    } else {
        b
    }
}

/// The value that never wins a [`pick`].
fn neutral<const MAX: bool>() -> f32 {
    if MAX {
        f32::NEG_INFINITY
    } else {
        f32::INFINITY
    }
}

/// Separable running max/min over a `(2r+1)` square, the window clipped at the borders: along
/// the rows, then down the columns.
fn morph2d<const MAX: bool>(data: &[f32], w: usize, r: usize) -> Vec<f32> {
    if w == 0 || data.is_empty() || r == 0 {
        return data.to_vec();
    }
    let rows = morph_rows::<MAX>(data, w, r);
    morph_cols::<MAX>(&rows, w, r)
}

/// Running max/min along every row of a row-major buffer with rows of `w`, by doubling: with
/// `P` the largest power of two not above `k = 2r+1`, the extremes of runs of 2, 4, ..., `P`
/// samples come from `log2 P` passes of pairwise picks, and each window of `k` is the pick of
/// two overlapping runs of `P`. Every pass is a plain elementwise loop over the row (SIMD).
fn morph_rows<const MAX: bool>(data: &[f32], w: usize, r: usize) -> Vec<f32> {
    let k = 2 * r + 1;
    let p = 1usize << (usize::BITS - 1 - k.leading_zeros());
    let len = w + 2 * r;
    let mut out = Vec::with_capacity(data.len());
    let (mut a, mut b) = (Vec::with_capacity(len), Vec::with_capacity(len));
    for line in data.chunks_exact(w) {
        // Padded by r neutral values on each side; padded index x starts the window of output x.
        a.clear();
        a.resize(r, neutral::<MAX>());
        a.extend_from_slice(line);
        a.resize(len, neutral::<MAX>());
        let (mut s, mut valid) = (1usize, len);
        while 2 * s <= p {
            b.clear();
            b.extend(
                a[..valid - s]
                    .iter()
                    .zip(&a[s..valid])
                    .map(|(x, y)| pick::<MAX>(*x, *y)),
            );
            std::mem::swap(&mut a, &mut b);
            valid -= s;
            s *= 2;
        }
        // a[i] = extreme of padded [i, i + p); the window [x, x + k) is two such runs.
        out.extend(
            a[..w]
                .iter()
                .zip(&a[k - p..k - p + w])
                .map(|(x, y)| pick::<MAX>(*x, *y)),
        );
    }
    out
}

/// The running max/min down the columns, a whole row at a time so memory is read in order:
/// van Herk / Gil-Werman blocks of `k = 2r+1` rows over the rows padded by `r` neutral rows at
/// each end. A forward pass stores the prefix extremes of each block; a backward pass keeps the
/// suffix extreme in one running row and combines it with the stored prefix `k - 1` rows on.
fn morph_cols<const MAX: bool>(data: &[f32], w: usize, r: usize) -> Vec<f32> {
    let h = data.len() / w;
    let k = 2 * r + 1;
    let padded = h + 2 * r;
    let row = |p: usize| -> Option<&[f32]> {
        p.checked_sub(r)
            .filter(|i| *i < h)
            .and_then(|i| data.get(i * w..(i + 1) * w))
    };
    // Prefix extremes; padded rows before r are neutral and need no storage.
    let mut g = vec![neutral::<MAX>(); padded * w];
    for p in r..padded {
        let (done, rest) = g.split_at_mut(p * w);
        let cur = &mut rest[..w];
        match (row(p), p % k == 0) {
            (Some(src), true) => cur.copy_from_slice(src),
            (Some(src), false) => {
                let prev = &done[(p - 1) * w..];
                for ((c, s), q) in cur.iter_mut().zip(src).zip(prev) {
                    *c = pick::<MAX>(*s, *q);
                }
            }
            (None, true) => {}
            (None, false) => {
                let prev = &done[(p - 1) * w..];
                cur.copy_from_slice(&prev[..w]);
            }
        }
    }
    let mut out = vec![0.0f32; h * w];
    let mut acc = vec![neutral::<MAX>(); w];
    // Only padded rows below h are outputs; start at the end of the block holding row h - 1.
    let last = (h - 1) / k * k + k - 1;
    for p in (0..=last.min(padded - 1)).rev() {
        let block_end = p % k == k - 1 || p == padded - 1;
        match (row(p), block_end) {
            (Some(src), true) => acc.copy_from_slice(src),
            (Some(src), false) => {
                for (a, s) in acc.iter_mut().zip(src) {
                    *a = pick::<MAX>(*a, *s);
                }
            }
            (None, true) => acc.fill(neutral::<MAX>()),
            (None, false) => {}
        }
        if p < h {
            let gp = &g[(p + k - 1) * w..(p + k) * w];
            for ((o, a), q) in out[p * w..(p + 1) * w].iter_mut().zip(&acc).zip(gp) {
                *o = pick::<MAX>(*a, *q);
            }
        }
    }
    out
}

/// Summed-area table of a plane, for box sums in O(1).
#[derive(Debug, Clone)]
pub(crate) struct SummedArea {
    w: usize,
    h: usize,
    data: Vec<f64>,
}

impl SummedArea {
    pub fn new(p: &Plane) -> Self {
        let stride = p.w + 1;
        let mut data = vec![0.0f64; stride * (p.h + 1)];
        for y in 0..p.h {
            let mut row = 0.0f64;
            for x in 0..p.w {
                row += f64::from(p.get(x, y));
                let above = data.get(y * stride + x + 1).copied().unwrap_or(0.0);
                if let Some(d) = data.get_mut((y + 1) * stride + x + 1) {
                    *d = above + row;
                }
            }
        }
        SummedArea {
            w: p.w,
            h: p.h,
            data,
        }
    }

    /// Sum and pixel count of the box `[x0, x1) x [y0, y1)` clipped to the plane.
    pub fn sum(&self, x0: isize, y0: isize, x1: isize, y1: isize) -> (f64, f64) {
        let cx = |v: isize| v.clamp(0, self.w as isize) as usize;
        let cy = |v: isize| v.clamp(0, self.h as isize) as usize;
        let (x0, x1, y0, y1) = (cx(x0), cx(x1), cy(y0), cy(y1));
        if x1 <= x0 || y1 <= y0 {
            return (0.0, 0.0);
        }
        let stride = self.w + 1;
        let at = |x: usize, y: usize| self.data.get(y * stride + x).copied().unwrap_or(0.0);
        let s = at(x1, y1) - at(x0, y1) - at(x1, y0) + at(x0, y0);
        (s, ((x1 - x0) * (y1 - y0)) as f64)
    }
}

/// Connected components (8-neighbour) of a binary map.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Component {
    pub area: usize,
    pub min_x: usize,
    pub min_y: usize,
    pub max_x: usize,
    pub max_y: usize,
    pub sum_x: f64,
    pub sum_y: f64,
}

impl Component {
    pub fn bbox_w(&self) -> usize {
        self.max_x - self.min_x + 1
    }
    pub fn bbox_h(&self) -> usize {
        self.max_y - self.min_y + 1
    }
    pub fn centroid(&self) -> (f32, f32) {
        let a = self.area.max(1) as f64;
        ((self.sum_x / a) as f32, (self.sum_y / a) as f32)
    }
    /// Compact, roughly round blob (as opposed to a vessel segment).
    pub fn is_blob(&self) -> bool {
        let (bw, bh) = (self.bbox_w(), self.bbox_h());
        let long = bw.max(bh);
        let short = bw.min(bh).max(1);
        let fill = self.area as f32 / (bw * bh).max(1) as f32;
        long <= 3 * short && fill >= 0.35
    }
}

/// Labels the 8-connected components of `map` (`w * h`), returning their statistics and the
/// label of each pixel (0 = background, i + 1 = `components[i]`). Components are numbered in
/// the raster order of their first pixel.
///
/// Run-based: each row's runs of set pixels are merged (union-find) with the runs of the row
/// above that touch them (8-connectivity: overlapping or diagonally adjacent), so the work is
/// per run rather than per pixel and neighbour.
pub(crate) fn components(map: &[bool], w: usize, h: usize) -> (Vec<Component>, Vec<u32>) {
    let mut labels = vec![0u32; w * h];
    if w == 0 || h == 0 || map.len() < w * h {
        return (Vec::new(), labels);
    }
    // Runs as (y, x0, x1) with x1 exclusive, in raster order.
    let mut runs: Vec<(usize, usize, usize)> = Vec::new();
    // Index of the first run of each row (and one past the last row).
    let mut row_start = Vec::with_capacity(h + 1);
    for (y, row) in map.chunks_exact(w).take(h).enumerate() {
        row_start.push(runs.len());
        let mut x = 0;
        while x < w {
            // Skip a stretch of unset pixels, then take the run of set ones.
            match row[x..].iter().position(|v| *v) {
                None => break,
                Some(off) => x += off,
            }
            let len = row[x..].iter().position(|v| !*v).unwrap_or(w - x);
            runs.push((y, x, x + len));
            x += len;
        }
    }
    row_start.push(runs.len());
    let mut parent: Vec<u32> = (0..runs.len() as u32).collect();
    fn find(parent: &mut [u32], mut i: u32) -> u32 {
        while parent[i as usize] != i {
            let p = parent[i as usize];
            parent[i as usize] = parent[p as usize];
            i = p;
        }
        i
    }
    for y in 1..h {
        let (above, here) = (
            row_start[y - 1]..row_start[y],
            row_start[y]..row_start[y + 1],
        );
        let mut a = above.start;
        for i in here {
            let (_, x0, x1) = runs[i];
            // Runs above touching [x0 - 1, x1 + 1): skip those ending before x0 - 1.
            while a < above.end && runs[a].2 < x0 {
                a += 1;
            }
            let mut j = a;
            while j < above.end && runs[j].1 <= x1 {
                let (ri, rj) = (find(&mut parent, i as u32), find(&mut parent, j as u32));
                if ri != rj {
                    // The earlier run stays the root, so a component's root is its first run.
                    let (lo, hi) = if ri < rj { (ri, rj) } else { (rj, ri) };
                    parent[hi as usize] = lo;
                }
                j += 1;
            }
        }
    }
    let mut comps: Vec<Component> = Vec::new();
    let mut comp_of_root = vec![u32::MAX; runs.len()];
    for (i, &(y, x0, x1)) in runs.iter().enumerate() {
        let root = find(&mut parent, i as u32) as usize;
        let id = if comp_of_root[root] == u32::MAX {
            comps.push(Component {
                area: 0,
                min_x: x0,
                min_y: y,
                max_x: x0,
                max_y: y,
                sum_x: 0.0,
                sum_y: 0.0,
            });
            comp_of_root[root] = comps.len() as u32 - 1;
            comps.len() - 1
        } else {
            comp_of_root[root] as usize
        };
        let c = &mut comps[id];
        let n = x1 - x0;
        c.area += n;
        c.min_x = c.min_x.min(x0);
        c.max_x = c.max_x.max(x1 - 1);
        c.min_y = c.min_y.min(y);
        c.max_y = c.max_y.max(y);
        c.sum_x += (n * (x0 + x1 - 1)) as f64 / 2.0;
        c.sum_y += (n * y) as f64;
        labels[y * w + x0..y * w + x1].fill(id as u32 + 1);
    }
    (comps, labels)
}

/// Median and robust standard deviation (1.4826 * MAD) of the values selected by `mask`,
/// estimated from every second of them in raster order: these are noise levels over tens of
/// thousands of pixels, which half of them estimate as well (a standard error of the median
/// near 0.5 % of sigma), for half the selection work.
pub(crate) fn median_and_sigma(values: &[f32], mask: &[bool]) -> Option<(f32, f32)> {
    let mut v: Vec<f32> = values
        .iter()
        .zip(mask)
        .filter(|(_, m)| **m)
        .map(|(v, _)| *v)
        .filter(|v| v.is_finite())
        .step_by(2)
        .collect();
    if v.is_empty() {
        return None;
    }
    let mid = v.len() / 2;
    let (_, med, _) = v.select_nth_unstable_by(mid, f32::total_cmp);
    let med = *med;
    let mut dev: Vec<f32> = v.iter().map(|x| (x - med).abs()).collect();
    let (_, mad, _) = dev.select_nth_unstable_by(mid, f32::total_cmp);
    Some((med, 1.4826 * *mad))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn naive(line: &[f32], r: usize, is_max: bool) -> Vec<f32> {
        (0..line.len())
            .map(|i| {
                let lo = i.saturating_sub(r);
                let hi = (i + r + 1).min(line.len());
                let w = &line[lo..hi];
                if is_max {
                    w.iter().copied().fold(f32::NEG_INFINITY, f32::max)
                } else {
                    w.iter().copied().fold(f32::INFINITY, f32::min)
                }
            })
            .collect()
    }

    /// The per-pixel flood fill the run-based labelling replaced.
    fn flood_components(map: &[bool], w: usize, h: usize) -> (Vec<Component>, Vec<u32>) {
        let mut labels = vec![0u32; w * h];
        let mut comps = Vec::new();
        for start in 0..w * h {
            if !map[start] || labels[start] != 0 {
                continue;
            }
            let label = comps.len() as u32 + 1;
            let (sx, sy) = (start % w, start / w);
            let mut c = Component {
                area: 0,
                min_x: sx,
                min_y: sy,
                max_x: sx,
                max_y: sy,
                sum_x: 0.0,
                sum_y: 0.0,
            };
            labels[start] = label;
            let mut stack = vec![start];
            while let Some(i) = stack.pop() {
                let (x, y) = (i % w, i / w);
                c.area += 1;
                c.min_x = c.min_x.min(x);
                c.max_x = c.max_x.max(x);
                c.min_y = c.min_y.min(y);
                c.max_y = c.max_y.max(y);
                c.sum_x += x as f64;
                c.sum_y += y as f64;
                for ny in y.saturating_sub(1)..(y + 2).min(h) {
                    for nx in x.saturating_sub(1)..(x + 2).min(w) {
                        let j = ny * w + nx;
                        if map[j] && labels[j] == 0 {
                            labels[j] = label;
                            stack.push(j);
                        }
                    }
                }
            }
            comps.push(c);
        }
        (comps, labels)
    }

    /// A plane of pseudo-random samples (0-250 times `scale`) for the box-mean properties.
    fn sample_plane(w: usize, h: usize, seed: u32, scale: f32) -> Plane {
        let data = (0..w * h)
            .map(|i| ((i as u32 * 7919 + seed) % 251) as f32 * scale)
            .collect();
        Plane { w, h, data }
    }

    /// A mask with about two pixels of three set.
    fn sample_mask(w: usize, h: usize, seed: u32) -> Vec<bool> {
        (0..w * h)
            .map(|i| !(i as u32 * 31 + seed).is_multiple_of(3))
            .collect()
    }

    proptest! {
        #[test]
        fn run_components_match_flood_fill(w in 1usize..24, h in 1usize..24, density in 0.0f64..1.0, seed in 0u64..10_000) {
            let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let map: Vec<bool> = (0..w * h).map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((state >> 33) as f64 / (1u64 << 31) as f64) < density
            }).collect();
            let (want, want_labels) = flood_components(&map, w, h);
            let (got, got_labels) = components(&map, w, h);
            prop_assert_eq!(got_labels, want_labels);
            prop_assert_eq!(got, want);
        }

        #[test]
        fn running_extreme_matches_naive(line in proptest::collection::vec(0.0f32..255.0, 0..60), r in 0usize..8, is_max: bool) {
            let out = if is_max {
                morph_rows::<true>(&line, line.len().max(1), r)
            } else {
                morph_rows::<false>(&line, line.len().max(1), r)
            };
            prop_assert_eq!(out, naive(&line, r, is_max));
        }

        #[test]
        fn morphology_matches_naive_2d(w in 1usize..20, h in 1usize..20, r in 0usize..12, seed in 0u32..1000) {
            let data: Vec<f32> = (0..w * h).map(|i| ((i as u32 * 7919 + seed) % 251) as f32 * 0.5).collect();
            let p = Plane { w, h, data };
            let (d, e) = (p.dilate(r), p.erode(r));
            for y in 0..h {
                for x in 0..w {
                    let (mut mx, mut mn) = (f32::NEG_INFINITY, f32::INFINITY);
                    for yy in y.saturating_sub(r)..(y + r + 1).min(h) {
                        for xx in x.saturating_sub(r)..(x + r + 1).min(w) {
                            mx = mx.max(p.get(xx, yy));
                            mn = mn.min(p.get(xx, yy));
                        }
                    }
                    prop_assert_eq!(d.get(x, y), mx);
                    prop_assert_eq!(e.get(x, y), mn);
                }
            }
        }

        #[test]
        fn masked_box_mean_matches_naive(w in 1usize..12, h in 1usize..12, r in 0usize..7, seed in 0u32..1000, kind in 0usize..3) {
            // 8-bit integers take the u8 path, larger whole numbers the u16 one (both summed
            // in u32), fractions the f64 one.
            let scale = [1.0, 20.0, 0.37][kind];
            let (p, mask) = (sample_plane(w, h, seed, scale), sample_mask(w, h, seed));
            let m = p.masked_box_mean(&mask, r, -1.0);
            for y in 0..h {
                for x in 0..w {
                    let mut s = 0.0; let mut c = 0.0;
                    for yy in y.saturating_sub(r)..(y + r + 1).min(h) {
                        for xx in x.saturating_sub(r)..(x + r + 1).min(w) {
                            if mask[yy * w + xx] { s += f64::from(p.get(xx, yy)); c += 1.0; }
                        }
                    }
                    // The sums are exact, so the result is too: the same value bit for bit.
                    let want = if c > 0.0 { (s / c) as f32 } else { -1.0 };
                    prop_assert_eq!(m.get(x, y).to_bits(), want.to_bits());
                }
            }
        }

        #[test]
        fn fill_unmasked_matches_masked_box_mean(w in 1usize..12, h in 1usize..12, r in 0usize..7, seed in 0u32..1000, kind in 0usize..3) {
            let scale = [1.0, 20.0, 0.37][kind];
            let (p, mask) = (sample_plane(w, h, seed, scale), sample_mask(w, h, seed));
            let bg = p.masked_box_mean(&mask, r, -1.0);
            let want: Vec<u32> = p.data.iter().zip(&bg.data).zip(&mask)
                .map(|((v, b), m)| if *m { v.to_bits() } else { b.to_bits() })
                .collect();
            let got: Vec<u32> = p.fill_unmasked_with_box_mean(&mask, r, -1.0).data.iter().map(|v| v.to_bits()).collect();
            prop_assert_eq!(got, want);
        }

        #[test]
        fn box_mean_3x3_matches_the_running_sums(w in 3usize..14, h in 3usize..14, seed in 0u32..1000, bytes: bool) {
            let scale = if bytes { 1.0 } else { 0.37 };
            let p = sample_plane(w, h, seed, scale);
            let got: Vec<u32> = p.box_mean(1).data.iter().map(|v| v.to_bits()).collect();
            let want: Vec<u32> = p.box_mean_of(None, 1, 0.0).data.iter().map(|v| v.to_bits()).collect();
            prop_assert_eq!(got, want);
        }

        #[test]
        fn box_mean_at_matches_box_mean(w in 1usize..12, h in 1usize..12, r in 0usize..4, seed in 0u32..1000, x in -3isize..15, y in -3isize..15) {
            let data: Vec<f32> = (0..w * h).map(|i| ((i as u32 * 7919 + seed) % 251) as f32 * 0.37).collect();
            let p = Plane { w, h, data };
            prop_assert!((p.box_mean_at(x, y, r) - p.box_mean(r).get_clamped(x, y)).abs() < 1e-4);
        }

        #[test]
        fn box_mean_matches_naive(w in 1usize..12, h in 1usize..12, r in 0usize..7, seed in 0u32..1000) {
            let data: Vec<f32> = (0..w * h).map(|i| ((i as u32 * 7919 + seed) % 251) as f32).collect();
            let p = Plane { w, h, data };
            let m = p.box_mean(r);
            for y in 0..h {
                for x in 0..w {
                    let mut s = 0.0; let mut c = 0.0;
                    for yy in y.saturating_sub(r)..(y + r + 1).min(h) {
                        for xx in x.saturating_sub(r)..(x + r + 1).min(w) {
                            s += f64::from(p.get(xx, yy)); c += 1.0;
                        }
                    }
                    prop_assert_eq!(m.get(x, y).to_bits(), ((s / c) as f32).to_bits());
                }
            }
        }
    }

    #[test]
    fn two_dimensional_morphology_matches_naive() {
        let (w, h) = (13, 9);
        let p = Plane {
            w,
            h,
            data: (0..w * h).map(|i| ((i * 37 + 11) % 29) as f32).collect(),
        };
        for r in 0..4 {
            let d = p.dilate(r);
            let e = p.erode(r);
            for y in 0..h {
                for x in 0..w {
                    let mut mx = f32::NEG_INFINITY;
                    let mut mn = f32::INFINITY;
                    for yy in y.saturating_sub(r)..(y + r + 1).min(h) {
                        for xx in x.saturating_sub(r)..(x + r + 1).min(w) {
                            mx = mx.max(p.get(xx, yy));
                            mn = mn.min(p.get(xx, yy));
                        }
                    }
                    assert_eq!(d.get(x, y), mx, "dilate r={r} at {x},{y}");
                    assert_eq!(e.get(x, y), mn, "erode r={r} at {x},{y}");
                }
            }
        }
    }

    #[test]
    fn closing_fills_a_thin_dark_line_but_not_a_wide_one() {
        let (w, h) = (40, 20);
        let mut p = Plane::filled(w, h, 100.0);
        for y in 0..h {
            p.data[y * w + 10] = 20.0; // 1 px line
            for x in 25..37 {
                p.data[y * w + x] = 20.0; // 12 px band
            }
        }
        let c = p.close(2);
        assert_eq!(c.get(10, 10), 100.0);
        assert_eq!(c.get(30, 10), 20.0);
    }

    #[test]
    fn components_separate_blobs_from_lines() {
        let (w, h) = (30, 30);
        let mut m = vec![false; w * h];
        for x in 2..28 {
            m[3 * w + x] = true; // line
        }
        for y in 10..14 {
            for x in 10..14 {
                m[y * w + x] = true; // square blob
            }
        }
        let (comps, labels) = components(&m, w, h);
        assert_eq!(comps.len(), 2);
        assert_eq!(comps.iter().filter(|c| c.is_blob()).count(), 1);
        assert_eq!(comps[1].area, 16);
        assert_eq!(labels[11 * w + 11], 2);
    }

    #[test]
    fn wide_planes_of_whole_numbers_do_not_overflow_the_integer_sums() {
        // A row's running prefix of 70,000 samples of 65,000 is over u32 although each window
        // (one sample) is not: the f64 path must take it.
        let p = Plane {
            w: 70_000,
            h: 2,
            data: vec![65_000.0; 140_000],
        };
        assert!(p.box_mean(0).data.iter().all(|v| *v == 65_000.0));
    }

    #[test]
    fn median_and_sigma_ignore_unmasked() {
        // Every second masked value counts: 1, 2, 3 (the 9s are skipped, the 100 is unmasked).
        let v = [1.0, 9.0, 2.0, 9.0, 3.0, 9.0, 100.0];
        let m = [true, true, true, true, true, true, false];
        let (med, sigma) = median_and_sigma(&v, &m).unwrap();
        assert_eq!(med, 2.0);
        assert!((sigma - 1.4826).abs() < 1e-4);
        assert!(median_and_sigma(&v, &[false; 7]).is_none());
    }
}
