//! The connection machine, driven with client bytes and a clock of our own.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use amq_protocol::frame::{AMQPContentHeader, AMQPFrame, WriteContext, gen_frame};
use amq_protocol::protocol::basic::AMQPProperties;
use amq_protocol::protocol::{AMQPClass, basic, channel, connection, queue};
use amq_protocol::types::{AMQPValue, FieldTable, LongString};
use bytes::BytesMut;

use super::handshake::negotiate;
use super::*;
use crate::framing::{Frame, next_frame};
use crate::tables;

/// Client bytes, built frame by frame.
#[derive(Default)]
pub(crate) struct Client {
    pub(crate) bytes: Vec<u8>,
}

impl Client {
    pub(crate) fn frame(mut self, frame: &AMQPFrame) -> Client {
        let written = gen_frame(frame)(WriteContext::from(Vec::new()))
            .expect("test frames encode")
            .write;
        self.bytes.extend_from_slice(&written);
        self
    }

    pub(crate) fn method(self, ch: u16, class: AMQPClass) -> Client {
        self.frame(&AMQPFrame::Method(ch, class))
    }

    pub(crate) fn raw(mut self, bytes: &[u8]) -> Client {
        self.bytes.extend_from_slice(bytes);
        self
    }

    /// The protocol header and a guest login, asking for `heartbeat` seconds.
    pub(crate) fn handshake(heartbeat: u16, blocked_capable: bool) -> Client {
        let mut caps = FieldTable::default();
        caps.insert(
            "connection.blocked".into(),
            AMQPValue::Boolean(blocked_capable),
        );
        let mut props = FieldTable::default();
        props.insert("capabilities".into(), AMQPValue::FieldTable(caps));
        Client::default()
            .raw(framing::PROTOCOL_HEADER)
            .method(
                0,
                AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
                    client_properties: props,
                    mechanism: "PLAIN".into(),
                    response: LongString::from(b"\0guest\0guest".to_vec()),
                    locale: "en_US".into(),
                })),
            )
            .method(
                0,
                AMQPClass::Connection(connection::AMQPMethod::TuneOk(connection::TuneOk {
                    channel_max: 0,
                    frame_max: 8192,
                    heartbeat,
                })),
            )
            .method(
                0,
                AMQPClass::Connection(connection::AMQPMethod::Open(connection::Open {
                    virtual_host: "/".into(),
                })),
            )
    }

    pub(crate) fn open_channel(self, ch: u16) -> Client {
        self.method(
            ch,
            AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
        )
    }

    /// A publish of `body` to the default exchange, in body frames of `split` bytes.
    pub(crate) fn publish(self, ch: u16, body: &[u8], split: usize) -> Client {
        let mut c = self
            .method(
                ch,
                AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
                    exchange: "".into(),
                    routing_key: "q".into(),
                    mandatory: false,
                    immediate: false,
                })),
            )
            .frame(&AMQPFrame::Header(
                ch,
                AMQPContentHeader {
                    class_id: 60,
                    body_size: body.len() as u64,
                    properties: AMQPProperties::default(),
                },
            ));
        for part in body.chunks(split.max(1)) {
            c = c.raw(&[3]).raw(&ch.to_be_bytes());
            c = c
                .raw(&(part.len() as u32).to_be_bytes())
                .raw(part)
                .raw(&[0xCE]);
        }
        c
    }

    pub(crate) fn declare(self, ch: u16, name: &str) -> Client {
        self.method(
            ch,
            AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
                queue: name.into(),
                passive: false,
                durable: true,
                exclusive: false,
                auto_delete: false,
                nowait: false,
                arguments: FieldTable::default(),
            })),
        )
    }
}

struct Rig {
    conn: Connection,
    now: Instant,
    written: BytesMut,
}

impl Rig {
    fn new() -> Rig {
        let now = Instant::now();
        let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let config = AmqpConfig {
            max_message_bytes: 1000,
            ..AmqpConfig::default()
        };
        Rig {
            conn: Connection::new(Arc::new(config), peer, now),
            now,
            written: BytesMut::new(),
        }
    }

