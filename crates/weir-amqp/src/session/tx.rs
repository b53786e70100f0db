//! The `tx` class: select, commit, rollback.

use amq_protocol::protocol::{AMQPClass, tx};

use super::Session;
use super::basic::by_queue;
use super::common::server_only;
use super::publisher::queue_publishes;
use crate::channel::Commit;
use crate::codes::Exception;

impl Session {
    pub(super) async fn on_tx(&mut self, ch: u16, m: tx::AMQPMethod) -> Result<(), Exception> {
        match m {
            tx::AMQPMethod::Select(_) => {
                self.channel(ch)?.state.tx_select()?;
                self.conn
                    .method(ch, AMQPClass::Tx(tx::AMQPMethod::SelectOk(tx::SelectOk {})));
            }
            tx::AMQPMethod::Commit(_) => {
                let Commit { publishes, acks } = self.channel(ch)?.state.tx_commit()?;
                // Everything published in the transaction is durable before
                // commit-ok; then its acks.
                let done = queue_publishes(&self.broker, publishes)
                    .await
                    .outcomes()
                    .await;
                if let Some(e) = done.error {
                    return Err(e);
                }
                self.send_returns(ch, done.returns);
                for (tag, multiple) in acks {
                    let taken = self.settle_tags(ch, tag, multiple)?;
                    for (queue, receipts) in by_queue(taken) {
                        let report = self
                            .broker
                            .ack(&queue, receipts)
                            .await
                            .map_err(Exception::from)?;
                        self.broker
                            .traffic()
                            .acknowledged(u64::from(report.settled));
                    }
                }
                self.conn
                    .method(ch, AMQPClass::Tx(tx::AMQPMethod::CommitOk(tx::CommitOk {})));
            }
            tx::AMQPMethod::Rollback(_) => {
                self.channel(ch)?.state.tx_rollback()?;
                self.conn.method(
                    ch,
                    AMQPClass::Tx(tx::AMQPMethod::RollbackOk(tx::RollbackOk {})),
                );
            }
            other => return Err(server_only(&AMQPClass::Tx(other))),
        }
        Ok(())
    }
}
