//! A scripted HTTP/1.1 server for the adapters' download tests: each connection gets the next
//! canned answer once its whole request (head, and a `Content-Length` body) has been read.

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A canned answer. `length`: `Some(n)` declares n bytes (a test may claim more than the body
/// has), `None` lets the body run to the close.
pub fn answer(
    status: u16,
    headers: &[(&str, &str)],
    body: &[u8],
    length: Option<usize>,
) -> Vec<u8> {
    let mut head = format!("HTTP/1.1 {status} X\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(length) = length {
        head.push_str(&format!("Content-Length: {length}\r\n"));
    }
    let mut answer = format!("{head}\r\n").into_bytes();
    answer.extend_from_slice(body);
    answer
}

/// A request as the server read it.
pub struct Request {
    pub head: String,
    pub body: Vec<u8>,
}

/// A listener on a free local port, and its `http://host:port` base.
pub async fn listener() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    (listener, base)
}

/// Answers one connection per canned answer, in order; yields the requests. Writes tolerate a
/// client that hung up early (a download refused on its declared length).
pub fn serve(listener: TcpListener, answers: Vec<Vec<u8>>) -> JoinHandle<Vec<Request>> {
    tokio::spawn(async move {
        let mut requests = Vec::new();
        for answer in answers {
            let (mut stream, _) = listener.accept().await.expect("accept");
            let mut received = Vec::new();
            let mut buf = [0_u8; 8192];
            let body_start = loop {
                let n = stream.read(&mut buf).await.expect("read");
                assert!(n > 0, "request cut short");
                received.extend_from_slice(&buf[..n]);
                if let Some(at) = received.windows(4).position(|w| w == b"\r\n\r\n") {
                    break at + 4;
                }
            };
            let head = String::from_utf8_lossy(&received[..body_start]).into_owned();
            let length: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().expect("length"))
                })
                .unwrap_or(0);
            while received.len() < body_start + length {
                let n = stream.read(&mut buf).await.expect("read body");
                assert!(n > 0, "body cut short");
                received.extend_from_slice(&buf[..n]);
            }
            let _ = stream.write_all(&answer).await;
            let _ = stream.shutdown().await;
            requests.push(Request {
                head,
                body: received.split_off(body_start),
            });
        }
        requests
    })
}

/// The heads of every request the server answered, once it has answered them all.
pub async fn heads(server: JoinHandle<Vec<Request>>) -> Vec<String> {
    server
        .await
        .expect("server")
        .into_iter()
        .map(|r| r.head)
        .collect()
}
