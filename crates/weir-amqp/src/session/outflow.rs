//! What one connection sends, kept within bounds.
//!
//! * Deliveries (and direct replies) take the connection's byte [`Credit`] before
//!   their consumer takes them from the broker, and give it back as the socket takes
//!   their bytes. A client that stops reading stops receiving: its messages stay in
//!   their queues (an auto-ack consumer's too), not in weir's memory.
//! * Everything else the session writes answers the client's own input (method
//!   answers, `basic.get-ok`, returns, confirms). [`Output`] estimates how much of it
//!   waits, and the session stops reading the client while that is over the limit.
//! * The socket is written without waiting ([`Output::flush`]): the session goes on
//!   reading, ticking heartbeats and handling events while the peer is slow, and
//!   closes a peer that takes no byte for the write timeout ([`Output::deadline`]).

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::AsyncWrite;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::framing::Outbox;
use crate::socket::WriteHalf;

/// A connection's budget of bytes of deliveries taken from the broker and not yet
/// written to its socket, shared by its consumers (and by other connections'
/// direct replies to it).
///
/// Invariant: free permits + bytes held = `cap` + `debt`. Bytes are held from
/// before a consumer takes messages until the socket takes them. A batch can turn
/// out bigger than what was acquired for it (message sizes are known only once
/// taken); the difference is charged anyway, first from free permits and then as
/// debt, which releases pay back before any permit is free again. So a message
/// bigger than the whole credit is still delivered, and what a connection holds
/// stays within `cap` plus the overshoot of the batches in flight.
pub(super) struct Credit {
    permits: Semaphore,
    /// Bytes charged beyond the free permits; paid back first.
    debt: std::sync::Mutex<usize>,
    /// The whole credit (`[amqp] max_buffered_bytes`, at least 1).
    cap: usize,
}

impl Credit {
    pub(super) fn new(cap: usize) -> Credit {
        // acquire_many counts in u32.
        let cap = cap.clamp(1, u32::MAX as usize);
        Credit {
            permits: Semaphore::new(cap),
            debt: std::sync::Mutex::new(0),
            cap,
        }
    }

    pub(super) fn cap(&self) -> usize {
        self.cap
    }

    /// Waits until `least` bytes are free (at most the whole credit, so one message
    /// bigger than the credit waits for all of it, not forever), takes them and as
    /// much more up to `most` as is free now. Returns the bytes taken. Cancel-safe:
    /// a cancelled wait takes nothing.
    pub(super) async fn acquire(&self, least: usize, most: usize) -> usize {
        let least = least.clamp(1, self.cap);
        let Ok(first) = self.permits.acquire_many(least as u32).await else {
            // Never closed; as if nothing were needed.
            return 0;
        };
        first.forget();
        let more = most
            .saturating_sub(least)
            .min(self.permits.available_permits());
        if more > 0
            && let Ok(extra) = self.permits.try_acquire_many(more as u32)
        {
            extra.forget();
            return least + more;
        }
        least
    }

    /// Takes `bytes` now: what is free, the rest as debt.
    pub(super) fn charge(&self, bytes: usize) {
        if bytes == 0 {
            return;
        }
        let free = bytes.min(self.permits.available_permits());
        let taken = match (free > 0).then(|| self.permits.try_acquire_many(free as u32)) {
            Some(Ok(permits)) => {
                permits.forget();
                free
            }
            // Taken meanwhile by another consumer: all of it is debt.
            _ => 0,
        };
        *self.lock_debt() += bytes - taken;
    }

    /// Takes `bytes` if at least `min(bytes, cap)` of them are free now (the rest is
    /// charged as debt); `false`, taking nothing, otherwise.
    pub(super) fn try_take(&self, bytes: usize) -> bool {
        let now = bytes.clamp(1, self.cap);
        match self.permits.try_acquire_many(now as u32) {
            Ok(p) => {
                p.forget();
                self.charge(bytes.saturating_sub(now));
                true
            }
            Err(_) => false,
        }
    }

    /// `held` bytes were acquired for what turned out to take `used`: gives back
    /// the difference, or charges it.
    pub(super) fn settle(&self, held: usize, used: usize) {
        if used > held {
            self.charge(used - held);
        } else {
            self.release(held - used);
        }
    }

    /// Gives back `bytes` held: debt first, then free permits.
    pub(super) fn release(&self, bytes: usize) {
        if bytes == 0 {
            return;
        }
        let back = {
            let mut debt = self.lock_debt();
            let paid = bytes.min(*debt);
            *debt -= paid;
            bytes - paid
        };
        if back > 0 {
            self.permits.add_permits(back);
        }
    }

    fn lock_debt(&self) -> std::sync::MutexGuard<'_, usize> {
        // Nothing panics while holding it (integer arithmetic only).
        self.debt
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Bytes free now (tests).
    #[cfg(test)]
    fn free(&self) -> usize {
        self.permits.available_permits()
    }
}

