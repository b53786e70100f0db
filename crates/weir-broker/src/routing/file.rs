//! `meta/routing.json`: the durable exchanges and bindings of a [`Router`], as
//! written and as read back at start (docs/on-disk-format.md).

use serde::{Deserialize, Serialize};

use super::{Binding, DestinationType, ExchangeOptions, Router};
use crate::error::Result;

/// What `meta/routing.json` holds.
#[derive(Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RoutingFile {
    exchanges: Vec<NamedExchange>,
    bindings: Vec<Binding>,
}

impl RoutingFile {
    /// The durable exchanges and bindings of `router`, as written.
    pub(crate) fn of(router: &Router) -> RoutingFile {
        let (exchanges, bindings) = router.durable();
        RoutingFile {
            exchanges: exchanges
                .into_iter()
                .map(|(name, options)| NamedExchange { name, options })
                .collect(),
            bindings,
        }
    }
}

/// Puts what `file` holds into `router`: every exchange (one that cannot be
/// declared fails the whole load), then the bindings, dropping (with a warning)
/// those to queues that no longer exist and those that no longer apply. Returns
/// how many exchanges it held.
pub(crate) fn load_router(
    router: &mut Router,
    file: RoutingFile,
    queue_exists: impl Fn(&str) -> bool,
) -> Result<usize> {
    let count = file.exchanges.len();
    for e in file.exchanges {
        router.declare(&e.name, e.options)?;
    }
    for b in file.bindings {
        if b.destination_type == DestinationType::Queue && !queue_exists(&b.destination) {
            tracing::warn!(source = %b.source, queue = %b.destination, "dropping a binding to a queue that no longer exists");
            continue;
        }
        if let Err(e) = router.bind(b) {
            tracing::warn!(error = %e, "dropping a stored binding that no longer applies");
        }
    }
    Ok(count)
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct NamedExchange {
    name: String,
    #[serde(flatten)]
    options: ExchangeOptions,
}
