//! The one door to libav's raw structures: every `unsafe` in roomcast is
//! here, each with the reason it holds, behind safe functions that take
//! ffmpeg-next's owning wrappers (so the pointers are valid by
//! construction). The rest of the crate is `#![deny(unsafe_code)]`.
//!
//! Also here: [`tune_allocator`], the C allocator's settings for a media
//! process, and [`received`], which tells the three answers of a
//! `receive_frame`/`receive_packet` call apart (something came, send more
//! first, the stream has ended) from a real error.
#![allow(unsafe_code)]

use bytes::Bytes;

use super::Rect;
use ff::ffi;
use ffmpeg_next as ff;

/// Copies `data` into a fresh, padded libav buffer; null when `data` is
/// empty or the allocation failed.
fn padded_copy(data: &[u8]) -> *mut u8 {
    if data.is_empty() {
        return std::ptr::null_mut();
    }
    // SAFETY: av_mallocz returns null or a zeroed buffer of the size asked;
    // `data.len()` bytes are copied into it, which is within that size.
    unsafe {
        let buf =
            ffi::av_mallocz(data.len() + ffi::AV_INPUT_BUFFER_PADDING_SIZE as usize) as *mut u8;
        if !buf.is_null() {
            std::ptr::copy_nonoverlapping(data.as_ptr(), buf, data.len());
        }
        buf
    }
}

/// A codec's configuration (avcC, AudioSpecificConfig, ...) given to a
/// context that is not opened yet; the context frees it. Nothing when empty
/// (decoders treat an empty-but-present extradata as bad).
pub(crate) fn set_extradata(ctx: &mut ff::codec::context::Context, data: &[u8]) {
    let buf = padded_copy(data);
    if buf.is_null() {
        return;
    }
    // SAFETY: `ctx` owns a valid AVCodecContext, not opened (the wrapper is
    // not a decoder or encoder yet), whose extradata is unset; it takes the
    // av_malloc'ed buffer and frees it with itself.
    unsafe {
        let c = ctx.as_mut_ptr();
        (*c).extradata = buf;
        (*c).extradata_size = data.len() as i32;
    }
}

/// Pictures larger than `pixels` are refused by this (not yet opened)
/// decoder instead of allocated for.
pub(crate) fn set_max_pixels(ctx: &mut ff::codec::context::Context, pixels: i64) {
    // SAFETY: `ctx` owns a valid AVCodecContext; max_pixels is a plain field
    // read when the decoder sizes its frames.
    unsafe { (*ctx.as_mut_ptr()).max_pixels = pixels }
}

/// The sample rate and default channel layout of a decoder whose input
/// carries neither (WebRTC Opus, RFC 7587: 48 kHz stereo).
pub(crate) fn set_audio_format(ctx: &mut ff::codec::context::Context, rate: i32, channels: i32) {
    // SAFETY: `ctx` owns a valid, not yet opened AVCodecContext; its
    // ch_layout is a valid (empty) layout that av_channel_layout_default
    // overwrites.
    unsafe {
        let c = ctx.as_mut_ptr();
        (*c).sample_rate = rate;
        ffi::av_channel_layout_default(&mut (*c).ch_layout, channels);
    }
}

/// The VBV buffer of an encoder that is not opened yet, in bits.
pub(crate) fn set_rc_buffer_size(ctx: &mut ff::codec::context::Context, bits: i32) {
    // SAFETY: `ctx` owns a valid AVCodecContext; rc_buffer_size is a plain
    // field read when the encoder opens.
    unsafe { (*ctx.as_mut_ptr()).rc_buffer_size = bits }
}

/// The global headers an opened encoder produced (SPS/PPS, AudioSpecificConfig).
pub(crate) fn encoder_extradata(ctx: &ff::codec::context::Context) -> Vec<u8> {
    // SAFETY: `ctx` owns a valid AVCodecContext; libav keeps `extradata`
    // null or pointing at `extradata_size` bytes, which are copied out while
    // `ctx` is borrowed.
    unsafe {
        let c = ctx.as_ptr();
        if (*c).extradata.is_null() || (*c).extradata_size <= 0 {
            return Vec::new();
        }
        std::slice::from_raw_parts((*c).extradata, (*c).extradata_size as usize).to_vec()
    }
}

