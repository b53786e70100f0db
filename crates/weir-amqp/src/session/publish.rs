//! `basic.publish`: a whole publish gets its confirm sequence number and goes to
//! the channel's worker (or the transaction, or straight to a direct reply-to
//! consumer); returns of unroutable mandatory publishes.

use amq_protocol::protocol::{AMQPClass, basic};
use amq_protocol::types::ShortString;
use tokio::sync::mpsc;

use super::Session;
use super::consumer::DELIVERY_FRAMING;
use super::event::{Event, Publish};
use super::publisher::{Job, channel_worker};
use super::replies::REPLY_TO;
use crate::codes::{self, Exception, PRECONDITION_FAILED};
use crate::connection::Publish as IncomingPublish;

impl Session {
    /// A whole publish: give it its sequence number and queue it.
    pub(super) fn on_publish(
        &mut self,
        ch: u16,
        incoming: IncomingPublish,
    ) -> Result<(), Exception> {
        self.allow_publish(incoming.method.exchange.as_str())?;
        let c = self.channel(ch)?;
        let body = incoming.body;
        let seq = c.state.publish_seq();
        let mut properties = incoming.properties;
        if properties.reply_to().as_ref().map(ShortString::as_str) == Some(REPLY_TO) {
            let Some((token, _)) = &c.reply_to else {
                return Err(Exception::channel(
                    PRECONDITION_FAILED,
                    "fast reply consumer does not exist (consume amq.rabbitmq.reply-to first, on this channel)",
                ));
            };
            properties = properties.with_reply_to(ShortString::from(format!("{REPLY_TO}.{token}")));
        }
        let publish = Publish {
            exchange: incoming.method.exchange.as_str().to_owned(),
            routing_key: incoming.method.routing_key.as_str().to_owned(),
            mandatory: incoming.method.mandatory,
            properties,
            body,
            seq,
        };
        if publish.exchange.is_empty()
            && let Some(token) = publish
                .routing_key
                .strip_prefix(REPLY_TO)
                .and_then(|rest| rest.strip_prefix('.'))
        {
            let token = token.to_owned();
            self.direct_reply(ch, &token, publish);
            return Ok(());
        }
        let c = self.channel(ch)?;
        if let Some(publish) = c.state.publish(publish) {
            c.pending.push(Job::Publish(Box::new(publish)));
        }
        Ok(())
    }

    /// A reply to a direct reply-to address: straight to its consumer, confirmed at
    /// once; returned (if mandatory) when that consumer is gone.
    pub(super) fn direct_reply(&mut self, ch: u16, token: &str, publish: Publish) {
        let target = self.replies.lock().get(token).cloned();
        // A reply takes its size of the requester's credit; when the requester does
        // not read its replies it gets no more of them (as a reply whose consumer
        // is gone, it is dropped, or returned if mandatory).
        let bytes = publish.body.len() + DELIVERY_FRAMING;
        let delivered = target.is_some_and(|t| {
            t.credit.try_take(bytes)
                && t.events
                    .send(Event::Reply {
                        channel: t.channel,
                        consumer: t.consumer,
                        routing_key: publish.routing_key.clone(),
                        properties: Box::new(publish.properties.clone()),
                        body: publish.body.clone(),
                        bytes,
                    })
                    .is_ok()
        });
        let seq = publish.seq;
        if !delivered && publish.mandatory {
            self.send_returns(ch, vec![publish]);
        }
        if seq != 0 {
            self.conn.method(
                ch,
                AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack {
                    delivery_tag: seq,
                    multiple: false,
                })),
            );
        }
    }

    /// Hands each channel's publishes of this round to its publisher (starting it on
    /// first use). Waits when a publisher is behind: the client is not read from
    /// meanwhile, which is the backpressure.
    pub(super) async fn hand_over_publishes(&mut self) {
        let ids: Vec<u16> = self
            .channels
            .iter()
            .filter(|(_, c)| !c.pending.is_empty())
            .map(|(id, _)| *id)
            .collect();
        for ch in ids {
            self.hand_over(ch).await;
        }
    }

    /// Hands channel `ch`'s pending publishes to its publisher.
    pub(super) async fn hand_over(&mut self, ch: u16) {
        let Some(c) = self.channels.get_mut(&ch).filter(|c| !c.pending.is_empty()) else {
            return;
        };
        let jobs = std::mem::take(&mut c.pending);
        c.in_flight += jobs.iter().filter(|j| j.ordered()).count();
        let sender = c.publisher.get_or_insert_with(|| {
            let (tx, rx) = mpsc::channel(16);
            self.tasks.spawn(channel_worker(
                self.broker.clone(),
                (ch, c.generation),
                rx,
                self.events_tx.clone(),
                self.tasks.clone(),
            ));
            tx
        });
        let _ = sender.send(jobs).await;
    }

    /// Waits until everything channel `ch` published so far is done (handling other
    /// events meanwhile).
    pub(super) async fn publishes_done(&mut self, ch: u16) {
        self.hand_over(ch).await;
        while self.channels.get(&ch).is_some_and(|c| c.in_flight > 0) {
            let Some(event) = self.events_rx.recv().await else {
                return;
            };
            Box::pin(self.on_event(event)).await;
        }
    }

    pub(super) fn send_returns(&mut self, ch: u16, returns: Vec<Publish>) {
        for r in returns {
            self.output.answering(r.body.len() + DELIVERY_FRAMING);
            self.conn.method(
                ch,
                AMQPClass::Basic(basic::AMQPMethod::Return(basic::Return {
                    reply_code: codes::NO_ROUTE,
                    reply_text: "NO_ROUTE".into(),
                    exchange: r.exchange.into(),
                    routing_key: r.routing_key.into(),
                })),
            );
            self.conn.content(ch, r.properties, &r.body);
        }
    }
}
