//! A tiny HTTP/1.1 listener on 127.0.0.1 for http hook tests: it records every request (method,
//! target, headers, body) and answers with scripted status codes. It only ever listens on the
//! loopback address, serves a bounded number of requests and stops by itself after a deadline.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// One request as received.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
    /// Names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == &name.to_ascii_lowercase())
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("request body is JSON")
    }
}

pub struct Listener {
    pub base: String,
    requests: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// The longest a listener lives, whatever the test does.
const LIFETIME: Duration = Duration::from_secs(60);
const MAX_REQUESTS: usize = 50;

impl Listener {
    /// Answers the n-th request with `statuses[n]` (the last one repeats), body `answer <code>`.
    pub fn start(statuses: &[u16]) -> Self {
        Self::start_for(statuses, LIFETIME)
    }

    /// [`Listener::start`] for a run longer than a minute (one that repairs a guest under TCG).
    pub fn start_for(statuses: &[u16], lifetime: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        listener.set_nonblocking(true).expect("nonblocking");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let statuses = statuses.to_vec();
        let (reqs, stop2) = (Arc::clone(&requests), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            let deadline = Instant::now() + lifetime;
            let mut served = 0;
            while !stop2.load(Ordering::SeqCst)
                && Instant::now() < deadline
                && served < MAX_REQUESTS
            {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let status = statuses
                            .get(served)
                            .or(statuses.last())
                            .copied()
                            .unwrap_or(200);
                        if let Some(req) = serve(stream, status) {
                            reqs.lock().expect("lock").push(req);
                        }
                        served += 1;
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Self {
            base,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().expect("lock").clone()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(stream: TcpStream, status: u16) -> Option<Request> {
    stream.set_nonblocking(false).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut words = line.split_whitespace();
    let method = words.next()?.to_owned();
    let target = words.next()?.to_owned();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (name, value) = h.split_once(':')?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    let len = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    let text = format!("answer {status}\n");
    let reason = if (200..300).contains(&status) {
        "OK"
    } else {
        "Error"
    };
    let mut out = stream;
    let _ = write!(
        out,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    );
    let _ = out.flush();
    Some(Request {
        method,
        target,
        headers,
        body,
    })
}
