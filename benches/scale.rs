//! Scaling a picture by two, as a mix does to fill a cell (a 640x360 camera
//! cropped into half of a 1280x720 canvas; a 960x540 one filling a quarter
//! of 1920x1080 doubled): roomcast's `mix::up2` against libswscale's
//! bilinear (what the mix used before) and bicubic (the ffmpeg CLI's
//! `scale` filter's default), on the same YUV420P picture, in the same run.
//!
//! Run: `cargo bench --bench scale`.

use std::hint::black_box;

use ffmpeg_next as ff;
use roomcast::mix::up2::{Area, Plane, Up2};

#[path = "common/timing.rs"]
mod timing;
use timing::per_call_us;

const N: u32 = 2_000;

/// A `w` x `h` YUV420P picture with detail in every plane.
fn textured(w: u32, h: u32) -> ff::frame::Video {
    let mut f = ff::frame::Video::new(ff::format::Pixel::YUV420P, w, h);
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    for plane in 0..3 {
        let stride = f.stride(plane);
        let (pw, ph) = (
            f.plane_width(plane) as usize,
            f.plane_height(plane) as usize,
        );
        let data = f.data_mut(plane);
        for y in 0..ph {
            for x in 0..pw {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let wave = 60.0 * (x as f64 / 7.0).sin() + 40.0 * (y as f64 / 11.0).cos();
                data[y * stride + x] = (128.0 + wave + (state % 21) as f64 - 10.0) as u8;
            }
        }
    }
    f
}

fn case(w: u32, h: u32) {
    let src = textured(w, h);
    let mut out = ff::frame::Video::new(ff::format::Pixel::YUV420P, 2 * w, 2 * h);
    let mut up = Up2::default();
    let ours = per_call_us(N, || {
        for plane in 0..3 {
            let (pw, ph) = (
                src.plane_width(plane) as usize,
                src.plane_height(plane) as usize,
            );
            let source = Plane {
                data: src.data(plane),
                stride: src.stride(plane),
                width: pw,
                height: ph,
            };
            let whole = Area {
                x: 0,
                y: 0,
                w: pw,
                h: ph,
            };
            let stride = out.stride(plane);
            up.scale(source, whole, out.data_mut(plane), stride, (0, 0))
                .unwrap();
        }
        black_box(&out);
    });
    println!("{w}x{h} -> {}x{}: up2 {ours:.1} us a picture", 2 * w, 2 * h);
    for (name, flags) in [
        (
            "libswscale bilinear",
            ff::software::scaling::Flags::BILINEAR,
        ),
        ("libswscale bicubic", ff::software::scaling::Flags::BICUBIC),
    ] {
        let mut scaler = ff::software::scaling::Context::get(
            ff::format::Pixel::YUV420P,
            w,
            h,
            ff::format::Pixel::YUV420P,
            2 * w,
            2 * h,
            flags,
        )
        .unwrap();
        let theirs = per_call_us(N, || {
            scaler.run(&src, &mut out).unwrap();
            black_box(&out);
        });
        println!(
            "  {name:<20} {theirs:.1} us a picture; up2/{name}: {:.2}x",
            ours / theirs
        );
    }
}

fn main() {
    ff::init().unwrap();
    // The rooms bench's cell: the centre 320x360 of a 640x360 camera.
    case(320, 360);
    case(960, 540);
}
