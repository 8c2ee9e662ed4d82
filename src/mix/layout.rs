//! Where each anchor goes on the mixed picture: TRTC's layout modes as pure
//! geometry.
//!
//! `place(layout, canvas, inputs)` returns the cells to draw, bottom to top.
//! Inputs come in room entry order. Modes: floating (the main user full
//! screen, others in small windows from the bottom-left, up to 1 + 15), grid
//! (equal cells, 1x1, 2x1, 2x2, 3x3, 4x4 as the count grows), screen-share
//! (the main user big on the left, the others in a right-hand column),
//! picture-in-picture (the main user full screen, a second in a corner; the
//! rest heard only), custom (configured cells; pinned users in their cells,
//! the others in entry order; extra users heard only). Every rectangle is
//! even-aligned for 4:2:0 chroma. No I/O, no clock.

use crate::profile::{Background, Layout, LayoutMode, RenderMode};

pub(crate) use crate::media::Rect;

impl Rect {
    fn even(x: u32, y: u32, w: u32, h: u32) -> Rect {
        Rect {
            x: x & !1,
            y: y & !1,
            w: (w & !1).max(2),
            h: (h & !1).max(2),
        }
    }
}

/// One anchor as the layout sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InputInfo {
    pub user: String,
    pub has_video: bool,
}

/// One cell to draw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Placement {
    /// The anchor shown, or `None` for an empty custom cell.
    pub user: Option<String>,
    pub rect: Rect,
    pub z: u32,
    pub render: RenderMode,
    /// Shown when the anchor has no picture (or for an empty cell).
    pub placeholder: Background,
}

/// Small windows in floating mode, as a fraction of the canvas.
const FLOAT_SCALE: f64 = 0.22;
const FLOAT_PER_ROW: u32 = 4;
const SIDE_COLUMN: u32 = 5;

pub(crate) fn place(layout: &Layout, canvas: (u32, u32), inputs: &[InputInfo]) -> Vec<Placement> {
    let (cw, ch) = canvas;
    // Who takes a picture cell: anchors with video, plus audio-only ones if they hold a place.
    let mut shown: Vec<&InputInfo> = inputs
        .iter()
        .filter(|i| i.has_video || layout.audio_only_holds_cell)
        .take(layout.max_inputs as usize)
        .collect();
    if let Some(main) = &layout.main_user
        && let Some(pos) = shown.iter().position(|i| &i.user == main)
    {
        let m = shown.remove(pos);
        shown.insert(0, m);
    }
    let cell = |user: &InputInfo, rect: Rect, z: u32| Placement {
        user: Some(user.user.clone()),
        rect,
        z,
        render: layout.render_mode,
        placeholder: layout.placeholder.clone(),
    };
    match layout.mode {
        LayoutMode::Grid => {
            let n = shown.len() as u32;
            if n == 0 {
                return Vec::new();
            }
            let cols = (1..=4).find(|c| c * c >= n).unwrap_or(4).max(1);
            let cols = if n == 2 { 2 } else { cols };
            let rows = n.div_ceil(cols);
            let (w, h) = (cw / cols, ch / rows);
            shown
                .iter()
                .enumerate()
                .map(|(i, u)| {
                    let (c, r) = (i as u32 % cols, i as u32 / cols);
                    cell(u, Rect::even(c * w, r * h, w, h), 0)
                })
                .collect()
        }
        LayoutMode::Floating => {
            let mut out = Vec::new();
            let Some(main) = shown.first() else {
                return out;
            };
            out.push(cell(main, Rect::even(0, 0, cw, ch), 0));
            let (w, h) = (
                (f64::from(cw) * FLOAT_SCALE) as u32,
                (f64::from(ch) * FLOAT_SCALE) as u32,
            );
            let (mx, my) = (cw / 50, ch / 50);
            for (i, u) in shown.iter().skip(1).take(15).enumerate() {
                let (c, r) = (i as u32 % FLOAT_PER_ROW, i as u32 / FLOAT_PER_ROW);
                let x = mx + c * (w + mx);
                let y = ch.saturating_sub((r + 1) * (h + my));
                out.push(cell(u, Rect::even(x, y, w, h), 1));
            }
            out
        }
        LayoutMode::ScreenShare => {
            let mut out = Vec::new();
            let Some(main) = shown.first() else {
                return out;
            };
            let side_w = cw / 5;
            let rest = shown.len() > 1;
            let big_w = if rest { cw - side_w } else { cw };
            out.push(cell(main, Rect::even(0, 0, big_w, ch), 0));
            let h = ch / SIDE_COLUMN;
            for (i, u) in shown.iter().skip(1).take(SIDE_COLUMN as usize).enumerate() {
                out.push(cell(u, Rect::even(cw - side_w, i as u32 * h, side_w, h), 0));
            }
            out
        }
        LayoutMode::Pip => {
            let mut out = Vec::new();
            let Some(main) = shown.first() else {
                return out;
            };
            out.push(cell(main, Rect::even(0, 0, cw, ch), 0));
            if let Some(second) = shown.get(1) {
                let (w, h) = (cw / 4, ch / 4);
                let (mx, my) = (cw / 40, ch / 40);
                out.push(cell(second, Rect::even(cw - w - mx, ch - h - my, w, h), 1));
            }
            out
        }
        LayoutMode::Custom => {
            let mut free: Vec<&InputInfo> = inputs
                .iter()
                .filter(|i| {
                    !layout
                        .cells
                        .iter()
                        .any(|c| c.user_id.as_deref() == Some(&i.user))
                })
                .filter(|i| i.has_video || layout.audio_only_holds_cell)
                .collect();
            free.reverse();
            let mut out: Vec<Placement> = layout
                .cells
                .iter()
                .map(|c| {
                    let user = match &c.user_id {
                        Some(pinned) => Some(pinned.clone()),
                        None => free.pop().map(|i| i.user.clone()),
                    };
                    Placement {
                        user,
                        rect: Rect::even(c.x, c.y, c.width, c.height),
                        z: c.z_order,
                        render: c.render_mode,
                        placeholder: c
                            .placeholder
                            .clone()
                            .unwrap_or_else(|| layout.placeholder.clone()),
                    }
                })
                .collect();
            out.sort_by_key(|p| p.z);
            out
        }
    }
}

