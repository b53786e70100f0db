//! Content assembly: a publish's method, content header and body frames become
//! one [`Input::Publish`], within `max_message_bytes` per message and the
//! connection's cap on body bytes of unfinished publishes. Part of the
//! [`Connection`] machine.

use amq_protocol::frame::AMQPContentHeader;
use bytes::Bytes;

use super::{Connection, Input, Publish};
use crate::codes::{Exception, FRAME_ERROR, PRECONDITION_FAILED, RESOURCE_ERROR, UNEXPECTED_FRAME};

impl Connection {
    pub(super) fn on_content_header(
        &mut self,
        ch: u16,
        header: AMQPContentHeader,
        properties: u64,
    ) -> Result<Option<Input>, Exception> {
        let max = self.config.max_message_bytes;
        let c = self.channel(ch)?;
        if c.closing {
            return Ok(None);
        }
        let Some(incoming) = c.incoming.as_mut().filter(|i| i.header.is_none()) else {
            return Err(Exception::connection(
                UNEXPECTED_FRAME,
                format!("content header on channel {ch} without basic.publish"),
            ));
        };
        if header.class_id != 60 {
            return Err(Exception::connection(
                FRAME_ERROR,
                "content header of a class other than basic",
            ));
        }
        // Headers count toward the size, so they cannot carry what the body may not.
        let size = header.body_size.saturating_add(properties);
        if size > max {
            c.incoming = None;
            return Err(Exception::channel(
                PRECONDITION_FAILED,
                format!("message size {size} is larger than the max message size {max}"),
            )
            .during(60, 40));
        }
        let size = header.body_size;
        incoming.header = Some(header);
        Ok((size == 0).then(|| self.finish_publish(ch)).flatten())
    }

    pub(super) fn on_content_body(
        &mut self,
        ch: u16,
        body: Bytes,
    ) -> Result<Option<Input>, Exception> {
        let room = self
            .config
            .max_partial_publish_bytes
            .saturating_sub(self.reserved);
        let c = self.channel(ch)?;
        if c.closing {
            return Ok(None);
        }
        let Some(incoming) = c.incoming.as_mut().filter(|i| i.header.is_some()) else {
            return Err(Exception::connection(
                UNEXPECTED_FRAME,
                format!("content body on channel {ch} without a header"),
            ));
        };
        let expected = incoming.header.as_ref().map_or(0, |h| h.body_size);
        let have =
            incoming.body.len() as u64 + incoming.single.as_ref().map_or(0, |b| b.len() as u64);
        if have + body.len() as u64 > expected {
            return Err(Exception::connection(
                FRAME_ERROR,
                "content body longer than its header said",
            ));
        }
        let body_len = body.len() as u64;
        if have == 0 && body_len == expected {
            incoming.single = Some(body);
        } else {
            if have == 0 && expected <= room {
                // Within the budget of partial bytes, so reserving cannot promise
                // more memory than this connection may hold anyway.
                incoming
                    .body
                    .reserve(usize::try_from(expected).unwrap_or(usize::MAX));
                incoming.reserved = expected;
            }
            if let Some(first) = incoming.single.take() {
                incoming.body.extend_from_slice(&first);
            }
            incoming.body.extend_from_slice(&body);
        }
        let whole = have + body_len == expected;
        if have == 0 {
            self.reserved += incoming.reserved;
        }
        if whole {
            self.partial -= have;
            return Ok(self.finish_publish(ch));
        }
        self.partial += body_len;
        if self.partial > self.config.max_partial_publish_bytes {
            // Many channels each holding part of a message: the one that went
            // over is closed (which frees its part), the others go on.
            return Err(Exception::channel(
                RESOURCE_ERROR,
                format!(
                    "unfinished publishes on this connection hold more than {} bytes",
                    self.config.max_partial_publish_bytes
                ),
            )
            .during(60, 40));
        }
        Ok(None)
    }

    /// The publish on channel `ch` is whole.
    fn finish_publish(&mut self, ch: u16) -> Option<Input> {
        let incoming = self.channels.get_mut(&ch)?.incoming.take()?;
        self.reserved -= incoming.reserved;
        let header = incoming.header?;
        let body = incoming.single.unwrap_or_else(|| incoming.body.freeze());
        Some(Input::Publish(
            ch,
            Box::new(Publish {
                method: incoming.method,
                properties: header.properties,
                body,
            }),
        ))
    }
}
