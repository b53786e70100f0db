//! One Kafka connection: read a request frame (size-checked), decode its header and
//! body with `kafka-protocol`, answer it; answers go out in the order the requests
//! came, as Kafka's protocol requires.
//!
//! A Produce (without transactions or idempotent producers' batches) is pipelined:
//! its appends are queued before the next request is read, and its answer waits
//! for their sync while the connection reads on, so the Produce requests a client
//! sends back to back (librdkafka does, with `linger.ms` 0) share one group commit
//! instead of paying a sync each. At most [`MAX_PIPELINED`] wait at once, within
//! the shared request budget. Every other request is answered once the answers
//! before it are out: idempotent batches are judged against the batches before
//! them once those are stored, and a read sees what the same connection produced.
//! (Kafka's own broker answers one request of a connection at a time; its appends
//! do not wait for a sync.)
//!
//! A request that does not decode, an API key weir does not know, a version it
//! does not serve (other than ApiVersions, which answers `UNSUPPORTED_VERSION` with
//! the list, as Kafka does) or a request before a required SASL login close this
//! connection only: the frame size is checked before anything is allocated for it.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use bytes::{Buf as _, BufMut as _, Bytes, BytesMut};
use futures_util::StreamExt as _;
use futures_util::stream::FuturesOrdered;
use kafka_protocol::messages::{
    ApiKey, ProduceRequest, RequestHeader, RequestKind, ResponseHeader, ResponseKind,
};
use kafka_protocol::protocol::{Decodable as _, Encodable as _};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use weir_broker::Broker;
use weir_broker::access::Principal;
use weir_broker::connections::ClientInfo;
use weir_broker::metrics::{Held, Protocol};

use crate::config::KafkaConfig;
use crate::state::{Closed, Request, Sasl, Session, Shared};
use crate::{apis, produce};

/// Most pipelined Produce requests of one connection awaiting their syncs at once.
pub(crate) const MAX_PIPELINED: usize = 128;

/// What reading the next request gave: a frame and its share of the request
/// budget, `None` at the end of the stream, or why the connection closes.
type NextFrame = Result<Option<(Bytes, OwnedSemaphorePermit)>, Closed>;

