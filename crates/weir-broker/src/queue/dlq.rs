//! Dead-lettering as RabbitMQ 3.x does it (`rabbit_dead_letter.erl`, 3.10 to 3.12):
//! the death history a dead letter carries and the cycle check that drops a
//! message going round in dead-letter queues with nobody rejecting it.
//!
//! The history is protocol-neutral ([`DeadLetterInfo`]); the AMQP front end renders
//! it as the `x-death` array and the `x-first-death-*` headers, the HTTP API shows
//! it as it is. It is stored in the dead letter's message record (see
//! [`crate::queue::record`]), so a restart keeps it.

use std::collections::HashSet;
use std::sync::Mutex;

use bytes::Bytes;
use weir_log::Header;

use crate::api::{DeadLetterInfo, DeadLetterReason, Death, FirstDeath, QueueOptions};
use crate::queue::record::{EXCHANGE_HEADER, MessageMeta, Outgoing, ROUTING_KEY_HEADER};

/// Where a queue's dead letters go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    /// Straight into this queue (weir's `dead_letter_queue`).
    Queue(String),
    /// Published through this exchange (`x-dead-letter-exchange`), with this
    /// routing key or their own (`x-dead-letter-routing-key`).
    Exchange {
        name: String,
        routing_key: Option<String>,
    },
}

impl Target {
    /// Where the dead letters of a queue with `options` go; `None`: they are dropped.
    pub(crate) fn of(options: &QueueOptions) -> Option<Target> {
        match (&options.dead_letter_queue, &options.dead_letter_exchange) {
            (Some(queue), _) => Some(Target::Queue(queue.clone())),
            (None, Some(exchange)) => Some(Target::Exchange {
                name: exchange.clone(),
                routing_key: options.dead_letter_routing_key.clone(),
            }),
            (None, None) => None,
        }
    }

    /// For logs.
    pub(crate) fn describe(&self) -> String {
        match self {
            Target::Queue(queue) => queue.clone(),
            Target::Exchange { name, .. } => format!("exchange '{name}'"),
        }
    }
}

/// The exchange and routing keys a message in `queue` carries: those it was
/// dead-lettered with, else those it was published with (stored with it by queues
/// that dead-letter), else the default exchange and the queue's name (a send
/// straight to the queue).
pub(crate) fn route_of(meta: &MessageMeta, headers: &[Header], queue: &str) -> Route {
    if let Some(d) = &meta.dead_letter
        && !d.routing_keys.is_empty()
    {
        return Route {
            exchange: d.exchange.clone(),
            routing_keys: d.routing_keys.clone(),
        };
    }
    let header = |name: &[u8]| {
        headers
            .iter()
            .find(|h| h.name.as_ref() == name)
            .map(|h| String::from_utf8_lossy(&h.value).into_owned())
    };
    let exchange = header(EXCHANGE_HEADER);
    let key = header(ROUTING_KEY_HEADER).unwrap_or_else(|| match &exchange {
        // Through an exchange with an empty key (empty keys are not stored).
        Some(_) => String::new(),
        None => queue.to_owned(),
    });
    Route {
        exchange: exchange.unwrap_or_default(),
        routing_keys: vec![key],
    }
}

/// The copy of a message dying in `queue` that goes to `target`: same id, body,
/// headers, priority and group; no delay, no expiry of its own (RabbitMQ drops the
/// per-message TTL), and its death history one death longer.
#[allow(clippy::too_many_arguments)]
pub(crate) fn copy(
    queue: &str,
    target: &Target,
    meta: MessageMeta,
    headers: Vec<Header>,
    body: Bytes,
    delivery_count: u32,
    reason: DeadLetterReason,
    now_ms: i64,
) -> Outgoing {
    let published = route_of(&meta, &headers, queue);
    let republished = match target {
        // As RabbitMQ would with the default exchange as dead-letter exchange and
        // the queue's name as dead-letter routing key.
        Target::Queue(queue) => Route {
            exchange: String::new(),
            routing_keys: vec![queue.clone()],
        },
        Target::Exchange { name, routing_key } => Route {
            exchange: name.clone(),
            routing_keys: match routing_key {
                Some(key) => vec![key.clone()],
                None => published.routing_keys.clone(),
            },
        },
    };
    let info = died(
        meta.dead_letter.as_ref(),
        Dying {
            queue,
            reason,
            delivery_count,
            now_ms,
            published,
            republished,
        },
    );
    Outgoing {
        meta: MessageMeta {
            id: meta.id,
            priority: meta.priority,
            not_before_ms: 0,
            expires_at_ms: 0,
            group: meta.group,
            attempts: 0,
            moved_from: None,
            enqueued_at_ms: now_ms,
            dead_letter: Some(info),
            shared_mark: 0,
        },
        headers,
        body,
    }
}

