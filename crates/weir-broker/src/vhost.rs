//! Vhosts: each queue, exchange, binding and subscription lives in one vhost, and
//! names in different vhosts never collide (issue 20, decision 0009).
//!
//! **Names.** Inside the broker every queue and exchange has one broker-wide name. In
//! the default vhost `/` it is the name clients use, so a data directory from before
//! vhosts opens as it was and the hot paths of `/` pay nothing. In any other vhost
//! `v` it is `NUL v NUL name` ([`join`]): vhost names hold no control character
//! (the access model refuses them) and no client name may start with a NUL byte
//! ([`Vhost`] refuses it), so a broker-wide name says which vhost it is in
//! ([`split`]) and no name in one vhost can be spelled from another. Queue
//! directories are numbered, so these names never become paths; `meta/routing.json`
//! and `queues/@<id>/name` hold them as they are.
//!
//! **The view.** Front ends never see broker-wide names: they take a [`Vhost`] (the
//! broker seen from one vhost, [`Broker::vhost`]) once per connection or request,
//! and every name they pass or get back is the client's. The view maps names in and
//! out — in arguments, options (dead-letter and alternate exchanges), bindings,
//! deliveries' death histories, listings and error texts — and lists only what is
//! in its vhost. The built-in exchanges (`amq.direct`...) exist in every vhost: the
//! router holds one once something binds to it, and until then routing, showing and
//! listing answer as for an unused one. The default exchange of a vhost routes to
//! the queues of that vhost.
//!
//! **Deletion.** [`Broker::delete_vhost`] removes the vhost from the access model
//! first (no new connection or request gets in), then deletes its queues (with
//! their messages) and exchanges. A crash in between leaves queues of a vhost that
//! no longer exists; the next start deletes them (`Broker::remove_orphans`).

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::sync::Arc;

use weir_log::{FileStore, LogStore};

use crate::access::{Access, AccessError, DEFAULT_VHOST};
use crate::alarms::Alarms;
use crate::api::{Delivery, QueueOptions};
use crate::broker::Broker;
use crate::config::Limits;
use crate::error::{BrokerError, Kind, Result};
use crate::routing::{Binding, ExchangeOptions};

use crate::names::SEPARATOR;
pub use crate::names::{join, split};

/// The broker as seen from one vhost: the API front ends call, with the client's
/// names (see the module documentation). Cheap to clone.
pub struct Vhost<S: LogStore = FileStore> {
    pub(crate) broker: Broker<S>,
    name: Arc<str>,
    /// `NUL vhost NUL`; `None` in `/`, where names are the broker's own.
    prefix: Option<Arc<str>>,
}

impl<S: LogStore> Clone for Vhost<S> {
    fn clone(&self) -> Self {
        Vhost {
            broker: self.broker.clone(),
            name: self.name.clone(),
            prefix: self.prefix.clone(),
        }
    }
}

impl<S: LogStore> Broker<S> {
    /// The broker as seen from `vhost`.
    ///
    /// # Errors
    /// `NotFound` (kind vhost) if there is no such vhost.
    pub fn vhost(&self, vhost: &str) -> Result<Vhost<S>> {
        if !self.access().has_vhost(vhost) {
            return Err(BrokerError::NotFound {
                kind: Kind::Vhost,
                name: vhost.to_owned(),
            });
        }
        Ok(Vhost {
            broker: self.clone(),
            name: vhost.into(),
            prefix: (vhost != DEFAULT_VHOST)
                .then(|| format!("{SEPARATOR}{vhost}{SEPARATOR}").into()),
        })
    }

    /// The default vhost `/`, which always exists.
    pub fn default_vhost(&self) -> Vhost<S> {
        Vhost {
            broker: self.clone(),
            name: DEFAULT_VHOST.into(),
            prefix: None,
        }
    }
}

impl<S: LogStore> Broker<S> {
    /// Deletes vhost `name` with everything in it: its permissions, then its queues
    /// (with their messages) and exchanges. Connections in it are closed by their
    /// front ends, which watch [`Access::changes`].
    ///
    /// # Errors
    /// `NotFound` (kind vhost), `PreconditionFailed` for `/`, or a failed write.
    pub async fn delete_vhost(&self, name: &str) -> Result<()> {
        if name == DEFAULT_VHOST {
            return Err(BrokerError::PreconditionFailed {
                reason: "the default vhost '/' cannot be deleted".into(),
            });
        }
        let access = self.access();
        let vhost = name.to_owned();
        tokio::task::spawn_blocking(move || access.remove_vhost(&vhost))
            .await
            .map_err(|e| BrokerError::internal(format!("deleting a vhost: {e}")))?
            .map_err(|e| match e {
                AccessError::NoSuchVhost(name) => BrokerError::NotFound {
                    kind: Kind::Vhost,
                    name,
                },
                other => BrokerError::internal(other.to_string()),
            })?;
        let queues = self.remove_contents(name).await?;
        tracing::info!(vhost = name, queues, "deleted vhost");
        Ok(())
    }

