//! Admission control: what a relay task will cost in CPU, estimated before
//! it starts, against a budget of cores. Pure: no clock, no I/O.
//!
//! The model counts the work a task's encodes and decodes do, in cores
//! (CPU-seconds per second):
//! - a mix encodes its canvas (`ENCODE` per megapixel per second at x264's
//!   `veryfast`, scaled by the preset), decodes and scales each input
//!   (`DECODE` per input megapixel per second; inputs are counted as
//!   640x360 at 30 fps, the camera-like anchor of the benchmarks, at least
//!   `MIN_MIX_INPUTS` of them), and mixes audio (`MIX_BASE`);
//! - a passthrough copies and pushes (`PASSTHROUGH`), segments and writes
//!   HLS when its profile does (`PASSTHROUGH_HLS`), plus an AAC re-encode
//!   when asked;
//! - an HLS ladder decodes the task's output once (a mix's canvas; for a
//!   passthrough, counted as 720p30) and encodes each rendition.
//!
//! The constants are fitted to `cargo bench --bench mix` and
//! `cargo bench --bench relay` on the reference machine (2 cores):
//! 2 inputs → 720p30 0.34, 4 → 720p30 0.36, 4 → 1080p30 0.62 CPU-s/s. A
//! passthrough of a 2 Mbps stream is charged what each of 50 at once costs
//! (`-- 50`, with `RELAY_BENCH_HLS=1` for HLS): 0.0024–0.0028 pushing only,
//! 0.0044 writing MPEG-TS HLS too, each rounded up (150 at once: 0.0020
//! and 0.0039). One relay alone costs
//! more per stream (0.008–0.016: its wake-ups find the caches cold), but the
//! budget only binds when many run.
//!
//! The machine a gateway runs on is not the reference machine: at start-up
//! a short libx264 encode (`mix::probe`) times the codecs there, and the
//! codecs' share of every charge is scaled by its time over the reference
//! machine's ([`cost_scale`], [`charge`]), so a faster machine admits more
//! mixes and a slower one fewer. Calibrated at start-up rather than learned from
//! running tasks: the first task is charged right, and a task's own CPU is
//! not a clean sample (an overloaded box starves every task, and x264's
//! threads are not the mix's). What the probe cannot see (a neighbour
//! taking cores later) is what graceful overload is for.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::mix::pipeline::MixSettings;
use crate::profile::VideoEncoding;
use crate::relay::{RelayInput, RelaySpec};

/// Cores per megapixel per second encoded at `veryfast` (canvas composition included).
const ENCODE: f64 = 0.0075;
/// Cores per input megapixel per second decoded and scaled.
const DECODE: f64 = 0.0015;
/// Cores for a mix's audio (decodes, mixing, AAC encode) and its thread.
const MIX_BASE: f64 = 0.11;
/// Inputs a mix is charged for before its anchors are known.
const MIN_MIX_INPUTS: usize = 2;
/// One camera-like input: 640x360 at 30 fps, in megapixels per second.
const INPUT_MPX: f64 = 640.0 * 360.0 * 30.0 / 1e6;
/// What a passthrough's ladder is charged for decoding: 720p30.
const LADDER_SOURCE_MPX: f64 = 1280.0 * 720.0 * 30.0 / 1e6;
/// A passthrough relay's reading, copying and pushing.
const PASSTHROUGH: f64 = 0.004;
/// A passthrough relay's HLS: segmenting and writing its output.
const PASSTHROUGH_HLS: f64 = 0.002;
/// An AAC re-encode.
const AAC: f64 = 0.01;

/// x264's presets relative to `veryfast` (its own speed table, rounded).
fn preset_factor(preset: &str) -> f64 {
    match preset {
        "ultrafast" => 0.35,
        "superfast" => 0.55,
        "veryfast" => 1.0,
        "faster" => 1.6,
        "fast" => 2.0,
        "medium" => 2.6,
        "slow" => 4.0,
        "slower" => 8.0,
        "veryslow" => 16.0,
        _ => 2.6,
    }
}

fn encode(v: &VideoEncoding) -> f64 {
    let mpx = f64::from(v.width) * f64::from(v.height) * f64::from(v.fps) / 1e6;
    mpx * ENCODE * preset_factor(&v.preset)
}

