//! Tokenization through a model server's own render API, as upstream's token-producer does by
//! default: POST the request body (model stamped in) to vLLM's `/v1/chat/completions/render`
//! (answers `{"token_ids": [...]}`) or `/v1/completions/render` (answers a list of those).
//! Plain HTTP/1.1 with kept-alive connections; blocking, bounded by a timeout.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use parking_lot::Mutex;

use super::TokenizeError;

pub struct RenderClient {
    host: String,
    authority: String,
    model: String,
    timeout: Duration,
    idle: Mutex<Vec<BufReader<TcpStream>>>,
}

fn err(msg: impl Into<String>) -> TokenizeError {
    TokenizeError(msg.into())
}

impl RenderClient {
    /// `url`: "http://host:port" (no TLS, as upstream); `model`: stamped into every body.
    pub fn new(url: &str, model: &str, timeout: Duration) -> Result<Self, TokenizeError> {
        let authority = url
            .trim_end_matches('/')
            .strip_prefix("http://")
            .ok_or_else(|| err(format!("vllm.url={url:?}: must be http://host:port")))?;
        if authority.is_empty() || authority.contains('/') {
            return Err(err(format!("vllm.url={url:?}: must be http://host:port")));
        }
        let host = if authority.contains(':') {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        Ok(RenderClient {
            host,
            authority: authority.to_owned(),
            model: model.to_owned(),
            timeout,
            idle: Mutex::new(Vec::new()),
        })
    }

    fn connect(&self) -> Result<BufReader<TcpStream>, TokenizeError> {
        let addr = self
            .host
            .to_socket_addrs()
            .map_err(|e| err(format!("render {}: {e}", self.host)))?
            .next()
            .ok_or_else(|| err(format!("render {}: no address", self.host)))?;
        let s = TcpStream::connect_timeout(&addr, self.timeout)
            .map_err(|e| err(format!("render {}: {e}", self.host)))?;
        s.set_nodelay(true).ok();
        s.set_read_timeout(Some(self.timeout)).ok();
        s.set_write_timeout(Some(self.timeout)).ok();
        Ok(BufReader::new(s))
    }

    /// The bound on each connect, write and read of a call.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The prompt's token ids from the render endpoint for `chat` or completions.
    pub fn tokens(&self, chat: bool, body: &[u8]) -> Result<Vec<u32>, TokenizeError> {
        let mut v: serde_json::Value =
            serde_json::from_slice(body).map_err(|e| err(format!("body: {e}")))?;
        let obj = v
            .as_object_mut()
            .ok_or_else(|| err("body: expected a JSON object"))?;
        obj.insert("model".into(), self.model.clone().into());
        obj.remove("stream");
        let payload = serde_json::to_vec(&v).map_err(|e| err(e.to_string()))?;
        let path = if chat {
            "/v1/chat/completions/render"
        } else {
            "/v1/completions/render"
        };
        let answer = self.post(path, &payload)?;
        let parsed: serde_json::Value = serde_json::from_slice(&answer)
            .map_err(|e| err(format!("render {path}: answer is not JSON: {e}")))?;
        let rendered = if chat { &parsed } else { &parsed[0] };
        serde_json::from_value(rendered["token_ids"].clone())
            .map_err(|e| err(format!("render {path}: token_ids: {e}")))
    }

    fn post(&self, path: &str, payload: &[u8]) -> Result<Vec<u8>, TokenizeError> {
        // A kept-alive connection may have been closed by the server: retry once on a fresh one.
        let pooled = self.idle.lock().pop();
        let fresh = pooled.is_none();
        let mut conn = match pooled {
            Some(c) => c,
            None => self.connect()?,
        };
        match self.exchange(&mut conn, path, payload) {
            Ok(body) => {
                self.idle.lock().push(conn);
                Ok(body)
            }
            Err(_) if !fresh => {
                let mut conn = self.connect()?;
                let body = self.exchange(&mut conn, path, payload)?;
                self.idle.lock().push(conn);
                Ok(body)
            }
            Err(e) => Err(e),
        }
    }

    fn exchange(
        &self,
        conn: &mut BufReader<TcpStream>,
        path: &str,
        payload: &[u8],
    ) -> Result<Vec<u8>, TokenizeError> {
        let io = |e: std::io::Error| err(format!("render {path}: {e}"));
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            self.authority,
            payload.len()
        );
        let s = conn.get_mut();
        s.write_all(head.as_bytes()).map_err(io)?;
        s.write_all(payload).map_err(io)?;
        let mut line = String::new();
        conn.read_line(&mut line).map_err(io)?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| err(format!("render {path}: bad status line {line:?}")))?;
        let mut length = None;
        let mut chunked = false;
        loop {
            line.clear();
            conn.read_line(&mut line).map_err(io)?;
            let h = line.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse::<usize>().ok();
                } else if k.eq_ignore_ascii_case("transfer-encoding") {
                    chunked = v.to_ascii_lowercase().contains("chunked");
                }
            }
        }
        let body = if chunked {
            read_chunked(conn).map_err(io)?
        } else {
            let n = length.ok_or_else(|| err(format!("render {path}: no content-length")))?;
            let mut body = vec![0; n];
            conn.read_exact(&mut body).map_err(io)?;
            body
        };
        if status != 200 {
            let text = String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned();
            return Err(err(format!("render {path}: HTTP {status}: {text}")));
        }
        Ok(body)
    }
}

fn read_chunked(conn: &mut BufReader<TcpStream>) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        conn.read_line(&mut line)?;
        let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        let start = body.len();
        body.resize(start + size + 2, 0);
        conn.read_exact(&mut body[start..])?;
        body.truncate(start + size);
        if size == 0 {
            return Ok(body);
        }
    }
}
