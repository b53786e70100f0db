//! The [`Vhost`] view's operations: each maps the client's names to broker-wide
//! ones, calls the [`Broker`](crate::Broker) method of the same name, and maps
//! names in the answer (and in an error) back (see [`crate::vhost`]).

use weir_log::LogStore;

use crate::api::{
    Declared, Delivery, NackOptions, QueueInfo, QueueOptions, ReceiveRequest, SendMessage,
    SendOutcome, SettleReport,
};
use crate::error::Result;
use crate::exchanges::{
    ExchangeInfo, PublishMessage, PublishOptions, PublishOutcome, QueuedPublish, SubscriptionInfo,
};
use crate::handle::UseGuard;
use crate::routing::{Binding, ExchangeOptions};
use crate::vhost::Vhost;

impl<S: LogStore> Vhost<S> {
    /// Refuses to make anything in a vhost deleted since this view was taken (an
    /// AMQP connection is closed soon after; until then nothing new appears there).
    pub(crate) fn still_there(&self) -> Result<()> {
        if self.is_default() || self.access().has_vhost(self.name()) {
            return Ok(());
        }
        Err(crate::error::BrokerError::NotFound {
            kind: crate::error::Kind::Vhost,
            name: self.name().to_owned(),
        })
    }

    /// [`Broker::options`](crate::Broker::options).
    pub fn options(&self, name: &str) -> Result<QueueOptions> {
        let full = self.full(name)?;
        let options = self.broker.options(&full).map_err(|e| self.out_error(e))?;
        Ok(self.out_options((*options).clone()))
    }

    /// Whether queue `name` is exclusive (cheaper than [`Vhost::options`]).
    pub fn is_exclusive(&self, name: &str) -> bool {
        self.full(name)
            .ok()
            .and_then(|full| self.broker.options(&full).ok())
            .is_some_and(|o| o.exclusive)
    }

    /// [`Broker::declare`](crate::Broker::declare).
    pub async fn declare(&self, name: &str, options: QueueOptions) -> Result<Declared> {
        self.still_there()?;
        let full = self.full(name)?;
        let options = self.in_options(options)?;
        let declared = self.broker.declare(&full, options).await;
        declared.map_err(|e| self.out_error(e))
    }

    /// [`Broker::delete`](crate::Broker::delete).
    pub async fn delete(&self, name: &str) -> Result<()> {
        let full = self.full(name)?;
        self.broker
            .delete(&full)
            .await
            .map_err(|e| self.out_error(e))
    }

    /// [`Broker::info`](crate::Broker::info).
    pub async fn info(&self, name: &str) -> Result<QueueInfo> {
        let full = self.full(name)?;
        let info = self
            .broker
            .info(&full)
            .await
            .map_err(|e| self.out_error(e))?;
        Ok(self.out_info(info))
    }

    fn out_info(&self, info: QueueInfo) -> QueueInfo {
        QueueInfo {
            name: self.out(info.name),
            options: self.out_options(info.options),
            stats: info.stats,
        }
    }

    /// The queues of this vhost, by name.
    pub async fn list(&self) -> Vec<QueueInfo> {
        self.broker
            .list_where(|full| self.owns(full))
            .await
            .into_iter()
            .map(|info| self.out_info(info))
            .collect()
    }

    /// [`Broker::send`](crate::Broker::send).
    pub async fn send(&self, name: &str, messages: Vec<SendMessage>) -> Result<Vec<SendOutcome>> {
        let full = self.full(name)?;
        let sent = self.broker.send(&full, messages).await;
        sent.map_err(|e| self.out_error(e))
    }

    /// [`Broker::receive`](crate::Broker::receive).
    pub async fn receive(&self, name: &str, request: ReceiveRequest) -> Result<Vec<Delivery>> {
        let full = self.full(name)?;
        let got = self.broker.receive(&full, request).await;
        got.map(|ds| self.out_deliveries(ds))
            .map_err(|e| self.out_error(e))
    }

    fn out_report(&self, mut report: SettleReport) -> SettleReport {
        if !report.failed.is_empty() {
            report.failed = std::mem::take(&mut report.failed)
                .into_iter()
                .map(|(receipt, e)| (receipt, self.out_error(e)))
                .collect();
        }
        report
    }

