//! The server side of SASL SCRAM-SHA-256 (RFC 5802, RFC 7677) as Kafka clients
//! speak it over SaslAuthenticate: client-first, server-first, client-final,
//! server-final. The credentials are the broker's
//! (`weir_broker::access::scram`); this module parses the messages, keeps the
//! nonces and builds the auth message. No channel binding (a client asking for it
//! is refused), no extensions (Kafka's `tokenauth` delegation tokens are refused).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use weir_broker::access::scram::{ITERATIONS, ScramCredentials};

/// An exchange after the client's first message.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Exchange {
    pub user: String,
    /// `None` for an unknown user: the exchange goes on and fails at the proof,
    /// so the answer does not tell unknown users from wrong passwords.
    creds: Option<ScramCredentials>,
    gs2_header: String,
    client_first_bare: String,
    server_first: String,
    nonce: String,
}

/// A SCRAM name: `=2C` is a comma, `=3D` an equals sign.
fn unescape(name: &str) -> Option<String> {
    let out = name.replace("=2C", ",").replace("=3D", "=");
    (!out.contains('=')).then_some(out)
}

fn random_b64(bytes: usize) -> String {
    let mut raw = vec![0; bytes];
    getrandom::getrandom(&mut raw).expect("the operating system's random source");
    STANDARD.encode(raw)
}

impl Exchange {
    /// Reads the client's first message and answers the server's (`r=`, `s=`,
    /// `i=`), given how to find a user's credentials.
    pub(crate) fn start(
        client_first: &[u8],
        find: impl FnOnce(&str) -> Option<ScramCredentials>,
    ) -> Result<(Exchange, String), String> {
        let text = std::str::from_utf8(client_first).map_err(|_| "not UTF-8".to_owned())?;
        let mut parts = text.splitn(3, ',');
        let (flag, authzid, bare) = (parts.next(), parts.next(), parts.next());
        let (Some(flag), Some(authzid), Some(bare)) = (flag, authzid, bare) else {
            return Err("not a SCRAM client-first message".to_owned());
        };
        if flag != "n" && flag != "y" {
            return Err("channel binding is not supported".to_owned());
        }
        let mut user = None;
        let mut client_nonce = None;
        for attr in bare.split(',') {
            match attr.split_once('=') {
                Some(("n", v)) => user = unescape(v),
                Some(("r", v)) => client_nonce = Some(v.to_owned()),
                Some(("m", _)) | None => {
                    return Err("mandatory extensions are not supported".to_owned());
                }
                Some(("tokenauth", _)) => {
                    return Err("delegation tokens are not supported".to_owned());
                }
                Some(_) => {}
            }
        }
        let (Some(user), Some(client_nonce)) = (user, client_nonce) else {
            return Err("client-first lacks n= or r=".to_owned());
        };
        if client_nonce.is_empty() || client_nonce.contains(',') {
            return Err("a bad client nonce".to_owned());
        }
        let creds = find(&user);
        let (salt, iterations) = creds.as_ref().map_or_else(
            || (random_b64(16), ITERATIONS),
            |c| (STANDARD.encode(&c.salt), c.iterations),
        );
        let nonce = format!("{client_nonce}{}", random_b64(18));
        let server_first = format!("r={nonce},s={salt},i={iterations}");
        let exchange = Exchange {
            user,
            creds,
            gs2_header: format!("{flag},{authzid},"),
            client_first_bare: bare.to_owned(),
            server_first: server_first.clone(),
            nonce,
        };
        Ok((exchange, server_first))
    }

    /// Checks the client's final message; the server's final message (`v=`) if
    /// the proof is right.
    pub(crate) fn finish(&self, client_final: &[u8]) -> Result<String, String> {
        let text = std::str::from_utf8(client_final).map_err(|_| "not UTF-8".to_owned())?;
        let (without_proof, proof) = text
            .rsplit_once(",p=")
            .ok_or_else(|| "client-final lacks p=".to_owned())?;
        let mut binding = None;
        let mut nonce = None;
        for attr in without_proof.split(',') {
            match attr.split_once('=') {
                Some(("c", v)) => binding = Some(v),
                Some(("r", v)) => nonce = Some(v),
                _ => {}
            }
        }
        if binding.and_then(|b| STANDARD.decode(b).ok()).as_deref()
            != Some(self.gs2_header.as_bytes())
        {
            return Err("the channel binding does not match".to_owned());
        }
        if nonce != Some(self.nonce.as_str()) {
            return Err("the nonce does not match".to_owned());
        }
        let proof = STANDARD
            .decode(proof)
            .map_err(|_| "the proof is not base64".to_owned())?;
        let auth = format!(
            "{},{},{without_proof}",
            self.client_first_bare, self.server_first
        );
        match &self.creds {
            Some(creds) if creds.check_proof(auth.as_bytes(), &proof) => Ok(format!(
                "v={}",
                STANDARD.encode(creds.server_signature(auth.as_bytes()))
            )),
            _ => Err("wrong credentials".to_owned()),
        }
    }
}
