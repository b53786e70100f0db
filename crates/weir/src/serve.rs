//! `weir serve`: opens the broker, binds the listeners, prints the ready line and
//! runs until SIGTERM or Ctrl-C.
//!
//! Shutdown order: stop accepting HTTP and AMQP connections; close every AMQP
//! connection with `connection.close` 320 `CONNECTION_FORCED` (their unacked
//! messages go back to their queues; waited for up to 5 s); stop the broker (long
//! polls get empty answers, sends and acks in flight finish and are answered, logs
//! are synced and closed); let in-flight HTTP answers go out; exit.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use weir_broker::access::{DEFAULT_VHOST, Patterns};
use weir_broker::{Broker, BrokerConfig};

use crate::config::{self, Config};
use crate::file_limit;

/// Flags of `weir serve` (each overrides the file and the environment).
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// TOML config file (also `WEIR_CONFIG`).
    #[arg(long, env = "WEIR_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory [default: ./weir-data].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// HTTP address [default: 127.0.0.1:8080]; port 0 picks a free port.
    #[arg(long)]
    http_listen: Option<String>,
    /// AMQP 0-9-1 address [default: 127.0.0.1:5672] (pika, lapin, Celery...).
    #[arg(long)]
    amqp_listen: Option<String>,
    /// always | interval:MS | never [default: always].
    #[arg(long)]
    fsync: Option<String>,
    /// Log filter when `RUST_LOG` is unset [default: info].
    #[arg(long)]
    log_level: Option<String>,
}

fn load(args: &ServeArgs) -> anyhow::Result<Config> {
    let flags = [
        (
            "data_dir",
            args.data_dir.as_ref().map(|p| p.display().to_string()),
        ),
        ("http_listen", args.http_listen.clone()),
        ("amqp_listen", args.amqp_listen.clone()),
        ("fsync", args.fsync.clone()),
        ("log_level", args.log_level.clone()),
    ];
    let config = config::load(args.config.as_deref(), std::env::vars(), &flags)?;
    // Checked before anything starts.
    config.amqp.to_config(config.limits.max_message_bytes)?;
    let mut problems = config.http.problems();
    problems.extend(config.limits.problems());
    if !problems.is_empty() {
        anyhow::bail!("invalid configuration: {}", problems.join("; "));
    }
    Ok(config)
}

/// `weir config`: prints the effective configuration.
pub fn show_config(args: &ServeArgs) -> anyhow::Result<ExitCode> {
    let config = load(args)?;
    print!(
        "{}",
        toml::to_string(&config).context("rendering the configuration")?
    );
    Ok(ExitCode::SUCCESS)
}

fn init_tracing(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: a log file or journal gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .init();
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the broker");
            let _ = ctrl_c.await;
            return;
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
}

/// Runs the broker.
pub async fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let config = load(&args)?;
    init_tracing(&config.log_level);
    let max_connections =
        u64::from(config.http.max_connections) + u64::from(config.amqp.max_connections);
    let files = file_limit::raise_and_budget(max_connections);
    let log_files = config.log.open_files_limit(files.budget);
    tracing::info!(
        limit = ?files.limit,
        raised_from = ?files.raised_from,
        reserved_for_connections = files.connections,
        reserved_other = file_limit::FIXED_RESERVE,
        log_files = ?log_files,
        "open files"
    );
    if files.connections < max_connections {
        tracing::warn!(
            max_connections,
            reserved = files.connections,
            limit = ?files.limit,
            "http.max_connections + amqp.max_connections is over half the open-file limit; \
             only half is reserved for connections: raise the limit (LimitNOFILE) or lower them"
        );
    }
    // Process-wide settings of the logs, before the first one opens.
    weir_log::io::set_open_files_limit(log_files);
    if !weir_log::set_pool_threads(config.log.pool_threads()?) {
        tracing::warn!("the log pools were already running: log.threads is not applied");
    }
    let mut broker_config = BrokerConfig::new(&config.data_dir);
    broker_config.loopback_users = if config.amqp.guest_loopback_only {
        vec!["guest".to_owned()]
    } else {
        Vec::new()
    };
    broker_config.log.fsync = config.fsync;
    broker_config.log.segment_bytes = config.log.segment_bytes;
    broker_config.limits = config.limits.clone();
    let (broker, report) = Broker::open(broker_config).await.with_context(|| {
        format!(
            "opening data directory {} (open-file limit {:?})",
            config.data_dir.display(),
            files.limit
        )
    })?;
    tracing::info!(
        queues = report.queues,
        messages = report.messages,
        elapsed_ms = report.elapsed.as_millis() as u64,
        open_files = report.open_files,
        data_dir = %config.data_dir.display(),
        fsync = %config.fsync,
        "recovered"
    );
    seed_users(&broker, &config.amqp.seed_users()?).await?;
    let http = TcpListener::bind(&config.http_listen)
        .await
        .with_context(|| format!("binding HTTP on {}", config.http_listen))?;
    let amqp = TcpListener::bind(&config.amqp_listen)
        .await
        .with_context(|| format!("binding AMQP on {}", config.amqp_listen))?;
    let http_addr = http.local_addr()?;
    let amqp_addr = amqp.local_addr()?;
    let shutdown = CancellationToken::new();
    let router = weir_http::router(broker.clone(), &config.http);
    let server = tokio::spawn({
        let http_config = config.http.clone();
        let shutdown = shutdown.clone();
        async move { weir_http::serve(http, router, &http_config, shutdown).await }
    });
    let amqp_config = weir_amqp::AmqpConfig {
        shutdown: shutdown.clone(),
        ..config.amqp.to_config(config.limits.max_message_bytes)?
    };
    let amqp_task = tokio::spawn(weir_amqp::serve(amqp, broker.clone(), amqp_config));
    println!("weir ready http={http_addr} amqp={amqp_addr}");
    tracing::info!(%http_addr, %amqp_addr, "listening");
    shutdown_signal().await;
    tracing::info!("shutting down");
    // Stop accepting, close AMQP connections (320) so their unacked messages go
    // back, then drain the queues and close the logs.
    shutdown.cancel();
    let _ = amqp_task.await;
    broker.shutdown().await;
    match server.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "HTTP server failed"),
        Err(e) => tracing::error!(error = %e, "HTTP server task panicked"),
    }
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// Creates the deprecated `[amqp] users` that do not exist yet, with every
/// permission on `/` (what they had when users lived in the configuration).
async fn seed_users(broker: &Broker, users: &[(String, String)]) -> anyhow::Result<()> {
    let access = broker.access();
    let users = users.to_vec();
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let known: Vec<String> = access.users().into_iter().map(|u| u.name).collect();
        for (user, password) in users {
            if known.contains(&user) {
                continue;
            }
            access.add_user(&user, &password, &[])?;
            access.set_permissions(&user, DEFAULT_VHOST, Patterns::all())?;
            tracing::warn!(
                %user,
                "user created from [amqp] users, which is deprecated: users now live in \
                 access.json in the data directory"
            );
        }
        Ok(())
    })
    .await?
}
