//! One client connection: the handshake, then channels.
//!
//! One task per connection reads frames, runs the methods (most against the broker,
//! awaited in order, so a client sees its methods answered in the order it sent
//! them) and writes answers and deliveries. Two kinds of helper task feed it events:
//!
//! * a **publisher** per channel takes the channel's publishes in order and hands
//!   them to the broker in batches: everything a client pipelines while one batch
//!   is being made durable goes into the next (group commit from one channel), and
//!   confirms go back as one `basic.ack multiple` per batch;
//! * a **consumer** per `basic.consume` polls its queue for as many messages as
//!   its prefetch and the connection's byte credit allow and hands them over; the
//!   session gives them delivery tags and writes them.
//!
//! What the session writes is bounded ([`outflow`]): deliveries hold the
//! connection's byte credit (`[amqp] max_buffered_bytes`) until the socket takes
//! them, so a client that stops reading stops receiving and its messages stay in
//! their queues; the client is not read while too many answers to it wait; the
//! socket is written without waiting, and a peer that takes nothing for
//! `[amqp] write_timeout_ms` is closed.
//!
//! Messages delivered and not acked when their channel or connection goes are
//! requeued (their next delivery is `redelivered`).

mod consumer;
mod event;
mod outflow;
mod publisher;
mod replies;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;

use amq_protocol::protocol::basic::AMQPProperties;
use amq_protocol::protocol::{AMQPClass, basic, channel, confirm, exchange, queue, tx};
use amq_protocol::types::{AMQPValue, FieldTable, ShortString};
use bytes::Bytes;
use rustc_hash::FxHashMap;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use weir_broker::{
    Broker, BrokerError, Declared, Delivery, DestinationType, ExchangeOptions, ExchangeType,
    NackOptions, ReceiveRequest, UseGuard,
};

use crate::arguments::{binding, check_consume_arguments, check_type_arguments, queue_options};
use crate::channel::Tags;
use crate::codes::{
    self, ACCESS_REFUSED, CHANNEL_ERROR, COMMAND_INVALID, Exception, NOT_ALLOWED, NOT_FOUND,
    NOT_IMPLEMENTED, PRECONDITION_FAILED,
};
use crate::config::AmqpConfig;
use crate::connection::{Connection, Input, Publish as IncomingPublish, method_name};
use crate::message::from_delivery;
use crate::registry::{ConsumerId, QueueFlags, Registry, locked};
use consumer::{ConsumerTask, DELIVERY_FRAMING, Gates, consume_loop, requeue, wire_size};
use event::{Event, Publish};
use outflow::{Credit, Output};
use publisher::{Job, channel_worker, queue_publishes};
pub(crate) use replies::Replies;
use replies::{REPLY_TO, ReplyConsumer};

struct Consumer {
    queue: String,
    no_ack: bool,
    /// Its prefetch credit (none: unlimited).
    credit: Option<Arc<Semaphore>>,
    stop: CancellationToken,
    /// Keeps its queue from expiring (`x-expires`) while it consumes.
    _use: Option<UseGuard>,
}

/// `channel.flow`: whether the channel's consumers may receive. A `Default`
/// wrapper, so `Channel` stays `Default`.
struct Flow(watch::Sender<bool>);

impl Default for Flow {
    fn default() -> Flow {
        Flow(watch::channel(true).0)
    }
}

/// A delivery waiting for its ack.
struct Unacked {
    /// Shared by every delivery of a batch: no allocation per message.
    queue: Arc<str>,
    receipt: String,
    consumer: Option<Arc<str>>,
    /// When it was handed out, for the consumer timeout.
    delivered_at: Instant,
}

#[derive(Default)]
struct Channel {
    confirm: bool,
    next_seq: u64,
    tx: bool,
    /// Publishes and acks held until `tx.commit`.
    tx_publishes: Vec<Publish>,
    tx_acks: Vec<(u64, bool)>,
    /// The channel's worker: publishes and settlements, in order.
    publisher: Option<mpsc::Sender<Vec<Job>>>,
    /// Jobs read in this round, handed to the worker after it.
    pending: Vec<Job>,
    /// Ordered jobs (publishes, nacks) handed to the worker and not yet done.
    in_flight: usize,
    consumers: HashMap<String, Consumer>,
    /// Prefetch for consumers started from now on (`basic.qos` global = false).
    prefetch: u16,
    /// Channel-wide prefetch (`global = true`), shared by its consumers.
    shared_credit: Option<Arc<Semaphore>>,
    /// Delivery tags and the deliveries waiting for their ack.
    tags: Tags<Unacked>,
    /// For `basic.consume` / `queue.bind` with an empty queue name.
    last_queue: Option<String>,
    /// This channel's direct reply-to consumer: its token and consumer tag.
    reply_to: Option<(String, String)>,
    flow: Flow,
    /// Tells this channel from earlier ones with the same number (see `Event`).
    generation: u64,
}

/// Runs one connection to its end.
pub(crate) async fn run(
    stream: TcpStream,
    peer: SocketAddr,
    broker: Broker,
    config: Arc<AmqpConfig>,
    replies: Arc<Replies>,
    registry: Arc<Registry>,
) {
    let _ = stream.set_nodelay(true);
    let (read, write) = stream.into_split();
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let mut session = Session {
        peer,
        credit: Arc::new(Credit::new(config.max_buffered_bytes)),
        output: Output::default(),
        input_waiting: false,
        alarms: broker.alarms(),
        published: false,
        generations: 0,
        broker,
        conn: Connection::new(config.clone(), peer, now()),
        config,
        read,
        write,
        channels: FxHashMap::default(),
        events_tx,
        events_rx,
        id: registry.connection_id(),
        registry,
        stop: CancellationToken::new(),
        replies,
    };
    session.serve().await;
    session.cleanup().await;
    session.linger().await;
}

