//! The `basic` class except consume and publish: qos, cancel, get, ack, nack,
//! reject, recover; and how settled deliveries reach the broker (through the
//! channel's worker, in order).

use std::collections::BTreeMap;
use std::sync::Arc;

use amq_protocol::protocol::{AMQPClass, basic};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use weir_broker::access::Operation;
use weir_broker::metrics::DeliveryMode;
use weir_broker::{Delivery, NackOptions, ReceiveRequest};

use super::common::server_only;
use super::consumer::wire_size;
use super::publisher::Job;
use super::{Session, Unacked};
use crate::channel::{Acked, CreditBack, Qos, Settled};
use crate::codes::Exception;
use crate::message::from_delivery;

impl Session {
    pub(super) async fn on_basic(
        &mut self,
        ch: u16,
        m: basic::AMQPMethod,
    ) -> Result<(), Exception> {
        match m {
            basic::AMQPMethod::Qos(q) => {
                let c = self.channel(ch)?;
                if let Qos::Shared(limit) = c.state.qos(q.prefetch_count, q.global) {
                    c.shared_credit =
                        limit.map(|limit| Arc::new(Semaphore::new(usize::from(limit))));
                }
                self.conn.method(
                    ch,
                    AMQPClass::Basic(basic::AMQPMethod::QosOk(basic::QosOk {})),
                );
            }
            basic::AMQPMethod::Consume(c) => self.consume(ch, c).await?,
            basic::AMQPMethod::Cancel(cancel) => {
                let tag = cancel.consumer_tag.as_str().to_owned();
                let c = self.channel(ch)?;
                if c.reply_to.as_ref().is_some_and(|(_, t)| *t == tag)
                    && let Some((token, _)) = c.reply_to.take()
                {
                    self.replies.lock().remove(&token);
                }
                if let Some(consumer) = self.channel(ch)?.consumers.remove(&tag) {
                    self.end_consumer(ch, tag, consumer).await;
                }
                if !cancel.nowait {
                    self.conn.method(
                        ch,
                        AMQPClass::Basic(basic::AMQPMethod::CancelOk(basic::CancelOk {
                            consumer_tag: cancel.consumer_tag,
                        })),
                    );
                }
            }
            basic::AMQPMethod::Get(g) => self.get(ch, g).await?,
            basic::AMQPMethod::Ack(a) => {
                let Acked::Now(settled) =
                    self.channel(ch)?.state.ack(a.delivery_tag, a.multiple)?
                else {
                    // Held by the transaction.
                    return Ok(());
                };
                let taken = self.give_credit_for(ch, settled);
                tracing::trace!(
                    channel = ch,
                    tag = a.delivery_tag,
                    taken = taken.len(),
                    "basic.ack"
                );
                self.settle(ch, taken, None);
            }
            basic::AMQPMethod::Nack(n) => {
                let taken = self.settle_tags(ch, n.delivery_tag, n.multiple)?;
                self.settle(ch, taken, Some(n.requeue));
            }
            basic::AMQPMethod::Reject(r) => {
                let taken = self.settle_tags(ch, r.delivery_tag, false)?;
                self.settle(ch, taken, Some(r.requeue));
            }
            basic::AMQPMethod::Recover(r) => {
                self.recover(ch, r.requeue)?;
                self.conn.method(
                    ch,
                    AMQPClass::Basic(basic::AMQPMethod::RecoverOk(basic::RecoverOk {})),
                );
            }
            basic::AMQPMethod::RecoverAsync(r) => self.recover(ch, r.requeue)?,
            other => return Err(server_only(&AMQPClass::Basic(other))),
        }
        Ok(())
    }

    pub(super) fn recover(&mut self, ch: u16, requeue: bool) -> Result<(), Exception> {
        let all = self.channel(ch)?.state.recover(requeue)?;
        let taken = self.give_credit_for(ch, all);
        self.settle(ch, taken, Some(true));
        Ok(())
    }

    /// Gives a delivery its tag and remembers it until acked (unless `no_ack`).
    pub(super) fn track(
        &mut self,
        ch: u16,
        queue: &Arc<str>,
        d: &Delivery,
        consumer: Option<&Arc<str>>,
        no_ack: bool,
    ) -> Result<u64, Exception> {
        let state = &mut self.channel(ch)?.state;
        if no_ack {
            return Ok(state.deliver_no_ack());
        }
        let unacked = Unacked {
            queue: queue.clone(),
            receipt: d.receipt.clone().unwrap_or_default(),
            delivered_at: Instant::now(),
        };
        Ok(state.deliver(consumer.cloned(), unacked))
    }

    /// Settles the deliveries an ack or nack of `tag` names (see
    /// [`ChannelMachine::settle`](crate::channel::ChannelMachine::settle)) and
    /// gives their consumers their credit back.
    pub(super) fn settle_tags(
        &mut self,
        ch: u16,
        tag: u64,
        multiple: bool,
    ) -> Result<Vec<(u64, Unacked)>, Exception> {
        let settled = self.channel(ch)?.state.settle(tag, multiple)?;
        Ok(self.give_credit_for(ch, settled))
    }

