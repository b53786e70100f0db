//! A minimal AMQP 0-9-1 client for the load generator (`weir bench amqp`).
//!
//! A general client (lapin) spends about as much CPU per message as the broker it
//! measures, so on one machine it, not the broker, sets the pace. This one does only
//! what a benchmark needs, on one channel: publishes are encoded from a template
//! (only the body changes) and written many per system call; confirms and
//! deliveries are read from a buffer, with `basic.deliver` and `basic.ack` parsed by
//! hand; acks go out as one `basic.ack multiple` per read. Methods off the hot path
//! (handshake, declare, consume) use `amq-protocol`'s codec. It speaks to any AMQP
//! 0-9-1 broker, over TCP (`amqp://`) or TLS (`amqps://`, trusting the CAs given to
//! [`trust`]).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use amq_protocol::frame::{AMQPContentHeader, AMQPFrame, WriteContext, gen_frame};
use amq_protocol::protocol::basic::AMQPProperties;
use amq_protocol::protocol::{AMQPClass, basic, channel, confirm, connection, queue};
use amq_protocol::types::{FieldTable, LongString};
use amq_protocol::uri::{AMQPScheme, AMQPUri};
use anyhow::{Context as _, bail};
use bytes::{Buf, BytesMut};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

pub const FRAME_METHOD: u8 = 1;
pub const FRAME_HEADER: u8 = 2;
pub const FRAME_BODY: u8 = 3;
const FRAME_HEARTBEAT: u8 = 8;
const FRAME_END: u8 = 0xCE;
/// The one channel used.
const CH: u16 = 1;

/// One frame read: its type and payload.
pub struct Frame {
    pub kind: u8,
    pub payload: bytes::Bytes,
}

/// How `amqps://` connections are made: set once by [`trust`].
static TLS: OnceLock<TlsConnector> = OnceLock::new();

/// `amqps://` URLs trust the CA certificates in the PEM file `ca` (the process's
/// client connections all go to the brokers of one benchmark). Call once, before
/// connecting.
pub fn trust(ca: &std::path::Path) -> anyhow::Result<()> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in
        CertificateDer::pem_file_iter(ca).with_context(|| format!("reading {}", ca.display()))?
    {
        roots.add(cert.with_context(|| format!("a certificate in {}", ca.display()))?)?;
    }
    // ring, as the broker (the workspace's Cargo.toml says why).
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    if TLS.set(TlsConnector::from(Arc::new(config))).is_err() {
        bail!("the TLS trust is already set");
    }
    Ok(())
}

/// The reading half: a buffer over the socket (TCP or TLS).
pub struct Reader {
    read: Box<dyn AsyncRead + Send + Unpin>,
    buf: BytesMut,
}

/// The writing half (TCP or TLS).
pub struct Writer(Box<dyn AsyncWrite + Send + Unpin>);

impl Writer {
    /// Writes all of `bytes` and flushes: over TLS, what rustls took is on the wire
    /// only after a flush, and an answer may wait for it.
    pub async fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.0.write_all(bytes).await?;
        self.0.flush().await
    }
}

impl Reader {
    /// The next frame, reading more when the buffer holds none whole.
    pub async fn frame(&mut self) -> anyhow::Result<Frame> {
        loop {
            if let Some(frame) = self.buffered()? {
                return Ok(frame);
            }
            if self.read.read_buf(&mut self.buf).await? == 0 {
                bail!("the broker closed the connection");
            }
        }
    }

    /// The next frame if one is whole in the buffer.
    pub fn buffered(&mut self) -> anyhow::Result<Option<Frame>> {
        if self.buf.len() < 7 {
            return Ok(None);
        }
        let kind = self.buf[0];
        let size =
            u32::from_be_bytes([self.buf[3], self.buf[4], self.buf[5], self.buf[6]]) as usize;
        if self.buf.len() < 8 + size {
            self.buf.reserve(8 + size - self.buf.len());
            return Ok(None);
        }
        if self.buf[7 + size] != FRAME_END {
            bail!("a frame from the broker does not end with 0xCE");
        }
        let mut frame = self.buf.split_to(8 + size).freeze();
        frame.advance(7);
        frame.truncate(size);
        Ok(Some(Frame {
            kind,
            payload: frame,
        }))
    }

    /// The next method, skipping heartbeats; a `connection.close` or
    /// `channel.close` from the broker is an error with its text.
    pub async fn method(&mut self) -> anyhow::Result<AMQPClass> {
        loop {
            let frame = self.frame().await?;
            match frame.kind {
                FRAME_HEARTBEAT => {}
                FRAME_METHOD => return parse_method(&frame.payload),
                other => bail!("expected a method frame, got frame type {other}"),
            }
        }
    }
}

