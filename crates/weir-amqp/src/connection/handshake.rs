//! The handshake of a connection (protocol header, start/start-ok with PLAIN or
//! AMQPLAIN, tune/tune-ok, open/open-ok): part of the [`Connection`] machine,
//! kept apart because it runs once, top to bottom.

use std::time::{Duration, Instant};

use amq_protocol::protocol::{AMQPClass, connection};
use amq_protocol::types::{AMQPValue, FieldTable, LongString};
use weir_broker::connections::ClientInfo;

use super::{Connection, Input, MIN_FRAME_MAX, Phase, method_name};
use crate::codes::{
    ACCESS_REFUSED, COMMAND_INVALID, Exception, NOT_ALLOWED, SYNTAX_ERROR, UNEXPECTED_FRAME,
};
use crate::config::AmqpConfig;
use crate::framing::Frame;

impl Connection {
    /// The shell's answer to [`Input::Login`]: `None` lets the client in (`tune`
    /// goes out), a reason refuses it (403 `ACCESS_REFUSED`, as RabbitMQ). Ignored
    /// unless the connection waits for it (it may have timed out meanwhile).
    pub(crate) fn logged_in(&mut self, refused: Option<String>, now: Instant) {
        if self.phase != Phase::LoggingIn {
            return;
        }
        if let Some(reason) = refused {
            tracing::warn!(peer = %self.peer, %reason, "AMQP login refused");
            self.close(
                &Exception::connection(ACCESS_REFUSED, reason).during(10, 11),
                now,
            );
            return;
        }
        self.out.method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::Tune(connection::Tune {
                channel_max: self.config.channel_max,
                frame_max: self.config.frame_max,
                heartbeat: self.config.heartbeat_s,
            })),
        );
        self.phase = Phase::TuneOk;
    }

    /// The shell's answer to [`Input::OpenVhost`]: `None` opens the connection
    /// (`open-ok`; the next poll hands up [`Input::Opened`]), a reason refuses the
    /// vhost (530 `NOT_ALLOWED`, as RabbitMQ answers an unknown or forbidden vhost).
    pub(crate) fn vhost_opened(&mut self, refused: Option<String>, now: Instant) {
        if self.phase != Phase::Opening {
            return;
        }
        if let Some(reason) = refused {
            tracing::warn!(peer = %self.peer, %reason, "AMQP vhost refused");
            self.close(
                &Exception::connection(NOT_ALLOWED, reason).during(10, 40),
                now,
            );
            return;
        }
        self.out.method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::OpenOk(connection::OpenOk {})),
        );
        self.phase = Phase::Running;
        self.pending = Some(Input::Opened);
        self.deadline = None;
        self.last_input = now;
        if self.heartbeat > 0 {
            self.next_beat = Some(now + Duration::from_secs(u64::from(self.heartbeat)) / 2);
        }
        tracing::debug!(peer = %self.peer, frame_max = self.frame_max, channel_max = self.channel_max, heartbeat = self.heartbeat, "AMQP connection open");
    }

    /// A frame during the handshake.
    pub(super) fn on_handshake(&mut self, frame: Frame) -> Result<Option<Input>, (u16, Exception)> {
        let class = match frame {
            Frame::Heartbeat(_) => return Ok(None),
            Frame::Method(0, class) => class,
            _ => {
                return Err((
                    0,
                    Exception::connection(UNEXPECTED_FRAME, "the handshake is not finished"),
                ));
            }
        };
        let expected = match self.phase {
            Phase::StartOk => "connection.start-ok",
            Phase::TuneOk => "connection.tune-ok",
            _ => "connection.open",
        };
        match (self.phase, *class) {
            (Phase::StartOk, AMQPClass::Connection(connection::AMQPMethod::StartOk(start_ok))) => {
                let (user, password) = match self.config.credentials(&start_ok) {
                    Ok(credentials) => credentials,
                    Err(reason) => {
                        tracing::warn!(peer = %self.peer, %reason, "AMQP login refused");
                        return Err((
                            0,
                            Exception::connection(ACCESS_REFUSED, reason).during(10, 11),
                        ));
                    }
                };
                self.blocked_capable =
                    capability(&start_ok.client_properties, "connection.blocked");
                self.phase = Phase::LoggingIn;
                Ok(Some(Input::Login {
                    mechanism: start_ok.mechanism.to_string(),
                    user,
                    password,
                    client: client_info(&start_ok.client_properties),
                }))
            }
            (Phase::TuneOk, AMQPClass::Connection(connection::AMQPMethod::TuneOk(tune))) => {
                let (channel_max, frame_max, heartbeat) = negotiate(&self.config, &tune);
                if frame_max < MIN_FRAME_MAX {
                    return Err((
                        0,
                        Exception::connection(
                            SYNTAX_ERROR,
                            format!(
                                "frame_max {} is below the minimum of {MIN_FRAME_MAX}",
                                tune.frame_max
                            ),
                        )
                        .during(10, 31),
                    ));
                }
                (self.channel_max, self.frame_max, self.heartbeat) =
                    (channel_max, frame_max, heartbeat);
                self.phase = Phase::Open;
                Ok(None)
            }
            (Phase::Open, AMQPClass::Connection(connection::AMQPMethod::Open(open))) => {
                self.phase = Phase::Opening;
                Ok(Some(Input::OpenVhost(open.virtual_host.to_string())))
            }
            (_, AMQPClass::Connection(connection::AMQPMethod::Close(_))) => {
                self.out.method(
                    0,
                    AMQPClass::Connection(connection::AMQPMethod::CloseOk(connection::CloseOk {})),
                );
                self.phase = Phase::Done;
                Ok(Some(Input::Closed))
            }
            (_, other) => Err((
                0,
                Exception::connection(
                    COMMAND_INVALID,
                    format!("expected {expected}, got {}", method_name(&other)),
                ),
            )),
        }
    }

    /// `connection.start`: what weir is and can do.
    pub(super) fn start() -> connection::Start {
        let mut capabilities = FieldTable::default();
        for capability in [
            "publisher_confirms",
            "exchange_exchange_bindings",
            "basic.nack",
            "consumer_cancel_notify",
            "connection.blocked",
            "authentication_failure_close",
            "per_consumer_qos",
            "direct_reply_to",
        ] {
            capabilities.insert(capability.into(), AMQPValue::Boolean(true));
        }
        let mut properties = FieldTable::default();
        properties.insert("capabilities".into(), AMQPValue::FieldTable(capabilities));
        properties.insert("product".into(), AMQPValue::LongString("weir".into()));
        properties.insert(
            "version".into(),
            AMQPValue::LongString(env!("CARGO_PKG_VERSION").into()),
        );
        properties.insert("platform".into(), AMQPValue::LongString("Rust".into()));
        properties.insert(
            "information".into(),
            AMQPValue::LongString("a durable message broker; speaks AMQP 0-9-1".into()),
        );
        connection::Start {
            version_major: 0,
            version_minor: 9,
            server_properties: properties,
            mechanisms: LongString::from("PLAIN AMQPLAIN"),
            locales: LongString::from("en_US"),
        }
    }
}

