//! The web dashboard (issue 22): pages served by the HTTP front end at `/` and
//! `/ui/...`, rendered on the server from askama templates (`templates/`), with a
//! small script of our own for the live panels (`assets/weir.js`, one server-sent
//! event stream per page, updated every second) and the vendored htmx and uPlot.
//! Forms and tables work without JavaScript: every change is a plain form `POST`
//! answered with a redirect (`303`) to the page with what happened in `flash`.
//!
//! Behind the same login as the API: the request guard ([`crate::auth`]) takes
//! HTTP Basic or the dashboard's session cookie ([`sessions`]), and sends a browser
//! without either to `/login`. Pages show what the caller may see: users tagged
//! `administrator` or `monitoring` every vhost, others the vhosts they have
//! permissions in; each action checks the permission its API call checks.
//!
//! Why in weir-http: the dashboard is the HTTP front end's other face, it shares
//! the guard, the state and the broker calls, and it reaches the broker only
//! through the broker's API, as the JSON routes do.

mod admin;
mod assets;
mod connections;
mod dead_letters;
mod exchanges;
mod figures;
mod format;
mod live;
mod overview;
pub(crate) mod paths;
mod queues;
pub(crate) mod sessions;
pub(crate) mod store;
mod streams;

use std::net::IpAddr;

use askama::Template;
use axum::Router;
use axum::extract::{Form, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use weir_broker::Broker;
use weir_broker::access::{Operation, Principal};

use crate::auth::{Addrs, Caller};
use crate::error::ApiError;
use crate::state::AppState;

/// The dashboard's routes.
pub(crate) fn routes(router: Router<AppState>) -> Router<AppState> {
    router
        .route("/", get(overview::page))
        .route("/login", get(login_page).post(log_in))
        .route("/logout", post(log_out))
        .route("/ui/assets/{name}", get(assets::serve))
        .route("/ui/live/overview", get(live::overview))
        .route("/ui/live/queues/{vhost}/{name}", get(live::queue))
        .route("/ui/queues", get(queues::list))
        .route("/ui/queues/{vhost}/{name}", get(queues::page))
        .route("/ui/queues/{vhost}/{name}/purge", post(queues::purge))
        .route("/ui/queues/{vhost}/{name}/publish", post(queues::publish))
        .route("/ui/dead-letters", get(dead_letters::list))
        .route("/ui/dead-letters/{vhost}/{name}", get(dead_letters::page))
        .route(
            "/ui/dead-letters/{vhost}/{name}/act",
            post(dead_letters::act),
        )
        .route("/ui/exchanges", get(exchanges::list))
        .route("/ui/exchanges/{vhost}/{name}", get(exchanges::page))
        .route("/ui/admin", get(admin::page))
        .route("/ui/admin/users", post(admin::save_user))
        .route("/ui/admin/users/delete", post(admin::delete_user))
        .route("/ui/admin/vhosts", post(admin::add_vhost))
        .route("/ui/admin/vhosts/delete", post(admin::delete_vhost))
        .route("/ui/admin/permissions", post(admin::set_permissions))
        .route(
            "/ui/admin/permissions/delete",
            post(admin::clear_permissions),
        )
        .route("/ui/streams", get(streams::list))
        .route("/ui/streams/{vhost}/{name}", get(streams::page))
        .route(
            "/ui/streams/{vhost}/{name}/groups/{group}",
            get(streams::group),
        )
        .route(
            "/ui/streams/{vhost}/{name}/groups/{group}/reset",
            post(streams::reset),
        )
        .route("/ui/live/streams/{vhost}/{name}", get(live::tail))
        .route(
            "/ui/live/groups/{vhost}/{name}/groups/{group}",
            get(live::group),
        )
        .route("/ui/connections", get(connections::page))
        .route("/ui/connections/{id}/close", post(connections::close))
}

/// The navigation bar: link, label, section.
const NAV: [(&str, &str, &str); 7] = [
    ("/", "Overview", "overview"),
    ("/ui/queues", "Queues", "queues"),
    ("/ui/dead-letters", "Dead letters", "dead-letters"),
    ("/ui/exchanges", "Exchanges", "exchanges"),
    ("/ui/streams", "Streams", "streams"),
    ("/ui/connections", "Connections", "connections"),
    ("/ui/admin", "Admin", "admin"),
];

/// What every page's frame shows.
pub(crate) struct PageInfo {
    pub(crate) section: &'static str,
    pub(crate) user: String,
    pub(crate) flash: Option<String>,
    pub(crate) flash_error: bool,
}

impl PageInfo {
    /// The navigation bar's links.
    #[allow(clippy::unused_self, reason = "called on the page from the template")]
    pub(crate) fn nav(&self) -> &'static [(&'static str, &'static str, &'static str)] {
        &NAV
    }

    /// Whether section `key` is this page's.
    pub(crate) fn is_on(&self, key: &str) -> bool {
        key == self.section
    }

    pub(crate) fn new(section: &'static str, caller: &Caller, flash: &Flash) -> PageInfo {
        let (flash, flash_error) = match (&flash.error, &flash.flash) {
            (Some(e), _) => (Some(e.clone()), true),
            (None, Some(f)) => (Some(f.clone()), false),
            (None, None) => (None, false),
        };
        PageInfo {
            section,
            user: caller.principal.name.clone(),
            flash,
            flash_error,
        }
    }
}

