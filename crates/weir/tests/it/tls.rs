//! TLS on both front ends (issue 20): AMQP over TLS with lapin and pika, HTTPS with
//! reqwest, client certificates, SIGHUP reload, only TLS listeners on, and clients
//! that fail the handshake (plaintext, an unknown CA, garbage, a stall) without
//! harm to anyone else. Certificates are made at test time (`weir_testkit::tls`).

use std::sync::Arc;
use std::time::Duration;

use futures_lite::StreamExt as _;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions,
    QueueDeclareOptions,
};
use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use rustls::ClientConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use weir_testkit::Broker;
use weir_testkit::tls::{Pki, localhost};

/// A broker with both TLS listeners beside the plain ones, and `extra` flags.
async fn tls_broker(pki: &Pki, extra: &[&str]) -> Broker {
    let mut args = vec![
        "--amqps-listen".to_owned(),
        "127.0.0.1:0".to_owned(),
        "--https-listen".to_owned(),
        "127.0.0.1:0".to_owned(),
    ];
    args.extend(pki.server_args());
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Broker::start_with(&args).await.expect("broker starts")
}

/// lapin over TLS, trusting `pki`'s CA, presenting its client certificate if asked.
async fn lapin_tls(broker: &Broker, pki: &Pki, client_cert: bool) -> lapin::Result<Connection> {
    let ca = std::fs::read_to_string(pki.path("ca.pem")).expect("CA file");
    let identity = client_cert.then(|| OwnedIdentity::PKCS8 {
        pem: std::fs::read(pki.path("client.pem")).expect("client certificate"),
        key: std::fs::read(pki.path("client.key")).expect("client key"),
    });
    let config = OwnedTLSConfig {
        identity,
        cert_chain: Some(ca),
    };
    let url = broker.amqps_url().expect("amqps is on");
    let runtime = lapin::runtime::default_runtime().expect("lapin runtime");
    Connection::connect_with_config(&url, ConnectionProperties::default(), config, runtime).await
}

/// Publishes `body` with a confirm to `queue`, consumes it back and acks it.
async fn round_trip(conn: &Connection, queue: &str, body: &[u8]) {
    let ch = conn.create_channel().await.expect("channel");
    ch.queue_declare(
        queue.into(),
        QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("declare");
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    let confirm = ch
        .basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions::default(),
            body,
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .expect("publish")
        .await
        .expect("confirm");
    assert!(confirm.is_ack(), "{confirm:?}");
    let mut consumer = ch
        .basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume");
    let delivery = tokio::time::timeout(Duration::from_secs(30), consumer.next())
        .await
        .expect("a delivery in time")
        .expect("a delivery")
        .expect("not an error");
    assert_eq!(delivery.data, body);
    delivery.ack(BasicAckOptions::default()).await.expect("ack");
    ch.close(200, "bye".into()).await.expect("channel close");
}

/// A TLS connection to `addr` checking the server's certificate for `name`.
async fn connect_tls(
    addr: &str,
    config: ClientConfig,
    name: ServerName<'static>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
}

/// Sends the AMQP protocol header on `stream` and reads what comes back: whether it
/// is the start of `connection.start` (a method frame on channel 0). An error or
/// the end of the stream is `false`.
async fn amqp_answers<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    stream: &mut S,
) -> bool {
    if stream.write_all(b"AMQP\x00\x00\x09\x01").await.is_err() {
        return false;
    }
    let mut head = [0u8; 7];
    let read = tokio::time::timeout(Duration::from_secs(60), stream.read_exact(&mut head))
        .await
        .expect("an answer or a close within 60 s");
    read.is_ok() && head[..3] == [1, 0, 0]
}

