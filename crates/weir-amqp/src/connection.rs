//! The connection's protocol, as a sans-IO state machine.
//!
//! [`Connection`] holds everything about a connection that is protocol rather than
//! broker: the handshake (protocol header, start/start-ok with authentication,
//! tune/tune-ok, open/open-ok), the negotiated limits, heartbeats both ways, the
//! close handshakes of the connection and of each channel, and the assembly of a
//! `basic.publish` from its method, header and body frames. It reads bytes from a
//! buffer the caller fills, writes frames into an [`Outbox`] the caller drains, and
//! is told the time: it never touches a socket, a clock or the broker, so it can be
//! unit-tested, property-tested and fuzzed (`crate::fuzzing`) without either.
//!
//! What it cannot decide alone it hands up as an [`Input`]: a channel method to run
//! against the broker, a whole publish, a channel that opened or went. The session
//! (`crate::session`) is the shell that performs those and answers through
//! [`Connection::method`] and [`Connection::content`]; an exception it raises goes
//! back through [`Connection::close_channel`] or [`Connection::close`], and from
//! then on the machine ignores what the spec says to ignore.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use amq_protocol::frame::AMQPContentHeader;
use amq_protocol::protocol::basic::AMQPProperties;
use amq_protocol::protocol::{AMQPClass, basic, channel, connection};
use amq_protocol::types::ShortString;
use bytes::{Bytes, BytesMut};
use rustc_hash::FxHashMap;

use crate::codes::{
    self, CHANNEL_ERROR, COMMAND_INVALID, Exception, FRAME_ERROR, NOT_ALLOWED, NOT_IMPLEMENTED,
    PRECONDITION_FAILED, SYNTAX_ERROR, UNEXPECTED_FRAME,
};
use crate::config::AmqpConfig;
use crate::framing::{self, Frame, FrameError, Outbox};

mod content;
mod handshake;

/// Frames allowed before `tune-ok` (the spec's minimum frame size is 4096).
const PRE_TUNE_FRAME_MAX: u32 = 131_072;
/// The smallest `frame_max` a peer may ask for (the spec's).
const MIN_FRAME_MAX: u32 = 4096;
/// How long to wait for `close-ok` after sending `connection.close`.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// What the machine hands to its shell.
#[derive(Debug)]
pub(crate) enum Input {
    /// `start-ok` named a user: the shell checks the credentials (which may block on
    /// a password hash, so not here) and answers [`Connection::logged_in`]. Nothing
    /// more is read until then.
    Login {
        /// The SASL mechanism (`PLAIN`, `AMQPLAIN`), for the refusal's text.
        mechanism: String,
        user: String,
        password: String,
        /// What the client said about itself (`client-properties`).
        client: weir_broker::connections::ClientInfo,
    },
    /// `connection.open` named a vhost: the shell checks that the user may use it
    /// and answers [`Connection::vhost_opened`].
    OpenVhost(String),
    /// The handshake is done: the connection is open.
    Opened,
    /// The client opened channel `0` (`open-ok` is already written).
    ChannelOpened(u16),
    /// A method of an open channel for the shell to run: every method but the
    /// channel's own open and close and `basic.publish` (which arrives whole as
    /// [`Input::Publish`]).
    Method(u16, Box<AMQPClass>),
    /// A whole `basic.publish`: method, properties and body.
    Publish(u16, Box<Publish>),
    /// The machine closed channel `0` itself (a message over the size limit): its
    /// consumers and unacked deliveries are the shell's to release now; the
    /// channel goes when the client's `close-ok` comes ([`Input::ChannelClosed`]).
    ChannelClosing(u16),
    /// Channel `0` is gone: the client closed it (`close-ok` is written) or
    /// acknowledged the server's close. Its consumers and unacked deliveries are
    /// the shell's to release.
    ChannelClosed(u16),
    /// The connection is over; the shell writes what is left and stops.
    Closed,
}

