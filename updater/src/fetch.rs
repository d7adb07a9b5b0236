//! A bundle source as a [`Read`]: a file, or an `http://` / `https://` URL
//! fetched with ureq (rustls for HTTPS, the Mozilla roots of webpki-roots).
//!
//! A dropped download resumes where it stopped with an HTTP range request
//! (RFC 9110 §14): `Range: bytes=<offset>-`, with `If-Range:` and the
//! first response's `ETag` (or else its `Last-Modified`), so a file changed
//! on the server is not spliced onto the bytes already read; the answer must
//! be `206 Partial Content` with a `Content-Range` that starts at that
//! offset. At most `retries` resumes are made in one download; the error
//! then names the URL, the byte offset and the last failure. A request
//! that fails, or that the server answers with a status meaning "not now"
//! (408, 429, 500, 502, 503, 504, as curl's `--retry`), counts as a drop
//! and is retried after a pause, the first request included. A server that
//! gives neither validator is resumed without `If-Range`: the payloads'
//! sha256 in the signed manifest still catches a spliced file.

use std::fs::File;
use std::io::{self, Read};
use std::path::PathBuf;
use std::time::Duration;

/// Why a source could not be opened or read. Each names the file or the
/// URL, and for a download the byte offset.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    /// The request failed (DNS, connect, TLS, protocol).
    #[error("{url} at byte {offset}: {reason}")]
    Request { url: String, offset: u64, reason: String },
    /// The server answered with an unexpected status.
    #[error("{url} at byte {offset}: the server answered {status}, expected {expected}")]
    Status { url: String, offset: u64, status: u16, expected: u16 },
    /// A resumed request got a range that does not start where the download stopped.
    #[error("{url}: asked to resume at byte {offset}, the server sent Content-Range {found:?}")]
    ContentRange { url: String, offset: u64, found: String },
    /// A resume got the whole file again: it changed on the server (If-Range) or ranges are not served.
    #[error("{url}: the download stopped at byte {offset} and cannot resume: the file changed on the server or it does not serve byte ranges")]
    Changed { url: String, offset: u64 },
    /// The connection dropped once more than the resumes allowed.
    #[error("{url}: the download dropped at byte {offset} after {retries} resumes: {reason}")]
    GaveUp { url: String, offset: u64, retries: u32, reason: String },
}

/// Whether `source` is an `http://` or `https://` URL (else a path).
pub fn is_url(source: &str) -> bool {
    source.starts_with("http://") || source.starts_with("https://")
}

/// Opens `source` (a path, or an `http://` / `https://` URL) for reading
/// front to back, resuming a dropped download up to `retries` times.
/// Returns the reader and the length when known (file size,
/// `Content-Length`). Read errors are `io::Error`s wrapping a [`FetchError`].
pub fn open(source: &str, retries: u32) -> Result<(Box<dyn Read + Send>, Option<u64>), FetchError> {
    if !is_url(source) {
        let path = PathBuf::from(source);
        let file = File::open(&path).map_err(|e| FetchError::Open { path: path.clone(), source: e })?;
        let len = file.metadata().map_err(|e| FetchError::Open { path, source: e })?.len();
        return Ok((Box::new(file), Some(len)));
    }
    let mut reader = HttpReader {
        agent: agent(),
        url: source.to_string(),
        pos: 0,
        len: None,
        validator: None,
        body: None,
        retries,
        resumed: 0,
    };
    // The first request is retried too: right after boot the network may
    // not be up yet ("network unreachable"), or the server restarting.
    loop {
        match reader.connect() {
            Ok(()) => break,
            Err(e) if retryable(&e).is_some() && reader.resumed < reader.retries => {
                reader.resumed += 1;
                std::thread::sleep(backoff(reader.resumed));
            }
            Err(e) => return Err(e),
        }
    }
    let len = reader.len;
    Ok((Box::new(reader), len))
}

