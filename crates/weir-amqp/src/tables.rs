//! Field tables checked before they are parsed.
//!
//! `amq-protocol` parses field tables and arrays recursively, one stack frame set
//! per level of nesting, with no limit: a 125 KB `connection.start-ok` whose client
//! properties nest an array 25,000 deep overflows a tokio worker's stack and aborts
//! the whole process. So every table a client can send is walked here first,
//! without recursion (an explicit stack of where each open container ends), and
//! refused when it nests deeper than [`MAX_DEPTH`] levels (rabbitmq-c's limit) or
//! holds more than the configured number of fields. Only then does the recursive
//! parser see it, and its depth is bounded by ours.
//!
//! The walk follows the type letters `amq-protocol` reads (RabbitMQ's dialect of
//! the spec's table: `s` is a short int, `l` and `L` are both 64-bit), so a table
//! it accepts is one the parser can read; anything it cannot walk is malformed.
//!
//! Tables arrive in four places: method arguments (`connection.start-ok` client
//! properties, `exchange.declare|bind|unbind`, `queue.declare|bind|unbind`,
//! `basic.consume`), the `headers` of a content header, an `AMQPLAIN` login
//! response, and message properties stored by the broker and decoded at each
//! delivery. [`check_method`], [`check_content_header`] and [`check_table`] cover
//! them.

/// Deepest nesting of tables and arrays accepted: the outermost table is level 1.
pub(crate) const MAX_DEPTH: usize = 100;

/// Why a field table is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TableError {
    #[error("field table nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("field table with more than {0} fields")]
    TooManyFields(usize),
    #[error("malformed field table")]
    Malformed,
}

/// A cursor over the bytes of one frame payload; every read is bounds-checked.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn take(&mut self, n: usize, end: usize) -> Result<usize, TableError> {
        let at = self.pos;
        let next = at.checked_add(n).ok_or(TableError::Malformed)?;
        if next > end {
            return Err(TableError::Malformed);
        }
        self.pos = next;
        Ok(at)
    }

    fn u8(&mut self, end: usize) -> Result<u8, TableError> {
        let at = self.take(1, end)?;
        Ok(self.bytes[at])
    }

    fn u32(&mut self, end: usize) -> Result<usize, TableError> {
        let at = self.take(4, end)?;
        let raw = u32::from_be_bytes([
            self.bytes[at],
            self.bytes[at + 1],
            self.bytes[at + 2],
            self.bytes[at + 3],
        ]);
        usize::try_from(raw).map_err(|_| TableError::Malformed)
    }

    fn short_string(&mut self, end: usize) -> Result<(), TableError> {
        let len = self.u8(end)?;
        self.take(usize::from(len), end).map(drop)
    }
}

/// Checks the field table that starts `bytes` (its 4-byte length first) and returns
/// how many bytes it takes.
///
/// # Errors
///
/// [`TableError`] when it nests too deep, has more than `max_fields` fields (nested
/// ones counted), or cannot be walked.
pub(crate) fn check_table(bytes: &[u8], max_fields: usize) -> Result<usize, TableError> {
    let mut cursor = Cursor { bytes, pos: 0 };
    walk_table(&mut cursor, max_fields)?;
    Ok(cursor.pos)
}

/// Walks one table at the cursor, nested containers included, without recursion.
fn walk_table(c: &mut Cursor<'_>, max_fields: usize) -> Result<(), TableError> {
    let len = c.u32(c.bytes.len())?;
    let start = c.pos;
    c.take(len, c.bytes.len())?;
    c.pos = start;
    // Each open container: where it ends, and whether its entries have keys.
    let mut open: Vec<(usize, bool)> = Vec::with_capacity(8);
    open.push((start + len, true));
    let mut fields = 0usize;
    while let Some(&(end, keyed)) = open.last() {
        if c.pos == end {
            open.pop();
            continue;
        }
        if keyed {
            c.short_string(end)?;
        }
        fields += 1;
        if fields > max_fields {
            return Err(TableError::TooManyFields(max_fields));
        }
        let fixed = match c.u8(end)? {
            b't' | b'b' | b'B' => 1,
            b's' | b'U' | b'u' => 2,
            b'I' | b'i' | b'f' => 4,
            b'l' | b'L' | b'd' | b'T' => 8,
            b'D' => 5,
            b'V' => 0,
            b'S' | b'x' => c.u32(end)?,
            kind @ (b'A' | b'F') => {
                let len = c.u32(end)?;
                let inner_start = c.pos;
                c.take(len, end)?;
                c.pos = inner_start;
                if open.len() >= MAX_DEPTH {
                    return Err(TableError::TooDeep);
                }
                open.push((inner_start + len, kind == b'F'));
                continue;
            }
            _ => return Err(TableError::Malformed),
        };
        c.take(fixed, end)?;
    }
    Ok(())
}

/// Checks the field table a method frame's payload carries, if its method has one.
/// Methods without tables, and payloads too short to reach one, pass: the parser
/// refuses those on its own, without recursion.
///
/// # Errors
///
/// [`TableError`] for the method's table, as [`check_table`].
pub(crate) fn check_method(payload: &[u8], max_fields: usize) -> Result<(), TableError> {
    let Some(at) = method_table_offset(payload) else {
        return Ok(());
    };
    check_table(&payload[at..], max_fields).map(drop)
}

