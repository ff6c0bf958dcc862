//! Domain types for every control message, and their conversion from and to the wire.
//!
//! [`Message::try_from`] (from [`wire::Control`]) is the only door in: it destructures
//! every wire message exhaustively, so a field added to the proto fails to compile here
//! until it is handled, and it refuses malformed content with a named
//! [`ControlDecodeError`]. [`wire::Control::from`] is the way out and cannot fail: the
//! domain types only hold values the wire can carry.
//!
//! Tolerance rules, for release N talking to release N-1:
//! - an unknown `features` string in `Hello` is ignored (a newer peer may declare more);
//! - an unknown error-code value decodes as [`ErrorCode::Unrecognised`], so a refusal
//!   from a newer peer is still a refusal;
//! - an unknown codec, agent kind or message type is an error: guessing would be unsafe.

use bytes::Bytes;
use jiff::Timestamp;

use super::wire;
use crate::ids::{CameraId, IdError, SiteId};
use crate::media::{Codec, StreamInfo};
use crate::policy::{AgentKind, ViewingSession};
use crate::roq::VARINT_MAX;

/// The control protocol version this release speaks (`Hello.proto_version`).
pub const PROTO_VERSION: u32 = 1;

/// RTP clock rate of every video payload passerelle carries (RFC 6184 §8.2.1,
/// RFC 7798 §7.1): the wire does not carry it.
pub const VIDEO_CLOCK_RATE: u32 = 90_000;

/// Length of a checkpoint's head hash: SHA-256.
pub const CHECKPOINT_HASH_LEN: usize = 32;

/// Length of a checkpoint's signature: Ed25519 (RFC 8032 §5.1.6).
pub const CHECKPOINT_SIGNATURE_LEN: usize = 64;

/// One control message between two gateways.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// First message in each direction.
    Hello(Hello),
    /// The cameras the sender's policy grants the receiver.
    Catalog(Vec<CatalogCamera>),
    /// The complete new catalog after a policy change; it replaces the old one.
    CatalogUpdate(Vec<CatalogCamera>),
    /// Asks for a stream of one camera.
    Subscribe(Subscribe),
    /// A stream was granted.
    SubscribeOk(SubscribeOk),
    /// A stream was refused.
    SubscribeError(SubscribeError),
    /// The receiver no longer needs this stream.
    Unsubscribe { flow_id: FlowId },
    /// A viewing session starts (sent towards the camera's site).
    ViewOpen(ViewOpen),
    /// The camera site's decision on a viewing session.
    ViewAnswer(ViewAnswer),
    /// A viewing session ended.
    ViewClose { view_id: ViewId },
    /// The receiver asks for a keyframe on this stream.
    KeyframeRequest { flow_id: FlowId },
    /// The sender stopped a stream.
    StreamEnded(StreamEnded),
    /// A signed head of the sender's access journal.
    Checkpoint(Checkpoint),
}

impl Message {
    /// The message type's name, for logs and errors.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Hello(_) => "hello",
            Message::Catalog(_) => "catalog",
            Message::CatalogUpdate(_) => "catalog_update",
            Message::Subscribe(_) => "subscribe",
            Message::SubscribeOk(_) => "subscribe_ok",
            Message::SubscribeError(_) => "subscribe_error",
            Message::Unsubscribe { .. } => "unsubscribe",
            Message::ViewOpen(_) => "view_open",
            Message::ViewAnswer(_) => "view_answer",
            Message::ViewClose { .. } => "view_close",
            Message::KeyframeRequest { .. } => "keyframe_request",
            Message::StreamEnded(_) => "stream_ended",
            Message::Checkpoint(_) => "checkpoint",
        }
    }
}

/// A RoQ flow id: the varint in front of every datagram of one stream. Always at most
/// 2^62 - 1 (RFC 9000 §16), so it can always be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FlowId(u64);

