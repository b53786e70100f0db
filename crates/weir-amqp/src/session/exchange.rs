//! The `exchange` class: declare, delete, bind, unbind, against the broker.

use amq_protocol::protocol::{AMQPClass, exchange};
use amq_protocol::types::AMQPValue;
use weir_broker::access::Operation;
use weir_broker::{DestinationType, ExchangeOptions, ExchangeType};

use super::Session;
use super::common::{missing_is_fine, server_only};
use crate::arguments::binding;
use crate::codes::{ACCESS_REFUSED, COMMAND_INVALID, Exception};

impl Session {
    pub(super) async fn on_exchange(
        &mut self,
        ch: u16,
        m: exchange::AMQPMethod,
    ) -> Result<(), Exception> {
        match m {
            exchange::AMQPMethod::Declare(d) => self.declare_exchange(ch, d).await?,
            exchange::AMQPMethod::Delete(d) => {
                self.allow(Operation::Configure, "exchange", d.exchange.as_str())?;
                missing_is_fine(
                    self.broker
                        .delete_exchange(d.exchange.as_str(), d.if_unused)
                        .await,
                )?;
                if !d.nowait {
                    self.conn.method(
                        ch,
                        AMQPClass::Exchange(exchange::AMQPMethod::DeleteOk(exchange::DeleteOk {})),
                    );
                }
            }
            exchange::AMQPMethod::Bind(b) => {
                let binding = binding(
                    b.source.as_str(),
                    b.destination.as_str(),
                    DestinationType::Exchange,
                    &b.routing_key,
                    &b.arguments,
                );
                self.allow_binding(&binding)?;
                self.broker.bind(binding).await.map_err(Exception::from)?;
                if !b.nowait {
                    self.conn.method(
                        ch,
                        AMQPClass::Exchange(exchange::AMQPMethod::BindOk(exchange::BindOk {})),
                    );
                }
            }
            exchange::AMQPMethod::Unbind(b) => {
                let binding = binding(
                    b.source.as_str(),
                    b.destination.as_str(),
                    DestinationType::Exchange,
                    &b.routing_key,
                    &b.arguments,
                );
                self.allow_binding(&binding)?;
                missing_is_fine(self.broker.unbind(&binding).await)?;
                if !b.nowait {
                    self.conn.method(
                        ch,
                        AMQPClass::Exchange(exchange::AMQPMethod::UnbindOk(exchange::UnbindOk {})),
                    );
                }
            }
            other => return Err(server_only(&AMQPClass::Exchange(other))),
        }
        Ok(())
    }

    /// `exchange.declare`: passive (it must exist), or created with its type and options.
    async fn declare_exchange(&mut self, ch: u16, d: exchange::Declare) -> Result<(), Exception> {
        let name = d.exchange.as_str();
        if d.passive {
            self.broker.exchange(name).map_err(Exception::from)?;
        } else {
            if name.is_empty()
                || (name.starts_with("amq.") && !weir_broker::routing::is_built_in(name))
            {
                return Err(Exception::channel(
                    ACCESS_REFUSED,
                    format!("exchange name '{name}' contains reserved prefix 'amq.*'"),
                ));
            }
            self.allow(Operation::Configure, "exchange", name)?;
            let kind = match d.kind.as_str() {
                "direct" => ExchangeType::Direct,
                "topic" => ExchangeType::Topic,
                "fanout" => ExchangeType::Fanout,
                "headers" => ExchangeType::Headers,
                other => {
                    return Err(Exception::connection(
                        COMMAND_INVALID,
                        format!("unknown exchange type '{other}'"),
                    ));
                }
            };
            let alternate = d
                .arguments
                .inner()
                .get("alternate-exchange")
                .and_then(|v| match v {
                    AMQPValue::LongString(s) => {
                        std::str::from_utf8(s.as_bytes()).ok().map(str::to_owned)
                    }
                    AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
                    _ => None,
                });
            if let Some(ae) = &alternate {
                // As RabbitMQ: publishing through it writes to the alternate.
                self.allow(Operation::Write, "exchange", ae)?;
                self.allow(Operation::Read, "exchange", name)?;
            }
            let options = ExchangeOptions {
                kind,
                durable: d.durable,
                auto_delete: d.auto_delete,
                alternate_exchange: alternate,
                internal: d.internal,
            };
            self.broker
                .declare_exchange(name, options)
                .await
                .map_err(Exception::from)?;
        }
        if !d.nowait {
            self.conn.method(
                ch,
                AMQPClass::Exchange(exchange::AMQPMethod::DeclareOk(exchange::DeclareOk {})),
            );
        }
        Ok(())
    }
}
