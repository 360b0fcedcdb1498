//! A small raw HTTP/1.1 client: every byte of a request is the scenario's
//! choice (bad inputs included), and a response is read as far as its head
//! says (`Content-Length`, chunked, or to the end of the connection).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use ssegate_bench::wire::{Dechunker, parse_head};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long any single answer may take before the scenario calls it lost.
pub const PATIENCE: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Response {
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A keep-alive connection carrying one request after another.
pub struct Conn {
    stream: TcpStream,
    /// Bytes read past the previous response.
    pending: Vec<u8>,
}

impl Conn {
    pub async fn connect(addr: SocketAddr) -> Result<Conn, String> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|err| format!("connect {addr}: {err}"))?;
        let _ = stream.set_nodelay(true);
        Ok(Conn {
            stream,
            pending: Vec::new(),
        })
    }

    /// Writes `raw` and reads one response.
    pub async fn send(&mut self, raw: &[u8]) -> Result<Response, String> {
        self.stream
            .write_all(raw)
            .await
            .map_err(|err| format!("write: {err}"))?;
        self.read_response().await
    }

    pub async fn publish(&mut self, topic: &str, body: &[u8]) -> Result<Response, String> {
        let mut request = format!(
            "POST /publish/{topic} HTTP/1.1\r\nHost: r\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(body);
        self.send(&request).await
    }

    pub async fn get(&mut self, path: &str) -> Result<Response, String> {
        self.send(format!("GET {path} HTTP/1.1\r\nHost: r\r\n\r\n").as_bytes())
            .await
    }

    /// Reads one response, within `PATIENCE`.
    pub async fn read_response(&mut self) -> Result<Response, String> {
        tokio::time::timeout(PATIENCE, read_response(&mut self.stream, &mut self.pending))
            .await
            .map_err(|_| "no response in time".to_string())?
    }

    /// The socket, for a scenario that goes on by hand (bytes read past
    /// the last response are dropped).
    pub fn into_stream(self) -> TcpStream {
        self.stream
    }
}

/// Reads one response from `stream`, starting with the bytes in `pending`
/// and leaving there whatever follows it.
pub async fn read_response(
    stream: &mut TcpStream,
    pending: &mut Vec<u8>,
) -> Result<Response, String> {
    let mut buf = vec![0u8; 16 * 1024];
    let head = loop {
        if let Some(head) = parse_head(pending) {
            break head;
        }
        match stream.read(&mut buf).await {
            Ok(0) => {
                return Err(format!(
                    "closed before a response ({} bytes)",
                    pending.len()
                ));
            }
            Ok(n) => pending.extend_from_slice(&buf[..n]),
            Err(err) => return Err(format!("read: {err}")),
        }
    };
    pending.drain(..head.len);
    let mut body = Vec::new();
    if head.chunked {
        let mut dechunker = Dechunker::default();
        loop {
            dechunker.decode(pending, &mut body);
            if dechunker.finished {
                break;
            }
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return Err("closed inside a chunked body".into()),
                Ok(n) => pending.extend_from_slice(&buf[..n]),
            }
        }
    } else if let Some(len) = head.content_length {
        while pending.len() < len {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return Err("closed inside a body".into()),
                Ok(n) => pending.extend_from_slice(&buf[..n]),
            }
        }
        body = pending.drain(..len).collect();
    } else {
        // No length: the body runs to the end of the connection.
        body.append(pending);
        while let Ok(n) = stream.read(&mut buf).await {
            if n == 0 {
                break;
            }
            body.extend_from_slice(&buf[..n]);
        }
    }
    Ok(Response {
        status: head.status,
        body,
    })
}

/// One request on a connection of its own.
pub async fn request(addr: SocketAddr, raw: &[u8]) -> Result<Response, String> {
    Conn::connect(addr).await?.send(raw).await
}

pub async fn get(addr: SocketAddr, path: &str) -> Result<Response, String> {
    request(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: r\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
}

/// What a publish answered: the event's id and how many streams got it.
#[derive(Debug, Clone)]
pub struct Published {
    pub id: String,
    pub subscribers: u64,
}

pub fn published(response: &Response) -> Option<Published> {
    if response.status != 200 {
        return None;
    }
    let value: serde_json::Value = serde_json::from_slice(&response.body).ok()?;
    Some(Published {
        id: value.get("id")?.as_str()?.to_string(),
        subscribers: value.get("subscribers")?.as_u64()?,
    })
}

/// `/metrics`, as `name{labels}` → value.
pub async fn metrics(addr: SocketAddr) -> Result<HashMap<String, f64>, String> {
    let response = get(addr, "/metrics").await?;
    if response.status != 200 {
        return Err(format!("/metrics answered {}", response.status));
    }
    Ok(response
        .body_text()
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect())
}

/// One metric (`name` or `name{labels}` exactly as exposed); 0 if absent.
pub async fn metric(addr: SocketAddr, name: &str) -> Result<f64, String> {
    Ok(metrics(addr).await?.get(name).copied().unwrap_or(0.0))
}

/// Percent-encodes everything but unreserved characters (for ids and
/// topics put in a query string).
pub fn percent_encode(raw: &[u8]) -> String {
    raw.iter()
        .map(|&b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
