//! The `queue` class: declare, bind, unbind, purge, delete, with the registry's
//! exclusive-queue rules.

use amq_protocol::protocol::{AMQPClass, queue};
use amq_protocol::types::{FieldTable, ShortString};
use weir_broker::access::Operation;
use weir_broker::{BrokerError, Declared, DestinationType};

use super::Session;
use super::common::{missing_is_fine, random_suffix, server_only};
use super::stream::{not_for_streams, stream_declare};
use crate::arguments::{binding, check_type_arguments, queue_options};
use crate::codes::{ACCESS_REFUSED, Exception, NOT_FOUND, PRECONDITION_FAILED};
use crate::registry::locked;

impl Session {
    /// The queue a method names, or the channel's last declared one for "".
    pub(super) fn queue_name(&mut self, ch: u16, name: &ShortString) -> Result<String, Exception> {
        if !name.as_str().is_empty() {
            return Ok(name.as_str().to_owned());
        }
        self.channel(ch)?.last_queue.clone().ok_or_else(|| {
            Exception::channel(
                NOT_FOUND,
                "no queue was declared on this channel (queue name is empty)",
            )
        })
    }

    /// The binding a `queue.bind` or `queue.unbind` names, once the queue (the
    /// channel's last one when unnamed) is this connection's to use.
    pub(super) fn queue_binding(
        &mut self,
        ch: u16,
        queue: &ShortString,
        exchange: &ShortString,
        routing_key: &ShortString,
        arguments: &FieldTable,
    ) -> Result<weir_broker::Binding, Exception> {
        let queue = self.queue_name(ch, queue)?;
        self.registry.check_access(&self.key(&queue)?, self.id)?;
        Ok(binding(
            exchange.as_str(),
            &queue,
            DestinationType::Queue,
            routing_key,
            arguments,
        ))
    }

    pub(super) async fn on_queue(
        &mut self,
        ch: u16,
        m: queue::AMQPMethod,
    ) -> Result<(), Exception> {
        match m {
            queue::AMQPMethod::Declare(d) => self.declare_queue(ch, d).await?,
            queue::AMQPMethod::Bind(b) => {
                let binding =
                    self.queue_binding(ch, &b.queue, &b.exchange, &b.routing_key, &b.arguments)?;
                if binding.source.is_empty() {
                    return Err(Exception::channel(
                        ACCESS_REFUSED,
                        "operation not permitted on the default exchange",
                    ));
                }
                self.allow_binding(&binding)?;
                self.broker.bind(binding).await.map_err(Exception::from)?;
                if !b.nowait {
                    self.conn.method(
                        ch,
                        AMQPClass::Queue(queue::AMQPMethod::BindOk(queue::BindOk {})),
                    );
                }
            }
            queue::AMQPMethod::Unbind(b) => {
                let binding =
                    self.queue_binding(ch, &b.queue, &b.exchange, &b.routing_key, &b.arguments)?;
                // As RabbitMQ 3.x: unbinding what is not there (the binding, its
                // queue, or its exchange, which may have gone auto-deleting with
                // another binding) is fine.
                self.allow_binding(&binding)?;
                missing_is_fine(self.broker.unbind(&binding).await)?;
                self.conn.method(
                    ch,
                    AMQPClass::Queue(queue::AMQPMethod::UnbindOk(queue::UnbindOk {})),
                );
            }
            queue::AMQPMethod::Purge(p) => {
                let queue = self.queue_name(ch, &p.queue)?;
                self.allow(Operation::Read, "queue", &queue)?;
                if self.broker.is_stream(&queue) {
                    return Err(not_for_streams("purge", &queue));
                }
                self.registry.check_access(&self.key(&queue)?, self.id)?;
                let count = self.broker.purge(&queue).await.map_err(Exception::from)?;
                if !p.nowait {
                    self.conn.method(
                        ch,
                        AMQPClass::Queue(queue::AMQPMethod::PurgeOk(queue::PurgeOk {
                            message_count: u32::try_from(count).unwrap_or(u32::MAX),
                        })),
                    );
                }
            }
            queue::AMQPMethod::Delete(d) => self.delete_queue(ch, d).await?,
            other => return Err(server_only(&AMQPClass::Queue(other))),
        }
        Ok(())
    }