impl FlowId {
    /// A flow id, or `None` above the varint range.
    pub fn new(value: u64) -> Option<FlowId> {
        (value <= VARINT_MAX).then_some(FlowId(value))
    }

    /// The flow id as a number.
    pub fn value(self) -> u64 {
        self.0
    }
}

impl std::fmt::Display for FlowId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Chosen by the requester of a `Subscribe`, echoed in the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(pub u64);

/// Chosen by the sender of a `ViewOpen`, unique on the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ViewId(pub u64);

/// An optional behaviour a gateway declares in its `Hello`. A restriction is sent only
/// to a peer that declared the feature enforcing it; other peers get the camera withheld.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Feature {
    /// Enforces `Restrictions::onward` on the cameras it imports.
    Onward,
    /// Enforces `Restrictions::on_request` (agent and reason for every viewing).
    OnRequest,
    /// Enforces `Restrictions::grant_end`.
    GrantEnd,
}

impl Feature {
    /// Every feature this release knows, which it also implements.
    pub const ALL: [Feature; 3] = [Feature::Onward, Feature::OnRequest, Feature::GrantEnd];

    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Feature::Onward => "onward",
            Feature::OnRequest => "on_request",
            Feature::GrantEnd => "grant_end",
        }
    }

    /// The feature spelled `name`, or `None` for one this release does not know.
    pub fn from_name(name: &str) -> Option<Feature> {
        Feature::ALL.into_iter().find(|f| f.as_str() == name)
    }
}

/// First message in each direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// The protocol version the sender speaks ([`PROTO_VERSION`]).
    pub proto_version: u32,
    /// The sender's site id; must equal the id its certificate proved.
    pub site: SiteId,
    /// The features the sender declared that this release knows, sorted, no duplicates.
    pub features: Vec<Feature>,
    /// Serial of the policy in force at the sender, `None` if none.
    pub policy_serial: Option<u64>,
}

/// One camera of a catalog, in the sender's own ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogCamera {
    pub id: CameraId,
    /// `None` while the camera has never been reached.
    pub codec: Option<Codec>,
    /// Parameter sets without start codes (SPS, PPS; VPS first for H.265); empty while
    /// the camera has never been reached.
    pub parameter_sets: Vec<Bytes>,
    pub restrictions: Restrictions,
    /// Whether the camera answered its last probe.
    pub up: bool,
}

/// What the receiver must enforce when it re-shares or shows a camera.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Restrictions {
    /// Every viewing needs an agent and a reason.
    pub on_request: bool,
    /// Sites the receiver may re-share the camera to; empty means none.
    pub onward: Vec<SiteId>,
    /// End of the grant; `None` if only the policy's validity bounds it.
    pub grant_end: Option<Timestamp>,
}

impl Restrictions {
    /// The features a peer must have declared to receive a camera under these
    /// restrictions: `onward` for a non-empty onward list, `on_request`, `grant_end`.
    /// A site re-sharing an imported camera requires `onward` even for an empty list
    /// (the upstream's "re-share to nobody" must be enforced too); only it knows that.
    pub fn required_features(&self) -> impl Iterator<Item = Feature> + '_ {
        [
            (!self.onward.is_empty(), Feature::Onward),
            (self.on_request, Feature::OnRequest),
            (self.grant_end.is_some(), Feature::GrantEnd),
        ]
        .into_iter()
        .filter_map(|(needed, feature)| needed.then_some(feature))
    }

    /// Whether a peer that declared `features` enforces every one of these
    /// restrictions; a camera it would not enforce is withheld, never sent unrestricted.
    pub fn enforced_by(&self, features: &[Feature]) -> bool {
        self.required_features().all(|f| features.contains(&f))
    }
}

/// Asks for a stream of one camera (in the provider's ids).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    pub request_id: RequestId,
    pub camera: CameraId,
}

/// A granted stream: its datagrams start with `flow_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeOk {
    pub request_id: RequestId,
    pub flow_id: FlowId,
    /// Codec and parameter sets; the clock rate is always [`VIDEO_CLOCK_RATE`].
    pub info: StreamInfo,
}