    /// [`Broker::ack`](crate::Broker::ack).
    pub async fn ack(&self, name: &str, receipts: Vec<String>) -> Result<SettleReport> {
        let full = self.full(name)?;
        let acked = self.broker.ack(&full, receipts).await;
        acked
            .map(|r| self.out_report(r))
            .map_err(|e| self.out_error(e))
    }

    /// [`Broker::ack_unsynced`](crate::Broker::ack_unsynced).
    pub async fn ack_unsynced(&self, name: &str, receipts: Vec<String>) -> Result<SettleReport> {
        let full = self.full(name)?;
        let acked = self.broker.ack_unsynced(&full, receipts).await;
        acked
            .map(|r| self.out_report(r))
            .map_err(|e| self.out_error(e))
    }

    /// [`Broker::nack`](crate::Broker::nack).
    pub async fn nack(
        &self,
        name: &str,
        receipts: Vec<String>,
        options: NackOptions,
    ) -> Result<SettleReport> {
        let full = self.full(name)?;
        let nacked = self.broker.nack(&full, receipts, options).await;
        nacked
            .map(|r| self.out_report(r))
            .map_err(|e| self.out_error(e))
    }

    /// [`Broker::extend`](crate::Broker::extend).
    pub async fn extend(
        &self,
        name: &str,
        receipts: Vec<String>,
        visibility_timeout_ms: u64,
    ) -> Result<SettleReport> {
        let full = self.full(name)?;
        let extended = self
            .broker
            .extend(&full, receipts, visibility_timeout_ms)
            .await;
        extended
            .map(|r| self.out_report(r))
            .map_err(|e| self.out_error(e))
    }

    /// [`Broker::purge`](crate::Broker::purge).
    pub async fn purge(&self, name: &str) -> Result<u64> {
        let full = self.full(name)?;
        self.broker
            .purge(&full)
            .await
            .map_err(|e| self.out_error(e))
    }

    /// [`Broker::peek_dead_letters`](crate::Broker::peek_dead_letters).
    pub async fn peek_dead_letters(&self, name: &str, max: u32) -> Result<Vec<Delivery>> {
        let full = self.full(name)?;
        let got = self.broker.peek_dead_letters(&full, max).await;
        got.map(|ds| self.out_deliveries(ds))
            .map_err(|e| self.out_error(e))
    }

    /// [`Broker::redrive_dead_letters`](crate::Broker::redrive_dead_letters).
    pub async fn redrive_dead_letters(&self, name: &str, max: u32) -> Result<u64> {
        let full = self.full(name)?;
        let moved = self.broker.redrive_dead_letters(&full, max).await;
        moved.map_err(|e| self.out_error(e))
    }

    /// [`Broker::peek`](crate::Broker::peek): only those dead-lettered from
    /// `origin` if given.
    pub async fn peek(&self, name: &str, origin: Option<&str>, max: u32) -> Result<Vec<Delivery>> {
        let full = self.full(name)?;
        let origin = origin
            .map(|o| self.full(o).map(std::borrow::Cow::into_owned))
            .transpose()?;
        let got = self.broker.peek(&full, origin, max).await;
        got.map(|ds| self.out_deliveries(ds))
            .map_err(|e| self.out_error(e))
    }

    /// [`Broker::redrive`](crate::Broker::redrive): dead-letter queue `name`'s
    /// messages (only those from `origin` if given) back to their source queues.
    pub async fn redrive(&self, name: &str, origin: Option<&str>, max: u32) -> Result<u64> {
        let full = self.full(name)?;
        let origin = origin
            .map(|o| self.full(o).map(std::borrow::Cow::into_owned))
            .transpose()?;
        let moved = self.broker.redrive(&full, origin, max).await;
        moved.map_err(|e| self.out_error(e))
    }

    /// [`Broker::redrive_at`](crate::Broker::redrive_at).
    pub async fn redrive_at(&self, name: &str, positions: Vec<u64>) -> Result<u64> {
        let full = self.full(name)?;
        let moved = self.broker.redrive_at(&full, positions).await;
        moved.map_err(|e| self.out_error(e))
    }

