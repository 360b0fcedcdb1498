//! Connection hygiene: silent and header-dripping connections are closed at
//! their deadlines and never hold a slot; idle keep-alive connections are
//! closed; streams are never cut by those deadlines; HTTP/2 works by prior
//! knowledge on the same port.

mod common;

use std::time::Duration;

use common::{PATIENCE, Subscriber, TestServer, config, eventually, h2_client, metric, publish};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until the peer closes (EOF or reset), returning what was read.
async fn read_until_closed(socket: &mut TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let read = tokio::time::timeout(PATIENCE, socket.read(&mut buf))
            .await
            .expect("the server closes the connection in time");
        match read {
            Ok(0) | Err(_) => return received,
            Ok(n) => received.extend_from_slice(&buf[..n]),
        }
    }
}

fn short_deadlines() -> ssegate::Config {
    let mut config = config();
    config.first_request_timeout = Duration::from_millis(400);
    config.header_read_timeout = Duration::from_millis(400);
    config
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed() {
    let server = TestServer::start(short_deadlines()).await;
    let mut socket = TcpStream::connect(server.addr).await.expect("connect");
    assert!(read_until_closed(&mut socket).await.is_empty());
    let label = "ssegate_connection_timeouts_total{deadline=\"first_request\"}";
    assert_eq!(metric(server.addr, label).await, 1.0);
    eventually("the slot is released", || async {
        metric(server.addr, "ssegate_connections").await <= 1.0
    })
    .await;
}

/// Sends `start`, then one header line every 100 ms, never finishing the
/// head, until the server closes the connection; fails the test if it does
/// not within `PATIENCE`. Returns whatever the server sent.
async fn drip_head(socket: &mut TcpStream, start: &[u8]) -> Vec<u8> {
    socket.write_all(start).await.expect("the head starts");
    let drip = async {
        for i in 0.. {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let line = format!("X-Drip-{i}: 1\r\n");
            if socket.write_all(line.as_bytes()).await.is_err() {
                return;
            }
        }
    };
    tokio::time::timeout(PATIENCE, drip)
        .await
        .expect("the server cuts the drip in time");
    read_until_closed(socket).await
}

#[tokio::test]
async fn a_first_request_dripping_its_headers_is_closed() {
    let server = TestServer::start(short_deadlines()).await;
    let mut socket = TcpStream::connect(server.addr).await.expect("connect");
    let answer = drip_head(&mut socket, b"GET /healthz HTTP/1.1\r\n").await;
    assert!(answer.is_empty(), "{:?}", String::from_utf8_lossy(&answer));
    let label = "ssegate_connection_timeouts_total{deadline=\"first_request\"}";
    assert_eq!(metric(server.addr, label).await, 1.0);
}

#[tokio::test]
async fn a_subscribe_dripping_its_headers_is_closed_too() {
    // A subscribe head is first peeked for the direct path; a drip sends it
    // on to hyper, whose deadline still runs from accept.
    let server = TestServer::start(short_deadlines()).await;
    let mut socket = TcpStream::connect(server.addr).await.expect("connect");
    let answer = drip_head(&mut socket, b"GET /subscribe/drip HTTP/1.1\r\n").await;
    assert!(answer.is_empty(), "{:?}", String::from_utf8_lossy(&answer));
    let label = "ssegate_connection_timeouts_total{deadline=\"first_request\"}";
    assert_eq!(metric(server.addr, label).await, 1.0);
    assert_eq!(metric(server.addr, "ssegate_subscribers").await, 0.0);
}

#[tokio::test]
async fn header_read_timeout_bounds_the_first_head_too() {
    // A long first_request_timeout (the TLS handshake may need it) does not
    // let a first head drip for that long: header_read_timeout runs from
    // its first byte, and whichever deadline comes first closes it.
    let mut config = short_deadlines();
    config.first_request_timeout = Duration::from_secs(10);
    let server = TestServer::start(config).await;
    for start in [
        &b"GET /healthz HTTP/1.1\r\n"[..],
        b"GET /subscribe/drip HTTP/1.1\r\n",
    ] {
        let mut socket = TcpStream::connect(server.addr).await.expect("connect");
        let started = tokio::time::Instant::now();
        let answer = drip_head(&mut socket, start).await;
        assert!(answer.is_empty(), "{:?}", String::from_utf8_lossy(&answer));
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "closed by header_read_timeout, not first_request_timeout"
        );
    }
    let header_read = "ssegate_connection_timeouts_total{deadline=\"header_read\"}";
    assert_eq!(metric(server.addr, header_read).await, 2.0);
    let first_request = "ssegate_connection_timeouts_total{deadline=\"first_request\"}";
    assert_eq!(metric(server.addr, first_request).await, 0.0);
}

