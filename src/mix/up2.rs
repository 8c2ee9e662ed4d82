//! Bilinear scaling by exactly two, straight into the canvas: the common
//! case of a mix (a 640x360 camera in a 1280x720 canvas's half, a 960x540
//! one in a 1920x1080 canvas's half), done here with fixed weights instead of
//! libswscale's general filter path, at a fraction of its cost.
//!
//! Output pixels sit at the centres of their source pixel's quarters, so
//! each is a 9:3:3:1 blend of its four nearest source pixels (3:1 along an
//! edge), rounded once. Neighbours outside the shown region but inside the
//! picture are used (a crop's edge blends with what is beside it, as when
//! the whole picture is scaled and then cropped); at the picture's own
//! edges the edge pixel repeats. Each plane is scaled on its own, chroma
//! included, with the same centred siting.
//!
//! Pure: slices in, slices out, no allocation once the row buffers have
//! grown to a width.

/// One plane of a picture: `data` rows of `stride` bytes, `width` x `height`
/// pixels of them.
#[derive(Clone, Copy)]
pub struct Plane<'a> {
    pub data: &'a [u8],
    pub stride: usize,
    pub width: usize,
    pub height: usize,
}

/// A rectangle in plane pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Area {
    pub x: usize,
    pub y: usize,
    pub w: usize,
    pub h: usize,
}

/// Why a scale was refused (nothing was written).
#[derive(Debug, PartialEq, Eq)]
pub struct OutOfBounds;

/// The row buffers one scale uses, kept between pictures.
#[derive(Default)]
pub struct Up2 {
    /// A source row blended with the row above (or below) it, 3:1, with one
    /// column each side: `w + 2` values up to 1020.
    near: Vec<u16>,
}

impl Up2 {
    /// Scales `region` of `src` by two into `dst`'s rows from `at` (its
    /// top-left pixel) for `2 * region.w` x `2 * region.h` pixels.
    /// Refuses, writing nothing, a region outside `src`, an empty one, or a
    /// destination that does not hold the result.
    pub fn scale(
        &mut self,
        src: Plane<'_>,
        region: Area,
        dst: &mut [u8],
        dst_stride: usize,
        at: (usize, usize),
    ) -> Result<(), OutOfBounds> {
        let inside = |a: Area, w: usize, h: usize| {
            a.w > 0
                && a.h > 0
                && a.x.checked_add(a.w).is_some_and(|r| r <= w)
                && a.y.checked_add(a.h).is_some_and(|b| b <= h)
        };
        let fits_rows = |rows: usize, width: usize, stride: usize, len: usize| {
            // The last row ends at rows-1 strides plus its width.
            stride >= width
                && (rows - 1)
                    .checked_mul(stride)
                    .and_then(|s| s.checked_add(width))
                    .is_some_and(|end| end <= len)
        };
        let (ow, oh) = (region.w * 2, region.h * 2);
        if !inside(region, src.width, src.height)
            || !fits_rows(src.height, src.width, src.stride, src.data.len())
            || !fits_rows(at.1 + oh, at.0 + ow, dst_stride, dst.len())
        {
            return Err(OutOfBounds);
        }
        self.near.resize(region.w + 2, 0);
        // Columns read: one each side of the region, the edge repeated
        // where the picture ends.
        let left = region.x.saturating_sub(1);
        let right = (region.x + region.w).min(src.width - 1);
        let row = |y: usize| &src.data[y * src.stride..y * src.stride + src.width];
        for k in 0..region.h {
            let y = region.y + k;
            let centre = row(y);
            for (half, other) in [(0, y.saturating_sub(1)), (1, (y + 1).min(src.height - 1))] {
                let other = row(other);
                blend_rows(
                    &mut self.near,
                    &centre[region.x..region.x + region.w],
                    &other[region.x..region.x + region.w],
                    (centre[left], other[left]),
                    (centre[right], other[right]),
                );
                let start = (at.1 + 2 * k + half) * dst_stride + at.0;
                widen_row(&self.near, &mut dst[start..start + ow]);
            }
        }
        Ok(())
    }
}

/// `near[1 + i] = 3 * centre[i] + other[i]`, and the columns beside them
/// from `left` and `right` (each a (centre, other) pair).
fn blend_rows(near: &mut [u16], centre: &[u8], other: &[u8], left: (u8, u8), right: (u8, u8)) {
    let w = centre.len();
    let blend = |(c, o): (u8, u8)| 3 * u16::from(c) + u16::from(o);
    near[0] = blend(left);
    near[w + 1] = blend(right);
    for ((n, &c), &o) in near[1..=w].iter_mut().zip(centre).zip(other) {
        *n = 3 * u16::from(c) + u16::from(o);
    }
}

