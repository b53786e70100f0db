//! Reply codes, and the one place broker errors become AMQP channel or connection
//! exceptions.

use weir_broker::BrokerError;

pub(crate) const REPLY_SUCCESS: u16 = 200;
pub(crate) const NO_ROUTE: u16 = 312;
pub(crate) const CONNECTION_FORCED: u16 = 320;
pub(crate) const ACCESS_REFUSED: u16 = 403;
pub(crate) const NOT_FOUND: u16 = 404;
pub(crate) const RESOURCE_LOCKED: u16 = 405;
pub(crate) const PRECONDITION_FAILED: u16 = 406;
pub(crate) const FRAME_ERROR: u16 = 501;
pub(crate) const SYNTAX_ERROR: u16 = 502;
pub(crate) const COMMAND_INVALID: u16 = 503;
pub(crate) const CHANNEL_ERROR: u16 = 504;
pub(crate) const UNEXPECTED_FRAME: u16 = 505;
pub(crate) const RESOURCE_ERROR: u16 = 506;
pub(crate) const NOT_ALLOWED: u16 = 530;
pub(crate) const NOT_IMPLEMENTED: u16 = 540;
pub(crate) const INTERNAL_ERROR: u16 = 541;

/// An error that closes a channel or the whole connection, with the method that
/// caused it (class and method id, 0 when none).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Exception {
    pub(crate) connection: bool,
    pub(crate) code: u16,
    pub(crate) text: String,
    pub(crate) class_id: u16,
    pub(crate) method_id: u16,
}

impl Exception {
    pub(crate) fn channel(code: u16, text: impl Into<String>) -> Exception {
        Exception {
            connection: false,
            code,
            text: text.into(),
            class_id: 0,
            method_id: 0,
        }
    }

    pub(crate) fn connection(code: u16, text: impl Into<String>) -> Exception {
        Exception {
            connection: true,
            ..Exception::channel(code, text)
        }
    }

    /// Names the method that caused it.
    pub(crate) fn during(mut self, class_id: u16, method_id: u16) -> Exception {
        self.class_id = class_id;
        self.method_id = method_id;
        self
    }

    /// The reply text as sent: RabbitMQ's `CODE_NAME - text`, cut to fit a short
    /// string.
    pub(crate) fn reply_text(&self) -> String {
        short(&format!("{} - {}", name(self.code), self.text))
    }
}

impl From<BrokerError> for Exception {
    fn from(e: BrokerError) -> Exception {
        let text = e.to_string();
        match e {
            BrokerError::NotFound { .. } => Exception::channel(NOT_FOUND, text),
            BrokerError::AccessRefused { .. } => Exception::channel(ACCESS_REFUSED, text),
            BrokerError::Unavailable { .. } => Exception::connection(CONNECTION_FORCED, text),
            BrokerError::Storage { .. } | BrokerError::Internal { .. } => {
                Exception::connection(INTERNAL_ERROR, text)
            }
            // Different options, bad names and arguments, loops, limits, a full
            // queue, a receipt that is no lease: the request does not hold.
            BrokerError::Conflict { .. }
            | BrokerError::PreconditionFailed { .. }
            | BrokerError::BindingLoop { .. }
            | BrokerError::InvalidName { .. }
            | BrokerError::InvalidArgument { .. }
            | BrokerError::MalformedReceipt { .. }
            | BrokerError::StaleReceipt { .. }
            | BrokerError::LimitExceeded { .. }
            | BrokerError::QueueFull { .. }
            | BrokerError::NotOwner { .. } => Exception::channel(PRECONDITION_FAILED, text),
        }
    }
}

/// The spec's name of a reply code.
pub(crate) fn name(code: u16) -> &'static str {
    match code {
        REPLY_SUCCESS => "OK",
        NO_ROUTE => "NO_ROUTE",
        CONNECTION_FORCED => "CONNECTION_FORCED",
        ACCESS_REFUSED => "ACCESS_REFUSED",
        NOT_FOUND => "NOT_FOUND",
        RESOURCE_LOCKED => "RESOURCE_LOCKED",
        PRECONDITION_FAILED => "PRECONDITION_FAILED",
        FRAME_ERROR => "FRAME_ERROR",
        SYNTAX_ERROR => "SYNTAX_ERROR",
        COMMAND_INVALID => "COMMAND_INVALID",
        CHANNEL_ERROR => "CHANNEL_ERROR",
        UNEXPECTED_FRAME => "UNEXPECTED_FRAME",
        RESOURCE_ERROR => "RESOURCE_ERROR",
        NOT_ALLOWED => "NOT_ALLOWED",
        NOT_IMPLEMENTED => "NOT_IMPLEMENTED",
        INTERNAL_ERROR => "INTERNAL_ERROR",
        _ => "ERROR",
    }
}

/// `s` cut to at most 255 bytes on a character boundary (a short string).
pub(crate) fn short(s: &str) -> String {
    if s.len() <= 255 {
        return s.to_owned();
    }
    let mut end = 255;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_texts_are_cut_on_a_character_boundary() {
        let s = "é".repeat(200);
        let cut = short(&s);
        assert!(cut.len() <= 255);
        assert!(cut.chars().all(|c| c == 'é'));
    }

    #[test]
    fn broker_errors_map_to_reply_codes() {
        let e: Exception = BrokerError::NotFound {
            kind: weir_broker::Kind::Queue,
            name: "q".into(),
        }
        .into();
        assert_eq!((e.connection, e.code), (false, NOT_FOUND));
        assert!(e.reply_text().starts_with("NOT_FOUND - "));
    }
}
