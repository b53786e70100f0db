//! Frames on the wire (check, then parse), and writing them.
//!
//! A connection starts with the 8-byte protocol header `AMQP 0 0 9 1`; then every
//! frame is
//!
//! ```text
//! type u8 | channel u16 | size u32 | payload (size bytes) | 0xCE
//! ```
//!
//! `amq-protocol` parses method and content-header payloads, but it has no limit on
//! `size` (a header claiming 4 GiB just asks for more input) and it copies bodies
//! into a `Vec`. So the 7-byte header is read here first and `size` checked against
//! the negotiated `frame_max` before anything is buffered; a body payload stays a
//! [`Bytes`] slice of the read buffer, and body frames going out are written from
//! the stored [`Bytes`] without a copy ([`Outbox`]).

use std::collections::VecDeque;
use std::io::IoSlice;

use amq_protocol::frame::{AMQPContentHeader, AMQPFrame, WriteContext, gen_frame};
use amq_protocol::protocol::{AMQPClass, parse_class};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::tables::{self, TableError};

/// What a client sends first.
pub(crate) const PROTOCOL_HEADER: &[u8; 8] = b"AMQP\x00\x00\x09\x01";

const FRAME_METHOD: u8 = 1;
const FRAME_HEADER: u8 = 2;
const FRAME_BODY: u8 = 3;
const FRAME_HEARTBEAT: u8 = 8;
const FRAME_END: u8 = 0xCE;
/// Type, channel and size.
const FRAME_HEADER_LEN: usize = 7;
/// Header plus frame-end: what a frame costs besides its payload.
pub(crate) const FRAME_OVERHEAD: u32 = 8;

/// One frame from the client.
#[derive(Debug)]
pub(crate) enum Frame {
    Method(u16, Box<AMQPClass>),
    /// A content header, and the bytes of its encoded properties (they count
    /// toward the message's size).
    Header(u16, Box<AMQPContentHeader>, u64),
    Body(u16, Bytes),
    Heartbeat(u16),
}

/// Why the input is not a frame. Each closes the connection.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum FrameError {
    #[error("frame of {size} bytes is over the negotiated frame_max of {max}")]
    TooLarge { size: u64, max: u32 },
    #[error("frame does not end with 0xCE")]
    BadEnd,
    #[error("unknown frame type {0}")]
    UnknownType(u8),
    #[error("malformed {what} on channel {channel}")]
    Malformed { channel: u16, what: &'static str },
    #[error("unknown method {class_id}.{method_id} on channel {channel}")]
    UnknownMethod {
        channel: u16,
        class_id: u16,
        method_id: u16,
    },
    /// A method argument the codec drops but RabbitMQ refuses: `basic.qos` with a
    /// non-zero `prefetch_size` (RabbitMQ: 540 NOT_IMPLEMENTED, closing the
    /// connection).
    #[error("{text}")]
    Unsupported {
        class_id: u16,
        method_id: u16,
        text: String,
    },
    /// A field table refused before parsing ([`tables`]); the method it came with
    /// (basic.publish for a content header).
    #[error("{error} on channel {channel}")]
    Table {
        channel: u16,
        class_id: u16,
        method_id: u16,
        error: TableError,
    },
}

/// Whether `buf` starts with the protocol header: `None` while fewer than 8 bytes
/// are there.
pub(crate) fn protocol_header(buf: &[u8]) -> Option<bool> {
    (buf.len() >= PROTOCOL_HEADER.len()).then(|| &buf[..PROTOCOL_HEADER.len()] == PROTOCOL_HEADER)
}

