//! One client connection: the shell around the [`Connection`] machine and one
//! [`ChannelMachine`] per channel.
//!
//! One task per connection reads frames, runs the methods (most against the broker,
//! awaited in order, so a client sees its methods answered in the order it sent
//! them) and writes answers and deliveries. The machines decide; the session does
//! what they say (broker calls, semaphores, frames). Two kinds of helper task feed
//! it events ([`event`]), all spawned on the session's `TaskTracker`:
//!
//! * a **publisher** per channel ([`publisher`]) takes the channel's publishes in
//!   order and hands them to the broker in batches: everything a client pipelines
//!   while one batch is being made durable goes into the next (group commit from
//!   one channel), and confirms go back as one `basic.ack multiple` per batch;
//! * a **consumer** per `basic.consume` ([`consumer`]) polls its queue for as many
//!   messages as its prefetch and the connection's byte credit allow and hands them
//!   over; the session gives them delivery tags and writes them.
//!
//! This file holds the loop (socket, events, timers), channel open and close, and
//! the connection's end. The methods live in one file per class:
//! [`channel_methods`] (ordering, `channel.flow`, `confirm.select`), [`exchange`],
//! [`queue`], [`basic`] (qos, cancel, get, ack, nack, reject, recover),
//! [`consume`], [`publish`], [`tx`]; what the helpers report is handled in
//! [`deliver`]; direct reply-to is [`replies`].
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

mod basic;
mod channel_methods;
mod common;
mod consume;
mod consumer;
mod deliver;
mod event;
mod exchange;
mod outflow;
mod permissions;
mod publish;
mod publisher;
mod queue;
mod replies;
mod stream;
mod tx;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use rustc_hash::{FxHashMap, FxHashSet};
use tokio::io::AsyncReadExt;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use weir_broker::access::Principal;
use weir_broker::connections::{ClientInfo, ConnectionFigures, Consuming, Registered};
use weir_broker::metrics::{FrontEnds, Held, Protocol, Tracked};
use weir_broker::{Broker, UseGuard, Vhost};

use crate::channel::ChannelMachine;
use crate::codes::{self, CHANNEL_ERROR, Exception, PRECONDITION_FAILED};
use crate::config::AmqpConfig;
use crate::connection::{Connection, Input};
use crate::registry::Registry;
use crate::socket::{ReadHalf, Socket, WriteHalf};
use consumer::requeue;
use event::{Event, Publish};
use outflow::{Credit, Output};
use publisher::Job;
pub(crate) use replies::Replies;

struct Consumer {
    queue: String,
    no_ack: bool,
    /// Its prefetch credit (none: unlimited).
    credit: Option<Arc<Semaphore>>,
    stop: CancellationToken,
    /// Keeps its queue from expiring (`x-expires`) while it consumes.
    _use: Option<UseGuard>,
    /// A stream consumer with server-side offset tracking: what it has acked.
    tracking: Option<stream::Tracking>,
    /// A stream consumer: where its task reads next if deliveries it read could
    /// not be written (flow turned off meanwhile), so none is skipped.
    rewind: Option<consumer::Rewind>,
    /// Counted while it consumes (metrics).
    _counted: Tracked,
    /// Listed with its connection while it consumes (`GET /api/connections`, the
    /// dashboard's queue page).
    _listed: Consuming,
}

/// `channel.flow` as the channel's consumer tasks see it (the machine decides it).
/// A `Default` wrapper, so `Channel` stays `Default`.
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
    /// When it was handed out, for the consumer timeout.
    delivered_at: Instant,
}

/// What the session keeps of one open channel: its protocol state (the machine)
/// and the shell around it (tasks, semaphores, names).
#[derive(Default)]
struct Channel {
    /// Delivery tags and unacked deliveries, confirms, the transaction, flow and
    /// prefetch: the channel's protocol, as plain data.
    state: ChannelMachine<Unacked, Publish>,
    /// The channel's worker: publishes and settlements, in order.
    publisher: Option<mpsc::Sender<Vec<Job>>>,
    /// Jobs read in this round, handed to the worker after it.
    pending: Vec<Job>,
    /// Ordered jobs (publishes, nacks) handed to the worker and not yet done.
    in_flight: usize,
    consumers: HashMap<String, Consumer>,
    /// Channel-wide prefetch (`global = true`), shared by its consumers; there
    /// when the machine says so.
    shared_credit: Option<Arc<Semaphore>>,
    /// For `basic.consume` / `queue.bind` with an empty queue name.
    last_queue: Option<String>,
    /// This channel's direct reply-to consumer: its token and consumer tag.
    reply_to: Option<(String, String)>,
    flow: Flow,
    /// Tells this channel from earlier ones with the same number (see `Event`).
    generation: u64,
    /// Counted while it is open (metrics; `None` only in `Default`).
    _counted: Option<Tracked>,
}