/// Each of `near`'s inner values becomes two pixels, 3:1 with its left and
/// its right neighbour, out of 16 (the weights of both directions).
fn widen_row(near: &[u16], out: &mut [u8]) {
    for (pair, n) in out.chunks_exact_mut(2).zip(near.windows(3)) {
        let c = 3 * n[1] + 8;
        pair[0] = ((c + n[0]) >> 4) as u8;
        pair[1] = ((c + n[2]) >> 4) as u8;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The blend each output pixel should be, from its definition: the
    /// source sampled at the output pixel's centre, bilinearly, with edge
    /// pixels repeated, rounded half up.
    fn reference(src: Plane<'_>, region: Area, ox: usize, oy: usize) -> u8 {
        let at = |x: i64, y: i64| {
            let x = x.clamp(0, src.width as i64 - 1) as usize;
            let y = y.clamp(0, src.height as i64 - 1) as usize;
            f64::from(src.data[y * src.stride + x])
        };
        // Centre of output pixel (ox, oy) in source pixel coordinates.
        let sx = region.x as f64 + (ox as f64 + 0.5) / 2.0 - 0.5;
        let sy = region.y as f64 + (oy as f64 + 0.5) / 2.0 - 0.5;
        let (x0, y0) = (sx.floor(), sy.floor());
        let (fx, fy) = (sx - x0, sy - y0);
        let (x0, y0) = (x0 as i64, y0 as i64);
        let v = at(x0, y0) * (1.0 - fx) * (1.0 - fy)
            + at(x0 + 1, y0) * fx * (1.0 - fy)
            + at(x0, y0 + 1) * (1.0 - fx) * fy
            + at(x0 + 1, y0 + 1) * fx * fy;
        (v + 0.5).floor() as u8
    }

    fn plane(data: &[u8], stride: usize, width: usize, height: usize) -> Plane<'_> {
        Plane {
            data,
            stride,
            width,
            height,
        }
    }

    #[test]
    fn a_flat_plane_stays_flat_and_fills_exactly_its_rectangle() {
        let src = vec![77u8; 8 * 6];
        let mut dst = vec![1u8; 40 * 20];
        let region = Area {
            x: 2,
            y: 1,
            w: 4,
            h: 3,
        };
        Up2::default()
            .scale(plane(&src, 8, 8, 6), region, &mut dst, 40, (10, 5))
            .unwrap();
        for y in 0..20 {
            for x in 0..40 {
                let inside = (10..18).contains(&x) && (5..11).contains(&y);
                assert_eq!(dst[y * 40 + x], if inside { 77 } else { 1 }, "({x}, {y})");
            }
        }
    }

    #[test]
    fn a_two_pixel_step_blends_three_to_one_beside_it() {
        // 0 | 160 across, one row: the pixels either side of the step blend
        // a quarter of the other, the rest are exact.
        let src = [0u8, 0, 160, 160];
        let mut dst = [0u8; 8 * 2];
        Up2::default()
            .scale(
                plane(&src, 4, 4, 1),
                Area {
                    x: 0,
                    y: 0,
                    w: 4,
                    h: 1,
                },
                &mut dst,
                8,
                (0, 0),
            )
            .unwrap();
        for row in dst.chunks(8) {
            assert_eq!(row, [0, 0, 0, 40, 120, 160, 160, 160]);
        }
    }

    #[test]
    fn out_of_bounds_is_refused_and_writes_nothing() {
        let src = vec![9u8; 4 * 4];
        let mut up = Up2::default();
        let whole = Area {
            x: 0,
            y: 0,
            w: 4,
            h: 4,
        };
        let mut dst = vec![0u8; 8 * 8];
        let cases = [
            (Area { x: 1, ..whole }, 8, (0, 0)),
            (Area { h: 0, ..whole }, 8, (0, 0)),
            (Area { w: 0, ..whole }, 8, (0, 0)),
            (whole, 8, (1, 0)),
            (whole, 8, (0, 1)),
            (whole, 7, (0, 0)),
            (
                Area {
                    x: usize::MAX,
                    w: 2,
                    ..whole
                },
                8,
                (0, 0),
            ),
        ];
        for (region, stride, at) in cases {
            assert_eq!(
                up.scale(plane(&src, 4, 4, 4), region, &mut dst, stride, at),
                Err(OutOfBounds),
                "{region:?} {stride} {at:?}"
            );
            assert!(dst.iter().all(|&b| b == 0));
        }
        // A source whose rows do not fit its data.
        assert_eq!(
            up.scale(plane(&src[..15], 4, 4, 4), whole, &mut dst, 8, (0, 0)),
            Err(OutOfBounds)
        );
        assert!(dst.iter().all(|&b| b == 0));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// Any region of any plane: every output pixel is the bilinear
        /// sample at its centre, and nothing outside the rectangle moves.
        #[test]
        fn every_pixel_is_the_bilinear_sample_at_its_centre(
            (width, height, pad) in (1usize..24, 1usize..16, 0usize..5),
            seed in any::<u64>(),
            picks in (0usize..1000, 0usize..1000, 0usize..1000, 0usize..1000),
            (ax, ay, extra) in (0usize..6, 0usize..6, 0usize..5),
        ) {
            let stride = width + pad;
            let mut state = seed | 1;
            let src: Vec<u8> = (0..stride * height)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            let x = picks.0 % width;
            let y = picks.1 % height;
            let region = Area {
                x,
                y,
                w: 1 + picks.2 % (width - x),
                h: 1 + picks.3 % (height - y),
            };
            let dst_stride = ax + 2 * region.w + extra;
            let rows = ay + 2 * region.h + 1;
            let mut dst = vec![0xA5u8; dst_stride * rows];
            let src_plane = plane(&src, stride, width, height);
            Up2::default()
                .scale(src_plane, region, &mut dst, dst_stride, (ax, ay))
                .unwrap();
            for oy in 0..rows {
                for ox in 0..dst_stride {
                    let got = dst[oy * dst_stride + ox];
                    let inside = (ax..ax + 2 * region.w).contains(&ox)
                        && (ay..ay + 2 * region.h).contains(&oy);
                    let want = if inside {
                        reference(src_plane, region, ox - ax, oy - ay)
                    } else {
                        0xA5
                    };
                    prop_assert_eq!(got, want, "output ({}, {}) of {:?}", ox, oy, region);
                }
            }
        }
    }
}