/// Parses a method payload; a close from the broker becomes an error.
pub fn parse_method(payload: &[u8]) -> anyhow::Result<AMQPClass> {
    let (_, class) = amq_protocol::protocol::parse_class(payload)
        .map_err(|e| anyhow::anyhow!("unparsable method from the broker: {e:?}"))?;
    match &class {
        AMQPClass::Connection(connection::AMQPMethod::Close(c)) => {
            bail!(
                "the broker closed the connection: {} {}",
                c.reply_code,
                c.reply_text
            )
        }
        AMQPClass::Channel(channel::AMQPMethod::Close(c)) => {
            bail!(
                "the broker closed the channel: {} {}",
                c.reply_code,
                c.reply_text
            )
        }
        _ => Ok(class),
    }
}

/// An open connection with channel 1 open.
/// A heartbeat frame.
pub const HEARTBEAT: &[u8] = &[8, 0, 0, 0, 0, 0, 0, 0xCE];

pub struct Client {
    pub reader: Reader,
    pub writer: Writer,
    pub frame_max: u32,
}

fn encode(frame: &AMQPFrame) -> Vec<u8> {
    gen_frame(frame)(WriteContext::from(Vec::new()))
        .map(|ctx| ctx.write)
        .expect("client frames encode")
}

impl Client {
    /// Connects, logs in (PLAIN) and opens channel 1, without heartbeats.
    pub async fn connect(url: &str) -> anyhow::Result<Client> {
        Client::connect_with(url, 0).await
    }