    /// [`Broker::remove_at`](crate::Broker::remove_at).
    pub async fn remove_at(&self, name: &str, positions: Vec<u64>) -> Result<u64> {
        let full = self.full(name)?;
        let removed = self.broker.remove_at(&full, positions).await;
        removed.map_err(|e| self.out_error(e))
    }

    /// [`Broker::route_test`](crate::Broker::route_test): the queues and streams
    /// (the client's names) a message through `exchange` with `key` would reach.
    pub fn route_test(
        &self,
        exchange: &str,
        key: &str,
        headers: &std::collections::BTreeMap<String, String>,
    ) -> Result<Vec<String>> {
        let full = self.full(exchange)?;
        let routed = self.broker.route_test(&full, key, headers);
        routed
            .map(|queues| queues.into_iter().map(|q| self.out(q)).collect())
            .map_err(|e| self.out_error(e))
    }

    /// Messages through `exchange` that reached no queue
    /// ([`crate::metrics::Traffic::unroutable_count`]).
    pub fn unroutable_count(&self, exchange: &str) -> u64 {
        self.full(exchange)
            .map_or(0, |full| self.broker.traffic().unroutable_count(&full))
    }

    /// [`Broker::hold`](crate::Broker::hold).
    pub fn hold(&self, name: &str) -> Result<UseGuard> {
        let full = self.full(name)?;
        self.broker.hold(&full).map_err(|e| self.out_error(e))
    }

    /// [`Broker::declare_exchange`](crate::Broker::declare_exchange).
    pub async fn declare_exchange(&self, name: &str, options: ExchangeOptions) -> Result<Declared> {
        self.still_there()?;
        let full = self.full(name)?;
        let options = self.in_exchange_options(options)?;
        let declared = self.broker.declare_exchange(&full, options).await;
        declared.map_err(|e| self.out_error(e))
    }

    /// [`Broker::delete_exchange`](crate::Broker::delete_exchange).
    pub async fn delete_exchange(&self, name: &str, if_unused: bool) -> Result<()> {
        let full = self.full(name)?;
        let deleted = self.broker.delete_exchange(&full, if_unused).await;
        deleted.map_err(|e| self.out_error(e))
    }

    fn out_exchange(&self, e: ExchangeInfo) -> ExchangeInfo {
        ExchangeInfo {
            name: self.out(e.name),
            options: self.out_exchange_options(e.options),
            bindings: e.bindings,
        }
    }

