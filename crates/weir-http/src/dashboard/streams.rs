//! The Streams and groups pages. A list of the streams the caller may see; a
//! stream's page browsing one partition from an offset, a time or "ago", filtered
//! by key or header, with a live tail of what is appended; a consumer group's page
//! with its members, their assignment, each partition's committed offset and lag in
//! records and seconds (with its trend, live), and a reset of the committed offsets
//! while no member is live, with a dry run.

use std::collections::BTreeMap;

use askama::Template;
use axum::extract::{Form, Path, Query, State};
use axum::response::Response;
use bytes::Bytes;
use serde::Deserialize;
use weir_broker::access::Operation;
use weir_broker::stream::groups::GroupInfo;
use weir_broker::stream::{ReadFrom, StreamRecord};
use weir_broker::{Broker, Vhost};

use super::queues::shown_body;
use super::{Flash, PageInfo, allowed, done, format, render, segment, visible_vhosts};
use crate::auth::Caller;

/// Records shown per page of a browse.
const SHOWN: u32 = 50;

/// Most records a filtered browse looks through for [`SHOWN`] matches.
const SCANNED: u32 = 5_000;

pub(crate) fn href(vhost: &str, name: &str) -> String {
    format!("/ui/streams/{}/{}", segment(vhost), segment(name))
}

fn group_href(vhost: &str, stream: &str, group: &str) -> String {
    format!("{}/groups/{}", href(vhost, stream), segment(group))
}

struct StreamRow {
    name: String,
    vhost: String,
    href: String,
    partitions: u32,
    records: String,
    bytes: String,
    groups: usize,
}

#[derive(Template)]
#[template(path = "streams.html")]
struct StreamsPage {
    page: PageInfo,
    rows: Vec<StreamRow>,
}

/// `GET /ui/streams`.
pub(crate) async fn list(
    caller: Caller,
    State(broker): State<Broker>,
    Query(flash): Query<Flash>,
) -> Response {
    let mut rows = Vec::new();
    for vhost in visible_vhosts(&broker, &caller.principal) {
        let Ok(view) = broker.vhost(&vhost) else {
            continue;
        };
        for s in view.streams() {
            let records = s
                .partition_stats
                .iter()
                .map(|p| p.next_offset - p.first_offset)
                .sum();
            let bytes = s.partition_stats.iter().map(|p| p.bytes).sum();
            let groups = view.groups(&s.name).await.map_or(0, |g| g.len());
            rows.push(StreamRow {
                href: href(&vhost, &s.name),
                vhost: vhost.clone(),
                partitions: s.options.partitions,
                records: format::count(records),
                bytes: format::bytes(bytes),
                groups,
                name: s.name,
            });
        }
    }
    render(&StreamsPage {
        page: PageInfo::new("streams", &caller, &flash),
        rows,
    })
}

/// A record as the browse table shows it.
pub(crate) struct RecordRow {
    pub(crate) partition: u32,
    pub(crate) offset: u64,
    pub(crate) time: String,
    pub(crate) key: String,
    pub(crate) headers: String,
    pub(crate) body: String,
}

impl RecordRow {
    pub(crate) fn of(r: &StreamRecord) -> RecordRow {
        let text = |b: &Bytes| String::from_utf8_lossy(b).into_owned();
        RecordRow {
            partition: r.partition,
            offset: r.offset,
            time: format::time_ms(r.timestamp_ms),
            key: r.key.as_ref().map(text).unwrap_or_default(),
            headers: r
                .headers
                .iter()
                .map(|(k, v)| format!("{k}={}", text(v)))
                .collect::<Vec<_>>()
                .join(", "),
            body: shown_body(&r.body),
        }
    }
}

/// A stream's group as its page lists it.
struct GroupRow {
    name: String,
    href: String,
    members: usize,
    lag: String,
    lag_age: String,
}