/// A connection whose first request has been answered, kept alive.
async fn kept_alive(server: &TestServer) -> TcpStream {
    let mut socket = TcpStream::connect(server.addr).await.expect("connect");
    socket
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("first request");
    let mut buf = [0u8; 512];
    let n = socket.read(&mut buf).await.expect("first response");
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    socket
}

#[tokio::test]
async fn a_later_request_dripping_its_headers_is_closed() {
    let mut config = short_deadlines();
    config.first_request_timeout = Duration::from_secs(10);
    let server = TestServer::start(config).await;
    let mut socket = kept_alive(&server).await;
    let answer = drip_head(&mut socket, b"GET /healthz HTTP/1.1\r\n").await;
    assert!(
        answer.is_empty(),
        "no response to a dripped head: {:?}",
        String::from_utf8_lossy(&answer)
    );
    let label = "ssegate_connection_timeouts_total{deadline=\"header_read\"}";
    assert_eq!(metric(server.addr, label).await, 1.0);
}

#[tokio::test]
async fn a_head_pipelined_behind_a_stream_is_timed_from_its_first_byte() {
    // A head that starts while the response before it is still going (a
    // stream here, ended by max_stream_lifetime) has had its
    // header_read_timeout running since its first byte: once the stream
    // ends, the drip is cut at once, not header_read_timeout later.
    let mut config = config();
    config.header_read_timeout = Duration::from_secs(2);
    config.auth.max_stream_lifetime = Duration::from_secs(2);
    let server = TestServer::start(config).await;
    let mut socket = kept_alive(&server).await;
    // Not a first head, so hyper serves this stream on the kept-alive
    // connection, and the next head can start behind it.
    socket
        .write_all(b"GET /subscribe/piped HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("subscribe");
    let mut buf = [0u8; 512];
    let n = socket.read(&mut buf).await.expect("stream head");
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let started = tokio::time::Instant::now();
    drip_head(&mut socket, b"GET /healthz HTTP/1.1\r\n").await;
    let held = started.elapsed();
    // The stream ends 2 s in; the head's own deadline (2 s from its first
    // byte) has passed by then. Timed from the stream's end, it would be
    // held until 4 s.
    assert!(
        held < Duration::from_millis(3500),
        "the pipelined head was held {held:?}"
    );
    let label = "ssegate_connection_timeouts_total{deadline=\"header_read\"}";
    assert_eq!(metric(server.addr, label).await, 1.0);
}

#[tokio::test]
async fn header_read_timeout_runs_from_the_first_byte_not_from_idle() {
    let mut config = short_deadlines();
    config.keep_alive_timeout = Duration::from_secs(30);
    let server = TestServer::start(config).await;
    let mut socket = TcpStream::connect(server.addr).await.expect("connect");
    let request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut buf = [0u8; 512];
    socket.write_all(request).await.expect("first request");
    assert!(socket.read(&mut buf).await.expect("first response") > 0);
    // Idle for longer than header_read_timeout, then a prompt request.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    socket.write_all(request).await.expect("second request");
    let n = socket.read(&mut buf).await.expect("second response");
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let mut config = config();
    config.keep_alive_timeout = Duration::from_millis(300);
    let server = TestServer::start(config).await;
    let mut socket = TcpStream::connect(server.addr).await.expect("connect");
    socket
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("request");
    let received = read_until_closed(&mut socket).await;
    assert!(received.starts_with(b"HTTP/1.1 200"));
    let label = "ssegate_connection_timeouts_total{deadline=\"keep_alive\"}";
    assert_eq!(metric(server.addr, label).await, 1.0);
}

#[tokio::test]
async fn an_open_stream_outlives_every_read_deadline() {
    let mut config = short_deadlines();
    config.keep_alive_timeout = Duration::from_millis(300);
    config.heartbeat_interval = Duration::from_millis(200);
    let server = TestServer::start(config).await;
    let mut subscriber = Subscriber::open(&server, "/subscribe/long", None).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    publish(&server, "long", "still streaming").await;
    assert_eq!(subscriber.next().await.data, "still streaming");
}

#[tokio::test]
async fn http2_by_prior_knowledge_subscribes_and_publishes() {
    let server = TestServer::start(config()).await;
    let h2 = h2_client();
    let mut first = Subscriber::open_with(&h2, &server.url("/subscribe/h2"), None).await;
    let mut second =
        Subscriber::open_with(&h2, &server.url("/subscribe?topic=h2&topic=other"), None).await;
    assert_eq!(first.version, reqwest::Version::HTTP_2);
    assert_eq!(first.response_headers["content-type"], "text/event-stream");
    let reply = common::publish_to(&h2, &server.url("/publish/h2"), "over h2").await;
    assert_eq!(reply.subscribers, 2);
    assert_eq!(first.next().await.data, "over h2");
    assert_eq!(second.next().await.data, "over h2");
    assert_eq!(
        metric(server.addr, "ssegate_connections").await,
        2.0,
        "one h2 connection + the scrape"
    );
}

#[tokio::test]
async fn an_http2_connection_with_no_stream_is_closed_though_it_answers_pings() {
    use http_body_util::Empty;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let mut config = config();
    config.keep_alive_timeout = Duration::from_millis(500);
    // The server pings every 100 ms and the client answers: frames keep
    // flowing, and must not keep the connection open.
    config.http2_keep_alive_interval = Duration::from_millis(100);
    let server = TestServer::start(config).await;
    let socket = TcpStream::connect(server.addr).await.expect("connect");
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(socket))
            .await
            .expect("h2 handshake");
    let connection = tokio::spawn(connection);
    let request = hyper::Request::get(format!("http://{}/healthz", server.addr))
        .body(Empty::<bytes::Bytes>::new())
        .expect("request");
    let response = sender.send_request(request).await.expect("response");
    assert_eq!(response.status(), 200);
    drop(response);
    // The connection ends: the server closed it at keep_alive_timeout.
    let ended = tokio::time::timeout(PATIENCE, connection).await;
    assert!(ended.is_ok(), "an idle HTTP/2 connection is held open");
    let label = "ssegate_connection_timeouts_total{deadline=\"keep_alive\"}";
    assert!(metric(server.addr, label).await >= 1.0);
}

