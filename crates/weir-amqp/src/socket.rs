//! A connection's byte stream, plain TCP or TLS over TCP, split into the half the
//! session reads and the half it writes. A leaf: it knows no frame and no session.
//!
//! The session writes without waiting (`session/outflow.rs`): it offers the socket
//! what it holds, keeps what the socket does not take, and waits for room only in
//! its own `select!`. A TCP half has that (`try_write`, `writable`). A TLS stream
//! only has `AsyncWrite`, so [`WriteHalf`] polls it once with a waker that does
//! nothing (a pending poll is "would block") and waits for room by flushing it with
//! the session's own waker. TLS adds one thing to watch: bytes rustls took are not on
//! the wire yet (rustls holds at most 64 KiB of them), so once the session has
//! written everything it also flushes ([`WriteHalf::try_flush`]) and waits while
//! rustls still holds some.

use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_rustls::server::TlsStream;

/// An accepted connection: plain, or TLS after its handshake.
pub(crate) enum Socket {
    Tcp(TcpStream),
    /// Boxed: a rustls connection is a few hundred bytes, a TCP stream a few words.
    Tls(Box<TlsStream<TcpStream>>),
}

impl Socket {
    /// The two halves. A TCP stream splits without a lock; a TLS stream is one state
    /// machine for both directions, so its halves share it (`tokio::io::split`: an
    /// uncontended lock, both halves are polled by the session's one task).
    pub(crate) fn split(self) -> (ReadHalf, WriteHalf) {
        match self {
            Socket::Tcp(stream) => {
                let (read, write) = stream.into_split();
                (ReadHalf::Tcp(read), WriteHalf::Tcp(write))
            }
            Socket::Tls(stream) => {
                let (read, write) = tokio::io::split(*stream);
                (ReadHalf::Tls(read), WriteHalf::Tls(write))
            }
        }
    }
}

/// What the session reads from.
pub(crate) enum ReadHalf {
    Tcp(OwnedReadHalf),
    Tls(tokio::io::ReadHalf<TlsStream<TcpStream>>),
}

impl AsyncRead for ReadHalf {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ReadHalf::Tcp(read) => Pin::new(read).poll_read(cx, buf),
            ReadHalf::Tls(read) => Pin::new(read).poll_read(cx, buf),
        }
    }
}

/// What the session writes to.
pub(crate) enum WriteHalf {
    Tcp(OwnedWriteHalf),
    Tls(tokio::io::WriteHalf<TlsStream<TcpStream>>),
}

/// "Would block" for a poll that is pending.
fn now_or_would_block<T>(poll: Poll<io::Result<T>>) -> io::Result<T> {
    match poll {
        Poll::Ready(result) => result,
        Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
    }
}

impl WriteHalf {
    /// Writes what the socket takes now; `WouldBlock` if it takes nothing.
    pub(crate) fn try_write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            WriteHalf::Tcp(write) => write.try_write_vectored(bufs),
            WriteHalf::Tls(write) => {
                let mut cx = Context::from_waker(Waker::noop());
                now_or_would_block(Pin::new(write).poll_write_vectored(&mut cx, bufs))
            }
        }
    }

    /// Writes what the socket takes now; `WouldBlock` if it takes nothing.
    pub(crate) fn try_write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            WriteHalf::Tcp(write) => write.try_write(buf),
            WriteHalf::Tls(write) => {
                let mut cx = Context::from_waker(Waker::noop());
                now_or_would_block(Pin::new(write).poll_write(&mut cx, buf))
            }
        }
    }

    /// Puts on the wire what TLS still holds, without waiting; `WouldBlock` if some
    /// is left. Plain TCP holds nothing.
    pub(crate) fn try_flush(&mut self) -> io::Result<()> {
        match self {
            WriteHalf::Tcp(_) => Ok(()),
            WriteHalf::Tls(write) => {
                let mut cx = Context::from_waker(Waker::noop());
                now_or_would_block(Pin::new(write).poll_flush(&mut cx))
            }
        }
    }

    /// Waits until the socket takes more: for TCP until it is writable, for TLS
    /// until what rustls holds is on the wire. Cancel-safe.
    pub(crate) async fn writable(&mut self) -> io::Result<()> {
        match self {
            WriteHalf::Tcp(write) => write.writable().await,
            WriteHalf::Tls(write) => poll_fn(|cx| Pin::new(&mut *write).poll_flush(cx)).await,
        }
    }
}

impl AsyncWrite for WriteHalf {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            WriteHalf::Tcp(write) => Pin::new(write).poll_write(cx, buf),
            WriteHalf::Tls(write) => Pin::new(write).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteHalf::Tcp(write) => Pin::new(write).poll_flush(cx),
            WriteHalf::Tls(write) => Pin::new(write).poll_flush(cx),
        }
    }

    /// TLS sends its `close_notify` first.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteHalf::Tcp(write) => Pin::new(write).poll_shutdown(cx),
            WriteHalf::Tls(write) => Pin::new(write).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;

    use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    use tokio_rustls::rustls::{self, ClientConfig, RootCertStore, ServerConfig};
    use tokio_rustls::{TlsAcceptor, TlsConnector, client};

    use super::*;

    /// A TLS connection over loopback with a certificate made here: the server's end
    /// and the client's.
    pub(crate) async fn tls_pair() -> (TlsStream<TcpStream>, client::TlsStream<TcpStream>) {
        // ring on purpose (the workspace's Cargo.toml says why); rustls 0.23.48
        // deprecates it for lacking post-quantum key exchange.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let cert = made.cert.der().clone();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(made.signing_key.serialize_der()));
        let server = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)
            .unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(cert).unwrap();
        let client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let connect = TcpStream::connect(listener.local_addr().unwrap());
        let (connected, accepted) = tokio::join!(connect, listener.accept());
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let (client, server) = tokio::join!(
            TlsConnector::from(Arc::new(client)).connect(name, connected.unwrap()),
            TlsAcceptor::from(Arc::new(server)).accept(accepted.unwrap().0),
        );
        (server.unwrap(), client.unwrap())
    }
}
