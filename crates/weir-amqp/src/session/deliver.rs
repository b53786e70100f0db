//! What the helper tasks report: deliveries numbered and written (or requeued when
//! their consumer went), direct replies, consumers whose queue went, and a
//! publisher's batches turned into confirms and returns.

use std::sync::Arc;

use amq_protocol::protocol::basic::AMQPProperties;
use amq_protocol::protocol::{AMQPClass, basic};
use amq_protocol::types::ShortString;
use bytes::Bytes;
use weir_broker::Delivery;
use weir_broker::metrics::DeliveryMode;

use super::Session;
use super::consumer::requeue;
use super::event::Event;
use crate::channel::confirms;
use crate::message::from_delivery;

impl Session {
    pub(super) async fn on_event(&mut self, event: Event) {
        match event {
            Event::Deliveries {
                channel: ch,
                generation,
                consumer,
                queue,
                messages,
                bytes,
            } => self.on_deliveries(ch, generation, consumer, queue, messages, bytes),
            Event::Reply {
                channel: ch,
                consumer,
                routing_key,
                properties,
                body,
                bytes,
            } => self.on_reply(ch, consumer, routing_key, *properties, &body, bytes),
            Event::ConsumerGone {
                channel: ch,
                generation,
                consumer,
            } => {
                let gone = self
                    .channels
                    .get_mut(&ch)
                    .filter(|c| c.generation == generation)
                    .and_then(|c| c.consumers.remove(&consumer));
                let Some(gone) = gone else { return };
                self.end_consumer(ch, consumer.clone(), gone).await;
                if self.conn.channel_usable(ch) {
                    self.conn.method(
                        ch,
                        AMQPClass::Basic(basic::AMQPMethod::Cancel(basic::Cancel {
                            consumer_tag: ShortString::from(consumer),
                            nowait: true,
                        })),
                    );
                }
            }
            Event::Published {
                channel: ch,
                generation,
                done,
            } => {
                // A channel closed and reopened under the same number gets none of
                // its predecessor's confirms.
                let Some(c) = self
                    .channels
                    .get_mut(&ch)
                    .filter(|c| c.generation == generation)
                else {
                    return;
                };
                c.in_flight = c.in_flight.saturating_sub(done.count);
                if done.error.is_some() {
                    // The publisher stopped: what it had queued goes with the channel.
                    c.in_flight = 0;
                }
                if !self.conn.channel_usable(ch) {
                    return;
                }
                self.send_returns(ch, done.returns);
                self.broker.traffic().confirmed(done.acks.len() as u64);
                for c in confirms(&done.acks, &done.nacks) {
                    let method = if c.ack {
                        basic::AMQPMethod::Ack(basic::Ack {
                            delivery_tag: c.tag,
                            multiple: c.multiple,
                        })
                    } else {
                        basic::AMQPMethod::Nack(basic::Nack {
                            delivery_tag: c.tag,
                            multiple: c.multiple,
                            requeue: false,
                        })
                    };
                    self.conn.method(ch, AMQPClass::Basic(method));
                }
                if let Some(e) = done.error {
                    self.fail(ch, e.during(60, 40)).await;
                }
            }
        }
    }