/// Where the table of a method's arguments starts, for the methods that have one.
fn method_table_offset(payload: &[u8]) -> Option<usize> {
    if payload.len() < 4 {
        return None;
    }
    let class_id = u16::from_be_bytes([payload[0], payload[1]]);
    let method_id = u16::from_be_bytes([payload[2], payload[3]]);
    // What comes before the table: fixed bytes, then short strings, then fixed
    // bytes again (the bits of a method are packed into octets).
    let (before, strings, after) = match (class_id, method_id) {
        // connection.start: version-major, version-minor, server-properties.
        (10, 10) => (2, 0, 0),
        // connection.start-ok: client-properties first.
        (10, 11) => (0, 0, 0),
        // exchange.declare (ticket, exchange, type, bits) and basic.consume
        // (ticket, queue, consumer-tag, bits).
        (40, 10) | (60, 20) => (2, 2, 1),
        // exchange.bind / exchange.unbind (ticket, destination, source, key,
        // no-wait) and queue.bind (ticket, queue, exchange, routing-key, no-wait).
        (40, 30 | 40) | (50, 20) => (2, 3, 1),
        // queue.declare: ticket, queue, bits.
        (50, 10) => (2, 1, 1),
        // queue.unbind: ticket, queue, exchange, routing-key (no bits).
        (50, 50) => (2, 3, 0),
        _ => return None,
    };
    let mut c = Cursor {
        bytes: payload,
        pos: 4,
    };
    let end = payload.len();
    c.take(before, end).ok()?;
    for _ in 0..strings {
        c.short_string(end).ok()?;
    }
    c.take(after, end).ok()?;
    Some(c.pos)
}

/// Checks the `headers` table of a content header's payload (class, weight, body
/// size, property flags, then the properties in flag order).
///
/// # Errors
///
/// [`TableError`] for the headers, as [`check_table`].
pub(crate) fn check_content_header(payload: &[u8], max_fields: usize) -> Result<(), TableError> {
    check_properties(payload.get(12..).unwrap_or_default(), max_fields)
}

