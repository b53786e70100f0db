//! The `weir` binary: the broker (`weir serve`), its HTTP client commands (`weir
//! queue`, `send`, `recv`, `dlq`), `weir worker` and `weir bench`. The only crate
//! that uses `anyhow` and installs a tracing subscriber.

mod amqp_wire;
mod bench;
mod client;
mod config;
mod file_limit;
#[cfg(test)]
mod fuzzing;
mod kafka_config;
mod serve;
mod tls;
mod worker;

use clap::{Parser, Subcommand};

/// mimalloc instead of the system allocator: the broker allocates many small,
/// short-lived buffers across threads (requests, records, replies), where glibc's
/// malloc spent close to half of the CPU of a fan-out publish (measured with perf).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// weir: a durable message broker in one binary.
#[derive(Parser, Debug)]
#[command(name = "weir", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the broker.
    Serve(serve::ServeArgs),
    /// Print the effective configuration (defaults < file < WEIR_* env < flags) as TOML.
    Config(serve::ServeArgs),
    /// Run a command once per message: body on stdin, exit 0 acks, failure retries.
    Worker(worker::WorkerArgs),
    /// Load generators.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    #[command(flatten)]
    Client(client::ClientCommand),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("weir: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve::run(args).await,
            Command::Config(args) => serve::show_config(&args),
            Command::Worker(args) => worker::run(args).await,
            Command::Bench(cmd) => bench::run(cmd).await,
            Command::Client(cmd) => client::run(cmd).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("weir: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