/// Whether a retry may cure `e`, and then what went wrong: a failed
/// request (DNS, connect, reset), or an HTTP status that says "not now"
/// rather than "no", the ones curl's `--retry` retries: 408 Request
/// Timeout, 429 Too Many Requests, 500, 502 Bad Gateway, 503 Service
/// Unavailable, 504 Gateway Timeout (a CDN or proxy in front of the
/// update server having a bad moment). `None`: retrying would not help.
fn retryable(e: &FetchError) -> Option<String> {
    match e {
        FetchError::Request { reason, .. } => Some(reason.clone()),
        FetchError::Status { status: status @ (408 | 429 | 500 | 502 | 503 | 504), .. } => {
            Some(format!("the server answered {status}"))
        }
        _ => None,
    }
}

/// The wait before the `n`th retry (1-based): 0.5 s, doubling, at most
/// 16 s, so the default 5 retries span about 15 s.
fn backoff(n: u32) -> Duration {
    Duration::from_millis(500u64.saturating_mul(1 << n.saturating_sub(1).min(5))).min(Duration::from_secs(16))
}

fn agent() -> ureq::Agent {
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(Duration::from_secs(60)))
        .build();
    ureq::Agent::new_with_config(config)
}

struct HttpReader {
    agent: ureq::Agent,
    url: String,
    pos: u64,
    len: Option<u64>,
    /// `If-Range` value: the first response's ETag or Last-Modified.
    validator: Option<String>,
    body: Option<ureq::BodyReader<'static>>,
    retries: u32,
    resumed: u32,
}

fn header(resp: &ureq::http::Response<ureq::Body>, name: &str) -> Option<String> {
    resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
}

impl HttpReader {
    /// The first request (at 0) or a resume (at `pos`).
    fn connect(&mut self) -> Result<(), FetchError> {
        let mut req = self.agent.get(&self.url);
        if self.pos > 0 {
            req = req.header("Range", &format!("bytes={}-", self.pos));
            if let Some(v) = &self.validator {
                req = req.header("If-Range", v);
            }
        }
        let resp = req.call().map_err(|e| FetchError::Request {
            url: self.url.clone(),
            offset: self.pos,
            reason: e.to_string(),
        })?;
        let status = resp.status().as_u16();
        if self.pos == 0 {
            if status != 200 {
                return Err(FetchError::Status { url: self.url.clone(), offset: 0, status, expected: 200 });
            }
            self.len = header(&resp, "content-length").and_then(|l| l.parse().ok());
            let etag = header(&resp, "etag").filter(|e| !e.starts_with("W/"));
            self.validator = etag.or_else(|| header(&resp, "last-modified"));
        } else {
            match status {
                206 => {}
                200 => return Err(FetchError::Changed { url: self.url.clone(), offset: self.pos }),
                _ => return Err(FetchError::Status { url: self.url.clone(), offset: self.pos, status, expected: 206 }),
            }
            let range = header(&resp, "content-range").unwrap_or_default();
            let start = range
                .strip_prefix("bytes ")
                .and_then(|r| r.split_once('-'))
                .and_then(|(s, _)| s.trim().parse::<u64>().ok());
            if start != Some(self.pos) {
                return Err(FetchError::ContentRange { url: self.url.clone(), offset: self.pos, found: range });
            }
        }
        self.body = Some(resp.into_body().into_reader());
        Ok(())
    }

    /// After a dropped connection: resume, or give up.
    fn resume(&mut self, reason: String) -> io::Result<()> {
        self.body = None;
        if self.resumed >= self.retries {
            return Err(io::Error::other(FetchError::GaveUp {
                url: self.url.clone(),
                offset: self.pos,
                retries: self.resumed,
                reason,
            }));
        }
        self.resumed += 1;
        // A pause: a server that just dropped us may be restarting.
        std::thread::sleep(backoff(self.resumed));
        match self.connect() {
            Ok(()) => Ok(()),
            // A failed resume request is one more drop.
            Err(e) => match retryable(&e) {
                Some(reason) => self.resume(reason),
                None => Err(io::Error::other(e)),
            },
        }
    }
}

impl Read for HttpReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            let Some(body) = self.body.as_mut() else {
                self.resume("no connection".to_string())?;
                continue;
            };
            match body.read(buf) {
                Ok(0) if self.len.is_some_and(|l| self.pos < l) => {
                    self.resume(format!("the connection closed before byte {:?}", self.len))?;
                }
                Ok(n) => {
                    self.pos += n as u64;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => self.resume(e.to_string())?,
            }
        }
    }
}

#[cfg(test)]
mod tests;
