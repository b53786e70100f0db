//! The client connections open now, across front ends ([`Connections`]): who is
//! connected (peer, user, vhost, protocol, client product and version) and what
//! each holds (channels, consumers, prefetch, unacked deliveries, blocked), for the
//! dashboard and `GET /api/connections`; and closing one with a reason
//! ([`Connections::close`]), which its front end turns into its protocol's close
//! (AMQP `connection.close` 320 with the reason).
//!
//! Each front end registers a connection when it is accepted and gets a
//! [`Registered`] handle that removes it when dropped, however the connection ends.
//! The front end writes what it knows into the handle as it learns it (the login,
//! the vhost) and its figures after each turn of its loop: a few relaxed stores, so
//! a listing never has to ask a connection anything and never waits on one.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::Notify;

use crate::clock::now_ms;
use crate::front_ends::Protocol;
use crate::locks;

/// What a client said about itself (AMQP `client-properties`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ClientInfo {
    /// Its library (`product`), such as `pika`.
    pub product: Option<String>,
    /// The library's version.
    pub version: Option<String>,
    /// Its platform, such as `Python 3.11.2`.
    pub platform: Option<String>,
    /// The name the application gave the connection (`connection_name`).
    pub connection_name: Option<String>,
}

/// A connection's figures, written by its front end.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ConnectionFigures {
    /// Channels open.
    pub channels: u64,
    /// Consumers.
    pub consumers: u64,
    /// The sum of its channels' prefetch counts (0: unlimited).
    pub prefetch: u64,
    /// Deliveries not yet settled.
    pub unacked: u64,
    /// Not read from: a resource alarm blocks it.
    pub blocked: bool,
}

/// One open connection, as listed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ConnectionInfo {
    /// Its number, unique while the broker runs.
    pub id: u64,
    /// `amqp`.
    pub protocol: &'static str,
    /// The client's address.
    pub peer: String,
    /// When it was accepted, in ms since the epoch.
    pub connected_at_ms: i64,
    /// Who logged in (`None` during the handshake).
    pub user: Option<String>,
    /// The vhost it opened (`None` until it has).
    pub vhost: Option<String>,
    /// What the client said about itself.
    pub client: ClientInfo,
    /// What it holds.
    #[serde(flatten)]
    pub figures: ConnectionFigures,
}

#[derive(Debug, Default)]
struct Details {
    user: Option<String>,
    vhost: Option<String>,
    client: ClientInfo,
}

#[derive(Debug)]
struct Entry {
    id: u64,
    protocol: Protocol,
    peer: SocketAddr,
    connected_at_ms: i64,
    details: Mutex<Details>,
    channels: AtomicU64,
    consumers: AtomicU64,
    prefetch: AtomicU64,
    unacked: AtomicU64,
    blocked: AtomicBool,
    /// Why it is asked to close, once it is.
    close_reason: Mutex<Option<String>>,
    close: Notify,
    /// Its consumers: a number of its own, the queue (broker-wide name), the tag.
    consuming: Mutex<Vec<(u64, String, String)>>,
    next_consumer: AtomicU64,
}

impl Entry {
    fn info(&self) -> ConnectionInfo {
        let details = locks::lock(&self.details);
        ConnectionInfo {
            id: self.id,
            protocol: self.protocol.name(),
            peer: self.peer.to_string(),
            connected_at_ms: self.connected_at_ms,
            user: details.user.clone(),
            vhost: details.vhost.clone(),
            client: details.client.clone(),
            figures: ConnectionFigures {
                channels: self.channels.load(Ordering::Relaxed),
                consumers: self.consumers.load(Ordering::Relaxed),
                prefetch: self.prefetch.load(Ordering::Relaxed),
                unacked: self.unacked.load(Ordering::Relaxed),
                blocked: self.blocked.load(Ordering::Relaxed),
            },
        }
    }
}

/// See the module documentation.
#[derive(Debug, Default)]
pub struct Connections {
    next: AtomicU64,
    open: Mutex<BTreeMap<u64, Arc<Entry>>>,
}

impl Connections {
    /// Registers a connection of `protocol` from `peer` until the handle drops.
    #[must_use = "the connection is listed while the handle lives"]
    pub fn register(self: &Arc<Self>, protocol: Protocol, peer: SocketAddr) -> Registered {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let entry = Arc::new(Entry {
            id,
            protocol,
            peer,
            connected_at_ms: now_ms(),
            details: Mutex::default(),
            channels: AtomicU64::new(0),
            consumers: AtomicU64::new(0),
            prefetch: AtomicU64::new(0),
            unacked: AtomicU64::new(0),
            blocked: AtomicBool::new(false),
            close_reason: Mutex::new(None),
            close: Notify::new(),
            consuming: Mutex::default(),
            next_consumer: AtomicU64::new(0),
        });
        locks::lock(&self.open).insert(id, Arc::clone(&entry));
        Registered {
            connections: Arc::clone(self),
            entry,
        }
    }

    /// Every open connection, by id.
    pub fn list(&self) -> Vec<ConnectionInfo> {
        let entries: Vec<Arc<Entry>> = locks::lock(&self.open).values().cloned().collect();
        entries.iter().map(|e| e.info()).collect()
    }

    /// Connection `id`, if open.
    pub fn get(&self, id: u64) -> Option<ConnectionInfo> {
        let entry = locks::lock(&self.open).get(&id).cloned();
        entry.map(|e| e.info())
    }

