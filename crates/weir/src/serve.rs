//! `weir serve`: opens the broker, binds the listeners (plain and TLS, each of them
//! may be `off`), prints the ready line and runs until SIGTERM or Ctrl-C; SIGHUP
//! reloads the TLS certificates.
//!
//! Shutdown order: stop accepting HTTP, AMQP and Kafka connections; close every AMQP
//! connection with `connection.close` 320 `CONNECTION_FORCED` (their unacked
//! messages go back to their queues; waited for up to 5 s) and every Kafka
//! connection; stop the broker (long
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
use crate::{file_limit, tls};

/// Flags of `weir serve` (each overrides the file and the environment).
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// TOML config file (also `WEIR_CONFIG`).
    #[arg(long, env = "WEIR_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory [default: ./weir-data].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// HTTP address [default: 127.0.0.1:8080]; port 0 picks a free port; `off`: no
    /// plain HTTP.
    #[arg(long)]
    http_listen: Option<String>,
    /// AMQP 0-9-1 address [default: 127.0.0.1:5672] (pika, lapin, Celery...);
    /// `off`: no plain AMQP.
    #[arg(long)]
    amqp_listen: Option<String>,
    /// HTTPS address (needs --tls-cert and --tls-key) [default: off].
    #[arg(long)]
    https_listen: Option<String>,
    /// AMQP-over-TLS address, 5671 by convention (needs --tls-cert and --tls-key)
    /// [default: off].
    #[arg(long)]
    amqps_listen: Option<String>,
    /// Kafka address, 9092 by convention (librdkafka, kcat, the Java client)
    /// [default: off].
    #[arg(long)]
    kafka_listen: Option<String>,
    /// Kafka-over-TLS address, 9093 by convention (needs --tls-cert and --tls-key)
    /// [default: off].
    #[arg(long)]
    kafka_tls_listen: Option<String>,
    /// PEM certificate chain of the TLS listeners, the server's certificate first.
    #[arg(long)]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert (PKCS#8, RSA or EC).
    #[arg(long)]
    tls_key: Option<PathBuf>,
    /// PEM CA certificates: TLS clients must present a certificate signed by one.
    #[arg(long)]
    tls_ca: Option<PathBuf>,
    /// always | interval:MS | never [default: always].
    #[arg(long)]
    fsync: Option<String>,
    /// Log filter when `RUST_LOG` is unset [default: info].
    #[arg(long)]
    log_level: Option<String>,
}

fn path_flag(path: Option<&PathBuf>) -> Option<String> {
    path.map(|p| p.display().to_string())
}