/// Reads until the peer closes (or fails); panics after 60 s.
async fn closed_by_peer<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let read = tokio::time::timeout(Duration::from_secs(60), stream.read(&mut buf))
            .await
            .expect("the broker closes the connection within 60 s");
        match read {
            Ok(0) | Err(_) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// Waits (60 s at most) until the broker's log holds `text`.
async fn wait_log(broker: &Broker, text: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !broker.log().contains(text) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the log never said {text:?}:\n{}",
            broker.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The DER of the server certificate in `pki`'s `server.pem` now.
fn server_cert(pki: &Pki) -> CertificateDer<'static> {
    CertificateDer::from_pem_file(pki.path("server.pem")).expect("server certificate")
}

/// The certificate a TLS connection's server presented.
fn presented(stream: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    stream
        .get_ref()
        .1
        .peer_certificates()
        .expect("a certificate")[0]
        .clone()
}

/// An HTTPS client trusting `pki`'s CA.
fn https_client(pki: &Pki) -> reqwest::Client {
    reqwest::Client::builder()
        .use_preconfigured_tls(pki.client_config(false).expect("client settings"))
        .build()
        .expect("HTTPS client")
}

#[tokio::test]
async fn lapin_publishes_and_consumes_over_amqps() {
    let pki = Pki::new().unwrap();
    let broker = tls_broker(&pki, &[]).await;
    let conn = lapin_tls(&broker, &pki, false)
        .await
        .expect("TLS connection");
    round_trip(&conn, "tls_lapin", b"over tls").await;
    // The plain listener serves beside it, the same queues.
    let plain = Connection::connect(&broker.amqp_url(), ConnectionProperties::default())
        .await
        .expect("plain connection");
    round_trip(&plain, "tls_lapin", b"over tcp").await;
    conn.close(200, "bye".into()).await.expect("close");
    plain.close(200, "bye".into()).await.expect("close");
}

#[tokio::test]
async fn pika_publishes_and_gets_over_amqps() {
    let pki = Pki::new().unwrap();
    let broker = tls_broker(&pki, &[]).await;
    let (code, out) = pika_tls(&broker, &pki, false).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("OK"), "{out}");
}

