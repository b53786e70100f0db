//! A channel's methods in order: [`Session::on_channel_method`] makes a method
//! wait for what its channel published before it, then dispatches it to the file of
//! its class; the `channel` class (`channel.flow`) and `confirm.select` are here.

use amq_protocol::protocol::{AMQPClass, basic, channel, confirm};

use super::Session;
use super::common::server_only;
use crate::codes::Exception;

impl Session {
    pub(super) async fn on_channel_method(
        &mut self,
        ch: u16,
        class: AMQPClass,
    ) -> Result<(), Exception> {
        self.channel(ch)?;
        // A channel's methods take effect in order: what it published before this
        // method is in its queues before the method runs (a passive declare counts
        // it, a get finds it). Publishes and acks themselves need not wait.
        let ordered = !matches!(
            class,
            AMQPClass::Basic(
                basic::AMQPMethod::Ack(_)
                    | basic::AMQPMethod::Nack(_)
                    | basic::AMQPMethod::Reject(_)
            )
        );
        if ordered {
            self.publishes_done(ch).await;
            // One of those publishes may have closed the channel: this method is
            // then ignored, as everything after a channel.close is.
            if !self.conn.channel_usable(ch) {
                return Ok(());
            }
        }
        match class {
            AMQPClass::Channel(channel::AMQPMethod::Flow(flow)) => {
                // The client pauses (or resumes) deliveries to its consumers on this
                // channel; what is already on its way is requeued.
                let c = self.channel(ch)?;
                c.state.set_flow(flow.active);
                c.flow.0.send_replace(flow.active);
                self.conn.method(
                    ch,
                    AMQPClass::Channel(channel::AMQPMethod::FlowOk(channel::FlowOk {
                        active: flow.active,
                    })),
                );
            }
            AMQPClass::Exchange(m) => self.on_exchange(ch, m).await?,
            AMQPClass::Queue(m) => self.on_queue(ch, m).await?,
            AMQPClass::Basic(m) => self.on_basic(ch, m).await?,
            AMQPClass::Confirm(confirm::AMQPMethod::Select(select)) => {
                self.channel(ch)?.state.confirm_select()?;
                if !select.nowait {
                    self.conn.method(
                        ch,
                        AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(confirm::SelectOk {})),
                    );
                }
            }
            AMQPClass::Tx(m) => self.on_tx(ch, m).await?,
            other => return Err(server_only(&other)),
        }
        Ok(())
    }
}
