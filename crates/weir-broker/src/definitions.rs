//! Definitions export and import: users, vhosts, permissions, queues, exchanges and
//! bindings in one JSON document shaped like RabbitMQ's (`rabbitmqctl
//! export_definitions`), so a RabbitMQ export imports here and a weir export
//! rebuilds a broker's topology elsewhere.
//!
//! A queue is exported with RabbitMQ's `x-` arguments for what RabbitMQ can say and
//! with weir's whole [`QueueOptions`] under `options`; an import takes `options`
//! when present (a weir export, lossless) and the arguments otherwise (a RabbitMQ
//! export). Exclusive queues belong to a connection and are not exported. What
//! RabbitMQ exports and weir has no counterpart for (policies, parameters, topic
//! permissions) is read and reported as not imported, never silently dropped.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::access::DEFAULT_VHOST;
use crate::access::definitions::{Definitions, PermissionDef, UserDef, VhostDef};
use crate::api::Declared;
use crate::api::QueueOptions;
use crate::broker::Broker;
use crate::error::{BrokerError, Result};
use crate::queue_arguments::{ArgValue, apply_queue_argument, rabbitmq_arguments};
use crate::routing::{Binding, DestinationType, ExchangeOptions, ExchangeType, is_built_in};
use crate::stream::{StreamOptions, interval_ms};
use crate::vhost::Vhost;
use weir_log::LogStore;

/// The document.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct BrokerDefinitions {
    /// The weir version that exported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weir_version: Option<String>,
    /// Users with their password hashes.
    #[serde(default)]
    pub users: Vec<UserDef>,
    /// Vhosts.
    #[serde(default)]
    pub vhosts: Vec<VhostDef>,
    /// Permissions per user and vhost.
    #[serde(default)]
    pub permissions: Vec<PermissionDef>,
    /// Queues.
    #[serde(default)]
    pub queues: Vec<QueueDef>,
    /// Exchanges (not the built-in ones).
    #[serde(default)]
    pub exchanges: Vec<ExchangeDef>,
    /// Bindings.
    #[serde(default)]
    pub bindings: Vec<BindingDef>,
    /// Whatever else the document has (RabbitMQ's `policies`, `parameters`,
    /// `rabbit_version`...): not applied; an import reports the non-empty ones.
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

fn default_vhost() -> String {
    DEFAULT_VHOST.to_owned()
}

fn yes() -> bool {
    true
}

/// A queue.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct QueueDef {
    /// Its name.
    pub name: String,
    /// Its vhost.
    #[serde(default = "default_vhost")]
    pub vhost: String,
    /// Kept across restarts.
    #[serde(default = "yes")]
    pub durable: bool,
    /// Deleted when its last consumer goes.
    #[serde(default)]
    pub auto_delete: bool,
    /// RabbitMQ's `x-` arguments.
    #[serde(default)]
    pub arguments: Map<String, Value>,
    /// weir's own options (a weir export); they win over `arguments`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<QueueOptions>,
    /// A stream's options (a weir export of a stream); `x-queue-type: stream` in
    /// `arguments` (a RabbitMQ export) also makes the queue a stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<StreamOptions>,
}

/// An exchange.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExchangeDef {
    /// Its name.
    pub name: String,
    /// Its vhost.
    #[serde(default = "default_vhost")]
    pub vhost: String,
    /// Its type.
    #[serde(rename = "type")]
    pub kind: ExchangeType,
    /// Kept across restarts.
    #[serde(default = "yes")]
    pub durable: bool,
    /// Deleted when its last binding goes.
    #[serde(default)]
    pub auto_delete: bool,
    /// Clients may not publish to it.
    #[serde(default)]
    pub internal: bool,
    /// `alternate-exchange`, as RabbitMQ carries it.
    #[serde(default)]
    pub arguments: Map<String, Value>,
}

/// A binding.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BindingDef {
    /// The exchange it routes from.
    pub source: String,
    /// Its vhost.
    #[serde(default = "default_vhost")]
    pub vhost: String,
    /// The queue or exchange it routes to.
    pub destination: String,
    /// `queue` or `exchange`.
    pub destination_type: DestinationType,
    /// The key or pattern.
    #[serde(default)]
    pub routing_key: String,
    /// Header arguments (headers exchanges).
    #[serde(default)]
    pub arguments: Map<String, Value>,
}

