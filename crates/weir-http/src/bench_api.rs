//! Hooks for the crate's criterion benchmark (`benches/deliveries.rs`), which can
//! only call public items. Not part of the API.

use axum::body::to_bytes;
use bytes::Bytes;
use weir_broker::Delivery;

/// `n` deliveries of `size`-byte text bodies, as a receive returns them.
#[must_use]
pub fn deliveries(n: usize, size: usize) -> Vec<Delivery> {
    (0..n)
        .map(|i| Delivery {
            receipt: Some(format!("{i:x}-{:x}", i * 7)),
            id: format!("01a20bb6aeaa1910191{i:013}"),
            body: Bytes::from("x".repeat(size)),
            headers: std::collections::BTreeMap::new(),
            priority: 0,
            group: None,
            delivery_count: 1,
            enqueued_at_ms: 1_795_492_851_370,
            dead_letter: None,
            properties: None,
            position: None,
        })
        .collect()
}

/// The body of the answer to a receive that got `got`: what `GET
/// /api/queues/{name}/messages` sends. Returns its length.
pub async fn receive_answer(got: &[Delivery]) -> usize {
    let response = crate::routes::deliveries(got);
    to_bytes(response.into_body(), usize::MAX)
        .await
        .map_or(0, |b| b.len())
}