    /// The connections consuming from queue `queue` (its broker-wide name), each
    /// with the consumer's tag.
    pub fn consumers_of(&self, queue: &str) -> Vec<(ConnectionInfo, String)> {
        let entries: Vec<Arc<Entry>> = locks::lock(&self.open).values().cloned().collect();
        let mut out = Vec::new();
        for entry in entries {
            let tags: Vec<String> = locks::lock(&entry.consuming)
                .iter()
                .filter(|(_, q, _)| q == queue)
                .map(|(_, _, tag)| tag.clone())
                .collect();
            if !tags.is_empty() {
                let info = entry.info();
                out.extend(tags.into_iter().map(|tag| (info.clone(), tag)));
            }
        }
        out
    }

    /// Asks connection `id` to close, telling its client `reason`; whether it was
    /// open. The close itself happens in the connection's own task, at once.
    pub fn close(&self, id: u64, reason: &str) -> bool {
        let Some(entry) = locks::lock(&self.open).get(&id).cloned() else {
            return false;
        };
        locks::lock(&entry.close_reason).get_or_insert_with(|| reason.to_owned());
        entry.close.notify_one();
        true
    }
}

/// A registered connection ([`Connections::register`]); unlisted when dropped.
#[derive(Debug)]
pub struct Registered {
    connections: Arc<Connections>,
    entry: Arc<Entry>,
}

impl Registered {
    /// Its id.
    pub fn id(&self) -> u64 {
        self.entry.id
    }

    /// Who logged in, and what the client said about itself.
    pub fn logged_in(&self, user: &str, client: ClientInfo) {
        let mut details = locks::lock(&self.entry.details);
        details.user = Some(user.to_owned());
        details.client = client;
    }

    /// The vhost it opened.
    pub fn opened(&self, vhost: &str) {
        locks::lock(&self.entry.details).vhost = Some(vhost.to_owned());
    }

    /// A consumer of this connection on `queue` (its broker-wide name) with `tag`,
    /// listed until the returned guard drops.
    #[must_use = "the consumer is listed while the guard lives"]
    pub fn consuming(&self, queue: &str, tag: &str) -> Consuming {
        let id = self.entry.next_consumer.fetch_add(1, Ordering::Relaxed);
        locks::lock(&self.entry.consuming).push((id, queue.to_owned(), tag.to_owned()));
        Consuming {
            entry: Arc::clone(&self.entry),
            id,
        }
    }

    /// What it holds now.
    pub fn figures(&self, figures: ConnectionFigures) {
        let e = &self.entry;
        e.channels.store(figures.channels, Ordering::Relaxed);
        e.consumers.store(figures.consumers, Ordering::Relaxed);
        e.prefetch.store(figures.prefetch, Ordering::Relaxed);
        e.unacked.store(figures.unacked, Ordering::Relaxed);
        e.blocked.store(figures.blocked, Ordering::Relaxed);
    }

    /// Resolves with the reason once [`Connections::close`] asks this connection
    /// to close. Cancel-safe: a request made while nobody waits is kept.
    pub async fn close_requested(&self) -> String {
        loop {
            if let Some(reason) = locks::lock(&self.entry.close_reason).clone() {
                return reason;
            }
            self.entry.close.notified().await;
        }
    }
}

/// A listed consumer ([`Registered::consuming`]); unlisted when dropped.
#[derive(Debug)]
pub struct Consuming {
    entry: Arc<Entry>,
    id: u64,
}

impl Drop for Consuming {
    fn drop(&mut self) {
        locks::lock(&self.entry.consuming).retain(|(id, _, _)| *id != self.id);
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        locks::lock(&self.connections.open).remove(&self.entry.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn registered_connections_are_listed_until_dropped_and_can_be_asked_to_close() {
        let connections = Arc::new(Connections::default());
        let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let a = connections.register(Protocol::Amqp, peer);
        let b = connections.register(Protocol::Amqp, peer);
        a.logged_in(
            "alice",
            ClientInfo {
                product: Some("pika".into()),
                ..ClientInfo::default()
            },
        );
        a.opened("/");
        a.figures(ConnectionFigures {
            channels: 2,
            unacked: 5,
            ..ConnectionFigures::default()
        });
        let listed = connections.list();
        assert_eq!(listed.len(), 2);
        assert_eq!(listed[0].user.as_deref(), Some("alice"));
        assert_eq!(listed[0].client.product.as_deref(), Some("pika"));
        assert_eq!(
            (listed[0].figures.channels, listed[0].figures.unacked),
            (2, 5)
        );
        assert_eq!(listed[1].user, None);

        let consumer = a.consuming("orders", "ctag-1");
        let of = connections.consumers_of("orders");
        assert_eq!(
            (of.len(), of[0].0.id, of[0].1.as_str()),
            (1, a.id(), "ctag-1")
        );
        drop(consumer);
        assert!(connections.consumers_of("orders").is_empty());

        assert!(connections.close(b.id(), "maintenance"));
        assert_eq!(b.close_requested().await, "maintenance");
        assert!(!connections.close(999, "nobody"));
        let id = a.id();
        drop(a);
        assert!(connections.get(id).is_none());
        assert_eq!(connections.list().len(), 1);
    }
}