/// Cycles already reported, so each is logged once (as RabbitMQ does); bounded.
static REPORTED_CYCLES: Mutex<Option<HashSet<(String, String)>>> = Mutex::new(None);

/// Logs, once per (source, target) pair, that a dead letter was dropped for
/// going round a cycle.
pub(crate) fn report_cycle(info: &DeadLetterInfo, target: &str) {
    let mut reported = REPORTED_CYCLES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let reported = reported.get_or_insert_with(HashSet::new);
    if reported.len() >= 1_000 {
        return;
    }
    if reported.insert((info.source_queue.clone(), target.to_owned())) {
        let path: Vec<&str> = info.deaths.iter().map(|d| d.queue.as_str()).collect();
        tracing::warn!(queue = %info.source_queue, dead_letter_queue = %target, deaths = ?path,
            "message dropped: dead-letter cycle detected (not reported again)");
    }
}

/// Where a message is published when it dies: through an exchange with routing
/// keys, or straight into a queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Route {
    /// The exchange (`""`: the default exchange, or a direct send).
    pub(crate) exchange: String,
    /// Its routing keys (the first is the one it was published with).
    pub(crate) routing_keys: Vec<String>,
}

/// One death of a message.
#[derive(Clone, Debug)]
pub(crate) struct Dying<'a> {
    /// The queue it dies in.
    pub(crate) queue: &'a str,
    pub(crate) reason: DeadLetterReason,
    /// Deliveries it had there.
    pub(crate) delivery_count: u32,
    pub(crate) now_ms: i64,
    /// How it had been published (its exchange and keys before this death).
    pub(crate) published: Route,
    /// How it is published now: through the dead-letter exchange with its keys
    /// (for a dead-letter queue: the default exchange and the queue's name).
    pub(crate) republished: Route,
}

/// The death history of a message after `dying`, from its history before
/// (`None`: its first death). As RabbitMQ 3.10–3.12's `update_x_death_header`: an
/// entry of the same queue and reason moves to the front with its count one higher
/// and its other fields unchanged; otherwise a new entry (count 1) goes in front.
/// The first death is set once.
///
/// RabbitMQ first regroups a history of two or more entries by queue and reason
/// (`group_by_queue_and_reason`), which builds the list back to front: the entries
/// behind the front one come out reversed at each death. A history of three deaths
/// q1, q2, q3 reads q3, q1, q2 there, and so it does here.
pub(crate) fn died(before: Option<&DeadLetterInfo>, dying: Dying<'_>) -> DeadLetterInfo {
    let mut deaths = before.map(|b| b.deaths.clone()).unwrap_or_default();
    if deaths.len() >= 2 {
        deaths.reverse();
    }
    let same = deaths
        .iter()
        .position(|d| d.queue == dying.queue && d.reason == dying.reason);
    let entry = match same {
        Some(i) => {
            let mut d = deaths.remove(i);
            d.count = d.count.saturating_add(1);
            d
        }
        None => Death {
            queue: dying.queue.to_owned(),
            reason: dying.reason,
            count: 1,
            exchange: dying.published.exchange.clone(),
            routing_keys: dying.published.routing_keys.clone(),
            time_ms: dying.now_ms,
        },
    };
    deaths.insert(0, entry);
    let first_death = before.map_or_else(
        || FirstDeath {
            queue: dying.queue.to_owned(),
            reason: dying.reason,
            exchange: dying.published.exchange.clone(),
        },
        |b| b.first_death.clone(),
    );
    let Route {
        exchange,
        routing_keys,
    } = dying.republished;
    DeadLetterInfo {
        reason: dying.reason,
        time_ms: dying.now_ms,
        source_queue: dying.queue.to_owned(),
        delivery_count: dying.delivery_count,
        exchange,
        routing_keys,
        deaths,
        first_death,
    }
}