/// Runs tests/pika/tls.py against the broker's amqps port: exit code and output.
async fn pika_tls(broker: &Broker, pki: &Pki, client_cert: bool) -> (Option<i32>, String) {
    let python = std::env::var("WEIR_PYTHON").expect(
        "WEIR_PYTHON is not set: run ./scripts/test, which creates a Python venv with pika",
    );
    let script =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/pika/tls.py");
    let port = broker
        .amqps_addr()
        .and_then(|a| a.rsplit(':').next())
        .expect("amqps is on")
        .to_owned();
    let mut command = tokio::process::Command::new(python);
    command.arg(script).arg(port).arg(pki.path("ca.pem"));
    if client_cert {
        command
            .arg(pki.path("client.pem"))
            .arg(pki.path("client.key"));
    }
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        command.kill_on_drop(true).output(),
    )
    .await
    .expect("pika finishes")
    .expect("python runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

#[tokio::test]
async fn reqwest_uses_the_api_over_https() {
    let pki = Pki::new().unwrap();
    let broker = tls_broker(&pki, &[]).await;
    let base = broker.https_url().expect("https is on");
    let client = https_client(&pki);
    let health = client
        .get(format!("{base}/healthz"))
        .send()
        .await
        .expect("HTTPS request");
    assert_eq!(health.status(), 200);
    let created = client
        .put(format!("{base}/api/queues/tls_http"))
        .basic_auth("guest", Some("guest"))
        .json(&serde_json::json!({}))
        .send()
        .await
        .expect("create");
    assert!(created.status().is_success(), "{}", created.status());
    let sent = client
        .post(format!("{base}/api/queues/tls_http/messages"))
        .basic_auth("guest", Some("guest"))
        .json(&serde_json::json!({"body": "over https"}))
        .send()
        .await
        .expect("send");
    assert_eq!(sent.status(), 201);
    // The same queue over plain HTTP.
    let stats: serde_json::Value = reqwest::Client::new()
        .get(format!("{}/api/queues/tls_http", broker.http_url()))
        .basic_auth("guest", Some("guest"))
        .send()
        .await
        .expect("plain request")
        .json()
        .await
        .expect("JSON");
    assert_eq!(stats["stats"]["ready"], 1, "{stats}");
}

#[tokio::test]
async fn plaintext_garbage_and_stalled_clients_on_tls_ports_fail_alone() {
    let pki = Pki::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("weir.toml");
    // Short handshake and header timeouts, so the stalled clients end soon.
    std::fs::write(
        &config,
        "[amqp]\nhandshake_timeout_ms = 300\n[http]\nheader_read_timeout_ms = 300\n",
    )
    .unwrap();
    let broker = tls_broker(&pki, &["--config", config.to_str().unwrap()]).await;
    let amqps = broker.amqps_addr().unwrap().to_owned();
    let https = broker.https_addr().unwrap().to_owned();
    // Stalled mid-handshake (half a ClientHello) while the others come and go: they
    // are served meanwhile, so the accept loop does not wait for a handshake.
    let mut stalled_amqps = TcpStream::connect(&amqps).await.unwrap();
    stalled_amqps
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .await
        .unwrap();
    let mut stalled_https = TcpStream::connect(&https).await.unwrap();
    // A plaintext AMQP client on the TLS port: no connection.start, the socket closes.
    let mut plain = TcpStream::connect(&amqps).await.unwrap();
    assert!(!amqp_answers(&mut plain).await);
    // Plain HTTP on the HTTPS port, and garbage: closed, no HTTP answer.
    let mut http = TcpStream::connect(&https).await.unwrap();
    http.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let answer = closed_by_peer(&mut http).await;
    assert!(!answer.starts_with(b"HTTP/1.1 200"), "{answer:?}");
    let mut garbage = TcpStream::connect(&amqps).await.unwrap();
    garbage.write_all(&[0xff; 4096]).await.unwrap();
    closed_by_peer(&mut garbage).await;
    // Everyone else is served, over TLS and not.
    let conn = lapin_tls(&broker, &pki, false)
        .await
        .expect("TLS connection");
    round_trip(&conn, "tls_after_garbage", b"still here").await;
    let health = https_client(&pki)
        .get(format!("{}/healthz", broker.https_url().unwrap()))
        .send()
        .await
        .expect("HTTPS request");
    assert_eq!(health.status(), 200);
    // The stalled handshakes end at their timeouts.
    closed_by_peer(&mut stalled_amqps).await;
    closed_by_peer(&mut stalled_https).await;
    // Each is logged (once the socket is closed, so a moment after).
    for line in [
        "AMQP TLS handshake failed",
        "AMQP TLS handshake did not complete in time",
        "HTTPS TLS handshake failed",
        "HTTPS TLS handshake did not complete",
    ] {
        wait_log(&broker, line).await;
    }
    let log = broker.log();
    assert!(!log.contains("panicked"), "{log}");
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_ca_fails_the_handshake() {
    let pki = Pki::new().unwrap();
    let stranger = Pki::new().unwrap();
    let broker = tls_broker(&pki, &[]).await;
    let amqps = broker.amqps_addr().unwrap().to_owned();
    let refused = connect_tls(&amqps, stranger.client_config(false).unwrap(), localhost()).await;
    let Err(e) = refused else {
        panic!("a server certificate from an unknown CA was accepted");
    };
    assert!(format!("{e}").contains("invalid peer certificate"), "{e}");
    // lapin and pika, trusting another CA, fail too.
    assert!(lapin_tls(&broker, &stranger, false).await.is_err());
    let (code, out) = pika_tls(&broker, &stranger, false).await;
    assert_eq!(code, Some(3), "{out}");
    // A client trusting the right CA is served.
    let mut ok = connect_tls(&amqps, pki.client_config(false).unwrap(), localhost())
        .await
        .expect("TLS connection");
    assert!(amqp_answers(&mut ok).await);
}

#[tokio::test]
async fn with_a_client_ca_only_clients_with_a_signed_certificate_get_in() {
    let pki = Pki::new().unwrap();
    let stranger = Pki::new().unwrap();
    let ca = pki.arg("ca.pem");
    let broker = tls_broker(&pki, &["--tls-ca", &ca]).await;
    let amqps = broker.amqps_addr().unwrap().to_owned();
    // No certificate, or one from another CA: TLS 1.3 lets the client finish its
    // side of the handshake, then the server's alert ends the connection before
    // any AMQP.
    let anonymous = pki.client_config(false).unwrap();
    let foreign = pki.client_config_with(Some(&stranger)).unwrap();
    for config in [anonymous, foreign] {
        if let Ok(mut refused) = connect_tls(&amqps, config, localhost()).await {
            assert!(!amqp_answers(&mut refused).await);
        }
    }
    // Signed by the CA: served, over lapin and pika.
    let conn = lapin_tls(&broker, &pki, true)
        .await
        .expect("TLS connection with a certificate");
    round_trip(&conn, "tls_client_cert", b"known client").await;
    assert!(lapin_tls(&broker, &pki, false).await.is_err());
    let (code, out) = pika_tls(&broker, &pki, true).await;
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = pika_tls(&broker, &pki, false).await;
    assert_ne!(code, Some(0), "{out}");
    wait_log(&broker, "AMQP TLS handshake failed").await;
}

#[tokio::test]
async fn sighup_reloads_the_certificate_for_new_connections_and_keeps_open_ones() {
    let mut pki = Pki::new().unwrap();
    let broker = tls_broker(&pki, &[]).await;
    let amqps = broker.amqps_addr().unwrap().to_owned();
    let first = server_cert(&pki);
    let mut before = connect_tls(&amqps, pki.client_config(false).unwrap(), localhost())
        .await
        .expect("TLS connection");
    assert_eq!(presented(&before), first);
    let open = lapin_tls(&broker, &pki, false)
        .await
        .expect("TLS connection");
    round_trip(&open, "tls_reload", b"before").await;
    // A new certificate (new serial, new name) replaces the files; SIGHUP.
    pki.issue_server("reloaded.test").unwrap();
    let second = server_cert(&pki);
    assert_ne!(first, second);
    broker.hangup().unwrap();
    let reloaded = ServerName::try_from("reloaded.test").unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let after = loop {
        // Until the broker has handled the signal, new connections get the old
        // certificate, which is not for this name.
        if let Ok(stream) =
            connect_tls(&amqps, pki.client_config(false).unwrap(), reloaded.clone()).await
        {
            break stream;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no reload within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(presented(&after), second);
    // HTTPS too.
    let https = broker.https_addr().unwrap().to_owned();
    let web = connect_tls(&https, pki.client_config(false).unwrap(), reloaded.clone())
        .await
        .expect("HTTPS with the new certificate");
    assert_eq!(presented(&web), second);
    // The connections opened before go on.
    round_trip(&open, "tls_reload", b"after").await;
    assert!(amqp_answers(&mut before).await);
    // A reload that fails (a broken certificate file) keeps the current one.
    std::fs::write(pki.path("server.pem"), "not a certificate").unwrap();
    broker.hangup().unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !broker
        .log()
        .contains("reloading the TLS certificates failed")
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no failed reload logged"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let still = connect_tls(&amqps, pki.client_config(false).unwrap(), reloaded)
        .await
        .expect("the last good certificate");
    assert_eq!(presented(&still), second);
    open.close(200, "bye".into()).await.expect("close");
}

#[tokio::test]
async fn only_tls_listeners_with_the_plain_ones_off() {
    let pki = Pki::new().unwrap();
    let broker = tls_broker(&pki, &["--amqp-listen", "off", "--http-listen", "off"]).await;
    assert_eq!(broker.amqp_addr(), "off");
    assert_eq!(broker.http_url(), "http://off");
    let conn = lapin_tls(&broker, &pki, false)
        .await
        .expect("TLS connection");
    round_trip(&conn, "tls_only", b"only tls").await;
    let health = https_client(&pki)
        .get(format!("{}/healthz", broker.https_url().unwrap()))
        .send()
        .await
        .expect("HTTPS request");
    assert_eq!(health.status(), 200);
    // A clean stop with a TLS connection open: it is closed with 320.
    let mut broker = broker;
    assert!(broker.terminate().await.unwrap(), "clean exit");
    drop(conn);
}

/// `weir bench amqp` over amqps (trusting `--tls-ca`), side by side with the same
/// broker over plain AMQP: both runs verified.
#[tokio::test]
async fn bench_amqp_runs_over_amqps() {
    let pki = Pki::new().unwrap();
    let broker = tls_broker(&pki, &[]).await;
    let amqps = broker.amqps_url().unwrap();
    let ca = pki.arg("ca.pem");
    let c = crate::bench::bench_json(&[
        "amqp",
        "--url",
        &amqps,
        "--tls-ca",
        &ca,
        "--compare",
        &broker.amqp_url(),
        "--rounds",
        "1",
        "--count",
        "2000",
        "--size",
        "64",
    ])
    .await;
    let round = &c["rounds"][0];
    assert_eq!(round["a"]["verified"], true, "{c}");
    assert_eq!(round["a"]["received"], 2000, "{c}");
    assert_eq!(round["b"]["verified"], true, "{c}");
}

/// The CLI reaches an https:// broker with `--tls-ca` (and only with it: weir
/// carries no public roots).
#[tokio::test]
async fn the_cli_speaks_https_with_tls_ca() {
    let pki = Pki::new().unwrap();
    let broker = tls_broker(&pki, &[]).await;
    let https = broker.https_url().unwrap();
    let ca = pki.arg("ca.pem");
    crate::cli::weir_at(
        &https,
        &["queue", "create", "over-tls", "--tls-ca", &ca],
        b"",
    )
    .await
    .ok();
    let sent =
        crate::cli::weir_at(&https, &["send", "over-tls", "hello", "--tls-ca", &ca], b"").await;
    let sent = sent.ok();
    assert!(
        sent.stdout.contains("sent") || !sent.stdout.is_empty(),
        "{}",
        sent.stdout
    );
    let got = crate::cli::weir_at(
        &https,
        &["recv", "over-tls", "--ack", "--json", "--tls-ca", &ca],
        b"",
    )
    .await
    .ok();
    assert!(got.stdout.contains("hello"), "{}", got.stdout);
    let untrusted = crate::cli::weir_at(&https, &["queue", "list"], b"").await;
    assert_eq!(
        untrusted.code,
        Some(1),
        "no CA given: the certificate is not trusted"
    );
}

/// TLS connections count against their front end's one cap, with the plain ones:
/// an AMQP client is turned away while a TLS connection holds the only slot and
/// served once it is gone; an HTTPS server at its cap closes a stalled handshake
/// (a connection that never sent a request) to serve a newcomer.
#[tokio::test]
async fn tls_connections_count_against_the_connection_caps() {
    let pki = Pki::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("weir.toml");
    std::fs::write(
        &config,
        "[amqp]\nmax_connections = 1\n[http]\nmax_connections = 1\nheader_read_timeout_ms = 2000\n",
    )
    .unwrap();
    let broker = tls_broker(&pki, &["--config", config.to_str().unwrap()]).await;
    // A completed handshake: the server has accepted it and holds its slot.
    let tls = connect_tls(
        broker.amqps_addr().unwrap(),
        pki.client_config(false).unwrap(),
        localhost(),
    )
    .await
    .expect("TLS connection");
    let mut plain = TcpStream::connect(broker.amqp_addr()).await.unwrap();
    assert!(!amqp_answers(&mut plain).await, "the cap is shared");
    wait_log(&broker, "AMQP connection refused: too many connections").await;
    drop(tls);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let mut again = TcpStream::connect(broker.amqp_addr()).await.unwrap();
        if amqp_answers(&mut again).await {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slot never came back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // HTTPS: a stalled handshake does not lock out a real client.
    let mut stalled = TcpStream::connect(broker.https_addr().unwrap())
        .await
        .unwrap();
    let health = https_client(&pki)
        .get(format!("{}/healthz", broker.https_url().unwrap()))
        .send()
        .await
        .expect("HTTPS request");
    assert_eq!(health.status(), 200);
    closed_by_peer(&mut stalled).await;
}