/// Checks the `headers` table of encoded basic properties (flags first).
///
/// # Errors
///
/// [`TableError`] for the headers, as [`check_table`].
pub(crate) fn check_properties(properties: &[u8], max_fields: usize) -> Result<(), TableError> {
    let mut c = Cursor {
        bytes: properties,
        pos: 0,
    };
    let end = properties.len();
    let Ok(at) = c.take(2, end) else {
        return Ok(());
    };
    let flags = u16::from_be_bytes([properties[at], properties[at + 1]]);
    if flags & (1 << 13) == 0 {
        return Ok(());
    }
    for bit in [15, 14] {
        if flags & (1 << bit) != 0 && c.short_string(end).is_err() {
            return Ok(());
        }
    }
    check_table(&properties[c.pos..], max_fields).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::frame::WriteContext;
    use amq_protocol::protocol::basic::{AMQPProperties, gen_properties};
    use amq_protocol::types::generation::gen_field_table;
    use amq_protocol::types::parsing::parse_field_table;
    use amq_protocol::types::{AMQPValue, FieldArray, FieldTable, LongString};

    /// A table whose one field is an array nested `depth - 1` levels deep, built
    /// by hand (the generator recurses too).
    fn nested(depth: usize) -> Vec<u8> {
        // Innermost first: an empty array, then each level wraps the one inside.
        let mut inner: Vec<u8> = Vec::new();
        for _ in 1..depth {
            let mut level = Vec::with_capacity(inner.len() + 5);
            level.push(b'A');
            level.extend_from_slice(&(inner.len() as u32).to_be_bytes());
            level.extend_from_slice(&inner);
            // The array's one element is the next level (a value: type letter and body).
            inner = level;
        }
        let mut entries = vec![1, b'k'];
        if inner.is_empty() {
            entries.push(b'V');
        } else {
            entries.extend_from_slice(&inner);
        }
        let mut table = (entries.len() as u32).to_be_bytes().to_vec();
        table.extend_from_slice(&entries);
        table
    }

    fn encode(table: &FieldTable) -> Vec<u8> {
        gen_field_table(table)(WriteContext::from(Vec::new()))
            .unwrap()
            .write
    }

    #[test]
    fn depth_one_hundred_passes_and_one_more_is_refused() {
        for depth in [1, 2, 50, MAX_DEPTH] {
            let bytes = nested(depth);
            assert_eq!(
                check_table(&bytes, 1 << 20),
                Ok(bytes.len()),
                "depth {depth}"
            );
            assert!(parse_field_table(&bytes[..]).is_ok(), "depth {depth}");
        }
        for depth in [MAX_DEPTH + 1, 25_000] {
            assert_eq!(
                check_table(&nested(depth), 1 << 20),
                Err(TableError::TooDeep)
            );
        }
    }

    /// What the limit buys: the deepest table accepted parses on a quarter of a
    /// tokio worker's 2 MiB stack (measured: needs more than 128 KiB, less than 256).
    #[test]
    fn the_deepest_accepted_table_parses_on_a_small_stack() {
        let parsed = std::thread::Builder::new()
            .stack_size(512 << 10)
            .spawn(|| parse_field_table(&nested(MAX_DEPTH)[..]).is_ok())
            .unwrap()
            .join()
            .unwrap();
        assert!(parsed);
    }

    #[test]
    fn every_value_kind_walks_like_the_parser() {
        let mut inner = FieldTable::default();
        inner.insert("n".into(), AMQPValue::LongLongInt(-3));
        let mut t = FieldTable::default();
        let values = [
            AMQPValue::Boolean(true),
            AMQPValue::ShortShortInt(-1),
            AMQPValue::ShortShortUInt(1),
            AMQPValue::ShortInt(-2),
            AMQPValue::ShortUInt(2),
            AMQPValue::LongInt(-4),
            AMQPValue::LongUInt(4),
            AMQPValue::LongLongInt(8),
            AMQPValue::Float(1.5),
            AMQPValue::Double(2.5),
            AMQPValue::DecimalValue(amq_protocol::types::DecimalValue { scale: 2, value: 7 }),
            AMQPValue::LongString(LongString::from(b"text".to_vec())),
            AMQPValue::FieldArray(FieldArray::from(vec![
                AMQPValue::Void,
                AMQPValue::Boolean(false),
            ])),
            AMQPValue::Timestamp(9),
            AMQPValue::FieldTable(inner),
            AMQPValue::ByteArray(vec![1, 2, 3].into()),
            AMQPValue::Void,
        ];
        for (i, v) in values.into_iter().enumerate() {
            t.insert(format!("k{i}").into(), v);
        }
        let mut bytes = encode(&t);
        bytes.extend_from_slice(b"rest");
        assert_eq!(check_table(&bytes, 100), Ok(bytes.len() - 4));
        // 17 fields, the nested table's and array's own entries on top.
        assert_eq!(check_table(&bytes, 19), Err(TableError::TooManyFields(19)));
        assert_eq!(check_table(&bytes, 20), Ok(bytes.len() - 4));
    }

    #[test]
    fn truncated_and_unknown_input_is_malformed() {
        let bytes = nested(5);
        for cut in 0..bytes.len() {
            assert_eq!(
                check_table(&bytes[..cut], 100),
                Err(TableError::Malformed),
                "cut at {cut}"
            );
        }
        assert_eq!(
            check_table(&[0, 0, 0, 3, 1, b'k', b'?'], 100),
            Err(TableError::Malformed)
        );
        // A container claiming more than its parent holds.
        assert_eq!(
            check_table(&[0, 0, 0, 7, 1, b'k', b'A', 0, 0, 0, 9], 100),
            Err(TableError::Malformed)
        );
    }

    #[test]
    fn method_tables_are_found() {
        // queue.declare(ticket 0, "q", bits 0x02, arguments = deep)
        let mut payload = vec![0, 50, 0, 10, 0, 0, 1, b'q', 2];
        payload.extend_from_slice(&nested(MAX_DEPTH + 1));
        assert_eq!(check_method(&payload, 1000), Err(TableError::TooDeep));
        // queue.unbind has no bits before its table.
        let mut payload = vec![0, 50, 0, 50, 0, 0, 1, b'q', 1, b'e', 0];
        payload.extend_from_slice(&nested(MAX_DEPTH + 1));
        assert_eq!(check_method(&payload, 1000), Err(TableError::TooDeep));
        // start-ok: the table comes first.
        let mut payload = vec![0, 10, 0, 11];
        payload.extend_from_slice(&nested(25_000));
        assert_eq!(check_method(&payload, 1 << 20), Err(TableError::TooDeep));
        // basic.ack has no table.
        assert_eq!(check_method(&[0, 60, 0, 80, 1, 2, 3], 1), Ok(()));
    }

    #[test]
    fn content_header_headers_are_found_after_the_strings() {
        let mut headers = FieldTable::default();
        headers.insert(
            "a".into(),
            AMQPValue::LongString(LongString::from(b"b".to_vec())),
        );
        let properties = AMQPProperties::default()
            .with_content_type("text/plain".into())
            .with_content_encoding("gzip".into())
            .with_headers(headers);
        let encoded = gen_properties(&properties)(WriteContext::from(Vec::new()))
            .unwrap()
            .write;
        assert_eq!(check_properties(&encoded, 1), Ok(()));
        // Swap in a deep table in place of the headers.
        let headers_at = 2 + 1 + 10 + 1 + 4;
        let mut deep = encoded[..headers_at].to_vec();
        deep.extend_from_slice(&nested(MAX_DEPTH + 1));
        assert_eq!(check_properties(&deep, 1000), Err(TableError::TooDeep));
        let mut header = vec![0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5];
        header.extend_from_slice(&deep);
        assert_eq!(
            check_content_header(&header, 1000),
            Err(TableError::TooDeep)
        );
    }
}