/// A pipelined answer: the encoded frame, or none (acks 0).
type Answering = Pin<Box<dyn Future<Output = Result<Option<BytesMut>, Closed>> + Send>>;

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
        next_request: CancellationToken::new(),
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

    async fn serve<S: AsyncRead + AsyncWrite + Unpin>(&mut self, socket: S) -> Result<(), Closed> {
        let budget = self.shared.request_budget.clone();
        let (max, idle) = (self.config.max_request_bytes, self.config.idle_timeout);
        let (reader, mut writer) = tokio::io::split(socket);
        let mut frames = FrameReader::new(reader);
        let mut pending: FuturesOrdered<Answering> = FuturesOrdered::new();
        let mut out = BytesMut::new();
        // A request read while a Fetch waited, to serve next.
        let mut read_ahead: Option<NextFrame> = None;
        loop {
            let frame = if let Some(frame) = read_ahead.take() {
                frame?
            } else {
                tokio::select! {
                    biased;
                    () = self.config.shutdown.cancelled() => return Err(Closed::Quietly),
                    reason = self.registered.close_requested() => return Err(Closed::Because(format!("closed by an operator: {reason}"))),
                    Some(answered) = pending.next(), if !pending.is_empty() => {
                        if let Some(answer) = answered? {
                            self.write(&mut writer, &answer).await?;
                        }
                        continue;
                    }
                    // Reading is cancel-safe: what a cancelled read took stays buffered.
                    frame = tokio::time::timeout(idle, frames.next(max, &budget)), if pending.len() < MAX_PIPELINED => {
                        frame.map_err(|_| Closed::Because("idle for too long".to_owned()))??
                    }
                }
            };
            let Some((frame, held)) = frame else {
                // The peer stopped sending: what it produced is still answered.
                self.flush(&mut pending, &mut writer).await?;
                return Err(Closed::Quietly);
            };
            let request = match decode(frame) {
                Ok(Decoded::Request(r)) => *r,
                Ok(Decoded::UnsupportedApiVersions(header)) => {
                    self.flush(&mut pending, &mut writer).await?;
                    let body = apis::unsupported(&header);
                    out.clear();
                    encode(
                        &mut out,
                        &header,
                        ApiKey::ApiVersions,
                        0,
                        &ResponseKind::ApiVersions(body),
                    )?;
                    self.write(&mut writer, &out).await?;
                    continue;
                }
                Err(reason) => return Err(Closed::Because(reason)),
            };
            let request = match request {
                Request {
                    header,
                    body: RequestKind::Produce(body),
                    ..
                } if self.who.is_some() && produce::pipelines(&body) => {
                    pending.push_back(self.pipelined(header, body, held).await);
                    continue;
                }
                other => other,
            };
            self.flush(&mut pending, &mut writer).await?;
            let version = request.header.request_api_version;
            let (header, key) = (request.header.clone(), request.key);
            let answered = if key == ApiKey::Fetch {
                let (answered, next) = self.answer_fetch(request, &mut frames, &budget).await;
                read_ahead = next;
                answered
            } else {
                self.answer(request).await
            };
            let Some(response) = answered? else {
                continue;
            };
            out.clear();
            encode(&mut out, &header, key, version, &response)?;
            self.write(&mut writer, &out).await?;
            drop(held);
        }
    }

    /// Answers a Fetch while reading the connection's next request. A Fetch waits
    /// up to its `max_wait_ms` for records, and answers go out in order, so a
    /// ListOffsets or Metadata request sent behind it would wait as long: when one
    /// comes, the Fetch is answered at once with what it has (a next Fetch lets it
    /// wait). Kafka's broker lets the later request wait; librdkafka, which sends
    /// ListOffsets behind a waiting Fetch when a group assigns partitions, can take
    /// a reply delayed past a rebalance for a reason to reset a partition to its
    /// `auto.offset.reset` later. The request read stays for the loop to serve.
    async fn answer_fetch<R: AsyncRead + Unpin>(
        &mut self,
        request: Request,
        frames: &mut FrameReader<R>,
        budget: &Arc<Semaphore>,
    ) -> (Result<Option<ResponseKind>, Closed>, Option<NextFrame>) {
        let cut = CancellationToken::new();
        self.next_request = cut.clone();
        let max = self.config.max_request_bytes;
        let mut next = None;
        let answering = self.answer(request);
        tokio::pin!(answering);
        loop {
            tokio::select! {
                answered = &mut answering => return (answered, next),
                // Cancel-safe, as in the loop; one request ahead at most.
                frame = frames.next(max, budget), if next.is_none() => {
                    // A frame holds 8 bytes at least: its key comes first.
                    let key = |b: &Bytes| ApiKey::try_from(i16::from_be_bytes([b[0], b[1]]));
                    if !matches!(&frame, Ok(Some((bytes, _))) if key(bytes) == Ok(ApiKey::Fetch)) {
                        cut.cancel();
                    }
                    next = Some(frame);
                }
            }
        }
    }

    /// A pipelined Produce's answer, once its appends are queued: the future is
    /// polled once here, before the next request is read, so that appends are
    /// queued in the order the requests came.
    async fn pipelined(
        &self,
        header: RequestHeader,
        body: ProduceRequest,
        held: OwnedSemaphorePermit,
    ) -> Answering {
        let producing = self.producing();
        let mut answering: Answering = Box::pin(async move {
            let Some(response) = producing.produce(body).await else {
                return Ok(None);
            };
            drop(held);
            let version = header.request_api_version;
            let mut out = BytesMut::new();
            let response = ResponseKind::Produce(response);
            encode(&mut out, &header, ApiKey::Produce, version, &response)?;
            Ok(Some(out))
        });
        match std::future::poll_fn(|cx| Poll::Ready(answering.as_mut().poll(cx))).await {
            Poll::Ready(answered) => Box::pin(std::future::ready(answered)),
            Poll::Pending => answering,
        }
    }

    /// Writes out the pipelined answers still awaited, in order.
    async fn flush<W: AsyncWrite + Unpin>(
        &self,
        pending: &mut FuturesOrdered<Answering>,
        writer: &mut W,
    ) -> Result<(), Closed> {
        while let Some(answered) = pending.next().await {
            if let Some(answer) = answered? {
                self.write(writer, &answer).await?;
            }
        }
        Ok(())
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

/// Reads size-prefixed frames, cancel-safe: the bytes a cancelled read took stay
/// in the buffer for the next call. It reads no further than the frame at hand, so
/// it holds one frame at most.
pub(crate) struct FrameReader<R> {
    inner: R,
    buf: BytesMut,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub(crate) fn new(inner: R) -> FrameReader<R> {
        FrameReader {
            inner,
            buf: BytesMut::new(),
        }
    }

    /// The next frame, holding its size in `budget` (KiB) while the request lives;
    /// `None` at a clean end of the stream.
    pub(crate) async fn next(
        &mut self,
        max: usize,
        budget: &Arc<Semaphore>,
    ) -> Result<Option<(Bytes, OwnedSemaphorePermit)>, Closed> {
        while self.buf.len() < 4 {
            if self.fill(4).await? == 0 {
                return Ok(None);
            }
        }
        let size = i32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]);
        let size = usize::try_from(size)
            .ok()
            .filter(|s| *s >= 8 && *s <= max)
            .ok_or_else(|| Closed::Because(format!("a request of {size} bytes (limit {max})")))?;
        // Every connection's requests together stay within the budget: a request
        // waits for room before its body is read.
        let kib = u32::try_from(size.div_ceil(1024)).unwrap_or(u32::MAX);
        let held = budget
            .clone()
            .acquire_many_owned(kib)
            .await
            .map_err(|_| Closed::Quietly)?;
        while self.buf.len() < 4 + size {
            if self.fill(4 + size).await? == 0 {
                return Err(Closed::Because(
                    "reading a request: the connection ended inside it".to_owned(),
                ));
            }
        }
        self.buf.advance(4);
        Ok(Some((self.buf.split_to(size).freeze(), held)))
    }

    /// Reads what there is, up to `want` bytes in the buffer: how many came (0 at
    /// the end of the stream).
    async fn fill(&mut self, want: usize) -> Result<usize, Closed> {
        let missing = want - self.buf.len();
        self.buf.reserve(missing);
        let mut limited = (&mut self.inner).take(missing as u64);
        limited
            .read_buf(&mut self.buf)
            .await
            .map_err(|e| Closed::Because(format!("reading: {e}")))
    }
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
        let budget = Arc::new(Semaphore::new(4));
        let (a, b) = (framed(4096), framed(3000));
        let mut a = FrameReader::new(&a[..]);
        let mut b = FrameReader::new(&b[..]);
        let (first, held) = a.next(4096, &budget).await.unwrap().unwrap();
        assert_eq!(first.len(), 4096);
        let mut second = std::pin::pin!(b.next(4096, &budget));
        assert!(
            second.as_mut().now_or_never().is_none(),
            "no room while the first is held"
        );
        drop(held);
        let (second, _held) = second.await.unwrap().unwrap();
        assert_eq!(second.len(), 3000);
        // Over the size limit: refused before anything is read or held.
        let big = framed(5000);
        assert!(
            FrameReader::new(&big[..])
                .next(4096, &budget)
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn a_read_cancelled_inside_a_frame_loses_nothing() {
        let budget = Arc::new(Semaphore::new(64));
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let mut frames = FrameReader::new(server);
        let mut both = framed(100);
        both.extend(framed(20));
        client.write_all(&both[..50]).await.unwrap();
        // Cancelled with half of the first frame read: it stays buffered.
        assert!(frames.next(4096, &budget).now_or_never().is_none());
        client.write_all(&both[50..]).await.unwrap();
        let (first, _a) = frames.next(4096, &budget).await.unwrap().unwrap();
        let (second, _b) = frames.next(4096, &budget).await.unwrap().unwrap();
        assert_eq!((first.len(), second.len()), (100, 20));
        drop(client);
        assert!(
            frames.next(4096, &budget).await.unwrap().is_none(),
            "a clean end"
        );
    }
}