/// An opened encoder's priming samples (its first packet's audio starts
/// this many samples after its timestamp).
pub(crate) fn initial_padding(ctx: &ff::codec::context::Context) -> i32 {
    // SAFETY: `ctx` owns a valid AVCodecContext; a plain field read.
    unsafe { (*ctx.as_ptr()).initial_padding }
}

/// The codec configuration a demuxed stream carries.
pub(crate) fn parameters_extradata(par: &ff::codec::Parameters) -> Bytes {
    // SAFETY: `par` wraps a valid AVCodecParameters; `extradata` is null or
    // points at `extradata_size` bytes, copied out while `par` is borrowed.
    unsafe {
        let p = par.as_ptr();
        if (*p).extradata.is_null() || (*p).extradata_size <= 0 {
            return Bytes::new();
        }
        Bytes::copy_from_slice(std::slice::from_raw_parts(
            (*p).extradata,
            (*p).extradata_size as usize,
        ))
    }
}

/// What a muxer's new stream carries, set on its codec parameters: H.264
/// (video) or AAC (audio, with its rate and channels when known), and the
/// codec configuration.
pub(crate) enum StreamCodec {
    H264,
    Aac { rate_channels: Option<(u32, u32)> },
}

/// Describes a muxer's stream before the header is written. `Err` only when
/// libav cannot allocate the configuration's copy.
pub(crate) fn describe_stream(
    stream: &mut ff::format::stream::StreamMut<'_>,
    codec: StreamCodec,
    extradata: &[u8],
) -> Result<(), ff::Error> {
    let buf = padded_copy(extradata);
    if buf.is_null() && !extradata.is_empty() {
        return Err(ff::Error::Other { errno: ENOMEM });
    }
    // SAFETY: the stream belongs to an output context whose header is not
    // written yet; its codecpar is a valid AVCodecParameters owned by it,
    // whose ch_layout av_channel_layout_default overwrites and which takes
    // the av_malloc'ed extradata and frees it with itself.
    unsafe {
        let par = (*stream.as_mut_ptr()).codecpar;
        match codec {
            StreamCodec::H264 => {
                (*par).codec_type = ffi::AVMediaType::AVMEDIA_TYPE_VIDEO;
                (*par).codec_id = ffi::AVCodecID::AV_CODEC_ID_H264;
            }
            StreamCodec::Aac { rate_channels } => {
                (*par).codec_type = ffi::AVMediaType::AVMEDIA_TYPE_AUDIO;
                (*par).codec_id = ffi::AVCodecID::AV_CODEC_ID_AAC;
                if let Some((rate, channels)) = rate_channels {
                    (*par).sample_rate = rate as i32;
                    ffi::av_channel_layout_default(&mut (*par).ch_layout, channels as i32);
                }
            }
        }
        if !buf.is_null() {
            (*par).extradata = buf;
            (*par).extradata_size = extradata.len() as i32;
        }
    }
    Ok(())
}

/// The picture size of a muxer's video stream (MP4 needs it in its sample
/// description), before the header is written.
pub(crate) fn set_stream_picture_size(
    stream: &mut ff::format::stream::StreamMut<'_>,
    width: u32,
    height: u32,
) {
    // SAFETY: as in `describe_stream`: a valid codecpar owned by the stream;
    // plain fields.
    unsafe {
        let par = (*stream.as_mut_ptr()).codecpar;
        (*par).width = width as i32;
        (*par).height = height as i32;
    }
}

/// Keeps freed memory in the process instead of handing it back to the
/// kernel and faulting it in again, zeroed, a moment later: the codecs free
/// and allocate picture-sized buffers all the time. With glibc's defaults a
/// mix spent about 2 % of its CPU zeroing fresh pages (`perf`:
/// `clear_page_erms`). Buffers up to 32 MiB come from the heap (not one
/// `mmap` each), and a heap keeps up to 256 MiB free at its top. Call once,
/// before threads start. The cost: the resident size stays near its peak
/// until [`release_free_memory`] hands what is free back.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // glibc's <malloc.h>.
        const M_TRIM_THRESHOLD: i32 = -1;
        const M_TOP_PAD: i32 = -2;
        const M_MMAP_THRESHOLD: i32 = -3;
        unsafe extern "C" {
            fn mallopt(param: i32, value: i32) -> i32;
        }
        // SAFETY: mallopt only changes the allocator's thresholds; it is
        // called before the process starts its threads.
        unsafe {
            mallopt(M_MMAP_THRESHOLD, 32 << 20);
            mallopt(M_TRIM_THRESHOLD, 256 << 20);
            mallopt(M_TOP_PAD, 16 << 20);
        }
    }
}