    /// Feeds bytes; returns what the machine handed up, answering logins and vhost
    /// opens as a fresh broker does (guest/guest, the vhost `/`).
    fn feed(&mut self, bytes: &[u8]) -> Vec<Input> {
        self.conn.input_buffer().extend_from_slice(bytes);
        self.conn.received(self.now);
        let mut inputs = Vec::new();
        while let Some(input) = self.conn.poll(self.now) {
            match input {
                Input::Login { user, password, .. } => {
                    let refused =
                        (user != "guest" || password != "guest").then(|| "refused".to_owned());
                    self.conn.logged_in(refused, self.now);
                }
                Input::OpenVhost(vhost) => {
                    let refused = (vhost != "/").then(|| "no such vhost".to_owned());
                    self.conn.vhost_opened(refused, self.now);
                }
                other => inputs.push(other),
            }
        }
        inputs
    }

    fn open(heartbeat: u16) -> Rig {
        let mut rig = Rig::new();
        let inputs = rig.feed(&Client::handshake(heartbeat, true).open_channel(1).bytes);
        assert!(
            matches!(inputs[..], [Input::Opened, Input::ChannelOpened(1)]),
            "{inputs:?}"
        );
        rig.frames();
        rig
    }

    /// The frames written since the last call (the protocol header skipped).
    fn frames(&mut self) -> Vec<Frame> {
        self.conn.outbox().drain_into(&mut self.written);
        if self.written.starts_with(b"AMQP") {
            let _ = self.written.split_to(8);
        }
        std::iter::from_fn(|| next_frame(&mut self.written, u32::MAX, usize::MAX).unwrap())
            .collect()
    }

    /// The reply code of the `connection.close` written, if any.
    fn connection_close(&mut self) -> Option<u16> {
        self.frames().into_iter().find_map(|f| match f {
            Frame::Method(0, class) => match *class {
                AMQPClass::Connection(connection::AMQPMethod::Close(c)) => Some(c.reply_code),
                _ => None,
            },
            _ => None,
        })
    }
}

#[test]
fn the_handshake_opens_and_negotiates() {
    let mut rig = Rig::new();
    let inputs = rig.feed(&Client::handshake(30, false).bytes);
    assert!(matches!(inputs[..], [Input::Opened]));
    assert!(rig.conn.is_running());
    assert_eq!(rig.conn.limits(), (2047, 8192, 30));
    let frames = rig.frames();
    let names: Vec<(u16, u16)> = frames
        .iter()
        .map(|f| match f {
            Frame::Method(_, c) => (c.get_amqp_class_id(), c.get_amqp_method_id()),
            _ => (0, 0),
        })
        .collect();
    // start, tune, open-ok
    assert_eq!(names, vec![(10, 10), (10, 30), (10, 41)]);
}

impl Rig {
    /// The whole handshake fed at once, without the answers [`Rig::feed`] gives.
    fn handshake_unanswered() -> Rig {
        let mut rig = Rig::new();
        rig.conn
            .input_buffer()
            .extend_from_slice(&Client::handshake(0, false).bytes);
        rig.conn.received(rig.now);
        rig
    }

    /// The (class, method) of each method frame written since the last call.
    fn method_names(&mut self) -> Vec<(u16, u16)> {
        self.frames()
            .iter()
            .map(|f| match f {
                Frame::Method(_, c) => (c.get_amqp_class_id(), c.get_amqp_method_id()),
                _ => (0, 0),
            })
            .collect()
    }
}

/// The machine waits for the shell's answer to a login: nothing after `start-ok`
/// is read (no `tune` goes out) until it comes; then the buffered `tune-ok` and
/// `open` go through, and the vhost waits for its own answer.
#[test]
fn a_login_and_a_vhost_wait_for_the_shells_answers() {
    let mut rig = Rig::handshake_unanswered();
    let Some(Input::Login {
        mechanism,
        user,
        password,
        ..
    }) = rig.conn.poll(rig.now)
    else {
        panic!("a login is handed up first");
    };
    assert_eq!(
        (mechanism.as_str(), user.as_str(), password.as_str()),
        ("PLAIN", "guest", "guest")
    );
    assert!(
        rig.conn.poll(rig.now).is_none(),
        "nothing more until the answer"
    );
    assert_eq!(rig.method_names(), vec![(10, 10)], "only start so far");
    rig.conn.logged_in(None, rig.now);
    let Some(Input::OpenVhost(vhost)) = rig.conn.poll(rig.now) else {
        panic!("then the vhost");
    };
    assert_eq!(vhost, "/");
    assert!(rig.conn.poll(rig.now).is_none());
    assert!(!rig.conn.is_running());
    rig.conn.vhost_opened(None, rig.now);
    assert!(matches!(rig.conn.poll(rig.now), Some(Input::Opened)));
    assert!(rig.conn.is_running());
    // tune, open-ok
    assert_eq!(rig.method_names(), vec![(10, 30), (10, 41)]);
}