    /// Deletes the queues, streams and exchanges of `vhost`; returns how many queues
    /// and streams.
    async fn remove_contents(&self, vhost: &str) -> Result<usize> {
        let queues: Vec<String> = crate::locks::read(&self.inner.queues)
            .keys()
            .filter(|n| split(n).0 == vhost)
            .cloned()
            .collect();
        for queue in &queues {
            match self.delete(queue).await {
                Ok(()) | Err(BrokerError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        let streams: Vec<String> = crate::locks::read(&self.inner.streams)
            .keys()
            .filter(|n| split(n).0 == vhost)
            .cloned()
            .collect();
        for stream in &streams {
            match self.delete_stream(stream).await {
                Ok(()) | Err(BrokerError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        let _admin = self.inner.admin.lock().await;
        self.change_routing(|r| {
            r.remove_vhost(vhost);
            Ok(())
        })?;
        Ok(queues.len() + streams.len())
    }

    /// At start: deletes what is left of vhosts that no longer exist (a deletion
    /// cut short by a crash); returns how many queues went.
    pub(crate) async fn remove_orphans(&self) -> Result<usize> {
        let access = self.access();
        let mut orphans: BTreeSet<String> = crate::locks::read(&self.inner.queues)
            .keys()
            .map(|n| split(n).0)
            .filter(|v| !access.has_vhost(v))
            .map(str::to_owned)
            .collect();
        orphans.extend(
            crate::locks::read(&self.inner.streams)
                .keys()
                .map(|n| split(n).0)
                .filter(|v| !access.has_vhost(v))
                .map(str::to_owned),
        );
        orphans.extend(
            self.exchanges()
                .iter()
                .map(|e| split(&e.name).0)
                .filter(|v| !access.has_vhost(v))
                .map(str::to_owned),
        );
        let mut removed = 0;
        for vhost in orphans {
            tracing::warn!(vhost, "removing what is left of a deleted vhost");
            removed += self.remove_contents(&vhost).await?;
        }
        Ok(removed)
    }
}

impl<S: LogStore> Vhost<S> {
    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether it is the default vhost `/`.
    pub fn is_default(&self) -> bool {
        self.prefix.is_none()
    }

    /// The whole broker, with broker-wide names.
    pub fn broker(&self) -> &Broker<S> {
        &self.broker
    }

    /// Users, vhosts and permissions ([`Broker::access`]).
    pub fn access(&self) -> Arc<Access> {
        self.broker.access()
    }

    /// The limits clients are held to ([`Broker::limits`]).
    pub fn limits(&self) -> &Limits {
        self.broker.limits()
    }

    /// The message counters ([`Broker::traffic`]).
    pub fn traffic(&self) -> &crate::metrics::Traffic {
        self.broker.traffic()
    }

    /// The resource alarms ([`Broker::alarms`]).
    pub fn alarms(&self) -> tokio::sync::watch::Receiver<Alarms> {
        self.broker.alarms()
    }

    /// The broker-wide name of the client's `name`.
    ///
    /// # Errors
    /// `InvalidName` for a name starting with a NUL byte.
    pub fn full<'a>(&self, name: &'a str) -> Result<Cow<'a, str>> {
        if name.starts_with(SEPARATOR) {
            return Err(BrokerError::InvalidName {
                kind: Kind::Queue,
                name: name.escape_default().to_string(),
                reason: "names may not start with a NUL byte".into(),
            });
        }
        Ok(match &self.prefix {
            None => Cow::Borrowed(name),
            Some(prefix) => Cow::Owned(format!("{prefix}{name}")),
        })
    }

    /// The client's name of a broker-wide name in this vhost.
    pub fn local<'a>(&self, full: &'a str) -> &'a str {
        match &self.prefix {
            None => full,
            Some(prefix) => full.strip_prefix(&**prefix).unwrap_or(full),
        }
    }

    /// Whether a broker-wide name is in this vhost.
    pub fn owns(&self, full: &str) -> bool {
        match &self.prefix {
            None => !full.starts_with(SEPARATOR),
            Some(prefix) => full.starts_with(&**prefix),
        }
    }

    pub(crate) fn out(&self, full: String) -> String {
        match &self.prefix {
            Some(prefix) if full.starts_with(&**prefix) => full[prefix.len()..].to_owned(),
            _ => full,
        }
    }

    fn out_opt(&self, full: Option<String>) -> Option<String> {
        full.map(|f| self.out(f))
    }

    /// Text that may name things in this vhost, with the client's names.
    fn out_text(&self, text: String) -> String {
        match &self.prefix {
            Some(prefix) if text.contains(&**prefix) => text.replace(&**prefix, ""),
            _ => text,
        }
    }

    /// An error, with the client's names.
    pub(crate) fn out_error(&self, e: BrokerError) -> BrokerError {
        if self.prefix.is_none() {
            return e;
        }
        let t = |s: String| self.out_text(s);
        match e {
            BrokerError::NotFound { kind, name } => BrokerError::NotFound {
                kind,
                name: t(name),
            },
            BrokerError::Conflict {
                kind,
                name,
                difference,
            } => BrokerError::Conflict {
                kind,
                name: t(name),
                difference: t(difference),
            },
            BrokerError::PreconditionFailed { reason } => {
                BrokerError::PreconditionFailed { reason: t(reason) }
            }
            BrokerError::BindingLoop {
                source_exchange,
                destination,
            } => BrokerError::BindingLoop {
                source_exchange: t(source_exchange),
                destination: t(destination),
            },
            BrokerError::AccessRefused { reason } => {
                BrokerError::AccessRefused { reason: t(reason) }
            }
            BrokerError::InvalidName { kind, name, reason } => BrokerError::InvalidName {
                kind,
                name: t(name),
                reason: t(reason),
            },
            BrokerError::InvalidArgument { field, reason } => BrokerError::InvalidArgument {
                field,
                reason: t(reason),
            },
            BrokerError::StaleReceipt { queue, receipt } => BrokerError::StaleReceipt {
                queue: t(queue),
                receipt,
            },
            BrokerError::QueueFull { queue, detail } => BrokerError::QueueFull {
                queue: t(queue),
                detail: t(detail),
            },
            BrokerError::Unavailable { reason } => BrokerError::Unavailable { reason: t(reason) },
            BrokerError::Storage {
                queue,
                failure,
                source,
            } => BrokerError::Storage {
                queue: t(queue),
                failure,
                source,
            },
            BrokerError::Internal { reason } => BrokerError::Internal { reason: t(reason) },
            other => other,
        }
    }

    /// Queue options with broker-wide names (dead-letter queue and exchange).
    pub(crate) fn in_options(&self, mut options: QueueOptions) -> Result<QueueOptions> {
        if self.prefix.is_some() {
            if let Some(q) = &mut options.dead_letter_queue {
                *q = self.full(q)?.into_owned();
            }
            if let Some(x) = &mut options.dead_letter_exchange {
                *x = self.full(x)?.into_owned();
            }
        }
        Ok(options)
    }

    pub(crate) fn out_options(&self, mut options: QueueOptions) -> QueueOptions {
        if self.prefix.is_some() {
            options.dead_letter_queue = self.out_opt(options.dead_letter_queue.take());
            options.dead_letter_exchange = self.out_opt(options.dead_letter_exchange.take());
        }
        options
    }

    pub(crate) fn in_exchange_options(
        &self,
        mut options: ExchangeOptions,
    ) -> Result<ExchangeOptions> {
        if self.prefix.is_some()
            && let Some(ae) = &mut options.alternate_exchange
        {
            *ae = self.full(ae)?.into_owned();
        }
        Ok(options)
    }

    pub(crate) fn out_exchange_options(&self, mut options: ExchangeOptions) -> ExchangeOptions {
        options.alternate_exchange = self.out_opt(options.alternate_exchange.take());
        options
    }

    pub(crate) fn in_binding(&self, mut b: Binding) -> Result<Binding> {
        if self.prefix.is_some() {
            b.source = self.full(&b.source)?.into_owned();
            b.destination = self.full(&b.destination)?.into_owned();
        } else {
            self.full(&b.source)?;
            self.full(&b.destination)?;
        }
        Ok(b)
    }

    pub(crate) fn out_binding(&self, mut b: Binding) -> Binding {
        if self.prefix.is_some() {
            b.source = self.out(b.source);
            b.destination = self.out(b.destination);
        }
        b
    }

    /// A delivery with the client's names in its death history.
    pub(crate) fn out_delivery(&self, mut d: Delivery) -> Delivery {
        if self.prefix.is_none() {
            return d;
        }
        if let Some(info) = &mut d.dead_letter {
            info.source_queue = self.out(std::mem::take(&mut info.source_queue));
            info.exchange = self.out(std::mem::take(&mut info.exchange));
            for death in &mut info.deaths {
                death.queue = self.out(std::mem::take(&mut death.queue));
                death.exchange = self.out(std::mem::take(&mut death.exchange));
            }
            let first = &mut info.first_death;
            first.queue = self.out(std::mem::take(&mut first.queue));
            first.exchange = self.out(std::mem::take(&mut first.exchange));
        }
        d
    }

    pub(crate) fn out_deliveries(&self, ds: Vec<Delivery>) -> Vec<Delivery> {
        if self.prefix.is_none() {
            return ds;
        }
        ds.into_iter().map(|d| self.out_delivery(d)).collect()
    }
}