fn load(args: &ServeArgs) -> anyhow::Result<Config> {
    let flags = [
        (
            "data_dir",
            args.data_dir.as_ref().map(|p| p.display().to_string()),
        ),
        ("http_listen", args.http_listen.clone()),
        ("amqp_listen", args.amqp_listen.clone()),
        ("https_listen", args.https_listen.clone()),
        ("amqps_listen", args.amqps_listen.clone()),
        ("kafka_listen", args.kafka_listen.clone()),
        ("kafka_tls_listen", args.kafka_tls_listen.clone()),
        ("tls.cert", path_flag(args.tls_cert.as_ref())),
        ("tls.key", path_flag(args.tls_key.as_ref())),
        ("tls.ca", path_flag(args.tls_ca.as_ref())),
        ("fsync", args.fsync.clone()),
        ("log_level", args.log_level.clone()),
    ];
    let config = config::load(args.config.as_deref(), std::env::vars(), &flags)?;
    // Checked before anything starts.
    config.amqp.to_config(config.limits.max_message_bytes)?;
    config.kafka.to_config()?;
    let mut problems = config.http.problems();
    problems.extend(config.limits.problems());
    problems.extend(config.listener_problems());
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

/// The broker's settings from the configuration.
fn broker_config(config: &Config) -> BrokerConfig {
    let mut broker_config = BrokerConfig::new(&config.data_dir);
    broker_config.loopback_users = if config.amqp.guest_loopback_only {
        vec!["guest".to_owned()]
    } else {
        Vec::new()
    };
    broker_config.log.fsync = config.fsync;
    broker_config.log.segment_bytes = config.log.segment_bytes;
    broker_config.stream_tail_cache_bytes = config.log.stream_tail_cache_bytes;
    broker_config.limits = config.limits.clone();
    broker_config
}

/// Runs the broker.
pub async fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let config = load(&args)?;
    init_tracing(&config.log_level);
    // First thing: SIGHUP's default would end the process, and recovery can take
    // minutes (logrotate and `systemctl reload` send it).
    let hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("listening for SIGHUP")?;
    let max_connections = u64::from(config.http.max_connections)
        + u64::from(config.amqp.max_connections)
        + kafka_connections(&config);
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
            "http.max_connections + amqp.max_connections (+ kafka.max_connections) is over half the open-file limit; \
             only half is reserved for connections: raise the limit (LimitNOFILE) or lower them"
        );
    }
    // Process-wide settings of the logs, before the first one opens.
    weir_log::io::set_open_files_limit(log_files);
    if !weir_log::set_pool_threads(config.log.pool_threads()?) {
        tracing::warn!("the log pools were already running: log.threads is not applied");
    }
    let (broker, report) = Broker::open(broker_config(&config))
        .await
        .with_context(|| {
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
    let (http, amqp, kafka, tls) = listeners(&config).await?;
    let reloads = tokio::spawn(reload_on_hangup(hangups, tls));
    let ready = format!(
        "weir ready http={} amqp={}{}{}{}{}",
        address(http.plain.as_ref()),
        address(amqp.plain.as_ref()),
        tls_address(" https", http.tls.as_ref()),
        tls_address(" amqps", amqp.tls.as_ref()),
        kafka
            .plain
            .as_ref()
            .map(|l| format!(" kafka={}", address(Some(l))))
            .unwrap_or_default(),
        tls_address(" kafka_tls", kafka.tls.as_ref()),
    );
    let shutdown = CancellationToken::new();
    let router = weir_http::router(broker.clone(), &config.http);
    let http_on = http.plain.is_some() || http.tls.is_some();
    let server = tokio::spawn({
        let http_config = config.http.clone();
        let shutdown = shutdown.clone();
        let front_ends = broker.front_ends();
        async move {
            if http_on {
                weir_http::serve_listeners(http, router, &http_config, front_ends, shutdown).await;
            }
        }
    });
    let (amqp_task, kafka_task) = spawn_front_ends(amqp, kafka, &broker, &config, &shutdown)?;
    println!("{ready}");
    tracing::info!(listeners = %ready.trim_start_matches("weir ready "), "listening");
    shutdown_signal().await;
    tracing::info!("shutting down");
    // Stop accepting, close AMQP connections (320) so their unacked messages go
    // back, then drain the queues and close the logs.
    shutdown.cancel();
    reloads.abort();
    let _ = amqp_task.await;
    let _ = kafka_task.await;
    broker.shutdown().await;
    if let Err(e) = server.await {
        tracing::error!(error = %e, "HTTP server task panicked");
    }
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// Starts the AMQP and Kafka front ends on their listeners.
fn spawn_front_ends(
    amqp: weir_amqp::Listeners,
    kafka: weir_kafka::Listeners,
    broker: &Broker,
    config: &Config,
    shutdown: &CancellationToken,
) -> anyhow::Result<(tokio::task::JoinHandle<()>, tokio::task::JoinHandle<()>)> {
    let amqp_config = weir_amqp::AmqpConfig {
        shutdown: shutdown.clone(),
        ..config.amqp.to_config(config.limits.max_message_bytes)?
    };
    let kafka_config = weir_kafka::KafkaConfig {
        shutdown: shutdown.clone(),
        ..config.kafka.to_config()?
    };
    Ok((
        tokio::spawn(weir_amqp::serve_listeners(
            amqp,
            broker.clone(),
            amqp_config,
        )),
        tokio::spawn(weir_kafka::serve_listeners(
            kafka,
            broker.clone(),
            kafka_config,
        )),
    ))
}

/// `kafka.max_connections` when a Kafka listener is on, else 0.
fn kafka_connections(config: &Config) -> u64 {
    let on = Config::listen(&config.kafka_listen).is_some()
        || Config::listen(&config.kafka_tls_listen).is_some();
    if on {
        u64::from(config.kafka.max_connections)
    } else {
        0
    }
}

/// Every listener that is on, and the TLS settings when a TLS listener is (loaded
/// first: a bad certificate stops the start before anything listens).
async fn listeners(
    config: &Config,
) -> anyhow::Result<(
    weir_http::Listeners,
    weir_amqp::Listeners,
    weir_kafka::Listeners,
    Option<tls::Settings>,
)> {
    let tls = if config.tls_on() {
        Some(tls::Settings::load(&config.tls)?)
    } else {
        None
    };
    let http = weir_http::Listeners {
        plain: bind("HTTP", &config.http_listen).await?,
        tls: bind("HTTPS", &config.https_listen)
            .await?
            .zip(tls.as_ref().map(tls::Settings::https)),
    };
    let amqp = weir_amqp::Listeners {
        plain: bind("AMQP", &config.amqp_listen).await?,
        tls: bind("AMQPS", &config.amqps_listen)
            .await?
            .zip(tls.as_ref().map(tls::Settings::amqps)),
    };
    let kafka = weir_kafka::Listeners {
        plain: bind("Kafka", &config.kafka_listen).await?,
        tls: bind("Kafka over TLS", &config.kafka_tls_listen)
            .await?
            .zip(tls.as_ref().map(tls::Settings::kafka)),
    };
    Ok((http, amqp, kafka, tls))
}

/// Binds `address` for `what`; `None` when it is `off`.
async fn bind(what: &str, address: &str) -> anyhow::Result<Option<TcpListener>> {
    let Some(address) = Config::listen(address) else {
        return Ok(None);
    };
    let listener = TcpListener::bind(address)
        .await
        .with_context(|| format!("binding {what} on {address}"))?;
    Ok(Some(listener))
}

/// A listener's address for the ready line: `off` when there is none.
fn address(listener: Option<&TcpListener>) -> String {
    listener
        .and_then(|l| l.local_addr().ok())
        .map_or_else(|| config::OFF.to_owned(), |a| a.to_string())
}

/// ` name=ADDRESS` for a TLS listener that is on; nothing for one that is off, so
/// the ready line stays as it was without TLS.
fn tls_address<T>(name: &str, tls: Option<&(TcpListener, T)>) -> String {
    tls.map(|(l, _)| format!("{name}={}", address(Some(l))))
        .unwrap_or_default()
}

/// Reloads the TLS certificates on each SIGHUP of `hangups`. Without TLS
/// listeners, SIGHUP is logged and ignored (as RabbitMQ does).
async fn reload_on_hangup(mut hangups: tokio::signal::unix::Signal, tls: Option<tls::Settings>) {
    {
        while hangups.recv().await.is_some() {
            let Some(tls) = &tls else {
                tracing::info!("SIGHUP: no TLS listener, nothing to reload");
                continue;
            };
            match tls.reload() {
                Ok(()) => {
                    tracing::info!("SIGHUP: TLS certificates reloaded; new connections use them");
                }
                Err(e) => tracing::error!(
                    error = format!("{e:#}"),
                    "SIGHUP: reloading the TLS certificates failed; the old ones stay in use"
                ),
            }
        }
    }
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
