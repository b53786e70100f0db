//! `weir bench`: load generators against a running broker, one file each, over
//! what they share (`measure`: histograms, `/proc` figures, `--compare`) and the
//! run verification (`tally`).
//!
//! - `http`: producers send batches over the REST API, consumers receive and ack;
//! - `amqp`: the same workload over AMQP 0-9-1, against weir or RabbitMQ;
//! - `routing` (`weir bench publish`): fan-out and topic routing through exchanges;
//! - `connections`: many idle AMQP connections, the broker's memory per connection;
//! - `kafka`: the Kafka front end under librdkafka's load, beside weir's AMQP and
//!   HTTP stream paths;
//! - `stream`: appends to a stream over HTTP, consumer groups, a replay; or over
//!   AMQP (`--amqp`), side by side with RabbitMQ's stream queues.

mod amqp;
mod connections;
mod http;
mod kafka;
mod measure;
mod routing;
mod stream;
mod tally;

use std::process::ExitCode;

/// Load generators.
#[derive(clap::Subcommand, Debug)]
pub enum BenchCommand {
    /// Load the HTTP API: producers send batches, consumers receive and ack them.
    Http(http::HttpArgs),
    /// Publish through a fanout or topic exchange: the cost of fan-out and routing.
    Publish(routing::PublishArgs),
    /// Load any AMQP 0-9-1 broker (weir or RabbitMQ) with the same workload.
    Amqp(amqp::AmqpArgs),
    /// Hold many idle AMQP connections with heartbeats: the broker's memory per
    /// connection.
    Connections(connections::ConnectionsArgs),
    /// Append to a stream over HTTP (with consumer groups reading), then replay it;
    /// or over AMQP (`--amqp`), against weir or RabbitMQ.
    Stream(stream::StreamArgs),
    /// Produce to and consume from the Kafka listener with librdkafka, then the
    /// end-to-end latency at a fixed rate; with `--amqp` and `--http`, the same
    /// over weir's other stream paths, side by side.
    Kafka(kafka::KafkaArgs),
}

/// Runs a benchmark.
pub async fn run(cmd: BenchCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        BenchCommand::Http(args) => http::run(args).await,
        BenchCommand::Publish(args) => routing::run(args).await,
        BenchCommand::Amqp(args) => amqp::run(args).await,
        BenchCommand::Connections(args) => connections::run(args).await,
        BenchCommand::Stream(args) => stream::run(args).await,
        BenchCommand::Kafka(args) => kafka::run(args).await,
    }
}