    /// The exchanges of this vhost, by name. The built-in ones are listed whether
    /// or not they were used yet (the router adds one at its first binding).
    pub fn exchanges(&self) -> Vec<ExchangeInfo> {
        let mut out: Vec<ExchangeInfo> = self
            .broker
            .exchanges()
            .into_iter()
            .filter(|e| self.owns(&e.name))
            .map(|e| self.out_exchange(e))
            .collect();
        for (name, kind) in crate::routing::BUILT_IN_EXCHANGES {
            if !out.iter().any(|e| e.name == name) {
                out.push(ExchangeInfo {
                    name: name.to_owned(),
                    options: ExchangeOptions::of(kind),
                    bindings: 0,
                });
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// [`Broker::exchange`](crate::Broker::exchange).
    pub fn exchange(&self, name: &str) -> Result<ExchangeInfo> {
        let full = self.full(name)?;
        let info = self.broker.exchange(&full).map_err(|e| self.out_error(e))?;
        Ok(self.out_exchange(info))
    }

    /// [`Broker::bind`](crate::Broker::bind).
    pub async fn bind(&self, binding: Binding) -> Result<Declared> {
        self.still_there()?;
        let binding = self.in_binding(binding)?;
        self.broker
            .bind(binding)
            .await
            .map_err(|e| self.out_error(e))
    }

    /// [`Broker::bind_many`](crate::Broker::bind_many).
    pub async fn bind_many(&self, bindings: Vec<Binding>) -> Result<Vec<Declared>> {
        self.still_there()?;
        let bindings = bindings
            .into_iter()
            .map(|b| self.in_binding(b))
            .collect::<Result<Vec<_>>>()?;
        let bound = self.broker.bind_many(bindings).await;
        bound.map_err(|e| self.out_error(e))
    }

    /// [`Broker::unbind`](crate::Broker::unbind).
    pub async fn unbind(&self, binding: &Binding) -> Result<()> {
        let binding = self.in_binding(binding.clone())?;
        let unbound = self.broker.unbind(&binding).await;
        unbound.map_err(|e| self.out_error(e))
    }

    /// The bindings of this vhost, optionally only from `source` and/or to
    /// `destination`.
    pub fn bindings(&self, source: Option<&str>, destination: Option<&str>) -> Vec<Binding> {
        let (Ok(source), Ok(destination)) = (
            source.map(|s| self.full(s)).transpose(),
            destination.map(|d| self.full(d)).transpose(),
        ) else {
            return Vec::new();
        };
        self.broker
            .bindings(source.as_deref(), destination.as_deref())
            .into_iter()
            .filter(|b| self.owns(&b.source))
            .map(|b| self.out_binding(b))
            .collect()
    }

    fn out_outcomes(&self, mut outcomes: Vec<PublishOutcome>) -> Vec<PublishOutcome> {
        for o in &mut outcomes {
            for q in o.queues.iter_mut().chain(o.duplicate_in.iter_mut()) {
                *q = self.out(std::mem::take(q));
            }
        }
        outcomes
    }

    /// [`Broker::publish`](crate::Broker::publish).
    pub async fn publish(
        &self,
        exchange: &str,
        messages: Vec<PublishMessage>,
        options: PublishOptions,
    ) -> Result<Vec<PublishOutcome>> {
        let full = self.full(exchange)?;
        let published = self.broker.publish(&full, messages, options).await;
        published
            .map(|o| self.out_outcomes(o))
            .map_err(|e| self.out_error(e))
    }

    /// [`Broker::publish_queued`](crate::Broker::publish_queued); its outcomes name
    /// no queue (they are not asked for over AMQP).
    pub async fn publish_queued(
        &self,
        exchange: &str,
        messages: Vec<PublishMessage>,
        options: PublishOptions,
    ) -> Result<QueuedPublish> {
        let full = self.full(exchange)?;
        let queued = self.broker.publish_queued(&full, messages, options).await;
        queued.map_err(|e| self.out_error(e))
    }

    /// [`Broker::publish_topic`](crate::Broker::publish_topic).
    pub async fn publish_topic(
        &self,
        topic: &str,
        messages: Vec<PublishMessage>,
        options: PublishOptions,
    ) -> Result<Vec<PublishOutcome>> {
        let full = self.full(topic)?;
        let published = self.broker.publish_topic(&full, messages, options).await;
        published
            .map(|o| self.out_outcomes(o))
            .map_err(|e| self.out_error(e))
    }

    fn out_subscription(&self, s: SubscriptionInfo) -> SubscriptionInfo {
        SubscriptionInfo {
            topic: self.out(s.topic),
            name: s.name,
            queue: self.out(s.queue),
            pattern: s.pattern,
        }
    }

    /// [`Broker::subscribe`](crate::Broker::subscribe).
    pub async fn subscribe(
        &self,
        topic: &str,
        name: &str,
        pattern: &str,
        options: QueueOptions,
    ) -> Result<(Declared, SubscriptionInfo)> {
        self.still_there()?;
        let full = self.full(topic)?;
        let options = self.in_options(options)?;
        let subscribed = self.broker.subscribe(&full, name, pattern, options).await;
        subscribed
            .map(|(d, s)| (d, self.out_subscription(s)))
            .map_err(|e| self.out_error(e))
    }

    /// [`Broker::unsubscribe`](crate::Broker::unsubscribe).
    pub async fn unsubscribe(&self, topic: &str, name: &str) -> Result<()> {
        let full = self.full(topic)?;
        let gone = self.broker.unsubscribe(&full, name).await;
        gone.map_err(|e| self.out_error(e))
    }

    /// [`Broker::subscriptions`](crate::Broker::subscriptions).
    pub fn subscriptions(&self, topic: &str) -> Result<Vec<SubscriptionInfo>> {
        let full = self.full(topic)?;
        let subscriptions = self.broker.subscriptions(&full);
        subscriptions
            .map(|s| s.into_iter().map(|s| self.out_subscription(s)).collect())
            .map_err(|e| self.out_error(e))
    }
}
