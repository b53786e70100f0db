//! Who is asking, and whether the request may go on: the guard every request but
//! `/healthz` passes before its handler (docs/security.md).
//!
//! In order, each refusal in the JSON error shape:
//! 1. **Host** — the `Host` header must name the broker: a loopback name, the
//!    address the connection came in on, or one of `[http] allowed_hosts`
//!    (403 `host_not_allowed`). A page on a name an attacker controls that resolves to
//!    the broker (DNS rebinding) still sends its own name, and is refused here.
//! 2. **Same origin** — a request that can change state (not GET, HEAD or OPTIONS)
//!    sent by a browser from another site is refused (403 `cross_site_request`): its
//!    `Sec-Fetch-Site` says `cross-site` or `same-site`, or its `Origin` names another
//!    host. Browsers send one or both on every such request and a page cannot forge
//!    them; curl and the client libraries send neither, and pass.
//! 3. **Login** — HTTP Basic against the broker's users (401 `unauthorized` with
//!    `WWW-Authenticate: Basic`); a refused login waits `[http] failed_login_delay_ms`
//!    first, as the AMQP front end does. A user whose credentials were checked before
//!    costs one SHA-256 ([`weir_broker::access::Access::remembered`]), not a password
//!    hash per request.
//!
//! The handlers then take the [`Caller`] and ask it for each permission the request
//! needs ([`Caller::allow`]), as the AMQP front end does per method.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use weir_broker::access::{Access, DEFAULT_VHOST, Operation, Principal};
use weir_broker::{BrokerError, QueueOptions, Vhost};

use crate::error::ApiError;
use crate::state::{AppState, Guard};
use crate::vhost_paths::InVhost;

/// The two ends of the connection a request came on, put in its extensions by the
/// connection's service.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Addrs {
    pub(crate) peer: SocketAddr,
    pub(crate) local: SocketAddr,
    /// The connection is TLS (the dashboard's cookie is then `Secure`).
    pub(crate) tls: bool,
}

/// Longest wait for a password check to start (one runs per core at a time).
const LOGIN_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The user a request is made as, checked by [`guard`]. Not `Debug`: the access
/// model it holds has every password hash.
#[derive(Clone)]
pub(crate) struct Caller {
    pub(crate) principal: Principal,
    access: Arc<Access>,
    /// The broker as seen from the vhost the request's path names (`/` for the
    /// short paths, see `vhost_paths`).
    broker: Vhost,
}

/// The broker as seen from the request's vhost, for the handlers of queues,
/// exchanges, bindings and topics.
pub(crate) struct Scoped(pub(crate) Vhost);

impl<S: Send + Sync> FromRequestParts<S> for Scoped {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Scoped, ApiError> {
        let caller = Caller::from_request_parts(parts, state).await?;
        Ok(Scoped(caller.broker))
    }
}

impl Caller {
    /// `operation` on the `kind` (`queue`, `exchange`) named `name` in the request's
    /// vhost; the default exchange is `amq.default`, as RabbitMQ checks it.
    pub(crate) fn allow(
        &self,
        operation: Operation,
        kind: &'static str,
        name: &str,
    ) -> Result<(), ApiError> {
        self.access
            .check(&self.principal, self.broker.name(), operation, kind, name)
            .map_err(|refused| refusal(refused.to_string()))
    }

    /// May look at what is in the request's vhost (permissions there, or the
    /// `administrator` or `monitoring` tag).
    pub(crate) fn allow_view(&self) -> Result<(), ApiError> {
        self.access
            .check_view(&self.principal, self.broker.name())
            .map_err(|refused| refusal(refused.to_string()))
    }

    /// What declaring queue `name` with `options` needs over HTTP, for a declare and
    /// a topic subscription's queue alike.
    pub(crate) fn allow_declare(&self, name: &str, options: &QueueOptions) -> Result<(), ApiError> {
        self.allow(Operation::Configure, "queue", name)?;
        // As over AMQP: naming a dead-letter exchange needs write on it and read on
        // the queue that sends to it.
        if let Some(dlx) = &options.dead_letter_exchange {
            self.allow(Operation::Write, "exchange", dlx)?;
            self.allow(Operation::Read, "queue", name)?;
        }
        // weir's direct dead-letter queue is reached through the default exchange,
        // and is declared with the queue when missing: configure on it too.
        if let Some(dlq) = &options.dead_letter_queue {
            self.allow(Operation::Write, "exchange", "")?;
            self.allow(Operation::Read, "queue", name)?;
            self.allow(Operation::Configure, "queue", dlq)?;
        }
        // As RabbitMQ: `amq.` names are the broker's (server-named queues are
        // `amq.gen-…`); a client may use them but not declare them.
        for declared in std::iter::once(name).chain(options.dead_letter_queue.as_deref()) {
            if declared.starts_with("amq.") {
                return Err(BrokerError::AccessRefused {
                    reason: format!("queue name '{declared}' contains reserved prefix 'amq.*'"),
                }
                .into());
            }
        }
        // An exclusive queue belongs to the AMQP connection that declared it; over
        // HTTP nobody would own it.
        if options.exclusive {
            return Err(BrokerError::InvalidArgument {
                field: "exclusive".into(),
                reason: "only an AMQP connection can declare an exclusive queue".into(),
            }
            .into());
        }
        Ok(())
    }