/// Takes the first whole frame off `buf`: `Ok(None)` while it is incomplete. A
/// frame larger than `frame_max` is refused from its header alone, and the field
/// tables of a method or content header are checked ([`tables`]: depth, at most
/// `max_fields` fields) before they are parsed.
pub(crate) fn next_frame(
    buf: &mut BytesMut,
    frame_max: u32,
    max_fields: usize,
) -> Result<Option<Frame>, FrameError> {
    if buf.len() < FRAME_HEADER_LEN {
        return Ok(None);
    }
    let kind = buf[0];
    let channel = u16::from_be_bytes([buf[1], buf[2]]);
    let size = u32::from_be_bytes([buf[3], buf[4], buf[5], buf[6]]);
    if !matches!(
        kind,
        FRAME_METHOD | FRAME_HEADER | FRAME_BODY | FRAME_HEARTBEAT
    ) {
        return Err(FrameError::UnknownType(kind));
    }
    if u64::from(size) + u64::from(FRAME_OVERHEAD) > u64::from(frame_max) {
        return Err(FrameError::TooLarge {
            size: u64::from(size) + u64::from(FRAME_OVERHEAD),
            max: frame_max,
        });
    }
    let total = FRAME_HEADER_LEN + size as usize + 1;
    if buf.len() < total {
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    if buf[total - 1] != FRAME_END {
        return Err(FrameError::BadEnd);
    }
    let mut frame = buf.split_to(total).freeze();
    frame.advance(FRAME_HEADER_LEN);
    frame.truncate(size as usize);
    let parsed = match kind {
        FRAME_METHOD => {
            if let Err(error) = tables::check_method(&frame, max_fields) {
                return Err(FrameError::Table {
                    channel,
                    class_id: u16::from_be_bytes([frame[0], frame[1]]),
                    method_id: u16::from_be_bytes([frame[2], frame[3]]),
                    error,
                });
            }
            check_prefetch_size(&frame)?;
            let class = parse_class(&frame[..])
                .ok()
                .filter(|(rest, _)| rest.is_empty())
                .map(|(_, class)| class);
            match class {
                Some(class) => Frame::Method(channel, Box::new(class)),
                None if frame.len() >= 4 => {
                    // Either bad arguments or a method this codec does not know.
                    let class_id = u16::from_be_bytes([frame[0], frame[1]]);
                    let method_id = u16::from_be_bytes([frame[2], frame[3]]);
                    return Err(if known_method(class_id, method_id) {
                        FrameError::Malformed {
                            channel,
                            what: "method arguments",
                        }
                    } else {
                        FrameError::UnknownMethod {
                            channel,
                            class_id,
                            method_id,
                        }
                    });
                }
                None => {
                    return Err(FrameError::Malformed {
                        channel,
                        what: "method frame",
                    });
                }
            }
        }
        FRAME_HEADER => {
            if let Err(error) = tables::check_content_header(&frame, max_fields) {
                return Err(FrameError::Table {
                    channel,
                    class_id: 60,
                    method_id: 40,
                    error,
                });
            }
            match amq_protocol::frame::parsing::parse_content_header(&frame[..]) {
                Ok(([], header)) => {
                    let properties = frame.len().saturating_sub(12) as u64;
                    Frame::Header(channel, Box::new(header), properties)
                }
                _ => {
                    return Err(FrameError::Malformed {
                        channel,
                        what: "content header",
                    });
                }
            }
        }
        FRAME_BODY => Frame::Body(channel, frame),
        _ => Frame::Heartbeat(channel),
    };
    Ok(Some(parsed))
}

/// Refuses a `basic.qos` with a non-zero `prefetch_size`, which `amq-protocol`
/// parses and drops, as RabbitMQ refuses it.
fn check_prefetch_size(method: &[u8]) -> Result<(), FrameError> {
    if method.len() >= 8 && method[..4] == [0, 60, 0, 10] {
        let prefetch_size = u32::from_be_bytes([method[4], method[5], method[6], method[7]]);
        if prefetch_size != 0 {
            return Err(FrameError::Unsupported {
                class_id: 60,
                method_id: 10,
                text: format!("prefetch_size!=0 ({prefetch_size})"),
            });
        }
    }
    Ok(())
}

/// The methods of AMQP 0-9-1 and RabbitMQ's extensions, by class and method id.
fn known_method(class_id: u16, method_id: u16) -> bool {
    match class_id {
        10 => matches!(
            method_id,
            10 | 11 | 20 | 21 | 30 | 31 | 40 | 41 | 50 | 51 | 60 | 61 | 70 | 71
        ),
        20 => matches!(method_id, 10 | 11 | 20 | 21 | 40 | 41),
        30 => matches!(method_id, 10 | 11),
        40 => matches!(method_id, 10 | 11 | 20 | 21 | 30 | 31 | 40 | 51),
        50 => matches!(method_id, 10 | 11 | 20 | 21 | 30 | 31 | 40 | 41 | 50 | 51),
        60 => matches!(
            method_id,
            10 | 11
                | 20
                | 21
                | 30
                | 31
                | 40
                | 50
                | 60
                | 70
                | 71
                | 72
                | 80
                | 90
                | 100
                | 110
                | 111
                | 120
        ),
        85 => matches!(method_id, 10 | 11),
        90 => matches!(method_id, 10 | 11 | 20 | 21 | 30 | 31),
        _ => false,
    }
}

/// Frames waiting to be written: small frames encoded into shared buffers, bodies
/// as slices of the stored message.
#[derive(Default)]
pub(crate) struct Outbox {
    chunks: VecDeque<Bytes>,
    /// Small frames are encoded here until a body slice follows.
    pending: BytesMut,
    /// Reused by the frame encoder, so a frame costs no allocation.
    scratch: Vec<u8>,
}

impl Outbox {
    /// A method frame.
    pub(crate) fn method(&mut self, channel: u16, method: AMQPClass) {
        self.frame(&AMQPFrame::Method(channel, method));
    }

    /// A heartbeat frame.
    pub(crate) fn heartbeat(&mut self) {
        self.pending
            .extend_from_slice(&[FRAME_HEARTBEAT, 0, 0, 0, 0, 0, 0, FRAME_END]);
    }

    /// Bytes as they are (the protocol header a refused client is answered with).
    pub(crate) fn raw(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
    }

    /// A content header, then `body` in frames of at most `frame_max` bytes.
    pub(crate) fn content(
        &mut self,
        channel: u16,
        header: AMQPContentHeader,
        body: &Bytes,
        frame_max: u32,
    ) {
        self.frame(&AMQPFrame::Header(channel, header));
        let max = (frame_max - FRAME_OVERHEAD) as usize;
        let mut rest = body.clone();
        while !rest.is_empty() {
            let part = rest.split_to(rest.len().min(max));
            self.pending.put_u8(FRAME_BODY);
            self.pending.put_u16(channel);
            self.pending.put_u32(part.len() as u32);
            if part.len() < 256 {
                // Small: one copy beats one more slice to write.
                self.pending.extend_from_slice(&part);
            } else {
                self.flush_pending();
                self.chunks.push_back(part);
            }
            self.pending.put_u8(FRAME_END);
        }
    }

    fn frame(&mut self, frame: &AMQPFrame) {
        // Every string the server sends is checked (or built) to fit a short string
        // before it gets here, so generation into a Vec cannot fail.
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        let written = gen_frame(frame)(WriteContext::from(scratch))
            .map(|ctx| ctx.write)
            .expect("invariant: server frames are generated from valid values");
        self.pending.extend_from_slice(&written);
        self.scratch = written;
    }

    fn flush_pending(&mut self) {
        if !self.pending.is_empty() {
            let bytes = self.pending.split().freeze();
            self.chunks.push_back(bytes);
        }
    }

    /// Moves everything waiting into `out` (for tests and the fuzz target, which
    /// have no socket).
    pub(crate) fn drain_into(&mut self, out: &mut BytesMut) {
        self.flush_pending();
        for chunk in self.chunks.drain(..) {
            out.extend_from_slice(&chunk);
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.chunks.is_empty() && self.pending.is_empty()
    }

    /// Writes everything, with vectored writes.
    pub(crate) async fn write_to<W: AsyncWrite + Unpin>(
        &mut self,
        w: &mut W,
    ) -> std::io::Result<()> {
        self.flush_pending();
        while !self.chunks.is_empty() {
            let slices: Vec<IoSlice<'_>> = self
                .chunks
                .iter()
                .take(64)
                .map(|c| IoSlice::new(c))
                .collect();
            let mut written = w.write_vectored(&slices).await?;
            drop(slices);
            if written == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            while written > 0 {
                let front = self
                    .chunks
                    .front_mut()
                    .expect("invariant: written bytes come from chunks");
                if written >= front.len() {
                    written -= front.len();
                    self.chunks.pop_front();
                } else {
                    front.advance(written);
                    written = 0;
                }
            }
        }
        w.flush().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::protocol::{AMQPClass, basic};

    fn encode(frame: &AMQPFrame) -> Vec<u8> {
        gen_frame(frame)(WriteContext::from(Vec::new()))
            .unwrap()
            .write
    }

    #[test]
    fn whole_frames_parse_and_partial_ones_wait() {
        let method = AMQPFrame::Method(
            3,
            AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack {
                delivery_tag: 7,
                multiple: true,
            })),
        );
        let bytes = encode(&method);
        let mut buf = BytesMut::new();
        for (i, b) in bytes.iter().enumerate() {
            assert!(
                next_frame(&mut buf, 4096, 1000).unwrap().is_none(),
                "at byte {i}"
            );
            buf.put_u8(*b);
        }
        match next_frame(&mut buf, 4096, 1000).unwrap() {
            Some(Frame::Method(3, class)) => assert!(matches!(
                *class,
                AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack {
                    delivery_tag: 7,
                    multiple: true
                }))
            )),
            other => panic!("{other:?}"),
        }
        assert!(buf.is_empty());
    }

    #[test]
    fn an_oversized_frame_is_refused_from_its_header() {
        let mut buf = BytesMut::from(&[FRAME_BODY, 0, 1, 0xff, 0xff, 0xff, 0xff][..]);
        assert_eq!(
            next_frame(&mut buf, 131_072, 1000).unwrap_err(),
            FrameError::TooLarge {
                size: 0xffff_ffff + 8,
                max: 131_072
            }
        );
    }

    #[test]
    fn bad_ends_unknown_types_and_methods_are_errors() {
        let mut buf = BytesMut::from(&[FRAME_BODY, 0, 1, 0, 0, 0, 1, b'x', 0][..]);
        assert_eq!(
            next_frame(&mut buf, 4096, 1000).unwrap_err(),
            FrameError::BadEnd
        );
        let mut buf = BytesMut::from(&[9, 0, 1, 0, 0, 0, 0, FRAME_END][..]);
        assert_eq!(
            next_frame(&mut buf, 4096, 1000).unwrap_err(),
            FrameError::UnknownType(9)
        );
        let mut buf = BytesMut::from(&[FRAME_METHOD, 0, 1, 0, 0, 0, 4, 0, 99, 0, 1, FRAME_END][..]);
        assert_eq!(
            next_frame(&mut buf, 4096, 1000).unwrap_err(),
            FrameError::UnknownMethod {
                channel: 1,
                class_id: 99,
                method_id: 1
            }
        );
    }

    #[test]
    fn a_non_zero_prefetch_size_is_refused_as_rabbitmq_does() {
        // basic.qos: prefetch_size 1000, prefetch_count 1, global false.
        let qos = |size: u32| {
            let mut f = vec![FRAME_METHOD, 0, 1, 0, 0, 0, 11, 0, 60, 0, 10];
            f.extend_from_slice(&size.to_be_bytes());
            f.extend_from_slice(&[0, 1, 0, FRAME_END]);
            BytesMut::from(&f[..])
        };
        assert_eq!(
            next_frame(&mut qos(1000), 4096, 1000).unwrap_err(),
            FrameError::Unsupported {
                class_id: 60,
                method_id: 10,
                text: "prefetch_size!=0 (1000)".into(),
            }
        );
        assert!(matches!(
            next_frame(&mut qos(0), 4096, 1000),
            Ok(Some(Frame::Method(1, _)))
        ));
    }

    #[test]
    fn bodies_are_slices_and_split_by_frame_max() {
        let body = Bytes::from(vec![7u8; 1000]);
        let mut out = Outbox::default();
        out.content(
            1,
            AMQPContentHeader {
                class_id: 60,
                body_size: 1000,
                properties: basic::AMQPProperties::default(),
            },
            &body,
            4096 / 8 + 8,
        );
        out.flush_pending();
        let mut wire = BytesMut::new();
        for c in &out.chunks {
            wire.extend_from_slice(c);
        }
        let mut got = Vec::new();
        while let Some(frame) = next_frame(&mut wire, 4096, 1000).unwrap() {
            if let Frame::Body(1, b) = frame {
                assert!(b.len() <= 512);
                got.extend_from_slice(&b);
            }
        }
        assert_eq!(got, body);
    }

    proptest::proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(_)) = next_frame(&mut buf, 4096, 1000) {}
        }
    }
}