/// A `basic.publish` with its content.
#[derive(Debug)]
pub(crate) struct Publish {
    pub(crate) method: basic::Publish,
    pub(crate) properties: AMQPProperties,
    /// One frame's payload is a slice of the read buffer, not a copy.
    pub(crate) body: Bytes,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for the 8-byte protocol header.
    Header,
    StartOk,
    /// `Input::Login` handed up: waiting for the shell's answer.
    LoggingIn,
    TuneOk,
    Open,
    /// `Input::OpenVhost` handed up: waiting for the shell's answer.
    Opening,
    Running,
    /// `connection.close` was sent: waiting for `close-ok`, ignoring the rest.
    Closing,
    Done,
}

/// What the protocol header led to.
enum HeaderStep {
    /// Not all of it is in yet.
    Wait,
    /// Ours: `connection.start` is written.
    Started,
    /// Another protocol's: ours is written and the connection is over.
    Refused,
}

/// A publish on its way in: method seen, waiting for header and body frames.
struct Incoming {
    method: basic::Publish,
    header: Option<AMQPContentHeader>,
    body: BytesMut,
    /// A body in one frame needs no copy.
    single: Option<Bytes>,
    /// Bytes reserved in `body` for the whole message (see `Machine::reserved`).
    reserved: u64,
}

impl Incoming {
    /// Body bytes held while the publish is not whole (a one-frame body is whole
    /// when it arrives).
    fn held(&self) -> u64 {
        self.body.len() as u64
    }
}

/// What the machine knows of one channel.
#[derive(Default)]
struct ChannelFrames {
    /// `channel.close` was sent by the server: everything but `close` and
    /// `close-ok` is ignored.
    closing: bool,
    incoming: Option<Incoming>,
}

/// One client connection's protocol state. See the module doc.
pub(crate) struct Connection {
    config: Arc<AmqpConfig>,
    peer: SocketAddr,
    phase: Phase,
    input: BytesMut,
    out: Outbox,
    frame_max: u32,
    channel_max: u16,
    heartbeat: u16,
    /// Content assembly per channel, looked up for every frame (at most
    /// `channel_max` entries, so a fast unkeyed hash).
    channels: FxHashMap<u16, ChannelFrames>,
    last_input: Instant,
    /// When the next heartbeat goes out.
    next_beat: Option<Instant>,
    /// When the handshake step or the close handshake times out.
    deadline: Option<Instant>,
    /// The client said it understands `connection.blocked`.
    blocked_capable: bool,
    /// What the next poll hands up before reading on ([`Input::Opened`] once the
    /// shell accepted the vhost).
    pending: Option<Input>,
    /// `connection.blocked` was sent and not yet lifted.
    blocked: bool,
    /// The shell is not reading (an alarm blocks this connection): the peer's
    /// silence then says nothing about its health.
    paused: bool,
    /// Room the next read gets (see `input_buffer`), and what the last read was
    /// given and found in the buffer.
    read_size: usize,
    granted: usize,
    len_before_read: usize,
    /// Body bytes held for publishes not yet whole, all channels together (at
    /// most `config.max_partial_publish_bytes`).
    partial: u64,
    /// Bytes reserved for whole bodies of publishes not yet whole, all channels
    /// together (at most `config.max_partial_publish_bytes`): a body of many
    /// frames is gathered in one buffer of its final size, so a large message
    /// costs one copy of itself, not the twice-doubled buffer of growing one.
    reserved: u64,
}

/// The input buffer's room for one read: an idle connection (heartbeats only) keeps
/// the smallest, one that fills its room doubles it, up to the largest. 64 KiB for
/// every connection cost 64 KiB of resident memory each (10,000 idle connections
/// took 820 MB); starting from 1 KiB they take 18.5 KB each in all.
const READ_SIZE_MIN: usize = 1024;
const READ_SIZE_MAX: usize = 64 * 1024;