    /// Connects as [`Client::connect`], asking for heartbeats every `heartbeat_s`
    /// seconds (0: none); the caller then sends them (see [`HEARTBEAT`]).
    pub async fn connect_with(url: &str, heartbeat_s: u16) -> anyhow::Result<Client> {
        let uri: AMQPUri = url
            .parse()
            .map_err(|e| anyhow::anyhow!("bad AMQP URL {url}: {e}"))?;
        let address = format!("{}:{}", uri.authority.host, uri.authority.port);
        let stream = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(&address))
            .await
            .with_context(|| format!("connecting to {address}"))??;
        stream.set_nodelay(true)?;
        let (read, mut writer): (Box<dyn AsyncRead + Send + Unpin>, _) = match uri.scheme {
            AMQPScheme::AMQP => {
                let (read, write) = stream.into_split();
                (Box::new(read), Writer(Box::new(write)))
            }
            AMQPScheme::AMQPS => {
                let connector = TLS.get().context("amqps:// needs --tls-ca FILE")?;
                let name = ServerName::try_from(uri.authority.host.clone())
                    .with_context(|| format!("{} as a TLS server name", uri.authority.host))?;
                let tls =
                    tokio::time::timeout(Duration::from_secs(10), connector.connect(name, stream))
                        .await
                        .with_context(|| format!("TLS handshake with {address}"))?
                        .with_context(|| format!("TLS handshake with {address}"))?;
                let (read, write) = tokio::io::split(tls);
                (Box::new(read), Writer(Box::new(write)))
            }
        };
        let mut reader = Reader {
            read,
            buf: BytesMut::with_capacity(256 * 1024),
        };
        writer.write_all(b"AMQP\x00\x00\x09\x01").await?;
        let AMQPClass::Connection(connection::AMQPMethod::Start(_)) = reader.method().await? else {
            bail!("expected connection.start");
        };
        let user = &uri.authority.userinfo;
        let response = format!("\0{}\0{}", user.username, user.password);
        let mut client = Client {
            reader,
            writer,
            frame_max: 131_072,
        };
        client
            .send(
                0,
                AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
                    client_properties: FieldTable::default(),
                    mechanism: "PLAIN".into(),
                    response: LongString::from(response.into_bytes()),
                    locale: "en_US".into(),
                })),
            )
            .await?;
        let AMQPClass::Connection(connection::AMQPMethod::Tune(tune)) =
            client.reader.method().await?
        else {
            bail!("expected connection.tune (was the login refused?)");
        };
        client.frame_max = if tune.frame_max == 0 {
            131_072
        } else {
            tune.frame_max
        };
        client
            .send(
                0,
                AMQPClass::Connection(connection::AMQPMethod::TuneOk(connection::TuneOk {
                    channel_max: 1,
                    frame_max: client.frame_max,
                    heartbeat: heartbeat_s,
                })),
            )
            .await?;
        client
            .send(
                0,
                AMQPClass::Connection(connection::AMQPMethod::Open(connection::Open {
                    virtual_host: uri.vhost.as_str().into(),
                })),
            )
            .await?;
        let AMQPClass::Connection(connection::AMQPMethod::OpenOk(_)) =
            client.reader.method().await?
        else {
            bail!("expected connection.open-ok");
        };
        client
            .send(
                CH,
                AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
            )
            .await?;
        let AMQPClass::Channel(channel::AMQPMethod::OpenOk(_)) = client.reader.method().await?
        else {
            bail!("expected channel.open-ok");
        };
        Ok(client)
    }

    /// Writes one method.
    pub async fn send(&mut self, ch: u16, class: AMQPClass) -> anyhow::Result<()> {
        self.writer
            .write_all(&encode(&AMQPFrame::Method(ch, class)))
            .await?;
        Ok(())
    }

    /// Sends a method and waits for its answer.
    pub async fn call(&mut self, class: AMQPClass) -> anyhow::Result<AMQPClass> {
        self.send(CH, class).await?;
        self.reader.method().await
    }

    /// Declares a durable queue and purges it; a stream (`x-queue-type=stream`,
    /// which cannot be purged) is deleted and declared anew.
    pub async fn prepare_queue(&mut self, queue: &str, stream: bool) -> anyhow::Result<()> {
        let mut arguments = FieldTable::default();
        if stream {
            self.delete_queue(queue).await?;
            arguments.insert(
                "x-queue-type".into(),
                amq_protocol::types::AMQPValue::LongString("stream".into()),
            );
        }
        self.call(AMQPClass::Queue(queue::AMQPMethod::Declare(
            queue::Declare {
                queue: queue.into(),
                passive: false,
                durable: true,
                exclusive: false,
                auto_delete: false,
                nowait: false,
                arguments,
            },
        )))
        .await
        .context("declaring the queue")?;
        if stream {
            return Ok(());
        }
        self.call(AMQPClass::Queue(queue::AMQPMethod::Purge(queue::Purge {
            queue: queue.into(),
            nowait: false,
        })))
        .await
        .context("purging the queue")?;
        Ok(())
    }

    /// Deletes a queue or stream (nothing if there is none).
    pub async fn delete_queue(&mut self, queue: &str) -> anyhow::Result<()> {
        self.call(AMQPClass::Queue(queue::AMQPMethod::Delete(queue::Delete {
            queue: queue.into(),
            if_unused: false,
            if_empty: false,
            nowait: false,
        })))
        .await
        .with_context(|| format!("deleting {queue}"))?;
        Ok(())
    }

    pub async fn confirm_select(&mut self) -> anyhow::Result<()> {
        self.call(AMQPClass::Confirm(confirm::AMQPMethod::Select(
            confirm::Select { nowait: false },
        )))
        .await?;
        Ok(())
    }

    /// `basic.qos` then `basic.consume` (acks expected); a stream is read from its
    /// first record.
    pub async fn consume(
        &mut self,
        queue: &str,
        prefetch: u16,
        stream: bool,
    ) -> anyhow::Result<()> {
        let mut arguments = FieldTable::default();
        if stream {
            arguments.insert(
                "x-stream-offset".into(),
                amq_protocol::types::AMQPValue::LongString("first".into()),
            );
        }
        self.call(AMQPClass::Basic(basic::AMQPMethod::Qos(basic::Qos {
            prefetch_count: prefetch,
            global: false,
        })))
        .await?;
        self.call(AMQPClass::Basic(basic::AMQPMethod::Consume(
            basic::Consume {
                queue: queue.into(),
                consumer_tag: "".into(),
                no_local: false,
                no_ack: false,
                exclusive: false,
                nowait: false,
                arguments,
            },
        )))
        .await?;
        Ok(())
    }

    /// Closes the connection politely (waits briefly for close-ok).
    pub async fn close(mut self) {
        let _ = self
            .send(
                0,
                AMQPClass::Connection(connection::AMQPMethod::Close(connection::Close {
                    reply_code: 200,
                    reply_text: "done".into(),
                    class_id: 0,
                    method_id: 0,
                })),
            )
            .await;
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Ok(frame) = self.reader.frame().await {
                if frame.kind == FRAME_METHOD && frame.payload.get(..4) == Some(&[0, 10, 0, 51]) {
                    return;
                }
            }
        })
        .await;
    }
}

/// Publishes to one queue through the default exchange: the method and header
/// frames are encoded once; each message adds its body frames.
pub struct PublishTemplate {
    prefix: Vec<u8>,
    frame_max: usize,
}