/// A login answer that never comes ends at the handshake deadline, a late answer
/// changes nothing, and a refused vhost closes the connection with 530.
#[test]
fn an_unanswered_login_ends_at_the_deadline_and_a_refused_vhost_closes() {
    let mut rig = Rig::handshake_unanswered();
    assert!(matches!(rig.conn.poll(rig.now), Some(Input::Login { .. })));
    let late = rig.now + AmqpConfig::default().handshake_timeout + Duration::from_millis(1);
    assert!(matches!(rig.conn.tick(late), Some(Input::Closed)));
    rig.conn.logged_in(None, late);
    assert!(rig.conn.is_done());
    assert_eq!(
        rig.method_names(),
        vec![(10, 10)],
        "no tune after the deadline"
    );

    let mut rig = Rig::handshake_unanswered();
    assert!(matches!(rig.conn.poll(rig.now), Some(Input::Login { .. })));
    rig.conn.logged_in(None, rig.now);
    assert!(matches!(rig.conn.poll(rig.now), Some(Input::OpenVhost(_))));
    rig.conn
        .vhost_opened(Some("vhost / not for you".into()), rig.now);
    assert_eq!(rig.connection_close(), Some(codes::NOT_ALLOWED));
    assert!(!rig.conn.is_running());
}

#[test]
fn the_handshake_works_a_byte_at_a_time() {
    let mut rig = Rig::new();
    let mut inputs = Vec::new();
    for b in Client::handshake(0, false)
        .open_channel(1)
        .publish(1, b"hello", 2)
        .bytes
    {
        inputs.extend(rig.feed(&[b]));
    }
    assert!(matches!(
        inputs[..],
        [Input::Opened, Input::ChannelOpened(1), Input::Publish(1, _)]
    ));
    let Input::Publish(_, p) = &inputs[2] else {
        unreachable!()
    };
    assert_eq!(&p.body[..], b"hello");
}

#[test]
fn a_wrong_protocol_header_is_answered_with_ours() {
    let mut rig = Rig::new();
    let inputs = rig.feed(b"AMQP\x01\x01\x00\x0a");
    assert!(matches!(inputs[..], [Input::Closed]));
    assert!(rig.conn.is_done());
    let mut out = BytesMut::new();
    rig.conn.outbox().drain_into(&mut out);
    assert_eq!(&out[..], framing::PROTOCOL_HEADER);
}

#[test]
fn a_bad_login_is_refused_with_403() {
    let mut rig = Rig::new();
    let bytes = Client::default()
        .raw(framing::PROTOCOL_HEADER)
        .method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
                client_properties: FieldTable::default(),
                mechanism: "PLAIN".into(),
                response: LongString::from(b"\0guest\0wrong".to_vec()),
                locale: "en_US".into(),
            })),
        )
        .bytes;
    rig.feed(&bytes);
    assert_eq!(rig.connection_close(), Some(codes::ACCESS_REFUSED));
    assert!(!rig.conn.is_running());
}