/// A page's `flash` and `error` query parameters: what the last action did.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Flash {
    #[serde(default)]
    pub(crate) flash: Option<String>,
    #[serde(default)]
    pub(crate) error: Option<String>,
}

/// Renders a template, or says why it could not be.
pub(crate) fn render(page: &impl Template) -> Response {
    match page.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "a dashboard page did not render");
            (StatusCode::INTERNAL_SERVER_ERROR, "the page did not render").into_response()
        }
    }
}

/// After an action: back to `to` with what happened (or what went wrong).
pub(crate) fn done(to: &str, outcome: Result<String, String>) -> Response {
    let (key, text) = match outcome {
        Ok(text) => ("flash", text),
        Err(text) => ("error", text),
    };
    let text = percent_encoding::utf8_percent_encode(&text, paths::QUERY);
    let glue = if to.contains('?') { '&' } else { '?' };
    Redirect::to(&format!("{to}{glue}{key}={text}")).into_response()
}

/// A path segment as links write it (`/` as `%2F`).
pub(crate) fn segment(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// The vhosts `who` may look at: all of them with `administrator` or
/// `monitoring`, else those it has permissions in.
pub(crate) fn visible_vhosts(broker: &Broker, who: &Principal) -> Vec<String> {
    let access = broker.access();
    access
        .vhosts()
        .into_iter()
        .filter(|v| access.check_view(who, v).is_ok())
        .collect()
}

/// Whether `who` may do `operation` on `kind` `name` in `vhost`, as the API checks.
pub(crate) fn allowed(
    broker: &Broker,
    who: &Principal,
    vhost: &str,
    operation: Operation,
    kind: &'static str,
    name: &str,
) -> Result<(), String> {
    broker
        .access()
        .check(who, vhost, operation, kind, name)
        .map_err(|refused| refused.to_string())
}

// ---- login ----

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    next: String,
    error: Option<String>,
}

#[derive(Deserialize)]
struct LoginQuery {
    #[serde(default)]
    next: Option<String>,
}

/// Where to go after the login: a path on this broker, nothing else.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n.to_owned(),
        _ => "/".to_owned(),
    }
}

/// `GET /login`.
async fn login_page(axum::extract::Query(q): axum::extract::Query<LoginQuery>) -> Response {
    render(&LoginPage {
        next: safe_next(q.next.as_deref()),
        error: None,
    })
}

#[derive(Deserialize)]
struct LoginForm {
    username: String,
    password: String,
    #[serde(default)]
    next: Option<String>,
}

/// `POST /login`: the broker's users, as HTTP Basic checks them; a refusal waits
/// `failed_login_delay_ms` first.
async fn log_in(
    State(state): State<AppState>,
    addrs: Option<axum::Extension<Addrs>>,
    Form(form): Form<LoginForm>,
) -> Response {
    let next = safe_next(form.next.as_deref());
    let peer = addrs
        .as_ref()
        .map_or(IpAddr::from([0, 0, 0, 0]), |a| a.0.peer.ip());
    let secure = addrs.is_some_and(|a| a.0.tls);
    let access = state.broker.access();
    let name = form.username.clone();
    let checked = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        access.log_in(form.username, form.password, peer),
    )
    .await;
    let Ok(Ok(principal)) = checked else {
        tracing::warn!(%peer, user = %name, "dashboard login refused");
        tokio::time::sleep(state.guard.failed_login_delay).await;
        let mut page = render(&LoginPage {
            next,
            error: Some("The user name or password is wrong.".to_owned()),
        });
        *page.status_mut() = StatusCode::UNAUTHORIZED;
        return page;
    };
    let stamp = access.login_stamp(&principal.name).unwrap_or_default();
    let sessions = &state.dashboard.sessions;
    match sessions.open(&principal.name, stamp) {
        Ok(token) => with_cookie(
            Redirect::to(&next).into_response(),
            &sessions::set_cookie(Some(&token), sessions.idle(), secure),
        ),
        Err(e) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            format!("no session token: {e}"),
        )
        .into_response(),
    }
}

/// `POST /logout`.
async fn log_out(
    State(state): State<AppState>,
    addrs: Option<axum::Extension<Addrs>>,
    headers: HeaderMap,
) -> Response {
    state.dashboard.sessions.close(&headers);
    let secure = addrs.is_some_and(|a| a.0.tls);
    with_cookie(
        Redirect::to("/login").into_response(),
        &sessions::set_cookie(None, std::time::Duration::ZERO, secure),
    )
}

fn with_cookie(mut response: Response, cookie: &str) -> Response {
    if let Ok(value) = HeaderValue::from_str(cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_followed_after_a_login() {
        assert_eq!(safe_next(Some("/ui/queues?q=a")), "/ui/queues?q=a");
        for bad in ["//evil.example/", "https://evil.example/", "/\\evil", ""] {
            assert_eq!(safe_next(Some(bad)), "/", "{bad}");
        }
        assert_eq!(safe_next(None), "/");
    }
}
