//! A minimal HTTP/1.1 GET over one kept-alive connection, enough for /metrics: fixed length,
//! chunked or read-to-close bodies, into a buffer the caller reuses between scrapes; plain or
//! over TLS (`with_tls`).

use std::io;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::tls::TlsClient;

/// The connection's byte stream: TCP, or TLS over it.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
type Stream = Box<dyn Io>;

/// One keep-alive connection to one endpoint.
pub struct Connection {
    address: String,
    request: Vec<u8>,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    stream: Option<Stream>,
    /// Bytes read from the socket but not yet consumed.
    inbox: Vec<u8>,
}

impl Connection {
    pub fn new(address: &str, path: &str) -> Connection {
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {address}\r\nAccept: text/plain\r\nUser-Agent: sluicegate\r\n\r\n"
        );
        Connection {
            address: address.to_owned(),
            request: request.into_bytes(),
            tls: None,
            stream: None,
            inbox: Vec::new(),
        }
    }

    /// Speak TLS to the endpoint, verifying it as `server_name` (unless the client skips that).
    pub fn with_tls(mut self, client: &TlsClient, server_name: ServerName<'static>) -> Connection {
        self.tls = Some((TlsConnector::from(client.0.clone()), server_name));
        self
    }

    /// Drop the connection; the next GET opens a new one.
    pub fn reset(&mut self) {
        self.stream = None;
    }

    /// GET the path and leave the body in `body` (cleared first). A reused connection the
    /// server closed while idle is retried once on a fresh one.
    pub async fn get(&mut self, body: &mut Vec<u8>) -> io::Result<()> {
        let reused = self.stream.is_some();
        match self.get_once(body).await {
            Err(e) if reused && is_stale_connection(&e) => {
                self.stream = None;
                self.get_once(body).await
            }
            other => other,
        }
    }

    async fn get_once(&mut self, body: &mut Vec<u8>) -> io::Result<()> {
        body.clear();
        self.inbox.clear();
        let result = self.exchange(body).await;
        if result.is_err() {
            self.stream = None;
        }
        result
    }

    async fn exchange(&mut self, body: &mut Vec<u8>) -> io::Result<()> {
        if self.stream.is_none() {
            // A literal ip:port connects directly; only host names go through the resolver.
            let s = match self.address.parse::<std::net::SocketAddr>() {
                Ok(addr) => TcpStream::connect(addr).await?,
                Err(_) => TcpStream::connect(&self.address).await?,
            };
            s.set_nodelay(true)?;
            self.stream = Some(match &self.tls {
                None => Box::new(s),
                Some((connector, name)) => Box::new(connector.connect(name.clone(), s).await?),
            });
        }
        let stream = self.stream.as_mut().expect("connected above");
        stream.write_all(&self.request).await?;
        let head_len = read_head(stream, &mut self.inbox).await?;
        let head = Head::parse(&self.inbox[..head_len])?;
        self.inbox.drain(..head_len);
        if head.status != 200 {
            return Err(io::Error::other(format!("HTTP status {}", head.status)));
        }
        let stream = self.stream.as_mut().expect("connected above");
        match head.framing {
            Framing::Length(n) => read_exact_body(stream, &mut self.inbox, n, body).await?,
            Framing::Chunked => read_chunked(stream, &mut self.inbox, body).await?,
            Framing::UntilClose => {
                body.append(&mut self.inbox);
                (&mut *stream)
                    .take(MAX_BODY as u64)
                    .read_to_end(body)
                    .await?;
            }
        }
        if head.close || matches!(head.framing, Framing::UntilClose) {
            self.stream = None;
        }
        Ok(())
    }
}

fn is_stale_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
    )
}

enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

struct Head {
    status: u16,
    framing: Framing,
    close: bool,
}

impl Head {
    fn parse(raw: &[u8]) -> io::Result<Head> {
        let text = std::str::from_utf8(raw).map_err(|_| bad("response head is not UTF-8"))?;
        let mut lines = text.split("\r\n");
        let status_line = lines.next().unwrap_or("");
        let mut parts = status_line.split(' ');
        let version = parts.next().unwrap_or("");
        if !version.starts_with("HTTP/1.") {
            return Err(bad("not an HTTP/1.x response"));
        }
        let status = parts
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("bad status line"))?;
        let mut head = Head {
            status,
            framing: Framing::UntilClose,
            close: version == "HTTP/1.0",
        };
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                let n = value.parse().map_err(|_| bad("bad content-length"))?;
                if !matches!(head.framing, Framing::Chunked) {
                    head.framing = Framing::Length(n);
                }
            } else if name.eq_ignore_ascii_case("transfer-encoding")
                && value.eq_ignore_ascii_case("chunked")
            {
                head.framing = Framing::Chunked;
            } else if name.eq_ignore_ascii_case("connection") {
                head.close = value.eq_ignore_ascii_case("close");
            }
        }
        Ok(head)
    }
}

fn bad(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_owned())
}

/// Cap on the response head and on any single body, so a broken server cannot eat memory.
const MAX_HEAD: usize = 64 * 1024;
const MAX_BODY: usize = 64 * 1024 * 1024;

async fn fill(stream: &mut Stream, inbox: &mut Vec<u8>) -> io::Result<()> {
    let mut chunk = [0u8; 16 * 1024];
    let n = stream.read(&mut chunk).await?;
    if n == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    inbox.extend_from_slice(&chunk[..n]);
    Ok(())
}

/// Read until the blank line ending the head; returns the head length including it.
async fn read_head(stream: &mut Stream, inbox: &mut Vec<u8>) -> io::Result<usize> {
    loop {
        if let Some(i) = memchr::memmem::find(inbox, b"\r\n\r\n") {
            return Ok(i + 4);
        }
        if inbox.len() > MAX_HEAD {
            return Err(bad("response head too large"));
        }
        fill(stream, inbox).await?;
    }
}

async fn read_exact_body(
    stream: &mut Stream,
    inbox: &mut Vec<u8>,
    n: usize,
    body: &mut Vec<u8>,
) -> io::Result<()> {
    if n > MAX_BODY {
        return Err(bad("body too large"));
    }
    while inbox.len() < n {
        fill(stream, inbox).await?;
    }
    body.extend_from_slice(&inbox[..n]);
    inbox.drain(..n);
    Ok(())
}

async fn read_chunked(
    stream: &mut Stream,
    inbox: &mut Vec<u8>,
    body: &mut Vec<u8>,
) -> io::Result<()> {
    loop {
        let line_end = loop {
            if let Some(i) = memchr::memmem::find(inbox, b"\r\n") {
                break i;
            }
            fill(stream, inbox).await?;
        };
        let size_text =
            std::str::from_utf8(&inbox[..line_end]).map_err(|_| bad("bad chunk size"))?;
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| bad("bad chunk size"))?;
        inbox.drain(..line_end + 2);
        if body.len() + size > MAX_BODY {
            return Err(bad("body too large"));
        }
        // The chunk data is followed by CRLF; the last (empty) chunk by optional trailers + CRLF.
        if size == 0 {
            loop {
                if let Some(i) = memchr::memmem::find(inbox, b"\r\n") {
                    let trailer_empty = i == 0;
                    inbox.drain(..i + 2);
                    if trailer_empty {
                        return Ok(());
                    }
                    continue;
                }
                fill(stream, inbox).await?;
            }
        }
        while inbox.len() < size + 2 {
            fill(stream, inbox).await?;
        }
        body.extend_from_slice(&inbox[..size]);
        inbox.drain(..size + 2);
    }
}