/// How long a connection closed by the close handshake stays readable for frames
/// its peer sent before it read `close-ok` (as long as a server close waits for
/// its `close-ok`).
const LINGER: std::time::Duration = std::time::Duration::from_secs(2);

/// The shell around one [`Connection`]: the socket, the broker, the helper tasks.
struct Session {
    peer: SocketAddr,
    broker: Broker,
    /// Bytes of deliveries taken from the broker and not yet written, shared by
    /// this connection's consumers (and direct replies to it).
    credit: Arc<Credit>,
    /// What waits between the outbox and the socket.
    output: Output,
    /// Input is buffered that was not handled yet: reading stopped because too
    /// many answers wait for the client.
    input_waiting: bool,
    config: Arc<AmqpConfig>,
    read: tokio::net::tcp::OwnedReadHalf,
    write: OwnedWriteHalf,
    /// The protocol: handshake, limits, heartbeats, closes, content assembly.
    conn: Connection,
    /// What the broker side keeps of each open channel. Looked up several times per
    /// message; channel numbers are at most `channel_max`, so a fast unkeyed hash.
    channels: FxHashMap<u16, Channel>,
    events_tx: mpsc::UnboundedSender<Event>,
    events_rx: mpsc::UnboundedReceiver<Event>,
    /// Exclusive queues, auto-delete queues and consumers of every connection.
    registry: Arc<Registry>,
    /// This connection's number in the registry.
    id: u64,
    /// Stops the helper tasks.
    stop: CancellationToken,
    /// Direct reply-to consumers of all connections.
    replies: Arc<Replies>,
    /// The broker's resource alarms: while one is raised, a connection that
    /// publishes is not read from (and is told with `connection.blocked`).
    alarms: tokio::sync::watch::Receiver<weir_broker::Alarms>,
    /// This connection has published: an alarm blocks it.
    published: bool,
    /// Channels opened so far (each gets the next number as its generation).
    generations: u64,
}

fn now() -> std::time::Instant {
    std::time::Instant::now()
}

type Io<T> = std::io::Result<T>;

impl Session {
    /// Writes what the socket takes now (never waits). An error: the connection is
    /// broken.
    async fn flush(&mut self) -> Io<()> {
        self.output
            .flush(
                self.conn.outbox(),
                &self.write,
                &self.credit,
                Instant::now(),
            )
            .await
    }