#[test]
#[allow(clippy::too_many_lines)] // one table of cases
fn malformed_input_closes_with_the_right_code() {
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        (
            "frame over frame_max",
            vec![3, 0, 1, 0, 1, 0, 0],
            codes::FRAME_ERROR,
        ),
        (
            "bad frame end",
            vec![8, 0, 0, 0, 0, 0, 0, 0x00],
            codes::FRAME_ERROR,
        ),
        (
            "unknown frame type",
            vec![9, 0, 0, 0, 0, 0, 0, 0xCE],
            codes::FRAME_ERROR,
        ),
        (
            "unknown method",
            vec![1, 0, 1, 0, 0, 0, 4, 0, 99, 0, 1, 0xCE],
            codes::NOT_IMPLEMENTED,
        ),
        (
            "truncated arguments",
            vec![1, 0, 1, 0, 0, 0, 5, 0, 60, 0, 80, 1, 0xCE],
            codes::SYNTAX_ERROR,
        ),
        (
            "heartbeat off channel 0",
            vec![8, 0, 1, 0, 0, 0, 0, 0xCE],
            codes::FRAME_ERROR,
        ),
        (
            "body without header",
            vec![3, 0, 1, 0, 0, 0, 1, b'x', 0xCE],
            codes::UNEXPECTED_FRAME,
        ),
        (
            "method on a channel not open",
            Client::default().declare(9, "q").bytes,
            codes::CHANNEL_ERROR,
        ),
        (
            "channel opened twice",
            Client::default().open_channel(1).bytes,
            codes::CHANNEL_ERROR,
        ),
        (
            "a method in the middle of a publish",
            Client::default()
                .method(
                    1,
                    AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
                        exchange: "".into(),
                        routing_key: "q".into(),
                        mandatory: false,
                        immediate: false,
                    })),
                )
                .declare(1, "q")
                .bytes,
            codes::UNEXPECTED_FRAME,
        ),
        (
            "body longer than its header",
            {
                let mut c = Client::default().publish(1, b"abc", 3);
                let n = c.bytes.len();
                c.bytes.truncate(n - 12); // drop the body frame
                c.raw(&[3, 0, 1, 0, 0, 0, 4])
                    .raw(b"abcd")
                    .raw(&[0xCE])
                    .bytes
            },
            codes::FRAME_ERROR,
        ),
    ];
    for (what, bytes, code) in cases {
        let mut rig = Rig::open(0);
        rig.feed(&bytes);
        assert_eq!(rig.connection_close(), Some(code), "{what}");
        // After our close only close-ok counts; garbage is dropped.
        assert!(
            rig.feed(b"garbage that is not a frame").is_empty(),
            "{what}"
        );
        let closed = rig.feed(
            &Client::default()
                .method(
                    0,
                    AMQPClass::Connection(connection::AMQPMethod::CloseOk(connection::CloseOk {})),
                )
                .bytes,
        );
        // The garbage was dropped with whatever followed it in that read, so the
        // close-ok may be cut; either way the close wait ends the connection.
        if closed.is_empty() {
            rig.now += Duration::from_secs(3);
            assert!(
                matches!(rig.conn.tick(rig.now), Some(Input::Closed)),
                "{what}"
            );
        }
        assert!(rig.conn.is_done(), "{what}");
    }
}

#[test]
fn a_publish_is_assembled_and_one_frame_bodies_are_not_copied() {
    let mut rig = Rig::open(0);
    let inputs = rig.feed(&Client::default().publish(1, &[5u8; 600], 250).bytes);
    let [Input::Publish(1, p)] = &inputs[..] else {
        panic!("{inputs:?}")
    };
    assert_eq!(&p.body[..], &[5u8; 600][..]);
    // One frame: the body is a slice of the input buffer.
    let bytes = Client::default().publish(1, &[6u8; 300], 300).bytes;
    rig.conn.input_buffer().extend_from_slice(&bytes);
    let start = rig.conn.input_buffer().as_ptr() as usize;
    let end = start + bytes.len();
    let Some(Input::Publish(1, p)) = rig.conn.poll(rig.now) else {
        panic!()
    };
    let at = p.body.as_ptr() as usize;
    assert!(at >= start && at < end, "the body was copied");
    // An empty body needs no body frame.
    let inputs = rig.feed(&Client::default().publish(1, b"", 1).bytes);
    assert!(matches!(&inputs[..], [Input::Publish(1, p)] if p.body.is_empty()));
}