/// How much of a core one x264 thread is given: a picture encodes in at
/// most half its frame interval.
const ENCODE_THREAD_LOAD: f64 = 0.5;

/// x264 threads for an encode: as few as keep each under
/// `ENCODE_THREAD_LOAD` of a core (one for 720p30 and 1080p30 at
/// `veryfast`), at most one per core. x264's own choice (1.5 per core,
/// sliced under `zerolatency`) wakes every thread for every picture and
/// costs a few per cent more CPU for the same pictures, which a box running
/// several mixes does not have to give.
pub(crate) fn encoder_threads(v: &VideoEncoding, cores: usize) -> usize {
    ((encode(v) / ENCODE_THREAD_LOAD).ceil() as usize).clamp(1, cores.max(1))
}

/// The cores this process may use.
pub(crate) fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
}

fn mix(m: &MixSettings, inputs: usize) -> f64 {
    let video = m.video.as_ref().map_or(0.0, |v| {
        let shown = inputs.max(MIN_MIX_INPUTS).min(m.layout.max_inputs as usize);
        encode(v) + shown as f64 * INPUT_MPX * DECODE
    });
    MIX_BASE + video
}

/// The cores `spec` is expected to use on the reference machine;
/// `publishing` is how many anchors publish in its room now (a mix decodes
/// each of them).
#[cfg(test)]
pub(crate) fn estimate(spec: &RelaySpec, publishing: usize) -> f64 {
    charge(spec, publishing, 1.0)
}

/// The cores `spec` is charged here: its codecs' work (encodes, decodes,
/// audio) times `scale`, this machine's codec cost against the reference
/// machine's ([`cost_scale`]), plus what a passthrough's copying and
/// writing costs, which is not codec work and is not scaled.
pub(crate) fn charge(spec: &RelaySpec, publishing: usize, scale: f64) -> f64 {
    let (codecs, io) = match &spec.input {
        RelayInput::Mix(m) => (mix(m, publishing), 0.0),
        RelayInput::Anchor(a) => {
            let hls = if spec.outputs.hls.is_some() {
                PASSTHROUGH_HLS
            } else {
                0.0
            };
            let aac = if a.audio_reencode.is_some() { AAC } else { 0.0 };
            (aac, PASSTHROUGH + hls)
        }
    };
    (codecs + ladder(spec)) * scale + io
}

/// CPU time the start-up probe's picture (`mix::probe`: libx264
/// `veryfast` at 640x360) takes on the reference machine, the one the
/// constants above describe. Fitted on the 2-core development machine in
/// one sitting: five start-ups timed the picture at 2.07–2.22 ms while
/// `cargo bench --bench mix` read 0.281, 0.309 and 0.549 CPU-s/s for the
/// three mixes above, 0.83–0.89x the model (so that machine, that day,
/// was 2.1 / 2.45 = 0.86x the reference).
const REFERENCE_PICTURE: Duration = Duration::from_micros(2_450);
/// The scale is kept within these: a probe further out measured
/// something else (a debugger, a throttled container) more than the codecs.
const SCALE_BOUNDS: (f64, f64) = (0.25, 4.0);

/// This machine's codec cost against the reference machine's, from the
/// probe's CPU time for one picture.
pub(crate) fn cost_scale(per_picture: Duration) -> f64 {
    let scale = per_picture.as_secs_f64() / REFERENCE_PICTURE.as_secs_f64();
    if scale.is_finite() {
        scale.clamp(SCALE_BOUNDS.0, SCALE_BOUNDS.1)
    } else {
        1.0
    }
}

/// The scale admission charges codecs by, shared: 1 until the start-up
/// probe sets it (or for good, with `limits.cpu_calibrate = false`).
#[derive(Debug, Default)]
pub(crate) struct Scale(AtomicU64);

impl Scale {
    /// The scale, and whether a probe set it.
    pub(crate) fn get(&self) -> (f64, bool) {
        match self.0.load(Ordering::Relaxed) {
            0 => (1.0, false),
            bits => (f64::from_bits(bits), true),
        }
    }

    pub(crate) fn set(&self, scale: f64) {
        self.0.store(scale.to_bits(), Ordering::Relaxed);
    }
}