/// What an import did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ImportReport {
    /// Users added or replaced.
    pub users: usize,
    /// Vhosts named (added or already there).
    pub vhosts: usize,
    /// Permissions set.
    pub permissions: usize,
    /// Queues created.
    pub queues_created: usize,
    /// Exchanges created.
    pub exchanges_created: usize,
    /// Bindings added.
    pub bindings_created: usize,
    /// Queues, exchanges and bindings that existed already, identical.
    pub existed: usize,
    /// Parts of the document weir has no counterpart for, not imported.
    pub not_imported: Vec<String>,
}

/// Keys of a RabbitMQ export that say what it is, not what to build.
const METADATA: [&str; 4] = [
    "rabbit_version",
    "rabbitmq_version",
    "product_name",
    "product_version",
];

fn invalid(field: &str, reason: impl Into<String>) -> BrokerError {
    BrokerError::InvalidArgument {
        field: field.to_owned(),
        reason: reason.into(),
    }
}

/// `vhost` exists now or comes with the document.
fn known_vhost(known: &BTreeSet<String>, kind: &str, name: &str, vhost: &str) -> Result<()> {
    if known.contains(vhost) {
        return Ok(());
    }
    Err(invalid(
        kind,
        format!("{kind} '{name}' is in vhost '{vhost}', which neither exists nor is imported"),
    ))
}

fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl QueueDef {
    /// The stream this queue is, if it is one.
    fn stream_options(&self) -> Result<Option<StreamOptions>> {
        let bad = |what: &str| invalid("queues", format!("stream '{}': {what}", self.name));
        let options = if let Some(options) = &self.stream {
            options.clone()
        } else if self.arguments.get("x-queue-type").and_then(Value::as_str) == Some("stream") {
            let max_age_ms = match self.arguments.get("x-max-age") {
                None => None,
                Some(v) => Some(
                    v.as_str()
                        .and_then(interval_ms)
                        .ok_or_else(|| bad("x-max-age is not like 7D, 12h, 30m or 10s"))?,
                ),
            };
            let max_bytes = match self.arguments.get("x-max-length-bytes") {
                None => None,
                Some(v) => Some(
                    v.as_u64()
                        .ok_or_else(|| bad("x-max-length-bytes is not a byte count"))?,
                ),
            };
            let segment_bytes =
                match self.arguments.get("x-stream-max-segment-size-bytes") {
                    None => None,
                    Some(v) => Some(v.as_u64().ok_or_else(|| {
                        bad("x-stream-max-segment-size-bytes is not a byte count")
                    })?),
                };
            StreamOptions {
                max_age_ms,
                max_bytes,
                segment_bytes,
                ..StreamOptions::default()
            }
        } else {
            return Ok(None);
        };
        options.validate()?;
        Ok(Some(options))
    }

    fn options(&self) -> Result<QueueOptions> {
        let mut options = if let Some(options) = &self.options {
            options.clone()
        } else {
            let mut options = QueueOptions::default();
            for (name, value) in &self.arguments {
                apply_queue_argument(&mut options, name, &ArgValue::from(value))
                    .map_err(|e| invalid("queues", format!("queue '{}': {e}", self.name)))?;
            }
            options
        };
        options.transient = !self.durable;
        options.auto_delete = self.auto_delete;
        options.exclusive = false;
        options.validate(&self.name)?;
        Ok(options)
    }
}

impl ExchangeDef {
    fn options(&self) -> Result<ExchangeOptions> {
        let alternate_exchange = match self.arguments.get("alternate-exchange") {
            None => None,
            Some(Value::String(ae)) => Some(ae.clone()),
            Some(_) => {
                return Err(invalid(
                    "exchanges",
                    format!(
                        "exchange '{}': alternate-exchange must be a string",
                        self.name
                    ),
                ));
            }
        };
        Ok(ExchangeOptions {
            kind: self.kind,
            durable: self.durable,
            auto_delete: self.auto_delete,
            alternate_exchange,
            internal: self.internal,
        })
    }
}

