//! Test helpers: start the real `weir` binary on loopback with a temporary data
//! directory, read its ready line (so tests never guess ports or sleep), stop it
//! with SIGTERM or SIGKILL, and restart it on the same directory. The broker's log
//! goes to a file that is printed when a test fails. [`tls`] makes certificates at
//! test time for the TLS listeners.

pub mod tls;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Where the `weir` binary is: `WEIR_BIN`, else next to the test executable's
/// `deps/` directory (where cargo puts the package's binaries).
pub fn weir_binary() -> PathBuf {
    if let Ok(p) = std::env::var("WEIR_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("invariant: a test knows its own path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("invariant: tests run from target/<profile>/deps");
    dir.join("weir")
}

/// A running `weir serve`.
pub struct Broker {
    child: Option<Child>,
    /// Holds the data directory (and the log file) for the test's lifetime.
    dir: tempfile::TempDir,
    /// A command the broker is started through (e.g. `prlimit --nofile=N:N --`),
    /// at every start; empty: none.
    wrapper: Vec<String>,
    extra_args: Vec<String>,
    http: String,
    amqp: String,
    /// The TLS listeners' addresses, when on.
    https: Option<String>,
    amqps: Option<String>,
    /// The Kafka listeners' addresses, when on.
    kafka: Option<String>,
    kafka_tls: Option<String>,
    starts: u32,
}

impl Broker {
    /// Starts a broker with default settings (fsync always).
    pub async fn start() -> anyhow::Result<Broker> {
        Broker::start_with(&[]).await
    }

    /// Starts a broker with extra `weir serve` flags.
    pub async fn start_with(args: &[&str]) -> anyhow::Result<Broker> {
        Broker::start_wrapped(&[], args).await
    }

    /// Starts a broker through `wrapper` (a command that runs the one after it, as
    /// `prlimit --nofile=256:400 --` does), with extra `weir serve` flags; restarts
    /// go through it too. The wrapper must exec the broker, so that its process id
    /// is the broker's.
    pub async fn start_wrapped(wrapper: &[&str], args: &[&str]) -> anyhow::Result<Broker> {
        let dir = tempfile::tempdir().context("creating a temporary directory")?;
        let mut broker = Broker {
            child: None,
            dir,
            wrapper: wrapper.iter().map(|s| (*s).to_owned()).collect(),
            extra_args: args.iter().map(|s| (*s).to_owned()).collect(),
            http: String::new(),
            amqp: String::new(),
            https: None,
            amqps: None,
            kafka: None,
            kafka_tls: None,
            starts: 0,
        };
        broker.spawn().await?;
        Ok(broker)
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        self.starts += 1;
        let log_path = self.log_path();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .context("opening the broker log file")?;
        let mut command = match self.wrapper.split_first() {
            Some((program, rest)) => {
                let mut command = Command::new(program);
                command.args(rest).arg(weir_binary());
                command
            }
            None => Command::new(weir_binary()),
        };
        command.arg("serve").arg("--data-dir").arg(self.data_dir());
        // Free loopback ports, unless the test chose (`off`, say).
        for flag in ["--http-listen", "--amqp-listen"] {
            if !self.extra_args.iter().any(|a| a == flag) {
                command.args([flag, "127.0.0.1:0"]);
            }
        }
        let mut child = command
            .args(&self.extra_args)
            .env(
                "RUST_LOG",
                std::env::var("WEIR_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", weir_binary().display()))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(Duration::from_secs(120), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(rest) = line.strip_prefix("weir ready ") {
                    return Ok::<_, std::io::Error>(Some(rest.to_owned()));
                }
            }
            Ok(None)
        })
        .await;
        let line = match ready {
            Ok(Ok(Some(line))) => line,
            other => {
                let _ = child.start_kill();
                bail!(
                    "broker did not get ready ({other:?}); its log:\n{}",
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                );
            }
        };
        for part in line.split_whitespace() {
            if let Some(v) = part.strip_prefix("http=") {
                v.clone_into(&mut self.http);
            } else if let Some(v) = part.strip_prefix("amqp=") {
                v.clone_into(&mut self.amqp);
            } else if let Some(v) = part.strip_prefix("https=") {
                self.https = Some(v.to_owned());
            } else if let Some(v) = part.strip_prefix("amqps=") {
                self.amqps = Some(v.to_owned());
            } else if let Some(v) = part.strip_prefix("kafka=") {
                self.kafka = Some(v.to_owned());
            } else if let Some(v) = part.strip_prefix("kafka_tls=") {
                self.kafka_tls = Some(v.to_owned());
            }
        }
        // Keep reading stdout so the broker never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        self.child = Some(child);
        Ok(())
    }

    /// The Kafka address (`127.0.0.1:PORT`), when `--kafka-listen` is on.
    pub fn kafka_addr(&self) -> Option<&str> {
        self.kafka.as_deref()
    }

    /// The Kafka-over-TLS address, when `--kafka-tls-listen` is on.
    pub fn kafka_tls_addr(&self) -> Option<&str> {
        self.kafka_tls.as_deref()
    }

    /// `http://127.0.0.1:PORT`.
    pub fn http_url(&self) -> String {
        format!("http://{}", self.http)
    }

    /// The AMQP address (`127.0.0.1:PORT`).
    pub fn amqp_addr(&self) -> &str {
        &self.amqp
    }

    /// The AMQP URL of the broker (guest/guest, vhost `/`), for lapin or pika.
    pub fn amqp_url(&self) -> String {
        format!("amqp://guest:guest@{}/%2f", self.amqp)
    }

    /// The AMQP-over-TLS address (`127.0.0.1:PORT`), when `--amqps-listen` is on.
    pub fn amqps_addr(&self) -> Option<&str> {
        self.amqps.as_deref()
    }

    /// The HTTPS address (`127.0.0.1:PORT`), when `--https-listen` is on.
    pub fn https_addr(&self) -> Option<&str> {
        self.https.as_deref()
    }

    /// `amqps://guest:guest@localhost:PORT/%2f` (the test certificate's name), when
    /// `--amqps-listen` is on.
    pub fn amqps_url(&self) -> Option<String> {
        let port = self.amqps.as_deref()?.rsplit(':').next()?;
        Some(format!("amqps://guest:guest@localhost:{port}/%2f"))
    }

    /// `https://localhost:PORT` (the test certificate's name), when `--https-listen`
    /// is on.
    pub fn https_url(&self) -> Option<String> {
        let port = self.https.as_deref()?.rsplit(':').next()?;
        Some(format!("https://localhost:{port}"))
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("weir.log")
    }

    /// Everything the broker logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The broker's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// SIGKILL, and wait for the process to be gone.
    pub async fn kill9(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.start_kill().context("SIGKILL")?;
            child
                .wait()
                .await
                .context("waiting for the killed broker")?;
        }
        Ok(())
    }

    /// SIGHUP (the broker reloads its TLS certificates); returns at once.
    pub fn hangup(&self) -> anyhow::Result<()> {
        let pid = self.pid().context("broker not running")?;
        let status = std::process::Command::new("kill")
            .args(["-HUP".to_owned(), pid.to_string()])
            .status()
            .context("running kill -HUP")?;
        if !status.success() {
            bail!("kill -HUP {pid} failed");
        }
        Ok(())
    }

    /// SIGTERM, and wait for a clean exit; returns whether it exited with 0.
    pub async fn terminate(&mut self) -> anyhow::Result<bool> {
        self.stop_with("TERM").await
    }

    /// SIGINT (what Ctrl-C sends), and wait for a clean exit; returns whether it
    /// exited with 0.
    pub async fn interrupt(&mut self) -> anyhow::Result<bool> {
        self.stop_with("INT").await
    }

    async fn stop_with(&mut self, signal: &str) -> anyhow::Result<bool> {
        let Some(mut child) = self.child.take() else {
            return Ok(true);
        };
        let pid = child.id().context("broker already gone")?;
        let status = std::process::Command::new("kill")
            .args([format!("-{signal}"), pid.to_string()])
            .status()
            .with_context(|| format!("running kill -{signal}"))?;
        if !status.success() {
            bail!("kill -{signal} {pid} failed");
        }
        let exit = tokio::time::timeout(Duration::from_secs(60), child.wait())
            .await
            .with_context(|| format!("broker did not exit within 60 s of SIG{signal}"))??;
        Ok(exit.success())
    }

    /// Starts the broker again on the same data directory (after [`Broker::kill9`]
    /// or [`Broker::terminate`]); ports change.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        if self.child.is_some() {
            self.terminate().await?;
        }
        self.spawn().await
    }

    /// An HTTP client that logs in as `guest` (see [`http_client`]).
    pub fn client(&self) -> reqwest::Client {
        http_client()
    }
}

/// The `Authorization` header of `guest`/`guest`, the user a fresh broker has.
pub const GUEST_AUTHORIZATION: &str = "Basic Z3Vlc3Q6Z3Vlc3Q=";

/// An HTTP client that sends `guest`'s credentials with every request (a request
/// may override them with its own `basic_auth`).
///
/// # Panics
/// If reqwest cannot build a client (no TLS back end is involved, so it can).
pub fn http_client() -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        reqwest::header::HeaderValue::from_static(GUEST_AUTHORIZATION),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("invariant: a plain HTTP client builds")
}

impl Drop for Broker {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- weir log ({} start(s)) ----\n{}",
                self.starts,
                self.log()
            );
        }
    }
}
