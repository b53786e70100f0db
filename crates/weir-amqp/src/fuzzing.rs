//! Entry points for the fuzz targets in `fuzz/` (cargo fuzz), and for the test that
//! replays their corpus (`fuzz/corpus/`) on every `cargo test`.
//!
//! [`connection`] drives the sans-IO [`Connection`] with arbitrary client bytes,
//! without a socket or a broker: it plays a minimal shell that answers some
//! channel methods and refuses the others, so the fuzzer reaches the handshake, the
//! channel close handshakes and content assembly. It checks what the machine must
//! always hold: it never panics, everything it writes is well-formed frames, and
//! every close it sends carries one of the spec's reply codes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use amq_protocol::protocol::{AMQPClass, basic, channel, connection};
use bytes::BytesMut;

use crate::codes::{self, Exception};
use crate::connection::{Connection, Input};
use crate::framing::{self, Frame};
use crate::server::AmqpConfig;

/// What a run of [`connection`] saw, for tests to assert on.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The reply code of the `connection.close` the server sent, if any.
    pub connection_close: Option<u16>,
    /// Reply codes of the `channel.close` methods the server sent.
    pub channel_closes: Vec<u16>,
    /// Publishes that came out whole, with their body sizes.
    pub publishes: Vec<usize>,
    /// The connection reached its end.
    pub done: bool,
}

/// Feeds `data` to a fresh connection. The first byte picks how the rest is cut
/// into reads (0: one read; n: reads of n bytes), so partial frames are covered.
///
/// # Panics
///
/// When the machine breaks a rule the module doc names: that is what the fuzzer
/// looks for.
pub fn connection(data: &[u8]) -> Outcome {
    let Some((&cut, data)) = data.split_first() else {
        return Outcome::default();
    };
    let config = AmqpConfig {
        max_message_bytes: 64 * 1024,
        // Each read below moves the clock 250 ms: a handshake cut into 4-byte reads
        // still fits, and a long enough input reaches the deadline.
        handshake_timeout: Duration::from_secs(60),
        ..AmqpConfig::default()
    };
    let max_body = config.max_message_bytes;
    let peer: SocketAddr = "127.0.0.1:40000"
        .parse()
        .expect("invariant: a valid address");
    let mut now = Instant::now();
    let mut conn = Connection::new(Arc::new(config), peer, now);
    let mut outcome = Outcome::default();
    let mut written = BytesMut::new();
    let mut header_checked = false;
    let size = if cut == 0 {
        data.len().max(1)
    } else {
        usize::from(cut)
    };
    for piece in data.chunks(size) {
        conn.input_buffer().extend_from_slice(piece);
        conn.received(now);
        while let Some(input) = conn.poll(now) {
            shell(&mut conn, input, &mut outcome, max_body, now);
        }
        now += Duration::from_millis(250);
        if let Some(input) = conn.tick(now) {
            shell(&mut conn, input, &mut outcome, max_body, now);
        }
        conn.outbox().drain_into(&mut written);
        check_output(&mut written, &mut header_checked, &mut outcome);
        if conn.is_done() {
            break;
        }
    }
    outcome.done = conn.is_done();
    outcome
}

/// A minimal shell: `basic.qos` and `confirm.select` are answered, a queue declare
/// is refused with 404 (so channel closes happen), everything else is taken.
fn shell(conn: &mut Connection, input: Input, outcome: &mut Outcome, max_body: u64, now: Instant) {
    match input {
        Input::Method(ch, class) => match *class {
            AMQPClass::Basic(basic::AMQPMethod::Qos(_)) => conn.method(
                ch,
                AMQPClass::Basic(basic::AMQPMethod::QosOk(basic::QosOk {})),
            ),
            AMQPClass::Queue(_) => {
                conn.close_channel(ch, &Exception::channel(codes::NOT_FOUND, "no queue here"));
            }
            AMQPClass::Channel(channel::AMQPMethod::Flow(_)) => {
                conn.close(&Exception::connection(codes::NOT_IMPLEMENTED, "flow"), now);
            }
            _ => {}
        },
        Input::Publish(ch, publish) => {
            assert!(
                publish.body.len() as u64 <= max_body,
                "a publish over the size limit came through"
            );
            outcome.publishes.push(publish.body.len());
            if publish.body.len() == 7 {
                conn.close_channel(ch, &Exception::channel(codes::PRECONDITION_FAILED, "seven"));
            }
        }
        Input::Opened
        | Input::ChannelOpened(_)
        | Input::ChannelClosing(_)
        | Input::ChannelClosed(_)
        | Input::Closed => {}
    }
}