fn group_row(vhost: &str, stream: &str, g: &GroupInfo) -> GroupRow {
    let lag = g.partitions.iter().map(|p| p.lag).sum();
    let lag_ms = g.partitions.iter().map(|p| p.lag_ms).max().unwrap_or(0);
    GroupRow {
        href: group_href(vhost, stream, &g.name),
        name: g.name.clone(),
        members: g.members.len(),
        lag: format::count(lag),
        lag_age: format::age_ms(lag_ms),
    }
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct BrowseQuery {
    #[serde(default)]
    partition: u32,
    /// `first`, `last`, `next`, an offset, `time:<ms since the epoch>`, `ago:<ms>`
    /// ([`ReadFrom`]), or a UTC time as `YYYY-MM-DD HH:MM[:SS]`.
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    key: String,
    #[serde(default)]
    header: String,
    #[serde(flatten)]
    flash: Flash,
}

#[derive(Template)]
#[template(path = "stream.html")]
struct StreamPage {
    page: PageInfo,
    name: String,
    vhost: String,
    base: String,
    partitions: Vec<(u32, String, String, String)>,
    partition: u32,
    from: String,
    key: String,
    header: String,
    records: Vec<RecordRow>,
    next: Option<String>,
    tail: String,
    groups: Vec<GroupRow>,
    error: Option<String>,
}

/// Whether `r` passes the key and `name=value` header filters (empty: any).
fn matches(r: &StreamRecord, key: &str, header: &str) -> bool {
    let key_ok = key.is_empty() || r.key.as_deref() == Some(key.as_bytes());
    let header_ok = header.is_empty()
        || match header.split_once('=') {
            Some((n, v)) => r.headers.get(n.trim()).map(AsRef::as_ref) == Some(v.trim().as_bytes()),
            None => r.headers.contains_key(header.trim()),
        };
    key_ok && header_ok
}

/// Up to [`SHOWN`] records of `partition` from `from` passing the filters
/// (looking through at most [`SCANNED`]), and where to go on from.
async fn browse(
    view: &Vhost,
    name: &str,
    partition: u32,
    from: ReadFrom,
    key: &str,
    header: &str,
) -> Result<(Vec<StreamRecord>, u64), String> {
    let mut found = Vec::new();
    let mut from = from;
    let mut scanned = 0;
    let mut next;
    loop {
        let read = view
            .read_stream(name, partition, from, SHOWN, 0)
            .await
            .map_err(|e| e.to_string())?;
        next = read.next;
        let got = read.records.len() as u32;
        scanned += got;
        found.extend(read.records.into_iter().filter(|r| matches(r, key, header)));
        if got == 0 || found.len() >= SHOWN as usize || scanned >= SCANNED {
            break;
        }
        from = ReadFrom::Offset(next);
    }
    found.truncate(SHOWN as usize);
    if let Some(last) = found.last()
        && found.len() == SHOWN as usize
    {
        next = last.offset + 1;
    }
    Ok((found, next))
}

/// The stream `name` in `vhost`, if `caller` may read it.
pub(crate) fn readable(
    caller: &Caller,
    broker: &Broker,
    vhost: &str,
    name: &str,
) -> Result<Vhost, String> {
    allowed(
        broker,
        &caller.principal,
        vhost,
        Operation::Read,
        "queue",
        name,
    )?;
    let view = broker.vhost(vhost).map_err(|e| e.to_string())?;
    view.stream_info(name).map_err(|e| e.to_string())?;
    Ok(view)
}

/// `GET /ui/streams/{vhost}/{name}`.
pub(crate) async fn page(
    caller: Caller,
    State(broker): State<Broker>,
    Path((vhost, name)): Path<(String, String)>,
    Query(q): Query<BrowseQuery>,
) -> Response {
    let view = match readable(&caller, &broker, &vhost, &name) {
        Ok(view) => view,
        Err(e) => return done("/ui/streams", Err(e)),
    };
    let Ok(info) = view.stream_info(&name) else {
        return done("/ui/streams", Err(format!("no stream '{name}'")));
    };
    let from_text = q.from.clone().unwrap_or_else(|| "first".to_owned());
    let from = match format::parse_time(&from_text) {
        Some(ms) => Ok(ReadFrom::Time(ms)),
        None => from_text.parse::<ReadFrom>(),
    };
    let (records, next, error) = match from {
        Ok(from) => match browse(&view, &name, q.partition, from, &q.key, &q.header).await {
            Ok((records, next)) => (records, Some(next), None),
            Err(e) => (Vec::new(), None, Some(e)),
        },
        Err(e) => (Vec::new(), None, Some(e.to_string())),
    };
    let base = href(&vhost, &name);
    let next = next.filter(|_| !records.is_empty()).map(|n| {
        format!(
            "{base}?partition={}&from={n}&key={}&header={}",
            q.partition,
            segment(&q.key),
            segment(&q.header)
        )
    });
    let groups = view
        .groups(&name)
        .await
        .unwrap_or_default()
        .iter()
        .map(|g| group_row(&vhost, &name, g))
        .collect();
    render(&StreamPage {
        page: PageInfo::new("streams", &caller, &q.flash),
        partitions: info
            .partition_stats
            .iter()
            .map(|p| {
                (
                    p.partition,
                    format::count(p.first_offset),
                    format::count(p.next_offset),
                    format::bytes(p.bytes),
                )
            })
            .collect(),
        tail: format!(
            "/ui/live/streams/{}/{}?partition={}",
            segment(&vhost),
            segment(&name),
            q.partition
        ),
        records: records.iter().map(RecordRow::of).collect(),
        partition: q.partition,
        from: from_text,
        key: q.key,
        header: q.header,
        base,
        name,
        vhost,
        next,
        groups,
        error,
    })
}

#[derive(Template)]
#[template(path = "group.html")]
struct GroupPage {
    page: PageInfo,
    stream: String,
    stream_href: String,
    name: String,
    base: String,
    live: String,
    generation: u64,
    /// Member, its partitions.
    members: Vec<(String, String)>,
    /// Partition, owner, committed, end, lag, lag age.
    partitions: Vec<(u32, String, String, String, String, String)>,
    lag: String,
    lag_age: String,
    live_members: bool,
}

/// `GET /ui/streams/{vhost}/{name}/groups/{group}`.
pub(crate) async fn group(
    caller: Caller,
    State(broker): State<Broker>,
    Path((vhost, stream, group)): Path<(String, String, String)>,
    Query(flash): Query<Flash>,
) -> Response {
    let view = match readable(&caller, &broker, &vhost, &stream) {
        Ok(view) => view,
        Err(e) => return done("/ui/streams", Err(e)),
    };
    let g = match view.group(&stream, &group).await {
        Ok(g) => g,
        Err(e) => return done(&href(&vhost, &stream), Err(e.to_string())),
    };
    let row = group_row(&vhost, &stream, &g);
    let base = group_href(&vhost, &stream, &group);
    render(&GroupPage {
        page: PageInfo::new("streams", &caller, &flash),
        stream_href: href(&vhost, &stream),
        live: base.replacen("/ui/streams/", "/ui/live/groups/", 1),
        base,
        generation: g.generation,
        members: g
            .members
            .iter()
            .map(|(m, ps)| {
                let ps: Vec<String> = ps.iter().map(ToString::to_string).collect();
                (m.clone(), ps.join(", "))
            })
            .collect(),
        partitions: g
            .partitions
            .iter()
            .map(|p| {
                (
                    p.partition,
                    p.owner.clone().unwrap_or_default(),
                    p.committed.map_or_else(|| "none".to_owned(), format::count),
                    format::count(p.end),
                    format::count(p.lag),
                    format::age_ms(p.lag_ms),
                )
            })
            .collect(),
        lag: row.lag,
        lag_age: row.lag_age,
        live_members: !g.members.is_empty(),
        stream,
        name: group,
    })
}

#[derive(Deserialize)]
pub(crate) struct ResetForm {
    to: String,
    #[serde(default)]
    dry_run: Option<String>,
}

/// `POST /ui/streams/{vhost}/{name}/groups/{group}/reset`: sets every committed
/// offset to `to` (needs no live member), or with `dry_run` shows what it would.
pub(crate) async fn reset(
    caller: Caller,
    State(broker): State<Broker>,
    Path((vhost, stream, group)): Path<(String, String, String)>,
    Form(form): Form<ResetForm>,
) -> Response {
    let back = group_href(&vhost, &stream, &group);
    let outcome = async {
        let view = readable(&caller, &broker, &vhost, &stream)?;
        let to: ReadFrom = form
            .to
            .trim()
            .parse()
            .map_err(|e: weir_broker::BrokerError| e.to_string())?;
        let dry = form.dry_run.is_some();
        let offsets: BTreeMap<u32, u64> = view
            .reset_group(&stream, &group, to, dry)
            .await
            .map_err(|e| e.to_string())?;
        let list: Vec<String> = offsets.iter().map(|(p, o)| format!("{p}: {o}")).collect();
        let what = if dry { "Would set" } else { "Set" };
        Ok(format!(
            "{what} the committed offsets to {}.",
            list.join(", ")
        ))
    }
    .await;
    done(&back, outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(key: Option<&'static str>, header: Option<(&str, &'static str)>) -> StreamRecord {
        StreamRecord {
            partition: 0,
            offset: 0,
            timestamp_ms: 0,
            key: key.map(|k| Bytes::from_static(k.as_bytes())),
            headers: header
                .map(|(n, v)| (n.to_owned(), Bytes::from_static(v.as_bytes())))
                .into_iter()
                .collect(),
            body: Bytes::new(),
        }
    }

    #[test]
    fn filters_take_a_key_and_a_header_with_or_without_its_value() {
        let r = record(Some("user-1"), Some(("type", "signup")));
        assert!(matches(&r, "", ""));
        assert!(matches(&r, "user-1", "type=signup"));
        assert!(matches(&r, "", "type"));
        assert!(!matches(&r, "user-2", ""));
        assert!(!matches(&r, "", "type=login"));
        assert!(!matches(&record(None, None), "user-1", ""));
    }
}