/// Puts the calling thread under Linux's `SCHED_BATCH` policy: a thread
/// woken does not preempt the one running on its core, and is preempted
/// less by those it wakes (see `RuntimeConfig::rtmp_batch`). Any thread
/// may lower itself to it; an error says why not.
pub fn run_as_batch() -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: sched_setscheduler only reads `param`, and changes the
        // policy of the calling thread (pid 0) alone.
        match unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) } {
            0 => Ok(()),
            _ => Err(std::io::Error::last_os_error()),
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
    }
}

/// Asks the CPU to bring the cache line at `p` in, without waiting for
/// it: for memory the next step reads that was last touched long ago.
/// Nothing is read; any address is allowed.
#[inline(always)]
pub(crate) fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint; it never faults, whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// CPU time the calling thread has used since it started (the kernel's
/// account, `CLOCK_THREAD_CPUTIME_ID`); `None` if the clock is not there.
pub(crate) fn thread_cpu_time() -> Option<std::time::Duration> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec it is given.
    match unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } {
        0 => Some(std::time::Duration::new(
            u64::try_from(ts.tv_sec).ok()?,
            u32::try_from(ts.tv_nsec).ok()?,
        )),
        _ => None,
    }
}

/// Bytes the allocator holds free in its heaps, handed back to the kernel
/// or not (glibc's `mallinfo2().fordblks`, over every arena); `None` with
/// another C library.
pub fn free_memory() -> Option<usize> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 only reads the allocator's statistics, under
        // its own locks, into the value it returns.
        Some(unsafe { libc::mallinfo2() }.fordblks)
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        None
    }
}

/// Hands the kernel back the free memory the allocator keeps (see
/// [`tune_allocator`]), beyond a 16 MiB pad at the heap's top. Called when
/// free memory grew by more than a box's steady churn frees
/// ([`super::free_memory::HandBack`], from [`crate::server`]): a burst, two
/// thousand players at once, does not stay resident for good, while the
/// churn keeps finding its pages in the heap.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // glibc's <malloc.h>.
        unsafe extern "C" {
            fn malloc_trim(pad: usize) -> i32;
        }
        // SAFETY: malloc_trim only gives whole free pages back to the
        // kernel, under the allocator's own locks.
        unsafe {
            malloc_trim(16 << 20);
        }
    }
}

/// Makes `frame`'s buffers its own before it is drawn on again (copies only
/// if something else, an encoder, still holds a reference to them).
pub(crate) fn make_writable(frame: &mut ff::frame::Video) -> Result<(), ff::Error> {
    // SAFETY: `frame` owns a valid AVFrame; av_frame_make_writable keeps
    // its size and format and replaces shared buffers with copies.
    match unsafe { ffi::av_frame_make_writable(frame.as_mut_ptr()) } {
        0 => Ok(()),
        e => Err(ff::Error::from(e)),
    }
}

/// Whether `scale_into` can write `dst` of `canvas` in place: libswscale's
/// vector code writes whole 16-byte blocks from an aligned start, so the
/// rectangle starts 32-aligned (16 for chroma) and either spans a multiple
/// of 16 pixels or ends at the row's end (where the line size pads it).
pub(crate) fn writes_in_place(canvas: &ff::frame::Video, dst: Rect) -> bool {
    dst.x.is_multiple_of(32) && (dst.w.is_multiple_of(16) || dst.x + dst.w == canvas.width())
}

