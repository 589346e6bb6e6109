//! One RTMP publisher connection as a state machine (RTMP 1.0 §5.4 protocol
//! control, §6 user control, §7 commands), server side.
//!
//! The caller feeds the bytes it reads ([`Session::feed`]), then drains
//! [`Session::poll_event`] and [`Session::take_output`] (bytes to write back)
//! and repeats. The session never touches a socket or a clock; timeouts are
//! the driver's ([`Session::close`] with [`CloseReason::TimedOut`]).
//!
//! The command flow is the one ffmpeg and OBS drive:
//! `connect` (answered with Window Acknowledgement Size, Set Peer Bandwidth,
//! Set Chunk Size and `_result` NetConnection.Connect.Success),
//! `releaseStream`, `FCPublish` (answered `onFCPublish`), `createStream`
//! (answered `_result` with the stream id), then `publish` with the stream
//! key. The session then emits [`Event::PublishRequested`] and stops
//! reading until the caller decides: [`Session::accept`] answers
//! NetStream.Publish.Start and resumes; [`Session::reject`] answers
//! NetStream.Publish.BadName and closes. Audio messages then become
//! [`Event::AacConfig`] and [`Event::Audio`]; `@setDataFrame`/`onMetaData`
//! becomes [`Event::Metadata`]; video is counted and dropped;
//! `FCUnpublish`/`deleteStream` or the end of the connection emit
//! [`Event::Unpublished`]. [`Event::Closed`] is always the last event.
//!
//! Invariants: an error from `feed` or `accept` has already closed the
//! session (its [`Event::Closed`] is queued, any status for the client is in
//! the output); after closing, input is ignored. Unconsumed input never
//! exceeds [`Limits::max_buffered`].

use std::collections::VecDeque;

use bytes::Bytes;

use super::amf0::{self, Amf0Value};
use super::chunk::{ChunkDecoder, ChunkEncoder, ChunkLimits, Decoded, Message, message_type};
use super::flv::{self, AudioCodec, AudioSpecificConfig, AudioTag};
use super::handshake::Handshake;
use super::{Reader, RtmpError};

/// User control event types (§6.2).
mod user_control {
    pub const STREAM_BEGIN: u16 = 0;
    pub const PING_REQUEST: u16 = 6;
    pub const PING_RESPONSE: u16 = 7;
}

/// Chunk streams for what we send: protocol control must use 2 (§5.4);
/// the others are conventional (ffmpeg and librtmp use the same).
mod out_chunk_stream {
    pub const CONTROL: u32 = 2;
    pub const COMMAND: u32 = 3;
    pub const STATUS: u32 = 5;
}

/// Bounds on what one peer may make a session hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Message and chunk stream bounds.
    pub chunk: ChunkLimits,
    /// The most unconsumed input held: one chunk in flight, or what arrives
    /// while a publish decision is pending.
    pub max_buffered: usize,
    /// How many `createStream` calls a connection may make.
    pub max_streams: u32,
}

impl Default for Limits {
    /// [`ChunkLimits::default`], 9 MiB buffered (a whole discarded video
    /// chunk at the largest length fits), 8 streams.
    fn default() -> Self {
        Self {
            chunk: ChunkLimits::default(),
            max_buffered: 9 << 20,
            max_streams: 8,
        }
    }
}

/// How a session talks to its peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    /// Bounds on the peer.
    pub limits: Limits,
    /// The chunk size we send with, announced after `connect`.
    pub chunk_size: u32,
    /// The Window Acknowledgement Size we ask the peer to acknowledge at.
    pub window_ack_size: u32,
    /// The Set Peer Bandwidth window we give the peer.
    pub peer_bandwidth: u32,
    /// Seeds the handshake's filler bytes; vary it per connection.
    pub handshake_seed: u64,
}

impl Default for SessionConfig {
    /// The values ffmpeg's and nginx-rtmp's servers use: 4096-byte chunks,
    /// 2.5 MB windows.
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            chunk_size: 4096,
            window_ack_size: 2_500_000,
            peer_bandwidth: 2_500_000,
            handshake_seed: 0x006f_6e61_6972,
        }
    }
}

/// Why a session closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer closed the connection cleanly (between messages).
    PeerClosed,
    /// The caller rejected the publish.
    Rejected(String),
    /// The peer sent something the session could not accept.
    Error(RtmpError),
    /// The driver's timer ran out.
    TimedOut,
    /// Reading or writing the connection failed.
    Io(String),
    /// The server's owner ended the session (a host replaced by its own
    /// reconnect, kicked by the operator, audio that cannot be decoded).
    Closed(String),
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CloseReason::PeerClosed => f.write_str("the publisher closed the connection"),
            CloseReason::Rejected(reason) => write!(f, "publish rejected: {reason}"),
            CloseReason::Error(error) => write!(f, "protocol error: {error}"),
            CloseReason::TimedOut => f.write_str("timed out"),
            CloseReason::Io(error) => write!(f, "connection failed: {error}"),
            CloseReason::Closed(reason) => write!(f, "closed by the server: {reason}"),
        }
    }
}

/// `onMetaData` as the publisher sent it.
#[derive(Debug, Clone, PartialEq)]
pub struct Metadata {
    /// The properties in the order sent.
    pub properties: Vec<(String, Amf0Value)>,
}

impl Metadata {
    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&Amf0Value> {
        self.properties
            .iter()
            .find_map(|(k, v)| (k == key).then_some(v))
    }

    /// The number at `key`.
    pub fn number(&self, key: &str) -> Option<f64> {
        self.get(key)?.as_number()
    }

