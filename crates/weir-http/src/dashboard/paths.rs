//! Which paths are the dashboard's, for the request guard (`crate::auth`): a page
//! (a browser without a login goes to the login form), or open to anyone (the
//! login form, the static files). A leaf, so the guard does not import the pages.

use axum::response::{IntoResponse, Redirect, Response};

/// Whether `path` is one of the dashboard's pages (a browser without a login is
/// sent to `/login` rather than answered 401).
pub(crate) fn is_page(path: &str) -> bool {
    path == "/" || (path.starts_with("/ui/") && !path.starts_with("/ui/assets/"))
}

/// Whether `path` needs no login at all: logging in and out, and the static files.
pub(crate) fn is_open(path: &str) -> bool {
    path == "/login" || path == "/logout" || path.starts_with("/ui/assets/")
}

/// Where a browser without a login goes.
pub(crate) fn to_login(path_and_query: &str) -> Response {
    let next = percent_encoding::utf8_percent_encode(path_and_query, QUERY).to_string();
    Redirect::to(&format!("/login?next={next}")).into_response()
}

/// What a query value escapes.
pub(crate) const QUERY: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'/');

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_and_open_paths_are_told_apart() {
        assert!(is_page("/") && is_page("/ui/queues"));
        assert!(!is_page("/api/queues") && !is_page("/ui/assets/weir.css"));
        assert!(is_open("/login") && is_open("/logout") && is_open("/ui/assets/weir.js"));
        assert!(!is_open("/ui/queues") && !is_open("/"));
    }
}