impl Connection {
    pub(crate) fn new(config: Arc<AmqpConfig>, peer: SocketAddr, now: Instant) -> Connection {
        // The whole handshake, from accept to open-ok, has one deadline (RabbitMQ's
        // handshake_timeout), so a peer cannot hold a slot by dribbling steps.
        let deadline = now + config.handshake_timeout;
        Connection {
            config,
            peer,
            phase: Phase::Header,
            input: BytesMut::with_capacity(READ_SIZE_MIN),
            out: Outbox::default(),
            frame_max: PRE_TUNE_FRAME_MAX,
            channel_max: 0,
            heartbeat: 0,
            channels: FxHashMap::default(),
            last_input: now,
            next_beat: None,
            deadline: Some(deadline),
            blocked_capable: false,
            pending: None,
            blocked: false,
            paused: false,
            read_size: READ_SIZE_MIN,
            granted: 0,
            len_before_read: 0,
            partial: 0,
            reserved: 0,
        }
    }

    /// Where the shell puts the bytes it reads, with room for one read; then it
    /// calls [`Connection::received`].
    pub(crate) fn input_buffer(&mut self) -> &mut BytesMut {
        if self.input.capacity() - self.input.len() < self.read_size {
            self.input.reserve(self.read_size);
        }
        self.granted = self.input.capacity() - self.input.len();
        self.len_before_read = self.input.len();
        &mut self.input
    }

    /// Notes that bytes arrived at `now` (the peer is alive), and sizes the next
    /// read's room after this one.
    pub(crate) fn received(&mut self, now: Instant) {
        self.last_input = now;
        let read = self.input.len().saturating_sub(self.len_before_read);
        if read >= self.granted {
            self.read_size = (self.read_size * 2).min(READ_SIZE_MAX);
        } else if read < self.read_size / 8 {
            self.read_size = (self.read_size / 2).max(READ_SIZE_MIN);
        }
    }

    /// The shell stops (`true`) or resumes reading. While it does not read, a
    /// silent peer is not taken for a dead one.
    pub(crate) fn pause_reading(&mut self, paused: bool, now: Instant) {
        if self.paused && !paused {
            self.last_input = now;
        }
        self.paused = paused;
    }

    /// Frames to write.
    pub(crate) fn outbox(&mut self) -> &mut Outbox {
        &mut self.out
    }

    /// The connection is over: nothing more will be read or written.
    pub(crate) fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// Whether a close has begun (sent, received or done).
    pub(crate) fn is_closing(&self) -> bool {
        matches!(self.phase, Phase::Closing | Phase::Done)
    }

    /// Whether the connection is open and not closing.
    #[cfg(test)]
    pub(crate) fn is_running(&self) -> bool {
        self.phase == Phase::Running
    }

    /// The negotiated `(channel_max, frame_max, heartbeat)`.
    #[cfg(test)]
    pub(crate) fn limits(&self) -> (u16, u32, u16) {
        (self.channel_max, self.frame_max, self.heartbeat)
    }

    /// Whether channel `ch` is open and not being closed: what the shell writes on
    /// it is read.
    pub(crate) fn channel_usable(&self, ch: u16) -> bool {
        self.phase == Phase::Running && self.channels.get(&ch).is_some_and(|c| !c.closing)
    }

    /// Writes a method on channel `ch`.
    pub(crate) fn method(&mut self, ch: u16, class: AMQPClass) {
        self.out.method(ch, class);
    }

    /// Writes a message's header and body frames on channel `ch`.
    pub(crate) fn content(&mut self, ch: u16, properties: AMQPProperties, body: &Bytes) {
        let header = AMQPContentHeader {
            class_id: 60,
            body_size: body.len() as u64,
            properties,
        };
        self.out.content(ch, header, body, self.frame_max);
    }