    /// The connection's loop: input, events from the helper tasks, timers and the
    /// socket's room for output, until the connection is done or its peer stops
    /// taking what it is sent.
    #[allow(clippy::too_many_lines)] // one select, read top to bottom
    async fn serve(&mut self) {
        let shutdown = self.config.shutdown.clone();
        let write_timeout = self.config.write_timeout;
        let mut shutting_down = false;
        let mut consumer_timeouts = self.config.consumer_timeout_check().map(|every| {
            let mut interval = tokio::time::interval_at(Instant::now() + every, every);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            interval
        });
        while !self.conn.is_done() {
            let wake = self.conn.next_tick().map(Instant::from_std);
            // RabbitMQ's rule: an alarm blocks connections that publish; the others
            // (consumers) go on.
            let reason = self.alarms.borrow().reason();
            let blocked = self.published && reason.is_some();
            if blocked {
                self.conn.set_blocked(reason);
            }
            // A client that does not take its answers is not read (its input would
            // only make more of them); a silent peer then is not a dead one.
            let paused = blocked || self.output.backed_up(self.credit.cap());
            self.conn.pause_reading(paused, now());
            let stalled = self.output.deadline(write_timeout);
            tokio::select! {
                biased;
                () = shutdown.cancelled(), if !shutting_down => {
                    shutting_down = true;
                    self.conn.close(&Exception::connection(codes::CONNECTION_FORCED, "broker shutdown"), now());
                }
                // The socket has room again: the flush below writes.
                writable = self.write.writable(), if self.output.blocked => {
                    if writable.is_err() {
                        return;
                    }
                    self.output.blocked = false;
                }
                () = tokio::time::sleep_until(stalled.unwrap_or_else(Instant::now)), if stalled.is_some() => {
                    tracing::info!(
                        peer = %self.peer,
                        write_timeout_ms = write_timeout.as_millis(),
                        "AMQP peer took nothing of what it was sent for the write timeout; closing"
                    );
                    return;
                }
                Some(event) = self.events_rx.recv() => {
                    self.on_event(event).await;
                    while let Ok(event) = self.events_rx.try_recv() {
                        self.on_event(event).await;
                    }
                }
                _ = async { consumer_timeouts.as_mut().expect("checked by the guard").tick().await }, if consumer_timeouts.is_some() => {
                    self.check_consumer_timeouts().await;
                }
                Ok(()) = self.alarms.changed() => {
                    if self.alarms.borrow_and_update().reason().is_none() {
                        self.conn.set_blocked(None);
                    }
                }
                // Input read earlier and left once too many answers waited.
                () = std::future::ready(()), if self.input_waiting && !paused => {
                    self.on_input().await;
                }
                read = self.read.read_buf(self.conn.input_buffer()), if !paused => {
                    match read {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            self.output.answering(n);
                            self.conn.received(now());
                        }
                    }
                    self.on_input().await;
                }
                () = tokio::time::sleep_until(wake.unwrap_or_else(Instant::now)), if wake.is_some() => {
                    let _ = self.conn.tick(now());
                }
            }
            if self.conn.is_closing() && !self.stop.is_cancelled() {
                // The connection is closing: nothing more is delivered.
                self.stop.cancel();
            }
            if !self.output.blocked && self.flush().await.is_err() {
                return;
            }
        }
        self.flush_last(write_timeout).await;
    }

    /// After a close handshake: the peer may have sent more frames (publishes
    /// queued behind its `connection.close`) before it read `close-ok`. Closing
    /// the socket on them unread would answer with a reset, and the peer could
    /// lose the `close-ok` and fail its next write (amqplib then never calls its
    /// close callback). As RabbitMQ: send our FIN, then read and drop what comes
    /// until the peer closes too, for at most [`LINGER`].
    async fn linger(&mut self) {
        if !self.conn.is_done() {
            return;
        }
        let _ = tokio::io::AsyncWriteExt::shutdown(&mut self.write).await;
        let deadline = Instant::now() + LINGER;
        let mut scratch = vec![0u8; 16 << 10];
        while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, self.read.read(&mut scratch)).await
        {
            if n == 0 {
                return;
            }
        }
    }

    /// The connection is done: what is left for the peer (its `close-ok`, say) goes
    /// out if it takes it within the write timeout.
    async fn flush_last(&mut self, write_timeout: std::time::Duration) {
        loop {
            if self.flush().await.is_err() || self.conn.outbox().is_empty() {
                return;
            }
            let Some(stalled) = self.output.deadline(write_timeout) else {
                return;
            };
            tokio::select! {
                writable = self.write.writable() => if writable.is_err() { return },
                () = tokio::time::sleep_until(stalled) => return,
            }
            self.output.blocked = false;
        }
    }

    /// Runs what the connection made of the input, then hands the publishes to
    /// their channels' workers.
    async fn on_input(&mut self) {
        self.input_waiting = false;
        while let Some(input) = self.conn.poll(now()) {
            match input {
                Input::Opened | Input::Closed => {}
                Input::ChannelOpened(ch) => {
                    self.generations += 1;
                    self.channels.insert(
                        ch,
                        Channel {
                            next_seq: 1,
                            generation: self.generations,
                            ..Channel::default()
                        },
                    );
                }
                Input::Method(ch, class) => {
                    let ids = (class.get_amqp_class_id(), class.get_amqp_method_id());
                    if let Err(e) = self.on_channel_method(ch, *class).await {
                        self.fail(ch, e.during(ids.0, ids.1)).await;
                    }
                }
                Input::Publish(ch, publish) => {
                    self.published = true;
                    if let Err(e) = self.on_publish(ch, *publish) {
                        self.fail(ch, e.during(60, 40)).await;
                    }
                }
                Input::ChannelClosing(ch) => self.release_channel(ch).await,
                Input::ChannelClosed(ch) => {
                    self.publishes_done(ch).await;
                    self.drop_channel(ch).await;
                }
            }
            if self.output.backed_up(self.credit.cap()) {
                // Answers (gets, say) pile up: the rest waits until the client has
                // taken some.
                self.input_waiting = true;
                break;
            }
        }
        // What came before an error (or the client's close) still counts.
        self.hand_over_publishes().await;
    }

    /// Raises `e` on channel `ch`: closes the channel (releasing what it holds) or
    /// the connection.
    async fn fail(&mut self, ch: u16, e: Exception) {
        // Publishes read before the failing method still count.
        self.hand_over(ch).await;
        if e.connection {
            self.conn.close(&e, now());
            // Nothing more is delivered on a closing connection.
            self.stop.cancel();
        } else {
            self.conn.close_channel(ch, &e);
            self.release_channel(ch).await;
        }
    }

    /// Closes, as RabbitMQ's `consumer_timeout` does, every channel holding a
    /// delivery unacked for longer than the timeout (406 PRECONDITION_FAILED); the
    /// close requeues its deliveries.
    async fn check_consumer_timeouts(&mut self) {
        let Some(timeout) = self.config.consumer_timeout else {
            return;
        };
        let now = Instant::now();
        let late: Vec<u16> = self
            .channels
            .iter()
            .filter(|(_, c)| {
                c.tags
                    .oldest()
                    .is_some_and(|u| now.saturating_duration_since(u.delivered_at) > timeout)
            })
            .map(|(ch, _)| *ch)
            .collect();
        for ch in late {
            let ms = timeout.as_millis();
            tracing::warn!(peer = %self.peer, channel = ch, timeout_ms = ms, "a delivery was not acknowledged within the consumer timeout; closing its channel");
            let e = Exception::channel(
                PRECONDITION_FAILED,
                format!(
                    "delivery acknowledgement on channel {ch} timed out. Timeout value used: \
                     {ms} ms. This timeout value can be configured, see consumers doc guide to \
                     learn more"
                ),
            );
            self.fail(ch, e).await;
        }
    }

    fn channel(&mut self, ch: u16) -> Result<&mut Channel, Exception> {
        self.channels.get_mut(&ch).ok_or_else(|| {
            Exception::connection(CHANNEL_ERROR, format!("channel {ch} is not open"))
        })
    }

    #[allow(clippy::too_many_lines)] // one arm per method
    async fn on_channel_method(&mut self, ch: u16, class: AMQPClass) -> Result<(), Exception> {
        self.channel(ch)?;
        // A channel's methods take effect in order: what it published before this
        // method is in its queues before the method runs (a passive declare counts
        // it, a get finds it). Publishes and acks themselves need not wait.
        let ordered = !matches!(
            class,
            AMQPClass::Basic(
                basic::AMQPMethod::Ack(_)
                    | basic::AMQPMethod::Nack(_)
                    | basic::AMQPMethod::Reject(_)
            )
        );
        if ordered {
            self.publishes_done(ch).await;
            // One of those publishes may have closed the channel: this method is
            // then ignored, as everything after a channel.close is.
            if !self.conn.channel_usable(ch) {
                return Ok(());
            }
        }
        match class {
            AMQPClass::Channel(channel::AMQPMethod::Flow(flow)) => {
                // The client pauses (or resumes) deliveries to its consumers on this
                // channel; what is already on its way is requeued.
                self.channel(ch)?.flow.0.send_replace(flow.active);
                self.conn.method(
                    ch,
                    AMQPClass::Channel(channel::AMQPMethod::FlowOk(channel::FlowOk {
                        active: flow.active,
                    })),
                );
            }
            AMQPClass::Exchange(m) => self.on_exchange(ch, m).await?,
            AMQPClass::Queue(m) => self.on_queue(ch, m).await?,
            AMQPClass::Basic(m) => self.on_basic(ch, m).await?,
            AMQPClass::Confirm(confirm::AMQPMethod::Select(select)) => {
                let c = self.channel(ch)?;
                if c.tx {
                    return Err(Exception::channel(
                        PRECONDITION_FAILED,
                        "a transactional channel cannot be put in confirm mode",
                    ));
                }
                c.confirm = true;
                if !select.nowait {
                    self.conn.method(
                        ch,
                        AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(confirm::SelectOk {})),
                    );
                }
            }
            AMQPClass::Tx(m) => self.on_tx(ch, m).await?,
            other => return Err(server_only(&other)),
        }
        Ok(())
    }

    #[allow(clippy::too_many_lines)] // one arm per method
    async fn on_exchange(&mut self, ch: u16, m: exchange::AMQPMethod) -> Result<(), Exception> {
        match m {
            exchange::AMQPMethod::Declare(d) => {
                let name = d.exchange.as_str();
                if d.passive {
                    self.broker.exchange(name).map_err(Exception::from)?;
                } else {
                    if name.is_empty()
                        || (name.starts_with("amq.") && !weir_broker::routing::is_built_in(name))
                    {
                        return Err(Exception::channel(
                            ACCESS_REFUSED,
                            format!("exchange name '{name}' contains reserved prefix 'amq.*'"),
                        ));
                    }
                    let kind = match d.kind.as_str() {
                        "direct" => ExchangeType::Direct,
                        "topic" => ExchangeType::Topic,
                        "fanout" => ExchangeType::Fanout,
                        "headers" => ExchangeType::Headers,
                        other => {
                            return Err(Exception::connection(
                                COMMAND_INVALID,
                                format!("unknown exchange type '{other}'"),
                            ));
                        }
                    };
                    let alternate =
                        d.arguments
                            .inner()
                            .get("alternate-exchange")
                            .and_then(|v| match v {
                                AMQPValue::LongString(s) => {
                                    std::str::from_utf8(s.as_bytes()).ok().map(str::to_owned)
                                }
                                AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
                                _ => None,
                            });
                    let options = ExchangeOptions {
                        kind,
                        durable: d.durable,
                        auto_delete: d.auto_delete,
                        alternate_exchange: alternate,
                        internal: d.internal,
                    };
                    self.broker
                        .declare_exchange(name, options)
                        .await
                        .map_err(Exception::from)?;
                }
                if !d.nowait {
                    self.conn.method(
                        ch,
                        AMQPClass::Exchange(exchange::AMQPMethod::DeclareOk(
                            exchange::DeclareOk {},
                        )),
                    );
                }
            }
            exchange::AMQPMethod::Delete(d) => {
                missing_is_fine(
                    self.broker
                        .delete_exchange(d.exchange.as_str(), d.if_unused)
                        .await,
                )?;
                if !d.nowait {
                    self.conn.method(
                        ch,
                        AMQPClass::Exchange(exchange::AMQPMethod::DeleteOk(exchange::DeleteOk {})),
                    );
                }
            }
            exchange::AMQPMethod::Bind(b) => {
                let binding = binding(
                    b.source.as_str(),
                    b.destination.as_str(),
                    DestinationType::Exchange,
                    &b.routing_key,
                    &b.arguments,
                );
                self.broker.bind(binding).await.map_err(Exception::from)?;
                if !b.nowait {
                    self.conn.method(
                        ch,
                        AMQPClass::Exchange(exchange::AMQPMethod::BindOk(exchange::BindOk {})),
                    );
                }
            }
            exchange::AMQPMethod::Unbind(b) => {
                let binding = binding(
                    b.source.as_str(),
                    b.destination.as_str(),
                    DestinationType::Exchange,
                    &b.routing_key,
                    &b.arguments,
                );
                missing_is_fine(self.broker.unbind(&binding).await)?;
                if !b.nowait {
                    self.conn.method(
                        ch,
                        AMQPClass::Exchange(exchange::AMQPMethod::UnbindOk(exchange::UnbindOk {})),
                    );
                }
            }
            other => return Err(server_only(&AMQPClass::Exchange(other))),
        }
        Ok(())
    }

    /// The queue a method names, or the channel's last declared one for "".
    fn queue_name(&mut self, ch: u16, name: &ShortString) -> Result<String, Exception> {
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
    fn queue_binding(
        &mut self,
        ch: u16,
        queue: &ShortString,
        exchange: &ShortString,
        routing_key: &ShortString,
        arguments: &FieldTable,
    ) -> Result<weir_broker::Binding, Exception> {
        let queue = self.queue_name(ch, queue)?;
        self.registry.check_access(&queue, self.id)?;
        Ok(binding(
            exchange.as_str(),
            &queue,
            DestinationType::Queue,
            routing_key,
            arguments,
        ))
    }

    #[allow(clippy::too_many_lines)] // one arm per method
    async fn on_queue(&mut self, ch: u16, m: queue::AMQPMethod) -> Result<(), Exception> {
        match m {
            queue::AMQPMethod::Declare(d) => {
                let mut name = d.queue.as_str().to_owned();
                if d.passive {
                    name = self.queue_name(ch, &d.queue)?;
                    self.registry.check_access(&name, self.id)?;
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
                    check_type_arguments(&name, &d.arguments)?;
                    let mut options = queue_options(&d.arguments)?;
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
                            self.registry.check_access(&name, self.id)?;
                            if let Ok(info) = self.broker.info(&name).await
                                && info.options.exclusive != d.exclusive
                            {
                                return Err(locked(&name));
                            }
                            return Err(e.into());
                        }
                        Err(e) => return Err(e.into()),
                    };
                    self.registry.declared(
                        &name,
                        self.id,
                        declared == Declared::Existed,
                        d.exclusive,
                    )?;
                }
                let info = self.broker.info(&name).await.map_err(Exception::from)?;
                self.channel(ch)?.last_queue = Some(name.clone());
                // AMQP consumers, or waiting HTTP long polls if more.
                let consumers = info
                    .stats
                    .consumers
                    .max(self.registry.consumer_count(&name) as u64);
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
            }
            queue::AMQPMethod::Bind(b) => {
                let binding =
                    self.queue_binding(ch, &b.queue, &b.exchange, &b.routing_key, &b.arguments)?;
                if binding.source.is_empty() {
                    return Err(Exception::channel(
                        ACCESS_REFUSED,
                        "operation not permitted on the default exchange",
                    ));
                }
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
                missing_is_fine(self.broker.unbind(&binding).await)?;
                self.conn.method(
                    ch,
                    AMQPClass::Queue(queue::AMQPMethod::UnbindOk(queue::UnbindOk {})),
                );
            }
            queue::AMQPMethod::Purge(p) => {
                let queue = self.queue_name(ch, &p.queue)?;
                self.registry.check_access(&queue, self.id)?;
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
            queue::AMQPMethod::Delete(d) => {
                let queue = self.queue_name(ch, &d.queue)?;
                self.registry.check_access(&queue, self.id)?;
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
                                || self.registry.consumer_count(&queue) > 0)
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
                self.registry.forget_queue(&queue);
                if !d.nowait {
                    self.conn.method(
                        ch,
                        AMQPClass::Queue(queue::AMQPMethod::DeleteOk(queue::DeleteOk {
                            message_count: u32::try_from(count).unwrap_or(u32::MAX),
                        })),
                    );
                }
            }
            other => return Err(server_only(&AMQPClass::Queue(other))),
        }
        Ok(())
    }

    #[allow(clippy::too_many_lines)] // one arm per method
    async fn on_basic(&mut self, ch: u16, m: basic::AMQPMethod) -> Result<(), Exception> {
        match m {
            basic::AMQPMethod::Qos(q) => {
                let c = self.channel(ch)?;
                if q.global {
                    c.shared_credit = (q.prefetch_count > 0)
                        .then(|| Arc::new(Semaphore::new(usize::from(q.prefetch_count))));
                } else {
                    c.prefetch = q.prefetch_count;
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
            basic::AMQPMethod::Get(g) => {
                let queue = self.queue_name(ch, &g.queue)?;
                self.registry.check_access(&queue, self.id)?;
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
            }
            basic::AMQPMethod::Ack(a) => {
                if self.channel(ch)?.tx {
                    self.channel(ch)?.tx_acks.push((a.delivery_tag, a.multiple));
                    return Ok(());
                }
                let taken = self.take_tags(ch, a.delivery_tag, a.multiple)?;
                tracing::trace!(
                    channel = ch,
                    tag = a.delivery_tag,
                    taken = taken.len(),
                    "basic.ack"
                );
                self.settle(ch, taken, None);
            }
            basic::AMQPMethod::Nack(n) => {
                let taken = self.take_tags(ch, n.delivery_tag, n.multiple)?;
                self.settle(ch, taken, Some(n.requeue));
            }
            basic::AMQPMethod::Reject(r) => {
                let taken = self.take_tags(ch, r.delivery_tag, false)?;
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

    fn recover(&mut self, ch: u16, requeue: bool) -> Result<(), Exception> {
        if !requeue {
            return Err(Exception::channel(
                NOT_IMPLEMENTED,
                "basic.recover with requeue=false is not supported",
            ));
        }
        let c = self.channel(ch)?;
        let all = c.tags.take_all();
        let taken = self.release_credit(ch, all);
        self.settle(ch, taken, Some(true));
        Ok(())
    }

    async fn consume(&mut self, ch: u16, c: basic::Consume) -> Result<(), Exception> {
        if c.queue.as_str() == REPLY_TO {
            return self.consume_replies(ch, &c);
        }
        // As RabbitMQ: the tag and the channel's room are checked before the queue.
        let tag = consumer_tag(&c.consumer_tag);
        self.consumer_room(ch, &tag)?;
        let queue = self.queue_name(ch, &c.queue)?;
        self.registry.check_access(&queue, self.id)?;
        // The queue must exist now (404 otherwise).
        let info = self.broker.info(&queue).await.map_err(Exception::from)?;
        check_consume_arguments(&queue, &c.arguments)?;
        let stop = self.stop.child_token();
        let channel = self.channel(ch)?;
        let flow = channel.flow.0.subscribe();
        let credit = (!c.no_ack && channel.prefetch > 0)
            .then(|| Arc::new(Semaphore::new(usize::from(channel.prefetch))));
        let shared = if c.no_ack {
            None
        } else {
            channel.shared_credit.clone()
        };
        let active = self.registry.add_consumer(
            &queue,
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
        self.channel(ch)?.consumers.insert(
            tag.clone(),
            Consumer {
                queue: queue.clone(),
                no_ack: c.no_ack,
                credit: credit.clone(),
                stop: stop.clone(),
                _use: hold,
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
        tokio::spawn(consume_loop(ConsumerTask {
            broker: self.broker.clone(),
            queue,
            channel: ch,
            generation: self.channel(ch)?.generation,
            consumer: tag,
            credit,
            shared,
            bytes: self.credit.clone(),
            stop,
            gates: Gates { flow, active },
            events: self.events_tx.clone(),
            lease_ms: self.config.lease_ms(),
        }));
        Ok(())
    }

    /// Refuses a consumer tag in use on channel `ch`, and a consumer over
    /// `[amqp] max_consumers_per_channel`: both with 530 `NOT_ALLOWED`, a connection
    /// exception, as RabbitMQ 3.12+ does (`consumer_max_per_channel`,
    /// `rabbit_channel.erl`). The direct reply-to consumer is not counted, as there.
    fn consumer_room(&mut self, ch: u16, tag: &str) -> Result<(), Exception> {
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
    fn consume_replies(&mut self, ch: u16, c: &basic::Consume) -> Result<(), Exception> {
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

    /// Gives a delivery its tag and remembers it until acked (unless `no_ack`).
    fn track(
        &mut self,
        ch: u16,
        queue: &Arc<str>,
        d: &Delivery,
        consumer: Option<&Arc<str>>,
        no_ack: bool,
    ) -> Result<u64, Exception> {
        let pending = (!no_ack).then(|| Unacked {
            queue: queue.clone(),
            receipt: d.receipt.clone().unwrap_or_default(),
            consumer: consumer.cloned(),
            delivered_at: Instant::now(),
        });
        Ok(self.channel(ch)?.tags.track(pending))
    }

    /// Removes the deliveries `tag` names (see [`Tags::take`]) and gives their
    /// consumers their credit back.
    fn take_tags(
        &mut self,
        ch: u16,
        tag: u64,
        multiple: bool,
    ) -> Result<Vec<(u64, Unacked)>, Exception> {
        let taken = self.channel(ch)?.tags.take(tag, multiple)?;
        Ok(self.release_credit(ch, taken))
    }

    fn release_credit(&mut self, ch: u16, taken: Vec<(u64, Unacked)>) -> Vec<(u64, Unacked)> {
        if let Some(c) = self.channels.get(&ch) {
            for (_, u) in &taken {
                if let Some(consumer) = u.consumer.as_deref().and_then(|t| c.consumers.get(t))
                    && let Some(credit) = &consumer.credit
                {
                    credit.add_permits(1);
                }
                if u.consumer.is_some()
                    && let Some(shared) = &c.shared_credit
                {
                    shared.add_permits(1);
                }
            }
        }
        taken
    }

    /// Acks (`requeue: None`) or nacks deliveries through the channel's worker, so
    /// they take effect before the channel's next ordered method.
    fn settle(&mut self, ch: u16, taken: Vec<(u64, Unacked)>, requeue: Option<bool>) {
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

    fn settle_now(&self, queue: &str, receipts: Vec<String>) {
        let broker = self.broker.clone();
        let queue = queue.to_owned();
        tokio::spawn(async move {
            if let Err(e) = broker.ack_unsynced(&queue, receipts).await {
                tracing::debug!(%queue, error = %e, "an AMQP ack failed");
            }
        });
    }

    /// Requeues deliveries now (a channel or connection going away).
    async fn requeue_now(&self, taken: Vec<(u64, Unacked)>) {
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

    async fn on_tx(&mut self, ch: u16, m: tx::AMQPMethod) -> Result<(), Exception> {
        match m {
            tx::AMQPMethod::Select(_) => {
                let c = self.channel(ch)?;
                if c.confirm {
                    return Err(Exception::channel(
                        PRECONDITION_FAILED,
                        "a channel in confirm mode cannot be made transactional",
                    ));
                }
                c.tx = true;
                self.conn
                    .method(ch, AMQPClass::Tx(tx::AMQPMethod::SelectOk(tx::SelectOk {})));
            }
            tx::AMQPMethod::Commit(_) => {
                let c = self.channel(ch)?;
                if !c.tx {
                    return Err(Exception::channel(
                        PRECONDITION_FAILED,
                        "channel is not transactional",
                    ));
                }
                let publishes = std::mem::take(&mut c.tx_publishes);
                let acks = std::mem::take(&mut c.tx_acks);
                // Everything published in the transaction is durable before
                // commit-ok; then its acks.
                let done = queue_publishes(&self.broker, publishes)
                    .await
                    .outcomes()
                    .await;
                if let Some(e) = done.error {
                    return Err(e);
                }
                self.send_returns(ch, done.returns);
                for (tag, multiple) in acks {
                    let taken = self.take_tags(ch, tag, multiple)?;
                    for (queue, receipts) in by_queue(taken) {
                        self.broker
                            .ack(&queue, receipts)
                            .await
                            .map_err(Exception::from)?;
                    }
                }
                self.conn
                    .method(ch, AMQPClass::Tx(tx::AMQPMethod::CommitOk(tx::CommitOk {})));
            }
            tx::AMQPMethod::Rollback(_) => {
                let c = self.channel(ch)?;
                if !c.tx {
                    return Err(Exception::channel(
                        PRECONDITION_FAILED,
                        "channel is not transactional",
                    ));
                }
                c.tx_publishes.clear();
                c.tx_acks.clear();
                self.conn.method(
                    ch,
                    AMQPClass::Tx(tx::AMQPMethod::RollbackOk(tx::RollbackOk {})),
                );
            }
            other => return Err(server_only(&AMQPClass::Tx(other))),
        }
        Ok(())
    }

    /// A whole publish: give it its sequence number and queue it.
    fn on_publish(&mut self, ch: u16, incoming: IncomingPublish) -> Result<(), Exception> {
        let c = self.channel(ch)?;
        let body = incoming.body;
        let seq = if c.confirm {
            let seq = c.next_seq;
            c.next_seq += 1;
            seq
        } else {
            0
        };
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
        if c.tx {
            c.tx_publishes.push(publish);
        } else {
            c.pending.push(Job::Publish(Box::new(publish)));
        }
        Ok(())
    }

    /// A reply to a direct reply-to address: straight to its consumer, confirmed at
    /// once; returned (if mandatory) when that consumer is gone.
    fn direct_reply(&mut self, ch: u16, token: &str, publish: Publish) {
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
    async fn hand_over_publishes(&mut self) {
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
    async fn hand_over(&mut self, ch: u16) {
        let Some(c) = self.channels.get_mut(&ch).filter(|c| !c.pending.is_empty()) else {
            return;
        };
        let jobs = std::mem::take(&mut c.pending);
        c.in_flight += jobs.iter().filter(|j| j.ordered()).count();
        let sender = c.publisher.get_or_insert_with(|| {
            let (tx, rx) = mpsc::channel(16);
            tokio::spawn(channel_worker(
                self.broker.clone(),
                (ch, c.generation),
                rx,
                self.events_tx.clone(),
            ));
            tx
        });
        let _ = sender.send(jobs).await;
    }

    /// Waits until everything channel `ch` published so far is done (handling other
    /// events meanwhile).
    async fn publishes_done(&mut self, ch: u16) {
        self.hand_over(ch).await;
        while self.channels.get(&ch).is_some_and(|c| c.in_flight > 0) {
            let Some(event) = self.events_rx.recv().await else {
                return;
            };
            Box::pin(self.on_event(event)).await;
        }
    }

    async fn on_event(&mut self, event: Event) {
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
                let acks = done.acks;
                if let Some(&last) = acks.last() {
                    // Batches settle in order and a batch all at once: one ack covers
                    // everything up to its last when nothing in it was refused.
                    let contiguous = acks.windows(2).all(|w| w[1] == w[0] + 1);
                    if contiguous && done.nacks.is_empty() {
                        self.conn.method(
                            ch,
                            AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack {
                                delivery_tag: last,
                                multiple: true,
                            })),
                        );
                    } else {
                        for tag in acks {
                            self.conn.method(
                                ch,
                                AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack {
                                    delivery_tag: tag,
                                    multiple: false,
                                })),
                            );
                        }
                    }
                }
                for tag in done.nacks {
                    self.conn.method(
                        ch,
                        AMQPClass::Basic(basic::AMQPMethod::Nack(basic::Nack {
                            delivery_tag: tag,
                            multiple: false,
                            requeue: false,
                        })),
                    );
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
    fn on_deliveries(
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
            .filter(|(c, _)| self.conn.channel_usable(ch) && *c.flow.0.borrow())
            .map(|(_, k)| k.no_ack);
        let Some(no_ack) = live else {
            // Its channel or consumer went meanwhile, or flow was turned off: back
            // to the queue, and a consumer still there gets its credit back.
            if let Some((c, k)) = found {
                for sem in [&k.credit, &c.shared_credit].into_iter().flatten() {
                    if !k.no_ack {
                        sem.add_permits(messages.len());
                    }
                }
            }
            self.credit.release(bytes);
            let broker = self.broker.clone();
            tokio::spawn(async move { requeue(&broker, &queue, &messages).await });
            return;
        };
        // Held until the socket takes these bytes.
        self.output.hold(bytes);
        let mut auto = Vec::new();
        let (queue_ref, consumer_ref): (Arc<str>, Arc<str>) =
            (queue.as_str().into(), consumer.as_str().into());
        for d in &messages {
            let Ok(tag) = self.track(ch, &queue_ref, d, Some(&consumer_ref), no_ack) else {
                return;
            };
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
        if !auto.is_empty() {
            self.settle_now(&queue, auto);
        }
    }

    /// A direct reply, holding `bytes` of credit, for this session's reply-to
    /// consumer on channel `ch` (dropped if that consumer went).
    fn on_reply(
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
    fn write_reply(
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
        let tag = c.tags.track(None);
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

    fn send_returns(&mut self, ch: u16, returns: Vec<Publish>) {
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

    /// Stops a channel's consumers and requeues what it has not acked.
    async fn release_channel(&mut self, ch: u16) {
        let Some(c) = self.channels.get_mut(&ch) else {
            return;
        };
        let unacked = c.tags.take_all();
        let consumers: Vec<(String, Consumer)> = c.consumers.drain().collect();
        if let Some((token, _)) = c.reply_to.take() {
            self.replies.lock().remove(&token);
        }
        let Some(c) = self.channels.get_mut(&ch) else {
            return;
        };
        c.pending.clear();
        c.tx_publishes.clear();
        // Its publisher finishes what it has and stops; nobody waits for it.
        c.publisher = None;
        c.in_flight = 0;
        for (_, consumer) in &consumers {
            consumer.stop.cancel();
        }
        // Requeued before the next single active consumer takes over, so it gets
        // them in order.
        self.requeue_now(unacked).await;
        for (tag, consumer) in consumers {
            self.end_consumer(ch, tag, consumer).await;
        }
    }

    async fn drop_channel(&mut self, ch: u16) {
        self.release_channel(ch).await;
        self.channels.remove(&ch);
    }

    /// A consumer is over: stops it and takes it out of the registry, which hands
    /// a single-active-consumer queue to the next consumer, and deletes an
    /// auto-delete queue whose last consumer this was.
    async fn end_consumer(&mut self, ch: u16, tag: String, consumer: Consumer) {
        consumer.stop.cancel();
        let id = ConsumerId {
            connection: self.id,
            channel: ch,
            tag,
        };
        if self.registry.remove_consumer(&consumer.queue, &id) {
            tracing::debug!(queue = %consumer.queue, "auto-delete queue lost its last consumer; deleting it");
            if let Err(e) = self.broker.delete(&consumer.queue).await {
                tracing::debug!(queue = %consumer.queue, error = %e, "deleting an auto-delete queue failed");
            }
            self.registry.forget_queue(&consumer.queue);
        }
    }

    /// The connection is over: requeue, stop the helpers, delete exclusive queues.
    async fn cleanup(&mut self) {
        let ids: Vec<u16> = self.channels.keys().copied().collect();
        for ch in ids {
            self.release_channel(ch).await;
        }
        self.channels.clear();
        self.stop.cancel();
        // Deliveries on their way to this session go back now, not after their
        // lease; consumers still running requeue what they cannot hand over.
        self.events_rx.close();
        while let Ok(event) = self.events_rx.try_recv() {
            if let Event::Deliveries {
                queue, messages, ..
            } = event
            {
                requeue(&self.broker, &queue, &messages).await;
            }
        }
        for queue in self.registry.release_connection(self.id) {
            if let Err(e) = self.broker.delete(&queue).await {
                tracing::debug!(%queue, error = %e, "deleting an exclusive queue failed");
            }
        }
    }
}

/// Groups deliveries' receipts by queue.
fn by_queue(taken: Vec<(u64, Unacked)>) -> BTreeMap<Arc<str>, Vec<String>> {
    let mut out: BTreeMap<Arc<str>, Vec<String>> = BTreeMap::new();
    for (_, u) in taken {
        if !u.receipt.is_empty() {
            out.entry(u.queue).or_default().push(u.receipt);
        }
    }
    out
}

/// A method only a server sends, received from the client.
fn server_only(class: &AMQPClass) -> Exception {
    Exception::connection(
        COMMAND_INVALID,
        format!("{} is not a method a client sends", method_name(class)),
    )
}

/// Deleting or unbinding what is not there is fine (RabbitMQ 3.x).
fn missing_is_fine(result: Result<(), BrokerError>) -> Result<(), Exception> {
    match result {
        Err(BrokerError::NotFound { .. }) | Ok(()) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The consumer tag asked for, or a generated one (`amq.ctag-…`) when empty.
fn consumer_tag(asked: &ShortString) -> String {
    if asked.as_str().is_empty() {
        format!("amq.ctag-{}", random_suffix())
    } else {
        asked.as_str().to_owned()
    }
}

/// 22 characters of randomness for generated names.
fn random_suffix() -> String {
    use std::hash::{BuildHasher, RandomState};
    let a = RandomState::new().hash_one(std::time::SystemTime::now());
    let b = RandomState::new().hash_one(a);
    format!("{a:016x}{b:06x}").chars().take(22).collect()
}
