//! Small rules the method files share.

use amq_protocol::protocol::AMQPClass;
use weir_broker::BrokerError;

use crate::codes::{COMMAND_INVALID, Exception};
use crate::connection::method_name;

/// A method only a server sends, received from the client.
pub(super) fn server_only(class: &AMQPClass) -> Exception {
    Exception::connection(
        COMMAND_INVALID,
        format!("{} is not a method a client sends", method_name(class)),
    )
}

/// Deleting or unbinding what is not there is fine (RabbitMQ 3.x).
pub(super) fn missing_is_fine(result: Result<(), BrokerError>) -> Result<(), Exception> {
    match result {
        Err(BrokerError::NotFound { .. }) | Ok(()) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// 22 characters of randomness for generated names.
pub(super) fn random_suffix() -> String {
    use std::hash::{BuildHasher, RandomState};
    let a = RandomState::new().hash_one(std::time::SystemTime::now());
    let b = RandomState::new().hash_one(a);
    format!("{a:016x}{b:06x}").chars().take(22).collect()
}
