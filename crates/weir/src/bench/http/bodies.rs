//! The bodies a run sends: filler of the size asked, numbered at the start with a
//! sequence number and the send time, so consumers can verify the run (each number
//! once) and measure end to end latency. Rendered as the JSON of a send request by
//! hand, once per batch, so the load generator's own cost stays small.

/// Width of the sequence number that starts each body, then of the send time after
/// it (microseconds since the run started): zero-padded decimal, so the body stays
/// ASCII and travels as a JSON string. Bodies shorter than both carry neither.
const SEQ_LEN: usize = 20;
const STAMP_LEN: usize = 16;
pub(super) const NUMBERED_LEN: usize = SEQ_LEN + STAMP_LEN;

/// `size` bytes of letters and digits from a small xorshift generator: cheap, and
/// not a run of one byte that compression or dedup at some layer would flatter.
pub(super) fn filler(size: usize, seed: u64) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut state = seed | 1;
    (0..size)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            char::from(ALPHABET[(state % ALPHABET.len() as u64) as usize])
        })
        .collect()
}

/// `{"messages":[{"body":"..."},...]}` for the sequence numbers `seqs`, written
/// directly: bodies are letters and digits, so nothing needs escaping, and no
/// `serde_json::Value` is built per message.
pub(super) fn render_batch(filler: &str, seqs: std::ops::Range<u64>, now_us: u64) -> String {
    let per_message = filler.len() + 12;
    let count = usize::try_from(seqs.end - seqs.start).unwrap_or(0);
    let mut out = String::with_capacity(16 + per_message * count);
    out.push_str(r#"{"messages":["#);
    for seq in seqs.clone() {
        if seq != seqs.start {
            out.push(',');
        }
        out.push_str(r#"{"body":""#);
        push_numbered(&mut out, filler, seq, now_us);
        out.push_str(r#""}"#);
    }
    out.push_str("]}");
    out
}

/// The body: the sequence number in the first `SEQ_LEN` bytes, the send time in the
/// next `STAMP_LEN`, then filler, `size` bytes in all.
#[cfg(test)]
fn numbered(filler: &str, seq: u64, now_us: u64) -> String {
    let mut body = String::new();
    push_numbered(&mut body, filler, seq, now_us);
    body
}

fn push_numbered(out: &mut String, filler: &str, seq: u64, now_us: u64) {
    use std::fmt::Write as _;
    if filler.len() < NUMBERED_LEN {
        out.push_str(filler);
        return;
    }
    let stamp = now_us % 10u64.pow(STAMP_LEN as u32);
    let _ = write!(out, "{seq:0SEQ_LEN$}{stamp:0STAMP_LEN$}");
    out.push_str(&filler[NUMBERED_LEN..]);
}

/// The sequence number and send time of a numbered body.
pub(super) fn numbers(body: &str) -> Option<(u64, u64)> {
    let prefix = body.get(..NUMBERED_LEN)?;
    if !prefix.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((
        prefix[..SEQ_LEN].parse().ok()?,
        prefix[SEQ_LEN..].parse().ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    #[test]
    fn bodies_have_the_size_asked_and_carry_their_number_and_send_time() {
        let filler = filler(100, 7);
        assert_eq!(filler.len(), 100);
        assert!(filler.bytes().all(|b| b.is_ascii_alphanumeric()));
        let body = numbered(&filler, 42, 123_456);
        assert_eq!(body.len(), 100);
        assert_eq!(numbers(&body), Some((42, 123_456)));
        let body = numbered(&filler, u64::MAX, u64::MAX);
        assert_eq!(body.len(), 100);
        assert_eq!(numbers(&body).map(|(seq, _)| seq), Some(u64::MAX));
        assert_eq!(numbered("short", 1, 5), "short");
        assert_eq!(numbers("short"), None);
        assert_eq!(numbers(&filler), None, "filler is not a number");
    }

    #[test]
    fn a_rendered_batch_is_the_json_of_its_numbered_bodies() {
        let filler = filler(64, 3);
        let rendered = render_batch(&filler, 7..10, 99);
        let parsed: Value = serde_json::from_str(&rendered).expect("valid JSON");
        let bodies: Vec<&str> = parsed["messages"]
            .as_array()
            .expect("an array")
            .iter()
            .map(|m| m["body"].as_str().expect("a text body"))
            .collect();
        let expected: Vec<String> = (7..10).map(|seq| numbered(&filler, seq, 99)).collect();
        assert_eq!(bodies, expected);
    }
}