/// A refused stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeError {
    pub request_id: RequestId,
    pub code: ErrorCode,
}

/// A viewing session starting, carried to the camera's site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewOpen {
    pub view_id: ViewId,
    /// The camera in the receiver's (provider's) ids.
    pub camera: CameraId,
    pub session: ViewingSession,
}

/// The camera site's decision on a `ViewOpen`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewAnswer {
    pub view_id: ViewId,
    /// `None` when the viewing is allowed.
    pub refusal: Option<ErrorCode>,
}

/// The sender stopped a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamEnded {
    pub flow_id: FlowId,
    pub code: ErrorCode,
}

/// A signed head of the sender's access journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub journal_id: String,
    pub sequence: u64,
    pub head_hash: [u8; CHECKPOINT_HASH_LEN],
    pub time: Timestamp,
    pub signature: [u8; CHECKPOINT_SIGNATURE_LEN],
}

/// Why a subscription, a viewing or a stream was refused or ended: the proto's
/// `ErrorCode`, without `UNSPECIFIED` (which means "no error" and is an `Option::None`
/// where the wire allows it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The camera is unknown to the requester or not granted to it.
    NotGranted,
    /// No valid policy is in force.
    NoPolicy,
    OutsideHours,
    /// An `on_request` grant and no open intervention for this agent and camera.
    NoIntervention,
    /// An `on_request` grant never accepts a service account.
    ServiceAccount,
    MaxStreams,
    MaxBitrate,
    /// The camera cannot be reached now.
    CameraUnavailable,
    /// The journal cannot record the viewing, so it may not start.
    JournalUnavailable,
    /// A policy change withdrew the grant.
    Withdrawn,
    ShuttingDown,
    /// The request referred to an unknown flow or view.
    UnknownFlow,
    /// A value this release does not know, from a newer peer. Still a refusal.
    Unrecognised(i32),
}

impl ErrorCode {
    /// A stable spelling for logs, journal records and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::NotGranted => "not_granted",
            ErrorCode::NoPolicy => "no_policy",
            ErrorCode::OutsideHours => "outside_hours",
            ErrorCode::NoIntervention => "no_intervention",
            ErrorCode::ServiceAccount => "service_account",
            ErrorCode::MaxStreams => "max_streams",
            ErrorCode::MaxBitrate => "max_bitrate",
            ErrorCode::CameraUnavailable => "camera_unavailable",
            ErrorCode::JournalUnavailable => "journal_unavailable",
            ErrorCode::Withdrawn => "withdrawn",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::UnknownFlow => "unknown_flow",
            ErrorCode::Unrecognised(_) => "unrecognised",
        }
    }

    /// `None` for `UNSPECIFIED` (no error), the code otherwise.
    fn from_wire(value: i32) -> Option<ErrorCode> {
        let code = match wire::ErrorCode::try_from(value) {
            Ok(wire::ErrorCode::Unspecified) => return None,
            Ok(wire::ErrorCode::NotGranted) => ErrorCode::NotGranted,
            Ok(wire::ErrorCode::NoPolicy) => ErrorCode::NoPolicy,
            Ok(wire::ErrorCode::OutsideHours) => ErrorCode::OutsideHours,
            Ok(wire::ErrorCode::NoIntervention) => ErrorCode::NoIntervention,
            Ok(wire::ErrorCode::ServiceAccount) => ErrorCode::ServiceAccount,
            Ok(wire::ErrorCode::MaxStreams) => ErrorCode::MaxStreams,
            Ok(wire::ErrorCode::MaxBitrate) => ErrorCode::MaxBitrate,
            Ok(wire::ErrorCode::CameraUnavailable) => ErrorCode::CameraUnavailable,
            Ok(wire::ErrorCode::JournalUnavailable) => ErrorCode::JournalUnavailable,
            Ok(wire::ErrorCode::Withdrawn) => ErrorCode::Withdrawn,
            Ok(wire::ErrorCode::ShuttingDown) => ErrorCode::ShuttingDown,
            Ok(wire::ErrorCode::UnknownFlow) => ErrorCode::UnknownFlow,
            Err(_) => ErrorCode::Unrecognised(value),
        };
        Some(code)
    }

    fn to_wire(self) -> i32 {
        let code = match self {
            ErrorCode::NotGranted => wire::ErrorCode::NotGranted,
            ErrorCode::NoPolicy => wire::ErrorCode::NoPolicy,
            ErrorCode::OutsideHours => wire::ErrorCode::OutsideHours,
            ErrorCode::NoIntervention => wire::ErrorCode::NoIntervention,
            ErrorCode::ServiceAccount => wire::ErrorCode::ServiceAccount,
            ErrorCode::MaxStreams => wire::ErrorCode::MaxStreams,
            ErrorCode::MaxBitrate => wire::ErrorCode::MaxBitrate,
            ErrorCode::CameraUnavailable => wire::ErrorCode::CameraUnavailable,
            ErrorCode::JournalUnavailable => wire::ErrorCode::JournalUnavailable,
            ErrorCode::Withdrawn => wire::ErrorCode::Withdrawn,
            ErrorCode::ShuttingDown => wire::ErrorCode::ShuttingDown,
            ErrorCode::UnknownFlow => wire::ErrorCode::UnknownFlow,
            ErrorCode::Unrecognised(value) => return value,
        };
        code as i32
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ErrorCode::Unrecognised(value) => write!(f, "unrecognised ({value})"),
            other => f.write_str(other.as_str()),
        }
    }
}

