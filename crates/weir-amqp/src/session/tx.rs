//! The `tx` class: select, commit, rollback.

use amq_protocol::protocol::{AMQPClass, tx};

use super::Session;
use super::basic::by_queue;
use super::common::server_only;
use super::publisher::queue_publishes;
use crate::codes::{Exception, PRECONDITION_FAILED};

impl Session {
    pub(super) async fn on_tx(&mut self, ch: u16, m: tx::AMQPMethod) -> Result<(), Exception> {
        match m {
            tx::AMQPMethod::Select(_) => {
                let c = self.channel(ch)?;
                if c.confirm {
                    return Err(Exception::channel(
                        PRECONDITION_FAILED,
                        "a channel in confirm mode cannot be made transactional",
                    ));
                }
                c.tx = true;
                self.conn
                    .method(ch, AMQPClass::Tx(tx::AMQPMethod::SelectOk(tx::SelectOk {})));
            }
            tx::AMQPMethod::Commit(_) => {
                let c = self.channel(ch)?;
                if !c.tx {
                    return Err(Exception::channel(
                        PRECONDITION_FAILED,
                        "channel is not transactional",
                    ));
                }
                let publishes = std::mem::take(&mut c.tx_publishes);
                let acks = std::mem::take(&mut c.tx_acks);
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
                    let taken = self.take_tags(ch, tag, multiple)?;
                    for (queue, receipts) in by_queue(taken) {
                        self.broker
                            .ack(&queue, receipts)
                            .await
                            .map_err(Exception::from)?;
                    }
                }
                self.conn
                    .method(ch, AMQPClass::Tx(tx::AMQPMethod::CommitOk(tx::CommitOk {})));
            }
            tx::AMQPMethod::Rollback(_) => {
                let c = self.channel(ch)?;
                if !c.tx {
                    return Err(Exception::channel(
                        PRECONDITION_FAILED,
                        "channel is not transactional",
                    ));
                }
                c.tx_publishes.clear();
                c.tx_acks.clear();
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