/// The state of a connection's output between the outbox and the socket.
#[derive(Default)]
pub(super) struct Output {
    /// The socket took less than was offered: wait until it is writable again.
    pub(super) blocked: bool,
    /// When bytes were last taken by the socket (or began to wait, if none were)
    /// while more wait; `None` while nothing waits.
    stalled_since: Option<Instant>,
    /// Delivery credit of what the outbox holds, given back as bytes are written.
    held: usize,
    /// Estimated bytes of answers waiting: the client's input read (what a method
    /// is answered with is about its size, or less) plus the content of gets and
    /// returns, less what was written since. Zero once the outbox is empty.
    answers: usize,
}

impl Output {
    /// Deliveries holding `bytes` of credit went into the outbox.
    pub(super) fn hold(&mut self, bytes: usize) {
        self.held += bytes;
    }

    /// `bytes` of answers (input read, content of a get or a return) are on their
    /// way into the outbox.
    pub(super) fn answering(&mut self, bytes: usize) {
        self.answers = self.answers.saturating_add(bytes);
    }

    /// Whether the answers waiting are over `limit`: the client is not read until
    /// it has taken some of them.
    pub(super) fn backed_up(&self, limit: usize) -> bool {
        self.answers >= limit
    }

    /// When a peer that takes nothing more is closed.
    pub(super) fn deadline(&self, timeout: Duration) -> Option<Instant> {
        self.stalled_since.map(|t| t + timeout)
    }

    /// Writes what the socket takes now, without waiting, and gives back the credit
    /// of what was written. Sets [`Output::blocked`] when bytes are left. An error
    /// means the connection is broken.
    pub(super) async fn flush(
        &mut self,
        outbox: &mut Outbox,
        socket: &mut WriteHalf,
        credit: &Credit,
        now: Instant,
    ) -> io::Result<()> {
        let mut writer = TryWriter { socket, written: 0 };
        if !outbox.is_empty() {
            // Never waits: TryWriter reports a full socket as WouldBlock.
            match outbox.write_to(&mut writer).await {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.blocked = true,
                Err(e) => return Err(e),
            }
        }
        let written = writer.written;
        // Deliveries and answers leave the outbox in the order they went in, and
        // which bytes were which is not known here: written bytes pay back
        // delivery credit first, and whatever is left once the outbox is empty.
        let mut back = written.min(self.held);
        self.held -= back;
        self.answers = self.answers.saturating_sub(written);
        if outbox.is_empty() {
            back += std::mem::take(&mut self.held);
            self.answers = 0;
            self.stalled_since = None;
        } else if written > 0 || self.stalled_since.is_none() {
            self.stalled_since = Some(now);
        }
        credit.release(back);
        Ok(())
    }
}

/// Writes to the socket what it takes without waiting; a full socket is an
/// `io::ErrorKind::WouldBlock` error, which leaves the rest in the outbox.
struct TryWriter<'a> {
    socket: &'a mut WriteHalf,
    /// Bytes the socket took.
    written: usize,
}

impl TryWriter<'_> {
    fn took(&mut self, result: io::Result<usize>) -> Poll<io::Result<usize>> {
        if let Ok(n) = result {
            self.written += n;
        }
        Poll::Ready(result)
    }
}

