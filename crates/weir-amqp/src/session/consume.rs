//! `basic.consume` and the end of a consumer: the registry's rules (exclusive,
//! single active, auto-delete), the consumer task's start, direct reply-to
//! consumers.

use std::sync::Arc;

use amq_protocol::protocol::{AMQPClass, basic};
use amq_protocol::types::ShortString;
use tokio::sync::Semaphore;
use weir_broker::access::Operation;
use weir_broker::metrics::{Held, Protocol};

use super::common::random_suffix;
use super::consumer::{ConsumerTask, Gates, Source, consume_loop};
use super::replies::{REPLY_TO, ReplyConsumer};
use super::{Consumer, Session};
use crate::arguments::check_consume_arguments;
use crate::codes::{Exception, NOT_ALLOWED, PRECONDITION_FAILED};
use crate::registry::{ConsumerId, QueueFlags};

impl Session {
    pub(super) async fn consume(&mut self, ch: u16, c: basic::Consume) -> Result<(), Exception> {
        if c.queue.as_str() == REPLY_TO {
            return self.consume_replies(ch, &c);
        }
        // As RabbitMQ: the tag and the channel's room are checked before the queue.
        let tag = consumer_tag(&c.consumer_tag);
        self.consumer_room(ch, &tag)?;
        let queue = self.queue_name(ch, &c.queue)?;
        self.allow(Operation::Read, "queue", &queue)?;
        if self.broker.is_stream(&queue) {
            return self.consume_stream(ch, &c, tag, queue);
        }
        self.registry.check_access(&self.key(&queue)?, self.id)?;
        // The queue must exist now (404 otherwise).
        let info = self.broker.info(&queue).await.map_err(Exception::from)?;
        check_consume_arguments(&self.key(&queue)?, &c.arguments)?;
        let stop = self.stop.child_token();
        let channel = self.channel(ch)?;
        let flow = channel.flow.0.subscribe();
        let wants = channel.state.consumer_credit(c.no_ack);
        let credit = wants
            .own
            .map(|prefetch| Arc::new(Semaphore::new(usize::from(prefetch))));
        let shared = if wants.shared {
            channel.shared_credit.clone()
        } else {
            None
        };
        let active = self.registry.add_consumer(
            &self.key(&queue)?,
            &ConsumerId {
                connection: self.id,
                channel: ch,
                tag: tag.clone(),
            },
            c.exclusive,
            QueueFlags {
                single_active: info.options.single_active_consumer,
                auto_delete: info.options.auto_delete,
            },
        )?;
        let hold = self.broker.hold(&queue).ok();
        let counted = self.front_ends.track(Protocol::Amqp, Held::Consumer);
        let listed = self.registered.consuming(&self.key(&queue)?, &tag);
        self.channel(ch)?.consumers.insert(
            tag.clone(),
            Consumer {
                queue: queue.clone(),
                no_ack: c.no_ack,
                credit: credit.clone(),
                stop: stop.clone(),
                _use: hold,
                tracking: None,
                rewind: None,
                _counted: counted,
                _listed: listed,
            },
        );
        if !c.nowait {
            self.conn.method(
                ch,
                AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(basic::ConsumeOk {
                    consumer_tag: ShortString::from(tag.clone()),
                })),
            );
        }
        let generation = self.channel(ch)?.generation;
        self.tasks.spawn(consume_loop(ConsumerTask {
            broker: self.broker.clone(),
            queue,
            channel: ch,
            generation,
            consumer: tag,
            credit,
            shared,
            bytes: self.credit.clone(),
            stop,
            gates: Gates {
                flow,
                active: Some(active),
            },
            events: self.events_tx.clone(),
            lease_ms: self.config.lease_ms(),
            source: Source::Queue,
        }));
        Ok(())
    }

    /// Refuses a consumer tag in use on channel `ch`, and a consumer over
    /// `[amqp] max_consumers_per_channel`: both with 530 `NOT_ALLOWED`, a connection
    /// exception, as RabbitMQ 3.12+ does (`consumer_max_per_channel`,
    /// `rabbit_channel.erl`). The direct reply-to consumer is not counted, as there.
    pub(super) fn consumer_room(&mut self, ch: u16, tag: &str) -> Result<(), Exception> {
        let max = self.config.max_consumers_per_channel;
        let channel = self.channel(ch)?;
        if channel.consumers.contains_key(tag) {
            return Err(Exception::connection(
                NOT_ALLOWED,
                format!("consumer tag '{tag}' is in use on channel {ch}"),
            ));
        }
        if channel.consumers.len() >= max {
            return Err(Exception::connection(
                NOT_ALLOWED,
                format!("reached maximum ({max}) of consumers per channel"),
            ));
        }
        Ok(())
    }

    /// A direct reply-to consumer: registered under a fresh token, no queue.
    pub(super) fn consume_replies(&mut self, ch: u16, c: &basic::Consume) -> Result<(), Exception> {
        if !c.no_ack {
            return Err(Exception::channel(
                PRECONDITION_FAILED,
                "reply consumer cannot acknowledge (consume amq.rabbitmq.reply-to with no-ack)",
            ));
        }
        let tag = consumer_tag(&c.consumer_tag);
        self.consumer_room(ch, &tag)?;
        let events = self.events_tx.clone();
        let credit = self.credit.clone();
        let channel = self.channel(ch)?;
        if channel.reply_to.is_some() {
            return Err(Exception::channel(
                PRECONDITION_FAILED,
                "this channel already has a reply consumer",
            ));
        }
        let token = format!("{}{}", random_suffix(), random_suffix());
        channel.reply_to = Some((token.clone(), tag.clone()));
        self.replies.lock().insert(
            token,
            ReplyConsumer {
                events,
                credit,
                channel: ch,
                consumer: tag.clone(),
            },
        );
        if !c.nowait {
            self.conn.method(
                ch,
                AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(basic::ConsumeOk {
                    consumer_tag: ShortString::from(tag),
                })),
            );
        }
        Ok(())
    }

    /// A consumer is over: stops it and takes it out of the registry, which hands
    /// a single-active-consumer queue to the next consumer, and deletes an
    /// auto-delete queue whose last consumer this was.
    pub(super) async fn end_consumer(&mut self, ch: u16, tag: String, consumer: Consumer) {
        consumer.stop.cancel();
        let id = ConsumerId {
            connection: self.id,
            channel: ch,
            tag,
        };
        if self
            .registry
            .remove_consumer(&self.broker.full(&consumer.queue).unwrap_or_default(), &id)
        {
            tracing::debug!(queue = %consumer.queue, "auto-delete queue lost its last consumer; deleting it");
            if let Err(e) = self.broker.delete(&consumer.queue).await {
                tracing::debug!(queue = %consumer.queue, error = %e, "deleting an auto-delete queue failed");
            }
            self.registry
                .forget_queue(&self.broker.full(&consumer.queue).unwrap_or_default());
        }
    }
}

/// The consumer tag asked for, or a generated one (`amq.ctag-…`) when empty.
pub(super) fn consumer_tag(asked: &ShortString) -> String {
    if asked.as_str().is_empty() {
        format!("amq.ctag-{}", random_suffix())
    } else {
        asked.as_str().to_owned()
    }
}