impl PublishTemplate {
    pub fn new(queue: &str, size: usize, persistent: bool, frame_max: u32) -> PublishTemplate {
        let mut prefix = encode(&AMQPFrame::Method(
            CH,
            AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
                exchange: "".into(),
                routing_key: queue.into(),
                mandatory: false,
                immediate: false,
            })),
        ));
        let properties = if persistent {
            AMQPProperties::default().with_delivery_mode(2)
        } else {
            AMQPProperties::default()
        };
        prefix.extend(encode(&AMQPFrame::Header(
            CH,
            AMQPContentHeader {
                class_id: 60,
                body_size: size as u64,
                properties,
            },
        )));
        PublishTemplate {
            prefix,
            frame_max: frame_max as usize,
        }
    }

    /// Appends one publish of `body` to `out`.
    pub fn write(&self, body: &[u8], out: &mut BytesMut) {
        out.extend_from_slice(&self.prefix);
        for part in body.chunks(self.frame_max - 8) {
            out.extend_from_slice(&[FRAME_BODY]);
            out.extend_from_slice(&CH.to_be_bytes());
            out.extend_from_slice(&u32::try_from(part.len()).expect("fits").to_be_bytes());
            out.extend_from_slice(part);
            out.extend_from_slice(&[FRAME_END]);
        }
    }
}

/// A `basic.ack` or `basic.nack` from the broker (confirm mode), parsed by hand.
pub enum Confirm {
    Ack { tag: u64, multiple: bool },
    Nack { tag: u64, multiple: bool },
}

/// Reads a confirm from a method payload; `None` for other methods.
pub fn confirm(payload: &[u8]) -> anyhow::Result<Option<Confirm>> {
    match payload.get(..4) {
        Some([0, 60, 0, 80 | 120]) if payload.len() >= 13 => {
            let tag = u64::from_be_bytes(payload[4..12].try_into().expect("8 bytes"));
            let multiple = payload[12] & 1 != 0;
            Ok(Some(if payload[3] == 80 {
                Confirm::Ack { tag, multiple }
            } else {
                Confirm::Nack { tag, multiple }
            }))
        }
        _ => {
            // A return (unroutable) or anything else: parsed for errors.
            parse_method(payload)?;
            Ok(None)
        }
    }
}

/// The delivery tag of a `basic.deliver` payload (`None` for other methods).
pub fn delivery_tag(payload: &[u8]) -> anyhow::Result<Option<u64>> {
    if payload.get(..4) != Some(&[0, 60, 0, 60]) {
        parse_method(payload)?;
        return Ok(None);
    }
    // consumer-tag (short string), then the delivery tag.
    let tag_len = *payload.get(4).context("short basic.deliver")? as usize;
    let at = 5 + tag_len;
    let tag = payload.get(at..at + 8).context("short basic.deliver")?;
    Ok(Some(u64::from_be_bytes(tag.try_into().expect("8 bytes"))))
}

/// The body size a content header announces.
pub fn body_size(payload: &[u8]) -> anyhow::Result<u64> {
    let size = payload.get(4..12).context("short content header")?;
    Ok(u64::from_be_bytes(size.try_into().expect("8 bytes")))
}

/// `basic.ack` of everything up to `tag`.
pub fn ack_multiple(tag: u64, out: &mut BytesMut) {
    out.extend_from_slice(&[FRAME_METHOD]);
    out.extend_from_slice(&CH.to_be_bytes());
    out.extend_from_slice(&13u32.to_be_bytes());
    out.extend_from_slice(&[0, 60, 0, 80]);
    out.extend_from_slice(&tag.to_be_bytes());
    out.extend_from_slice(&[1, FRAME_END]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_written_frames_match_the_codec() {
        let mut out = BytesMut::new();
        ack_multiple(42, &mut out);
        let expected = encode(&AMQPFrame::Method(
            CH,
            AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack {
                delivery_tag: 42,
                multiple: true,
            })),
        ));
        assert_eq!(&out[..], &expected[..]);
        let Some(Confirm::Ack {
            tag: 42,
            multiple: true,
        }) = confirm(&expected[7..expected.len() - 1]).unwrap()
        else {
            panic!("ack not parsed");
        };
        let deliver = encode(&AMQPFrame::Method(
            CH,
            AMQPClass::Basic(basic::AMQPMethod::Deliver(basic::Deliver {
                consumer_tag: "ctag".into(),
                delivery_tag: 7,
                redelivered: false,
                exchange: "".into(),
                routing_key: "q".into(),
            })),
        ));
        assert_eq!(
            delivery_tag(&deliver[7..deliver.len() - 1]).unwrap(),
            Some(7)
        );
        let header = encode(&AMQPFrame::Header(
            CH,
            AMQPContentHeader {
                class_id: 60,
                body_size: 1234,
                properties: AMQPProperties::default(),
            },
        ));
        assert_eq!(body_size(&header[7..header.len() - 1]).unwrap(), 1234);
    }
}
