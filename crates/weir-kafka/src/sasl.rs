//! SASL over Kafka's SaslHandshake (version 1) and SaslAuthenticate: PLAIN
//! against the broker's users, with the same password checks (and the same
//! refusal delay) as an AMQP login. The user must have permissions in the front
//! end's vhost.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::{
    SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::StrBytes;
use weir_broker::connections::ClientInfo;

use crate::state::{Closed, Sasl, Session};

/// Mechanisms offered.
const MECHANISMS: &[&str] = &["PLAIN"];

impl Session {
    pub(crate) fn sasl_handshake(
        &mut self,
        request: &SaslHandshakeRequest,
    ) -> SaslHandshakeResponse {
        let mut response = SaslHandshakeResponse::default();
        response.mechanisms = MECHANISMS
            .iter()
            .map(|m| StrBytes::from_static_str(m))
            .collect();
        if self.sasl != Sasl::Start {
            response.error_code = ResponseError::IllegalSaslState.code();
            return response;
        }
        match MECHANISMS
            .iter()
            .find(|m| **m == request.mechanism.as_str())
        {
            Some(m) => self.sasl = Sasl::Chosen(m),
            None => response.error_code = ResponseError::UnsupportedSaslMechanism.code(),
        }
        response
    }

    pub(crate) async fn sasl_authenticate(
        &mut self,
        request: &SaslAuthenticateRequest,
    ) -> Result<SaslAuthenticateResponse, Closed> {
        let mut response = SaslAuthenticateResponse::default();
        if self.sasl != Sasl::Chosen("PLAIN") {
            response.error_code = ResponseError::IllegalSaslState.code();
            response.error_message = Some(StrBytes::from_static_str(
                "SaslAuthenticate before SaslHandshake",
            ));
            return Ok(response);
        }
        // authzid NUL user NUL password; the authorisation identity is ignored.
        let mut parts = request.auth_bytes.split(|b| *b == 0).skip(1);
        let user = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
        let password = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
        let access = self.broker.access();
        let checked = tokio::time::timeout(
            self.config.handshake_timeout,
            access.log_in(user.clone(), password, self.peer.ip()),
        )
        .await;
        let principal = match checked {
            Ok(Ok(p)) if access.check_vhost(&p, self.broker.name()).is_ok() => p,
            _ => {
                tracing::warn!(peer = %self.peer, %user, "Kafka SASL login refused");
                tokio::time::sleep(self.config.failed_login_delay).await;
                response.error_code = ResponseError::SaslAuthenticationFailed.code();
                response.error_message = Some(StrBytes::from_string(format!(
                    "Authentication failed: invalid credentials for user {user}, or no permissions in vhost {}",
                    self.broker.name()
                )));
                return Ok(response);
            }
        };
        self.registered
            .logged_in(&principal.name, ClientInfo::default());
        self.who = Some(principal);
        self.sasl = Sasl::Done;
        Ok(response)
    }
}