/// An HLS ladder: one decode of the task's output, one encode per rendition.
fn ladder(spec: &RelaySpec) -> f64 {
    let Some(hls) = spec
        .outputs
        .hls
        .as_ref()
        .filter(|h| !h.renditions.is_empty())
    else {
        return 0.0;
    };
    let source = match &spec.input {
        RelayInput::Mix(m) => m.video.as_ref().map_or(0.0, |v| {
            f64::from(v.width) * f64::from(v.height) * f64::from(v.fps) / 1e6
        }),
        RelayInput::Anchor(_) => LADDER_SOURCE_MPX,
    };
    source * DECODE + hls.renditions.iter().map(encode).sum::<f64>()
}

/// Whether a task of `cost` fits beside `in_use` within `budget`; the
/// refusal says how much is free.
pub(crate) fn admit(budget: f64, in_use: f64, cost: f64) -> Result<(), AdmissionError> {
    if in_use + cost <= budget + 1e-9 {
        Ok(())
    } else {
        Err(AdmissionError {
            cost,
            free: (budget - in_use).max(0.0),
            budget,
        })
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "over the CPU budget: the task needs about {cost:.2} cores, {free:.2} of {budget:.2} are free (limits.cpu_budget)"
)]
pub(crate) struct AdmissionError {
    pub cost: f64,
    pub free: f64,
    pub budget: f64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::load_all;
    use crate::room::{RoomId, RoomKey, UserId};

    fn profile(name: &str) -> crate::profile::RelayProfile {
        load_all(None)
            .unwrap()
            .into_iter()
            .find(|p| p.name == name)
            .unwrap()
    }

    fn room() -> RoomKey {
        RoomKey {
            app: 1,
            room: RoomId::parse("r", None).unwrap(),
        }
    }

    #[test]
    fn encodes_get_as_few_x264_threads_as_keep_up() {
        let v = |w, h, preset: &str| VideoEncoding {
            width: w,
            height: h,
            fps: 30,
            bitrate_kbps: 2000,
            gop_seconds: 2,
            preset: preset.into(),
            profile: crate::profile::H264Profile::High,
            tune: Some("zerolatency".into()),
            bframes: 0,
        };
        assert_eq!(encoder_threads(&v(1280, 720, "veryfast"), 2), 1);
        assert_eq!(encoder_threads(&v(1920, 1080, "veryfast"), 2), 1);
        assert_eq!(encoder_threads(&v(1920, 1080, "medium"), 2), 2);
        assert_eq!(encoder_threads(&v(1920, 1080, "medium"), 8), 3);
        assert_eq!(encoder_threads(&v(1920, 1080, "veryslow"), 4), 4);
        assert_eq!(encoder_threads(&v(320, 180, "ultrafast"), 0), 1);
    }

    #[test]
    fn the_model_reproduces_the_benchmarks_it_was_fitted_to() {
        let grid = RelaySpec::for_mix(room(), &profile("grid-720p")).unwrap();
        let near = |a: f64, b: f64| (a - b).abs() < 0.03;
        assert!(near(estimate(&grid, 2), 0.34), "{}", estimate(&grid, 2));
        assert!(near(estimate(&grid, 4), 0.36), "{}", estimate(&grid, 4));
        // Before anyone publishes a mix is charged for two inputs.
        assert_eq!(estimate(&grid, 0), estimate(&grid, 2));
        let hd = RelaySpec::for_mix(room(), &profile("floating-1080p")).unwrap();
        assert!(near(estimate(&hd, 4), 0.62), "{}", estimate(&hd, 4));
        let pass =
            RelaySpec::for_anchor(room(), UserId::new("a").unwrap(), &profile("passthrough"))
                .unwrap();
        assert!(estimate(&pass, 1) < 0.05);
        // The shipped passthrough writes HLS; without it a relay costs less.
        let mut push_only = pass.clone();
        push_only.outputs.hls = None;
        assert!(estimate(&push_only, 1) < estimate(&pass, 1));
        let exactly = |a: f64, b: f64| (a - b).abs() < 1e-9;
        assert!(
            exactly(estimate(&push_only, 1), 0.004),
            "{}",
            estimate(&push_only, 1)
        );
        assert!(exactly(estimate(&pass, 1), 0.006), "{}", estimate(&pass, 1));
        let audio = RelaySpec::for_mix(room(), &profile("audio-only")).unwrap();
        assert!(estimate(&audio, 3) < estimate(&grid, 3));
    }