    /// Tagged `administrator`: users, vhosts, permissions and definitions.
    pub(crate) fn allow_administrator(&self) -> Result<(), ApiError> {
        if self.principal.is_administrator() {
            return Ok(());
        }
        Err(refusal(format!(
            "user '{}' is not tagged administrator",
            self.principal.name
        )))
    }

    /// Tagged `administrator` or `monitoring`: sees what covers every vhost (the
    /// metrics, every connection).
    pub(crate) fn sees_every_vhost(&self) -> bool {
        self.principal
            .tags
            .iter()
            .any(|t| t == "administrator" || t == "monitoring")
    }

    /// Tagged `administrator` or `monitoring`: the metrics, which cover every vhost.
    pub(crate) fn allow_monitoring(&self) -> Result<(), ApiError> {
        if self.sees_every_vhost() {
            return Ok(());
        }
        Err(refusal(format!(
            "user '{}' is tagged neither administrator nor monitoring, which the metrics need",
            self.principal.name
        )))
    }
}

fn refusal(reason: String) -> ApiError {
    BrokerError::AccessRefused { reason }.into()
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Caller, ApiError> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| unauthorized("this endpoint needs HTTP Basic authentication"))
    }
}

fn unauthorized(reason: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", reason).challenge()
}

/// The middleware: Host, same origin, login (see the module doc).
pub(crate) async fn guard(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    if request.uri().path() == "/healthz" {
        return next.run(request).await;
    }
    let addrs = request.extensions().get::<Addrs>().copied();
    let guard = &state.guard;
    if let Err(e) = check_host(guard, request.headers(), addrs) {
        return e.into_response();
    }
    if !is_safe(request.method())
        && let Err(e) = check_same_origin(request.headers())
    {
        return e.into_response();
    }
    let path = request.uri().path();
    if crate::dashboard::paths::is_open(path) {
        return next.run(request).await;
    }
    let Some((user, password)) = basic_credentials(request.headers()) else {
        if crate::dashboard::paths::is_page(path) {
            return dashboard_session(&state, request, next).await;
        }
        return unauthorized(
            "this endpoint needs HTTP Basic authentication (a fresh broker has guest:guest, \
             from loopback only)",
        )
        .into_response();
    };
    // A request without a connection (never from the server) counts as remote.
    let peer = addrs.map_or(IpAddr::from([0, 0, 0, 0]), |a| a.peer.ip());
    let access = state.broker.access();
    // The password check waits for a free core at most this long, so logins with
    // new credentials cannot hold requests without a bound.
    let checked = tokio::time::timeout(LOGIN_WAIT, access.log_in(user, password, peer)).await;
    match checked {
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "too many logins are being checked; retry later",
        )
        .retry_after(1)
        .into_response(),
        Ok(Ok(principal)) => {
            // The vhost is looked up once logged in: who may not log in learns
            // nothing of which vhosts exist.
            let vhost = request
                .extensions()
                .get::<InVhost>()
                .map_or(DEFAULT_VHOST, |v| v.0.as_str());
            let broker = match state.broker.vhost(vhost) {
                Ok(broker) => broker,
                Err(e) => return ApiError::from(e).into_response(),
            };
            request.extensions_mut().insert(Caller {
                principal,
                access,
                broker,
            });
            next.run(request).await
        }
        Ok(Err(refused)) => {
            tokio::time::sleep(guard.failed_login_delay).await;
            // The connection closes after the answer: a client guessing passwords
            // pays a new connection (and its slot's reclaim rules) per guess.
            let mut response = unauthorized(&refused.to_string()).into_response();
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            response
        }
    }
}

/// A dashboard page without HTTP Basic: the session cookie's user, or the login
/// page.
async fn dashboard_session(state: &AppState, mut request: Request, next: Next) -> Response {
    let access = state.broker.access();
    let Some(principal) = state
        .dashboard
        .sessions
        .principal(&access, request.headers())
    else {
        let wanted = request
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        return crate::dashboard::paths::to_login(&wanted);
    };
    let broker = state.broker.default_vhost();
    request.extensions_mut().insert(Caller {
        principal,
        access,
        broker,
    });
    next.run(request).await
}

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// `user:password` from `Authorization: Basic …`.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(BASE64.decode(encoded.trim()).ok()?).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// The host part of a `Host` header or an origin's authority, lower case, without
/// its port or IPv6 brackets.
fn host_of(authority: &str) -> String {
    let authority = authority.trim().to_ascii_lowercase();
    if let Some(rest) = authority.strip_prefix('[') {
        // `[v6]` or `[v6]:port`, nothing else after the bracket.
        return match rest.split_once(']') {
            Some((host, "")) => host.to_owned(),
            Some((host, port))
                if port
                    .strip_prefix(':')
                    .is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit())) =>
            {
                host.to_owned()
            }
            _ => String::new(),
        };
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host.to_owned(),
        _ => authority,
    }
}

