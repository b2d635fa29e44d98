//! A real HTTP/1.1 /metrics server on 127.0.0.1 (free port) for scraper tests: keep-alive,
//! body changeable at run time, counts connections, stops and joins its threads.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

pub struct MetricsServer {
    pub address: String,
    body: Arc<Mutex<String>>,
    connections: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl MetricsServer {
    pub fn start(body: &str) -> MetricsServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
        let address = listener.local_addr().unwrap().to_string();
        let body = Arc::new(Mutex::new(body.to_owned()));
        let connections = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (b, c, s) = (body.clone(), connections.clone(), stop.clone());
        let accept = std::thread::spawn(move || {
            let mut workers = Vec::new();
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                c.fetch_add(1, Ordering::SeqCst);
                let (b, s) = (b.clone(), s.clone());
                workers.push(std::thread::spawn(move || serve(conn, &b, &s)));
            }
            for w in workers {
                let _ = w.join();
            }
        });
        MetricsServer {
            address,
            body,
            connections,
            stop,
            accept: Some(accept),
        }
    }

    pub fn set_body(&self, body: &str) {
        *self.body.lock().unwrap() = body.to_owned();
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept so the thread sees the flag.
        let _ = TcpStream::connect(&self.address);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

fn serve(conn: TcpStream, body: &Mutex<String>, stop: &AtomicBool) {
    // A short read timeout lets idle connections notice the stop flag.
    let _ = conn.set_read_timeout(Some(Duration::from_millis(100)));
    let mut writer = conn.try_clone().expect("clone socket");
    let mut reader = BufReader::new(conn);
    let mut line = String::new();
    while !stop.load(Ordering::SeqCst) {
        match reader.read_line(&mut line) {
            Ok(0) => return,
            Ok(_) if line == "\r\n" => {
                line.clear();
                let text = body.lock().unwrap().clone();
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\r\n",
                    text.len()
                );
                if writer
                    .write_all(head.as_bytes())
                    .and_then(|_| writer.write_all(text.as_bytes()))
                    .is_err()
                {
                    return;
                }
            }
            Ok(_) => line.clear(),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}