    /// Writes a consumer's deliveries (tags in order), or requeues them if the
    /// consumer or its channel went meanwhile.
    #[allow(clippy::needless_pass_by_value)] // the event's parts, taken apart
    pub(super) fn on_deliveries(
        &mut self,
        ch: u16,
        generation: u64,
        consumer: String,
        queue: String,
        messages: Vec<Delivery>,
        bytes: usize,
    ) {
        let channel = self
            .channels
            .get(&ch)
            .filter(|c| c.generation == generation);
        let found = channel.and_then(|c| c.consumers.get(&consumer).map(|k| (c, k)));
        let live = found
            .filter(|(c, _)| self.conn.channel_usable(ch) && c.state.flow())
            .map(|(_, k)| k.no_ack);
        let Some(no_ack) = live else {
            // Its channel or consumer went meanwhile, or flow was turned off: back
            // to the queue, and a consumer still there gets its credit back.
            let rewind = found.and_then(|(_, k)| k.rewind.clone());
            if let Some((c, k)) = found {
                let back =
                    c.state
                        .undelivered(&Arc::from(consumer.as_str()), k.no_ack, messages.len());
                self.give_credit(ch, &back);
            }
            self.credit.release(bytes);
            // A stream consumer still there reads them again; nothing was leased.
            if let Some(rewind) = rewind {
                rewind.undelivered(&messages);
                return;
            }
            let broker = self.broker.clone();
            self.tasks
                .spawn(async move { requeue(&broker, &queue, &messages).await });
            return;
        };
        // A tracking stream consumer's run of acks starts at its first delivery.
        if let Some(first) = messages
            .first()
            .and_then(|d| d.receipt.as_deref())
            .and_then(super::consumer::parse_tracking)
            .map(|(_, from, _)| from)
            && let Some(t) = self
                .channels
                .get_mut(&ch)
                .and_then(|c| c.consumers.get_mut(&consumer))
                .and_then(|k| k.tracking.as_mut())
        {
            t.delivered(first);
        }
        // Held until the socket takes these bytes.
        self.output.hold(bytes);
        let mut auto = Vec::new();
        let (queue_ref, consumer_ref): (Arc<str>, Arc<str>) =
            (queue.as_str().into(), consumer.as_str().into());
        // Counted as they are written (metrics), in the loop that writes them.
        let (mut delivered, mut redelivered) = (0u64, 0u64);
        let mode = DeliveryMode::of(true, no_ack);
        for d in &messages {
            let Ok(tag) = self.track(ch, &queue_ref, d, Some(&consumer_ref), no_ack) else {
                self.broker
                    .traffic()
                    .delivered(mode, delivered, redelivered);
                return;
            };
            delivered += 1;
            redelivered += u64::from(d.delivery_count > 1);
            let (exchange, routing_key, properties) = from_delivery(d, &queue);
            self.conn.method(
                ch,
                AMQPClass::Basic(basic::AMQPMethod::Deliver(basic::Deliver {
                    consumer_tag: ShortString::from(consumer.clone()),
                    delivery_tag: tag,
                    redelivered: d.delivery_count > 1,
                    exchange: exchange.into(),
                    routing_key: routing_key.into(),
                })),
            );
            self.conn.content(ch, properties, &d.body);
            if no_ack {
                auto.extend(d.receipt.clone());
            }
        }
        self.broker
            .traffic()
            .delivered(mode, delivered, redelivered);
        if !auto.is_empty() {
            self.settle_now(&queue, auto);
        }
    }

    /// A direct reply, holding `bytes` of credit, for this session's reply-to
    /// consumer on channel `ch` (dropped if that consumer went).
    pub(super) fn on_reply(
        &mut self,
        ch: u16,
        consumer: String,
        routing_key: String,
        properties: AMQPProperties,
        body: &Bytes,
        bytes: usize,
    ) {
        if self.write_reply(ch, consumer, routing_key, properties, body) {
            self.output.hold(bytes);
        } else {
            self.credit.release(bytes);
        }
    }

    /// Writes a direct reply; whether its consumer was still there.
    pub(super) fn write_reply(
        &mut self,
        ch: u16,
        consumer: String,
        routing_key: String,
        properties: AMQPProperties,
        body: &Bytes,
    ) -> bool {
        if !self.conn.channel_usable(ch) {
            return false;
        }
        let Some(c) = self.channels.get_mut(&ch) else {
            return false;
        };
        if c.reply_to.as_ref().is_none_or(|(_, t)| *t != consumer) {
            return false;
        }
        let tag = c.state.deliver_no_ack();
        self.conn.method(
            ch,
            AMQPClass::Basic(basic::AMQPMethod::Deliver(basic::Deliver {
                consumer_tag: ShortString::from(consumer),
                delivery_tag: tag,
                redelivered: false,
                exchange: ShortString::from(""),
                routing_key: ShortString::from(routing_key),
            })),
        );
        self.conn.content(ch, properties, body);
        true
    }
}