    /// `audiosamplerate` in Hz.
    pub fn audio_sample_rate(&self) -> Option<f64> {
        self.number("audiosamplerate")
    }

    /// `encoder`, e.g. "Lavf61.7.100" or "obs-output module".
    pub fn encoder(&self) -> Option<&str> {
        self.get("encoder")?.as_str()
    }
}

/// What a session reports to its caller.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// `connect` succeeded for this application name (the first path
    /// segment of the URL).
    Connected {
        /// The application, e.g. "live".
        app: String,
    },
    /// The peer wants to publish; answer with [`Session::accept`] or
    /// [`Session::reject`]. Nothing more is read until then.
    PublishRequested {
        /// The application, e.g. "live".
        app: String,
        /// The stream name: the stream key.
        key: String,
    },
    /// A new (or changed) AAC configuration; frames that follow use it.
    AacConfig(AudioSpecificConfig),
    /// One compressed audio frame (AAC access unit) or run of MP3 frames.
    Audio {
        /// RTMP timestamp, 32-bit milliseconds, wrapping; unwrap it with a
        /// [`super::Timeline`].
        timestamp_ms: u32,
        /// The codec.
        codec: AudioCodec,
        /// The frame bytes (without the FLV tag header).
        data: Bytes,
    },
    /// `onMetaData` from `@setDataFrame`.
    Metadata(Metadata),
    /// The publisher stopped publishing (FCUnpublish, deleteStream, or the
    /// connection ended while publishing).
    Unpublished,
    /// The session is over; no events follow.
    Closed(CloseReason),
}

/// Counters for one session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionStats {
    /// Bytes fed in.
    pub bytes_received: u64,
    /// Bytes handed out by [`Session::take_output`].
    pub bytes_sent: u64,
    /// Audio messages received while publishing.
    pub audio_messages: u64,
    /// Video messages dropped.
    pub video_messages_dropped: u64,
    /// Payload bytes of the dropped video messages.
    pub video_bytes_dropped: u64,
    /// Messages and commands ignored (unknown types, shared objects, other
    /// data messages).
    pub ignored_messages: u64,
    /// Acknowledgements sent.
    pub acknowledgements_sent: u64,
}

#[derive(Debug)]
enum Phase {
    Handshake(Handshake),
    Chunks,
    Closed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Publish {
    Idle,
    Requested { stream_id: u32, key: String },
    Publishing { stream_id: u32 },
    Ended,
}

/// The server side of one RTMP connection. See the module docs.
#[derive(Debug)]
pub struct Session {
    config: SessionConfig,
    phase: Phase,
    decoder: ChunkDecoder,
    encoder: ChunkEncoder,
    input: Vec<u8>,
    /// Start of the unconsumed input.
    pos: usize,
    /// Connection offset of `input[pos]`.
    offset: u64,
    output: Vec<u8>,
    events: VecDeque<Event>,
    app: Option<String>,
    streams_created: u32,
    publish: Publish,
    /// The peer's Window Acknowledgement Size, once it sent one.
    ack_window: Option<u32>,
    acknowledged: u64,
    codec: Option<AudioCodec>,
    aac_config: Option<AudioSpecificConfig>,
    stats: SessionStats,
}

impl Session {
    /// A session waiting for the client's C0.
    pub fn new(config: SessionConfig) -> Self {
        Self {
            phase: Phase::Handshake(Handshake::new(config.handshake_seed)),
            decoder: ChunkDecoder::new(config.limits.chunk, Some(message_type::VIDEO)),
            encoder: ChunkEncoder::new(),
            config,
            input: Vec::new(),
            pos: 0,
            offset: 0,
            output: Vec::new(),
            events: VecDeque::new(),
            app: None,
            streams_created: 0,
            publish: Publish::Idle,
            ack_window: None,
            acknowledged: 0,
            codec: None,
            aac_config: None,
            stats: SessionStats::default(),
        }
    }

    /// Takes bytes read from the peer and processes every complete unit.
    /// On error the session is closed (see the module invariants).
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), RtmpError> {
        if self.is_closed() {
            return Ok(());
        }
        self.stats.bytes_received += bytes.len() as u64;
        self.input.extend_from_slice(bytes);
        let result = self.process();
        self.fail_on(result)
    }

    /// Accepts the pending publish: answers NetStream.Publish.Start and
    /// processes input that arrived meanwhile. Does nothing if no publish is
    /// pending.
    pub fn accept(&mut self) -> Result<(), RtmpError> {
        let Publish::Requested { stream_id, key } = &self.publish else {
            return Ok(());
        };
        let (stream_id, key) = (*stream_id, key.clone());
        self.send_user_control(user_control::STREAM_BEGIN, &stream_id.to_be_bytes());
        self.send_status(
            stream_id,
            "status",
            "NetStream.Publish.Start",
            &format!("Publishing {key}."),
        );
        self.publish = Publish::Publishing { stream_id };
        let result = self.process();
        self.fail_on(result)
    }

    /// Refuses the pending publish with NetStream.Publish.BadName and
    /// `reason`, and closes the session. Write the output before closing
    /// the connection, so the client learns why.
    pub fn reject(&mut self, reason: &str) {
        if let Publish::Requested { stream_id, .. } = self.publish {
            self.send_status(stream_id, "error", "NetStream.Publish.BadName", reason);
        }
        self.close(CloseReason::Rejected(reason.to_owned()));
    }