#[test]
fn an_oversized_message_closes_only_its_channel() {
    let mut rig = Rig::open(0);
    let bytes = Client::default()
        .open_channel(2)
        .publish(1, &[1u8; 1001], 1001)
        .publish(2, b"fine", 4)
        .bytes;
    let inputs = rig.feed(&bytes);
    assert!(
        matches!(
            &inputs[..],
            [
                Input::ChannelOpened(2),
                Input::ChannelClosing(1),
                Input::Publish(2, _)
            ]
        ),
        "{inputs:?}"
    );
    let closes: Vec<u16> = rig
        .frames()
        .into_iter()
        .filter_map(|f| match f {
            Frame::Method(1, c) => match *c {
                AMQPClass::Channel(channel::AMQPMethod::Close(c)) => Some(c.reply_code),
                _ => None,
            },
            _ => None,
        })
        .collect();
    assert_eq!(closes, vec![codes::PRECONDITION_FAILED]);
    assert!(!rig.conn.channel_usable(1));
    assert!(rig.conn.channel_usable(2));
    // Channel 1 ignores everything until its close-ok.
    assert!(
        rig.feed(&Client::default().declare(1, "q").bytes)
            .is_empty()
    );
    let inputs = rig.feed(
        &Client::default()
            .method(
                1,
                AMQPClass::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {})),
            )
            .open_channel(1)
            .bytes,
    );
    assert!(matches!(
        &inputs[..],
        [Input::ChannelClosed(1), Input::ChannelOpened(1)]
    ));
}

#[test]
fn a_client_channel_close_is_answered() {
    let mut rig = Rig::open(0);
    let inputs = rig.feed(
        &Client::default()
            .method(
                1,
                AMQPClass::Channel(channel::AMQPMethod::Close(channel::Close {
                    reply_code: 200,
                    reply_text: "bye".into(),
                    class_id: 0,
                    method_id: 0,
                })),
            )
            .bytes,
    );
    assert!(matches!(&inputs[..], [Input::ChannelClosed(1)]));
    let frames = rig.frames();
    assert!(
        matches!(&frames[..], [Frame::Method(1, c)] if matches!(**c, AMQPClass::Channel(channel::AMQPMethod::CloseOk(_))))
    );
}

#[test]
fn heartbeats_go_out_and_a_silent_peer_is_dropped() {
    let mut rig = Rig::open(10);
    rig.now += Duration::from_secs(5);
    assert!(rig.conn.tick(rig.now).is_none());
    assert!(matches!(rig.frames()[..], [Frame::Heartbeat(0)]));
    // The peer speaks at 15 s: alive until 35 s.
    rig.now += Duration::from_secs(10);
    rig.feed(&[8, 0, 0, 0, 0, 0, 0, 0xCE]);
    rig.now += Duration::from_secs(19);
    assert!(rig.conn.tick(rig.now).is_none());
    assert!(rig.conn.next_tick().unwrap() <= rig.now + Duration::from_secs(2));
    rig.now += Duration::from_secs(2);
    assert!(matches!(rig.conn.tick(rig.now), Some(Input::Closed)));
    assert!(rig.conn.is_done());
}

#[test]
fn a_stalled_handshake_times_out() {
    let mut rig = Rig::new();
    rig.feed(framing::PROTOCOL_HEADER);
    rig.now += Duration::from_secs(11);
    assert!(matches!(rig.conn.tick(rig.now), Some(Input::Closed)));
}

#[test]
fn blocked_goes_only_to_clients_that_understand_it() {
    let mut rig = Rig::open(0);
    assert!(rig.conn.set_blocked(Some("low on disk")));
    assert!(!rig.conn.set_blocked(Some("low on disk")), "sent once");
    assert!(rig.conn.set_blocked(None));
    let ids: Vec<u16> = rig
        .frames()
        .iter()
        .filter_map(|f| match f {
            Frame::Method(0, c) => Some(c.get_amqp_method_id()),
            _ => None,
        })
        .collect();
    assert_eq!(ids, vec![60, 61]);
    let mut rig = Rig::new();
    rig.feed(&Client::handshake(0, false).bytes);
    assert!(!rig.conn.set_blocked(Some("low on disk")));
}

#[test]
fn tune_takes_the_lower_limits_and_zero_means_none() {
    let config = AmqpConfig::default();
    let (ch, frame, beat) = negotiate(
        &config,
        &connection::TuneOk {
            channel_max: 0,
            frame_max: 0,
            heartbeat: 10,
        },
    );
    assert_eq!(
        (ch, frame, beat),
        (config.channel_max, config.frame_max, 10)
    );
    let (ch, frame, _) = negotiate(
        &config,
        &connection::TuneOk {
            channel_max: 5,
            frame_max: 8192,
            heartbeat: 0,
        },
    );
    assert_eq!((ch, frame), (5, 8192));
    // A floor on the interval a client may ask for; 0 still means none.
    let floor = AmqpConfig {
        min_heartbeat_s: 5,
        ..AmqpConfig::default()
    };
    let beat = |asked| {
        negotiate(
            &floor,
            &connection::TuneOk {
                channel_max: 0,
                frame_max: 0,
                heartbeat: asked,
            },
        )
        .2
    };
    assert_eq!((beat(1), beat(0), beat(30)), (5, 0, 30));
}