    /// The protocol header, once all of it is in: `connection.start` goes out, or,
    /// for another protocol, the header we speak, and the connection ends.
    fn protocol_header(&mut self) -> HeaderStep {
        match framing::protocol_header(&self.input) {
            None => return HeaderStep::Wait,
            Some(false) => {
                // The spec: answer with the header we speak, then close.
                self.out.raw(framing::PROTOCOL_HEADER);
                self.phase = Phase::Done;
                return HeaderStep::Refused;
            }
            Some(true) => {}
        }
        let _ = self.input.split_to(framing::PROTOCOL_HEADER.len());
        self.out.method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::Start(Self::start())),
        );
        self.phase = Phase::StartOk;
        HeaderStep::Started
    }

    /// The next whole thing for the shell, from what is buffered; `None` when more
    /// input (or time) is needed.
    pub(crate) fn poll(&mut self, now: Instant) -> Option<Input> {
        loop {
            match self.phase {
                // Done, or the shell has the next word: nothing is read meanwhile.
                Phase::Done | Phase::LoggingIn | Phase::Opening => return None,
                Phase::Header => match self.protocol_header() {
                    HeaderStep::Wait => return None,
                    HeaderStep::Refused => return Some(Input::Closed),
                    HeaderStep::Started => continue,
                },
                _ => {}
            }
            if let Some(input) = self.pending.take() {
                return Some(input);
            }
            let frame = match framing::next_frame(
                &mut self.input,
                self.frame_max,
                self.config.max_table_fields,
            ) {
                Ok(Some(frame)) => frame,
                Ok(None) => return None,
                Err(e) if self.phase == Phase::Closing => {
                    // Garbage after our close: nothing more to say; drop what is
                    // buffered and keep waiting for the close-ok.
                    tracing::trace!(error = %e, "AMQP input after connection.close dropped");
                    self.input.clear();
                    return None;
                }
                Err(FrameError::Table {
                    channel,
                    class_id,
                    method_id,
                    error,
                }) if channel != 0 && self.phase == Phase::Running => {
                    // After login, on a channel: that channel is closed, as for any
                    // argument a method cannot take (RabbitMQ: 406).
                    let open = self.channels.get(&channel).map(|c| c.closing);
                    match open {
                        Some(false) => {
                            let e = Exception::channel(PRECONDITION_FAILED, error.to_string())
                                .during(class_id, method_id);
                            if self.close_channel(channel, &e) {
                                return Some(Input::ChannelClosing(channel));
                            }
                        }
                        // Already closing: everything but close-ok is dropped anyway.
                        Some(true) => {}
                        None => {
                            let e = Exception::connection(
                                CHANNEL_ERROR,
                                format!("channel {channel} is not open"),
                            );
                            self.close(&e, now);
                        }
                    }
                    continue;
                }
                Err(FrameError::Unsupported {
                    class_id,
                    method_id,
                    text,
                }) => {
                    let e =
                        Exception::connection(NOT_IMPLEMENTED, text).during(class_id, method_id);
                    self.close(&e, now);
                    continue;
                }
                Err(e) => {
                    let code = match e {
                        FrameError::Table { .. } | FrameError::Malformed { .. } => SYNTAX_ERROR,
                        FrameError::UnknownMethod { .. } => NOT_IMPLEMENTED,
                        _ => FRAME_ERROR,
                    };
                    self.close(&Exception::connection(code, e.to_string()), now);
                    continue;
                }
            };
            let result = match self.phase {
                Phase::StartOk | Phase::TuneOk | Phase::Open => self.on_handshake(frame),
                Phase::Running => self.on_frame(frame),
                Phase::Closing => Ok(self.on_frame_while_closing(&frame)),
                Phase::Header | Phase::LoggingIn | Phase::Opening | Phase::Done => {
                    unreachable!("handled above")
                }
            };
            match result {
                Ok(Some(input)) => return Some(input),
                Ok(None) => {}
                Err((_, e)) if e.connection => self.close(&e, now),
                Err((ch, e)) => {
                    if self.close_channel(ch, &e) {
                        return Some(Input::ChannelClosing(ch));
                    }
                }
            }
        }
    }

    /// Heartbeats and time-outs at `now`: writes a heartbeat when one is due, and
    /// ends the connection when the peer missed two of its own or a handshake step
    /// took too long (then it returns [`Input::Closed`]).
    pub(crate) fn tick(&mut self, now: Instant) -> Option<Input> {
        if self.phase == Phase::Done {
            return None;
        }
        if self.deadline.is_some_and(|d| now >= d) {
            tracing::debug!(peer = %self.peer, phase = ?self.phase, "AMQP peer too slow; closing");
            self.phase = Phase::Done;
            return Some(Input::Closed);
        }
        if self.phase == Phase::Running && self.heartbeat > 0 {
            let beat = Duration::from_secs(u64::from(self.heartbeat));
            if !self.paused && now.saturating_duration_since(self.last_input) > beat * 2 {
                tracing::info!(peer = %self.peer, "AMQP peer missed its heartbeats; closing");
                self.phase = Phase::Done;
                return Some(Input::Closed);
            }
            if self.next_beat.is_some_and(|t| now >= t) {
                self.out.heartbeat();
                self.next_beat = Some(now + beat / 2);
            }
        }
        None
    }

    /// When [`Connection::tick`] next has something to do.
    pub(crate) fn next_tick(&self) -> Option<Instant> {
        if self.phase == Phase::Done {
            return None;
        }
        let dead =
            (self.phase == Phase::Running && self.heartbeat > 0 && !self.paused).then(|| {
                self.last_input
                    + Duration::from_secs(u64::from(self.heartbeat)) * 2
                    + Duration::from_millis(1)
            });
        [self.deadline, self.next_beat, dead]
            .into_iter()
            .flatten()
            .min()
    }

    /// Closes the connection from the server's side: sends `connection.close` and
    /// from now on ignores everything but the client's `close-ok` (or `close`).
    pub(crate) fn close(&mut self, e: &Exception, now: Instant) {
        match self.phase {
            Phase::Closing | Phase::Done => return,
            // Nothing was said yet: there is no one to tell.
            Phase::Header => {
                self.phase = Phase::Done;
                return;
            }
            Phase::StartOk
            | Phase::LoggingIn
            | Phase::TuneOk
            | Phase::Open
            | Phase::Opening
            | Phase::Running => {}
        }
        tracing::debug!(peer = %self.peer, code = e.code, text = %e.text, "closing an AMQP connection");
        self.out.method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::Close(connection::Close {
                reply_code: e.code,
                reply_text: ShortString::from(e.reply_text()),
                class_id: e.class_id,
                method_id: e.method_id,
            })),
        );
        self.phase = Phase::Closing;
        self.next_beat = None;
        self.deadline = Some(now + CLOSE_WAIT);
    }

    /// Closes channel `ch` from the server's side: sends `channel.close` and ignores
    /// the channel until the client's `close-ok`. A channel that is not open (or
    /// already closing) is left as it is; the answer says whether it was closed.
    pub(crate) fn close_channel(&mut self, ch: u16, e: &Exception) -> bool {
        if self.phase != Phase::Running {
            return false;
        }
        let Some(c) = self.channels.get_mut(&ch).filter(|c| !c.closing) else {
            return false;
        };
        tracing::debug!(peer = %self.peer, channel = ch, code = e.code, text = %e.text, "closing an AMQP channel");
        c.closing = true;
        if let Some(incoming) = c.incoming.take() {
            self.partial -= incoming.held();
            self.reserved -= incoming.reserved;
        }
        self.out.method(
            ch,
            AMQPClass::Channel(channel::AMQPMethod::Close(channel::Close {
                reply_code: e.code,
                reply_text: ShortString::from(e.reply_text()),
                class_id: e.class_id,
                method_id: e.method_id,
            })),
        );
        true
    }

    /// Tells a client that understands it that the connection is blocked (with the
    /// reason) or no longer (`None`). Returns whether anything was sent.
    pub(crate) fn set_blocked(&mut self, reason: Option<&str>) -> bool {
        if self.phase != Phase::Running || !self.blocked_capable {
            return false;
        }
        match reason {
            Some(reason) if !self.blocked => {
                self.blocked = true;
                self.out.method(
                    0,
                    AMQPClass::Connection(connection::AMQPMethod::Blocked(connection::Blocked {
                        reason: ShortString::from(codes::short(reason)),
                    })),
                );
                true
            }
            None if self.blocked => {
                self.blocked = false;
                self.out.method(
                    0,
                    AMQPClass::Connection(connection::AMQPMethod::Unblocked(
                        connection::Unblocked {},
                    )),
                );
                true
            }
            _ => false,
        }
    }

    /// A frame on an open connection.
    fn on_frame(&mut self, frame: Frame) -> Result<Option<Input>, (u16, Exception)> {
        match frame {
            Frame::Heartbeat(0) => Ok(None),
            Frame::Heartbeat(_) => Err((
                0,
                Exception::connection(FRAME_ERROR, "heartbeat frames belong on channel 0"),
            )),
            Frame::Method(0, class) => self.on_connection_method(*class).map_err(|e| (0, e)),
            Frame::Method(ch, class) => {
                let ids = (class.get_amqp_class_id(), class.get_amqp_method_id());
                self.on_channel_method(ch, *class)
                    .map_err(|e| (ch, e.during(ids.0, ids.1)))
            }
            Frame::Header(ch, header, properties) => self
                .on_content_header(ch, *header, properties)
                .map_err(|e| (ch, e)),
            Frame::Body(ch, body) => self.on_content_body(ch, body).map_err(|e| (ch, e)),
        }
    }

    /// After our `connection.close`, only the client's `close-ok` (or its own
    /// crossing `close`) counts.
    fn on_frame_while_closing(&mut self, frame: &Frame) -> Option<Input> {
        let Frame::Method(0, class) = frame else {
            return None;
        };
        match **class {
            AMQPClass::Connection(connection::AMQPMethod::CloseOk(_)) => {}
            AMQPClass::Connection(connection::AMQPMethod::Close(_)) => {
                self.out.method(
                    0,
                    AMQPClass::Connection(connection::AMQPMethod::CloseOk(connection::CloseOk {})),
                );
            }
            _ => return None,
        }
        self.phase = Phase::Done;
        Some(Input::Closed)
    }

    fn on_connection_method(&mut self, class: AMQPClass) -> Result<Option<Input>, Exception> {
        match class {
            AMQPClass::Connection(connection::AMQPMethod::Close(_)) => {
                self.out.method(
                    0,
                    AMQPClass::Connection(connection::AMQPMethod::CloseOk(connection::CloseOk {})),
                );
                self.phase = Phase::Done;
                Ok(Some(Input::Closed))
            }
            AMQPClass::Connection(connection::AMQPMethod::CloseOk(_)) => {
                self.phase = Phase::Done;
                Ok(Some(Input::Closed))
            }
            AMQPClass::Connection(connection::AMQPMethod::UpdateSecret(update)) => {
                // As RabbitMQ 3.x with its internal user store: a password does not
                // expire (`state_can_expire()` is false), so the new secret is
                // neither checked nor kept, and the connection goes on as the user
                // who logged in. A store whose credentials expire (tokens) would
                // check it here and refuse with 530 NOT_ALLOWED.
                tracing::debug!(peer = %self.peer, reason = %update.reason, "connection.update-secret");
                self.out.method(
                    0,
                    AMQPClass::Connection(connection::AMQPMethod::UpdateSecretOk(
                        connection::UpdateSecretOk {},
                    )),
                );
                Ok(None)
            }
            other => Err(Exception::connection(
                COMMAND_INVALID,
                format!("{} is not a method of channel 0", method_name(&other)),
            )),
        }
    }

    fn on_channel_method(&mut self, ch: u16, class: AMQPClass) -> Result<Option<Input>, Exception> {
        if let AMQPClass::Channel(channel::AMQPMethod::Open(_)) = class {
            if self.channels.contains_key(&ch) {
                return Err(Exception::connection(
                    CHANNEL_ERROR,
                    format!("channel {ch} is already open"),
                ));
            }
            // As RabbitMQ: channel_max bounds how many channels are open at once,
            // not their numbers; any number 1..=65535 may be used.
            if self.channel_max != 0 && self.channels.len() >= usize::from(self.channel_max) {
                return Err(Exception::connection(
                    NOT_ALLOWED,
                    format!(
                        "number of channels opened ({}) has reached the negotiated channel_max ({})",
                        self.channels.len(),
                        self.channel_max
                    ),
                ));
            }
            self.channels.insert(ch, ChannelFrames::default());
            self.out.method(
                ch,
                AMQPClass::Channel(channel::AMQPMethod::OpenOk(channel::OpenOk {})),
            );
            return Ok(Some(Input::ChannelOpened(ch)));
        }
        if matches!(class, AMQPClass::Channel(channel::AMQPMethod::CloseOk(_)))
            && !self.channels.contains_key(&ch)
        {
            // The answer to our close after both sides closed at once (ours was
            // answered already): nothing left to do.
            return Ok(None);
        }
        let c = self.channel(ch)?;
        if c.closing {
            return Ok(match class {
                AMQPClass::Channel(channel::AMQPMethod::CloseOk(_)) => {
                    self.channels.remove(&ch);
                    Some(Input::ChannelClosed(ch))
                }
                AMQPClass::Channel(channel::AMQPMethod::Close(_)) => {
                    // Both sides closed at once: each answers the other.
                    self.out.method(
                        ch,
                        AMQPClass::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {})),
                    );
                    self.channels.remove(&ch);
                    Some(Input::ChannelClosed(ch))
                }
                _ => None,
            });
        }
        if c.incoming.is_some() {
            return Err(Exception::connection(
                UNEXPECTED_FRAME,
                format!("a method on channel {ch} before the content of its basic.publish"),
            ));
        }
        match class {
            AMQPClass::Channel(channel::AMQPMethod::Close(_)) => {
                self.out.method(
                    ch,
                    AMQPClass::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {})),
                );
                self.channels.remove(&ch);
                Ok(Some(Input::ChannelClosed(ch)))
            }
            // A close-ok for a close nobody sent: nothing to do.
            AMQPClass::Channel(channel::AMQPMethod::CloseOk(_)) => Ok(None),
            AMQPClass::Basic(basic::AMQPMethod::Publish(p)) => {
                if p.immediate {
                    // Removed from RabbitMQ in 3.0; refused the same way.
                    return Err(Exception::connection(NOT_IMPLEMENTED, "immediate=true"));
                }
                c.incoming = Some(Incoming {
                    method: p,
                    header: None,
                    body: BytesMut::new(),
                    single: None,
                    reserved: 0,
                });
                Ok(None)
            }
            other => Ok(Some(Input::Method(ch, Box::new(other)))),
        }
    }

    fn channel(&mut self, ch: u16) -> Result<&mut ChannelFrames, Exception> {
        self.channels.get_mut(&ch).ok_or_else(|| {
            Exception::connection(CHANNEL_ERROR, format!("channel {ch} is not open"))
        })
    }
}

pub(crate) fn method_name(class: &AMQPClass) -> String {
    format!(
        "method {}.{}",
        class.get_amqp_class_id(),
        class.get_amqp_method_id()
    )
}

#[cfg(test)]
#[path = "connection_tests.rs"]
pub(crate) mod tests;