/// Why a control message was refused. `field` names the proto field
/// (`view_open.camera`) so the bad byte can be found in a capture.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlDecodeError {
    #[error("not a protobuf control message: {0}")]
    Protobuf(#[from] prost::DecodeError),
    #[error("control message with no known message type (empty, or from a newer release)")]
    MissingMessage,
    #[error("{field}: bad camera id {value:?}: {source}")]
    BadCameraId {
        field: &'static str,
        value: String,
        source: IdError,
    },
    #[error("{field}: bad site id {value:?}: {source}")]
    BadSiteId {
        field: &'static str,
        value: String,
        source: IdError,
    },
    #[error("{field}: unknown codec value {value}")]
    UnknownCodec { field: &'static str, value: i32 },
    #[error("{field}: codec missing (unspecified)")]
    MissingCodec { field: &'static str },
    #[error("{field}: empty parameter set")]
    EmptyParameterSet { field: &'static str },
    #[error("{field}: unknown agent kind value {value}")]
    UnknownAgentKind { field: &'static str, value: i32 },
    #[error("{field}: agent kind missing (unspecified)")]
    MissingAgentKind { field: &'static str },
    #[error("{field}: empty agent id")]
    EmptyAgent { field: &'static str },
    #[error("{field}: error code missing (unspecified)")]
    MissingErrorCode { field: &'static str },
    #[error("{field}: missing")]
    MissingField { field: &'static str },
    #[error("{field}: flow id {value} exceeds 2^62-1")]
    FlowIdTooLarge { field: &'static str, value: u64 },
    #[error("{field}: {value} is not a valid Unix time")]
    BadTimestamp { field: &'static str, value: i64 },
    #[error("{field}: {len} bytes, expected {expected}")]
    BadLength {
        field: &'static str,
        len: usize,
        expected: usize,
    },
}

impl TryFrom<wire::Control> for Message {
    type Error = ControlDecodeError;

    fn try_from(control: wire::Control) -> Result<Self, Self::Error> {
        use wire::control::Message as W;
        let wire::Control { message } = control;
        let message = match message.ok_or(ControlDecodeError::MissingMessage)? {
            W::Hello(hello) => Message::Hello(hello_from_wire(hello)?),
            W::Catalog(wire::Catalog { cameras }) => {
                Message::Catalog(cameras_from_wire(cameras, "catalog.cameras")?)
            }
            W::CatalogUpdate(wire::CatalogUpdate { cameras }) => {
                Message::CatalogUpdate(cameras_from_wire(cameras, "catalog_update.cameras")?)
            }
            W::Subscribe(wire::Subscribe { request_id, camera }) => Message::Subscribe(Subscribe {
                request_id: RequestId(request_id),
                camera: camera_id(camera, "subscribe.camera")?,
            }),
            W::SubscribeOk(wire::SubscribeOk {
                request_id,
                flow_id,
                codec,
                parameter_sets,
            }) => {
                let codec = codec_from_wire(codec, "subscribe_ok.codec")?.ok_or(
                    ControlDecodeError::MissingCodec {
                        field: "subscribe_ok.codec",
                    },
                )?;
                Message::SubscribeOk(SubscribeOk {
                    request_id: RequestId(request_id),
                    flow_id: flow_id_from_wire(flow_id, "subscribe_ok.flow_id")?,
                    info: StreamInfo {
                        codec,
                        clock_rate: VIDEO_CLOCK_RATE,
                        parameter_sets: parameter_sets_from_wire(
                            parameter_sets,
                            "subscribe_ok.parameter_sets",
                        )?,
                    },
                })
            }
            W::SubscribeError(wire::SubscribeError { request_id, code }) => {
                Message::SubscribeError(SubscribeError {
                    request_id: RequestId(request_id),
                    code: required_code(code, "subscribe_error.code")?,
                })
            }
            W::Unsubscribe(wire::Unsubscribe { flow_id }) => Message::Unsubscribe {
                flow_id: flow_id_from_wire(flow_id, "unsubscribe.flow_id")?,
            },
            W::ViewOpen(open) => Message::ViewOpen(view_open_from_wire(open)?),
            W::ViewAnswer(wire::ViewAnswer { view_id, refusal }) => {
                Message::ViewAnswer(ViewAnswer {
                    view_id: ViewId(view_id),
                    refusal: ErrorCode::from_wire(refusal),
                })
            }
            W::ViewClose(wire::ViewClose { view_id }) => Message::ViewClose {
                view_id: ViewId(view_id),
            },
            W::KeyframeRequest(wire::KeyframeRequest { flow_id }) => Message::KeyframeRequest {
                flow_id: flow_id_from_wire(flow_id, "keyframe_request.flow_id")?,
            },
            W::StreamEnded(wire::StreamEnded { flow_id, code }) => {
                Message::StreamEnded(StreamEnded {
                    flow_id: flow_id_from_wire(flow_id, "stream_ended.flow_id")?,
                    code: required_code(code, "stream_ended.code")?,
                })
            }
            W::Checkpoint(checkpoint) => Message::Checkpoint(checkpoint_from_wire(checkpoint)?),
        };
        Ok(message)
    }
}

impl From<Message> for wire::Control {
    fn from(message: Message) -> Self {
        use wire::control::Message as W;
        let message = match message {
            Message::Hello(Hello {
                proto_version,
                site,
                features,
                policy_serial,
            }) => W::Hello(wire::Hello {
                proto_version,
                site_id: site.as_str().to_owned(),
                features: features.iter().map(|f| f.as_str().to_owned()).collect(),
                policy_serial: policy_serial.unwrap_or(0),
            }),
            Message::Catalog(cameras) => W::Catalog(wire::Catalog {
                cameras: cameras.into_iter().map(camera_to_wire).collect(),
            }),
            Message::CatalogUpdate(cameras) => W::CatalogUpdate(wire::CatalogUpdate {
                cameras: cameras.into_iter().map(camera_to_wire).collect(),
            }),
            Message::Subscribe(Subscribe { request_id, camera }) => W::Subscribe(wire::Subscribe {
                request_id: request_id.0,
                camera: camera.as_str().to_owned(),
            }),
            Message::SubscribeOk(SubscribeOk {
                request_id,
                flow_id,
                info:
                    StreamInfo {
                        codec,
                        clock_rate: _,
                        parameter_sets,
                    },
            }) => W::SubscribeOk(wire::SubscribeOk {
                request_id: request_id.0,
                flow_id: flow_id.0,
                codec: codec_to_wire(Some(codec)),
                parameter_sets,
            }),
            Message::SubscribeError(SubscribeError { request_id, code }) => {
                W::SubscribeError(wire::SubscribeError {
                    request_id: request_id.0,
                    code: code.to_wire(),
                })
            }
            Message::Unsubscribe { flow_id } => {
                W::Unsubscribe(wire::Unsubscribe { flow_id: flow_id.0 })
            }
            Message::ViewOpen(ViewOpen {
                view_id,
                camera,
                session:
                    ViewingSession {
                        agent,
                        kind,
                        reason,
                        intervention,
                        origin,
                    },
            }) => W::ViewOpen(wire::ViewOpen {
                view_id: view_id.0,
                camera: camera.as_str().to_owned(),
                agent,
                kind: match kind {
                    AgentKind::Agent => wire::AgentKind::Agent,
                    AgentKind::Service => wire::AgentKind::Service,
                } as i32,
                reason: reason.unwrap_or_default(),
                intervention: intervention.unwrap_or_default(),
                origin: origin.as_str().to_owned(),
            }),
            Message::ViewAnswer(ViewAnswer { view_id, refusal }) => {
                W::ViewAnswer(wire::ViewAnswer {
                    view_id: view_id.0,
                    refusal: refusal
                        .map_or(wire::ErrorCode::Unspecified as i32, ErrorCode::to_wire),
                })
            }
            Message::ViewClose { view_id } => W::ViewClose(wire::ViewClose { view_id: view_id.0 }),
            Message::KeyframeRequest { flow_id } => {
                W::KeyframeRequest(wire::KeyframeRequest { flow_id: flow_id.0 })
            }
            Message::StreamEnded(StreamEnded { flow_id, code }) => {
                W::StreamEnded(wire::StreamEnded {
                    flow_id: flow_id.0,
                    code: code.to_wire(),
                })
            }
            Message::Checkpoint(Checkpoint {
                journal_id,
                sequence,
                head_hash,
                time,
                signature,
            }) => W::Checkpoint(wire::Checkpoint {
                journal_id,
                sequence,
                head_hash: Bytes::copy_from_slice(&head_hash),
                time_unix: time.as_second(),
                signature: Bytes::copy_from_slice(&signature),
            }),
        };
        wire::Control {
            message: Some(message),
        }
    }
}

fn hello_from_wire(hello: wire::Hello) -> Result<Hello, ControlDecodeError> {
    let wire::Hello {
        proto_version,
        site_id,
        features,
        policy_serial,
    } = hello;
    let mut features: Vec<Feature> = features
        .iter()
        .filter_map(|f| Feature::from_name(f))
        .collect();
    features.sort_unstable();
    features.dedup();
    Ok(Hello {
        proto_version,
        site: site_id_from_wire(site_id, "hello.site_id")?,
        features,
        policy_serial: (policy_serial != 0).then_some(policy_serial),
    })
}

fn cameras_from_wire(
    cameras: Vec<wire::CatalogCamera>,
    field: &'static str,
) -> Result<Vec<CatalogCamera>, ControlDecodeError> {
    cameras
        .into_iter()
        .map(|camera| camera_from_wire(camera, field))
        .collect()
}

fn camera_from_wire(
    camera: wire::CatalogCamera,
    field: &'static str,
) -> Result<CatalogCamera, ControlDecodeError> {
    let wire::CatalogCamera {
        id,
        codec,
        parameter_sets,
        restrictions,
        up,
    } = camera;
    // A camera without its restrictions would read as unrestricted: refuse it rather
    // than guess. The sender always writes the field, even when every value is default.
    let wire::Restrictions {
        on_request,
        onward,
        grant_end_unix,
    } = restrictions.ok_or(ControlDecodeError::MissingField {
        field: "catalog_camera.restrictions",
    })?;
    let grant_end =
        match grant_end_unix {
            0 => None,
            seconds => Some(Timestamp::from_second(seconds).map_err(|_| {
                ControlDecodeError::BadTimestamp {
                    field: "restrictions.grant_end_unix",
                    value: seconds,
                }
            })?),
        };
    Ok(CatalogCamera {
        id: camera_id(id, field)?,
        codec: codec_from_wire(codec, "catalog_camera.codec")?,
        parameter_sets: parameter_sets_from_wire(parameter_sets, "catalog_camera.parameter_sets")?,
        restrictions: Restrictions {
            on_request,
            onward: onward
                .into_iter()
                .map(|site| site_id_from_wire(site, "restrictions.onward"))
                .collect::<Result<_, _>>()?,
            grant_end,
        },
        up,
    })
}

fn camera_to_wire(camera: CatalogCamera) -> wire::CatalogCamera {
    let CatalogCamera {
        id,
        codec,
        parameter_sets,
        restrictions:
            Restrictions {
                on_request,
                onward,
                grant_end,
            },
        up,
    } = camera;
    wire::CatalogCamera {
        id: id.as_str().to_owned(),
        codec: codec_to_wire(codec),
        parameter_sets,
        restrictions: Some(wire::Restrictions {
            on_request,
            onward: onward.iter().map(|s| s.as_str().to_owned()).collect(),
            grant_end_unix: grant_end.map_or(0, |t| t.as_second()),
        }),
        up,
    }
}

fn view_open_from_wire(open: wire::ViewOpen) -> Result<ViewOpen, ControlDecodeError> {
    let wire::ViewOpen {
        view_id,
        camera,
        agent,
        kind,
        reason,
        intervention,
        origin,
    } = open;
    let kind = match wire::AgentKind::try_from(kind) {
        Ok(wire::AgentKind::Agent) => AgentKind::Agent,
        Ok(wire::AgentKind::Service) => AgentKind::Service,
        Ok(wire::AgentKind::Unspecified) => {
            return Err(ControlDecodeError::MissingAgentKind {
                field: "view_open.kind",
            });
        }
        Err(_) => {
            return Err(ControlDecodeError::UnknownAgentKind {
                field: "view_open.kind",
                value: kind,
            });
        }
    };
    if agent.is_empty() {
        return Err(ControlDecodeError::EmptyAgent {
            field: "view_open.agent",
        });
    }
    Ok(ViewOpen {
        view_id: ViewId(view_id),
        camera: camera_id(camera, "view_open.camera")?,
        session: ViewingSession {
            agent,
            kind,
            reason: (!reason.is_empty()).then_some(reason),
            intervention: (!intervention.is_empty()).then_some(intervention),
            origin: site_id_from_wire(origin, "view_open.origin")?,
        },
    })
}

fn checkpoint_from_wire(checkpoint: wire::Checkpoint) -> Result<Checkpoint, ControlDecodeError> {
    let wire::Checkpoint {
        journal_id,
        sequence,
        head_hash,
        time_unix,
        signature,
    } = checkpoint;
    if journal_id.is_empty() {
        return Err(ControlDecodeError::MissingField {
            field: "checkpoint.journal_id",
        });
    }
    let head_hash: [u8; CHECKPOINT_HASH_LEN] =
        head_hash
            .as_ref()
            .try_into()
            .map_err(|_| ControlDecodeError::BadLength {
                field: "checkpoint.head_hash",
                len: head_hash.len(),
                expected: CHECKPOINT_HASH_LEN,
            })?;
    let signature: [u8; CHECKPOINT_SIGNATURE_LEN] =
        signature
            .as_ref()
            .try_into()
            .map_err(|_| ControlDecodeError::BadLength {
                field: "checkpoint.signature",
                len: signature.len(),
                expected: CHECKPOINT_SIGNATURE_LEN,
            })?;
    let time = Timestamp::from_second(time_unix).map_err(|_| ControlDecodeError::BadTimestamp {
        field: "checkpoint.time_unix",
        value: time_unix,
    })?;
    Ok(Checkpoint {
        journal_id,
        sequence,
        head_hash,
        time,
        signature,
    })
}

fn camera_id(value: String, field: &'static str) -> Result<CameraId, ControlDecodeError> {
    value
        .parse()
        .map_err(|source| ControlDecodeError::BadCameraId {
            field,
            value: truncated(value),
            source,
        })
}

fn site_id_from_wire(value: String, field: &'static str) -> Result<SiteId, ControlDecodeError> {
    value
        .parse()
        .map_err(|source| ControlDecodeError::BadSiteId {
            field,
            value: truncated(value),
            source,
        })
}

/// Keeps an error message about a peer's bad id readable: the id may be up to the
/// whole message size.
fn truncated(mut value: String) -> String {
    const KEEP: usize = 80;
    if value.len() > KEEP {
        let mut end = KEEP;
        while !value.is_char_boundary(end) {
            end -= 1;
        }
        value.truncate(end);
        value.push('…');
    }
    value
}

fn codec_from_wire(value: i32, field: &'static str) -> Result<Option<Codec>, ControlDecodeError> {
    match wire::VideoCodec::try_from(value) {
        Ok(wire::VideoCodec::Unspecified) => Ok(None),
        Ok(wire::VideoCodec::H264) => Ok(Some(Codec::H264)),
        Ok(wire::VideoCodec::H265) => Ok(Some(Codec::H265)),
        Err(_) => Err(ControlDecodeError::UnknownCodec { field, value }),
    }
}

fn codec_to_wire(codec: Option<Codec>) -> i32 {
    (match codec {
        None => wire::VideoCodec::Unspecified,
        Some(Codec::H264) => wire::VideoCodec::H264,
        Some(Codec::H265) => wire::VideoCodec::H265,
    }) as i32
}

fn parameter_sets_from_wire(
    sets: Vec<Bytes>,
    field: &'static str,
) -> Result<Vec<Bytes>, ControlDecodeError> {
    if sets.iter().any(Bytes::is_empty) {
        return Err(ControlDecodeError::EmptyParameterSet { field });
    }
    Ok(sets)
}

fn flow_id_from_wire(value: u64, field: &'static str) -> Result<FlowId, ControlDecodeError> {
    FlowId::new(value).ok_or(ControlDecodeError::FlowIdTooLarge { field, value })
}

fn required_code(value: i32, field: &'static str) -> Result<ErrorCode, ControlDecodeError> {
    ErrorCode::from_wire(value).ok_or(ControlDecodeError::MissingErrorCode { field })
}

impl From<crate::policy::DenyReason> for ErrorCode {
    /// The code a policy refusal travels as. The policy-validity reasons all read
    /// `no_policy` to the partner: it need not know why our policy does not apply.
    fn from(reason: crate::policy::DenyReason) -> Self {
        use crate::policy::DenyReason;
        match reason {
            DenyReason::NoPolicy
            | DenyReason::WrongSite
            | DenyReason::NotYetValid
            | DenyReason::Expired => ErrorCode::NoPolicy,
            DenyReason::NotGranted | DenyReason::OnwardNotGranted => ErrorCode::NotGranted,
            DenyReason::OutsideHours => ErrorCode::OutsideHours,
            DenyReason::ServiceAccount => ErrorCode::ServiceAccount,
            DenyReason::NoIntervention => ErrorCode::NoIntervention,
        }
    }
}