fn is_loopback_name(host: &str) -> bool {
    host == "localhost"
        || host.ends_with(".localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn check_host(guard: &Guard, headers: &HeaderMap, addrs: Option<Addrs>) -> Result<(), ApiError> {
    if guard.any_host {
        return Ok(());
    }
    // HTTP/1.0 may leave it out; a browser never does.
    let Some(value) = headers.get(header::HOST) else {
        return Ok(());
    };
    let host = host_of(value.to_str().unwrap_or_default());
    let is_local_address = addrs.is_some_and(|a| {
        host.parse::<IpAddr>()
            .is_ok_and(|ip| ip == a.local.ip() || Some(ip) == ipv4_of(a.local.ip()))
    });
    if is_loopback_name(&host) || is_local_address || guard.allowed_hosts.contains(&host) {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        "host_not_allowed",
        format!(
            "Host {host:?} does not name this broker; add it to [http] allowed_hosts (a \
             guard against DNS rebinding)"
        ),
    ))
}

/// The IPv4 address inside an IPv4-mapped IPv6 one.
fn ipv4_of(ip: IpAddr) -> Option<IpAddr> {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4),
        IpAddr::V4(_) => None,
    }
}

fn check_same_origin(headers: &HeaderMap) -> Result<(), ApiError> {
    let cross = |reason: String| {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "cross_site_request",
            format!("{reason}: a page on another site cannot change the broker's state"),
        ))
    };
    if let Some(site) = headers.get("sec-fetch-site") {
        let site = site.to_str().unwrap_or_default();
        if !site.eq_ignore_ascii_case("same-origin") && !site.eq_ignore_ascii_case("none") {
            return cross(format!("Sec-Fetch-Site is {site:?}"));
        }
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or_default();
    // `scheme://authority`; "null" (a sandboxed page, a file) has no authority.
    let Some((_, authority)) = origin.split_once("://") else {
        return cross(format!("Origin is {origin:?}"));
    };
    let host = headers.get(header::HOST).map(HeaderValue::to_str);
    match host {
        Some(Ok(host)) if authority.eq_ignore_ascii_case(host.trim()) => Ok(()),
        _ => cross(format!("Origin {origin:?} is not this broker")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn addrs(local: &str) -> Addrs {
        Addrs {
            peer: "127.0.0.1:40000".parse().unwrap(),
            local: local.parse().unwrap(),
            tls: false,
        }
    }

    #[test]
    fn hosts_are_loopback_names_the_local_address_or_configured() {
        let guard = Guard::new(&["Broker.Example".to_owned()], 0);
        let local = Some(addrs("10.0.0.5:8080"));
        for ok in [
            "localhost:8080",
            "127.0.0.1",
            "[::1]:8080",
            "app.localhost",
            "10.0.0.5:8080",
            "broker.example:443",
        ] {
            assert!(
                check_host(&guard, &headers(&[("host", ok)]), local).is_ok(),
                "{ok}"
            );
        }
        for refused in [
            "evil.example",
            "10.0.0.6:8080",
            "localhost.evil.example",
            "",
            "[::1]evil.example",
        ] {
            let e = check_host(&guard, &headers(&[("host", refused)]), local).unwrap_err();
            assert_eq!(
                (e.status, e.code),
                (StatusCode::FORBIDDEN, "host_not_allowed"),
                "{refused}"
            );
        }
        let any = Guard::new(&["*".to_owned()], 0);
        assert!(check_host(&any, &headers(&[("host", "evil.example")]), local).is_ok());
    }

    #[test]
    fn cross_site_requests_are_refused_and_curl_passes() {
        assert!(check_same_origin(&headers(&[])).is_ok(), "curl");
        assert!(
            check_same_origin(&headers(&[
                ("host", "127.0.0.1:8080"),
                ("origin", "http://127.0.0.1:8080"),
                ("sec-fetch-site", "same-origin"),
            ]))
            .is_ok()
        );
        for refused in [
            vec![("sec-fetch-site", "cross-site")],
            vec![("sec-fetch-site", "same-site")],
            vec![
                ("host", "127.0.0.1:8080"),
                ("origin", "http://evil.example"),
            ],
            vec![
                ("host", "127.0.0.1:8080"),
                ("origin", "http://127.0.0.1:9090"),
            ],
            vec![("host", "127.0.0.1:8080"), ("origin", "null")],
        ] {
            let e = check_same_origin(&headers(&refused)).unwrap_err();
            assert_eq!(e.code, "cross_site_request", "{refused:?}");
        }
    }

    #[test]
    fn basic_credentials_are_parsed_and_anything_else_is_none() {
        let encoded = BASE64.encode("guest:pa:ss");
        assert_eq!(
            basic_credentials(&headers(&[("authorization", &format!("Basic {encoded}"))])),
            Some(("guest".to_owned(), "pa:ss".to_owned()))
        );
        for bad in [
            "Bearer abc",
            "Basic !!!",
            "Basic",
            &format!("Basic {}", BASE64.encode("nocolon")),
        ] {
            assert_eq!(
                basic_credentials(&headers(&[("authorization", bad)])),
                None,
                "{bad}"
            );
        }
    }
}