/// Whether `rects` together cover all of a `w`x`h` canvas (cut into the
/// grid of their edges, every piece lies in one of them).
pub(crate) fn covers(rects: impl Iterator<Item = Rect>, w: u32, h: u32) -> bool {
    let rects: Vec<Rect> = rects.filter(|r| r.w > 0 && r.h > 0).collect();
    let mut xs: Vec<u32> = rects
        .iter()
        .flat_map(|r| [r.x, r.x + r.w])
        .chain([0, w])
        .collect();
    let mut ys: Vec<u32> = rects
        .iter()
        .flat_map(|r| [r.y, r.y + r.h])
        .chain([0, h])
        .collect();
    for v in [&mut xs, &mut ys] {
        v.sort_unstable();
        v.dedup();
    }
    let inside = |x: u32, y: u32| {
        rects
            .iter()
            .any(|r| x >= r.x && x < r.x + r.w && y >= r.y && y < r.y + r.h)
    };
    xs.windows(2).filter(|p| p[1] <= w).all(|px| {
        ys.windows(2)
            .filter(|p| p[1] <= h)
            .all(|py| inside(px[0], py[0]))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn background_is_painted_only_where_no_cell_is() {
        let rect = |x, y, w, h| Rect { x, y, w, h };
        let grid = [rect(0, 0, 640, 720), rect(640, 0, 640, 720)];
        assert!(covers(grid.into_iter(), 1280, 720));
        let four = [
            rect(0, 0, 640, 360),
            rect(640, 0, 640, 360),
            rect(0, 360, 640, 360),
            rect(640, 360, 640, 360),
        ];
        assert!(covers(four.into_iter(), 1280, 720));
        assert!(!covers(four[..3].iter().copied(), 1280, 720));
        // Overlapping windows over a full-canvas one.
        let pip = [rect(0, 0, 1280, 720), rect(900, 500, 320, 180)];
        assert!(covers(pip.into_iter(), 1280, 720));
        assert!(!covers([rect(900, 500, 320, 180)].into_iter(), 1280, 720));
        // A seam of two pixels between cells.
        assert!(!covers(
            [rect(0, 0, 638, 720), rect(640, 0, 640, 720)].into_iter(),
            1280,
            720
        ));
        assert!(!covers(std::iter::empty(), 1280, 720));
    }

    use crate::profile::Cell;

    fn layout(mode: LayoutMode) -> Layout {
        Layout {
            mode,
            ..Layout::default()
        }
    }

    fn inputs(n: usize) -> Vec<InputInfo> {
        (0..n)
            .map(|i| InputInfo {
                user: format!("u{i}"),
                has_video: true,
            })
            .collect()
    }

    fn rects(p: &[Placement]) -> Vec<(u32, u32, u32, u32)> {
        p.iter()
            .map(|c| (c.rect.x, c.rect.y, c.rect.w, c.rect.h))
            .collect()
    }

    #[test]
    fn grid_shrinks_with_the_count() {
        let l = layout(LayoutMode::Grid);
        assert_eq!(
            rects(&place(&l, (1280, 720), &inputs(1))),
            [(0, 0, 1280, 720)]
        );
        assert_eq!(
            rects(&place(&l, (1280, 720), &inputs(2))),
            [(0, 0, 640, 720), (640, 0, 640, 720)]
        );
        assert_eq!(
            rects(&place(&l, (1280, 720), &inputs(3))),
            [(0, 0, 640, 360), (640, 0, 640, 360), (0, 360, 640, 360)]
        );
        let nine = place(&l, (1280, 720), &inputs(9));
        assert_eq!(nine.len(), 9);
        assert_eq!((nine[8].rect.x, nine[8].rect.y), (852, 480));
        let sixteen = place(&l, (1920, 1080), &inputs(20));
        assert_eq!(sixteen.len(), 16, "max 16 shown");
        assert_eq!(
            sixteen[15].rect,
            Rect {
                x: 1440,
                y: 810,
                w: 480,
                h: 270
            }
        );
        assert!(place(&l, (1280, 720), &[]).is_empty());
    }

    #[test]
    fn every_cell_fits_the_canvas_and_is_even() {
        for mode in [
            LayoutMode::Grid,
            LayoutMode::Floating,
            LayoutMode::ScreenShare,
            LayoutMode::Pip,
        ] {
            for n in 0..=17 {
                for canvas in [(1280, 720), (1920, 1080), (720, 1280), (642, 362)] {
                    for c in place(&layout(mode), canvas, &inputs(n)) {
                        let r = c.rect;
                        assert!(
                            r.x + r.w <= canvas.0 && r.y + r.h <= canvas.1,
                            "{mode:?} {n} {canvas:?} {r:?}"
                        );
                        assert!(
                            r.x % 2 == 0 && r.y % 2 == 0 && r.w % 2 == 0 && r.h % 2 == 0,
                            "{r:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn floating_main_full_screen_others_from_bottom_left() {
        let mut l = layout(LayoutMode::Floating);
        let p = place(&l, (1280, 720), &inputs(3));
        assert_eq!(rects(&p)[0], (0, 0, 1280, 720));
        assert_eq!(p[0].z, 0);
        assert_eq!((p[1].rect.x, p[1].z), (24, 1));
        assert!(
            p[1].rect.y + p[1].rect.h <= 720 && p[1].rect.y > 500,
            "{:?}",
            p[1].rect
        );
        assert!(p[2].rect.x > p[1].rect.x + p[1].rect.w);
        assert_eq!(place(&l, (1280, 720), &inputs(20)).len(), 16, "1 + 15");
        l.main_user = Some("u2".into());
        assert_eq!(
            place(&l, (1280, 720), &inputs(3))[0].user.as_deref(),
            Some("u2")
        );
    }

    #[test]
    fn screen_share_big_left_column_right() {
        let p = place(&layout(LayoutMode::ScreenShare), (1920, 1080), &inputs(3));
        assert_eq!(
            rects(&p),
            [
                (0, 0, 1536, 1080),
                (1536, 0, 384, 216),
                (1536, 216, 384, 216)
            ]
        );
        assert_eq!(
            rects(&place(
                &layout(LayoutMode::ScreenShare),
                (1920, 1080),
                &inputs(1)
            )),
            [(0, 0, 1920, 1080)]
        );
        assert_eq!(
            place(&layout(LayoutMode::ScreenShare), (1920, 1080), &inputs(9)).len(),
            6
        );
    }

    #[test]
    fn pip_shows_two_the_rest_are_heard() {
        let p = place(&layout(LayoutMode::Pip), (1280, 720), &inputs(4));
        assert_eq!(p.len(), 2);
        assert_eq!(rects(&p), [(0, 0, 1280, 720), (928, 522, 320, 180)]);
        assert_eq!(p[1].z, 1);
    }

    #[test]
    fn audio_only_users_hold_a_cell_only_when_asked() {
        let mut l = layout(LayoutMode::Grid);
        let mut ins = inputs(3);
        ins[1].has_video = false;
        assert_eq!(place(&l, (1280, 720), &ins).len(), 2);
        l.audio_only_holds_cell = true;
        let p = place(&l, (1280, 720), &ins);
        assert_eq!(p.len(), 3);
        assert_eq!(p[1].user.as_deref(), Some("u1"));
    }

    #[test]
    fn custom_pins_then_fills_in_entry_order() {
        let mut l = layout(LayoutMode::Custom);
        let cell = |x, z, user: Option<&str>| Cell {
            x,
            y: 0,
            width: 320,
            height: 180,
            z_order: z,
            render_mode: RenderMode::Fit,
            user_id: user.map(str::to_owned),
            placeholder: None,
        };
        l.cells = vec![
            cell(0, 2, None),
            cell(320, 0, Some("u2")),
            cell(640, 1, None),
        ];
        let p = place(&l, (1280, 720), &inputs(4));
        // Sorted bottom to top by z.
        let users: Vec<_> = p.iter().map(|c| (c.rect.x, c.user.clone())).collect();
        assert_eq!(
            users,
            [
                (320, Some("u2".into())),
                (640, Some("u1".into())),
                (0, Some("u0".into()))
            ]
        );
        assert_eq!(p[0].render, RenderMode::Fit);
        // Fewer users than cells: the rest are empty (placeholder).
        let p = place(&l, (1280, 720), &inputs(1));
        assert_eq!(p.iter().filter(|c| c.user.is_none()).count(), 1);
        assert_eq!(
            p.iter().find(|c| c.rect.x == 320).unwrap().user.as_deref(),
            Some("u2")
        );
    }
}