    #[test]
    fn a_ladder_costs_its_encodes_and_one_decode() {
        let plain = RelaySpec::for_mix(room(), &profile("grid-720p")).unwrap();
        let mut abr = plain.clone();
        let hls = abr.outputs.hls.as_mut().unwrap();
        let base = plain.mix().unwrap().video.clone().unwrap();
        for (w, h) in [(640, 360), (426, 240)] {
            hls.renditions.push(crate::profile::VideoEncoding {
                width: w,
                height: h,
                ..base.clone()
            });
        }
        let extra = estimate(&abr, 2) - estimate(&plain, 2);
        // 360p30 + 240p30 at veryfast, and decoding 720p30.
        let expected = (640.0 * 360.0 + 426.0 * 240.0) * 30.0 / 1e6 * ENCODE
            + 1280.0 * 720.0 * 30.0 / 1e6 * DECODE;
        assert!((extra - expected).abs() < 1e-9, "{extra} vs {expected}");
    }

    #[test]
    fn codecs_are_charged_at_this_machines_scale_and_copying_is_not() {
        let grid = RelaySpec::for_mix(room(), &profile("grid-720p")).unwrap();
        let exactly = |a: f64, b: f64| (a - b).abs() < 1e-9;
        for scale in [0.25, 0.86, 1.0, 2.5] {
            assert!(exactly(charge(&grid, 2, scale), estimate(&grid, 2) * scale));
        }
        // A passthrough's copying and HLS writing are not codec work; an
        // AAC re-encode is.
        let mut pass =
            RelaySpec::for_anchor(room(), UserId::new("a").unwrap(), &profile("passthrough"))
                .unwrap();
        assert!(exactly(charge(&pass, 1, 3.0), estimate(&pass, 1)));
        if let RelayInput::Anchor(a) = &mut pass.input {
            a.audio_reencode = Some(crate::profile::AudioEncoding {
                sample_rate: 48_000,
                channels: 2,
                bitrate_kbps: 128,
                codec: crate::profile::AudioCodec::AacLc,
            });
        }
        assert!(exactly(
            charge(&pass, 1, 3.0),
            PASSTHROUGH + PASSTHROUGH_HLS + 3.0 * AAC
        ));
    }

    #[test]
    fn the_scale_is_the_probes_time_over_the_reference_and_bounded() {
        let exactly = |a: f64, b: f64| (a - b).abs() < 1e-9;
        assert!(exactly(cost_scale(REFERENCE_PICTURE), 1.0));
        assert!(exactly(cost_scale(REFERENCE_PICTURE / 2), 0.5));
        assert!(exactly(cost_scale(REFERENCE_PICTURE * 3), 3.0));
        assert!(exactly(cost_scale(Duration::ZERO), SCALE_BOUNDS.0));
        assert!(exactly(
            cost_scale(Duration::from_secs(3600)),
            SCALE_BOUNDS.1
        ));
        // Unset, the reference machine's; set, what the probe said.
        let shared = Scale::default();
        assert_eq!(shared.get(), (1.0, false));
        shared.set(0.86);
        assert_eq!(shared.get(), (0.86, true));
    }

    #[test]
    fn slower_presets_cost_more() {
        let mut grid = RelaySpec::for_mix(room(), &profile("grid-720p")).unwrap();
        let fast = estimate(&grid, 2);
        if let Some(v) = grid.mix_mut().and_then(|m| m.video.as_mut()) {
            v.preset = "medium".into();
        }
        assert!(estimate(&grid, 2) > 1.5 * fast);
    }

    #[test]
    fn admission_keeps_the_sum_within_the_budget() {
        assert!(admit(1.7, 1.0, 0.7).is_ok());
        let e = admit(1.7, 1.5, 0.34).unwrap_err();
        assert!((e.free - 0.2).abs() < 1e-9);
        assert!(e.to_string().contains("limits.cpu_budget"), "{e}");
        assert!(admit(0.0, 0.0, 0.01).is_err());
    }
}
