//! One Kafka connection: read a request frame (size-checked), decode its header and
//! body with `kafka-protocol`, answer it, in order. Kafka's own broker handles one
//! request of a connection at a time too (it mutes the socket until the answer is
//! out), so clients already pipeline across connections, not within one.
//!
//! A request that does not decode, an API key weir does not know, a version it
//! does not serve (other than ApiVersions, which answers `UNSUPPORTED_VERSION` with
//! the list, as Kafka does) or a request before a required SASL login close this
//! connection only: the frame size is checked before anything is allocated for it.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Buf as _, BufMut as _, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Decodable as _, Encodable as _};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::sync::{Semaphore, SemaphorePermit};
use weir_broker::Broker;
use weir_broker::access::Principal;
use weir_broker::connections::ClientInfo;
use weir_broker::metrics::{Held, Protocol};

use crate::apis;
use crate::config::KafkaConfig;
use crate::state::{Closed, Request, Sasl, Session, Shared};

/// Serves one connection until it closes, the peer goes idle or the broker stops.
pub(crate) async fn run<S>(
    socket: S,
    (peer, local): (SocketAddr, SocketAddr),
    broker: Broker,
    config: Arc<KafkaConfig>,
    shared: Arc<Shared>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let vhost = match broker.vhost(&config.vhost) {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(%peer, error = %e, "Kafka connection refused: its vhost is unusable");
            return;
        }
    };
    let registered = broker.connections().register(Protocol::Kafka, peer);
    registered.opened(&config.vhost);
    let mut session = Session {
        _counted: broker.front_ends().track(Protocol::Kafka, Held::Connection),
        who: None,
        client_noted: false,
        sasl: Sasl::default(),
        shared,
        broker: vhost,
        config,
        peer,
        local,
        registered,
    };
    session.who = session.anonymous();
    if let Some(who) = &session.who {
        session
            .registered
            .logged_in(&who.name, ClientInfo::default());
    }
    let outcome = session.serve(socket).await;
    if let Err(Closed::Because(reason)) = outcome {
        tracing::info!(%peer, %reason, "closing a Kafka connection");
    }
}

impl Session {
    /// The anonymous user, if configured and allowed from this peer.
    fn anonymous(&self) -> Option<Principal> {
        let name = self.config.anonymous_user.as_deref()?;
        self.broker.access().principal_from(name, self.peer.ip())
    }

    async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        mut socket: S,
    ) -> Result<(), Closed> {
        // A request holds its room in the budget while `self` answers it.
        let shared = self.shared.clone();
        let mut out = BytesMut::new();
        loop {
            let frame = tokio::select! {
                () = self.config.shutdown.cancelled() => return Err(Closed::Quietly),
                reason = self.registered.close_requested() => return Err(Closed::Because(format!("closed by an operator: {reason}"))),
                frame = tokio::time::timeout(self.config.idle_timeout, read_frame(&mut socket, self.config.max_request_bytes, &shared.request_budget)) => {
                    frame.map_err(|_| Closed::Because("idle for too long".to_owned()))??
                }
            };
            let Some((frame, _held)) = frame else {
                return Err(Closed::Quietly);
            };
            let request = match decode(frame) {
                Ok(Decoded::Request(r)) => *r,
                Ok(Decoded::UnsupportedApiVersions(header)) => {
                    let body = apis::unsupported(&header);
                    out.clear();
                    encode(
                        &mut out,
                        &header,
                        ApiKey::ApiVersions,
                        0,
                        &ResponseKind::ApiVersions(body),
                    )?;
                    self.write(&mut socket, &out).await?;
                    continue;
                }
                Err(reason) => return Err(Closed::Because(reason)),
            };
            let version = request.header.request_api_version;
            let (header, key) = (request.header.clone(), request.key);
            let Some(response) = self.answer(request).await? else {
                continue;
            };
            out.clear();
            encode(&mut out, &header, key, version, &response)?;
            self.write(&mut socket, &out).await?;
        }
    }

    async fn write<S: AsyncWrite + Unpin>(
        &self,
        socket: &mut S,
        bytes: &[u8],
    ) -> Result<(), Closed> {
        match tokio::time::timeout(self.config.write_timeout, socket.write_all(bytes)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Closed::Because(format!("writing: {e}"))),
            Err(_) => Err(Closed::Because(
                "a write made no progress in time".to_owned(),
            )),
        }
    }

    /// The answer to one request; `None` for a Produce with acks 0, which Kafka
    /// does not answer.
    async fn answer(&mut self, request: Request) -> Result<Option<ResponseKind>, Closed> {
        if self.who.is_none()
            && !matches!(
                request.key,
                ApiKey::ApiVersions | ApiKey::SaslHandshake | ApiKey::SaslAuthenticate
            )
        {
            return Err(Closed::Because(format!(
                "{:?} before a SASL login (no anonymous user is allowed here)",
                request.key
            )));
        }
        if !self.client_noted
            && let (Some(who), Some(client)) = (&self.who, &request.header.client_id)
        {
            self.client_noted = true;
            let client = ClientInfo {
                product: Some(client.as_str().to_owned()),
                ..ClientInfo::default()
            };
            self.registered.logged_in(&who.name, client);
        }
        crate::handlers::answer(self, request).await
    }
}