/// Longest client property kept for listings, in bytes.
const CLIENT_PROPERTY_MAX: usize = 256;

/// What a client's `client-properties` say about it, each at most
/// [`CLIENT_PROPERTY_MAX`] bytes.
fn client_info(client_properties: &FieldTable) -> ClientInfo {
    let text = |name: &str| {
        let value = match client_properties.inner().get(name)? {
            AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
            AMQPValue::ShortString(s) => s.to_string(),
            _ => return None,
        };
        let mut end = value.len().min(CLIENT_PROPERTY_MAX);
        while !value.is_char_boundary(end) {
            end -= 1;
        }
        Some(value[..end].to_owned())
    };
    ClientInfo {
        product: text("product"),
        version: text("version"),
        platform: text("platform"),
        connection_name: text("connection_name"),
    }
}

/// Whether a client's `capabilities` table says `name: true`.
fn capability(client_properties: &FieldTable, name: &str) -> bool {
    let Some(AMQPValue::FieldTable(caps)) = client_properties.inner().get("capabilities") else {
        return false;
    };
    matches!(caps.inner().get(name), Some(AMQPValue::Boolean(true)))
}

/// The limits both sides agreed on: the lower of the two, 0 meaning "no limit".
pub(super) fn negotiate(config: &AmqpConfig, tune: &connection::TuneOk) -> (u16, u32, u16) {
    let lower_u16 = |a: u16, b: u16| match (a, b) {
        (0, x) | (x, 0) => x,
        (a, b) => a.min(b),
    };
    let frame_max = match tune.frame_max {
        0 => config.frame_max,
        n => n.min(config.frame_max),
    };
    // The client has the last word on heartbeats (0 turns them off, as with
    // RabbitMQ; TCP keepalive still finds a dead peer), but a tiny interval would
    // have the broker beat and check for it many times a second.
    let heartbeat = match tune.heartbeat {
        0 => 0,
        asked => asked.max(config.min_heartbeat_s),
    };
    (
        lower_u16(tune.channel_max, config.channel_max),
        frame_max,
        heartbeat,
    )
}