impl<S: LogStore> Broker<S> {
    /// Everything [`Broker::import_definitions`] takes, as it is now.
    pub async fn export_definitions(&self) -> BrokerDefinitions {
        let access = self.access().export();
        let mut out = BrokerDefinitions {
            weir_version: Some(env!("CARGO_PKG_VERSION").to_owned()),
            ..BrokerDefinitions::default()
        };
        for vhost in &access.vhosts {
            // A vhost deleted meanwhile has nothing left to export.
            if let Ok(view) = self.vhost(&vhost.name) {
                export_vhost(&view, &mut out).await;
            }
        }
        out.users = access.users;
        out.vhosts = access.vhosts;
        out.permissions = access.permissions;
        out
    }

    /// Builds what `defs` describes: users, vhosts and permissions (merged, all or
    /// nothing), then exchanges, queues and bindings. Everything is checked before
    /// anything is built; a thing that exists identically is left as it is, one that
    /// exists with other settings stops the import (`Conflict`), leaving what was
    /// built before it.
    ///
    /// # Errors
    /// `InvalidArgument` for a document out of shape (a bad name, hash, pattern or
    /// argument, a queue in a vhost that neither exists nor is imported), `Conflict`, or what declaring fails with.
    pub async fn import_definitions(&self, defs: BrokerDefinitions) -> Result<ImportReport> {
        let mut report = ImportReport::default();
        let mut known: BTreeSet<String> = self.access().vhosts().into_iter().collect();
        known.extend(defs.vhosts.iter().map(|v| v.name.clone()));
        let queues = defs
            .queues
            .iter()
            .map(|q| {
                known_vhost(&known, "queue", &q.name, &q.vhost)?;
                let kind = match q.stream_options()? {
                    Some(stream) => Err(stream),
                    None => Ok(q.options()?),
                };
                Ok((q.vhost.clone(), q.name.clone(), kind))
            })
            .collect::<Result<Vec<_>>>()?;
        let exchanges = defs
            .exchanges
            .iter()
            .filter(|e| !e.name.is_empty() && !is_built_in(&e.name))
            .map(|e| {
                known_vhost(&known, "exchange", &e.name, &e.vhost)?;
                Ok((e.vhost.clone(), e.name.clone(), e.options()?))
            })
            .collect::<Result<Vec<_>>>()?;
        let bindings = defs
            .bindings
            .iter()
            .map(|b| {
                known_vhost(&known, "binding from exchange", &b.source, &b.vhost)?;
                let binding = Binding {
                    source: b.source.clone(),
                    destination: b.destination.clone(),
                    destination_type: b.destination_type,
                    routing_key: b.routing_key.clone(),
                    arguments: b
                        .arguments
                        .iter()
                        .map(|(k, v)| (k.clone(), text_of(v)))
                        .collect(),
                };
                Ok((b.vhost.clone(), binding))
            })
            .collect::<Result<Vec<_>>>()?;
        report.not_imported = not_imported(&defs.other);

        let access_defs = Definitions {
            users: defs.users,
            vhosts: defs.vhosts,
            permissions: defs.permissions,
        };
        (report.users, report.vhosts, report.permissions) = (
            access_defs.users.len(),
            access_defs.vhosts.len(),
            access_defs.permissions.len(),
        );
        let access = self.access();
        tokio::task::spawn_blocking(move || Arc::clone(&access).import(&access_defs))
            .await
            .map_err(|e| BrokerError::Internal {
                reason: format!("importing users: {e}"),
            })?
            .map_err(|e| invalid("users", e.to_string()))?;

        for (vhost, name, options) in exchanges {
            match self.vhost(&vhost)?.declare_exchange(&name, options).await? {
                Declared::Created => report.exchanges_created += 1,
                Declared::Existed => report.existed += 1,
            }
        }
        // Queues and streams (a stream is `Err(its options)`), before the bindings.
        for (vhost, name, kind) in queues {
            let view = self.vhost(&vhost)?;
            let declared = match kind {
                Ok(options) => view.declare(&name, options).await?,
                Err(stream) => view.declare_stream(&name, stream).await?,
            };
            match declared {
                Declared::Created => report.queues_created += 1,
                Declared::Existed => report.existed += 1,
            }
        }
        // Per vhost, each vhost's bindings all or none.
        let mut per_vhost: BTreeMap<String, Vec<Binding>> = BTreeMap::new();
        for (vhost, binding) in bindings {
            per_vhost.entry(vhost).or_default().push(binding);
        }
        for (vhost, bindings) in per_vhost {
            for declared in self.vhost(&vhost)?.bind_many(bindings).await? {
                match declared {
                    Declared::Created => report.bindings_created += 1,
                    Declared::Existed => report.existed += 1,
                }
            }
        }
        Ok(report)
    }
}