/// Runs one connection to its end. `peer` is the TCP peer (a TLS connection's
/// too): the address logins are checked against.
pub(crate) async fn run(
    stream: Socket,
    peer: SocketAddr,
    broker: Broker,
    config: Arc<AmqpConfig>,
    replies: Arc<Replies>,
    registry: Arc<Registry>,
) {
    let (read, write) = stream.split();
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let mut session = Session {
        peer,
        user: None,
        writable: FxHashSet::default(),
        credit: Arc::new(Credit::new(config.max_buffered_bytes)),
        output: Output::default(),
        input_waiting: false,
        alarms: broker.alarms(),
        access_changes: broker.access().changes(),
        vhost_open: false,
        published: false,
        generations: 0,
        front_ends: broker.front_ends(),
        _counted: broker.front_ends().track(Protocol::Amqp, Held::Connection),
        registered: broker.connections().register(Protocol::Amqp, peer),
        broker: broker.default_vhost(),
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
        tasks: TaskTracker::new(),
        replies,
    };
    session.serve().await;
    session.cleanup().await;
    // The helpers are stopped (consumers) or finish what they hold (publishers,
    // requeues); the session ends once they have, while its socket lingers.
    let tasks = session.tasks.clone();
    tasks.close();
    let helpers = async {
        if tokio::time::timeout(HELPERS_BOUND, tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                %peer,
                running = tasks.len(),
                "an AMQP connection's helper tasks did not end in time; leaving them"
            );
        }
    };
    tokio::join!(session.linger(), helpers);
}

/// Longest a closed connection waits for its helper tasks (a publisher finishing
/// a batch waits for the broker's fsync; consumers stop at once).
const HELPERS_BOUND: std::time::Duration = std::time::Duration::from_secs(30);

/// How long a connection closed by the close handshake stays readable for frames
/// its peer sent before it read `close-ok` (as long as a server close waits for
/// its `close-ok`).
const LINGER: std::time::Duration = std::time::Duration::from_secs(2);

/// The shell around one [`Connection`]: the socket, the broker, the helper tasks.
struct Session {
    peer: SocketAddr,
    /// The broker as seen from this connection's vhost (`/` until
    /// `connection.open` picks one).
    broker: Vhost,
    /// Users, vhosts and permissions changed: the connection closes if its vhost
    /// or its user is gone (as RabbitMQ closes them).
    access_changes: watch::Receiver<u64>,
    /// `connection.open` accepted a vhost.
    vhost_open: bool,
    /// Who logged in (`None` until then).
    user: Option<Principal>,
    /// Exchanges the user may publish to, as found (see `session/permissions.rs`).
    writable: FxHashSet<String>,
    /// Bytes of deliveries taken from the broker and not yet written, shared by
    /// this connection's consumers (and direct replies to it).
    credit: Arc<Credit>,
    /// What waits between the outbox and the socket.
    output: Output,
    /// Input is buffered that was not handled yet: reading stopped because too
    /// many answers wait for the client.
    input_waiting: bool,
    config: Arc<AmqpConfig>,
    read: ReadHalf,
    write: WriteHalf,
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
    /// Every task this connection spawns (consumers, channel workers and their
    /// confirmers, requeues and no-ack settlements): none outlives the session
    /// unnoticed, so the listener's shutdown waits for them too.
    tasks: TaskTracker,
    /// Direct reply-to consumers of all connections.
    replies: Arc<Replies>,
    /// The broker's resource alarms: while one is raised, a connection that
    /// publishes is not read from (and is told with `connection.blocked`).
    alarms: tokio::sync::watch::Receiver<weir_broker::Alarms>,
    /// This connection has published: an alarm blocks it.
    published: bool,
    /// Channels opened so far (each gets the next number as its generation).
    generations: u64,
    /// The connection, channel and consumer counts of every front end (metrics).
    front_ends: Arc<FrontEnds>,
    /// This connection, counted while the session runs.
    _counted: Tracked,
    /// This connection, listed while the session runs (and closed from there).
    registered: Registered,
}

fn now() -> std::time::Instant {
    std::time::Instant::now()
}

type Io<T> = std::io::Result<T>;

