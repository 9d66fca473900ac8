//! Hostile clients and the customer's data: slow and idle connections, erasure, the audit
//! log, and what the logs may say.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{Backend, Server, Spec};

/// A server whose connections must send a head within 1 s and be answered within 2 s.
fn impatient_server(dir: &std::path::Path) -> Server {
    let config = dir.join("tandem.toml");
    std::fs::write(
        &config,
        "[server]\nheader_timeout = \"1s\"\nrequest_timeout = \"2s\"\n",
    )
    .unwrap();
    let mut spec = Spec::new(Backend::embedded(dir));
    spec.config = Some(config);
    Server::start(spec)
}

/// Reads until the server closes the connection (or the deadline passes); returns what it
/// sent and how long the connection stayed open.
async fn read_until_closed(stream: &mut TcpStream, deadline: Duration) -> (String, Duration) {
    let start = Instant::now();
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let left = deadline.saturating_sub(start.elapsed());
        assert!(
            !left.is_zero(),
            "the server kept the connection open for {deadline:?}"
        );
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return (String::from_utf8_lossy(&seen).into(), start.elapsed()),
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
            Err(_) => panic!("the server kept the connection open for {deadline:?}"),
        }
    }
}

#[tokio::test]
async fn slow_and_idle_connections_are_closed_while_others_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let server = impatient_server(dir.path());
    let addr = server.base.trim_start_matches("http://").to_owned();

    // Never sends anything.
    let mut idle = TcpStream::connect(&addr).await.unwrap();
    // Sends a request head one byte at a time, slower than it may.
    let mut slow_head = TcpStream::connect(&addr).await.unwrap();
    // Sends a head, then a body that never ends.
    let mut slow_body = TcpStream::connect(&addr).await.unwrap();
    slow_body
        .write_all(b"POST /webhook HTTP/1.1\r\nhost: x\r\ncontent-length: 100000\r\n\r\n{")
        .await
        .unwrap();
    let dripping = tokio::spawn(async move {
        for byte in b"GET /healthz HTTP/1.1\r\nhost: x\r\n"
            .iter()
            .cycle()
            .take(200)
        {
            if slow_head.write_all(&[*byte]).await.is_err() {
                return slow_head;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        slow_head
    });

    // Meanwhile the server answers everybody else.
    let (status, _) = server.api("/v1/conversations").await;
    assert_eq!(status, 200);

    let (said, _) = read_until_closed(&mut idle, Duration::from_secs(20)).await;
    assert_eq!(said, "", "an idle connection is closed without an answer");
    let (said, _) = read_until_closed(&mut slow_body, Duration::from_secs(20)).await;
    assert!(
        said.starts_with("HTTP/1.1 408"),
        "a body that never ends gets 408: {said:?}"
    );
    let mut slow_head = dripping.await.unwrap();
    let (_, open_for) = read_until_closed(&mut slow_head, Duration::from_secs(20)).await;
    assert!(
        open_for < Duration::from_secs(20),
        "the dripping client was cut off before it had sent its 200 bytes"
    );

    // A keep-alive connection that finished a request and then idles is closed too.
    let mut kept = TcpStream::connect(&addr).await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let (said, _) = read_until_closed(&mut kept, Duration::from_secs(20)).await;
    assert!(said.starts_with("HTTP/1.1 200"), "{said:?}");
}
