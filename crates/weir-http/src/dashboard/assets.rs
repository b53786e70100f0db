//! The dashboard's static files, embedded in the binary (no files to install, no
//! Node at build or run time): its stylesheet and script, and the vendored htmx
//! and uPlot (`assets/vendor/README.md` says which versions). Served at
//! `/ui/assets/{name}` without a login (they hold nothing of the broker's), cached
//! by browsers for a day.

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Every asset: name, media type, bytes.
pub(crate) const ASSETS: [(&str, &str, &[u8]); 5] = [
    (
        "weir.css",
        "text/css; charset=utf-8",
        include_bytes!("../../assets/weir.css"),
    ),
    (
        "weir.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/weir.js"),
    ),
    (
        "htmx.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/vendor/htmx.min.js"),
    ),
    (
        "uPlot.iife.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/vendor/uPlot.iife.min.js"),
    ),
    (
        "uPlot.min.css",
        "text/css; charset=utf-8",
        include_bytes!("../../assets/vendor/uPlot.min.css"),
    ),
];

/// `GET /ui/assets/{name}`.
pub(crate) async fn serve(Path(name): Path<String>) -> Response {
    let Some((_, kind, bytes)) = ASSETS.iter().find(|(n, _, _)| *n == name) else {
        return (StatusCode::NOT_FOUND, "no such asset").into_response();
    };
    let mut response = (*bytes).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=86400"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_assets_stay_under_two_megabytes() {
        let total: usize = ASSETS.iter().map(|(_, _, b)| b.len()).sum();
        assert!(total <= 2 << 20, "{total} bytes of assets");
    }
}