/// Everything written parses as frames, and closes carry known codes.
fn check_output(written: &mut BytesMut, header_checked: &mut bool, outcome: &mut Outcome) {
    if !*header_checked {
        if written.len() >= 8 && written.starts_with(b"AMQP") {
            assert_eq!(&written[..8], framing::PROTOCOL_HEADER);
            let _ = written.split_to(8);
        }
        *header_checked = !written.is_empty();
    }
    loop {
        match framing::next_frame(written, u32::MAX, usize::MAX) {
            Ok(Some(Frame::Method(_, class))) => match *class {
                AMQPClass::Connection(connection::AMQPMethod::Close(c)) => {
                    assert_ne!(codes::name(c.reply_code), "ERROR", "{}", c.reply_code);
                    outcome.connection_close = Some(c.reply_code);
                }
                AMQPClass::Channel(channel::AMQPMethod::Close(c)) => {
                    assert_ne!(codes::name(c.reply_code), "ERROR", "{}", c.reply_code);
                    outcome.channel_closes.push(c.reply_code);
                }
                _ => {}
            },
            Ok(Some(_)) => {}
            Ok(None) => {
                assert!(written.is_empty(), "the server wrote a partial frame");
                return;
            }
            Err(e) => panic!("the server wrote a bad frame: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use amq_protocol::protocol::basic;

    use super::*;
    use crate::connection::tests::Client;

    /// The seeds of `fuzz/corpus/connection`: valid sessions and near misses.
    fn seeds() -> Vec<(&'static str, Vec<u8>)> {
        let with = |cut: u8, c: Client| {
            let mut bytes = vec![cut];
            bytes.extend(c.bytes);
            bytes
        };
        let session = || Client::handshake(10, true).open_channel(1);
        vec![
            ("handshake", with(0, Client::handshake(0, false))),
            (
                "publish",
                with(
                    0,
                    session()
                        .publish(1, b"hello", 5)
                        .publish(1, &[1; 3000], 1000),
                ),
            ),
            (
                "publish-split-reads",
                with(3, session().publish(1, b"hello", 2)),
            ),
            (
                "declare-refused",
                with(0, session().declare(1, "q").declare(1, "q")),
            ),
            (
                "publish-seven",
                with(0, session().publish(1, b"seven!!", 7).publish(1, b"x", 1)),
            ),
            (
                "qos-and-close",
                with(
                    0,
                    session()
                        .method(
                            1,
                            AMQPClass::Basic(basic::AMQPMethod::Qos(basic::Qos {
                                prefetch_count: 10,
                                global: false,
                            })),
                        )
                        .method(
                            1,
                            AMQPClass::Channel(channel::AMQPMethod::Close(channel::Close {
                                reply_code: 200,
                                reply_text: "bye".into(),
                                class_id: 0,
                                method_id: 0,
                            })),
                        )
                        .method(
                            0,
                            AMQPClass::Connection(connection::AMQPMethod::Close(
                                connection::Close {
                                    reply_code: 200,
                                    reply_text: "bye".into(),
                                    class_id: 0,
                                    method_id: 0,
                                },
                            )),
                        ),
                ),
            ),
            (
                "oversized-frame",
                with(0, session().raw(&[3, 0, 1, 0x7f, 0, 0, 0])),
            ),
            (
                "bad-header",
                with(0, Client::default().raw(b"HTTP/1.1 GET /")),
            ),
        ]
    }

    #[test]
    fn seeds_end_as_expected() {
        let seeds = seeds();
        let outcome = |name: &str| {
            let (_, bytes) = seeds.iter().find(|(n, _)| *n == name).unwrap();
            connection(bytes)
        };
        assert_eq!(outcome("publish").publishes, vec![5, 3000]);
        assert_eq!(outcome("publish-split-reads").publishes, vec![5]);
        assert_eq!(
            outcome("declare-refused").channel_closes,
            vec![codes::NOT_FOUND]
        );
        let seven = outcome("publish-seven");
        assert_eq!(
            (seven.publishes, seven.channel_closes),
            (vec![7], vec![codes::PRECONDITION_FAILED])
        );
        assert!(outcome("qos-and-close").done);
        assert_eq!(
            outcome("oversized-frame").connection_close,
            Some(codes::FRAME_ERROR)
        );
        assert!(outcome("bad-header").done);
    }

    /// Every file the fuzzer kept (and the seeds) runs clean on every `cargo test`.
    #[test]
    fn the_fuzz_corpus_replays() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/connection");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).expect("fuzz/corpus/connection exists") {
            let path = entry.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            let _ = connection(&bytes);
            n += 1;
        }
        assert!(
            n >= seeds().len(),
            "only {n} corpus files in {}",
            dir.display()
        );
    }

    /// Writes the seeds into the corpus: `WEIR_WRITE_SEEDS=1 cargo test -p weir-amqp
    /// write_seeds -- --ignored`.
    #[test]
    #[ignore = "writes fuzz/corpus/connection"]
    fn write_seeds() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/connection");
        std::fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in seeds() {
            std::fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
        }
    }
}