/// Scales `region` of `src` into the rectangle `dst` of `canvas` (a
/// YUV420P picture), through `scaler` made for exactly those sizes: no copy
/// of the source, no intermediate picture. `scratch` is an empty frame this
/// borrows to view the region. Refuses (`InvalidData`) anything that does not
/// fit: a region outside the source, a rectangle outside the canvas, odd
/// coordinates, sizes the scaler was not made for, a rectangle
/// `writes_in_place` does not allow.
pub(crate) fn scale_into(
    scaler: &mut ff::software::scaling::Context,
    src: &ff::frame::Video,
    region: Rect,
    scratch: &mut ff::frame::Video,
    canvas: &mut ff::frame::Video,
    dst: Rect,
) -> Result<(), ff::Error> {
    let fits = |a: Rect, w: u32, h: u32| {
        a.w > 0
            && a.h > 0
            && a.x.checked_add(a.w).is_some_and(|r| r <= w)
            && a.y.checked_add(a.h).is_some_and(|b| b <= h)
    };
    let (input, output) = (scaler.input(), scaler.output());
    if !fits(region, src.width(), src.height())
        || !fits(dst, canvas.width(), canvas.height())
        || canvas.format() != ff::format::Pixel::YUV420P
        || !dst.x.is_multiple_of(2)
        || !dst.y.is_multiple_of(2)
        || !writes_in_place(canvas, dst)
        || (input.width, input.height, input.format) != (region.w, region.h, src.format())
        || (output.width, output.height, output.format)
            != (dst.w, dst.h, ff::format::Pixel::YUV420P)
    {
        return Err(ff::Error::InvalidData);
    }
    // SAFETY: `src`, `scratch` and `canvas` own valid AVFrames. `scratch`
    // takes a new reference to `src`'s buffers (released below) and
    // av_frame_apply_cropping moves its data pointers to `region`, which was
    // checked to lie inside the picture; its size is checked to be the
    // region's after. The destination pointers are offsets into the
    // canvas's planes for a rectangle checked to lie inside its YUV420P
    // picture at even coordinates (chroma at half of each), with positive
    // line sizes from av_frame_get_buffer; `writes_in_place` keeps the
    // scaler's block writes inside the rectangle or the row's padding.
    // The scaler was checked to be made for the region's size and format
    // and the rectangle's size, so it reads `region.h` rows of the view and
    // writes `dst.h` rows.
    unsafe {
        let view = scratch.as_mut_ptr();
        ffi::av_frame_unref(view);
        let e = ffi::av_frame_ref(view, src.as_ptr());
        if e < 0 {
            return Err(ff::Error::from(e));
        }
        (*view).crop_left = region.x as usize;
        (*view).crop_top = region.y as usize;
        (*view).crop_right = (src.width() - region.x - region.w) as usize;
        (*view).crop_bottom = (src.height() - region.y - region.h) as usize;
        let e = ffi::av_frame_apply_cropping(view, ffi::AV_FRAME_CROP_UNALIGNED as i32);
        if e < 0 || (*view).width != region.w as i32 || (*view).height != region.h as i32 {
            ffi::av_frame_unref(view);
            return Err(if e < 0 {
                ff::Error::from(e)
            } else {
                ff::Error::InvalidData
            });
        }
        let c = canvas.as_mut_ptr();
        if (0..3).any(|p| (*c).linesize[p] <= 0) {
            ffi::av_frame_unref(view);
            return Err(ff::Error::InvalidData);
        }
        let mut planes = [std::ptr::null_mut::<u8>(); 4];
        let mut strides = [0i32; 4];
        for p in 0..3 {
            let shift = usize::from(p > 0);
            let stride = (*c).linesize[p];
            let offset = (dst.y as usize >> shift) * stride as usize + (dst.x as usize >> shift);
            planes[p] = (*c).data[p].add(offset);
            strides[p] = stride;
        }
        let rows = ffi::sws_scale(
            scaler.as_mut_ptr(),
            (*view).data.as_ptr() as *const *const u8,
            (*view).linesize.as_ptr(),
            0,
            region.h as i32,
            planes.as_ptr(),
            strides.as_ptr(),
        );
        ffi::av_frame_unref(view);
        if rows < 0 {
            return Err(ff::Error::from(rows));
        }
    }
    Ok(())
}

