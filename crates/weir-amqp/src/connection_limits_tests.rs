//! The connection machine's limits on what a client may send: nesting in field
//! tables, and body bytes of unfinished publishes.

use super::*;

/// A field table holding one array nested `depth - 1` levels deep, encoded by hand
/// (the generator recurses as the parser does).
fn deep_table(depth: usize) -> Vec<u8> {
    let mut inner: Vec<u8> = Vec::new();
    for _ in 1..depth {
        let mut level = vec![b'A'];
        level.extend_from_slice(&(inner.len() as u32).to_be_bytes());
        level.extend_from_slice(&inner);
        inner = level;
    }
    let mut entries = vec![1, b'k'];
    entries.extend_from_slice(&inner);
    let mut table = (entries.len() as u32).to_be_bytes().to_vec();
    table.extend_from_slice(&entries);
    table
}

/// A frame of `kind` on `ch` around `payload`.
fn raw_frame(kind: u8, ch: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![kind];
    f.extend_from_slice(&ch.to_be_bytes());
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    f.extend_from_slice(payload);
    f.push(0xCE);
    f
}

#[test]
fn a_deep_start_ok_closes_the_connection_with_502() {
    let mut rig = Rig::new();
    // The frame: client properties nested 25,000 deep.
    let mut payload = vec![0, 10, 0, 11];
    payload.extend_from_slice(&deep_table(25_000));
    payload.extend_from_slice(&[5, b'P', b'L', b'A', b'I', b'N', 0, 0, 0, 0, 0]);
    let mut bytes = framing::PROTOCOL_HEADER.to_vec();
    bytes.extend_from_slice(&raw_frame(1, 0, &payload));
    rig.conn = Connection::new(
        Arc::new(AmqpConfig {
            frame_max: 1 << 20,
            ..AmqpConfig::default()
        }),
        "127.0.0.1:40000".parse().unwrap(),
        rig.now,
    );
    rig.feed(&bytes);
    assert_eq!(rig.connection_close(), Some(codes::SYNTAX_ERROR));
    assert!(!rig.conn.is_running());
}

#[test]
fn deep_arguments_and_headers_close_only_their_channel_with_406() {
    let mut rig = Rig::open(0);
    rig.feed(&Client::default().open_channel(2).bytes);
    rig.frames();
    // queue.declare(ticket 0, "q", durable) with arguments 101 deep, on channel 1.
    let mut declare = vec![0, 50, 0, 10, 0, 0, 1, b'q', 2];
    declare.extend_from_slice(&deep_table(tables::MAX_DEPTH + 1));
    // A publish on channel 2 whose content header's headers are as deep, then its body.
    let mut header = vec![0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 0x20, 0];
    header.extend_from_slice(&deep_table(tables::MAX_DEPTH + 1));
    let bytes = Client::default()
        .raw(&raw_frame(1, 1, &declare))
        .method(
            2,
            AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
                exchange: "".into(),
                routing_key: "q".into(),
                mandatory: false,
                immediate: false,
            })),
        )
        .raw(&raw_frame(2, 2, &header))
        .raw(&raw_frame(3, 2, b"abc"))
        .bytes;
    let inputs = rig.feed(&bytes);
    assert!(
        matches!(
            inputs[..],
            [Input::ChannelClosing(1), Input::ChannelClosing(2)]
        ),
        "{inputs:?}"
    );
    let closes: Vec<(u16, u16, u16, u16)> = rig
        .frames()
        .into_iter()
        .filter_map(|f| match f {
            Frame::Method(ch, class) => match *class {
                AMQPClass::Channel(channel::AMQPMethod::Close(c)) => {
                    Some((ch, c.reply_code, c.class_id, c.method_id))
                }
                _ => None,
            },
            _ => None,
        })
        .collect();
    assert_eq!(
        closes,
        vec![
            (1, codes::PRECONDITION_FAILED, 50, 10),
            (2, codes::PRECONDITION_FAILED, 60, 40)
        ]
    );
    assert!(rig.conn.is_running());
    // A table at the limit still goes through.
    let mut ok = vec![0, 50, 0, 10, 0, 0, 1, b'q', 2];
    ok.extend_from_slice(&deep_table(tables::MAX_DEPTH));
    let inputs = rig.feed(
        &Client::default()
            .open_channel(3)
            .raw(&raw_frame(1, 3, &ok))
            .bytes,
    );
    assert!(
        matches!(inputs[..], [Input::ChannelOpened(3), Input::Method(3, _)]),
        "{inputs:?}"
    );
}

#[test]
fn partial_publishes_are_capped_per_connection() {
    let mut rig = Rig::new();
    rig.conn = Connection::new(
        Arc::new(AmqpConfig {
            max_message_bytes: 1000,
            max_partial_publish_bytes: 1500,
            ..AmqpConfig::default()
        }),
        "127.0.0.1:40000".parse().unwrap(),
        rig.now,
    );
    let mut client = Client::handshake(0, false);
    for ch in 1..=3 {
        client = client.open_channel(ch);
    }
    rig.feed(&client.bytes);
    rig.frames();
    // Three channels each send 600 of their 990 bytes (the properties count toward the limit of 1,000): the third goes over 1,500.
    let mut bytes = Vec::new();
    for ch in 1..=3u16 {
        let whole = Client::default().publish(ch, &[b'x'; 990], 600).bytes;
        // Keep the method, the header and the first body frame (600 bytes + 8).
        bytes.extend_from_slice(&whole[..whole.len() - (390 + 8)]);
    }
    let inputs = rig.feed(&bytes);
    assert!(
        matches!(inputs[..], [Input::ChannelClosing(3)]),
        "{inputs:?}"
    );
    // The others finish, and the third's bytes were given back: channel 1 can
    // start another one afterwards.
    let mut rest = Vec::new();
    for ch in 1..=2u16 {
        let whole = Client::default().publish(ch, &[b'x'; 990], 600).bytes;
        rest.extend_from_slice(&whole[whole.len() - (390 + 8)..]);
    }
    rest.extend_from_slice(&Client::default().publish(1, &[b'y'; 990], 600).bytes);
    let inputs = rig.feed(&rest);
    let sizes: Vec<usize> = inputs
        .iter()
        .filter_map(|i| match i {
            Input::Publish(_, p) => Some(p.body.len()),
            _ => None,
        })
        .collect();
    assert_eq!(sizes, vec![990, 990, 990], "{inputs:?}");
}