impl Session {
    /// The registry's key for `queue` (its broker-wide name).
    fn key<'a>(&self, queue: &'a str) -> Result<std::borrow::Cow<'a, str>, Exception> {
        self.broker.full(queue).map_err(Exception::from)
    }

    /// Writes what the socket takes now (never waits). An error: the connection is
    /// broken.
    async fn flush(&mut self) -> Io<()> {
        self.output
            .flush(
                self.conn.outbox(),
                &mut self.write,
                &self.credit,
                Instant::now(),
            )
            .await
    }

    /// The connection's loop: input, events from the helper tasks, timers and the
    /// socket's room for output, until the connection is done or its peer stops
    /// taking what it is sent.
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
                Ok(()) = self.access_changes.changed() => self.check_still_allowed(),
                reason = self.registered.close_requested(), if !self.conn.is_closing() => {
                    tracing::info!(peer = %self.peer, %reason, "AMQP connection closed by an operator");
                    self.conn.close(&Exception::connection(codes::CONNECTION_FORCED, reason), now());
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
            self.report_figures(blocked);
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

    /// What this connection holds, for listings.
    fn report_figures(&self, blocked: bool) {
        let mut figures = ConnectionFigures {
            channels: self.channels.len() as u64,
            blocked,
            ..ConnectionFigures::default()
        };
        for c in self.channels.values() {
            figures.consumers += c.consumers.len() as u64;
            figures.prefetch += u64::from(c.state.prefetch());
            figures.unacked += c.state.unacked_count() as u64;
        }
        self.registered.figures(figures);
    }

    /// Checks `start-ok`'s credentials against the broker's users (off the runtime's
    /// workers, one check per core at a time: the first check of a password costs an
    /// argon2id hash) and answers
    /// the connection. A refusal waits `failed_login_delay` first and says no more
    /// than RabbitMQ does about why.
    async fn log_in(
        &mut self,
        mechanism: String,
        user: String,
        password: String,
        client: ClientInfo,
    ) {
        let name = user.clone();
        let access = self.broker.access();
        let checking = access.log_in(user, password, self.peer.ip());
        // Within the handshake's deadline: past it the connection's next tick closes
        // it, however many logins are queued for a password check.
        let Ok(checked) = tokio::time::timeout(self.config.handshake_timeout, checking).await
        else {
            return;
        };
        if let Ok(principal) = checked {
            self.registered.logged_in(&principal.name, client);
            self.user = Some(principal);
            self.conn.logged_in(None, now());
            return;
        }
        tracing::warn!(peer = %self.peer, user = %name, "AMQP login refused");
        tokio::time::sleep(self.config.failed_login_delay).await;
        self.conn.logged_in(
            Some(format!(
                "Login was refused using authentication mechanism {mechanism}. \
                 For details see the broker logfile."
            )),
            now(),
        );
    }

    /// Why the logged-in user may not open `vhost`, if it may not: an unknown
    /// vhost, or one it has no permissions in (RabbitMQ's texts).
    fn refuse_vhost(&self, vhost: &str) -> Option<String> {
        let Some(user) = &self.user else {
            return Some("not logged in".to_owned());
        };
        let access = self.broker.access();
        if !access.has_vhost(vhost) {
            return Some(format!("vhost {vhost} not found"));
        }
        access.check_vhost(user, vhost).err().map(|e| e.to_string())
    }

    /// After a change of users, vhosts or permissions: a connection whose vhost or
    /// user was deleted is closed with 320 `CONNECTION_FORCED`.
    fn check_still_allowed(&mut self) {
        let access = self.broker.access();
        let reason = if self.vhost_open && !access.has_vhost(self.broker.name()) {
            format!("vhost '{}' is deleted", self.broker.name())
        } else if let Some(user) = self.user.as_ref().filter(|u| !access.has_user(&u.name)) {
            format!("user '{}' is deleted", user.name)
        } else {
            return;
        };
        if !self.conn.is_closing() {
            tracing::info!(peer = %self.peer, %reason, "closing an AMQP connection");
            self.conn.close(
                &Exception::connection(codes::CONNECTION_FORCED, reason),
                now(),
            );
        }
    }

    /// Runs what the connection made of the input, then hands the publishes to
    /// their channels' workers.
    async fn on_input(&mut self) {
        self.input_waiting = false;
        while let Some(input) = self.conn.poll(now()) {
            match input {
                Input::Opened | Input::Closed => {}
                Input::Login {
                    mechanism,
                    user,
                    password,
                    client,
                } => self.log_in(mechanism, user, password, client).await,
                Input::OpenVhost(vhost) => {
                    let mut refused = self.refuse_vhost(&vhost);
                    if refused.is_none() {
                        match self.broker.broker().vhost(&vhost) {
                            Ok(view) => {
                                self.broker = view;
                                self.vhost_open = true;
                                self.registered.opened(&vhost);
                            }
                            Err(e) => refused = Some(e.to_string()),
                        }
                    }
                    self.conn.vhost_opened(refused, now());
                }
                Input::ChannelOpened(ch) => {
                    self.generations += 1;
                    self.channels.insert(
                        ch,
                        Channel {
                            generation: self.generations,
                            _counted: Some(self.front_ends.track(Protocol::Amqp, Held::Channel)),
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
                c.state
                    .oldest_unacked()
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

    /// Stops a channel's consumers and requeues what it has not acked.
    async fn release_channel(&mut self, ch: u16) {
        let Some(c) = self.channels.get_mut(&ch) else {
            return;
        };
        let unacked = c.state.close();
        let consumers: Vec<(String, Consumer)> = c.consumers.drain().collect();
        if let Some((token, _)) = c.reply_to.take() {
            self.replies.lock().remove(&token);
        }
        let Some(c) = self.channels.get_mut(&ch) else {
            return;
        };
        c.pending.clear();
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
        for key in self.registry.release_connection(self.id) {
            let queue = self.broker.local(&key);
            if let Err(e) = self.broker.delete(queue).await {
                tracing::debug!(%queue, error = %e, "deleting an exclusive queue failed");
            }
        }
    }
}
