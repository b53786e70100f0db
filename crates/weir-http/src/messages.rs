//! A message as sent over HTTP ([`MessageIn`]) and its translation to the
//! broker's [`SendMessage`], shared by the queue and the exchange routes.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use serde::Deserialize;
use weir_broker::SendMessage;

use crate::error::ApiError;
use crate::extract::Batched;

/// One message as sent over HTTP.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MessageIn {
    pub(crate) body: Option<String>,
    pub(crate) body_base64: Option<String>,
    #[serde(default)]
    pub(crate) headers: BTreeMap<String, String>,
    pub(crate) id: Option<String>,
    pub(crate) priority: Option<u8>,
    pub(crate) delay_ms: Option<u64>,
    pub(crate) group: Option<String>,
    pub(crate) ttl_ms: Option<u64>,
}

impl Batched for MessageIn {
    const FIELD: &'static str = "messages";
}

pub(crate) fn message_in(i: usize, m: MessageIn) -> Result<SendMessage, ApiError> {
    let body = match (m.body, m.body_base64) {
        (Some(text), None) => Bytes::from(text),
        (None, Some(b64)) => Bytes::from(BASE64.decode(b64.as_bytes()).map_err(|e| {
            ApiError::bad_request(
                "invalid_argument",
                format!("messages[{i}].body_base64 is not valid base64: {e}"),
            )
        })?),
        (None, None) => {
            return Err(ApiError::bad_request(
                "invalid_argument",
                format!("messages[{i}] needs a body (text) or body_base64 (binary)"),
            ));
        }
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "invalid_argument",
                format!("messages[{i}] has both body and body_base64; give one"),
            ));
        }
    };
    Ok(SendMessage {
        id: m.id,
        body,
        headers: m.headers,
        priority: m.priority,
        delay_ms: m.delay_ms,
        group: m.group,
        ttl_ms: m.ttl_ms,
        ..SendMessage::default()
    })
}