#[test]
fn the_handshake_has_one_deadline_for_all_its_steps() {
    let mut rig = Rig::new();
    rig.feed(framing::PROTOCOL_HEADER);
    rig.now += Duration::from_secs(6);
    // start-ok arrives in time, but the rest of the handshake does not.
    let start_ok = Client::default().method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
            client_properties: FieldTable::default(),
            mechanism: "PLAIN".into(),
            response: LongString::from(b"\0guest\0guest".to_vec()),
            locale: "en_US".into(),
        })),
    );
    assert!(rig.feed(&start_ok.bytes).is_empty());
    assert!(rig.conn.tick(rig.now).is_none());
    rig.now += Duration::from_secs(5);
    assert!(matches!(rig.conn.tick(rig.now), Some(Input::Closed)));
}

#[test]
fn start_advertises_what_pika_needs_for_confirms() {
    let s = Connection::start();
    let Some(AMQPValue::FieldTable(caps)) = s.server_properties.inner().get("capabilities") else {
        panic!("no capabilities");
    };
    for c in ["publisher_confirms", "basic.nack", "connection.blocked"] {
        assert_eq!(caps.inner().get(c), Some(&AMQPValue::Boolean(true)), "{c}");
    }
}

proptest::proptest! {
    /// However the client's bytes are cut into reads, the same inputs come out.
    #[test]
    fn reads_can_be_cut_anywhere(cuts in proptest::collection::vec(1usize..64, 1..40)) {
        let bytes = Client::handshake(0, false)
            .open_channel(1)
            .publish(1, &[9u8; 300], 100)
            .declare(1, "q")
            .publish(1, b"x", 1)
            .bytes;
        let mut rig = Rig::new();
        let mut inputs = Vec::new();
        let mut rest = &bytes[..];
        let mut i = 0;
        while !rest.is_empty() {
            let n = cuts[i % cuts.len()].min(rest.len());
            inputs.extend(rig.feed(&rest[..n]));
            rest = &rest[n..];
            i += 1;
        }
        let kinds: Vec<&str> = inputs.iter().map(|i| match i {
            Input::Opened => "opened",
            Input::ChannelOpened(_) => "channel",
            Input::Method(..) => "method",
            Input::Publish(_, p) if p.body.len() == 300 => "publish300",
            Input::Publish(..) => "publish",
            Input::ChannelClosing(_) => "closing",
            Input::ChannelClosed(_) => "closed",
            Input::Closed => "done",
            Input::Login { .. } | Input::OpenVhost(_) => "answered by the rig",
        }).collect();
        proptest::prop_assert_eq!(kinds, vec!["opened", "channel", "publish300", "method", "publish"]);
    }
}

#[test]
fn closes_that_cross_are_answered_and_the_late_close_ok_is_ignored() {
    let mut rig = Rig::open(0);
    assert!(
        rig.conn
            .close_channel(1, &Exception::channel(codes::NOT_FOUND, "no such queue"))
    );
    rig.frames();
    let close = Client::default().method(
        1,
        AMQPClass::Channel(channel::AMQPMethod::Close(channel::Close {
            reply_code: 200,
            reply_text: "bye".into(),
            class_id: 0,
            method_id: 0,
        })),
    );
    let inputs = rig.feed(&close.bytes);
    assert!(
        matches!(&inputs[..], [Input::ChannelClosed(1)]),
        "{inputs:?}"
    );
    // The client answers our close too: not an error.
    let inputs = rig.feed(
        &Client::default()
            .method(
                1,
                AMQPClass::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {})),
            )
            .bytes,
    );
    assert!(inputs.is_empty());
    assert!(rig.conn.is_running());
    assert_eq!(rig.connection_close(), None);
}

#[path = "connection_limits_tests.rs"]
mod limits;