    /// `queue.declare`: passive, or declared with its options and claimed in the
    /// registry when exclusive; answers with its message and consumer counts.
    async fn declare_queue(&mut self, ch: u16, d: queue::Declare) -> Result<(), Exception> {
        let mut name = d.queue.as_str().to_owned();
        if d.passive {
            name = self.queue_name(ch, &d.queue)?;
            if self.broker.is_stream(&name) {
                return self.stream_declared(ch, name, d.nowait);
            }
            self.registry.check_access(&self.key(&name)?, self.id)?;
        } else if let Some(options) = stream_declare(&name, &d) {
            return self.declare_stream(ch, name, options?, d.nowait).await;
        } else {
            if name.starts_with("amq.") {
                return Err(Exception::channel(
                    ACCESS_REFUSED,
                    format!("queue name '{name}' contains reserved prefix 'amq.*'"),
                ));
            }
            if name.is_empty() {
                name = format!("amq.gen-{}", random_suffix());
            }
            self.allow(Operation::Configure, "queue", &name)?;
            check_type_arguments(&self.key(&name)?, &d.arguments)?;
            let mut options = queue_options(&d.arguments)?;
            if let Some(dlx) = &options.dead_letter_exchange {
                // As RabbitMQ: dead-lettering writes to the exchange and reads the queue.
                self.allow(Operation::Write, "exchange", dlx)?;
                self.allow(Operation::Read, "queue", &name)?;
            }
            // Stored with the queue: the broker deletes exclusive queues at
            // its next start, and auto-delete holds across restarts.
            options.exclusive = d.exclusive;
            options.auto_delete = d.auto_delete;
            options.transient = !d.durable;
            // Access is checked after: a queue that is new here (an owner's
            // queue deleted over HTTP, say) is nobody else's.
            let declared = match self.broker.declare(&name, options).await {
                Ok(declared) => declared,
                Err(e @ BrokerError::Conflict { .. }) => {
                    // As RabbitMQ (`assert_equivalence`): exclusive access
                    // first (405), then the other properties (406).
                    self.registry.check_access(&self.key(&name)?, self.id)?;
                    if let Ok(info) = self.broker.info(&name).await
                        && info.options.exclusive != d.exclusive
                    {
                        return Err(locked(&self.key(&name)?));
                    }
                    return Err(e.into());
                }
                Err(e) => return Err(e.into()),
            };
            self.registry.declared(
                &self.key(&name)?,
                self.id,
                declared == Declared::Existed,
                d.exclusive,
            )?;
        }
        let info = self.broker.info(&name).await.map_err(Exception::from)?;
        self.channel(ch)?.last_queue = Some(name.clone());
        // AMQP consumers, or waiting HTTP long polls if more.
        let consumers = info.stats.consumers.max(
            self.registry
                .consumer_count(&self.broker.full(&name).unwrap_or_default()) as u64,
        );
        if !d.nowait {
            self.conn.method(
                ch,
                AMQPClass::Queue(queue::AMQPMethod::DeclareOk(queue::DeclareOk {
                    queue: ShortString::from(name),
                    message_count: u32::try_from(info.stats.ready).unwrap_or(u32::MAX),
                    consumer_count: u32::try_from(consumers).unwrap_or(u32::MAX),
                })),
            );
        }
        Ok(())
    }

    /// `queue.delete`, with its `if-empty` / `if-unused` conditions; deleting what
    /// is not there is fine (RabbitMQ 3.x).
    async fn delete_queue(&mut self, ch: u16, d: queue::Delete) -> Result<(), Exception> {
        let queue = self.queue_name(ch, &d.queue)?;
        if self.broker.is_stream(&queue) {
            return self.delete_stream(ch, &queue, d.nowait).await;
        }
        self.allow(Operation::Configure, "queue", &queue)?;
        self.registry.check_access(&self.key(&queue)?, self.id)?;
        let count = match self.broker.info(&queue).await {
            Ok(info) => {
                if d.if_empty && info.stats.ready + info.stats.delayed > 0 {
                    return Err(Exception::channel(
                        PRECONDITION_FAILED,
                        format!("queue '{queue}' is not empty"),
                    ));
                }
                if d.if_unused
                    && (info.stats.consumers > 0
                        || self
                            .registry
                            .consumer_count(&self.broker.full(&queue).unwrap_or_default())
                            > 0)
                {
                    return Err(Exception::channel(
                        PRECONDITION_FAILED,
                        format!("queue '{queue}' in use"),
                    ));
                }
                missing_is_fine(self.broker.delete(&queue).await)?;
                info.stats.ready
            }
            // Deleting what is not there is fine (RabbitMQ 3.x).
            Err(BrokerError::NotFound { .. }) => 0,
            Err(e) => return Err(e.into()),
        };
        self.registry
            .forget_queue(&self.broker.full(&queue).unwrap_or_default());
        if !d.nowait {
            self.conn.method(
                ch,
                AMQPClass::Queue(queue::AMQPMethod::DeleteOk(queue::DeleteOk {
                    message_count: u32::try_from(count).unwrap_or(u32::MAX),
                })),
            );
        }
        Ok(())
    }
}