/// A request frame's outcome.
pub(crate) enum Decoded {
    Request(Box<Request>),
    /// ApiVersions at a version weir does not serve: answered at version 0.
    UnsupportedApiVersions(RequestHeader),
}

/// Reads one size-prefixed frame, holding its size in `budget` (KiB) while the
/// request lives; `None` at a clean end of the stream.
async fn read_frame<'a, S: AsyncRead + Unpin>(
    socket: &mut S,
    max: usize,
    budget: &'a Semaphore,
) -> Result<Option<(Bytes, SemaphorePermit<'a>)>, Closed> {
    let mut size = [0u8; 4];
    match socket.read_exact(&mut size).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(Closed::Because(format!("reading: {e}"))),
    }
    let size = i32::from_be_bytes(size);
    let size = usize::try_from(size)
        .ok()
        .filter(|s| *s >= 8 && *s <= max)
        .ok_or_else(|| Closed::Because(format!("a request of {size} bytes (limit {max})")))?;
    // Every connection's requests together stay within the budget: a request
    // waits for room before its body is read.
    let kib = u32::try_from(size.div_ceil(1024)).unwrap_or(u32::MAX);
    let held = budget
        .acquire_many(kib)
        .await
        .map_err(|_| Closed::Quietly)?;
    let mut frame = BytesMut::zeroed(size);
    socket
        .read_exact(&mut frame)
        .await
        .map_err(|e| Closed::Because(format!("reading a request: {e}")))?;
    Ok(Some((frame.freeze(), held)))
}

/// Decodes a frame's header and body.
pub(crate) fn decode(mut frame: Bytes) -> Result<Decoded, String> {
    let raw_key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let key = ApiKey::try_from(raw_key).map_err(|()| format!("unknown API key {raw_key}"))?;
    let served = apis::serves(key, version);
    // An ApiVersions request at a version weir does not know may have a header it
    // cannot know either: read its fixed start only (key, version, correlation id,
    // client id), as Kafka's broker does, to answer it.
    let header_version = if served || key != ApiKey::ApiVersions {
        key.request_header_version(version)
    } else {
        1
    };
    let header = RequestHeader::decode(&mut frame, header_version)
        .map_err(|e| format!("a request header does not decode: {e}"))?;
    if !served {
        if key == ApiKey::ApiVersions {
            return Ok(Decoded::UnsupportedApiVersions(header));
        }
        return Err(format!(
            "{key:?} version {version} is not served (see ApiVersions)"
        ));
    }
    let body = RequestKind::decode(key, &mut frame, version)
        .map_err(|e| format!("{key:?} v{version} does not decode: {e}"))?;
    // Bytes after the body are left alone, as Kafka's broker does (librdkafka's
    // Metadata v12 carries some).
    if frame.has_remaining() {
        tracing::debug!(
            bytes = frame.remaining(),
            ?key,
            version,
            "bytes after a request"
        );
    }
    Ok(Decoded::Request(Box::new(Request { header, key, body })))
}

/// Writes a size-prefixed response frame.
fn encode(
    out: &mut BytesMut,
    request: &RequestHeader,
    key: ApiKey,
    version: i16,
    body: &ResponseKind,
) -> Result<(), Closed> {
    out.put_i32(0);
    ResponseHeader::default()
        .with_correlation_id(request.correlation_id)
        .encode(out, key.response_header_version(version))
        .map_err(|e| Closed::Because(format!("encoding a response header: {e}")))?;
    body.encode(out, version)
        .map_err(|e| Closed::Because(format!("encoding a {key:?} v{version} response: {e}")))?;
    let size = i32::try_from(out.len() - 4)
        .map_err(|_| Closed::Because("a response over 2 GiB".to_owned()))?;
    out[..4].copy_from_slice(&size.to_be_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt as _;

    fn framed(len: usize) -> Vec<u8> {
        let mut bytes = u32::try_from(len).unwrap().to_be_bytes().to_vec();
        bytes.resize(4 + len, 7);
        bytes
    }

    #[tokio::test]
    async fn requests_wait_for_room_in_the_shared_budget() {
        let budget = Semaphore::new(4);
        let (mut a, mut b) = (&framed(4096)[..], &framed(3000)[..]);
        let (first, held) = read_frame(&mut a, 4096, &budget).await.unwrap().unwrap();
        assert_eq!(first.len(), 4096);
        let mut second = std::pin::pin!(read_frame(&mut b, 4096, &budget));
        assert!(
            second.as_mut().now_or_never().is_none(),
            "no room while the first is held"
        );
        drop(held);
        let (second, _held) = second.await.unwrap().unwrap();
        assert_eq!(second.len(), 3000);
        // Over the size limit: refused before anything is read or held.
        let mut big = &framed(5000)[..];
        assert!(read_frame(&mut big, 4096, &budget).await.is_err());
    }
}
