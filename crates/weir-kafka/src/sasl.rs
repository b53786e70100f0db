//! SASL over Kafka's SaslHandshake (version 1) and SaslAuthenticate: PLAIN
//! against the broker's users, with the same password checks (and the same
//! refusal delay) as an AMQP login, and SCRAM-SHA-256 against the SCRAM
//! credentials the broker keeps with each password (`crate::scram`). The user must
//! have permissions in the front end's vhost.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::{
    SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::StrBytes;
use weir_broker::connections::ClientInfo;

use crate::state::{Closed, Sasl, Session};

/// Mechanisms offered.
const MECHANISMS: &[&str] = &["PLAIN", "SCRAM-SHA-256"];

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
        match std::mem::take(&mut self.sasl) {
            Sasl::Chosen("SCRAM-SHA-256") => {
                return Ok(self.scram_first(&request.auth_bytes).await);
            }
            Sasl::Scram(exchange) => {
                return Ok(self.scram_final(&exchange, &request.auth_bytes).await);
            }
            other => self.sasl = other,
        }
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
            _ => return Ok(self.refused(&user, "wrong credentials").await),
        };
        self.logged_in(principal);
        Ok(response)
    }

    fn logged_in(&mut self, principal: weir_broker::access::Principal) {
        self.registered
            .logged_in(&principal.name, ClientInfo::default());
        self.who = Some(principal);
        self.sasl = Sasl::Done;
    }

    /// A refused login: logged, answered after the delay, and SASL starts over.
    async fn refused(&mut self, user: &str, why: &str) -> SaslAuthenticateResponse {
        tracing::warn!(peer = %self.peer, %user, why, "Kafka SASL login refused");
        tokio::time::sleep(self.config.failed_login_delay).await;
        self.sasl = Sasl::Start;
        let mut response = SaslAuthenticateResponse::default();
        response.error_code = ResponseError::SaslAuthenticationFailed.code();
        response.error_message = Some(StrBytes::from_string(format!(
            "Authentication failed: invalid credentials for user {user}, or no permissions in vhost {}",
            self.broker.name()
        )));
        response
    }

    async fn scram_first(&mut self, client_first: &[u8]) -> SaslAuthenticateResponse {
        let access = self.broker.access();
        let peer = self.peer.ip();
        match crate::scram::Exchange::start(client_first, |user| {
            access.scram_credentials(user, peer)
        }) {
            Ok((exchange, server_first)) => {
                self.sasl = Sasl::Scram(Box::new(exchange));
                let mut response = SaslAuthenticateResponse::default();
                response.auth_bytes = bytes::Bytes::from(server_first);
                response
            }
            Err(why) => self.refused("(unread)", &why).await,
        }
    }

    async fn scram_final(
        &mut self,
        exchange: &crate::scram::Exchange,
        client_final: &[u8],
    ) -> SaslAuthenticateResponse {
        let access = self.broker.access();
        let principal = access
            .principal(&exchange.user)
            .filter(|p| access.check_vhost(p, self.broker.name()).is_ok());
        match (exchange.finish(client_final), principal) {
            (Ok(server_final), Some(principal)) => {
                self.logged_in(principal);
                let mut response = SaslAuthenticateResponse::default();
                response.auth_bytes = bytes::Bytes::from(server_final);
                response
            }
            (Err(why), _) => self.refused(&exchange.user, &why).await,
            (Ok(_), None) => {
                self.refused(&exchange.user, "no permissions in the vhost")
                    .await
            }
        }
    }
}