/// Whether a dead letter with history `info` (this death included) must not go to
/// queue `target`, as RabbitMQ's `detect_cycles`: it died there before, and no
/// death from now back to that one was a rejection (a fully automatic cycle, which
/// would go round forever). A rejection breaks the cycle: a consumer decided.
pub(crate) fn is_cycle(info: &DeadLetterInfo, target: &str) -> bool {
    if info.reason == DeadLetterReason::Rejected {
        return false;
    }
    match info.deaths.iter().position(|d| d.queue == target) {
        None => false,
        Some(i) => info.deaths[..=i]
            .iter()
            .all(|d| d.reason != DeadLetterReason::Rejected),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Overflow, ReceiveRequest, SendMessage};
    use crate::broker::Broker;
    use crate::config::BrokerConfig;
    use crate::error::BrokerError;
    use crate::exchanges::{PublishMessage, PublishOptions};
    use crate::routing::{Binding, DestinationType, ExchangeOptions, ExchangeType};

    async fn open(dir: &std::path::Path) -> Broker {
        let mut config = BrokerConfig::new(dir);
        config.limits.disk_free_min_bytes = 0;
        Broker::open(config).await.expect("broker opens").0
    }

    async fn publish(broker: &Broker, queue: &str, body: &'static str) -> crate::error::Result<()> {
        broker
            .publish(
                "",
                vec![PublishMessage {
                    routing_key: queue.into(),
                    mandatory: false,
                    message: SendMessage {
                        id: Some(body.into()),
                        body: body.into(),
                        ..SendMessage::default()
                    },
                }],
                PublishOptions::default(),
            )
            .await
            .map(|_| ())
    }

    /// Waits for one message in `queue` and leases it.
    async fn one(broker: &Broker, queue: &str) -> crate::api::Delivery {
        let request = ReceiveRequest {
            max: 1,
            wait_ms: 10_000,
            // Long enough that a lease cannot end between two receives on a
            // slow machine (a 1 ms one brought the same message back twice).
            visibility_timeout_ms: Some(600_000),
        };
        let mut got = broker.receive(queue, request).await.expect("receive");
        assert_eq!(got.len(), 1, "one message in {queue}");
        got.remove(0)
    }

    /// `drop-head` with a dead-letter exchange and `reject-publish-dlx` both
    /// dead-letter with reason overflow (RabbitMQ's maxlen), through the exchange
    /// with its key, and the history is what a restart reads back.
    #[tokio::test]
    async fn overflow_dead_letters_through_the_exchange_and_the_history_is_stored() {
        let dir = tempfile::tempdir().unwrap();
        let broker = open(dir.path()).await;
        broker
            .declare_exchange(
                "dlx",
                ExchangeOptions {
                    kind: ExchangeType::Direct,
                    durable: true,
                    auto_delete: false,
                    alternate_exchange: None,
                    internal: false,
                },
            )
            .await
            .unwrap();
        broker
            .declare("dead", QueueOptions::default())
            .await
            .unwrap();
        broker
            .bind(Binding {
                source: "dlx".into(),
                destination: "dead".into(),
                destination_type: DestinationType::Queue,
                routing_key: "k".into(),
                arguments: std::collections::BTreeMap::new(),
            })
            .await
            .unwrap();
        let capped = |overflow| QueueOptions {
            max_length: Some(1),
            overflow,
            dead_letter_exchange: Some("dlx".into()),
            dead_letter_routing_key: Some("k".into()),
            ..QueueOptions::default()
        };
        broker
            .declare("heads", capped(Overflow::DropHead))
            .await
            .unwrap();
        broker
            .declare("strict", capped(Overflow::RejectPublishDlx))
            .await
            .unwrap();
        publish(&broker, "heads", "h1").await.unwrap();
        publish(&broker, "heads", "h2").await.unwrap();
        publish(&broker, "strict", "s1").await.unwrap();
        let refused = publish(&broker, "strict", "s2").await.unwrap_err();
        assert!(
            matches!(refused, BrokerError::QueueFull { .. }),
            "{refused}"
        );
        let mut seen = Vec::new();
        for _ in 0..2 {
            let d = one(&broker, "dead").await;
            let info = d.dead_letter.expect("a dead letter");
            assert_eq!(info.reason, DeadLetterReason::Overflow);
            assert_eq!(
                (info.exchange.as_str(), info.routing_keys.as_slice()),
                ("dlx", &["k".to_owned()][..])
            );
            assert_eq!(info.deaths.len(), 1);
            let death = &info.deaths[0];
            assert_eq!(
                (death.queue.as_str(), death.count, death.exchange.as_str()),
                (info.source_queue.as_str(), 1, "")
            );
            assert_eq!(death.routing_keys, std::slice::from_ref(&info.source_queue));
            seen.push((d.id, info.source_queue));
        }
        seen.sort();
        assert_eq!(
            seen,
            [
                ("h1".to_owned(), "heads".to_owned()),
                ("s2".to_owned(), "strict".to_owned())
            ]
        );
        broker.shutdown().await;
        drop(broker);
        let broker = open(dir.path()).await;
        // Leases end at a restart: both are ready again, history and all.
        let d = one(&broker, "dead").await;
        let info = d.dead_letter.expect("still a dead letter");
        assert_eq!(info.deaths.len(), 1);
        assert_eq!(info.first_death.reason, DeadLetterReason::Overflow);
        assert_eq!(info.exchange, "dlx");
        broker.shutdown().await;
    }

    fn route(exchange: &str, key: &str) -> Route {
        Route {
            exchange: exchange.into(),
            routing_keys: vec![key.into()],
        }
    }

    fn die(
        before: Option<&DeadLetterInfo>,
        queue: &str,
        reason: DeadLetterReason,
        now: i64,
        published: Route,
        dlx: Route,
    ) -> DeadLetterInfo {
        died(
            before,
            Dying {
                queue,
                reason,
                delivery_count: 1,
                now_ms: now,
                published,
                republished: dlx,
            },
        )
    }

    fn summary(info: &DeadLetterInfo) -> Vec<(String, &'static str, u64)> {
        info.deaths
            .iter()
            .map(|d| (d.queue.clone(), d.reason.rabbitmq_name(), d.count))
            .collect()
    }

    #[test]
    fn a_first_death_sets_the_first_death_and_one_entry() {
        let info = die(
            None,
            "work",
            DeadLetterReason::Rejected,
            1000,
            route("orders", "new"),
            route("dlx", "retry"),
        );
        assert_eq!(summary(&info), [("work".into(), "rejected", 1)]);
        assert_eq!(info.deaths[0].exchange, "orders");
        assert_eq!(info.deaths[0].routing_keys, ["new"]);
        assert_eq!(info.deaths[0].time_ms, 1000);
        assert_eq!(
            info.first_death,
            FirstDeath {
                queue: "work".into(),
                reason: DeadLetterReason::Rejected,
                exchange: "orders".into()
            }
        );
        assert_eq!(info.exchange, "dlx");
        assert_eq!(info.routing_keys, ["retry"]);
    }

    #[test]
    #[allow(clippy::many_single_char_names)] // one letter per death, in order
    fn deaths_merge_per_queue_and_reason_and_the_latest_goes_first() {
        // work --rejected--> retry --expired--> work --rejected--> retry --expired-->
        let a = die(
            None,
            "work",
            DeadLetterReason::Rejected,
            1,
            route("", "work"),
            route("dlx", "retry"),
        );
        let b = die(
            Some(&a),
            "retry",
            DeadLetterReason::Expired,
            2,
            route("dlx", "retry"),
            route("back", "work"),
        );
        let c = die(
            Some(&b),
            "work",
            DeadLetterReason::Rejected,
            3,
            route("back", "work"),
            route("dlx", "retry"),
        );
        assert_eq!(
            summary(&c),
            [
                ("work".into(), "rejected", 2),
                ("retry".into(), "expired", 1)
            ]
        );
        // The merged entry keeps the fields of its first death.
        assert_eq!(
            (c.deaths[0].exchange.as_str(), c.deaths[0].time_ms),
            ("", 1)
        );
        let d = die(
            Some(&c),
            "retry",
            DeadLetterReason::Expired,
            4,
            route("dlx", "retry"),
            route("back", "work"),
        );
        assert_eq!(
            summary(&d),
            [
                ("retry".into(), "expired", 2),
                ("work".into(), "rejected", 2)
            ]
        );
        let e = die(
            Some(&d),
            "work",
            DeadLetterReason::Expired,
            5,
            route("back", "work"),
            route("dlx", "retry"),
        );
        // RabbitMQ's regrouping reverses the entries behind the new one.
        assert_eq!(
            summary(&e),
            [
                ("work".into(), "expired", 1),
                ("work".into(), "rejected", 2),
                ("retry".into(), "expired", 2)
            ]
        );
        assert_eq!(e.first_death, a.first_death);
        assert_eq!(
            (e.source_queue.as_str(), e.reason, e.time_ms),
            ("work", DeadLetterReason::Expired, 5)
        );
    }

    #[test]
    fn a_history_of_two_or_more_is_regrouped_back_to_front_as_rabbitmq_3_10_does() {
        let first = die(
            None,
            "c1",
            DeadLetterReason::Rejected,
            1,
            route("", "c1"),
            route("", "c2"),
        );
        let second = die(
            Some(&first),
            "c2",
            DeadLetterReason::Expired,
            2,
            route("", "c2"),
            route("", "c3"),
        );
        let third = die(
            Some(&second),
            "c3",
            DeadLetterReason::Expired,
            3,
            route("", "c3"),
            route("", "c4"),
        );
        assert_eq!(
            summary(&third),
            [
                ("c3".into(), "expired", 1),
                ("c1".into(), "rejected", 1),
                ("c2".into(), "expired", 1)
            ]
        );
        let fourth = die(
            Some(&third),
            "c4",
            DeadLetterReason::Expired,
            4,
            route("", "c4"),
            route("", "c5"),
        );
        assert_eq!(
            summary(&fourth),
            [
                ("c4".into(), "expired", 1),
                ("c2".into(), "expired", 1),
                ("c1".into(), "rejected", 1),
                ("c3".into(), "expired", 1)
            ]
        );
    }

    #[test]
    #[allow(clippy::many_single_char_names)] // one letter per death, in order
    fn cycles_without_a_rejection_are_detected_as_rabbitmq_does() {
        // A queue whose dead letters come back to itself on expiry.
        let a = die(
            None,
            "q",
            DeadLetterReason::Expired,
            1,
            route("", "q"),
            route("", "q"),
        );
        assert!(is_cycle(&a, "q"));
        assert!(!is_cycle(&a, "other"));
        // A rejection never cycles.
        let r = die(
            None,
            "q",
            DeadLetterReason::Rejected,
            1,
            route("", "q"),
            route("", "q"),
        );
        assert!(!is_cycle(&r, "q"));
        // work rejected -> retry expired -> work: a consumer is in the loop.
        let b = die(
            None,
            "work",
            DeadLetterReason::Rejected,
            1,
            route("", "work"),
            route("dlx", "retry"),
        );
        let c = die(
            Some(&b),
            "retry",
            DeadLetterReason::Expired,
            2,
            route("dlx", "retry"),
            route("back", "work"),
        );
        assert!(!is_cycle(&c, "work"));
        // work expired -> retry expired -> work: nobody rejects, dropped.
        let b = die(
            None,
            "work",
            DeadLetterReason::Expired,
            1,
            route("", "work"),
            route("dlx", "retry"),
        );
        let c = die(
            Some(&b),
            "retry",
            DeadLetterReason::Expired,
            2,
            route("dlx", "retry"),
            route("back", "work"),
        );
        assert!(is_cycle(&c, "work"));
        assert!(is_cycle(&c, "retry"));
        // delivery_limit and maxlen are automatic too.
        let d = die(
            None,
            "q",
            DeadLetterReason::MaxDeliveries,
            1,
            route("", "q"),
            route("", "q"),
        );
        assert!(is_cycle(&d, "q"));
        let m = die(
            None,
            "q",
            DeadLetterReason::Overflow,
            1,
            route("", "q"),
            route("", "q"),
        );
        assert!(is_cycle(&m, "q"));
    }
}