    /// The peer closed the connection. Ending inside a handshake packet,
    /// chunk or message is reported as a truncated stream.
    pub fn peer_closed(&mut self) {
        let unconsumed = self.input.len() - self.pos;
        let reason = if unconsumed > 0 || self.decoder.has_partial_message() {
            CloseReason::Error(
                RtmpError::malformed(format!(
                    "connection ended inside a handshake packet, chunk or message \
                     ({unconsumed} bytes of an incomplete unit)"
                ))
                .at_offset(self.offset),
            )
        } else {
            CloseReason::PeerClosed
        };
        self.close(reason);
    }

    /// Ends the session: emits [`Event::Unpublished`] if publishing, then
    /// [`Event::Closed`]. Idempotent.
    pub fn close(&mut self, reason: CloseReason) {
        if self.is_closed() {
            return;
        }
        if matches!(self.publish, Publish::Publishing { .. }) {
            self.events.push_back(Event::Unpublished);
        }
        self.publish = Publish::Ended;
        self.phase = Phase::Closed;
        self.input = Vec::new();
        self.pos = 0;
        self.events.push_back(Event::Closed(reason));
    }

    /// Whether the session has closed.
    pub fn is_closed(&self) -> bool {
        matches!(self.phase, Phase::Closed)
    }

    /// Whether a publish has been accepted and not ended.
    pub fn is_publishing(&self) -> bool {
        matches!(self.publish, Publish::Publishing { .. })
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Bytes to write to the peer, in order.
    pub fn take_output(&mut self) -> Vec<u8> {
        let output = std::mem::take(&mut self.output);
        self.stats.bytes_sent += output.len() as u64;
        output
    }

    /// The counters.
    pub fn stats(&self) -> SessionStats {
        self.stats
    }

    fn fail_on(&mut self, result: Result<(), RtmpError>) -> Result<(), RtmpError> {
        if let Err(error) = &result {
            // Tell a publisher what is unsupported before hanging up; other
            // errors mean the peer is broken or hostile and gets no answer.
            if let (
                RtmpError::Unsupported { reason, .. },
                Phase::Chunks,
                Publish::Requested { stream_id, .. } | Publish::Publishing { stream_id },
            ) = (error, &self.phase, &self.publish)
            {
                let stream_id = *stream_id;
                self.send_status(stream_id, "error", "NetStream.Failed", reason);
            }
            self.close(CloseReason::Error(error.clone()));
        }
        result
    }

    /// Parses and handles input until it runs out, a publish decision is
    /// pending, or the session closes.
    fn process(&mut self) -> Result<(), RtmpError> {
        loop {
            if matches!(self.publish, Publish::Requested { .. }) {
                break;
            }
            let input = &self.input[self.pos..];
            let at = self.offset;
            match &mut self.phase {
                Phase::Closed => return Ok(()),
                Phase::Handshake(handshake) => {
                    let Some(step) = handshake.feed(input).map_err(|e| e.at_offset(at))? else {
                        break;
                    };
                    self.output.extend_from_slice(&step.send);
                    if step.done {
                        self.phase = Phase::Chunks;
                    }
                    self.advance(step.consumed);
                }
                Phase::Chunks => {
                    let Some((consumed, decoded)) =
                        self.decoder.decode(input).map_err(|e| e.at_offset(at))?
                    else {
                        break;
                    };
                    self.advance(consumed);
                    self.on_decoded(decoded).map_err(|e| e.at_offset(at))?;
                }
            }
        }
        let unconsumed = self.input.len() - self.pos;
        if unconsumed > self.config.limits.max_buffered {
            return Err(RtmpError::limit(format!(
                "{unconsumed} bytes buffered without a complete chunk (bound {})",
                self.config.limits.max_buffered
            ))
            .at_offset(self.offset));
        }
        if self.pos == self.input.len() || self.pos >= 1 << 16 {
            self.input.drain(..self.pos);
            self.pos = 0;
        }
        self.acknowledge_if_due();
        Ok(())
    }

    fn advance(&mut self, consumed: usize) {
        self.pos += consumed;
        self.offset += consumed as u64;
    }

    /// Acknowledgement (§5.4.3): after the peer's window of bytes, send the
    /// number of bytes received so far.
    fn acknowledge_if_due(&mut self) {
        let (Some(window), Phase::Chunks) = (self.ack_window, &self.phase) else {
            return;
        };
        if self.stats.bytes_received - self.acknowledged >= u64::from(window) {
            self.acknowledged = self.stats.bytes_received;
            // The sequence number is 32 bits and wraps.
            let sequence = self.stats.bytes_received as u32;
            self.send_control(message_type::ACKNOWLEDGEMENT, &sequence.to_be_bytes());
            self.stats.acknowledgements_sent += 1;
        }
    }

    fn on_decoded(&mut self, decoded: Decoded) -> Result<(), RtmpError> {
        match decoded {
            Decoded::Partial => Ok(()),
            Decoded::Discarded { length, .. } => {
                self.stats.video_messages_dropped += 1;
                self.stats.video_bytes_dropped += u64::from(length);
                Ok(())
            }
            Decoded::Message(message) => {
                let (csid, type_id) = (message.chunk_stream_id, message.type_id);
                self.on_message(message)
                    .map_err(|e| e.in_message(csid, type_id))
            }
        }
    }

    fn on_message(&mut self, message: Message) -> Result<(), RtmpError> {
        match message.type_id {
            message_type::SET_CHUNK_SIZE => {
                let size = read_u32(&message.payload, "Set Chunk Size")?;
                self.decoder.set_chunk_size(size)
            }
            message_type::ABORT => {
                let csid = read_u32(&message.payload, "Abort")?;
                self.decoder.abort(csid);
                Ok(())
            }
            message_type::WINDOW_ACK_SIZE => {
                let window = read_u32(&message.payload, "Window Acknowledgement Size")?;
                self.ack_window = (window > 0).then_some(window);
                Ok(())
            }
            // Acknowledgements of what we sent, and the peer limiting our
            // output (we send little): nothing to do.
            message_type::ACKNOWLEDGEMENT | message_type::SET_PEER_BANDWIDTH => Ok(()),
            message_type::USER_CONTROL => self.on_user_control(&message.payload),
            message_type::AUDIO => self.on_audio(message),
            message_type::COMMAND_AMF0 => self.on_command(message.stream_id, &message.payload),
            message_type::COMMAND_AMF3 => {
                let body = amf3_body(&message.payload)?;
                self.on_command(message.stream_id, body)
            }
            message_type::DATA_AMF0 => self.on_data(&message.payload),
            message_type::DATA_AMF3 => {
                let body = amf3_body(&message.payload)?;
                self.on_data(body)
            }
            message_type::AGGREGATE => Err(RtmpError::unsupported(
                "aggregate messages are not supported",
            )),
            _ => {
                self.stats.ignored_messages += 1;
                Ok(())
            }
        }
    }

    fn on_user_control(&mut self, payload: &[u8]) -> Result<(), RtmpError> {
        let mut reader = Reader::new(payload);
        let event = reader
            .u16_be()
            .ok_or_else(|| RtmpError::malformed("user control message without an event type"))?;
        if event == user_control::PING_REQUEST {
            // §6.2: answer with the same timestamp.
            let timestamp = reader
                .u32_be()
                .ok_or_else(|| RtmpError::malformed("Ping Request without a timestamp"))?;
            self.send_user_control(user_control::PING_RESPONSE, &timestamp.to_be_bytes());
        }
        Ok(())
    }

    fn on_command(&mut self, stream_id: u32, payload: &[u8]) -> Result<(), RtmpError> {
        let mut values = amf0::decode_all(payload)?.into_iter();
        let Some(Amf0Value::String(name)) = values.next() else {
            return Err(RtmpError::malformed(
                "command message does not start with a command name",
            ));
        };
        let transaction = match values.next() {
            Some(Amf0Value::Number(n)) => n,
            None | Some(Amf0Value::Null | Amf0Value::Undefined) => 0.0,
            Some(other) => {
                return Err(RtmpError::malformed(format!(
                    "command {name} has transaction id {other:?}, not a number"
                )));
            }
        };
        let command_object = values.next().unwrap_or(Amf0Value::Null);
        let arguments: Vec<Amf0Value> = values.collect();
        if name != "connect" && self.app.is_none() {
            return Err(RtmpError::malformed(format!(
                "command {name} before connect"
            )));
        }
        match name.as_str() {
            "connect" => self.on_connect(transaction, &command_object),
            "releaseStream" => {
                if transaction != 0.0 {
                    self.send_command(
                        0,
                        "_result",
                        transaction,
                        Amf0Value::Null,
                        [Amf0Value::Undefined],
                    );
                }
                Ok(())
            }
            "FCPublish" => {
                let key = arguments.first().and_then(Amf0Value::as_str).unwrap_or("");
                let info = status_object("status", "NetStream.Publish.Start", key);
                self.send_command(0, "onFCPublish", 0.0, Amf0Value::Null, [info]);
                Ok(())
            }
            "createStream" => self.on_create_stream(transaction),
            "publish" => self.on_publish(stream_id, &arguments),
            "FCUnpublish" | "deleteStream" | "closeStream" => {
                if self.is_publishing() {
                    self.events.push_back(Event::Unpublished);
                    self.publish = Publish::Ended;
                }
                Ok(())
            }
            "play" | "play2" => Err(RtmpError::unsupported(
                "playback is not offered: this server only ingests",
            )),
            _ => {
                self.stats.ignored_messages += 1;
                Ok(())
            }
        }
    }

    fn on_connect(
        &mut self,
        transaction: f64,
        command_object: &Amf0Value,
    ) -> Result<(), RtmpError> {
        if self.app.is_some() {
            return Err(RtmpError::malformed("second connect on one connection"));
        }
        let app = command_object
            .get("app")
            .and_then(Amf0Value::as_str)
            .ok_or_else(|| RtmpError::malformed("connect without an app name"))?
            .trim_end_matches('/')
            .to_owned();
        self.app = Some(app.clone());
        let window = self.config.window_ack_size;
        self.send_control(message_type::WINDOW_ACK_SIZE, &window.to_be_bytes());
        // Limit type 2, dynamic (§5.4.5).
        let mut bandwidth = self.config.peer_bandwidth.to_be_bytes().to_vec();
        bandwidth.push(2);
        self.send_control(message_type::SET_PEER_BANDWIDTH, &bandwidth);
        let chunk_size = self.config.chunk_size;
        self.send_control(message_type::SET_CHUNK_SIZE, &chunk_size.to_be_bytes());
        self.encoder.set_chunk_size(chunk_size);
        let properties = Amf0Value::object([
            ("fmsVer", Amf0Value::string("FMS/3,0,1,123")),
            ("capabilities", Amf0Value::Number(31.0)),
        ]);
        let mut info = status_object(
            "status",
            "NetConnection.Connect.Success",
            "Connection succeeded.",
        );
        if let Amf0Value::Object(fields) = &mut info {
            fields.push(("objectEncoding".into(), Amf0Value::Number(0.0)));
        }
        self.send_command(0, "_result", transaction, properties, [info]);
        self.events.push_back(Event::Connected { app });
        Ok(())
    }

    fn on_create_stream(&mut self, transaction: f64) -> Result<(), RtmpError> {
        if self.streams_created >= self.config.limits.max_streams {
            return Err(RtmpError::limit(format!(
                "more than {} createStream calls",
                self.config.limits.max_streams
            )));
        }
        self.streams_created += 1;
        let id = f64::from(self.streams_created);
        self.send_command(
            0,
            "_result",
            transaction,
            Amf0Value::Null,
            [Amf0Value::Number(id)],
        );
        Ok(())
    }

    fn on_publish(&mut self, stream_id: u32, arguments: &[Amf0Value]) -> Result<(), RtmpError> {
        if stream_id == 0 || stream_id > self.streams_created {
            return Err(RtmpError::malformed(format!(
                "publish on message stream {stream_id}, which createStream did not return"
            )));
        }
        if self.publish != Publish::Idle {
            return Err(RtmpError::malformed("second publish on one connection"));
        }
        let key = arguments
            .first()
            .and_then(Amf0Value::as_str)
            .ok_or_else(|| RtmpError::malformed("publish without a stream name"))?
            .to_owned();
        let app = self.app.clone().unwrap_or_default();
        self.publish = Publish::Requested {
            stream_id,
            key: key.clone(),
        };
        self.events.push_back(Event::PublishRequested { app, key });
        Ok(())
    }

    fn on_data(&mut self, payload: &[u8]) -> Result<(), RtmpError> {
        let values = amf0::decode_all(payload)?;
        let mut values = values.iter();
        let mut name = values.next().and_then(Amf0Value::as_str);
        if name == Some("@setDataFrame") {
            name = values.next().and_then(Amf0Value::as_str);
        }
        match (name, values.next().and_then(Amf0Value::properties)) {
            (Some("onMetaData"), Some(properties)) => {
                let metadata = Metadata {
                    properties: properties.to_vec(),
                };
                self.events.push_back(Event::Metadata(metadata));
            }
            _ => self.stats.ignored_messages += 1,
        }
        Ok(())
    }

    fn on_audio(&mut self, message: Message) -> Result<(), RtmpError> {
        match self.publish {
            Publish::Publishing { stream_id } if stream_id == message.stream_id => {}
            Publish::Publishing { stream_id } => {
                return Err(RtmpError::malformed(format!(
                    "audio on message stream {}, publishing on {stream_id}",
                    message.stream_id
                )));
            }
            // A late frame after FCUnpublish: harmless.
            Publish::Ended => return Ok(()),
            Publish::Idle | Publish::Requested { .. } => {
                return Err(RtmpError::malformed("audio before publish started"));
            }
        }
        self.stats.audio_messages += 1;
        if message.payload.is_empty() {
            // Some encoders send empty audio messages as keep-alives.
            return Ok(());
        }
        let (codec, length) = match flv::parse_audio_tag(&message.payload)? {
            AudioTag::AacSequenceHeader(config) => {
                self.set_codec(AudioCodec::Aac)?;
                if self.aac_config.as_ref() != Some(&config) {
                    self.aac_config = Some(config.clone());
                    self.events.push_back(Event::AacConfig(config));
                }
                return Ok(());
            }
            AudioTag::AacFrame(data) => {
                if self.aac_config.is_none() {
                    return Err(RtmpError::malformed(
                        "AAC frame before the AAC sequence header",
                    ));
                }
                (AudioCodec::Aac, data.len())
            }
            AudioTag::Mp3(data) => (AudioCodec::Mp3, data.len()),
        };
        self.set_codec(codec)?;
        if length > 0 {
            let payload = &message.payload;
            self.events.push_back(Event::Audio {
                timestamp_ms: message.timestamp,
                codec,
                data: payload.slice(payload.len() - length..),
            });
        }
        Ok(())
    }

    fn set_codec(&mut self, codec: AudioCodec) -> Result<(), RtmpError> {
        match self.codec {
            Some(current) if current != codec => Err(RtmpError::unsupported(format!(
                "audio codec changed from {current:?} to {codec:?} within one publish"
            ))),
            _ => {
                self.codec = Some(codec);
                Ok(())
            }
        }
    }

    fn send(&mut self, csid: u32, type_id: u8, stream_id: u32, payload: Vec<u8>) {
        let message = Message {
            chunk_stream_id: csid,
            timestamp: 0,
            type_id,
            stream_id,
            payload: Bytes::from(payload),
        };
        self.encoder.encode(&message, &mut self.output);
    }

    fn send_control(&mut self, type_id: u8, payload: &[u8]) {
        self.send(out_chunk_stream::CONTROL, type_id, 0, payload.to_vec());
    }

    fn send_user_control(&mut self, event: u16, data: &[u8]) {
        let mut payload = event.to_be_bytes().to_vec();
        payload.extend_from_slice(data);
        self.send_control(message_type::USER_CONTROL, &payload);
    }

    fn send_command<const N: usize>(
        &mut self,
        stream_id: u32,
        name: &str,
        transaction: f64,
        command_object: Amf0Value,
        arguments: [Amf0Value; N],
    ) {
        let mut values = vec![
            Amf0Value::string(name),
            Amf0Value::Number(transaction),
            command_object,
        ];
        values.extend(arguments);
        let csid = if stream_id == 0 {
            out_chunk_stream::COMMAND
        } else {
            out_chunk_stream::STATUS
        };
        self.send(
            csid,
            message_type::COMMAND_AMF0,
            stream_id,
            amf0::encode_all(&values),
        );
    }

    fn send_status(&mut self, stream_id: u32, level: &str, code: &str, description: &str) {
        let info = status_object(level, code, description);
        self.send_command(stream_id, "onStatus", 0.0, Amf0Value::Null, [info]);
    }
}

/// The info object of `onStatus` and `_result` (level, code, description).
fn status_object(level: &str, code: &str, description: &str) -> Amf0Value {
    Amf0Value::object([
        ("level", Amf0Value::string(level)),
        ("code", Amf0Value::string(code)),
        ("description", Amf0Value::string(description)),
    ])
}

fn read_u32(payload: &[u8], what: &str) -> Result<u32, RtmpError> {
    Reader::new(payload)
        .u32_be()
        .ok_or_else(|| RtmpError::malformed(format!("{what} message shorter than 4 bytes")))
}

/// AMF3 command and data messages (types 17 and 15) start with a format
/// byte; 0 means the values that follow are AMF0, which is what clients that
/// pick these types send.
fn amf3_body(payload: &[u8]) -> Result<&[u8], RtmpError> {
    match payload.split_first() {
        Some((0, body)) => Ok(body),
        Some((format, _)) => Err(RtmpError::unsupported(format!(
            "AMF3-encoded message (format byte {format}) is not supported"
        ))),
        None => Err(RtmpError::malformed("empty AMF3 message")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::rtmp::handshake::{HANDSHAKE_SIZE, RTMP_VERSION};
    use crate::ingest::rtmp::prop;

    /// What ffmpeg 5+ sent publishing 2 s of 44.1 kHz mono AAC to
    /// rtmp://host/live/host-a-secret (recorded by `tests/rtmp.rs`).
    const FFMPEG_CAPTURE: &[u8] = include_bytes!("../../../fixtures/rtmp/ffmpeg-aac-publish.bin");
    const FFMPEG_KEY: &str = "host-a-secret";

    /// Feeds `pieces` in order, accepting any publish (or rejecting it with
    /// `reject`), then reports the end of the connection. Returns the events
    /// and everything the session sent.
    fn run(pieces: &[&[u8]], reject: Option<&str>) -> (Vec<Event>, Vec<u8>) {
        let mut session = Session::new(SessionConfig::default());
        let mut events = Vec::new();
        let mut output = Vec::new();
        for piece in pieces {
            let _ = session.feed(piece);
            drain(&mut session, &mut events, reject);
            output.extend(session.take_output());
        }
        session.peer_closed();
        drain(&mut session, &mut events, reject);
        output.extend(session.take_output());
        (events, output)
    }

    fn drain(session: &mut Session, events: &mut Vec<Event>, reject: Option<&str>) {
        while let Some(event) = session.poll_event() {
            if matches!(event, Event::PublishRequested { .. }) {
                match reject {
                    Some(reason) => session.reject(reason),
                    None => {
                        let _ = session.accept();
                    }
                }
            }
            events.push(event);
        }
    }

    /// The messages in what the server sent, after S0 S1 S2, honouring its
    /// Set Chunk Size.
    fn sent_messages(output: &[u8]) -> Vec<Message> {
        let mut decoder = ChunkDecoder::new(ChunkLimits::default(), None);
        let mut rest = &output[1 + 2 * HANDSHAKE_SIZE..];
        let mut messages = Vec::new();
        while let Some((consumed, decoded)) = decoder.decode(rest).unwrap() {
            rest = &rest[consumed..];
            if let Decoded::Message(message) = decoded {
                if message.type_id == message_type::SET_CHUNK_SIZE {
                    decoder
                        .set_chunk_size(read_u32(&message.payload, "").unwrap())
                        .unwrap();
                }
                messages.push(message);
            }
        }
        assert!(rest.is_empty());
        messages
    }

    fn command_name_and_info(message: &Message) -> (String, Option<String>) {
        let values = amf0::decode_all(&message.payload).unwrap();
        let name = values[0].as_str().unwrap().to_owned();
        let code = values
            .iter()
            .find_map(|v| v.get("code"))
            .and_then(Amf0Value::as_str)
            .map(str::to_owned);
        (name, code)
    }

    #[test]
    fn replays_the_ffmpeg_capture() {
        let (events, _) = run(&[FFMPEG_CAPTURE], None);
        assert_eq!(events[0], Event::Connected { app: "live".into() });
        assert_eq!(
            events[1],
            Event::PublishRequested {
                app: "live".into(),
                key: FFMPEG_KEY.into()
            }
        );
        let Event::Metadata(metadata) = &events[2] else {
            panic!("expected metadata, got {:?}", events[2]);
        };
        assert_eq!(metadata.audio_sample_rate(), Some(44_100.0));
        assert!(metadata.encoder().unwrap().starts_with("Lavf"));
        let Event::AacConfig(config) = &events[3] else {
            panic!("expected the AAC config, got {:?}", events[3]);
        };
        assert_eq!((config.sample_rate, config.channels), (44_100, 1));

        let timestamps: Vec<u32> = events
            .iter()
            .filter_map(|e| match e {
                Event::Audio {
                    timestamp_ms,
                    codec: AudioCodec::Aac,
                    ..
                } => Some(*timestamp_ms),
                _ => None,
            })
            .collect();
        // 2 s of 1024-sample frames at 44.1 kHz, plus priming.
        assert!(
            (87..=90).contains(&timestamps.len()),
            "{} frames",
            timestamps.len()
        );
        assert!(
            timestamps
                .windows(2)
                .all(|w| matches!(w[1] - w[0], 23 | 24))
        );
        assert_eq!(
            &events[events.len() - 2..],
            &[Event::Unpublished, Event::Closed(CloseReason::PeerClosed)]
        );
    }

    #[test]
    fn answers_the_command_flow_ffmpeg_and_obs_expect() {
        let (_, output) = run(&[FFMPEG_CAPTURE], None);
        assert_eq!(output[0], RTMP_VERSION);
        let messages = sent_messages(&output);
        let control: Vec<(u8, Vec<u8>)> = messages
            .iter()
            .take(3)
            .map(|m| (m.type_id, m.payload.to_vec()))
            .collect();
        assert_eq!(
            control,
            [
                (
                    message_type::WINDOW_ACK_SIZE,
                    2_500_000u32.to_be_bytes().to_vec()
                ),
                (
                    message_type::SET_PEER_BANDWIDTH,
                    vec![0x00, 0x26, 0x25, 0xa0, 2]
                ),
                (message_type::SET_CHUNK_SIZE, 4096u32.to_be_bytes().to_vec()),
            ]
        );
        let commands: Vec<(String, Option<String>)> = messages
            .iter()
            .filter(|m| m.type_id == message_type::COMMAND_AMF0)
            .map(command_name_and_info)
            .collect();
        let expected = [
            ("_result", Some("NetConnection.Connect.Success")),
            ("_result", None), // releaseStream
            ("onFCPublish", Some("NetStream.Publish.Start")),
            ("_result", None), // createStream
            ("onStatus", Some("NetStream.Publish.Start")),
        ];
        let expected: Vec<(String, Option<String>)> = expected
            .iter()
            .map(|(n, c)| (n.to_string(), c.map(str::to_owned)))
            .collect();
        assert_eq!(commands, expected);
        // Messages 3 to 8: connect, releaseStream and createStream results,
        // onFCPublish, Stream Begin, onStatus.
        assert_eq!(messages.len(), 9);
        let create_stream = amf0::decode_all(&messages[6].payload).unwrap();
        assert_eq!(create_stream[3], Amf0Value::Number(1.0), "stream id 1");
        // Stream Begin for stream 1 precedes the publish status on stream 1.
        let begin = &messages[7];
        assert_eq!(begin.type_id, message_type::USER_CONTROL);
        assert_eq!(&begin.payload[..], &[0, 0, 0, 0, 0, 1]);
        assert_eq!(messages[8].stream_id, 1);
    }

    #[test]
    fn gives_the_same_result_at_every_split_and_byte_by_byte() {
        let reference = run(&[FFMPEG_CAPTURE], None);
        let bytes: Vec<&[u8]> = FFMPEG_CAPTURE.chunks(1).collect();
        assert_eq!(run(&bytes, None), reference, "byte by byte");
        for split in 0..=FFMPEG_CAPTURE.len() {
            let (head, tail) = FFMPEG_CAPTURE.split_at(split);
            assert_eq!(run(&[head, tail], None), reference, "split at {split}");
        }
    }

    #[test]
    fn rejects_a_publish_with_bad_name_and_closes() {
        let (events, output) = run(&[FFMPEG_CAPTURE], Some("unknown stream key"));
        assert_eq!(
            events.last(),
            Some(&Event::Closed(CloseReason::Rejected(
                "unknown stream key".into()
            )))
        );
        assert!(!events.iter().any(|e| matches!(e, Event::Audio { .. })));
        let last = sent_messages(&output).pop().unwrap();
        assert_eq!(
            command_name_and_info(&last),
            ("onStatus".into(), Some("NetStream.Publish.BadName".into()))
        );
        let info = amf0::decode_all(&last.payload).unwrap();
        assert_eq!(
            info[3].get("description"),
            Some(&Amf0Value::string("unknown stream key"))
        );
    }

    /// C0, C1 and C2 of a client, then its messages at the default chunk
    /// size.
    fn client_stream(messages: &[Message]) -> Vec<u8> {
        let mut bytes = vec![RTMP_VERSION];
        bytes.extend(vec![0; 2 * HANDSHAKE_SIZE]);
        let mut encoder = ChunkEncoder::new();
        for message in messages {
            encoder.encode(message, &mut bytes);
        }
        bytes
    }

    fn control(type_id: u8, payload: &[u8]) -> Message {
        Message {
            chunk_stream_id: 2,
            timestamp: 0,
            type_id,
            stream_id: 0,
            payload: Bytes::copy_from_slice(payload),
        }
    }

    #[test]
    fn answers_pings_and_acknowledges_the_peer_window() {
        let mut ping = user_control::PING_REQUEST.to_be_bytes().to_vec();
        ping.extend_from_slice(&0xCAFEu32.to_be_bytes());
        let filler = Message {
            payload: Bytes::from(vec![0; 900]),
            ..control(0x30, &[])
        };
        let stream = client_stream(&[
            control(message_type::WINDOW_ACK_SIZE, &4000u32.to_be_bytes()),
            control(message_type::USER_CONTROL, &ping),
            filler.clone(),
            filler,
        ]);
        let (events, output) = run(&[&stream], None);
        assert_eq!(events, [Event::Closed(CloseReason::PeerClosed)]);
        let sent = sent_messages(&output);
        let pong: Vec<u8> = [&[0, 7][..], &0xCAFEu32.to_be_bytes()].concat();
        assert_eq!(sent[0].type_id, message_type::USER_CONTROL);
        assert_eq!(&sent[0].payload[..], &pong[..]);
        // 3073 handshake bytes + messages > 4000: one acknowledgement of
        // everything received.
        assert_eq!(sent[1].type_id, message_type::ACKNOWLEDGEMENT);
        assert_eq!(&sent[1].payload[..], &(stream.len() as u32).to_be_bytes());
        assert_eq!(sent.len(), 2);
    }

    fn close_error(events: &[Event]) -> &RtmpError {
        match events.last() {
            Some(Event::Closed(CloseReason::Error(error))) => error,
            other => panic!("expected an error close, got {other:?}"),
        }
    }

    #[test]
    fn malformed_inputs_end_the_session_with_errors() {
        let garbage = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03";
        let (events, output) = run(&[garbage], None);
        assert!(matches!(close_error(&events), RtmpError::Malformed { .. }));
        assert!(output.is_empty(), "no answer to garbage");

        let huge_chunk = client_stream(&[control(
            message_type::SET_CHUNK_SIZE,
            &(1u32 << 30).to_be_bytes(),
        )]);
        let (events, _) = run(&[&huge_chunk], None);
        let error = close_error(&events);
        assert!(matches!(error, RtmpError::Limit { .. }), "{error}");
        assert_eq!(error.context().offset, Some(1 + 2 * HANDSHAKE_SIZE as u64));
        let zero_chunk = client_stream(&[control(message_type::SET_CHUNK_SIZE, &[0, 0, 0, 0])]);
        assert!(matches!(
            close_error(&run(&[&zero_chunk], None).0),
            RtmpError::Malformed { .. }
        ));

        let mut oversize = client_stream(&[]);
        oversize.extend_from_slice(&[0x04, 0, 0, 0, 0x20, 0, 0, message_type::AUDIO, 1, 0, 0, 0]);
        assert!(matches!(
            close_error(&run(&[&oversize], None).0),
            RtmpError::Limit { .. }
        ));

        // A command message cut off by the end of the connection.
        let mut truncated = client_stream(&[]);
        truncated.extend_from_slice(&[
            0x03,
            0,
            0,
            0,
            0,
            0,
            50,
            message_type::COMMAND_AMF0,
            0,
            0,
            0,
            0,
            2,
            0,
        ]);
        let (events, _) = run(&[&truncated], None);
        let error = close_error(&events);
        assert!(
            error.to_string().contains("connection ended inside"),
            "{error}"
        );

        // A command whose AMF0 string runs past the message.
        let bad_amf = Message {
            chunk_stream_id: 3,
            type_id: message_type::COMMAND_AMF0,
            payload: Bytes::from_static(&[0x02, 0x00, 0x40, b'c']),
            ..control(0, &[])
        };
        let (events, _) = run(&[&client_stream(&[bad_amf])], None);
        assert!(matches!(close_error(&events), RtmpError::Malformed { .. }));
    }

    #[test]
    fn an_unsupported_codec_is_reported_to_the_client() {
        // The capture with its first raw AAC frame's SoundFormat changed to
        // Speex (11): find the first audio message by replaying it.
        let (events, _) = run(&[FFMPEG_CAPTURE], None);
        assert!(events.iter().any(|e| matches!(e, Event::Audio { .. })));
        let marker = [0xAF, 0x01];
        let at = FFMPEG_CAPTURE
            .windows(2)
            .position(|w| w == marker)
            .expect("an AAC raw frame tag");
        let mut capture = FFMPEG_CAPTURE.to_vec();
        capture[at] = 0xB6;
        let (events, output) = run(&[&capture], None);
        let error = close_error(&events);
        assert!(matches!(error, RtmpError::Unsupported { .. }), "{error}");
        assert_eq!(error.context().message_type, Some(message_type::AUDIO));
        let last = sent_messages(&output).pop().unwrap();
        assert_eq!(
            command_name_and_info(&last),
            ("onStatus".into(), Some("NetStream.Failed".into()))
        );
        assert_eq!(events[events.len() - 2], Event::Unpublished);
    }

    #[test]
    fn bounds_input_buffered_while_a_publish_is_pending() {
        let config = SessionConfig {
            limits: Limits {
                max_buffered: 64 * 1024,
                ..Limits::default()
            },
            ..SessionConfig::default()
        };
        let mut session = Session::new(config);
        session.feed(FFMPEG_CAPTURE).unwrap();
        assert!(matches!(
            session.poll_event(),
            Some(Event::Connected { .. })
        ));
        assert!(matches!(
            session.poll_event(),
            Some(Event::PublishRequested { .. })
        ));
        let error = session.feed(&vec![0; 64 * 1024]).unwrap_err();
        assert!(matches!(error, RtmpError::Limit { .. }), "{error}");
        assert!(session.is_closed());
    }

    #[test]
    fn survives_mutated_captures_and_random_input() {
        let mut inputs = prop::mutations(51, FFMPEG_CAPTURE, 400);
        let mut after_handshake = vec![RTMP_VERSION];
        after_handshake.extend(vec![0; 2 * HANDSHAKE_SIZE]);
        for random in prop::random_inputs(52, 400, 3000) {
            inputs.push([&after_handshake[..], &random].concat());
        }
        for input in inputs {
            fuzz_one(&input);
        }
    }

    /// What the fuzz target does: a whole session, accepting any publish,
    /// fed in pieces of varying size; the session must end with Closed and
    /// emit nothing after it.
    pub(crate) fn fuzz_one(input: &[u8]) {
        let piece = 1 + input.first().map_or(0, |&b| usize::from(b)) * 7;
        let pieces: Vec<&[u8]> = input.chunks(piece).collect();
        let (events, _) = run(&pieces, None);
        let closes = events
            .iter()
            .filter(|e| matches!(e, Event::Closed(_)))
            .count();
        assert_eq!(closes, 1);
        assert!(matches!(events.last(), Some(Event::Closed(_))));
    }
}