    /// Gives back the credit settled deliveries held; returns them.
    fn give_credit_for(&self, ch: u16, settled: Settled<Unacked>) -> Vec<(u64, Unacked)> {
        self.give_credit(ch, &settled.credit);
        settled.deliveries
    }

    /// Adds the permits the machine says to the consumers' and the channel's
    /// prefetch semaphores (a consumer gone or without a prefetch gets none).
    pub(super) fn give_credit(&self, ch: u16, credit: &CreditBack) {
        let Some(c) = self.channels.get(&ch) else {
            return;
        };
        for (tag, n) in &credit.consumers {
            if let Some(consumer) = c.consumers.get(&**tag)
                && let Some(sem) = &consumer.credit
            {
                sem.add_permits(*n);
            }
        }
        if credit.shared > 0
            && let Some(shared) = &c.shared_credit
        {
            shared.add_permits(credit.shared);
        }
    }

    /// Acks (`requeue: None`) or nacks deliveries through the channel's worker, so
    /// they take effect before the channel's next ordered method.
    pub(super) fn settle(
        &mut self,
        ch: u16,
        mut taken: Vec<(u64, Unacked)>,
        requeue: Option<bool>,
    ) {
        self.track_settled(ch, &mut taken, requeue);
        let Some(c) = self.channels.get_mut(&ch) else {
            return;
        };
        for (queue, receipts) in by_queue(taken) {
            c.pending.push(Job::Settle {
                queue,
                receipts,
                requeue,
            });
        }
    }

    pub(super) fn settle_now(&self, queue: &str, receipts: Vec<String>) {
        let broker = self.broker.clone();
        let queue = queue.to_owned();
        self.tasks.spawn(async move {
            if let Err(e) = broker.ack_unsynced(&queue, receipts).await {
                tracing::debug!(%queue, error = %e, "an AMQP ack failed");
            }
        });
    }

    /// Requeues deliveries now (a channel or connection going away).
    pub(super) async fn requeue_now(&self, taken: Vec<(u64, Unacked)>) {
        for (queue, receipts) in by_queue(taken) {
            let options = NackOptions {
                requeue: true,
                delay_ms: Some(0),
            };
            if let Err(e) = self.broker.nack(&queue, receipts, options).await {
                tracing::debug!(%queue, error = %e, "requeueing unacked AMQP deliveries failed");
            }
        }
    }

    /// `basic.get`: one message (leased, or settled at once with `no-ack`) or
    /// `get-empty`.
    async fn get(&mut self, ch: u16, g: basic::Get) -> Result<(), Exception> {
        let queue = self.queue_name(ch, &g.queue)?;
        self.allow(Operation::Read, "queue", &queue)?;
        if self.broker.is_stream(&queue) {
            return Err(super::stream::not_for_streams("basic.get", &queue));
        }
        self.registry.check_access(&self.key(&queue)?, self.id)?;
        let got = self
            .broker
            .receive(
                &queue,
                ReceiveRequest {
                    max: 1,
                    wait_ms: 0,
                    visibility_timeout_ms: Some(self.config.lease_ms()),
                },
            )
            .await
            .map_err(Exception::from)?;
        let Some(d) = got.into_iter().next() else {
            self.conn.method(
                ch,
                AMQPClass::Basic(basic::AMQPMethod::GetEmpty(basic::GetEmpty {})),
            );
            return Ok(());
        };
        self.broker.traffic().delivered(
            DeliveryMode::of(false, g.no_ack),
            1,
            u64::from(d.delivery_count > 1),
        );
        let remaining = self.broker.info(&queue).await.map_or(0, |i| i.stats.ready);
        let tag = self.track(ch, &Arc::from(queue.as_str()), &d, None, g.no_ack)?;
        let (exchange, routing_key, properties) = from_delivery(&d, &queue);
        self.conn.method(
            ch,
            AMQPClass::Basic(basic::AMQPMethod::GetOk(basic::GetOk {
                delivery_tag: tag,
                redelivered: d.delivery_count > 1,
                exchange: exchange.into(),
                routing_key: routing_key.into(),
                message_count: u32::try_from(remaining).unwrap_or(u32::MAX),
            })),
        );
        self.output.answering(wire_size(&d));
        self.conn.content(ch, properties, &d.body);
        if g.no_ack {
            self.settle_now(&queue, vec![d.receipt.clone().unwrap_or_default()]);
        }
        Ok(())
    }
}

/// Groups deliveries' receipts by queue.
pub(super) fn by_queue(taken: Vec<(u64, Unacked)>) -> BTreeMap<Arc<str>, Vec<String>> {
    let mut out: BTreeMap<Arc<str>, Vec<String>> = BTreeMap::new();
    for (_, u) in taken {
        if !u.receipt.is_empty() {
            out.entry(u.queue).or_default().push(u.receipt);
        }
    }
    out
}