#[tokio::test]
async fn an_http2_stream_whose_window_stays_closed_is_dropped_at_write_timeout() {
    let mut config = config();
    config.write_timeout = Duration::from_millis(500);
    // The client's connection task answers every PING: the connection is
    // alive, only the stream's flow-control window stays shut.
    config.http2_keep_alive_interval = Duration::from_millis(100);
    let server = TestServer::start(config).await;
    // A well-behaved HTTP/2 subscriber on its own connection, quiet for
    // longer than write_timeout: waiting for events is not a stall.
    let mut reader =
        Subscriber::open_with(&h2_client(), &server.url("/subscribe/stalled"), None).await;
    let socket = TcpStream::connect(server.addr).await.expect("connect");
    // The window is opened once (1 KiB) and never again: the client never
    // releases capacity, so it never sends WINDOW_UPDATE.
    let (client, connection) = h2::client::Builder::new()
        .initial_window_size(1024)
        .handshake::<_, bytes::Bytes>(socket)
        .await
        .expect("h2 handshake");
    let connection = tokio::spawn(connection);
    let mut client = client.ready().await.expect("h2 ready");
    let request = hyper::Request::get(format!("http://{}/subscribe/stalled", server.addr))
        .body(())
        .expect("request");
    let (response, _) = client.send_request(request, true).expect("send");
    let response = response.await.expect("response");
    assert_eq!(response.status(), 200);
    let _unread_body = response.into_body();
    eventually("the stream is counted", || async {
        metric(server.addr, "ssegate_subscribers").await == 2.0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    for _ in 0..4 {
        publish(&server, "stalled", "x".repeat(2000)).await;
    }
    let ended = tokio::time::timeout(PATIENCE, connection).await;
    assert!(
        ended.is_ok(),
        "a stream stalled by flow control is held open"
    );
    let label = "ssegate_subscribers_dropped_total{reason=\"write_timeout\"}";
    assert_eq!(metric(server.addr, label).await, 1.0);
    assert_eq!(metric(server.addr, "ssegate_subscribers").await, 1.0);
    publish(&server, "stalled", "after").await;
    let data: Vec<String> = reader.take(5).await.into_iter().map(|e| e.data).collect();
    assert_eq!(data[4], "after");
    assert!(data[..4].iter().all(|d| d.len() == 2000));
}