/// POSIX ENOMEM, for an allocation failure reported like libav's own.
const ENOMEM: i32 = 12;

/// What a `receive_frame` / `receive_packet` call answered, when it was not
/// an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Received {
    /// A frame or packet was written.
    Got,
    /// Nothing until more input is sent (EAGAIN).
    Again,
    /// The stream has ended (after a flush).
    Eof,
}

/// Tells a drain loop what libav said: keep going, stop for now, stop for
/// good, or a real error to report.
pub(crate) fn received(r: Result<(), ff::Error>) -> Result<Received, ff::Error> {
    match r {
        Ok(()) => Ok(Received::Got),
        Err(ff::Error::Other { errno }) if errno == ff::error::EAGAIN => Ok(Received::Again),
        Err(ff::Error::Eof) => Ok(Received::Eof),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drain_answers_are_told_apart() {
        assert_eq!(received(Ok(())), Ok(Received::Got));
        assert_eq!(
            received(Err(ff::Error::Other {
                errno: ff::error::EAGAIN
            })),
            Ok(Received::Again)
        );
        assert_eq!(received(Err(ff::Error::Eof)), Ok(Received::Eof));
        assert_eq!(
            received(Err(ff::Error::InvalidData)),
            Err(ff::Error::InvalidData)
        );
    }

    /// A prefetch of any address, mapped or not, is only a hint.
    #[test]
    fn a_prefetch_never_faults() {
        prefetch(std::ptr::null::<u8>());
        prefetch(std::ptr::without_provenance::<u64>(usize::MAX - 7));
        let v = [1u8; 64];
        prefetch(v.as_ptr().wrapping_add(1 << 40));
        assert_eq!(v[0], 1);
    }

    /// A thread's CPU clock counts its own work, not the time it waits.
    #[test]
    fn a_threads_cpu_time_counts_its_work_not_its_sleep() {
        let start = thread_cpu_time().expect("the thread's CPU clock");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let mut spins = 0u64;
        while thread_cpu_time().unwrap() < start + std::time::Duration::from_millis(20) {
            assert!(
                std::time::Instant::now() < deadline,
                "20 ms of CPU never came"
            );
            spins = std::hint::black_box(spins + 1);
        }
        let worked = thread_cpu_time().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(100));
        let slept = thread_cpu_time().unwrap() - worked;
        assert!(
            slept < std::time::Duration::from_millis(20),
            "{slept:?} of CPU asleep"
        );
    }

    /// Memory freed in the middle of the heap (fragmented: every other
    /// block of a burst) is counted free, as the hand-back rule reads it.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn memory_freed_in_the_heap_is_counted_free() {
        // 64 KiB blocks: below glibc's smallest mmap threshold, so from a
        // heap; 48 MiB of them freed, none next to another.
        let mut blocks: Vec<Vec<u8>> = (0..1536).map(|_| vec![1u8; 64 << 10]).collect();
        let before = free_memory().expect("glibc");
        let kept: Vec<Vec<u8>> = blocks
            .drain(..)
            .enumerate()
            .filter_map(|(i, b)| (i % 2 == 0).then_some(b))
            .collect();
        let after = free_memory().expect("glibc");
        // Other tests' threads allocate and free meanwhile, from arenas of
        // their own; a third of the freed memory is margin enough.
        assert!(
            after >= before + (32 << 20),
            "free memory went from {before} to {after} bytes after freeing 48 MiB"
        );
        drop(kept);
    }

    #[test]
    fn an_aac_decoder_drains_again_then_eof() {
        ff::init().unwrap();
        let codec = ff::decoder::find(ff::codec::Id::AAC).unwrap();
        let mut ctx = ff::codec::context::Context::new_with_codec(codec);
        // AAC-LC, 48 kHz, stereo.
        set_extradata(&mut ctx, &[0x11, 0x90]);
        let mut dec = ctx.decoder().audio().unwrap();
        let mut frame = ff::frame::Audio::empty();
        assert_eq!(received(dec.receive_frame(&mut frame)), Ok(Received::Again));
        dec.send_eof().unwrap();
        assert_eq!(received(dec.receive_frame(&mut frame)), Ok(Received::Eof));
    }
}