impl AsyncWrite for TryWriter<'_> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = self.socket.try_write(buf);
        self.took(result)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = self.socket.try_write_vectored(bufs);
        self.took(result)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    /// What TLS still holds goes out now; some left over is `WouldBlock`, as for a
    /// write, so the session waits for room before it counts the outbox as sent.
    fn poll_flush(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.socket.try_flush())
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::socket::Socket;
    use tokio::io::AsyncRead;

    #[tokio::test]
    async fn acquire_takes_at_least_what_it_waits_for_and_what_is_free() {
        let credit = Credit::new(1000);
        assert_eq!(credit.acquire(100, 400).await, 400);
        assert_eq!(credit.acquire(100, 10_000).await, 600);
        assert_eq!(credit.free(), 0);
        // Nothing free: a wait, until a release.
        let wait = tokio::time::timeout(Duration::from_millis(20), credit.acquire(1, 1)).await;
        assert!(wait.is_err());
        credit.release(300);
        assert_eq!(credit.acquire(200, 200).await, 200);
        assert_eq!(credit.free(), 100);
    }

    #[tokio::test]
    async fn a_message_bigger_than_the_credit_waits_for_all_of_it_then_goes_into_debt() {
        let credit = Credit::new(1000);
        assert_eq!(credit.acquire(5000, 5000).await, 1000);
        credit.charge(4000);
        assert_eq!(credit.free(), 0);
        // The debt is paid back before anything is free again.
        credit.release(4500);
        assert_eq!(credit.free(), 500);
        credit.release(500);
        assert_eq!(credit.free(), 1000);
    }

    #[test]
    fn charges_take_what_is_free_then_debt() {
        let credit = Credit::new(1000);
        credit.charge(300);
        assert_eq!(credit.free(), 700);
        credit.charge(900);
        assert_eq!(credit.free(), 0);
        credit.release(200);
        assert_eq!(
            credit.free(),
            0,
            "the 200 over the credit are paid back first"
        );
        credit.release(1000);
        assert_eq!(credit.free(), 1000);
    }

    #[test]
    fn try_take_needs_the_smaller_of_the_size_and_the_credit() {
        let credit = Credit::new(1000);
        assert!(credit.try_take(600));
        assert!(!credit.try_take(600));
        assert!(credit.try_take(400));
        assert!(!credit.try_take(1));
        credit.release(1000);
        // Bigger than the whole credit: goes when all of it is free.
        assert!(credit.try_take(3000));
        assert_eq!(credit.free(), 0);
        credit.release(3000);
        assert_eq!(credit.free(), 1000);
    }

    /// A peer that does not read: the flush never waits, the socket's backlog keeps
    /// the credit of what it holds, the stall clock runs; once the peer reads,
    /// everything is written and the credit is back.
    async fn flush_never_waits(socket: Socket, mut peer: impl AsyncRead + Unpin + Send + 'static) {
        use amq_protocol::protocol::basic::AMQPProperties;
        use tokio::io::AsyncReadExt;

        let (read_half, mut write) = socket.split();
        let credit = Credit::new(1 << 30);
        let mut out = Output::default();
        let mut outbox = Outbox::default();
        let body = bytes::Bytes::from(vec![7u8; 64 * 1024]);
        let header = || amq_protocol::frame::AMQPContentHeader {
            class_id: 60,
            body_size: body.len() as u64,
            properties: AMQPProperties::default(),
        };
        // Far more than loopback's socket buffers hold.
        let mut queued = 0;
        while !out.blocked {
            assert!(credit.try_take(body.len()));
            out.hold(body.len());
            outbox.content(1, header(), &body, 131_072);
            queued += body.len();
            out.flush(&mut outbox, &mut write, &credit, Instant::now())
                .await
                .unwrap();
            assert!(queued < 1 << 29, "the socket never filled");
        }
        // One more while the socket is full: it stays in the outbox with its credit.
        assert!(credit.try_take(body.len()));
        out.hold(body.len());
        outbox.content(1, header(), &body, 131_072);
        queued += body.len();
        out.flush(&mut outbox, &mut write, &credit, Instant::now())
            .await
            .unwrap();
        assert!(out.blocked && !outbox.is_empty());
        assert!(out.deadline(Duration::from_secs(30)).is_some());
        // What the outbox still holds keeps its credit (how much of the last frame
        // the socket or TLS took depends on the kernel's buffers, so not all of it
        // need be held).
        assert!(out.held > 0);
        assert_eq!(credit.free() + out.held, 1 << 30);
        // The peer reads everything: the rest goes out as room comes.
        let reader = tokio::spawn(async move {
            let mut buf = vec![0u8; 1 << 16];
            let mut total = 0;
            while let Ok(n) = peer.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                total += n;
            }
            total
        });
        while !outbox.is_empty() || out.blocked {
            write.writable().await.unwrap();
            out.blocked = false;
            out.flush(&mut outbox, &mut write, &credit, Instant::now())
                .await
                .unwrap();
        }
        assert_eq!(out.held, 0);
        assert_eq!(credit.free(), 1 << 30);
        assert_eq!(out.deadline(Duration::from_secs(30)), None);
        tokio::io::AsyncWriteExt::shutdown(&mut write)
            .await
            .unwrap();
        drop(write);
        drop(read_half);
        assert!(reader.await.unwrap() >= queued);
    }

    #[tokio::test]
    async fn flush_never_waits_and_gives_credit_back_as_bytes_are_written() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let peer = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (socket, _) = listener.accept().await.unwrap();
        flush_never_waits(Socket::Tcp(socket), peer).await;
    }

    /// The same over TLS, where rustls holds bytes the socket did not take yet: they
    /// count as not sent until they are on the wire.
    #[tokio::test]
    async fn over_tls_too() {
        let (server, client) = crate::socket::tests::tls_pair().await;
        flush_never_waits(Socket::Tls(Box::new(server)), client).await;
    }

    #[test]
    fn answers_back_up_until_written() {
        let mut out = Output::default();
        out.answering(600);
        assert!(!out.backed_up(1000));
        out.answering(600);
        assert!(out.backed_up(1000));
        assert_eq!(out.deadline(Duration::from_secs(1)), None);
    }
}
