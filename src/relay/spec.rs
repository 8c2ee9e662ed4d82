//! What a relay task is asked to do: one input times one set of outputs.
//!
//! The input is either one anchor passed through or every anchor of the room
//! mixed; the outputs are the same for both. Specs are built from a
//! validated profile ([`RelaySpec::for_anchor`], [`RelaySpec::for_mix`]);
//! callers then adjust the outputs, the stream name and the idle limit.

use std::path::PathBuf;
use std::time::Duration;

use super::RelayError;
use crate::mix::pipeline::MixSettings;
use crate::profile::{AudioEncoding, HlsOutput, RelayMode, RelayProfile};
use crate::record::RecordTarget;
use crate::room::{Grant, RoomId, RoomKey, UserId};

/// Default `max_idle_time`: a task stops after this long without its anchor (TRTC: 30 s).
const DEFAULT_MAX_IDLE: Duration = Duration::from_secs(30);

/// A task's `max_idle_time` from a request, in seconds (TRTC's MaxIdleTime):
/// [`DEFAULT_MAX_IDLE`] when absent, else 5 to 86400; `Err` says the range.
pub(crate) fn max_idle(secs: Option<u64>) -> Result<Duration, &'static str> {
    match secs {
        None => Ok(DEFAULT_MAX_IDLE),
        Some(s) if (5..=86_400).contains(&s) => Ok(Duration::from_secs(s)),
        Some(_) => Err("5 to 86400 seconds"),
    }
}

/// What a task is asked to do.
#[derive(Debug, Clone)]
pub(crate) struct RelaySpec {
    pub id: String,
    pub room: RoomKey,
    /// The output's stream name (HLS directory, recording prefix).
    pub stream: String,
    pub input: RelayInput,
    pub outputs: OutputSpec,
    /// The task stops after this long without input.
    pub max_idle: Duration,
}

/// Where a task's media comes from.
#[derive(Debug, Clone)]
pub(crate) enum RelayInput {
    /// One anchor passed through (re-encoded only where asked or where the
    /// outputs cannot carry its codecs).
    Anchor(AnchorInput),
    /// Every anchor of the room composed by a layout and encoded.
    Mix(Box<MixSettings>),
}

#[derive(Debug, Clone)]
pub(crate) struct AnchorInput {
    pub user: UserId,
    /// Re-encode the anchor's AAC with these settings (profile `audio.reencode`).
    pub audio_reencode: Option<AudioEncoding>,
    /// Audio that FLV and MPEG-TS cannot carry (Opus from WebRTC) is
    /// transcoded to AAC with these settings.
    pub audio_fallback: Option<AudioEncoding>,
}

/// Where a task's media goes, whatever its input.
#[derive(Debug, Clone, Default)]
pub(crate) struct OutputSpec {
    pub rtmp: Vec<String>,
    pub hls: Option<HlsOutput>,
    /// Record what the task emits (a relative `dir` is under the data dir's `recordings/`).
    pub record: Option<RecordTarget>,
    /// Rooms the output is published back into, as a user there (TRTC
    /// FeedBackRoomParams).
    pub feedback: Vec<Feedback>,
}

/// One room the output is pushed back into.
#[derive(Debug, Clone)]
pub(crate) struct Feedback {
    pub room: RoomKey,
    pub user: UserId,
    pub grant: Option<Grant>,
}

impl RelaySpec {
    /// The anchor a passthrough task follows; `None` for a mix.
    pub(crate) fn user(&self) -> Option<&UserId> {
        self.anchor().map(|a| &a.user)
    }

    /// A mix task's settings; `None` for a passthrough.
    pub(crate) fn mix(&self) -> Option<&MixSettings> {
        match &self.input {
            RelayInput::Mix(m) => Some(m),
            RelayInput::Anchor(_) => None,
        }
    }

    /// A passthrough's input; `None` for a mix.
    pub(crate) fn anchor(&self) -> Option<&AnchorInput> {
        match &self.input {
            RelayInput::Anchor(a) => Some(a),
            RelayInput::Mix(_) => None,
        }
    }

