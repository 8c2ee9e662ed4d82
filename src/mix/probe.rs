//! How fast this machine's codecs run: a short libx264 encode whose CPU
//! time, against what it took on the machine the cost model was fitted on,
//! scales what admission charges a task's codecs
//! ([`crate::capacity::cost_scale`]).
//!
//! The pictures are a grainy texture panning two pixels a frame, so the
//! encoder searches motion and codes residue as it does for a camera; the
//! clock is the thread's own CPU time around the encoder's calls, so time
//! spent waiting for a busy core does not count, and the least of three
//! rounds drops what a neighbour's cache traffic adds. Runs once, at
//! start-up, on a thread of its own: about 0.1 s of CPU.

use std::time::Duration;

use ffmpeg_next as ff;
use rand::{RngCore, SeedableRng};

use super::video::{VideoEncoder, VideoError};
use crate::media::ffi::thread_cpu_time;
use crate::profile::{H264Profile, VideoEncoding};

const WIDTH: usize = 640;
const HEIGHT: usize = 360;
/// Pictures encoded before the clock runs (the first is an IDR, and the
/// encoder's rate control settles).
const WARM_UP: usize = 10;
/// Pictures per timed round, and rounds.
const ROUND: usize = 20;
const ROUNDS: usize = 3;
const PICTURES: usize = WARM_UP + ROUND * ROUNDS;

#[derive(Debug, thiserror::Error)]
pub(crate) enum ProbeError {
    #[error(transparent)]
    Video(#[from] VideoError),
    #[error("this system has no per-thread CPU clock")]
    NoClock,
}

/// What the probe measured.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Probe {
    /// CPU time one picture took to encode, in the quickest round.
    pub per_picture: Duration,
    /// Bytes the encoder produced over every round.
    pub bytes: usize,
}

/// The encoding the probe runs: the shipped profiles' x264 settings at a
/// quarter of 720p.
fn encoding() -> VideoEncoding {
    VideoEncoding {
        width: WIDTH as u32,
        height: HEIGHT as u32,
        fps: 30,
        bitrate_kbps: 500,
        gop_seconds: 10,
        preset: "veryfast".into(),
        profile: H264Profile::High,
        tune: Some("zerolatency".into()),
        bframes: 0,
    }
}

/// A `w` x `h` plane of smooth blobs (random levels on a `cell` grid,
/// interpolated) around `mid`, `spread` either side, with grain of
/// `grain` either side.
fn texture(w: usize, h: usize, cell: usize, (mid, spread, grain): (i32, i32, i32)) -> Vec<u8> {
    // Seeded: the same pictures on every machine.
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x9e37_79b9_7f4a_7c15);
    let mut noise = move || (rng.next_u32() >> 24) as u8;
    let (gw, gh) = (w / cell + 2, h / cell + 2);
    let grid: Vec<i32> = (0..gw * gh)
        .map(|_| mid - spread + i32::from(noise()) * 2 * spread / 255)
        .collect();
    let mut plane = Vec::with_capacity(w * h);
    for y in 0..h {
        let (gy, fy) = (y / cell, (y % cell) as i32);
        for x in 0..w {
            let (gx, fx) = (x / cell, (x % cell) as i32);
            let at = |dx: usize, dy: usize| grid[(gy + dy) * gw + gx + dx];
            let c = cell as i32;
            let top = at(0, 0) * (c - fx) + at(1, 0) * fx;
            let bottom = at(0, 1) * (c - fx) + at(1, 1) * fx;
            let smooth = (top * (c - fy) + bottom * fy) / (c * c);
            let grain = i32::from(noise()) * 2 * grain / 255 - grain;
            plane.push((smooth + grain).clamp(16, 235) as u8);
        }
    }
    plane
}

/// Copies a picture-sized view of `plane` (`pw` wide), from (`x`, `y`),
/// into plane `index` of `picture`.
fn fill(
    picture: &mut ff::frame::Video,
    index: usize,
    plane: &[u8],
    pw: usize,
    (x, y): (usize, usize),
) {
    let (w, h) = (
        picture.plane_width(index) as usize,
        picture.plane_height(index) as usize,
    );
    let stride = picture.stride(index);
    let data = picture.data_mut(index);
    for row in 0..h {
        let from = (y + row) * pw + x;
        data[row * stride..row * stride + w].copy_from_slice(&plane[from..from + w]);
    }
}

/// The name of the thread the server runs the probe on (the relay
/// bench waits for it to end before it measures an idle gateway).
pub const THREAD: &str = "cpu-probe";

/// Runs the probe on the calling thread.
pub(crate) fn run() -> Result<Probe, ProbeError> {
    // Room for the pan: two pixels right and one down a picture.
    let (lw, lh) = (WIDTH + 2 * PICTURES, HEIGHT + PICTURES);
    let luma = texture(lw, lh, 16, (128, 90, 10));
    let (cw, ch) = (lw / 2, lh / 2);
    let u = texture(cw, ch, 16, (128, 20, 2));
    let v = texture(cw, ch, 24, (128, 20, 2));
    let mut encoder = VideoEncoder::new(&encoding())?;
    let mut picture =
        ff::frame::Video::new(ff::format::Pixel::YUV420P, WIDTH as u32, HEIGHT as u32);
    let mut rounds = vec![Duration::ZERO; ROUNDS];
    let mut bytes = 0;
    for n in 0..PICTURES {
        fill(&mut picture, 0, &luma, lw, (2 * n, n));
        fill(&mut picture, 1, &u, cw, (n, n / 2));
        fill(&mut picture, 2, &v, cw, (n, n / 2));
        let before = thread_cpu_time().ok_or(ProbeError::NoClock)?;
        let out = encoder.encode(&mut picture, n as i64)?;
        let took = thread_cpu_time().ok_or(ProbeError::NoClock)? - before;
        if n >= WARM_UP {
            rounds[(n - WARM_UP) / ROUND] += took;
            bytes += out.iter().map(|f| f.data.len()).sum::<usize>();
        }
    }
    let least = rounds.into_iter().min().unwrap_or_default();
    Ok(Probe {
        per_picture: least / ROUND as u32,
        bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The probe really encodes (the picture moves, so every picture costs
    /// bits), and its clock reads something a cost can be scaled by.
    #[test]
    fn the_probe_encodes_a_moving_picture_and_times_it() {
        let probe = run().unwrap();
        // At 500 kbps, 60 pictures of 30 fps are about 125 kB; a still
        // picture would code in a few hundred bytes a frame.
        assert!(probe.bytes > 40_000, "{probe:?}");
        assert!(probe.per_picture > Duration::ZERO, "{probe:?}");
        assert!(probe.per_picture < Duration::from_secs(1), "{probe:?}");
        let scale = crate::capacity::cost_scale(probe.per_picture);
        assert!(scale.is_finite() && scale > 0.0, "{scale}");
    }

    #[test]
    fn the_texture_is_deterministic_and_in_range() {
        let a = texture(64, 32, 16, (128, 90, 10));
        assert_eq!(a, texture(64, 32, 16, (128, 90, 10)));
        assert_eq!(a.len(), 64 * 32);
        assert!(a.iter().all(|&p| (16..=235).contains(&p)));
        // Not flat: the blobs span most of the range.
        let (lo, hi) = (a.iter().min().unwrap(), a.iter().max().unwrap());
        assert!(hi - lo > 60, "{lo}..{hi}");
    }
}