/// Adds the queues, exchanges and bindings of one vhost to `out`.
async fn export_vhost<S: LogStore>(view: &Vhost<S>, out: &mut BrokerDefinitions) {
    let vhost = view.name().to_owned();
    out.queues.extend(
        view.list()
            .await
            .into_iter()
            .filter(|q| !q.options.exclusive)
            .map(|q| QueueDef {
                arguments: rabbitmq_arguments(&q.options),
                durable: !q.options.transient,
                auto_delete: q.options.auto_delete,
                vhost: vhost.clone(),
                options: Some(q.options),
                stream: None,
                name: q.name,
            }),
    );
    // Streams, as RabbitMQ exports its stream queues (and weir's own options).
    out.queues.extend(view.streams().into_iter().map(|s| {
        let mut arguments = Map::new();
        arguments.insert("x-queue-type".into(), Value::String("stream".into()));
        if let Some(ms) = s.options.max_age_ms {
            arguments.insert(
                "x-max-age".into(),
                Value::String(format!("{}s", ms.div_ceil(1000))),
            );
        }
        if let Some(bytes) = s.options.max_bytes {
            arguments.insert("x-max-length-bytes".into(), Value::from(bytes));
        }
        if let Some(bytes) = s.options.segment_bytes {
            arguments.insert("x-stream-max-segment-size-bytes".into(), Value::from(bytes));
        }
        QueueDef {
            name: s.name,
            vhost: vhost.clone(),
            durable: true,
            auto_delete: false,
            arguments,
            options: None,
            stream: Some(s.options),
        }
    }));
    out.exchanges.extend(
        view.exchanges()
            .into_iter()
            .filter(|e| !e.name.is_empty() && !is_built_in(&e.name))
            .map(|e| {
                let mut arguments = Map::new();
                if let Some(ae) = &e.options.alternate_exchange {
                    arguments.insert("alternate-exchange".into(), Value::String(ae.clone()));
                }
                ExchangeDef {
                    name: e.name,
                    vhost: vhost.clone(),
                    kind: e.options.kind,
                    durable: e.options.durable,
                    auto_delete: e.options.auto_delete,
                    internal: e.options.internal,
                    arguments,
                }
            }),
    );
    out.bindings.extend(
        view.bindings(None, None)
            .into_iter()
            .filter(|b| {
                !(b.destination_type == DestinationType::Queue && view.is_exclusive(&b.destination))
            })
            .map(|b| BindingDef {
                source: b.source,
                vhost: vhost.clone(),
                destination: b.destination,
                destination_type: b.destination_type,
                routing_key: b.routing_key,
                arguments: b
                    .arguments
                    .into_iter()
                    .map(|(k, v)| (k, Value::String(v)))
                    .collect(),
            }),
    );
}

/// What the document has that weir does not build (RabbitMQ's `policies`,
/// `parameters`...): the keys of its non-empty sections.
fn not_imported(other: &BTreeMap<String, Value>) -> Vec<String> {
    other
        .iter()
        .filter(|(key, value)| match value {
            Value::Array(a) => !a.is_empty(),
            Value::Object(o) => !o.is_empty(),
            Value::Null => false,
            _ => !METADATA.contains(&key.as_str()),
        })
        .map(|(key, _)| key.clone())
        .collect()
}