    pub(crate) fn anchor_mut(&mut self) -> Option<&mut AnchorInput> {
        match &mut self.input {
            RelayInput::Anchor(a) => Some(a),
            RelayInput::Mix(_) => None,
        }
    }

    /// A mix task's settings, taken out of the spec; `None` for a passthrough.
    pub(crate) fn into_mix(self) -> Option<MixSettings> {
        match self.input {
            RelayInput::Mix(m) => Some(*m),
            RelayInput::Anchor(_) => None,
        }
    }

    pub(crate) fn mix_mut(&mut self) -> Option<&mut MixSettings> {
        match &mut self.input {
            RelayInput::Mix(m) => Some(m),
            RelayInput::Anchor(_) => None,
        }
    }

    /// A mix of every anchor of `room` with a mix profile; stream `<SDKAppID>_<RoomId>_mix`.
    pub(crate) fn for_mix(room: RoomKey, profile: &RelayProfile) -> Result<RelaySpec, RelayError> {
        let RelayMode::Mix { layout } = &profile.mode else {
            return Err(RelayError::Invalid(format!(
                "profile `{}` relays one anchor; name the anchor (userid)",
                profile.name
            )));
        };
        Ok(RelaySpec {
            id: String::new(),
            stream: format!("{}_{}_mix", room.app, room.room),
            room,
            input: RelayInput::Mix(Box::new(MixSettings {
                layout: layout.clone(),
                video: profile.video.clone(),
                audio: profile.audio.clone(),
                freeze: Duration::from_millis(u64::from(layout.freeze_ms)),
                jitter: Duration::from_millis(u64::from(layout.jitter_buffer_ms)),
                jitter_adaptive: layout.jitter_buffer == crate::profile::JitterBuffer::Adaptive,
                audio_filter: Default::default(),
                volumes: Vec::new(),
            })),
            outputs: outputs(profile, None),
            max_idle: DEFAULT_MAX_IDLE,
        })
    }

    /// A passthrough task for one anchor with a profile's outputs and TRTC's
    /// stream name.
    pub(crate) fn for_anchor(
        room: RoomKey,
        user: UserId,
        profile: &RelayProfile,
    ) -> Result<RelaySpec, RelayError> {
        let audio_reencode = match profile.mode {
            RelayMode::Mix { .. } => {
                return Err(RelayError::Invalid(format!(
                    "profile `{}` mixes every anchor of the room; leave out the anchor (userid)",
                    profile.name
                )));
            }
            RelayMode::Passthrough { audio_reencode } => {
                audio_reencode.then(|| profile.audio.clone())
            }
        };
        Ok(RelaySpec {
            id: String::new(),
            stream: default_stream_name(&room, &user),
            outputs: outputs(profile, Some(&user)),
            room,
            input: RelayInput::Anchor(AnchorInput {
                user,
                audio_reencode,
                audio_fallback: Some(profile.audio.clone()),
            }),
            max_idle: DEFAULT_MAX_IDLE,
        })
    }
}

/// TRTC's default stream name for a single anchor.
fn default_stream_name(room: &RoomKey, user: &UserId) -> String {
    let room_part = match &room.room {
        RoomId::Num(n) => n.to_string(),
        RoomId::Str(s) => s.clone(),
    };
    format!("{}_{}_{}_main", room.app, room_part, user)
}

/// A stream name roomcast accepts: it becomes a directory and a file prefix.
pub(crate) fn valid_stream_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && !s.starts_with('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'@'))
}

/// A profile's outputs; its `outputs.record` writes under
/// `recordings/<stream>/` (the stream name is settled when the task starts).
fn outputs(profile: &RelayProfile, user: Option<&UserId>) -> OutputSpec {
    OutputSpec {
        rtmp: profile.outputs.rtmp.clone(),
        hls: profile.outputs.hls.clone(),
        record: profile.outputs.record.clone().map(|output| RecordTarget {
            dir: PathBuf::new(),
            prefix: String::new(),
            user: user.map(|u| u.as_str().to_owned()),
            output,
            files: Default::default(),
        }),
        feedback: Vec::new(),
    }
}
